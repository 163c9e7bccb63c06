"""
An in-memory network of L{RaftCore}s for deterministic tests.

Modelled on the C{network} of etcd-io/raft's tests: every node is a pure
L{RaftCore}; the network persists each node's L{Ready} to an in-memory
L{Disk}, queues its messages, and applies its committed entries to a
per-node list.  Nothing happens unless a test says so: L{RaftNetwork.tick}
advances logical time, L{RaftNetwork.deliver} delivers queued messages (in
order, skipping those a C{hold} predicate keeps back), and the fault
helpers cut links, isolate nodes, crash and restart them.

Every message crosses the wire format: it is encoded with
L{formatMessage}, and the receiver steps the result of L{splitSender} and
L{parseMessage} on that line.  A request's C{Ready.reply} goes back to the
requester.

After every L{Ready} the network checks the safety properties of Figure 3
of the Raft paper and raises L{InvariantError} at the first violation,
with the checker the cluster simulation uses
(L{tests.simulation.invariants.InvariantChecker}): Election Safety (at
most one leader per term, and that one elected by the real votes of a
majority), Log Matching, Leader Completeness (a leader
holds every entry committed in an earlier term), and the safety of commits
(no two nodes commit different entries at one index).  It also checks that
every node applies a prefix of one common sequence, each index exactly
once and in order, that C{commitIndex} never decreases, and that the disk
holds exactly the core's term, vote and log.

Snapshots (L{RaftNetwork.compact}) serialize the list of entries a node
has applied, so a follower that installs one gets the very sequence every
other node applied, and State Machine Safety is checked through them too.
"""

from __future__ import annotations

import json
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence

import attrs

from tests.simulation.invariants import InvariantChecker
from txraft.core import LEADER, RaftCore, Ready
from txraft.membership import Membership
from txraft.messages import (
    REQUESTS,
    AppendEntries,
    Entry,
    HardState,
    Message,
    RequestVoteResponse,
    Snapshot,
    formatMessage,
    parseMessage,
    splitSender,
)


class InvariantError(AssertionError):
    """A Raft safety property does not hold."""


@attrs.frozen
class Envelope:
    """One message on the wire: sender, receiver, the encoded line, the decoded message."""

    src: str
    dst: str
    line: str
    message: Message


@attrs.define
class Disk:
    """What a node has made durable by handling its L{Ready}s in order."""

    hardState: HardState = HardState()
    entries: list[Entry] = attrs.Factory(list)
    snapshot: Snapshot | None = None

    @property
    def lastIndex(self) -> int:
        """The index of the last entry held, counting the snapshot's."""
        if self.entries:
            return self.entries[-1].index
        return self.snapshot.index if self.snapshot else 0


def encodeApplied(entries: Sequence[Entry]) -> bytes:
    """The snapshot data of a state machine that applied C{entries}."""
    return json.dumps([[e.index, e.term, e.command] for e in entries]).encode()


def decodeApplied(data: bytes) -> list[Entry]:
    """The inverse of L{encodeApplied}."""
    return [Entry(*fields) for fields in json.loads(data)]


def entriesOf(core: RaftCore) -> list[Entry]:
    """The log of C{core} after its snapshot (the whole log, if it has none)."""
    return core.log.slice(core.log.firstIndex, core.log.lastIndex + 1)


def termsOf(core: RaftCore) -> list[int]:
    """The term of every entry of C{core}'s log, in index order."""
    return [entry.term for entry in entriesOf(core)]


def makeEntries(terms: Iterable[int]) -> list[Entry]:
    """
    A log with the given terms, one entry per term.  The command depends only
    on index and term, so logs made by this function obey Log Matching.
    """
    return [Entry(index, term, f"set i{index} t{term}") for index, term in enumerate(terms, 1)]


Hold = Callable[[Envelope], bool]


@attrs.define
class NodeView:
    """One node as the shared L{InvariantChecker} sees it."""

    name: str
    up: bool = False
    core: RaftCore | None = None


