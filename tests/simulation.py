"""
A deterministic simulation of a whole txraft cluster in one process.

L{Simulation} runs N nodes on a simulated clock (integer milliseconds) and
a simulated network.  Each node is the real stack below the Twisted shell:
a L{RaftCore} driven through a L{LogManager} over in-memory log, term/vote
and snapshot stores, applying to a L{KeyValueStore}.  L{SimNode} carries
out every L{Ready} exactly as C{RaftService._process} does (persist, send,
install a snapshot, apply, answer the clients waiting for the applied
entries, fail them all if leadership was lost, maybe take a snapshot), and
answers client commands as C{RaftService.clientRequest} does (group commit
on the leader, C{REDIRECT} or C{UNAVAILABLE} elsewhere, C{UNAVAILABLE} after
the commit timeout).  Snapshots are taken every few applied entries, written
"in the background" (after a simulated delay) and then compacted, as
C{RaftService._maybeSnapshot} does; a node whose disk fails falls silent and
rejoins from what its disk holds, as C{RaftService._storageFailed} and
C{_rejoin} do.

Everything is drawn from one C{random.Random(seed)}: the run's profile
(timeouts, batch sizes, snapshot interval), the fault schedule, network
delays, drops and duplicates, the clients' operations, and the seed of each
node's election timer (a fresh one per core).  The same seed therefore
replays the same run, event for event.

Faults, chosen by a seeded schedule during the first C{faultMs} of a run:
message loss, duplication, reordering and delay (a few messages arrive
more than a second late, after much newer ones); symmetric partitions,
one-way (asymmetric) link cuts, a partition isolating the leader in one or
both directions; crashes of any node, either at once or just before one of
its next few durable writes (the in-memory log then loses what was not
synced, as L{MemoryLogStore.crash} does), followed by a restart from the
stores; disk errors (writes fail for a while: the node falls silent and
rejoins); slow nodes (their messages delayed more, their ticks sometimes
skipped) and paused nodes (a stalled process: it does nothing, then
catches up by at most one heartbeat of ticks, as C{RaftService._ticks}
does); clocks that run at slightly different rates.  Clients retry: a
request that surely did not execute (a redirect, no leader known, an
overwritten entry, a refused connection) is resent as the same operation;
one whose outcome is unknown (leadership lost, commit timeout, disk
failure, lost connection) is recorded as such and retried later, possibly
at another node, as a new operation.

After every event L{InvariantChecker} checks, against a global record of
everything any node ever logged, committed and applied:

  - Election Safety: at most one leader per term;
  - vote durability: no node grants votes to two candidates in one term,
    across restarts;
  - Log Matching (see L{InvariantChecker.checkEntries});
  - Leader Completeness: an entry committed in term T is in the log (or
    the snapshot) of the leader of every term after T, when it is elected
    and while it leads;
  - State Machine Safety: no two nodes commit or apply different entries
    at one index, and every snapshot taken or installed is the replay of
    the committed log up to its index;
  - commitIndex never decreases during the life of one core.  A core lives
    from the start (or restart) of its node, or from its rebuilding after
    a disk failure, until its node crashes or its disk fails.  A core
    starts with commitIndex at its snapshot's index, or 0 (commitIndex is
    volatile state in Figure 2), and its commits must again be prefixes of
    the one global committed log.  lastApplied never decreases during the
    life of a node's process (it is kept across a rebuilt core);
  - after each L{Ready}: the durable log and snapshot are the core's,
    lastApplied equals commitIndex (or, after a disk failure, the larger
    of commitIndex and what was applied before), and the state machine
    equals a replay of the committed log up to lastApplied (by a reference
    model, not by L{KeyValueStore}), each applied entry giving the
    reference reply.

Once the faults stop (every link healed, drops and duplicates off, disks
working, slow and crashed nodes back), a client write must commit within
C{livenessMs}, and then every node must converge to the same log, commit
index and state within C{convergeMs}.  Finally the clients' history is
checked for linearizability by L{txraft.linearizability.checkHistory}.

A violation raises L{SimulationError}, whose text names the seed, the
command that replays it alone, and the last events of the run.
"""

from __future__ import annotations

import errno
import heapq
import json
import random
import traceback
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import attrs

import txraft.core
from txraft.core import LEADER, NOOP, HardState, RaftCore, Ready, Snapshot
from txraft.kv import KeyValueStore, parseCommand
from txraft.logmanager import LogManager
from txraft.messages import (
    REQUESTS,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    formatMessage,
    parseMessage,
    splitSender,
)
from txraft.snapshots import MemorySnapshotStore
from txraft.storage import MemoryLogStore, MemoryStateStore, StorageError

#: How to rerun one seed on its own.
REPLAY = "TXRAFT_SEED={seed} pytest tests/test_simulation.py"

#: The fault schedule's actions and how often each is chosen.
FAULT_WEIGHTS: dict[str, int] = {
    "partition": 3,
    "oneWay": 3,
    "isolateLeader": 3,
    "heal": 4,
    "crash": 3,
    "crashMidWrite": 3,
    "diskError": 2,
    "restart": 2,
    "network": 4,
    "slow": 2,
    "pause": 2,
}

#: Answers after which a client knows its command did not execute.
_NOT_EXECUTED = (
    "UNAVAILABLE no leader known",
    "UNAVAILABLE entry was overwritten",
    "UNAVAILABLE connection refused",
)

#: What a node whose disk fails answers (C{service.DISK_FAILED}).
DISK_FAILED = "UNAVAILABLE node cannot write to its disk"


class SimulationError(AssertionError):
    """A safety or liveness property failed; the text says how to replay it."""

    def __init__(self, simulation: Simulation, problem: str) -> None:
        self.seed = simulation.seed
        self.problem = problem
        self.replay = REPLAY.format(seed=simulation.seed)
        super().__init__(
            f"txraft simulation failed: seed {simulation.seed}, "
            f"{len(simulation.names)} nodes, at {simulation.now} ms (event {simulation.steps})\n"
            f"{problem}\n"
            f"Replay this seed alone with:\n    {self.replay}\n"
            f"The last {len(simulation.trace)} events:\n{simulation.formatTrace()}"
        )


class SimulatedCrashError(Exception):
    """The power failed just before a durable write."""


class Disk:
    """
    The faults of one node's disk, shared by its three stores: every
    durable write first asks L{write}, which may lose power or fail.

    @ivar crashAfter: if not 0, the power fails just before the
        C{crashAfter}-th durable write from now.
    @ivar failingUntil: until this simulated time, durable writes fail.
    @ivar quiet: no faults at all (while a node starts).
    """

    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.crashAfter = 0
        self.failingUntil = 0
        self.quiet = False

    def write(self, what: str) -> None:
        """Called before each durable write of C{what}."""
        if self.quiet:
            return
        if self.crashAfter:
            self.crashAfter -= 1
            if self.crashAfter == 0:
                raise SimulatedCrashError(f"power lost before {what}")
        if self.clock() < self.failingUntil:
            raise OSError(errno.EIO, f"I/O error while {what}")


class SimLogStore(MemoryLogStore):
    """A L{MemoryLogStore} on a L{Disk}: its sync and compaction can crash or fail."""

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self.disk = disk

    def sync(self) -> None:
        """Make the entries durable (unless the disk says otherwise)."""
        self.disk.write("syncing the log")
        super().sync()

    def compact(self, index: int) -> None:
        """Drop entries up to C{index} durably (unless the disk says otherwise)."""
        self.disk.write("compacting the log")
        super().compact(index)


