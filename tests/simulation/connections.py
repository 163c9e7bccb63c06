"""
Peer connections on a keyed simulated cluster, carrying the production
handshake and per-line MACs of L{txraft.auth}.

As in production (L{txraft.peers}, L{txraft.protocol}), a node sends its
requests to a peer on its own connection to it, the peer answers on that
connection, in order, and a connection carries nothing before both sides
proved the cluster key.  Each line crosses the simulated network like a
message (delayed, cut by partitions, sometimes late), but a connection is a
TCP stream: its lines arrive in order, once, or not at all.  So the
network's faults become what they are to a stream:

  - a line lost (or sent over a cut link) breaks its connection: the
    sending end closes at once, the other end reads what came before the
    loss and then closes; the next request opens a new connection, with a
    new handshake;
  - a late line holds up every later line of its connection (which may
    then time out, as L{PeerClientProtocol} does, and be replaced by a
    new one while the late lines are still on their way: they reach the
    peer after newer messages, which Raft must shrug off);
  - a duplicated line, and a replayed one, is a copy of a sealed line
    that an attacker injects into a live connection: it must fail to open
    and the connection is dropped; so must any line of an impostor that
    does not hold the key;
  - a crash closes every connection of the process.

A close reaches the other end after everything sent before it (as a FIN
does) and is never lost.  Any injected line that opens, or impostor that
finishes a handshake, fails the run.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import attrs
from twisted.internet import defer

from tests.simulation.invariants import isPreVote
from txraft.auth import AUTH1, AUTH2, AuthError, Initiator, Responder, Session, authWord
from txraft.messages import (
    REQUESTS,
    AppendEntries,
    Entry,
    Message,
    MessageError,
    formatMessage,
    parseMessage,
    splitSender,
)
from txraft.peers import BACKLOG

if TYPE_CHECKING:
    from tests.simulation.nodes import SimNode
    from tests.simulation.run import Simulation

#: What travels after a connection's last line when one end closes it.
CLOSE = b""

#: The answer a node that cannot serve writes for a request (as L{txraft.protocol} does).
NOT_SERVING = b"ERROR this node is not serving"

#: How many sealed lines of each kind the attacker keeps to inject later.
RECORDED_PER_KIND = 12


@attrs.define
class Stream:
    """
    One direction of a connection: its lines are taken in the order they
    were sent, whenever each arrives (TCP's sequence numbers).

    @ivar lastArrival: when its last line arrives; a later one cannot arrive before.
    @ivar sent: how many lines were put on it.
    @ivar taken: how many of them the receiving end took.
    @ivar held: lines that arrived before an earlier one, by number.
    @ivar copied: the numbers of the lines an attacker copies once taken.
    """

    lastArrival: int = 0
    sent: int = 0
    taken: int = 0
    held: dict[int, bytes] = attrs.Factory(dict)
    copied: set[int] = attrs.Factory(set)


@attrs.define(eq=False)
class Connection:
    """
    One connection, opened by C{initiator} to C{responder}: the
    initiator's requests go one way, the responder's answers the other.

    @ivar number: connections are numbered in the order they open.
    @ivar incarnations: the process of each end, by name (the responder's
        once it accepted).
    @ivar closed: the names of the ends that closed.
    @ivar streams: each direction (C{True}: to the responder).
    @ivar awaiting: when each line the initiator sent and awaits the
        answer to was sent, oldest first.
    @ivar forged: an impostor's connection (nothing of it may be accepted).
    """

    number: int
    initiator: str
    responder: str
    incarnations: dict[str, int]
    initiating: Initiator | None = None
    confirming: bool = False
    responding: Responder | None = None
    sessions: dict[str, Session] = attrs.Factory(dict)
    closed: set[str] = attrs.Factory(set)
    streams: dict[bool, Stream] = attrs.Factory(lambda: {True: Stream(), False: Stream()})
    awaiting: deque[int] = attrs.Factory(deque)
    forged: bool = False

    def end(self, toResponder: bool) -> str:
        """The name of the end a line in this direction arrives at."""
        return self.responder if toResponder else self.initiator

    def established(self) -> bool:
        """Whether both ends proved the key and neither has closed."""
        return len(self.sessions) == 2 and not self.closed


@attrs.define
class Recorded:
    """A sealed line the attacker saw delivered, and where."""

    connection: Connection
    toResponder: bool
    sealed: bytes


class Connections:
    """
    Every peer connection of a keyed simulated cluster, opened on demand
    by the node that has a request to send.

    @ivar current: each node's connection to each peer, by (node, peer).
    @ivar backlog: the last few requests to each peer queued while no
        connection to it is established (L{PeerLink} keeps L{BACKLOG}).
    @ivar recorded: sealed lines the attacker saw, by kind of message.
    """

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation
        rng = simulation.rng
        #: The cluster key, and the other key an impostor holds.
        self.key = rng.randbytes(32)
        self.wrongKey = rng.randbytes(32)
        self.current: dict[tuple[str, str], Connection] = {}
        self.live: dict[int, Connection] = {}
        self.backlog: dict[tuple[str, str], deque[Message]] = {}
        self.recorded: dict[str, deque[Recorded]] = {}
        self._opened = 0
        options = simulation.options
        assert options.electionTicks is not None
        #: A request unanswered this long drops its connection (PeerLink's requestTimeout).
        self.requestTimeoutMs = options.electionTicks[0] * options.tickMs

    # -- the initiator's side --------------------------------------------------------

    def send(self, node: SimNode, peer: str, message: Message) -> None:
        """Send C{node}'s request to C{peer} on its connection, opening one if needed."""
        sim = self.sim
        if not isinstance(message, REQUESTS):
            sim.record(
                "{}->{} {} not sent: answers travel on connections", node.name, peer, message
            )
            return
        pair = (node.name, peer)
        connection = self.current.get(pair)
        if connection is not None and connection.awaiting:
            if sim.now - connection.awaiting[0] > self.requestTimeoutMs:
                sim.stats["connectionsTimedOut"] += 1
                self.close(connection, node.name, "no answer within the request timeout")
                connection = None
        if connection is not None and node.name in connection.sessions:
            self._sendRequest(connection, message)
            return
        self.backlog.setdefault(pair, deque(maxlen=BACKLOG)).append(message)
        if connection is None:
            self._connect(node, peer)

    def _connect(self, node: SimNode, peer: str) -> None:
        """A new connection from C{node} to C{peer}; its first line starts the handshake."""
        connection = self._newConnection(node.name, peer, node.incarnation)
        connection.initiating = Initiator(
            self.key, node.name, peer, randomBytes=self.sim.rng.randbytes
        )
        self.current[(node.name, peer)] = connection
        self._awaitAnswer(connection, connection.initiating.hello().encode())

    def _newConnection(self, initiator: str, responder: str, incarnation: int) -> Connection:
        self._opened += 1
        connection = Connection(self._opened, initiator, responder, {initiator: incarnation})
        self.live[connection.number] = connection
        self.sim.stats["connections"] += 1
        return connection

    def _awaitAnswer(self, connection: Connection, line: bytes) -> None:
        """Send a line to the responder that it will answer."""
        connection.awaiting.append(self.sim.now)
        self._transmit(connection, True, line)

    def _sendRequest(self, connection: Connection, message: Message) -> None:
        line = formatMessage(connection.initiator, message).encode("utf-8")
        self._awaitAnswer(connection, connection.sessions[connection.initiator].seal(line))

    def _atInitiator(self, connection: Connection, line: bytes, forged: bool) -> None:
        """A line for the initiator: a handshake answer, or the answer to a request."""
        sim = self.sim
        name = connection.initiator
        if connection.awaiting and not forged:
            connection.awaiting.popleft()
        if name not in connection.sessions:
            self._handshakeAnswer(connection, line, forged)
            return
        opened = self._unseal(connection, name, line, forged)
        if opened is None or opened == NOT_SERVING:
            return
        response = self._parse(connection, False, opened, line)
        node = sim.nodes[name]
        node.steppingResponse = True
        try:
            node.driver.peerResponse(connection.responder, response)
        finally:
            node.steppingResponse = False

    def _handshakeAnswer(self, connection: Connection, line: bytes, forged: bool) -> None:
        """The responder's C{AUTH1} or C{AUTH2} line: prove the key, or take the session."""
        initiating = connection.initiating
        assert initiating is not None
        text = line.decode("utf-8", "replace")
        try:
            if not connection.confirming:
                if connection.forged:
                    self._impostorProof(connection, text)
                    return
                self._awaitAnswer(connection, initiating.answerChallenge(text).encode())
                connection.confirming = True
                return
            session = initiating.confirm(text)
        except AuthError as e:
            self._refused(connection, connection.initiator, str(e), forged)
            return
        if forged:
            self.sim.fail(
                f"Authentication: {connection.initiator} took a forged handshake line from "
                f"{connection.responder} (connection #{connection.number})"
            )
        connection.sessions[connection.initiator] = session
        self.sim.stats["handshakes"] += 1
        self.sim.record(
            "{}->{} #{} authenticated",
            connection.initiator,
            connection.responder,
            connection.number,
        )
        backlog = self.backlog.pop((connection.initiator, connection.responder), deque())
        for message in backlog:
            self._sendRequest(connection, message)

    # -- the responder's side --------------------------------------------------------

    def _atResponder(
        self, connection: Connection, line: bytes, node: SimNode, forged: bool
    ) -> None:
        """A line for the responder: a handshake line, or a request to step and answer."""
        sim = self.sim
        name = connection.responder
        if name not in connection.sessions:
            self._handshakeLine(connection, line, node, forged)
            return
        opened = self._unseal(connection, name, line, forged)
        if opened is None:
            return
        request = self._parse(connection, True, opened, line)
        sim.record("{}->{} #{} {}", connection.initiator, name, connection.number, request)
        newer = self.current.get((connection.initiator, name))
        if newer is not None and newer.number > connection.number:
            sim.stats["linesAfterReconnect"] += 1
        reply = node.driver.peerRequest(connection.initiator, request)
        if isinstance(reply, defer.Deferred):
            # Answered once the disk holds what the reply promises; the
            # driver fires its replies in the order the requests came.
            self.sim.stats["repliesAfterSave"] += 1
            incarnation = node.incarnation
            reply.addCallback(self._answer, connection, node, incarnation)
        else:
            self._answer(reply, connection, node, node.incarnation)

    def _answer(
        self, reply: Message | None, connection: Connection, node: SimNode, incarnation: int
    ) -> None:
        """Send the responder's C{reply} on C{connection}, unless it or its process ended."""
        name = connection.responder
        if node.disk.powerLost or name in connection.closed or node.incarnation != incarnation:
            return  # the process is ending: it answers nothing more
        if reply is None:
            answer = NOT_SERVING
        else:
            self.sim.network.sent(node, connection.initiator, reply)
            answer = formatMessage(name, reply).encode("utf-8")
        self._transmit(connection, False, connection.sessions[name].seal(answer))

    def _handshakeLine(
        self, connection: Connection, line: bytes, node: SimNode, forged: bool
    ) -> None:
        """The initiator's C{AUTH1} or C{AUTH2}; any other line first is refused."""
        name = connection.responder
        text = line.decode("utf-8", "replace")
        try:
            if connection.responding is None:
                if authWord(text) != AUTH1:
                    raise AuthError("a peer line before the handshake: not authenticated")
                connection.incarnations[name] = node.incarnation
                connection.responding = Responder(
                    self.key, name, randomBytes=self.sim.rng.randbytes
                )
                self._transmit(connection, False, connection.responding.challenge(text).encode())
                return
            session = connection.responding.verify(text)
        except AuthError as e:
            self._refused(connection, name, str(e), forged)
            return
        if forged:
            kind = "an impostor's proof" if connection.forged else "an injected copy of a proof"
            self.sim.fail(
                f"Authentication: {name} accepted {kind} (connection #{connection.number})"
            )
        connection.sessions[name] = session
        self._transmit(connection, False, connection.responding.confirmation().encode())

    # -- both sides ----------------------------------------------------------------

    def _unseal(
        self, connection: Connection, name: str, sealed: bytes, forged: bool
    ) -> bytes | None:
        """The line inside C{sealed}, or L{None} if it does not open (the end closes)."""
        try:
            line = connection.sessions[name].open(sealed)
        except AuthError as e:
            self._refused(connection, name, str(e), forged)
            return None
        if forged:
            self.sim.fail(
                f"Authentication: a line injected into connection #{connection.number} "
                f"({connection.initiator}->{connection.responder}) opened at {name}: {line!r}"
            )
        return line

    def _parse(
        self, connection: Connection, toResponder: bool, line: bytes, sealed: bytes
    ) -> Message:
        """A genuine line's message; the attacker records it, sealed, as it saw it."""
        sim = self.sim
        sender = connection.initiator if toResponder else connection.responder
        try:
            named, rest = splitSender(line.decode("utf-8"))
            message = parseMessage(rest)
        except (UnicodeDecodeError, MessageError) as e:
            sim.fail(f"{sender} sent {line!r}, which does not parse: {e}")
        if named != sender:
            sim.fail(f"{sender} sent a line signed {named!r} on connection #{connection.number}")
        kind = type(message).__name__ + (" (pre-vote)" if isPreVote(message) else "")
        recorded = self.recorded.setdefault(kind, deque(maxlen=RECORDED_PER_KIND))
        recorded.append(Recorded(connection, toResponder, sealed))
        return message

    def _refused(self, connection: Connection, name: str, reason: str, forged: bool) -> None:
        """
        C{name} refused an injected line, or an impostor's: count it, and
        drop the connection.  A line its peer really sent, taken in order,
        always opens: refusing one is a bug.
        """
        stats = self.sim.stats
        if not forged:
            self.sim.fail(
                f"Authentication: {name} refused a line its peer really sent on "
                f"connection #{connection.number} ({connection.initiator}->"
                f"{connection.responder}): {reason}"
            )
        stats["injectionsRejected"] += 1
        if connection.initiating is not None and connection.forged:
            stats["impostorsRejected"] += 1
        self.close(connection, name, reason)

    def close(self, connection: Connection, name: str, why: str) -> None:
        """End C{name} closes C{connection}; the other end learns after its last lines."""
        if name in connection.closed:
            return
        connection.closed.add(name)
        self.sim.record(
            "{}->{} #{} closed by {}: {}",
            connection.initiator,
            connection.responder,
            connection.number,
            name,
            why,
        )
        if name == connection.initiator:
            if self.current.get((name, connection.responder)) is connection:
                del self.current[(name, connection.responder)]
        if len(connection.closed) == 2:
            del self.live[connection.number]
        else:
            self._transmit(connection, name == connection.initiator, CLOSE)

    def processEnded(self, node: SimNode) -> None:
        """C{node}'s process ended: its connections close, its queued requests are gone."""
        for connection in list(self.live.values()):
            if connection.incarnations.get(node.name) == node.incarnation:
                self.close(connection, node.name, "the process ended")
        for pair in [pair for pair in self.backlog if pair[0] == node.name]:
            del self.backlog[pair]

    # -- the network under the connections ----------------------------------------

    def _transmit(self, connection: Connection, toResponder: bool, line: bytes) -> None:
        """Put C{line} on the wire, behind the connection's earlier lines, or lose it."""
        sim = self.sim
        network = sim.network
        src = connection.initiator if toResponder else connection.responder
        dst = connection.end(toResponder)
        delay = network.delay(src, dst)
        if line != CLOSE:
            if network.cut(src, dst) or sim.rng.random() < network.dropRate:
                sim.stats["messagesDropped"] += 1
                self.close(connection, src, "a line was lost: the stream is broken")
                return
            if sim.rng.random() < network.lateRate:
                delay += sim.rng.randint(200, 1500)
                sim.stats["messagesLate"] += 1
        stream = connection.streams[toResponder]
        arrival = stream.lastArrival = max(sim.now + delay, stream.lastArrival)
        sim.events.at(
            arrival, self._arrive, connection, toResponder, line, connection.forged, stream.sent
        )
        if line != CLOSE and sim.rng.random() < network.duplicateRate:
            stream.copied.add(stream.sent)
        stream.sent += 1

    def _arrive(
        self,
        connection: Connection,
        toResponder: bool,
        line: bytes,
        forged: bool,
        number: int | None,
    ) -> None:
        """
        A line reaches its end: unless that end is gone, the end takes it,
        once it took the lines sent before it.  An injected line (no
        C{number}) is taken where it falls in the stream.
        """
        sim = self.sim
        name = connection.end(toResponder)
        if name in connection.closed:
            return
        if connection.forged and not toResponder:
            # The stranger's own end: no process of the cluster.
            if line == CLOSE:
                self.close(connection, name, "the other end closed")
            else:
                self._atInitiator(connection, line, forged)
            return
        node = sim.node(name)
        if node is None:
            self.close(connection, name, "no such process (yet)")
            return
        incarnation = connection.incarnations.get(name, node.incarnation)
        if not node.up or incarnation != node.incarnation:
            self.close(connection, name, "no process to take it")
            return
        if node.paused():
            sim.events.at(
                node.pausedUntil, self._arrive, connection, toResponder, line, forged, number
            )
            return
        if number is None:
            self._take(connection, toResponder, line, node, forged)
            return
        stream = connection.streams[toResponder]
        stream.held[number] = line
        while stream.taken in stream.held:
            if name in connection.closed or node.disk.powerLost:
                return
            taken, line = stream.taken, stream.held.pop(stream.taken)
            stream.taken += 1
            self._take(connection, toResponder, line, node, connection.forged)
            if taken in stream.copied:
                # A copy injected into the stream after the original.
                stream.copied.discard(taken)
                sim.stats["messagesDuplicated"] += 1
                delay = sim.rng.randint(0, sim.network.maxDelayMs)
                sim.events.after(delay, self._arrive, connection, toResponder, line, True, None)

    def _take(
        self, connection: Connection, toResponder: bool, line: bytes, node: SimNode, forged: bool
    ) -> None:
        """The receiving end of C{connection} reads C{line}."""
        if line == CLOSE:
            self.close(connection, node.name, "the other end closed")
        elif toResponder:
            self._atResponder(connection, line, node, forged)
        else:
            self._atInitiator(connection, line, forged)

    # -- the attacker ----------------------------------------------------------------

    def inject(self, count: int) -> None:
        """
        Inject C{count} sealed lines seen earlier (each kind as likely as
        another) into the live connection between the same two nodes, or,
        if there is none, as the first line of a new connection to the
        line's receiver.  Every one must fail to open.
        """
        sim = self.sim
        kinds = sorted(self.recorded)
        for _ in range(count if kinds else 0):
            kind = sim.rng.choice(kinds)
            record = sim.rng.choice(self.recorded[kind])
            old = record.connection
            target = self.current.get((old.initiator, old.responder))
            if target is None or not target.established():
                # A new connection, its source forged to be the line's sender.
                receiver = old.end(record.toResponder)
                sender = old.responder if receiver == old.initiator else old.initiator
                target = self._newConnection(sender, receiver, 0)
                target.forged = True
                toResponder = True
            else:
                toResponder = record.toResponder
            sim.stats["messagesReplayed"] += 1
            sim.stats[f"replayed {kind}"] += 1
            sim.record(
                "attacker injects a sealed {} of #{} into #{}", kind, old.number, target.number
            )
            delay = sim.network.delay(old.initiator, old.responder)
            sim.events.after(delay, self._arrive, target, toResponder, record.sealed, True, None)

    def impostor(self) -> None:
        """
        A stranger holding another key connects to a running node as one
        of its peers, and tries to get a line into its core.
        """
        sim = self.sim
        up = [node for node in sim.nodes.values() if node.up]
        if not up:
            return
        target = sim.rng.choice(up)
        # Any name ever given to a node: one stopped for good is as good a
        # disguise, and may be the only other one left.
        claimed = sim.rng.choice([name for name in sim.addresses if name != target.name])
        connection = self._newConnection(claimed, target.name, 0)
        connection.forged = True
        connection.initiating = Initiator(
            self.wrongKey, claimed, target.name, randomBytes=sim.rng.randbytes
        )
        sim.stats["impostors"] += 1
        sim.record("impostor with another key connects to {} as {}", target.name, claimed)
        self._awaitAnswer(connection, connection.initiating.hello().encode())

    def _impostorProof(self, connection: Connection, challenge: str) -> None:
        """
        The impostor, challenged, answers with its best forgery: a proof
        made with its own key over this handshake's nonces, a made-up MAC,
        or a peer line as if there were no handshake at all.
        """
        sim = self.sim
        initiating = connection.initiating
        assert initiating is not None
        choice = sim.rng.randrange(3)
        if choice == 0:
            nonce = bytes.fromhex(challenge.split(" ")[1])
            ownKey = Responder(self.wrongKey, connection.responder, randomBytes=lambda n: nonce)
            forged = ownKey.challenge(initiating.hello())
            line = initiating.answerChallenge(forged)
        elif choice == 1:
            line = f"{connection.initiator}@{AUTH2} {sim.rng.randbytes(32).hex()}"
        else:
            entry = Entry(1, 10**6, "set pwned yes")
            line = formatMessage(connection.initiator, AppendEntries(10**6, 0, 0, [entry], 1))
        connection.confirming = True
        self._awaitAnswer(connection, line.encode("utf-8"))
