"""
Membership changes in the simulated cluster: scripted scenarios that do
not depend on the random stream (a leader that removes itself while a
partition heals, a node added while the leader crashes in the middle of
its catch-up, a transfer whose target crashes, a removed node with a stale
log that keeps ticking), and planted bugs that the configuration
invariants of L{tests.simulation.invariants} must catch.  The random
schedules of the operator (L{tests.simulation.operator}) run in the
batches of L{tests.test_simulation}.

Every command goes where a client's does, through
L{txraft.node.RaftNode.clientRequest}; every run ends with the usual
checks (convergence of every member, linearizability of the clients).
Reference: dissertation chapter 4 and section 3.10.
"""

from __future__ import annotations

import base64

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import clientRequest
from tests.simulation import SimNode, Simulation, SimulationError
from tests.test_simulation import calmSimulation, followers
from txraft import answers
from txraft.core import CANDIDATE, FOLLOWER, LEADER, RaftCore
from txraft.membership import Member, Membership
from txraft.messages import Message, RequestVote, Snapshot
from txraft.node import RaftNode
from txraft.snapshots import decodeSnapshot

#: Election timeouts long enough (150 to 300 ms) for a partition to heal
#: before anyone times out; heartbeats every 30 ms.
TIMING = {"electionTicks": (15, 30), "heartbeatTicks": 3}


def send(sim: Simulation, node: SimNode, text: str) -> list[str]:
    """
    Send the operator's command C{text} to C{node}, as a client's request;
    the list gets its answer when it comes (never, if the node crashes).
    """
    answer = clientRequest(node.driver, "operator", text)
    results: list[str] = []
    if isinstance(answer, str):
        results.append(answer)
    else:
        answer.addCallback(results.append)
    sim.record("operator sends {!r} to {}", text, node.name)
    return results


def commandOf(sim: Simulation, node: SimNode, text: str, limitMs: int = 3000) -> str:
    """Send C{text} to C{node} and run the cluster until it answers."""
    results = send(sim, node, text)
    sim.runUntil(lambda: bool(results), limitMs=limitMs)
    if not results:
        raise AssertionError(f"{node.name} did not answer {text!r}: {sim.describeNodes()}")
    return results[0]


def isolate(sim: Simulation, name: str) -> None:
    """Cut C{name} off from every other node, both ways."""
    for other in sim.names:
        if other != name:
            sim.network.blocked.update({(name, other), (other, name)})


def leaderOf(sim: Simulation) -> SimNode:
    """The running leader of the highest term (there must be one)."""
    leader = sim.leader()
    assert leader is not None, sim.describeNodes()
    return leader


def joinNode(sim: Simulation) -> SimNode:
    """Start a node that will join: empty disk, no membership."""
    return sim.launch(sim.newAddress())


def addCommand(node: SimNode, word: str = "add") -> str:
    """C{add NAME HOST PORT} (or C{add-learner}) for C{node}."""
    address = addressOf(node)
    return f"{word} {node.name} {address[0]} {address[1]}"


def addressOf(node: SimNode) -> tuple[str, int]:
    """Where C{node} listens."""
    address = node.sim.addresses[node.name]
    return address.host, address.port


def committedMembership(sim: Simulation) -> Membership | None:
    """The newest committed membership (L{None}: still the bootstrap one)."""
    return sim.checker.memberships[-1][1] if sim.checker.memberships else None


def recordCampaigns(sim: Simulation, node: SimNode) -> list[RequestVote]:
    """From now on, every vote or pre-vote request C{node} sends, in a list."""
    campaigns: list[RequestVote] = []
    sent = sim.network.sent

    def recording(sender: SimNode, dst: str, message: Message) -> None:
        if sender is node and isinstance(message, RequestVote):
            campaigns.append(message)
        sent(sender, dst, message)

    sim.network.sent = recording  # type: ignore[method-assign]
    return campaigns


def backupOf(answer: str) -> Snapshot:
    """The snapshot an C{OK BASE64} answer to C{backup} carries."""
    value = answers.okValue(answer)
    assert value is not None, answer
    return decodeSnapshot(base64.b64decode(value, validate=True), "the backup")