class SimStateStore(MemoryStateStore):
    """A L{MemoryStateStore} on a L{Disk}."""

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self.disk = disk

    def save(self, state: HardState) -> None:
        """Save C{state} (unless the disk says otherwise)."""
        self.disk.write("saving the term and vote")
        super().save(state)


class SimSnapshotStore(MemorySnapshotStore):
    """A L{MemorySnapshotStore} on a L{Disk}."""

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self.disk = disk

    def save(self, snapshot: Snapshot) -> None:
        """Save C{snapshot} (unless the disk says otherwise)."""
        self.disk.write("saving a snapshot")
        super().save(snapshot)

    def commit(self, staged: object) -> None:
        """Put a staged snapshot in place (unless the disk says otherwise)."""
        self.disk.write("putting a snapshot in place")
        super().commit(staged)


@attrs.define
class SimulationOptions:
    """
    The shape of one simulated run; all times in simulated milliseconds.
    Fields left at L{None} are drawn from the seed, so that seeds also
    explore different timings, batch sizes, snapshot intervals and
    contention.
    """

    nodes: int = 3
    clients: int | None = None
    keys: tuple[str, ...] | None = None
    #: The nominal tick period; each core's clock is off by up to 20%.
    tickMs: int = 10
    electionTicks: tuple[int, int] | None = None
    heartbeatTicks: int | None = None
    #: AppendEntries carries at most this many bytes of commands (0: the core's default).
    maxAppendBytes: int | None = None
    #: Take a snapshot every this many applied entries (0: never).
    snapshotEntries: int | None = None
    #: InstallSnapshot carries at most this many bytes (0: the core's default).
    snapshotChunkBytes: int | None = None
    #: Writing a snapshot in the background takes up to this long.
    snapshotWriteMs: int = 40
    #: Faults are injected during [0, faultMs); then everything heals.
    faultMs: int = 3000
    #: After healing, a client write must commit within this time...
    livenessMs: int = 3000
    #: ...and then every node must hold the same log and state within this.
    convergeMs: int = 2000
    #: The leader answers UNAVAILABLE for a command not applied this long after proposal.
    commitTimeoutMs: int = 1000
    #: A node whose disk failed tries to rejoin this often (C{DISK_RETRY_SECONDS}).
    diskRetryMs: int = 300
    #: A node that stays up must answer every request within this time
    #: (L{None}: the commit timeout plus two of the longest pauses plus a second).
    answerTimeoutMs: int | None = None
    #: A client waits this long between operations, and this long before a retry.
    thinkMs: tuple[int, int] = (5, 60)
    backoffMs: tuple[int, int] = (10, 80)
    #: Time between two actions of the fault schedule.
    faultEveryMs: tuple[int, int] = (30, 250)
    faultWeights: dict[str, int] = attrs.Factory(lambda: dict(FAULT_WEIGHTS))
    #: How long a crashed node stays down, a paused node stays paused, a disk fails.
    downMs: tuple[int, int] = (20, 600)
    pauseMs: tuple[int, int] = (50, 400)
    diskErrorMs: tuple[int, int] = (50, 800)
    #: Normal one-way message delay is uniform in [1, baseDelayMs].
    baseDelayMs: int | None = None
    #: Send every peer message through the wire format (formatMessage/parseMessage).
    wire: bool = True
    traceLength: int = 200
    #: Every this many events, check every node's whole state (besides per-event checks).
    fullCheckEvery: int = 200


@attrs.define
class Envelope:
    """A peer message in flight."""

    src: str
    srcIncarnation: int
    dst: str
    message: Message
    #: For a response: the incarnation of the requester, whose connection it travels on.
    requesterIncarnation: int | None = None


@attrs.define
class HistoryRecord:
    """One client operation as the client saw it; C{end} L{None}: outcome unknown."""

    client: str
    kind: str
    key: str
    value: str | None
    start: float
    end: float | None = None
    result: str | None = None
    found: bool | None = None


@attrs.define
class SimClient:
    """A client issuing one operation at a time, following redirects, retrying."""

    name: str
    generation: int = 0
    target: str | None = None
    requestId: int = 0
    op: HistoryRecord | None = None
    redirects: int = 0
    count: int = 0
    waitingOn: str | None = None
    sentAt: int = 0

    @property
    def identity(self) -> str:
        """The process name in the history: a new one after each unknown outcome."""
        return self.name if self.generation == 0 else f"{self.name}.{self.generation}"


class SimNode:
    """
    One node: durable stores on a L{Disk} that survive crashes, and per
    incarnation of its process a L{LogManager}, a fresh L{KeyValueStore}
    and a L{RaftCore} (rebuilt, keeping the state machine, after a disk
    failure).

    @ivar incarnation: how many times the process started.
    @ivar silent: the disk failed; the node takes no part in Raft.
    @ivar commitSeen: the highest commitIndex of the current core.
    @ivar appliedSeen: the highest lastApplied of the current process.
    @ivar appliedFloor: what was applied when the core was last rebuilt.
    """

    def __init__(self, simulation: Simulation, name: str) -> None:
        self.sim = simulation
        self.name = name
        self.disk = Disk(lambda: simulation.now)
        self.logStore = SimLogStore(self.disk)
        self.stateStore = SimStateStore(self.disk)
        self.snapshotStore = SimSnapshotStore(self.disk)
        self.incarnation = 0
        self.up = False
        self.silent = False
        self.core: RaftCore = None  # type: ignore[assignment]
        self.logManager: LogManager = None  # type: ignore[assignment]
        self.stateMachine: KeyValueStore = None  # type: ignore[assignment]
        #: Client commands proposed and not yet applied, by index: (term, deadline, client).
        self.waiting: dict[int, tuple[int, int, tuple[SimClient, int]]] = {}
        self.batch: list[tuple[str, tuple[SimClient, int]]] = []
        #: Client requests on their way to this node, by (client name, request id).
        self.inbound: dict[tuple[str, int], SimClient] = {}
        self.flushPending = False
        self.snapshotting = False
        self.commitSeen = 0
        self.appliedSeen = 0
        self.appliedFloor = 0
        self.pausedUntil = 0
        self.missedTicks = 0
        self.slow = False
        #: This core's tick period: clocks run at slightly different rates.
        self.tickMs = simulation.options.tickMs
        self.role = ""
        self.term = 0

    def start(self) -> None:
        """Start a new incarnation from the stores, as C{RaftService.__init__} does."""
        self.incarnation += 1
        self.stateMachine = KeyValueStore()
        self.logManager = LogManager(
            self.logStore, self.stateStore, self.stateMachine, self.snapshotStore
        )
        self.disk.quiet = True
        try:
            hardState, entries = self.logManager.recover()
        finally:
            self.disk.quiet = False
        self.up = True
        self.silent = False
        self.waiting, self.batch, self.inbound = {}, [], {}
        self.flushPending = self.snapshotting = False
        self.pausedUntil = self.missedTicks = 0
        self.appliedSeen = self.logManager.lastApplied
        self.newCore(hardState, entries)

    def newCore(self, hardState: HardState, entries: list[Entry]) -> None:
        """A core starting from a recovered term, vote, snapshot and log (RaftService._newCore)."""
        sim = self.sim
        options = sim.options
        extra = {"maxAppendBytes": options.maxAppendBytes} if options.maxAppendBytes else {}
        self.core = RaftCore(
            self.name,
            sim.names,
            hardState=hardState,
            snapshot=self.logManager.snapshot,
            entries=entries,
            commitIndex=self.logManager.lastApplied,
            electionTicks=options.electionTicks,
            heartbeatTicks=options.heartbeatTicks,
            rng=random.Random(sim.rng.getrandbits(64)),
            **extra,
        )
        self.tickMs = max(1, options.tickMs + sim.rng.choice((-2, 0, 0, 2)))
        self.commitSeen = self.core.commitIndex
        self.appliedFloor = self.logManager.lastApplied
        self.role = self.core.role
        self.term = self.core.currentTerm
        sim.checker.checkNode(self)

    def paused(self) -> bool:
        """Whether the node's process is stalled right now."""
        return self.pausedUntil > self.sim.now

    # -- the Ready loop, as RaftService._process ---------------------------------

    def process(self, ready: Ready) -> bool:
        """
        Carry out C{ready}: persist, send, install, apply, answer waiting
        clients, maybe snapshot.  Return whether the node still takes part
        in Raft (it may crash, or its disk fail, while persisting).
        """
        sim = self.sim
        if self.silent:
            return False
        wasLeading = bool(self.waiting)
        if ready.needsSync:
            try:
                self.logManager.persist(ready)
            except SimulatedCrashError as e:
                sim.crash(self, str(e))
                return False
            except OSError as e:
                sim.storageFailed(self, e)
                return False
        sim.checker.observeReady(self, ready)
        if ready.truncateFrom is not None:
            sim.stats["truncations"] += 1
        for peer, message in ready.messages:
            sim.send(self, peer, message)
        if ready.snapshot is not None:
            self.logManager.installSnapshot(ready.snapshot)
            sim.stats["snapshotsInstalled"] += 1
            sim.record("{} installs the snapshot up to {}", self.name, ready.snapshot.index)
            sim.checker.observeSnapshot(self, ready.snapshot)
        results = self.logManager.apply(ready.committed)
        sim.checker.observeApplied(self, results)
        for entry, result in results:
            waiter = self.waiting.pop(entry.index, None)
            if waiter is None:
                continue
            term, _, target = waiter
            if term != entry.term:
                sim.stats["answeredOverwritten"] += 1
                result = "UNAVAILABLE entry was overwritten"
            sim.answer(self, target, result)
        if wasLeading and self.core.role != LEADER:
            sim.stats["answeredLeadershipLost"] += len(self.waiting)
            self.failWaiting("UNAVAILABLE leadership lost before commit")
        if self.core.role != self.role or self.core.currentTerm != self.term:
            self.role, self.term = self.core.role, self.core.currentTerm
            sim.record("{} is {} in term {}", self.name, self.role, self.term)
        sim.maybeSnapshot(self)
        return True

    def failWaiting(self, answer: str) -> None:
        """Answer every client whose command is waiting to be applied."""
        waiting, self.waiting = self.waiting, {}
        for _, _, target in waiting.values():
            self.sim.answer(self, target, answer)

    def expireWaiting(self) -> None:
        """Answer UNAVAILABLE for commands not applied by their deadline (oldest first)."""
        while self.waiting:
            index, (_, deadline, target) = next(iter(self.waiting.items()))
            if deadline > self.sim.now:
                return
            del self.waiting[index]
            self.sim.stats["answeredCommitTimeout"] += 1
            self.sim.answer(
                self, target, "UNAVAILABLE not committed in time; the outcome is unknown"
            )

    def notLeader(self) -> str:
        """The answer of a node that is not the leader."""
        leader = self.core.leaderId
        if leader is None:
            return "UNAVAILABLE no leader known"
        return f"REDIRECT {leader} 127.0.0.1 {self.sim.port(leader)}"


