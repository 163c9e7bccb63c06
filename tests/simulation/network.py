"""
The simulated network between nodes: per-link cuts, loss, duplication,
reordering and delay, and every message through the wire format; on a
keyed cluster, over the authenticated connections of L{connections}.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import attrs
from twisted.internet import defer

from tests.simulation.connections import Connections
from tests.simulation.invariants import isPreVote
from txraft.messages import (
    REQUESTS,
    AppendEntries,
    Message,
    RequestVote,
    RequestVoteResponse,
    formatMessage,
    parseMessage,
    splitSender,
)

if TYPE_CHECKING:
    from tests.simulation.nodes import SimNode
    from tests.simulation.run import Simulation


@attrs.define
class Envelope:
    """A peer message in flight."""

    src: str
    srcIncarnation: int
    dst: str
    message: Message
    #: For a response: the incarnation of the requester, whose connection it travels on.
    requesterIncarnation: int | None = None


#: How many messages of each kind the network remembers for late copies.
REMEMBERED_PER_KIND = 12

#: The kinds of message the network tells apart when it remembers them.
MESSAGE_KINDS = tuple(
    f"{rpc}{response}{preVote}"
    for rpc in ("RequestVote", "AppendEntries", "InstallSnapshot")
    for response in ("", "Response")
    for preVote in ((" (pre-vote)", "") if rpc == "RequestVote" else ("",))
)


class Network:
    """
    Carries peer messages between simulated nodes.

    Raft allows a network to deliver any message late, and more than once,
    so the network remembers the last few messages of each kind (votes,
    pre-votes, appends, snapshot chunks, and the answers to each) and the
    fault schedule has it L{replay} some of them long after, across
    elections.  On a keyed cluster (C{authenticate}) messages travel as
    lines of L{connections}, and the same faults are what they can be to
    a TCP stream under an attacker (see L{tests.simulation.connections}).

    @ivar blocked: the (from, to) links that deliver nothing.
    @ivar offline: the nodes whose machine is off the network: no link to
        or from one delivers anything, and no client elsewhere reaches it
        (a client on its machine does, L{tests.simulation.clients}).
    @ivar dropRate: the chance that a message is lost.
    @ivar duplicateRate: the chance that a message arrives twice.
    @ivar lateRate: the chance that a message arrives long after newer ones.
    @ivar maxDelayMs: a message takes from 1 to this many milliseconds.
    @ivar past: recent messages that were put on the wire, by kind.
    @ivar connections: the authenticated connections, on a keyed cluster.
    """

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation
        self.blocked: set[tuple[str, str]] = set()
        self.offline: set[str] = set()
        self.past: dict[str, deque[Envelope]] = {}
        self.calm()
        self.connections = Connections(simulation) if simulation.options.authenticate else None

    def cut(self, src: str, dst: str) -> bool:
        """Whether the link from C{src} to C{dst} delivers nothing."""
        return (src, dst) in self.blocked or src in self.offline or dst in self.offline

    def heal(self) -> None:
        """Every link works again, and every machine is back on the network."""
        self.blocked.clear()
        self.offline.clear()

    def calm(self) -> None:
        """No more loss, duplication or late messages; normal delays."""
        self.dropRate = self.duplicateRate = self.lateRate = 0.0
        self.maxDelayMs = self.sim.options.baseDelayMs

    def delay(self, *names: str) -> int:
        """A message's delay, longer to or from a slow node."""
        rng = self.sim.rng
        delay = rng.randint(1, self.maxDelayMs)
        nodes = [self.sim.node(name) for name in names]
        if any(node is not None and node.slow for node in nodes):
            delay += rng.randint(10, 80)
        return delay

    def send(
        self, node: SimNode, dst: str, message: Message, requesterIncarnation: int | None = None
    ) -> None:
        """Put C{message} from C{node} to C{dst} on the network, maybe losing or copying it."""
        sim = self.sim
        if node.disk.powerLost:
            return  # the process is dying: it sends nothing more
        self.sent(node, dst, message)
        if self.connections is not None:
            self.connections.send(node, dst, message)
            return
        envelope = Envelope(node.name, node.incarnation, dst, message, requesterIncarnation)
        if self.cut(node.name, dst):
            sim.stats["messagesCut"] += 1
            return
        self._remember(envelope)
        rng = sim.rng
        if rng.random() < self.dropRate:
            sim.stats["messagesDropped"] += 1
            sim.record("{}->{} lost: {}", node.name, dst, message)
            return
        copies = 1
        if rng.random() < self.duplicateRate:
            copies = 2
            sim.stats["messagesDuplicated"] += 1
        for _ in range(copies):
            delay = self.delay(node.name, dst)
            if rng.random() < self.lateRate:
                # Stuck in some queue: it arrives long after newer messages.
                delay += rng.randint(200, 1500)
                sim.stats["messagesLate"] += 1
            sim.events.after(delay, self._deliver, envelope)

    def sent(self, node: SimNode, dst: str, message: Message) -> None:
        """Count a message C{node} sends; a vote it grants is checked as it is cast."""
        self.sim.stats["messages"] += 1
        if (
            isinstance(message, AppendEntries)
            and message.entries
            and message.prevLogIndex < node.core.snapshotIndex
        ):
            # Entries a snapshot covers, kept for a follower a little behind.
            self.sim.stats["entriesSentBehindSnapshot"] += 1
        if isinstance(message, RequestVote):
            self.sim.checker.observeCampaign(node, message)
        if (
            isinstance(message, RequestVoteResponse)
            and message.voteGranted
            and not isPreVote(message)
        ):
            self.sim.checker.observeVote(node.name, message.term, dst)

    def processEnded(self, node: SimNode) -> None:
        """C{node}'s process ended: its connections close."""
        if self.connections is not None:
            self.connections.processEnded(node)

    def _remember(self, envelope: Envelope) -> None:
        message = envelope.message
        kind = type(message).__name__ + (" (pre-vote)" if isPreVote(message) else "")
        if kind not in self.past:
            self.past[kind] = deque(maxlen=REMEMBERED_PER_KIND)
        self.past[kind].append(envelope)

    def replay(self, count: int) -> None:
        """
        Deliver again, late, C{count} messages sent earlier (each kind as
        likely as another), as a network that held on to copies would; on
        a keyed cluster, an attacker injects them, sealed as they were seen.
        """
        sim = self.sim
        if self.connections is not None:
            self.connections.inject(count)
            return
        kinds = sorted(self.past)
        for _ in range(count if kinds else 0):
            kind = sim.rng.choice(kinds)
            envelope = sim.rng.choice(self.past[kind])
            sim.stats["messagesReplayed"] += 1
            sim.stats[f"replayed {kind}"] += 1
            sim.record("{}->{} replayed: {}", envelope.src, envelope.dst, envelope.message)
            sim.events.after(self.delay(envelope.src, envelope.dst), self._deliver, envelope)

    def _reply(
        self,
        reply: Message | None,
        node: SimNode,
        incarnation: int,
        src: str,
        envelope: Envelope,
    ) -> None:
        """Send C{node}'s C{reply} to C{envelope}'s request, unless its process died since."""
        if reply is not None and node.up and node.incarnation == incarnation:
            self.send(node, src, reply, requesterIncarnation=envelope.srcIncarnation)

    def _deliver(self, envelope: Envelope) -> None:
        sim = self.sim
        node = sim.node(envelope.dst)
        src, message = envelope.src, envelope.message
        if node is None or not node.up or node.silent or self.cut(src, envelope.dst):
            return  # no process there (a node not started yet, or stopped)
        if (
            envelope.requesterIncarnation is not None
            and envelope.requesterIncarnation != node.incarnation
        ):
            return  # a response on a connection that died with its requester
        if node.paused():
            sim.events.at(node.pausedUntil, self._deliver, envelope)
            return
        if sim.options.wire:
            sender, rest = splitSender(formatMessage(src, message))
            decoded = parseMessage(rest)
            if sender != src or decoded != message:
                sim.fail(f"{message} does not survive the wire format")
            message = decoded
        sim.record("{}->{} {}", src, node.name, message)
        if isinstance(message, REQUESTS):
            reply = node.driver.peerRequest(src, message)
            if isinstance(reply, defer.Deferred):
                # Answered once the disk holds what the reply promises.
                sim.stats["repliesAfterSave"] += 1
                incarnation = node.incarnation
                reply.addCallback(self._reply, node, incarnation, src, envelope)
            else:
                self._reply(reply, node, node.incarnation, src, envelope)
            return
        node.steppingResponse = True
        try:
            node.driver.peerResponse(src, message)
        finally:
            node.steppingResponse = False