def deposedLeader(sim: Simulation) -> tuple[SimNode, int]:
    """
    Cut the leader off until the others elect another, which commits
    writes the old one never sees; return the old leader, still leading
    as far as it knows (its CheckQuorum, which would soon make it step
    down, is off: it has not noticed yet), and how long the committed log
    was by then.
    """
    old = leaderOf(sim)
    old.core.checkQuorum = False
    isolate(sim, old.name)
    sim.runUntil(lambda: sim.leader() not in (None, old), limitMs=2000)
    new = leaderOf(sim)
    known = new.core.commitIndex
    sim.runUntil(lambda: new.core.commitIndex > known + 2, limitMs=2000)
    assert old.core.role == LEADER and old.core.commitIndex < new.core.commitIndex
    return old, len(sim.checker.committed)


def finish(sim: Simulation) -> None:
    """Let the faults' end come, then check liveness, convergence and the history."""
    sim.runUntil(lambda: sim.finished)
    sim.finish()


class MembershipScenarioTests(SynchronousTestCase):
    """Membership changes and transfers under faults, scripted."""

    def test_leaderRemovesItselfWhilePartitionHeals(self) -> None:
        """
        A leader cut off from the others proposes its own removal, which
        cannot commit; the partition heals before anyone's election timer
        runs out, the new membership commits without counting the leader,
        which answers C{OK}, steps down and hands over: a voter of the new
        membership leads the next term within an election timeout, and the
        old leader, still running, never campaigns again.
        Reference: dissertation section 4.2.2, 3.10.
        """
        sim = calmSimulation(seed=2, **TIMING)
        # No client writes meanwhile: the followers then hold the leader's
        # whole log when the change commits, and the leader hands over at
        # once (with a write after the change, the next leader would be
        # elected after a timeout instead).
        sim.workload.stopped = True
        sim.runUntil(lambda: not sim.workload.busy(), limitMs=3000)
        old = leaderOf(sim)
        term = old.core.currentTerm
        isolate(sim, old.name)
        results = send(sim, old, f"remove {old.name}")
        entry = old.core.log.lastIndex
        sim.runUntil(lambda: False, limitMs=60)
        self.assertEqual((old.core.role, old.core.currentTerm), (LEADER, term))
        self.assertLess(old.core.commitIndex, entry)
        self.assertEqual(results, [])
        sim.network.blocked.clear()
        sim.runUntil(lambda: bool(results), limitMs=1000)
        self.assertEqual(results, [answers.OK])
        self.assertEqual(old.core.role, FOLLOWER)
        self.assertNotIn(old.name, committedMembership(sim).names())
        committedAt = sim.now
        sim.runUntil(lambda: sim.leader() is not old and sim.leader() is not None, 1000)
        new = leaderOf(sim)
        self.assertLess(sim.now - committedAt, TIMING["electionTicks"][0] * sim.options.tickMs)
        self.assertEqual(new.core.currentTerm, term + 1)
        self.assertEqual(sim.stats["leadersRemoved"], 1)
        # It knows it was removed (its log holds the change): it asks no one
        # for a vote, not even a pre-vote.
        campaigns = recordCampaigns(sim, old)
        sim.runUntil(lambda: False, limitMs=2000)
        self.assertEqual(campaigns, [])
        self.assertEqual(old.core.role, FOLLOWER)
        self.assertIs(sim.leader(), new)
        self.assertEqual(new.core.currentTerm, term + 1)
        finish(sim)

    def test_leaderRemovingItselfFromTwoIsStillNeeded(self) -> None:
        """
        Of two voters, the leader removes itself while cut off from the
        other, then crashes before the other holds the change: the other
        cannot be elected without its vote, which it refuses for a shorter
        log.  Restarted, the removed leader still campaigns, is elected by
        the other's vote alone, commits its removal and hands over; the
        cluster of one goes on.  (Found by the simulation: the cluster
        never elected a leader again.)  Reference: dissertation section
        4.2.2, Figure 4.6.
        """
        sim = calmSimulation(seed=8, **TIMING)
        old = leaderOf(sim)
        gone, other = followers(sim)
        self.assertEqual(commandOf(sim, old, f"remove {gone.name}"), answers.OK)
        term = old.core.currentTerm
        isolate(sim, old.name)
        self.assertEqual(send(sim, old, f"remove {old.name}"), [])
        # Its next turn makes the removal durable (it sent it first: 10.2.1).
        store = old.logStore
        sim.runUntil(lambda: store.durable == store.entries, limitMs=100)
        sim.crash(old, "crashes before the other holds its removal")
        sim.restart(old)
        sim.network.blocked.clear()
        self.assertFalse(old.core.isVoter())
        sim.runUntil(lambda: sim.leader() is other, limitMs=3000)
        self.assertIs(sim.leader(), other)
        self.assertIn(old.name, [name for t, name in sim.checker.leaders.items() if t > term])
        self.assertEqual(committedMembership(sim).names(), (other.name,))
        finish(sim)

    def test_addWhileLeaderCrashesMidCatchUp(self) -> None:
        """
        A new node is added: the leader commits it as a learner and starts
        catching it up, but crashes before the new node has the log.  The
        operator sees its connection close.  The node stays a learner under
        the next leader (which promotes no one by itself) yet gets the log
        from it; the operator's C{add} sent again promotes it, and the
        grown cluster converges.  Reference: dissertation section 4.2.1.
        """
        sim = calmSimulation(seed=5, snapshotEntries=8, **TIMING)
        old = leaderOf(sim)
        joiner = joinNode(sim)
        sim.network.blocked.add((old.name, joiner.name))
        results = send(sim, old, addCommand(joiner))

        def learnerCommitted() -> bool:
            membership = committedMembership(sim)
            return membership is not None and membership.member(joiner.name) is not None

        sim.runUntil(learnerCommitted, limitMs=1000)
        self.assertFalse(committedMembership(sim).isVoter(joiner.name))
        sim.runUntil(lambda: False, limitMs=50)
        self.assertEqual((old.core.role, results), (LEADER, []))
        self.assertEqual(joiner.core.log.lastIndex, 0)
        sim.crash(old, "crashes while catching the new node up")
        sim.network.blocked.clear()
        sim.runUntil(lambda: sim.leader() not in (None, old), limitMs=2000)
        new = leaderOf(sim)
        self.assertNotEqual(new.name, old.name)
        sim.runUntil(lambda: joiner.core.commitIndex >= new.core.commitIndex > 0, 1000)
        self.assertFalse(new.core.membership.isVoter(joiner.name))
        self.assertFalse(joiner.core.isVoter())
        self.assertEqual(results, [])
        self.assertEqual(commandOf(sim, new, addCommand(joiner), limitMs=5000), answers.OK)
        self.assertTrue(committedMembership(sim).isVoter(joiner.name))
        self.assertGreater(sim.stats["learnersPromoted"], 0)
        finish(sim)
        self.assertTrue(joiner.core.isVoter())
        self.assertEqual(joiner.stateMachine.data, leaderOf(sim).stateMachine.data)

    def test_transferTargetCrashesBeforeTakingOver(self) -> None:
        """
        The target of a transfer crashes before the leader's TimeoutNow
        reaches it: clients are told the leader is transferring (they may
        send again), the transfer is given up after an election timeout,
        the leader leads on in its term and answers the operator that the
        target did not take over.  Reference: dissertation section 3.10.
        """
        sim = calmSimulation(seed=3, **TIMING)
        leader = leaderOf(sim)
        term = leader.core.currentTerm
        target = followers(sim)[0]
        results = send(sim, leader, f"transfer-leader {target.name}")
        sim.crash(target, "the transfer's target crashes")
        self.assertEqual(send(sim, leader, "set probe during"), [answers.TRANSFERRING])
        sim.runUntil(lambda: bool(results), limitMs=2000)
        self.assertEqual(
            results,
            [
                answers.unavailable(
                    f"{target.name} did not take over in time; this node still leads"
                )
            ],
        )
        self.assertEqual((leader.core.role, leader.core.currentTerm), (LEADER, term))
        self.assertEqual(commandOf(sim, leader, "set probe after"), answers.OK)
        finish(sim)

    def test_transferTargetCrashesWhileCampaigning(self) -> None:
        """
        The target of a transfer crashes right after it started its
        election: the others may have moved to its term, so the old leader
        may step down, but nobody leads without a majority, a new leader is
        elected after a timeout, and the operator is never told C{OK}.
        Reference: dissertation section 3.10.
        """
        # The target stays down until the faults stop (at 5 s).
        sim = calmSimulation(seed=4, downMs=(4000, 4000), **TIMING)
        leader = leaderOf(sim)
        target = followers(sim)[0]
        results = send(sim, leader, f"transfer-leader {target.name}")
        sim.runUntil(lambda: target.core.role == CANDIDATE, limitMs=500)
        self.assertEqual(target.core.role, CANDIDATE)
        sim.crash(target, "the transfer's target crashes while campaigning")
        sim.runUntil(lambda: bool(results), limitMs=6000)
        self.assertEqual(len(results), 1)
        self.assertTrue(answers.isUnavailable(results[0]), results)
        sim.runUntil(lambda: sim.leader() is not None, limitMs=2000)
        self.assertNotEqual(leaderOf(sim).name, target.name)
        finish(sim)

    def test_staleRemovedNodeChangesNoTerm(self) -> None:
        """
        A node cut off while it is removed never learns of its removal (a
        leader stops sending to a server as soon as it appends the
        membership without it): its log is stale and it still counts itself
        a voter.  Once the links
        heal it keeps ticking and asking for pre-votes, which are refused
        (its log is behind, and the others hear from their leader), so it
        never starts an election: for many election timeouts nobody's term
        moves and the leader stays.  Reference: dissertation sections
        4.2.3 and 9.6.
        """
        sim = calmSimulation(seed=6, nodes=5, **TIMING)
        leader = leaderOf(sim)
        stale = followers(sim)[0]
        isolate(sim, stale.name)
        self.assertEqual(commandOf(sim, leader, f"remove {stale.name}"), answers.OK)
        sim.runUntil(lambda: False, limitMs=200)
        sim.network.blocked.clear()
        self.assertTrue(stale.core.isVoter())
        self.assertLess(stale.core.log.lastIndex, leader.core.log.lastIndex)
        others = [n for n in sim.nodes.values() if n is not stale]
        terms = {n.name: n.core.currentTerm for n in others}
        campaigns = recordCampaigns(sim, stale)

        def disturbed() -> bool:
            return sim.leader() is not leader or any(
                n.core.currentTerm != terms[n.name] for n in others
            )

        sim.runUntil(disturbed, limitMs=3000)
        self.assertFalse(disturbed(), sim.describeNodes())
        self.assertTrue(campaigns)
        self.assertTrue(all(message.preVote for message in campaigns))
        self.assertTrue(stale.up)
        finish(sim)

    def test_removedLeaderWithConflictingLogAddedAgain(self) -> None:
        """
        A leader cut off with entries nobody else has is removed by the
        leader the others elect, which goes on writing and compacting its
        log.  The old leader keeps running on its old data.  Added again
        under its old name and address, it gets the snapshot, gives up its
        uncommitted entries, and becomes a voter again: every member ends
        with the same log and state, the clients' history stays
        linearizable.  Reference: dissertation sections 4.1, 4.2.2 and 5.3.
        """
        sim = calmSimulation(seed=3, nodes=5, snapshotEntries=8, **TIMING)
        old = leaderOf(sim)
        isolate(sim, old.name)
        lost = send(sim, old, "set orphan 1")
        sim.runUntil(lambda: sim.leader() not in (None, old), limitMs=2000)
        (orphan,) = [
            e.index
            for e in old.core.log.slice(1, old.core.log.lastIndex + 1)
            if "orphan" in e.command
        ]
        new = leaderOf(sim)
        sim.runUntil(lambda: new.core.log.term(new.core.commitIndex) == new.core.currentTerm)
        self.assertEqual(commandOf(sim, new, f"remove {old.name}"), answers.OK)
        # The new leader compacts past all of the old one's log: only a
        # snapshot can bring it back.
        stale = old.core.log.lastIndex
        sim.runUntil(lambda: new.core.log.compactedIndex > stale, limitMs=3000)
        self.assertGreater(new.core.log.compactedIndex, stale)
        self.assertLess(old.core.log.term(orphan), new.core.currentTerm)
        sim.network.blocked.clear()
        installed = sim.stats["snapshotsInstalled"]
        self.assertEqual(commandOf(sim, leaderOf(sim), addCommand(old)), answers.OK)
        self.assertGreater(sim.stats["snapshotsInstalled"], installed)
        self.assertTrue(committedMembership(sim).isVoter(old.name))
        self.assertNotEqual(lost, [answers.OK])
        finish(sim)
        self.assertGreater(old.core.log.compactedIndex, orphan)
        self.assertNotIn("orphan", old.stateMachine.data)

    def test_backupOfDeposedLeaderRefused(self) -> None:
        """
        A leader cut off while the others elect another cannot confirm its
        leadership, so it takes no backup; the new leader's backup holds
        every write committed before it was asked for, and the replay of
        the committed log up to its index.
        """
        sim = calmSimulation(**TIMING)
        old, committed = deposedLeader(sim)
        answer = commandOf(sim, old, "backup")
        self.assertFalse(answers.isSuccess(answer), answer)
        sim.checker.observeBackup(
            old.name, backupOf(commandOf(sim, leaderOf(sim), "backup")), committed
        )
        self.assertEqual(sim.stats["backupsChecked"], 1)
        sim.network.blocked.clear()
        finish(sim)