def _isPreVote(message: Message) -> bool:
    """Whether C{message} belongs to a pre-vote round (which grants no real vote)."""
    return bool(getattr(message, "preVote", False))


def _describe(value: object) -> str:
    """A compact text for a trace line."""
    if isinstance(value, AppendEntries):
        shown = ", ".join(f"{e.index}/{e.term} {e.command!r}" for e in value.entries[:3])
        more = f", +{len(value.entries) - 3}" if len(value.entries) > 3 else ""
        return (
            f"AppendEntries(t{value.term} prev {value.prevLogIndex}/{value.prevLogTerm} "
            f"[{shown}{more}] commit {value.leaderCommit})"
        )
    if isinstance(value, AppendEntriesResponse):
        if value.success:
            return f"AppendOK(t{value.term} match {value.matchIndex})"
        return (
            f"AppendRejected(t{value.term} at {value.rejectedIndex} "
            f"hint {value.hintIndex}/{value.hintTerm})"
        )
    if isinstance(value, RequestVote):
        kind = "PreVote" if _isPreVote(value) else "RequestVote"
        return f"{kind}(t{value.term} last {value.lastLogIndex}/{value.lastLogTerm})"
    if isinstance(value, RequestVoteResponse):
        kind = "PreVoteAnswer" if _isPreVote(value) else "Vote"
        return f"{kind}(t{value.term} {'granted' if value.voteGranted else 'refused'})"
    if isinstance(value, InstallSnapshot):
        return (
            f"InstallSnapshot(t{value.term} up to {value.lastIncludedIndex}/"
            f"{value.lastIncludedTerm} bytes {value.offset}+{len(value.data)}"
            f"{' done' if value.done else ''})"
        )
    if isinstance(value, InstallSnapshotResponse):
        return (
            f"SnapshotAnswer(t{value.term} up to {value.lastIncludedIndex} "
            f"next {value.nextOffset} match {value.matchIndex})"
        )
    if isinstance(value, Entry):
        return f"{value.index}/{value.term} {value.command!r}"
    return str(value)


def referenceApply(state: dict[str, str], command: str) -> tuple[dict[str, str], str | None]:
    """
    The key-value semantics, written independently of L{KeyValueStore}:
    the state after C{command} and its reply (L{None} for a no-op).
    """
    if command == NOOP:
        return state, None
    name, _, rest = command.partition(" ")
    if name == "set":
        key, _, value = rest.partition(" ")
        return {**state, key: value}, "OK"
    if name == "get":
        return state, f"OK {state[rest]}" if rest in state else "NOT_FOUND"
    if name == "delete":
        if rest not in state:
            return state, "NOT_FOUND"
        return {k: v for k, v in state.items() if k != rest}, "OK"
    if name == "show":
        return state, "OK " + json.dumps(state, ensure_ascii=False, sort_keys=True)
    raise AssertionError(f"the simulation never sends {command!r}")


