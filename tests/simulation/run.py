"""
One seeded run of a simulated cluster: the options that shape it, the
loop that runs it, and the end-of-run checks (liveness, convergence,
linearizability).
"""

from __future__ import annotations

import random
import traceback
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import attrs

import txraft.core
from tests.simulation.clients import HELD, Workload
from tests.simulation.clock import EventQueue
from tests.simulation.faults import FAULT_WEIGHTS, FaultSchedule
from tests.simulation.invariants import InvariantChecker, describe, describeMembership
from tests.simulation.network import Network
from tests.simulation.nodes import SimNode
from tests.simulation.operator import Operator
from txraft.config import ClusterConfig, NodeAddress
from txraft.core import LEADER
from txraft.membership import Membership
from txraft.messages import Entry

#: How to rerun one seed on its own.
REPLAY = "TXRAFT_SEED={seed} pytest tests/test_simulation.py"


class SimulationError(AssertionError):
    """A safety or liveness property failed; the text says how to replay it."""

    def __init__(self, simulation: Simulation, problem: str) -> None:
        self.seed = simulation.seed
        self.problem = problem
        self.replay = REPLAY.format(seed=simulation.seed)
        super().__init__(
            f"txraft simulation failed: seed {simulation.seed}, "
            f"{simulation.options.nodes} nodes, "
            f"{'keyed' if simulation.options.authenticate else 'unkeyed'}"
            f"{', with membership changes' if simulation.options.membership else ''}, "
            f"at {simulation.now} ms (event {simulation.steps})\n"
            f"{problem}\n"
            f"Replay this seed alone with:\n    {self.replay}\n"
            f"The last {len(simulation.trace)} events:\n{simulation.formatTrace()}"
        )


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
    #: ... and once the commands since the last one add up to this share of
    #: its size (C{--snapshot-growth}).  Drawn from a generator of its own,
    #: as C{maxBacklog} is.
    snapshotGrowth: float | None = None
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
    #: A node holding this many client requests stops reading more until it
    #: holds half as many (C{--max-backlog}; 0: the node's default).  Drawn
    #: small, from a generator of its own, so that seeds exercise admission
    #: control and keep the rest of their schedule.
    maxBacklog: int | None = None
    #: A compaction keeps this many of the entries its snapshot covers
    #: (C{--trailing-entries}; 0: none, as in the paper).  Drawn from a
    #: generator of its own, as C{maxBacklog} is.
    trailingEntries: int | None = None
    #: A node whose disk failed tries to rejoin this often (C{DISK_RETRY_SECONDS}).
    diskRetryMs: int = 300
    #: A node that stays up must answer every request within this time
    #: (L{None}: the commit timeout plus two of the longest pauses, the
    #: longest clock step and a second).
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
    #: How far a node's wall clock steps back (an NTP step): its ticks are
    #: lost for that long, and its timers already set run that much late.
    #: Often longer than an election timeout (60 to 300 ms).
    clockStepMs: tuple[int, int] = (100, 1000)
    #: The share of clock steps that come with the machine off the network
    #: for as long (L{FaultSchedule._fault_clockStep}).
    clockStepOffline: float = 0.75
    diskErrorMs: tuple[int, int] = (50, 800)
    #: Normal one-way message delay is uniform in [1, baseDelayMs].
    baseDelayMs: int | None = None
    #: Send every peer message through the wire format (formatMessage/parseMessage).
    wire: bool = True
    #: A keyed cluster: peers talk over connections that run the cluster key
    #: handshake and seal every line (L{tests.simulation.connections}, which
    #: always uses the wire format); an attacker injects old sealed lines and
    #: an impostor with another key tries to join.  Off: each message travels
    #: on its own, free to be lost, duplicated, reordered and replayed.
    authenticate: bool = True
    traceLength: int = 200
    #: Every this many events, check every node's whole state (besides per-event checks).
    fullCheckEvery: int = 200
    #: An operator changes the membership during the faults: new nodes join
    #: and are added (as voters or learners), learners are promoted, members
    #: (the leader too) are removed, leadership is handed over
    #: (L{tests.simulation.operator}).
    membership: bool = False
    #: Time between two of the operator's commands.
    operatorEveryMs: tuple[int, int] = (100, 500)
    #: At most this many nodes join a run, and the cluster has at most this
    #: many members and at least this many voters (the operator's bounds).
    maxJoiners: int = 3
    maxMembers: int = 6
    minVoters: int = 1