class RaftNetwork:
    """
    Several L{RaftCore}s joined by a queue of in-flight messages.

    @ivar cores: the running core of each node that is up.
    @ivar disks: each node's durable state (survives L{crash}).
    @ivar applied: the entries each node's state machine has executed in this
        incarnation, in order.
    @ivar queue: the messages in flight, oldest first.
    @ivar sent: every message ever sent, in order (dropped ones included).
    @ivar delivered: every message stepped by its receiver, in order.
    @ivar leaders: the leader of each term that had one.
    @ivar committedLog: the one sequence every state machine applies a prefix of.
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        electionTicks: tuple[int, int] = (10, 20),
        heartbeatTicks: int = 3,
        seed: int = 0,
        maxAppendBytes: int | None = None,
        maxInflightAppends: int | None = None,
        logs: dict[str, Sequence[Entry]] | None = None,
        hardStates: dict[str, HardState] | None = None,
        preVote: bool = False,
        checkQuorum: bool = False,
        joining: Sequence[str] = (),
        trailingEntries: int = 0,
    ) -> None:
        """
        @param joining: nodes that start with no membership, waiting to be
            added; the others bootstrap with every other name as a voter.
        @param trailingEntries: see L{RaftCore}; by default a compaction
            drops every entry its snapshot covers (dissertation chapter 5).
        """
        self.names = tuple(names)
        self.joining = frozenset(joining)
        # Figure 2's algorithm by default; PreVote and CheckQuorum on request.
        self.coreOptions: dict[str, object] = {
            "preVote": preVote,
            "checkQuorum": checkQuorum,
            "trailingEntries": trailingEntries,
        }
        self.electionTicks = electionTicks
        self.heartbeatTicks = heartbeatTicks
        self.seed = seed
        self.maxAppendBytes = maxAppendBytes
        if maxInflightAppends is not None:
            self.coreOptions["maxInflightAppends"] = maxInflightAppends
        self.disks = {
            name: Disk((hardStates or {}).get(name, HardState()), list((logs or {}).get(name, ())))
            for name in self.names
        }
        self.cores: dict[str, RaftCore] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.queue: deque[Envelope] = deque()
        self.sent: list[Envelope] = []
        self.delivered: list[Envelope] = []
        self.committedLog: list[Entry] = []
        self.views = {name: NodeView(name) for name in self.names}
        self.invariants = InvariantChecker(self._fail, Counter(), replay=False)
        self.invariants.nodes = list(self.views.values())
        self._cut: set[frozenset[str]] = set()
        self._incarnation = dict.fromkeys(self.names, 0)
        self._commitIndex: dict[str, int] = {}
        for name in self.names:
            self._start(name)

    # -- nodes ----------------------------------------------------------------

    def _start(self, name: str) -> None:
        disk = self.disks[name]
        extra = dict(self.coreOptions)
        base = disk.snapshot.index if disk.snapshot else 0
        if self.maxAppendBytes is not None:
            extra["maxAppendBytes"] = self.maxAppendBytes
        self._incarnation[name] += 1
        voters = () if name in self.joining else [n for n in self.names if n not in self.joining]
        self.cores[name] = RaftCore(
            name,
            membership=Membership.ofVoters(voters),
            hardState=disk.hardState,
            snapshot=disk.snapshot,
            # What the disk holds after the snapshot: a restart drops the
            # entries kept before it, as the file store's load does.
            entries=[e for e in disk.entries if e.index > base],
            electionTicks=self.electionTicks,
            heartbeatTicks=self.heartbeatTicks,
            rng=random.Random(f"{self.seed}/{name}/{self._incarnation[name]}"),
            **extra,
        )
        self.applied[name] = decodeApplied(disk.snapshot.data) if disk.snapshot else []
        self._commitIndex[name] = len(self.applied[name])
        view = self.views[name]
        view.up, view.core = True, self.cores[name]

    @staticmethod
    def _fail(problem: str) -> None:
        raise InvariantError(problem)

    @property
    def leaders(self) -> dict[int, str]:
        """The leader of each term that had one."""
        return self.invariants.leaders

    def __getitem__(self, name: str) -> RaftCore:
        return self.cores[name]

    def up(self) -> list[str]:
        """The names of the nodes that are running."""
        return [name for name in self.names if name in self.cores]

    def crash(self, name: str) -> None:
        """Stop C{name}: it loses its volatile state and every message to or from it."""
        del self.cores[name]
        self.views[name].up = False
        self.queue = deque(e for e in self.queue if name not in (e.src, e.dst))

    def compact(self, name: str, index: int) -> Snapshot:
        """
        Snapshot C{name}'s state machine as of applied entry C{index}, save
        it, and let the core drop the entries it covers.
        """
        core, applied = self.cores[name], self.applied[name]
        snapshot = Snapshot(index, core.log.term(index), encodeApplied(applied[:index]))
        upTo = core.compact(snapshot)
        # The core records the membership of the time in the snapshot, as
        # the LogManager does in production.
        disk = self.disks[name]
        disk.snapshot = snapshot = core.snapshot
        disk.entries = [e for e in disk.entries if e.index > upTo]
        return snapshot

    def restart(self, name: str) -> RaftCore:
        """Start C{name} again from its disk, with an empty state machine."""
        assert name not in self.cores, f"{name} is running"
        self._start(name)
        return self.cores[name]

    def leader(self) -> str | None:
        """The running leader of the highest term, if any."""
        leaders = [n for n in self.up() if self.cores[n].role == LEADER]
        if not leaders:
            return None
        return max(leaders, key=lambda n: self.cores[n].currentTerm)

    # -- links ----------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Drop every message between C{a} and C{b}, both ways, until L{heal}."""
        self._cut.add(frozenset((a, b)))

    def isolate(self, name: str) -> None:
        """Cut C{name} off from every other node."""
        for other in self.names:
            if other != name:
                self.cut(name, other)

    def heal(self) -> None:
        """Restore every link."""
        self._cut.clear()

    def connected(self, a: str, b: str) -> bool:
        """Whether a message from C{a} to C{b} would be delivered now."""
        return frozenset((a, b)) not in self._cut and a in self.cores and b in self.cores

    # -- inputs -----------------------------------------------------------------

    def tick(self, *names: str, times: int = 1) -> None:
        """Tick C{names} (default: every running node) C{times} times; deliver nothing."""
        for _ in range(times):
            for name in names or self.up():
                self.handle(name, self.cores[name].tick())

    def propose(self, name: str, commands: Sequence[str]) -> list[Entry]:
        """Propose C{commands} on C{name}; return the new entries."""
        ready = self.cores[name].propose(commands)
        self.handle(name, ready)
        return [e for e in ready.entries if e.command in commands]

    def campaign(self, name: str) -> RaftCore:
        """Tick only C{name} until it starts an election (nothing is delivered)."""
        core = self.cores[name]
        term = core.currentTerm
        for _ in range(self.electionTicks[1]):
            self.tick(name)
            if core.currentTerm > term:
                return core
        raise AssertionError(f"{name} did not campaign within {self.electionTicks[1]} ticks")

    def elect(self, name: str, hold: Hold | None = None) -> RaftCore:
        """L{campaign} on C{name}, deliver, and require that it won."""
        core = self.campaign(name)
        self.deliver(hold)
        if core.role != LEADER:
            raise AssertionError(f"{name} lost the election for term {core.currentTerm}")
        return core

    def runUntil(self, done: Callable[[], bool], maxTicks: int) -> int:
        """Tick everyone and deliver everything until C{done()}; return the ticks used."""
        for used in range(maxTicks + 1):
            if done():
                return used
            self.tick()
            self.deliver()
        raise AssertionError(f"not done after {maxTicks} ticks")

    # -- the wire ---------------------------------------------------------------

    def send(self, src: str, dst: str, message: Message) -> None:
        """Encode C{message} as a peer line and queue it."""
        line = formatMessage(src, message)
        sender, rest = splitSender(line)
        decoded = parseMessage(rest)
        if sender != src or decoded != message:
            raise InvariantError(f"{message!r} does not survive the wire: {line!r}")
        if isinstance(message, RequestVoteResponse) and message.voteGranted:
            if not message.preVote:
                self.invariants.observeVote(src, message.term, dst)
        envelope = Envelope(src, dst, line, decoded)
        self.sent.append(envelope)
        self.queue.append(envelope)

    def deliverEnvelope(self, envelope: Envelope) -> bool:
        """Step one envelope on its receiver unless its link is down; whether it was."""
        if not self.connected(envelope.src, envelope.dst):
            return False
        sender, rest = splitSender(envelope.line)
        assert sender is not None
        self.delivered.append(envelope)
        ready = self.cores[envelope.dst].step(sender, parseMessage(rest))
        self.handle(envelope.dst, ready, requester=sender)
        if ready.reply is not None and not isinstance(envelope.message, REQUESTS):
            raise InvariantError(f"{envelope.dst} replied to a response: {ready.reply!r}")
        return True

    def deliver(self, hold: Hold | None = None, limit: int = 100_000) -> int:
        """
        Deliver queued messages oldest first, including those sent while
        delivering, until only held ones remain; return how many were stepped.
        """
        count = 0
        kept: deque[Envelope] = deque()
        while self.queue:
            envelope = self.queue.popleft()
            if hold is not None and hold(envelope):
                kept.append(envelope)
                continue
            count += self.deliverEnvelope(envelope)
            if count > limit:
                raise AssertionError("the network does not quiesce")
        self.queue = kept
        return count

    def deliverRandomly(self, rng: random.Random, drop: float, delay: float) -> None:
        """
        Deliver queued messages, dropping each with probability C{drop} and
        keeping it for the next call with probability C{delay} (so it arrives
        after newer messages).
        """
        delayed: deque[Envelope] = deque()
        while self.queue:
            envelope = self.queue.popleft()
            chance = rng.random()
            if chance < drop:
                continue
            if chance < drop + delay:
                delayed.append(envelope)
                continue
            self.deliverEnvelope(envelope)
        self.queue = delayed

    def drop(self, predicate: Hold) -> list[Envelope]:
        """Remove the queued messages matching C{predicate}; return them."""
        dropped = [e for e in self.queue if predicate(e)]
        self.queue = deque(e for e in self.queue if not predicate(e))
        return dropped

    def count(self, src: str, dst: str, kind: type = AppendEntries) -> int:
        """How many C{kind} messages C{src} has sent to C{dst}."""
        return sum(
            1 for e in self.sent if (e.src, e.dst) == (src, dst) and isinstance(e.message, kind)
        )

    # -- handling a Ready, and the safety checks --------------------------------------

    def handle(self, name: str, ready: Ready, requester: str | None = None) -> None:
        """Persist, send and apply C{ready} as the driver must, then check invariants."""
        disk = self.disks[name]
        if ready.hardState is not None:
            disk.hardState = ready.hardState
        if ready.truncateFrom is not None:
            disk.entries = [e for e in disk.entries if e.index < ready.truncateFrom]
        if ready.snapshot is not None:
            disk.snapshot = ready.snapshot
            disk.entries = [e for e in disk.entries if e.index > ready.snapshot.index]
        for entry in ready.entries:
            if entry.index != disk.lastIndex + 1:
                raise InvariantError(f"{name}: Ready appends {entry} after {disk.lastIndex}")
            disk.entries.append(entry)
        if ready.reply is not None:
            if requester is None:
                raise InvariantError(f"{name}: a reply without a request: {ready.reply!r}")
            self.send(name, requester, ready.reply)
        for peer, message in ready.messages:
            self.send(name, peer, message)
        if ready.snapshot is not None:
            self._installApplied(name, decodeApplied(ready.snapshot.data))
        self._apply(name, ready.committed)
        self._check(name, ready)
        if ready.entries:
            core = self.cores[name]
            self.handle(name, core.persisted(core.log.lastIndex))

    def _installApplied(self, name: str, entries: list[Entry]) -> None:
        """A snapshot replaces C{name}'s state machine: it must hold what others applied."""
        shared = min(len(entries), len(self.committedLog))
        if entries[:shared] != self.committedLog[:shared]:
            raise InvariantError(
                f"{name} installs a snapshot that disagrees with what was applied"
            )
        self.committedLog.extend(entries[shared:])
        self.applied[name] = list(entries)

    def _apply(self, name: str, entries: list[Entry]) -> None:
        applied = self.applied[name]
        for entry in entries:
            position = len(applied)
            if entry.index != position + 1:
                raise InvariantError(f"{name} applies {entry} after index {position}")
            if position < len(self.committedLog):
                if self.committedLog[position] != entry:
                    raise InvariantError(
                        f"{name} applies {entry}, others applied {self.committedLog[position]}"
                    )
            else:
                self.committedLog.append(entry)
            applied.append(entry)

    def _check(self, name: str, ready: Ready) -> None:
        core = self.cores[name]
        previousCommit = self._commitIndex[name]
        if core.commitIndex < previousCommit:
            raise InvariantError(f"{name}: commitIndex went back to {core.commitIndex}")
        self._commitIndex[name] = core.commitIndex
        if len(self.applied[name]) != core.commitIndex:
            raise InvariantError(f"{name}: applied {len(self.applied[name])} of commitIndex")
        disk = self.disks[name]
        if disk.hardState != HardState(core.currentTerm, core.votedFor):
            raise InvariantError(f"{name}: term/vote not persisted: {disk.hardState}")
        logChanged = ready.truncateFrom is not None or ready.entries or ready.snapshot
        if logChanged and disk.entries != entriesOf(core):
            raise InvariantError(f"{name}: the disk does not hold the core's log")
        view = self.views[name]
        self.invariants.observeRole(view)
        if logChanged:
            self.invariants.checkEntries(view, 1)
        for entry in ready.committed:
            self.invariants.observeCommitted(view, entry)


def checkLogMatching(a: RaftCore, b: RaftCore) -> None:
    """
    Figure 3, Log Matching: if two logs hold an entry with the same index and
    term, they are identical in all entries up to that index.
    """
    # Entries a snapshot covers are committed: compare what both still hold.
    first = max(a.log.firstIndex, b.log.firstIndex)
    for index in range(min(a.log.lastIndex, b.log.lastIndex), first - 1, -1):
        if a.log.term(index) == b.log.term(index):
            if a.log.slice(first, index + 1) != b.log.slice(first, index + 1):
                raise InvariantError(f"{a.name} and {b.name} agree on term at {index} only")
            return
