"""
One simulated node: durable stores on a L{Disk} that survive crashes, and
for each incarnation of its process the production L{RaftNode} driver on a
L{NodeClock}, with a fresh L{LogManager} and L{KeyValueStore}.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.simulation.clock import NodeClock
from tests.simulation.disk import Disk, SimLogStore, SimSnapshotStore, SimStateStore
from txraft.config import ClusterConfig
from txraft.core import MAX_APPEND_BYTES, RaftCore, Ready
from txraft.interfaces import INodeObserver
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.membership import Membership
from txraft.messages import Message, Snapshot
from txraft.node import MAX_BACKLOG, NullObserver, RaftNode
from txraft.snapshotting import inBackground

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.simulation.run import Simulation


class SimNode:
    """
    One node of the simulated cluster.

    @ivar incarnation: how many times the process started.
    @ivar up: the process runs (it has not crashed, or has restarted).
    @ivar driver: the running process's L{RaftNode}.
    @ivar core: the driver's current core (as the observer last saw it).
    @ivar inbound: client requests sent to this process and not yet
        answered, by (client name, request id): a crash closes them all.
    @ivar commitSeen: the highest commitIndex of the current core.
    @ivar appliedSeen: the highest lastApplied of the current process.
    @ivar config: the cluster config its process is given: the cluster's,
        and for a node that joins later its own line too (where it listens).
    @ivar joined: it was started to join a running cluster.
    @ivar join: its process runs with C{RaftNode(join=True)}: no membership
        until its data directory holds one.  A node that joined always
        starts so the first time; restarted with data, with or without.
    @ivar bootstrap: the membership its core starts from while its log and
        snapshot hold none: the config's, or none with C{join}.
    @ivar retired: it was removed from the cluster and stopped for good.
    @ivar pausedUntil: until when its process is stalled; C{missedTicks}
        counts the ticks it missed meanwhile, which it catches up on.
    @ivar clockSteppedUntil: until when the ticks of its process are lost
        because its wall clock stepped back (L{NodeClock.stepBack}): its
        ticker's next call runs that late, and counts one tick, not the
        ones between; it reads its peers and clients meanwhile.
    """

    def __init__(
        self,
        simulation: Simulation,
        name: str,
        config: ClusterConfig | None = None,
        join: bool = False,
    ) -> None:
        self.sim = simulation
        self.name = name
        self.config = config if config is not None else simulation.config
        self.joined = join
        self.setJoin(join)
        self.retired = False
        self.disk = Disk(lambda: simulation.now)
        self.logStore = SimLogStore(self.disk)
        self.stateStore = SimStateStore(self.disk)
        self.snapshotStore = SimSnapshotStore(self.disk)
        self.incarnation = 0
        self.up = False
        self.driver: RaftNode = None  # type: ignore[assignment]
        self.core: RaftCore = None  # type: ignore[assignment]
        self.logManager: LogManager = None  # type: ignore[assignment]
        self.stateMachine: KeyValueStore = None  # type: ignore[assignment]
        self.clock: NodeClock = None  # type: ignore[assignment]
        self.inbound: dict[tuple[str, int], Any] = {}
        #: Admission control: the node said it holds too many requests, so
        #: its clients' requests wait (in their sockets, as the listening
        #: protocol stops reading) until it has drained; those that came
        #: meanwhile, in order.
        self.readingHeld = False
        self.heldRequests: deque[tuple[Any, int, str, int | None]] = deque()
        self.commitSeen = 0
        self.appliedSeen = 0
        self.pausedUntil = 0
        self.missedTicks = 0
        self.clockSteppedUntil = 0
        self.slow = False
        #: This process's tick period: clocks run at slightly different rates.
        self.tickMs = simulation.options.tickMs
        self.role = ""
        self.term = 0
        #: Set while a peer's response is stepped: the core must not reply to it.
        self.steppingResponse = False

    def setJoin(self, join: bool) -> None:
        """Start the next process with C{RaftNode(join=join)}."""
        self.join = join
        self.bootstrap = Membership() if join else Membership.fromConfig(self.config)

    def hasData(self) -> bool:
        """Whether its disk holds a log entry or a snapshot."""
        return bool(self.logStore.durable) or self.snapshotStore.snapshot is not None

    @property
    def silent(self) -> bool:
        """Whether the node takes no part in Raft (its disk failed)."""
        return self.driver is not None and self.driver.silent

    def paused(self) -> bool:
        """Whether the node's process is stalled right now."""
        return self.pausedUntil > self.sim.now

    def clockStepped(self) -> bool:
        """Whether the node's ticks are lost right now, after its clock stepped back."""
        return self.clockSteppedUntil > self.sim.now

    def stepClockBack(self, ms: int) -> None:
        """
        Its process's wall clock steps back C{ms} milliseconds (an NTP
        step): its ticks are lost for that long, not caught up on, and the
        calls its clock had scheduled run that much late
        (L{NodeClock.stepBack}); it reads its peers and its clients as ever.
        """
        self.clock.stepBack(ms)
        self.clockSteppedUntil = self.sim.now + ms

    def start(self) -> None:
        """Start a new incarnation of the process from the stores."""
        sim = self.sim
        options = sim.options
        self.incarnation += 1
        self.up = True
        self.inbound = {}
        self.readingHeld = False
        self.heldRequests = deque()
        self.pausedUntil = self.missedTicks = self.clockSteppedUntil = 0
        self.driver = None  # type: ignore[assignment]
        # A piece of a snapshot per step: the small maps of a run load over
        # several turns, as a large one does.
        self.stateMachine = KeyValueStore(restoreStepBytes=1)
        self.logManager = LogManager(
            self.logStore, self.stateStore, self.stateMachine, self.snapshotStore
        )
        self.appliedSeen = 0
        self.clock = NodeClock(sim.events, self)
        self.tickMs = max(1, options.tickMs + sim.rng.choice((-2, 0, 0, 2)))
        self.disk.quiet = True
        try:
            self.driver = RaftNode(
                self.name,
                self.config,
                self.logManager,
                self.clock,
                self._send,
                electionTicks=options.electionTicks,
                heartbeatTicks=options.heartbeatTicks,
                rng=random.Random(sim.rng.getrandbits(64)),
                maxAppendBytes=options.maxAppendBytes or MAX_APPEND_BYTES,
                snapshotEntries=options.snapshotEntries or None,
                snapshotGrowth=options.snapshotGrowth or 0.0,
                snapshotter=inBackground(self._background),
                saveInBackground=self._background,
                syncInBackground=self._syncLater,
                commitTimeout=options.commitTimeoutMs / 1000,
                maxBacklog=options.maxBacklog or MAX_BACKLOG,
                trailingEntries=options.trailingEntries or 0,
                diskRetrySeconds=options.diskRetryMs / 1000,
                onFatal=lambda reason: sim.fail(f"{self.name} stops: {reason}"),
                observer=NodeObserver(self),
                join=self.join,
            )
        finally:
            self.disk.quiet = False

    def _send(self, peer: str, message: Message) -> None:
        self.sim.network.send(self, peer, message)

    def _syncLater(self, work: Callable[[], Any]) -> defer.Deferred[Any]:
        """
        Run a leader's fsync, off its event loop, after a while (at most
        a tick, often none), unless the process dies first: meanwhile it
        goes on, appending and sending more.
        """
        return self._after(self.sim.rng.choice((0, 0, self.sim.rng.randint(1, self.tickMs))), work)

    def _background(self, work: Callable[[], Any]) -> defer.Deferred[Any]:
        """
        Run a snapshot's slow part (taking one, or saving the leader's)
        after a while, unless the process dies first.
        """
        return self._after(self.sim.rng.randint(0, self.sim.options.snapshotWriteMs), work)

    def _after(self, delayMs: int, work: Callable[[], Any]) -> defer.Deferred[Any]:
        """
        Run C{work} in C{delayMs}, unless the process dies first; the
        Deferred it returns fires with its result, through whatever the
        node added to it.
        """
        d: defer.Deferred[None] = defer.Deferred()

        def fire() -> None:
            d.callback(None)
            # A check that failed in the node's callbacks has stopped the
            # run already (sim.failure): the Deferred must not log it again,
            # into another test, once it is collected.
            d.addErrback(self._dropStoppedRun)

        self.clock.callLater(delayMs / 1000, fire)
        return d.addCallback(lambda _: work())

    def _dropStoppedRun(self, failure: Failure) -> Failure | None:
        """Swallow the failure that stopped the run; pass any other on."""
        return None if failure.value is self.sim.failure else failure


