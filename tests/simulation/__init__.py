"""
A deterministic simulation of a whole txraft cluster in one process.

L{Simulation} runs N nodes on a simulated clock (integer milliseconds) and
a simulated network.  Each node runs the production driver, L{txraft.node.RaftNode}, with
everything below it (its L{RaftCore}, L{LogManager} and L{KeyValueStore})
over in-memory log, term/vote and snapshot stores on a simulated disk.  The
simulation only gives the driver what the Twisted service gives it in
production: a clock (L{clock.NodeClock}), a way to send to peers
(L{network.Network}), a background runner for snapshots (a simulated
delay), and client requests (L{clients.Workload}); every rule of the driver
(group commit, commit deadlines, answers, snapshots, disk failure and
rejoin) is the one that runs in production.  An L{INodeObserver}
(L{nodes.NodeObserver}) checks each of the driver's steps as it happens.

The package has one module per job: L{clock} (simulated time),
L{network}, L{connections} (a keyed cluster's authenticated connections),
L{disk} (stores that crash or fail), L{nodes}, L{clients}, L{faults} (the
schedule), L{operator} (membership changes), L{invariants} (the checks)
and L{run} (one run).

A run is of a keyed cluster unless C{authenticate=False}: as in
production, each node sends its requests to a peer over its own
connection, which carries nothing before the production handshake of
L{txraft.auth} (the real L{Initiator} and L{Responder}, their lines going
through the simulated network), and seals every line with the real
L{Session}; the answers come back on it, in order.  A connection is a TCP
stream, so the network's loss breaks it, its late lines hold up the ones
after them, and duplicates and replays are an attacker's copies of sealed
lines, injected into live connections or opening new ones: each must fail
to open, and drops its connection.  An impostor holding another key tries
to join as a member.  A line injected or forged that opens, a handshake it
passes, or a genuine line refused fails the run (see L{connections}).
Unkeyed runs send each message alone, as a datagram that can be lost,
duplicated, reordered and replayed as it is, which Raft must shrug off.

Everything is drawn from one C{random.Random(seed)}: the run's profile
(timeouts, batch sizes, snapshot interval), the fault schedule, network
delays, drops and duplicates, the clients' operations, the seed of each
node's election timer (a fresh one per core), and the cluster key and the
nonces of every handshake.  The same seed therefore
replays the same run, event for event.

Faults, chosen by a seeded schedule during the first C{faultMs} of a run:
message loss, duplication, reordering and delay (a few messages arrive
more than a second late, after much newer ones); symmetric partitions,
one-way (asymmetric) link cuts, a partition isolating the leader in one or
both directions; crashes of any node, either at once or just before one of
its next few durable writes (the in-memory log then loses what was not
synced, as L{MemoryLogStore.crash} does; to the driver the lost power is a
failed write, and the simulation ends the process before anything it does
next leaves it), followed by a restart from the
stores; disk errors (writes fail for a while: the node falls silent and
rejoins); slow nodes (their messages delayed more, their ticks sometimes
skipped) and paused nodes (a stalled process: it does nothing, then
catches up on the ticks it missed, as L{RaftNode.ticks} allows); clocks
that run at slightly different rates; wall clocks that step back (an NTP
step, L{clock.NodeClock.stepBack}: the node's ticks are lost for as long,
never caught up on, and the timers it had set run that much late, while it
reads its peers and clients as ever), often as the node's machine drops
off the network for as long (no peer hears it, clients elsewhere lose
their connections, and a process on that machine reads keys from it
through the loopback: a leader cut off so must answer no read without a
majority's confirmation).  Clients retry: a
request that surely did not execute (a redirect, no leader known, an
overwritten entry, a refused connection) is resent as the same operation;
one whose outcome is unknown (leadership lost, commit timeout, disk
failure, lost connection) is recorded as such and retried later, possibly
at another node, as a new operation.

With C{membership=True} an operator (L{operator}) changes the cluster
while the faults go on, with the operators' commands of L{txraft.admin}
sent as clients' requests: new nodes start with an empty disk and no
membership (C{RaftNode(join=True)}, a config holding their own line) and
are added, as voters (caught up, then promoted) or as learners; learners
are promoted; members are removed, the leader among them, and then stopped
for good or left running; leadership is handed over, to a named voter or
to the most up-to-date one, and the leader's machine is restarted as a
planned restart does (it hands over first, L{RaftNode.handOver}).  A node
that joined restarts with or without C{join} once its disk holds data.
The network routes by name, to nodes of the first config and to those
that joined.  Each C{OK} must be true of the
committed log.  Once the faults stop, every member of the leader's
membership converges; removed nodes and nodes never added are left out.

After every event L{InvariantChecker} checks, against a global record of
everything any node ever logged, committed and applied:

  - Election Safety: at most one leader per term, elected by a majority
    of the voters of its own membership (the newest in its log); only
    such a voter campaigns, or one whose removal is not committed yet
    (dissertation section 4.2.2);
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
    reference reply;
  - configurations: each node's membership is the newest in its log, else
    its snapshot's, else its bootstrap one; no log holds more than one
    membership entry after the committed log; a leader proposes a change
    only once an entry of its term and the change before are committed;
    every snapshot records the
    committed membership of its index; a leader's commit is of its own
    term and held on disk by a majority of its membership's voters
    (learners, and a leader removing itself, do not count); a leader
    whose removal committed has stepped down.

Once the faults stop (every link healed, drops and duplicates off, disks
working, slow and crashed nodes back), a client write must commit within
C{livenessMs}, and then every node must converge to the same log, commit
index and state within C{convergeMs}.  Finally the clients' history is
checked for linearizability by L{txraft.testing.linearizability.checkHistory}.

A violation raises L{SimulationError}, whose text names the seed, the
command that replays it alone, and the last events of the run.
"""

from __future__ import annotations

from tests.simulation.clients import HistoryRecord, SimClient, Workload
from tests.simulation.disk import (
    Disk,
    SimLogStore,
    SimSnapshotStore,
    SimStateStore,
    SimulatedCrashError,
)
from tests.simulation.faults import FAULT_WEIGHTS, FaultSchedule
from tests.simulation.invariants import InvariantChecker
from tests.simulation.nodes import SimNode
from tests.simulation.run import REPLAY, Simulation, SimulationError, SimulationOptions

__all__ = [
    "FAULT_WEIGHTS",
    "REPLAY",
    "Disk",
    "FaultSchedule",
    "HistoryRecord",
    "InvariantChecker",
    "SimClient",
    "SimLogStore",
    "SimNode",
    "SimSnapshotStore",
    "SimStateStore",
    "SimulatedCrashError",
    "Simulation",
    "SimulationError",
    "SimulationOptions",
    "Workload",
]