class InvariantChecker:
    """
    The global truth about a run, and the checks of Raft's safety
    properties (Figure 3 of the paper) against it.

    @ivar leaders: the leader of each term that had one.
    @ivar votes: whom each node granted its vote in each term.
    @ivar registry: for every (index, term) any log ever held, the command
        and the term of the entry before it.
    @ivar committed: the committed log: the entry at each committed index.
    @ivar commitTerms: the term in which each committed index was first
        committed (the current term of the node that first committed it).
    @ivar states: the reference state machine after each committed index.
    @ivar replies: the reference reply of each committed entry.
    """

    def __init__(self, fail: Callable[[str], None]) -> None:
        self.fail = fail
        self.leaders: dict[int, str] = {}
        self.votes: dict[tuple[str, int], str] = {}
        self.registry: dict[tuple[int, int], tuple[str, int]] = {}
        self.committed: list[Entry] = []
        self.commitTerms: list[int] = []
        self.states: list[dict[str, str]] = [{}]
        self.replies: list[str | None] = [None]
        self.nodes: list[SimNode] = []

    # -- per-event checks ---------------------------------------------------------

    def observeVote(self, voter: str, term: int, candidate: str) -> None:
        """A node granted its vote: one candidate per term, even across restarts."""
        holder = self.votes.setdefault((voter, term), candidate)
        if holder != candidate:
            self.fail(
                f"Vote durability: {voter} granted its term {term} vote "
                f"to {holder} and then to {candidate}"
            )

    def observeReady(self, node: SimNode, ready: Ready) -> None:
        """Check what C{node} just made durable, its role and its commits."""
        core = node.core
        if core.role == LEADER:
            holder = self.leaders.get(core.currentTerm)
            if holder is None:
                self.leaders[core.currentTerm] = node.name
                node.sim.stats["leadersElected"] += 1
                self.checkLeaderCompleteness(node)
            elif holder != node.name:
                self.fail(
                    f"Election Safety: {holder} and {node.name} both lead term {core.currentTerm}"
                )
        if core.commitIndex < node.commitSeen:
            self.fail(
                f"commitIndex of {node.name} (incarnation {node.incarnation}) went back "
                f"from {node.commitSeen} to {core.commitIndex}"
            )
        node.commitSeen = core.commitIndex
        if ready.truncateFrom is not None or ready.entries or ready.snapshot is not None:
            first = [e.index for e in ready.entries[:1]]
            if ready.truncateFrom is not None:
                first.append(ready.truncateFrom)
            if ready.snapshot is not None:
                first.append(ready.snapshot.index + 1)
            self.checkEntries(node, min(first))
            self.checkDurable(node, full=False)
        for entry in ready.committed:
            self.observeCommitted(node, entry)

    def observeCommitted(self, node: SimNode, entry: Entry) -> None:
        """C{node} committed C{entry}: it must agree with every earlier commit."""
        index = entry.index
        if index <= len(self.committed):
            if self.committed[index - 1] != entry:
                self.fail(
                    f"State Machine Safety: {node.name} commits {_describe(entry)} at index "
                    f"{index}, where {_describe(self.committed[index - 1])} was committed"
                )
            return
        if index != len(self.committed) + 1:
            self.fail(f"{node.name} commits index {index} after {len(self.committed)}")
        term = node.core.currentTerm
        self.committed.append(entry)
        self.commitTerms.append(term)
        state, reply = referenceApply(self.states[-1], entry.command)
        self.states.append(state)
        self.replies.append(reply)
        # An entry committed late by a stale leader must already be in the
        # log of every leader of a later term (section 5.4.3).
        for other in self.nodes:
            core = other.core
            if other.up and core.role == LEADER and core.currentTerm > term:
                if not self._holds(core, index, entry):
                    self.fail(
                        f"Leader Completeness: {_describe(entry)} committed in term {term} "
                        f"is missing from {other.name}, leader of term {core.currentTerm}"
                    )

    def observeApplied(self, node: SimNode, results: list[tuple[Entry, str | None]]) -> None:
        """C{node} executed C{results}: same entries, replies and state as the replay."""
        for entry, reply in results:
            index = entry.index
            if index > len(self.committed) or self.committed[index - 1] != entry:
                known = "nothing"
                if index <= len(self.committed):
                    known = _describe(self.committed[index - 1])
                self.fail(
                    f"State Machine Safety: {node.name} applies {_describe(entry)} at index "
                    f"{index}, where {known} was committed"
                )
            if reply != self.replies[index]:
                self.fail(
                    f"{node.name} applied {_describe(entry)} with reply {reply!r}; "
                    f"the replay of the committed log gives {self.replies[index]!r}"
                )
        self.checkApplied(node)

    def observeSnapshot(self, node: SimNode, snapshot: Snapshot) -> None:
        """A snapshot taken or installed is the committed log's replay up to its index."""
        index = snapshot.index
        if index > len(self.committed) or self.committed[index - 1].term != snapshot.term:
            self.fail(
                f"State Machine Safety: {node.name} holds a snapshot up to {index}/"
                f"{snapshot.term}, which is not a committed entry"
            )
        if json.loads(snapshot.data) != self.states[index]:
            self.fail(
                f"{node.name}'s snapshot up to {index} holds {snapshot.data!r}; the replay "
                f"of the committed log gives {self.states[index]}"
            )

    # -- the checks ---------------------------------------------------------------

    @staticmethod
    def _holds(core: RaftCore, index: int, entry: Entry) -> bool:
        """Whether C{core}'s log (or snapshot) holds C{entry} at C{index}."""
        log = core.log
        if index <= log.snapshotIndex:
            return index < log.snapshotIndex or log.snapshotTerm == entry.term
        return index <= log.lastIndex and log.entry(index) == entry

    def checkEntries(self, node: SimNode, first: int) -> None:
        """
        Log Matching, checked inductively: an entry with a given index and
        term always has the same command and follows an entry of the same
        term, in every log at every time.  (A leader creates at most one
        entry per index in its term and never changes its log before it;
        followers copy both.)  Two logs that agree at (index, term) then
        agree on every entry before it.  A log that starts after a
        snapshot must start after a committed entry.
        """
        log = node.core.log
        base = log.snapshotIndex
        if base and first <= base + 1:
            if base > len(self.committed) or self.committed[base - 1].term != log.snapshotTerm:
                self.fail(
                    f"Log Matching: {node.name}'s log starts after {base}/{log.snapshotTerm}, "
                    "which is not a committed entry"
                )
        registry = self.registry
        for index in range(max(first, base + 1), log.lastIndex + 1):
            entry = log.entry(index)
            seen = (entry.command, log.term(index - 1))
            known = registry.setdefault((index, entry.term), seen)
            if known != seen:
                self.fail(
                    f"Log Matching: {node.name} holds {_describe(entry)} after an entry of "
                    f"term {seen[1]}, but a log held {known[0]!r} at index {index} term "
                    f"{entry.term} after an entry of term {known[1]}"
                )

    def checkDurable(self, node: SimNode, full: bool) -> None:
        """The durable log (and snapshot) is the core's: it persisted every Ready."""
        log = node.core.log
        base = log.snapshotIndex
        durable = node.logStore.durable
        same = len(durable) == log.lastIndex - base and (
            not durable or durable[-1] == log.entry(log.lastIndex)
        )
        if same and full:
            saved = node.snapshotStore.snapshot
            same = durable == log.slice(base + 1, log.lastIndex + 1) and base == (
                saved.index if saved else 0
            )
        if not same:
            self.fail(f"{node.name}: the durable log differs from the core's log")

    def checkApplied(self, node: SimNode) -> None:
        """
        lastApplied never decreases; it is commitIndex (or, on a core
        rebuilt after a disk failure, at least what was applied before);
        the state machine is the replay up to it.
        """
        applied = node.logManager.lastApplied
        if applied < node.appliedSeen:
            self.fail(f"lastApplied of {node.name} went back from {node.appliedSeen} to {applied}")
        node.appliedSeen = applied
        expected = max(node.core.commitIndex, node.appliedFloor)
        if applied != expected:
            self.fail(
                f"{node.name} applied up to {applied} but commitIndex is {node.core.commitIndex}"
                + (f" (and {node.appliedFloor} were applied before)" if node.appliedFloor else "")
            )
        if node.stateMachine.data != self.states[applied]:
            self.fail(
                f"{node.name}'s state machine is {node.stateMachine.data} after applying "
                f"{applied} entries; the replay of the committed log gives {self.states[applied]}"
            )

    def checkLeaderCompleteness(self, node: SimNode) -> None:
        """
        Leader Completeness: the leader of term T holds every entry
        committed in a term before T.
        """
        core = node.core
        for index, (entry, term) in enumerate(
            zip(self.committed, self.commitTerms, strict=True), 1
        ):
            if term < core.currentTerm and not self._holds(core, index, entry):
                self.fail(
                    f"Leader Completeness: {node.name}, leader of term {core.currentTerm}, "
                    f"lacks {_describe(entry)} committed in term {term}"
                )

    def checkNode(self, node: SimNode) -> None:
        """Check the whole state of one running node."""
        core = node.core
        log = core.log
        self.checkEntries(node, 1)
        self.checkDurable(node, full=True)
        base = log.snapshotIndex
        if log.slice(base + 1, core.commitIndex + 1) != self.committed[base : core.commitIndex]:
            self.fail(f"{node.name}'s log up to commitIndex is not the committed log")
        if core.snapshot is not None:
            self.observeSnapshot(node, core.snapshot)
        self.checkApplied(node)
        if core.role == LEADER:
            if self.leaders.get(core.currentTerm) != node.name:
                self.fail(
                    f"Election Safety: {node.name} leads term {core.currentTerm}, "
                    f"led by {self.leaders.get(core.currentTerm)}"
                )
            self.checkLeaderCompleteness(node)

    def checkAll(self) -> None:
        """Check the whole state of every running node."""
        for node in self.nodes:
            if node.up and not node.silent:
                if node.core.commitIndex < node.commitSeen:
                    self.fail(f"commitIndex of {node.name} went back to {node.core.commitIndex}")
                self.checkNode(node)