class MembershipPlantedViolationTests(SynchronousTestCase):
    """
    The configuration invariants catch bugs: each test plants one and
    expects the failure it must cause.
    """

    def assertCaught(self, failure: SimulationError, words: str) -> None:
        """C{failure} is about C{words}."""
        self.assertIn(words, failure.problem)

    def withLearners(self, count: int) -> Simulation:
        """
        A calm three-node cluster with C{count} learners added and caught
        up; a node that crashes stays down for four seconds.
        """
        sim = calmSimulation(downMs=(4000, 4000), **TIMING)
        for _ in range(count):
            joiner = joinNode(sim)
            command = addCommand(joiner, "add-learner")
            self.assertEqual(commandOf(sim, leaderOf(sim), command), answers.OK)
        sim.runUntil(
            lambda: all(
                n.core.commitIndex == leaderOf(sim).core.commitIndex for n in followers(sim)
            ),
            limitMs=1000,
        )
        return sim

    def test_learnersCountForCommitment(self) -> None:
        """
        A leader that counts its learners' copies as votes for commitment
        commits an entry that only a minority of the voters hold, once two
        of three voters are gone; caught.  Reference: dissertation 4.2.1.
        """
        sim = self.withLearners(2)
        leader = leaderOf(sim)
        self.patch(RaftCore, "_voterPeers", lambda core: list(core.peers))
        for node in followers(sim):
            if leader.core.membership.isVoter(node.name):
                sim.crash(node, "planted: two voters down")
        failure = self.assertRaises(SimulationError, commandOf, sim, leader, "set probe 1")
        self.assertCaught(failure, "of the voters")

    def test_learnerVotesElectALeader(self) -> None:
        """
        A candidate that asks its learners for votes and counts them wins
        without a majority of the voters; caught.  Reference: dissertation
        section 4.1 (a server counts the votes of its newest membership).
        """
        sim = self.withLearners(2)
        leader = leaderOf(sim)
        voter = next(n for n in followers(sim) if leader.core.membership.isVoter(n.name))
        self.patch(RaftCore, "_voterPeers", lambda core: list(core.peers))
        self.patch(RaftCore, "_countVotes", lambda core: sum(core._votes.values()))
        sim.crash(leader, "planted: the leader goes")
        for node in followers(sim):
            if node is not voter and leader.core.membership.isVoter(node.name):
                sim.crash(node, "planted: so does a voter")
        failure = self.assertRaises(SimulationError, sim.runUntil, lambda: False, 2000)
        self.assertCaught(failure, "not of a majority")

    def test_twoChangesUncommitted(self) -> None:
        """
        A leader that forgets its change in progress proposes a second one
        before the first commits; caught (and its log would hold two
        membership entries after the committed log's end).  Reference:
        dissertation section 4.2.
        """
        sim = calmSimulation(**TIMING)
        leader = leaderOf(sim)
        first, second = joinNode(sim), joinNode(sim)
        for joiner in (first, second):
            host, port = addressOf(joiner)
            membership = leader.core.membership.adding(Member(joiner.name, host, port, False))
            if joiner is second:
                leader.core.membershipIndex = 0  # planted: the change in progress forgotten
                failure = self.assertRaises(
                    SimulationError, leader.driver.proposeMembership, membership
                )
                self.assertCaught(failure, "is not committed")
            else:
                leader.driver.proposeMembership(membership)

    def test_changeBeforeOwnTermCommits(self) -> None:
        """
        A new leader that proposes a membership change before an entry of
        its own term has committed (it may not know the newest committed
        membership yet) is caught.  Reference: Ongaro, raft-dev, 2015,
        the fix to single-server changes.
        """
        sim = calmSimulation(**TIMING)
        old = leaderOf(sim)
        sim.crash(old, "planted: the leader goes, so that another is elected")
        sim.runUntil(lambda: sim.leader() not in (None, old), limitMs=2000)
        new = leaderOf(sim)
        core = new.core
        self.assertNotEqual(core.log.term(core.commitIndex), core.currentTerm)
        joiner = joinNode(sim)
        host, port = addressOf(joiner)
        membership = core.membership.adding(Member(joiner.name, host, port, False))
        # planted: the proposal skips the core's checks
        core._replicate([membership.encode()])
        failure = self.assertRaises(SimulationError, new.driver._process, core._takeReady())
        self.assertCaught(failure, "before it committed an entry of its term")

    def test_removedLeaderLeadsOn(self) -> None:
        """
        A leader that removed itself and does not step down once the change
        commits is caught.  Reference: dissertation section 4.2.2.
        """
        sim = calmSimulation(**TIMING)
        leader = leaderOf(sim)
        self.patch(RaftCore, "_leaveLeadership", lambda core: None)
        failure = self.assertRaises(
            SimulationError, commandOf, sim, leader, f"remove {leader.name}"
        )
        self.assertCaught(failure, "still leads")

    def test_joiningNodeCampaigns(self) -> None:
        """
        A node waiting to join that campaigns (it takes itself for a
        voter) is caught as soon as it is a pre-candidate.
        Reference: dissertation section 4.2.1.
        """
        sim = calmSimulation(**TIMING)
        self.patch(RaftCore, "isVoter", lambda core: True)
        joinNode(sim)
        failure = self.assertRaises(SimulationError, sim.runUntil, lambda: False, 2000)
        self.assertCaught(failure, "no voter of its membership")

    def test_backupWithoutBarrier(self) -> None:
        """
        A backup taken without confirming leadership first (no read
        barrier) on a leader the others replaced misses writes committed
        before it was asked for; caught.  Reference: dissertation section
        6.4 (a read, and so a backup, must not return stale data).
        """
        sim = calmSimulation(**TIMING)
        old, committed = deposedLeader(sim)
        self.patch(RaftNode, "readBarrier", lambda node: defer.succeed(answers.OK))
        stale = backupOf(commandOf(sim, old, "backup"))
        failure = self.assertRaises(
            SimulationError, sim.checker.observeBackup, old.name, stale, committed
        )
        self.assertCaught(failure, "committed before the backup was asked for")
