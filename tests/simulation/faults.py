"""
The fault schedule: what goes wrong in a simulated run, and when.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.simulation.nodes import SimNode
    from tests.simulation.run import Simulation

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
    "replay": 3,
    "slow": 2,
    "pause": 2,
    "clockStep": 4,
    "impostor": 2,
}

#: The machine of a leader that drops off the network as its clock steps
#: back does so once every entry of its log is committed, if that comes
#: within this many ms (L{FaultSchedule._fault_clockStep}).
OFFLINE_WAIT_MS = 100

#: The faults that only a keyed cluster has (elsewhere an impostor would be a peer).
KEYED_FAULTS = frozenset({"impostor"})


class FaultSchedule:
    """
    Faults drawn from the run's seed during its first C{faultMs}: message
    loss, duplication, reordering and delay (a few messages arrive more
    than a second late, after much newer ones); symmetric partitions,
    one-way link cuts, a partition isolating the leader in one or both
    directions; crashes of any node, either at once or just before one of
    its next few durable writes (what was not synced is lost), followed by
    a restart; copies of old messages of every kind delivered long after,
    across elections; disk errors (writes fail for a while: the node falls
    silent and rejoins); slow nodes (their messages delayed more, their
    ticks sometimes skipped) and paused nodes (a stalled process); wall
    clocks that step back, the machine sometimes off the network meanwhile
    (L{_fault_clockStep}); on a keyed cluster, an impostor holding another
    key.
    """

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation

    def start(self) -> None:
        """Plan the first fault, if the run has any."""
        options = self.sim.options
        if options.faultMs > 0 and any(options.faultWeights.values()):
            self.sim.events.after(self.sim.rng.randint(*options.faultEveryMs), self.fault)

    def fault(self) -> None:
        """Take the next action of the schedule, and plan the one after."""
        if self.sim.now >= self.sim.options.faultMs:
            return
        weights = self.sim.options.faultWeights
        keyed = self.sim.options.authenticate
        kinds = [k for k in FAULT_WEIGHTS if weights.get(k) and (keyed or k not in KEYED_FAULTS)]
        kind = self.sim.rng.choices(kinds, [weights[k] for k in kinds])[0]
        getattr(self, f"_fault_{kind}")()
        self.sim.events.after(self.sim.rng.randint(*self.sim.options.faultEveryMs), self.fault)

    def _upNodes(self) -> list[SimNode]:
        return [node for node in self.sim.nodes.values() if node.up]

    def _fault_partition(self) -> None:
        names = list(self.sim.names)
        if len(names) < 2:
            return  # the others were removed and stopped
        self.sim.rng.shuffle(names)
        cut = self.sim.rng.randint(1, len(names) - 1)
        side, other = names[:cut], names[cut:]
        for a in side:
            for b in other:
                self.sim.network.blocked.update({(a, b), (b, a)})
        self.sim.stats["partitions"] += 1
        self.sim.record("partition {} | {}", sorted(side), sorted(other))

    def _fault_oneWay(self) -> None:
        if len(self.sim.names) < 2:
            return
        for _ in range(self.sim.rng.randint(1, len(self.sim.names) - 1)):
            a, b = self.sim.rng.sample(self.sim.names, 2)
            self.sim.network.blocked.add((a, b))
            self.sim.record("one-way cut: {} no longer hears {}", b, a)
        self.sim.stats["oneWayCuts"] += 1

    def _fault_isolateLeader(self) -> None:
        leader = self.sim.leader()
        if leader is None:
            return self._fault_partition()
        mode = self.sim.rng.choice(("both", "deaf", "mute"))
        for other in self.sim.names:
            if other != leader.name:
                if mode in ("both", "mute"):
                    self.sim.network.blocked.add((leader.name, other))
                if mode in ("both", "deaf"):
                    self.sim.network.blocked.add((other, leader.name))
        self.sim.stats["leaderIsolations"] += 1
        self.sim.record("isolate leader {} ({})", leader.name, mode)

    def _fault_heal(self) -> None:
        self.sim.network.heal()
        self.sim.record("links healed, every machine on the network")

    def _victim(self) -> SimNode | None:
        """A running node to hurt, the leader more often than the others."""
        up = self._upNodes()
        if not up:
            return None
        leader = self.sim.leader()
        if leader is not None and self.sim.rng.random() < 0.4:
            return leader
        return self.sim.rng.choice(up)

    def _fault_crash(self) -> None:
        node = self._victim()
        if node is not None:
            self.sim.crash(node, "fault schedule")

    def _fault_crashMidWrite(self) -> None:
        node = self._victim()
        if node is None:
            return
        node.disk.crashAfter = self.sim.rng.randint(1, 3)
        self.sim.stats["crashesArmed"] += 1
        self.sim.record(
            "{} will lose power before durable write #{} from now",
            node.name,
            node.disk.crashAfter,
        )

    def _fault_diskError(self) -> None:
        node = self._victim()
        if node is None:
            return
        node.disk.failingUntil = self.sim.now + self.sim.rng.randint(*self.sim.options.diskErrorMs)
        self.sim.stats["diskErrors"] += 1
        self.sim.record(
            "{}'s disk fails its writes until {} ms", node.name, node.disk.failingUntil
        )

    def _fault_restart(self) -> None:
        down = [node for node in self.sim.nodes.values() if not node.up and not node.retired]
        if down:
            self.sim.restart(self.sim.rng.choice(down))

    def _fault_network(self) -> None:
        network = self.sim.network
        network.dropRate = self.sim.rng.choice((0.0, 0.02, 0.1, 0.3))
        network.duplicateRate = self.sim.rng.choice((0.0, 0.03, 0.1))
        network.lateRate = self.sim.rng.choice((0.0, 0.0, 0.01, 0.05))
        network.maxDelayMs = self.sim.rng.choice((self.sim.options.baseDelayMs, 30, 120))
        self.sim.stats["networkChanges"] += 1
        self.sim.record(
            "network: drop {}, duplicate {}, late {}, delay up to {} ms",
            network.dropRate,
            network.duplicateRate,
            network.lateRate,
            network.maxDelayMs,
        )

    def _fault_replay(self) -> None:
        self.sim.network.replay(self.sim.rng.randint(1, 6))

    def _fault_impostor(self) -> None:
        connections = self.sim.network.connections
        assert connections is not None
        connections.impostor()

    def _fault_slow(self) -> None:
        node = self.sim.rng.choice([n for n in self.sim.nodes.values() if not n.retired])
        node.slow = not node.slow
        self.sim.stats["slowNodes"] += node.slow
        self.sim.record("{} is {}", node.name, "slow" if node.slow else "no longer slow")

    def _fault_pause(self) -> None:
        node = self._victim()
        if node is None or node.paused():
            return
        node.pausedUntil = self.sim.now + self.sim.rng.randint(*self.sim.options.pauseMs)
        self.sim.events.at(node.pausedUntil, self.sim.resume, node, node.incarnation)
        self.sim.stats["pauses"] += 1
        self.sim.record("{} pauses until {} ms", node.name, node.pausedUntil)

    def _fault_clockStep(self) -> None:
        """
        A node's wall clock steps back X ms (an NTP step), the leader more
        often than the others.  Twisted's reactor times its calls with
        C{time.time()}, so the node's ticker (a C{LoopingCall.withCount})
        next runs X ms late and counts one tick: the ticks between are
        lost, never caught up on (unlike a pause's, L{Simulation.resume}).
        Its other timers already set run X ms late; those set later run on
        time, on the stepped clock (L{NodeClock.stepBack}).  Meanwhile it
        reads its peers and its clients as ever: a leader whose clock
        stepped back sends no heartbeats, and does not count, every
        election timeout, whether a majority still answers it
        (check-quorum), so it may believe it leads while the others elect
        another.  A node's clock steps at most once a commit timeout (NTP
        slews after a step), so a step delays a request's commit deadline
        once at most: the answer timeout allows for the longest step.

        Often (C{clockStepOffline}) the step comes as the machine drops off
        the network for as long, as when a virtual machine is migrated:
        no peer hears it or reaches it, the connections of clients
        elsewhere close and no new one opens, and a process on the machine
        (L{Workload.startLocalReader}) reads keys from it through the
        loopback.  The machine of a leader drops off at the worst moment of
        the next L{OFFLINE_WAIT_MS}: once every entry of its log is
        committed.  A leader that holds an uncommitted write answers a read
        only after that write (its read index is its last index); one that
        holds none, cut off and still believing it leads, must answer no
        read it has not confirmed with a majority: the others may have
        elected a leader and committed newer writes meanwhile (dissertation
        section 6.4).  The step, and the time off the network, end before
        the faults stop.
        """
        sim = self.sim
        node = self._victim()
        if node is None:
            return
        ms = sim.rng.randint(*sim.options.clockStepMs)
        offline = sim.rng.random() < sim.options.clockStepOffline
        if offline and node.core.commitIndex < node.core.log.lastIndex:
            # The worst moment within a while: once its log is all committed.
            deadline = sim.now + OFFLINE_WAIT_MS
            self._stepWhenCommitted(node, node.incarnation, ms, deadline)
        else:
            self._stepBack(node, ms, offline)

    def _stepWhenCommitted(self, node: SimNode, incarnation: int, ms: int, deadline: int) -> None:
        """Step C{node}'s clock back, its machine off the network, once its log is committed."""
        if node.incarnation != incarnation or not node.up:
            return
        if node.core.commitIndex < node.core.log.lastIndex and self.sim.now < deadline:
            self.sim.events.after(1, self._stepWhenCommitted, node, incarnation, ms, deadline)
            return
        self._stepBack(node, ms, offline=True)

    def _stepBack(self, node: SimNode, ms: int, offline: bool) -> None:
        """Step C{node}'s clock back C{ms} ms (less if the faults stop sooner)."""
        sim = self.sim
        ms = min(ms, sim.options.faultMs - sim.now)
        if not node.up or node.paused() or ms <= 0:
            return
        if (
            node.clockSteppedUntil
            and sim.now < node.clockSteppedUntil + sim.options.commitTimeoutMs
        ):
            # NTP slews after a step; and so one step at most delays each
            # commit deadline (the answer timeout allows for one).
            return
        node.stepClockBack(ms)
        sim.stats["clockSteps"] += 1
        sim.record(
            "{}'s clock steps back {} ms: its ticks are lost until {} ms{}",
            node.name,
            ms,
            node.clockSteppedUntil,
            ", its machine off the network" if offline else "",
        )
        if offline:
            sim.stats["machinesOffline"] += 1
            sim.network.offline.add(node.name)
            sim.workload.machineOffline(node)
            sim.workload.startLocalReader(node, node.clockSteppedUntil)
            sim.events.at(node.clockSteppedUntil, self._backOnline, node, node.clockSteppedUntil)

    def _backOnline(self, node: SimNode, until: int) -> None:
        """
        C{node}'s machine, off the network since its clock stepped back
        until C{until}, is back on it (unless a later step took it off
        again, or the links healed already).
        """
        if node.name in self.sim.network.offline and node.clockSteppedUntil <= until:
            self.sim.network.offline.discard(node.name)
            self.sim.record("{}'s machine is back on the network", node.name)