class Simulation:
    """
    One seeded run of a cluster; see the module docstring.  L{run} does it
    all; L{start}, L{runUntil} and L{finish} let a test stop halfway.

    @ivar stats: counts of what happened (faults, messages, operations).
    @ivar history: the clients' operations, for the linearizability check.
    """

    def __init__(self, seed: int, options: SimulationOptions | None = None, **kw: Any) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.options = self._drawProfile(
            options if options is not None else SimulationOptions(**kw)
        )
        self.names = tuple(f"n{i}" for i in range(1, self.options.nodes + 1))
        self.now = 0
        self.steps = 0
        self._queue: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._sequence = 0
        self.trace: deque[tuple[int, str, tuple[Any, ...]]] = deque(
            maxlen=self.options.traceLength
        )
        self.checker = InvariantChecker(self.fail)
        self.nodes = {name: SimNode(self, name) for name in self.names}
        self.checker.nodes = list(self.nodes.values())
        self.blocked: set[tuple[str, str]] = set()
        self.dropRate = 0.0
        self.duplicateRate = 0.0
        self.lateRate = 0.0
        self.maxDelayMs = self.options.baseDelayMs
        self.clients = [SimClient(f"c{i}") for i in range(1, self.options.clients + 1)]
        self.history: list[HistoryRecord] = []
        self.stats: Counter[str] = Counter()
        #: For each crash that lost unsynced log changes: the node and the entries lost.
        self.lostWrites: list[tuple[str, list[Entry]]] = []
        self.healedAt: int | None = None
        self.livenessClient: SimClient | None = None
        self.livenessAt: int | None = None
        self.convergedAt: int | None = None
        self.clientsStopped = False
        self.finished = False

    def _drawProfile(self, options: SimulationOptions) -> SimulationOptions:
        """Fill in the options left to the seed."""
        rng = self.rng

        def draw(value: Any, choices: tuple[Any, ...]) -> Any:
            return rng.choice(choices) if value is None else value

        election = draw(options.electionTicks, ((10, 20), (6, 12), (15, 30)))
        return attrs.evolve(
            options,
            clients=draw(options.clients, (options.nodes, options.nodes + 1, options.nodes + 2)),
            keys=draw(options.keys, (("x", "y"), ("x", "y", "z"))),
            electionTicks=election,
            heartbeatTicks=draw(options.heartbeatTicks, tuple(range(1, min(4, election[0])))),
            maxAppendBytes=draw(options.maxAppendBytes, (0, 0, 64, 20)),
            snapshotEntries=draw(options.snapshotEntries, (0, 3, 8, 25)),
            snapshotChunkBytes=draw(options.snapshotChunkBytes, (0, 16, 64)),
            baseDelayMs=draw(options.baseDelayMs, (2, 5, 10)),
            answerTimeoutMs=options.answerTimeoutMs
            or options.commitTimeoutMs + 2 * options.pauseMs[1] + 1000,
        )

    # -- running --------------------------------------------------------------------

    def run(self) -> Counter[str]:
        """Run the whole simulation and check everything; return the stats."""
        self.start()
        self.runUntil(lambda: self.finished)
        self.finish()
        return self.stats

    def start(self) -> None:
        """Start the nodes, their clocks, the clients and the fault schedule."""
        options = self.options
        for node in self.nodes.values():
            node.start()
            self.at(self.rng.randrange(options.tickMs), self._tick, node)
        for client in self.clients:
            self.after(self.rng.randint(*options.thinkMs), self._nextOperation, client)
        if options.faultMs > 0 and any(options.faultWeights.values()):
            self.after(self.rng.randint(*options.faultEveryMs), self._fault)
        self.at(options.faultMs, self._heal)

    def runUntil(self, done: Callable[[], bool], limitMs: int | None = None) -> None:
        """Handle events until C{done()} (or C{limitMs} of simulated time pass)."""
        deadline = None if limitMs is None else self.now + limitMs
        every = self.options.fullCheckEvery
        chunkBytes = txraft.core.SNAPSHOT_CHUNK_BYTES
        if self.options.snapshotChunkBytes:
            # Small chunks, so that snapshots travel in several messages.
            txraft.core.SNAPSHOT_CHUNK_BYTES = self.options.snapshotChunkBytes
        try:
            while not done():
                if deadline is not None and self._queue[0][0] > deadline:
                    self.now = deadline
                    return
                time, _, function, args = heapq.heappop(self._queue)
                self.now = time
                self.steps += 1
                function(*args)
                if self.steps % every == 0:
                    self.checker.checkAll()
        except SimulationError:
            raise
        except Exception as e:
            self.fail(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        finally:
            txraft.core.SNAPSHOT_CHUNK_BYTES = chunkBytes

    def finish(self) -> None:
        """Final checks: every node's state, then the linearizability of the history."""
        clients = list(self.clients)
        if self.livenessClient is not None:
            clients.append(self.livenessClient)
        for client in clients:
            if client.op is not None:  # still waiting: the outcome is unknown
                self.history.append(client.op)
                client.op = None
        try:
            self.checker.checkAll()
            self.checkLinearizable()
        except SimulationError:
            raise
        except Exception as e:
            self.fail(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")

    def checkLinearizable(self) -> None:
        """Check the clients' history with L{txraft.linearizability.checkHistory}."""
        from txraft.linearizability import Operation, checkHistory

        operations = [
            Operation(
                record.client,
                record.kind,
                record.key,
                record.value,
                record.start / 1000,
                None if record.end is None else record.end / 1000,
                record.result,
                found=record.found,
            )
            for record in self.history
        ]
        result = checkHistory(operations, initial={})
        if not result.ok:
            ops = [r for r in self.history if r.key == result.key]
            shown = "\n".join(f"    {r}" for r in ops[:100])
            more = f"\n    ... and {len(ops) - 100} more" if len(ops) > 100 else ""
            self.fail(
                f"Linearizability: the history of key {result.key!r} is not linearizable: "
                f"{result.explanation}\nIts {len(ops)} operations (times in ms):\n{shown}{more}"
            )

    def fail(self, problem: str) -> None:
        """Stop the run with a L{SimulationError}."""
        raise SimulationError(self, problem)

    def at(self, time: int, function: Callable[..., None], *args: Any) -> None:
        """Call C{function(*args)} at simulated C{time}."""
        self._sequence += 1
        heapq.heappush(self._queue, (time, self._sequence, function, args))

    def after(self, delay: int, function: Callable[..., None], *args: Any) -> None:
        """Call C{function(*args)} C{delay} milliseconds from now."""
        self.at(self.now + delay, function, *args)

    def stamp(self) -> float:
        """A time for the history: the clock, made unique by the event count."""
        return self.now + self.steps * 1e-6

    def record(self, text: str, *args: Any) -> None:
        """Add a line to the trace (formatted only if the run fails)."""
        self.trace.append((self.now, text, args))

    def formatTrace(self) -> str:
        """The trace, one event per line."""
        return "\n".join(
            f"{now:>8} ms  {text.format(*map(_describe, args))}" for now, text, args in self.trace
        )

    def port(self, name: str) -> int:
        """The (fictitious) client port of node C{name}."""
        return 10000 + self.names.index(name)

    def leader(self) -> SimNode | None:
        """The running leader of the highest term, if any."""
        leaders = [
            n for n in self.nodes.values() if n.up and not n.silent and n.core.role == LEADER
        ]
        return max(leaders, key=lambda n: n.core.currentTerm, default=None)

    # -- nodes ------------------------------------------------------------------------

    def _tick(self, node: SimNode) -> None:
        self.after(node.tickMs, self._tick, node)
        if not node.up or node.silent:
            return
        if node.paused():
            node.missedTicks += 1
            return
        if node.slow and self.rng.random() < 0.3:
            self.stats["ticksSkipped"] += 1
            return
        if node.process(node.core.tick()):
            node.expireWaiting()

    def _resume(self, node: SimNode, incarnation: int) -> None:
        """A stalled node catches up by at most one heartbeat of ticks (RaftService._ticks)."""
        if node.incarnation != incarnation or not node.up:
            return
        missed, node.missedTicks = node.missedTicks, 0
        self.record("{} resumes after missing {} ticks", node.name, missed)
        for _ in range(min(missed, node.core.heartbeatTicks)):
            if not node.process(node.core.tick()):
                return
        node.expireWaiting()

    def crash(self, node: SimNode, why: str) -> None:
        """Stop C{node}: it loses its volatile state and whatever it had not synced."""
        store = node.logStore
        changed = store.entries != store.durable
        common = 0
        for kept, written in zip(store.durable, store.entries, strict=False):
            if kept != written:
                break
            common += 1
        lost = store.entries[common:]
        store.crash()
        node.disk.crashAfter = 0
        node.up = False
        self.stats["crashes"] += 1
        if changed:
            self.stats["crashesLosingUnsyncedWrites"] += 1
            self.stats["unsyncedEntriesLost"] += len(lost)
            self.lostWrites.append((node.name, lost))
        self.record("{} CRASHES ({}); unsynced log changes lost: {}", node.name, why, changed)
        # Clients connected to it see their connections close.
        targets = [target for _, target in node.batch]
        targets += [target for _, _, target in node.waiting.values()]
        targets += [(client, requestId) for (_, requestId), client in node.inbound.items()]
        node.batch, node.waiting, node.inbound = [], {}, {}
        for client, requestId in targets:
            self.after(self._delay(), self._clientReceives, client, requestId, None, node.name)
        self.after(self.rng.randint(*self.options.downMs), self._restart, node)

    def _restart(self, node: SimNode) -> None:
        if node.up:
            return
        node.start()
        self.stats["restarts"] += 1
        if node.core.log.snapshotIndex:
            self.stats["restartsFromSnapshot"] += 1
        self.record(
            "{} restarts: term {}, vote {}, snapshot up to {}, log up to {}",
            node.name,
            node.core.currentTerm,
            node.core.votedFor,
            node.core.log.snapshotIndex,
            node.core.log.lastIndex,
        )

    def storageFailed(self, node: SimNode, error: Exception) -> None:
        """
        A write failed: the node falls silent, answers its waiting clients
        that its disk failed, and will try to rejoin (RaftService._storageFailed).
        """
        node.silent = True
        self.stats["diskFailures"] += 1
        self.stats["answeredDiskFailed"] += len(node.batch) + len(node.waiting)
        self.record("{}'s disk fails ({}); it falls silent", node.name, error)
        batch, node.batch = node.batch, []
        node.flushPending = False
        for _, target in batch:
            self.answer(node, target, DISK_FAILED)
        node.failWaiting(DISK_FAILED)
        self.after(self.options.diskRetryMs, self._rejoin, node, node.incarnation)

    def _rejoin(self, node: SimNode, incarnation: int) -> None:
        """Rebuild the core from what the disk holds, keeping the state machine (_rejoin)."""
        if node.incarnation != incarnation or not node.up:
            return
        try:
            hardState, entries = node.logManager.recoverAfterFailure()
        except SimulatedCrashError as e:
            self.crash(node, str(e))
            return
        except StorageError as e:
            self.fail(f"{node.name} cannot rejoin after a disk failure: {e}")
        except OSError:
            self.after(self.options.diskRetryMs, self._rejoin, node, incarnation)
            return
        node.silent = False
        node.newCore(hardState, entries)
        self.stats["rejoins"] += 1
        self.record(
            "{} rejoins: term {}, snapshot up to {}, log up to {}, {} applied",
            node.name,
            node.core.currentTerm,
            node.core.log.snapshotIndex,
            node.core.log.lastIndex,
            node.logManager.lastApplied,
        )

    # -- snapshots, as RaftService._maybeSnapshot and _snapshotWritten --------------------

    def maybeSnapshot(self, node: SimNode) -> None:
        """Take a snapshot once enough entries were applied since the last one."""
        every = self.options.snapshotEntries
        manager = node.logManager
        base = manager.snapshot.index if manager.snapshot else 0
        if not every or node.snapshotting or manager.lastApplied - base < every:
            return
        node.snapshotting = True
        write = manager.captureSnapshot()
        delay = self.rng.randint(0, self.options.snapshotWriteMs)
        self.after(delay, self._snapshotWritten, node, node.incarnation, write)

    def _snapshotWritten(
        self, node: SimNode, incarnation: int, write: Callable[[], tuple[Snapshot, object]]
    ) -> None:
        if node.incarnation != incarnation or not node.up:
            return  # the process died while writing it
        node.snapshotting = False
        snapshot, staged = write()
        core = node.core
        if node.silent or not core.log.snapshotIndex < snapshot.index <= core.commitIndex:
            self.stats["snapshotsOvertaken"] += 1
            return
        try:
            node.logManager.commitSnapshot(snapshot, staged)
        except SimulatedCrashError as e:
            self.crash(node, str(e))
            return
        except OSError as e:
            self.storageFailed(node, e)
            return
        core.compact(snapshot)
        self.stats["snapshotsTaken"] += 1
        self.record("{} saved a snapshot up to {}; log compacted", node.name, snapshot.index)
        self.checker.observeSnapshot(node, snapshot)
        self.checker.checkEntries(node, 1)
        self.checker.checkDurable(node, full=True)

    # -- the network ------------------------------------------------------------------

    def _delay(self, *names: str) -> int:
        delay = self.rng.randint(1, self.maxDelayMs)
        if any(self.nodes[name].slow for name in names):
            delay += self.rng.randint(10, 80)
        return delay

    def send(
        self, node: SimNode, dst: str, message: Message, requesterIncarnation: int | None = None
    ) -> None:
        """Put C{message} from C{node} to C{dst} on the network, maybe losing or copying it."""
        self.stats["messages"] += 1
        if (
            isinstance(message, RequestVoteResponse)
            and message.voteGranted
            and not _isPreVote(message)
        ):
            self.checker.observeVote(node.name, message.term, dst)
        envelope = Envelope(node.name, node.incarnation, dst, message, requesterIncarnation)
        if (node.name, dst) in self.blocked:
            self.stats["messagesCut"] += 1
            return
        if self.rng.random() < self.dropRate:
            self.stats["messagesDropped"] += 1
            self.record("{}->{} lost: {}", node.name, dst, message)
            return
        copies = 1
        if self.rng.random() < self.duplicateRate:
            copies = 2
            self.stats["messagesDuplicated"] += 1
        for _ in range(copies):
            delay = self._delay(node.name, dst)
            if self.rng.random() < self.lateRate:
                # Stuck in some queue: it arrives long after newer messages.
                delay += self.rng.randint(200, 1500)
                self.stats["messagesLate"] += 1
            self.after(delay, self._deliver, envelope)

    def _deliver(self, envelope: Envelope) -> None:
        node = self.nodes[envelope.dst]
        src, message = envelope.src, envelope.message
        if not node.up or node.silent or (envelope.src, envelope.dst) in self.blocked:
            return
        if (
            envelope.requesterIncarnation is not None
            and envelope.requesterIncarnation != node.incarnation
        ):
            return  # a response on a connection that died with its requester
        if node.paused():
            self.at(node.pausedUntil, self._deliver, envelope)
            return
        if self.options.wire:
            sender, rest = splitSender(formatMessage(src, message))
            decoded = parseMessage(rest)
            if sender != src or decoded != message:
                self.fail(f"{_describe(message)} does not survive the wire format")
            message = decoded
        self.record("{}->{} {}", src, node.name, message)
        ready = node.core.step(src, message)
        reply = ready.reply
        if not node.process(ready) or reply is None:
            return
        if not isinstance(message, REQUESTS):
            self.fail(f"{node.name} replied {_describe(reply)} to a response")
        self.send(node, src, reply, requesterIncarnation=envelope.srcIncarnation)

    # -- clients --------------------------------------------------------------------------

    def _nextOperation(self, client: SimClient) -> None:
        if self.clientsStopped:
            return
        rng = self.rng
        key = rng.choice(self.options.keys)
        kind = rng.choices(("get", "set", "delete"), (4, 5, 1))[0]
        value = None
        if kind == "set":
            client.count += 1
            value = f"{client.name}-{client.count}"
        self._begin(client, kind, key, value)

    def _begin(self, client: SimClient, kind: str, key: str, value: str | None) -> None:
        client.op = HistoryRecord(client.identity, kind, key, value, self.stamp())
        client.redirects = 0
        self._sendRequest(client)

    def _sendRequest(self, client: SimClient) -> None:
        op = client.op
        assert op is not None
        if client.target is None:
            client.target = self.rng.choice(self.names)
        client.requestId += 1
        text = " ".join(p for p in (op.kind, op.key, op.value) if p is not None)
        client.waitingOn = client.target
        client.sentAt = self.now
        self.record("{} sends {!r} to {}", client.name, text, client.target)
        node = self.nodes[client.target]
        if not node.up:
            self.answer(node, (client, client.requestId), "UNAVAILABLE connection refused")
        else:
            node.inbound[client.name, client.requestId] = client
            self.after(self._delay(), self._clientArrives, node, client, client.requestId, text)
        self.after(self.options.answerTimeoutMs, self._answerTimeout, client, client.requestId)

    def _clientArrives(self, node: SimNode, client: SimClient, requestId: int, text: str) -> None:
        """A client request reaches C{node}: RaftService.clientRequest."""
        if (client.name, requestId) not in node.inbound:
            return  # the node crashed since: the client saw its connection close
        if node.paused():
            self.at(node.pausedUntil, self._clientArrives, node, client, requestId, text)
            return
        del node.inbound[client.name, requestId]
        target = (client, requestId)
        command = parseCommand(text)
        if node.silent:
            # The last leader it heard of is only a hint, but a harmless one.
            if node.core.leaderId not in (None, node.name):
                self.answer(node, target, node.notLeader())
            else:
                self.answer(node, target, DISK_FAILED)
            return
        if node.core.role != LEADER:
            self.answer(node, target, node.notLeader())
            return
        node.batch.append((command.text, target))
        if not node.flushPending:
            node.flushPending = True
            self.after(0, self._flush, node, node.incarnation)

    def _flush(self, node: SimNode, incarnation: int) -> None:
        """Group commit: RaftService._flush."""
        if node.incarnation != incarnation or not node.up or not node.flushPending:
            return
        if node.paused():
            self.at(node.pausedUntil, self._flush, node, incarnation)
            return
        node.flushPending = False
        batch, node.batch = node.batch, []
        if not batch:
            return
        if node.core.role != LEADER:
            answer = node.notLeader()
            for _, target in batch:
                self.answer(node, target, answer)
            return
        ready = node.core.propose([text for text, _ in batch])
        deadline = self.now + self.options.commitTimeoutMs
        for entry, (_, target) in zip(ready.entries, batch, strict=True):
            node.waiting[entry.index] = (entry.term, deadline, target)
        self.record("{} proposes {}", node.name, ", ".join(map(_describe, ready.entries)))
        node.process(ready)

    def answer(self, node: SimNode, target: tuple[SimClient, int], text: str | None) -> None:
        """Send the answer line C{text} back to a client."""
        client, requestId = target
        self.after(self._delay(), self._clientReceives, client, requestId, text, node.name)

    def _answerTimeout(self, client: SimClient, requestId: int) -> None:
        if client.requestId != requestId or client.op is None:
            return
        node = self.nodes[client.waitingOn or ""]
        if node.up:
            self.fail(
                f"{client.name}'s request to {node.name}, sent at {client.sentAt} ms, "
                f"got no answer in {self.options.answerTimeoutMs} ms though the node stayed up"
            )

    def _clientReceives(
        self, client: SimClient, requestId: int, text: str | None, nodeName: str
    ) -> None:
        if client.requestId != requestId or client.op is None:
            return
        op = client.op
        self.record("{} gets {!r} from {}", client.name, text, nodeName)
        if text is None:
            self._unknown(client, "connection lost")
        elif text.startswith("REDIRECT "):
            client.target = text.split()[1]
            client.redirects += 1
            self.stats["redirects"] += 1
            if client.redirects <= 3:
                self._sendRequest(client)
            else:
                client.redirects = 0
                self.after(self.rng.randint(*self.options.backoffMs), self._sendRequest, client)
        elif text in _NOT_EXECUTED:
            self.stats["retriesNotExecuted"] += 1
            client.target = None
            self.after(self.rng.randint(*self.options.backoffMs), self._sendRequest, client)
        elif text.startswith("UNAVAILABLE"):
            self._unknown(client, text)
        else:
            self._complete(client, op, text)

    def _complete(self, client: SimClient, op: HistoryRecord, text: str) -> None:
        expected = {"get": ("OK ", "NOT_FOUND"), "set": ("OK",), "delete": ("OK", "NOT_FOUND")}
        valid = text in expected[op.kind] or (op.kind == "get" and text.startswith("OK "))
        if not valid:
            self.fail(f"{client.name} got {text!r} for {op.kind} {op.key}")
        op.end = self.stamp()
        if op.kind != "set":
            op.found = text != "NOT_FOUND"
        if op.kind == "get" and op.found:
            op.result = text[len("OK ") :]
        self.history.append(op)
        client.op = None
        self.stats["operationsOK"] += 1
        if client is self.livenessClient:
            self.livenessAt = self.now
            self.clientsStopped = True
            self.record("liveness write committed {} ms after healing", self.now - self.healedAt)
            return
        self.after(self.rng.randint(*self.options.thinkMs), self._nextOperation, client)

    def _unknown(self, client: SimClient, why: str) -> None:
        """The outcome is unknown: record it so, and retry later as a new operation."""
        op = client.op
        assert op is not None
        self.history.append(op)
        self.stats["operationsUnknown"] += 1
        client.generation += 1
        client.op = None
        client.target = None
        delay = self.rng.randint(*self.options.backoffMs)
        self.after(delay, self._retry, client, op.kind, op.key, op.value)

    def _retry(self, client: SimClient, kind: str, key: str, value: str | None) -> None:
        if self.clientsStopped and client is not self.livenessClient:
            return
        self.stats["retriesUnknown"] += 1
        self._begin(client, kind, key, value)

    # -- the fault schedule ---------------------------------------------------------------

    def _fault(self) -> None:
        if self.now >= self.options.faultMs:
            return
        weights = self.options.faultWeights
        kinds = [k for k in FAULT_WEIGHTS if weights.get(k)]
        kind = self.rng.choices(kinds, [weights[k] for k in kinds])[0]
        getattr(self, f"_fault_{kind}")()
        self.after(self.rng.randint(*self.options.faultEveryMs), self._fault)

    def _upNodes(self) -> list[SimNode]:
        return [node for node in self.nodes.values() if node.up]

    def _fault_partition(self) -> None:
        names = list(self.names)
        self.rng.shuffle(names)
        cut = self.rng.randint(1, len(names) - 1)
        side, other = names[:cut], names[cut:]
        for a in side:
            for b in other:
                self.blocked.update({(a, b), (b, a)})
        self.stats["partitions"] += 1
        self.record("partition {} | {}", sorted(side), sorted(other))

    def _fault_oneWay(self) -> None:
        for _ in range(self.rng.randint(1, len(self.names) - 1)):
            a, b = self.rng.sample(self.names, 2)
            self.blocked.add((a, b))
            self.record("one-way cut: {} no longer hears {}", b, a)
        self.stats["oneWayCuts"] += 1

    def _fault_isolateLeader(self) -> None:
        leader = self.leader()
        if leader is None:
            return self._fault_partition()
        mode = self.rng.choice(("both", "deaf", "mute"))
        for other in self.names:
            if other != leader.name:
                if mode in ("both", "mute"):
                    self.blocked.add((leader.name, other))
                if mode in ("both", "deaf"):
                    self.blocked.add((other, leader.name))
        self.stats["leaderIsolations"] += 1
        self.record("isolate leader {} ({})", leader.name, mode)

    def _fault_heal(self) -> None:
        self.blocked.clear()
        self.record("links healed")

    def _victim(self) -> SimNode | None:
        """A running node to hurt, the leader more often than the others."""
        up = self._upNodes()
        if not up:
            return None
        leader = self.leader()
        if leader is not None and self.rng.random() < 0.4:
            return leader
        return self.rng.choice(up)

    def _fault_crash(self) -> None:
        node = self._victim()
        if node is not None:
            self.crash(node, "fault schedule")

    def _fault_crashMidWrite(self) -> None:
        node = self._victim()
        if node is None:
            return
        node.disk.crashAfter = self.rng.randint(1, 3)
        self.stats["crashesArmed"] += 1
        self.record(
            "{} will lose power before durable write #{} from now",
            node.name,
            node.disk.crashAfter,
        )

    def _fault_diskError(self) -> None:
        node = self._victim()
        if node is None:
            return
        node.disk.failingUntil = self.now + self.rng.randint(*self.options.diskErrorMs)
        self.stats["diskErrors"] += 1
        self.record("{}'s disk fails its writes until {} ms", node.name, node.disk.failingUntil)

    def _fault_restart(self) -> None:
        down = [node for node in self.nodes.values() if not node.up]
        if down:
            self._restart(self.rng.choice(down))

    def _fault_network(self) -> None:
        self.dropRate = self.rng.choice((0.0, 0.02, 0.1, 0.3))
        self.duplicateRate = self.rng.choice((0.0, 0.03, 0.1))
        self.lateRate = self.rng.choice((0.0, 0.0, 0.01, 0.05))
        self.maxDelayMs = self.rng.choice((self.options.baseDelayMs, 30, 120))
        self.stats["networkChanges"] += 1
        self.record(
            "network: drop {}, duplicate {}, late {}, delay up to {} ms",
            self.dropRate,
            self.duplicateRate,
            self.lateRate,
            self.maxDelayMs,
        )

    def _fault_slow(self) -> None:
        node = self.rng.choice(list(self.nodes.values()))
        node.slow = not node.slow
        self.stats["slowNodes"] += node.slow
        self.record("{} is {}", node.name, "slow" if node.slow else "no longer slow")

    def _fault_pause(self) -> None:
        node = self._victim()
        if node is None or node.paused():
            return
        node.pausedUntil = self.now + self.rng.randint(*self.options.pauseMs)
        self.at(node.pausedUntil, self._resume, node, node.incarnation)
        self.stats["pauses"] += 1
        self.record("{} pauses until {} ms", node.name, node.pausedUntil)

    # -- healing, liveness, convergence -------------------------------------------------

    def _heal(self) -> None:
        self.healedAt = self.now
        self.blocked.clear()
        self.dropRate = self.duplicateRate = self.lateRate = 0.0
        self.maxDelayMs = self.options.baseDelayMs
        for node in self.nodes.values():
            node.slow = False
            node.disk.crashAfter = node.disk.failingUntil = 0
            if not node.up:
                self._restart(node)
        self.record("faults stop: links healed, network calm, disks fine, every node up")
        self.livenessClient = SimClient("live")
        self._begin(self.livenessClient, "set", "live", f"seed-{self.seed}")
        self.after(self.options.livenessMs, self._livenessDeadline)
        self.after(self.options.tickMs, self._checkConvergence)

    def _livenessDeadline(self) -> None:
        if self.livenessAt is None:
            leader = self.leader()
            self.fail(
                f"Liveness: no client write committed within {self.options.livenessMs} ms "
                f"after the faults stopped (leader now: {leader.name if leader else None}): "
                f"{self.describeNodes()}"
            )

    def _checkConvergence(self) -> None:
        if self.livenessAt is None:
            self.after(self.options.tickMs, self._checkConvergence)
            return
        if self.converged():
            self.convergedAt = self.now
            self.record("converged")
            self.finished = True
            return
        if self.now - self.livenessAt > self.options.convergeMs:
            self.fail(
                f"Liveness: nodes did not converge within {self.options.convergeMs} ms "
                f"of the liveness write: {self.describeNodes()}"
            )
        self.after(self.options.tickMs, self._checkConvergence)

    def converged(self) -> bool:
        """Whether every node is up and holds the leader's log, commit index and state."""
        leader = self.leader()
        if leader is None or any(c.op is not None for c in self.clients):
            return False
        core = leader.core
        return all(
            node.up
            and not node.silent
            and not node.paused()
            and node.core.currentTerm == core.currentTerm
            and node.core.log.lastIndex == core.log.lastIndex
            and node.core.commitIndex == core.log.lastIndex
            and node.stateMachine.data == leader.stateMachine.data
            for node in self.nodes.values()
        )

    def describeNodes(self) -> str:
        """One line per node: role, term, log and commit index."""
        return "; ".join(
            f"{n.name} {'down' if not n.up else 'silent' if n.silent else n.core.role} term "
            f"{n.core.currentTerm} snapshot {n.core.log.snapshotIndex} last "
            f"{n.core.log.lastIndex} commit {n.core.commitIndex}"
            for n in self.nodes.values()
        )

    def digest(self) -> tuple[object, ...]:
        """What two runs of one seed must agree on."""
        return (
            self.now,
            self.steps,
            tuple(self.checker.committed),
            tuple(attrs.astuple(r) for r in self.history),
            tuple(sorted(self.stats.items())),
        )