@implementer(INodeObserver)
class NodeObserver(NullObserver):
    """
    What the simulation learns from a node's driver: each event is checked
    against the global truth at once, and counted.
    """

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.sim = node.sim

    def coreStarted(self, core: object) -> None:
        """A core starts (a process starts, or rejoins): check its whole state."""
        node = self.node
        assert isinstance(core, RaftCore)
        node.core = core
        node.commitSeen = core.commitIndex
        node.appliedSeen = max(node.appliedSeen, node.logManager.lastApplied)
        node.role, node.term = core.role, core.currentTerm
        if node.driver is not None:
            self.sim.stats["rejoins"] += 1
            self.sim.record(
                "{} rejoins: term {}, snapshot up to {}, log up to {}, {} applied",
                node.name,
                core.currentTerm,
                core.log.compactedIndex,
                core.log.lastIndex,
                node.logManager.lastApplied,
            )
        self.sim.checker.checkNode(node)

    def persisted(self, ready: object) -> None:
        """A Ready is durable: check roles, commits, the log and the disk."""
        assert isinstance(ready, Ready)
        node = self.node
        if ready.reply is not None and node.steppingResponse:
            self.sim.fail(f"{node.name} replied {ready.reply} to a response")
        self.sim.checker.observeReady(node, ready)
        if ready.truncateFrom is not None:
            self.sim.stats["truncations"] += 1

    def snapshotInstalled(self, snapshot: object) -> None:
        """The leader's snapshot replaced the state machine: it must be the replay."""
        assert isinstance(snapshot, Snapshot)
        self.sim.stats["snapshotsInstalled"] += 1
        if self.node.driver.installingSnapshot:
            # Loaded over several turns (a small one loads in the turn it came).
            self.sim.stats["snapshotsLoadedOverTurns"] += 1
        self.sim.record("{} installs the snapshot up to {}", self.node.name, snapshot.index)
        self.sim.checker.observeSnapshot(self.node, snapshot)

    def applied(self, results: object) -> None:
        """Entries ran: same entries, answers and state as the replay."""
        node = self.node
        self.sim.checker.observeApplied(node, results)  # type: ignore[arg-type]
        core = node.core
        if core.role != node.role or core.currentTerm != node.term:
            node.role, node.term = core.role, core.currentTerm
            self.sim.record("{} is {} in term {}", node.name, node.role, node.term)

    def snapshotSaved(self, snapshot: object) -> None:
        """A snapshot of this node was saved and its log compacted: check both."""
        assert isinstance(snapshot, Snapshot)
        node = self.node
        self.sim.stats["snapshotsTaken"] += 1
        if node.core.log.compactedIndex < snapshot.index - node.core.trailingEntries:
            # A leader kept the entries after a snapshot it is still sending.
            self.sim.stats["compactionsHeldForAFollower"] += 1
        self.sim.record("{} saved a snapshot up to {}; log compacted", node.name, snapshot.index)
        self.sim.checker.observeSnapshot(node, snapshot)
        self.sim.checker.checkEntries(node, 1)
        self.sim.checker.checkDurable(node, full=True)
        self.sim.checker.checkMembership(node)

    def diskFailed(self, error: str) -> None:
        """A write failed (or the power did: then the process is about to end)."""
        if self.node.disk.powerLost:
            return
        self.sim.stats["diskFailures"] += 1
        self.sim.record("{}'s disk fails ({}); it falls silent", self.node.name, error)