class Simulation:
    """
    One seeded run of a cluster; see L{tests.simulation}.  L{run} does it
    all; L{start}, L{runUntil} and L{finish} let a test stop halfway.

    @ivar stats: counts of what happened (faults, messages, operations).
    @ivar lostWrites: for each crash that lost unsynced log changes, the
        node and the entries lost.
    @ivar config: the cluster config the first nodes start with.
    @ivar names: the nodes that run or will run again: the first ones and
        those that joined, but not those stopped for good.
    @ivar nodes: every node that ever ran, by name.
    @ivar addresses: where every node ever named listens (or will).
    """

    def __init__(self, seed: int, options: SimulationOptions | None = None, **kw: Any) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.options = self._drawProfile(
            options if options is not None else SimulationOptions(**kw)
        )
        self.names = tuple(f"n{i}" for i in range(1, self.options.nodes + 1))
        self.config = ClusterConfig(
            tuple(NodeAddress(name, "127.0.0.1", 10000 + i) for i, name in enumerate(self.names))
        )
        self.addresses = {address.name: address for address in self.config.nodes}
        self.events = EventQueue()
        self.trace: deque[tuple[int, str, tuple[Any, ...]]] = deque(
            maxlen=self.options.traceLength
        )
        self.stats: Counter[str] = Counter()
        self.checker = InvariantChecker(self.fail, self.stats)
        self.checker.bootstrap = Membership.fromConfig(self.config)
        self.network = Network(self)
        self.nodes = {name: SimNode(self, name) for name in self.names}
        self.checker.nodes = list(self.nodes.values())
        self.workload = Workload(self)
        self.faults = FaultSchedule(self)
        self.operator = Operator(self)
        self.lostWrites: list[tuple[str, list[Entry]]] = []
        self.healedAt: int | None = None
        self.convergedAt: int | None = None
        self.finished = False
        #: The first failure, kept in case a Deferred swallowed it.
        self.failure: SimulationError | None = None

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
            maxBacklog=options.maxBacklog
            if options.maxBacklog is not None
            else random.Random(f"backlog {self.seed}").choice((0, 2, 3)),
            snapshotGrowth=options.snapshotGrowth
            if options.snapshotGrowth is not None
            else random.Random(f"growth {self.seed}").choice((0.0, 0.0, 0.5, 2.0)),
            trailingEntries=options.trailingEntries
            if options.trailingEntries is not None
            else random.Random(f"trailing {self.seed}").choice((0, 0, 3, 12)),
            answerTimeoutMs=options.answerTimeoutMs
            or options.commitTimeoutMs + 2 * options.pauseMs[1] + options.clockStepMs[1] + 1000,
        )

    @property
    def now(self) -> int:
        """The simulated time, in milliseconds."""
        return self.events.now

    @property
    def steps(self) -> int:
        """How many events have run."""
        return self.events.steps

    @property
    def history(self) -> list[Any]:
        """The clients' operations, for the linearizability check."""
        return self.workload.history

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
            self.events.at(self.rng.randrange(options.tickMs), self._tick, node)
        self.workload.start()
        self.faults.start()
        if options.membership:
            self.operator.start()
        self.events.at(options.faultMs, self.heal)

    def runUntil(self, done: Callable[[], bool], limitMs: int | None = None) -> None:
        """Handle events until C{done()} (or C{limitMs} of simulated time pass)."""
        events = self.events
        deadline = None if limitMs is None else events.now + limitMs
        every = self.options.fullCheckEvery
        chunkBytes = txraft.core.SNAPSHOT_CHUNK_BYTES
        if self.options.snapshotChunkBytes:
            # Small chunks, so that snapshots travel in several messages.
            txraft.core.SNAPSHOT_CHUNK_BYTES = self.options.snapshotChunkBytes
        try:
            while not done():
                if deadline is not None and events.nextTime() > deadline:
                    events.now = deadline
                    return
                events.runNext()
                self.endDyingProcesses()
                if events.steps % every == 0:
                    self.checker.checkAll()
                if self.failure is not None:
                    # Raised where a Deferred caught it (a snapshot's callbacks).
                    raise self.failure
        except SimulationError:
            raise
        except Exception as e:
            self.fail(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        finally:
            txraft.core.SNAPSHOT_CHUNK_BYTES = chunkBytes

    def endDyingProcesses(self) -> None:
        """A node that lost power during the last event crashes now, before anything else."""
        for node in self.nodes.values():
            if node.up and node.disk.powerLost:
                self.crash(node, "power lost before a durable write")

    def finish(self) -> None:
        """
        Final checks: no node stopped reading its clients for good, every
        node's state, then the linearizability of the history.
        """
        self.workload.finish()
        for node in self.nodes.values():
            if node.up and node.readingHeld:
                self.fail(f"{node.name} holds {node.driver.backlog()} requests{HELD}")
        try:
            self.checker.checkAll()
            self.workload.checkLinearizable()
        except SimulationError:
            raise
        except Exception as e:
            self.fail(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")

    def fail(self, problem: str) -> None:
        """Stop the run with a L{SimulationError} (the first one, if several)."""
        if self.failure is None:
            self.failure = SimulationError(self, problem)
        raise self.failure

    def stamp(self) -> float:
        """A time for the history: the clock, made unique by the event count."""
        return self.now + self.steps * 1e-6

    def record(self, text: str, *args: Any) -> None:
        """Add a line to the trace (formatted only if the run fails)."""
        self.trace.append((self.now, text, args))

    def formatTrace(self) -> str:
        """The trace, one event per line."""
        return "\n".join(
            f"{now:>8} ms  {text.format(*map(describe, args))}" for now, text, args in self.trace
        )

    def leader(self) -> SimNode | None:
        """The running leader of the highest term, if any."""
        leaders = [
            n for n in self.nodes.values() if n.up and not n.silent and n.core.role == LEADER
        ]
        return max(leaders, key=lambda n: n.core.currentTerm, default=None)

    # -- node processes -----------------------------------------------------------------

    def node(self, name: str) -> SimNode | None:
        """The node called C{name}, if it was ever started."""
        return self.nodes.get(name)

    def newAddress(self) -> NodeAddress:
        """Name a node that will join, and say where it will listen."""
        number = len(self.addresses) + 1
        address = NodeAddress(f"n{number}", "127.0.0.1", 10000 + number - 1)
        self.addresses[address.name] = address
        return address

    def launch(self, address: NodeAddress) -> SimNode:
        """
        Start a node that joins the running cluster: an empty disk, a config
        of the cluster's nodes and its own line, and no membership until a
        leader brings it one (C{RaftNode(join=True)}).
        """
        config = ClusterConfig((*self.config.nodes, address))
        node = SimNode(self, address.name, config=config, join=True)
        self.nodes[address.name] = node
        self.names = (*self.names, address.name)
        self.checker.nodes.append(node)
        node.start()
        self.stats["nodesJoined"] += 1
        self.record("{} starts, to join the cluster", address.name)
        self.events.after(self.rng.randrange(self.options.tickMs), self._tick, node)
        return node

    def retire(self, node: SimNode) -> None:
        """Stop a node removed from the cluster for good (it is never restarted)."""
        if node.retired:
            return
        if node.up:
            self.crash(node, "removed from the cluster: stopped for good")
        node.retired = True
        self.names = tuple(name for name in self.names if name != node.name)
        self.stats["removedNodesStopped"] += 1

    def _tick(self, node: SimNode) -> None:
        self.events.after(node.tickMs, self._tick, node)
        if not node.up or node.silent:
            return
        if node.clockStepped():
            # Its ticker waits for its clock to come back to where it was:
            # these ticks are lost, not caught up on.
            self.stats["ticksLostToClockSteps"] += 1
            return
        if node.paused():
            node.missedTicks += 1
            return
        if node.slow and self.rng.random() < 0.3:
            self.stats["ticksSkipped"] += 1
            return
        node.driver.ticks(1)

    def resume(self, node: SimNode, incarnation: int) -> None:
        """A stalled node catches up on the ticks it missed (as the driver allows)."""
        if node.incarnation != incarnation or not node.up:
            return
        missed, node.missedTicks = node.missedTicks, 0
        self.record("{} resumes after missing {} ticks", node.name, missed)
        node.driver.ticks(missed)

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
        node.disk.powerBack()
        node.up = False
        self.stats["crashes"] += 1
        if changed:
            self.stats["crashesLosingUnsyncedWrites"] += 1
            self.stats["unsyncedEntriesLost"] += len(lost)
            self.lostWrites.append((node.name, lost))
        self.record("{} CRASHES ({}); unsynced log changes lost: {}", node.name, why, changed)
        self.network.processEnded(node)
        self.workload.connectionsLost(node)
        self.events.after(self.rng.randint(*self.options.downMs), self.restart, node)

    def restart(self, node: SimNode) -> None:
        """Start a crashed node's process again from its disk (unless it was retired)."""
        if node.up or node.retired:
            return
        if node.joined and node.hasData():
            # Its data directory holds its membership: --join or not.
            node.setJoin(self.rng.random() < 0.5)
        node.start()
        self.stats["restarts"] += 1
        if node.core.log.compactedIndex:
            self.stats["restartsFromSnapshot"] += 1
        self.record(
            "{} restarts: term {}, vote {}, snapshot up to {}, log up to {}",
            node.name,
            node.core.currentTerm,
            node.core.votedFor,
            node.core.log.compactedIndex,
            node.core.log.lastIndex,
        )

    # -- healing, liveness, convergence -------------------------------------------------

    def heal(self) -> None:
        """The faults stop; a write must now commit, and the nodes converge."""
        self.healedAt = self.now
        self.network.heal()
        self.network.calm()
        for node in list(self.nodes.values()):
            node.slow = False
            node.disk.crashAfter = node.disk.failingUntil = 0
            if not node.up:
                self.restart(node)
        self.record(
            "faults stop: links healed, machines on the network, network calm, disks fine, "
            "every node up"
        )
        self.workload.startLivenessWrite()
        self.events.after(self.options.livenessMs, self._livenessDeadline)
        self.events.after(self.options.tickMs, self._checkConvergence)

    @property
    def livenessAt(self) -> int | None:
        """When the write after healing committed."""
        return self.workload.livenessAt

    def _livenessDeadline(self) -> None:
        if self.livenessAt is None:
            leader = self.leader()
            self.fail(
                f"Liveness: no client write committed within {self.options.livenessMs} ms "
                f"after the faults stopped (leader now: {leader.name if leader else None}): "
                f"{self.describeNodes()}{self._describeHeld()}"
            )

    def _checkConvergence(self) -> None:
        if self.livenessAt is None:
            self.events.after(self.options.tickMs, self._checkConvergence)
            return
        if self.converged():
            self.convergedAt = self.now
            self.record("converged")
            self.finished = True
            return
        if self.now - self.livenessAt > self.options.convergeMs:
            self.fail(
                f"Liveness: nodes did not converge within {self.options.convergeMs} ms "
                f"of the liveness write: {self.describeNodes()}{self._describeHeld()}"
            )
        self.events.after(self.options.tickMs, self._checkConvergence)

    def _describeHeld(self) -> str:
        """The nodes that stopped reading their clients, said after a liveness failure."""
        held = [node.name for node in self.nodes.values() if node.up and node.readingHeld]
        return f"; {', '.join(held)}{HELD}" if held else ""

    def converged(self) -> bool:
        """
        Whether every member of the leader's membership (voter or learner)
        is up and holds the leader's log, commit index and state; nodes
        removed, or that joined but were never added, are left out.  An
        operator's command may still wait for its answer: a transfer is
        answered within L{txraft.admin.TRANSFER_SECONDS}, a catch-up within
        L{txraft.admin.CATCH_UP_SECONDS}, longer than a run lasts.
        """
        leader = self.leader()
        if leader is None or self.workload.busy():
            return False
        core = leader.core
        members = [self.nodes.get(name) for name in core.membership.names()]
        return all(
            node is not None
            and node.up
            and not node.silent
            and not node.paused()
            and node.core.currentTerm == core.currentTerm
            and node.core.log.lastIndex == core.log.lastIndex
            and node.core.commitIndex == core.log.lastIndex
            and node.stateMachine.data == leader.stateMachine.data
            for node in members
        )

    def describeNodes(self) -> str:
        """One line per node: role, term, log and commit index."""
        return "; ".join(
            f"{n.name} {'down' if not n.up else 'silent' if n.silent else n.core.role} term "
            f"{n.core.currentTerm} snapshot {n.core.log.compactedIndex} last "
            f"{n.core.log.lastIndex} commit {n.core.commitIndex}"
            + (
                f" members {describeMembership(n.core.membership)}"
                if self.options.membership
                else ""
            )
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
