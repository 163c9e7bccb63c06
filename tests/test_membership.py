"""
Tests for membership changes and leadership transfer: L{txraft.membership}
and the rules of L{txraft.core.RaftCore} that use it.  Reference:
dissertation chapter 4 (single-server changes, learners, removed servers)
and section 3.10 (leadership transfer).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.raftnet import RaftNetwork
from tests.test_core import makeCore, makeLeader
from txraft.config import parseConfig
from txraft.core import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    PRECANDIDATE,
    ChangeInProgressError,
    LeaderNotReadyError,
    RaftCore,
    TransferringError,
)
from txraft.membership import (
    Member,
    Membership,
    MembershipError,
    isMembershipCommand,
    parseMember,
    parseMembership,
)
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
)

FOUR = ("a", "b", "c", "d")


def voters(*names: str) -> Membership:
    """Voters known by name only."""
    return Membership.ofVoters(list(names))


def withLearner(membership: Membership, name: str) -> Membership:
    """C{membership} with C{name} added as a learner."""
    return membership.adding(Member(name, name, 1, voter=False))


def settle(net: RaftNetwork, rounds: int = 3) -> None:
    """A few heartbeat intervals with every message delivered."""
    for _ in range(rounds * net.heartbeatTicks):
        net.tick()
        net.deliver()


def change(net: RaftNetwork, leader: str, membership: Membership) -> Entry:
    """Propose C{membership} on C{leader}; return its entry."""
    ready = net[leader].changeMembership(membership)
    net.handle(leader, ready)
    (entry,) = ready.entries
    return entry


def electedWithNoop(net: RaftNetwork, name: str = "a") -> RaftCore:
    """Elect C{name} (with a pre-vote if the cores run one) and let its no-op commit."""
    core = net[name]
    while core.role == FOLLOWER:
        net.tick(name)
    net.deliver()
    assert core.role == LEADER, core.role
    settle(net, 1)
    assert core.log.term(core.commitIndex) == core.currentTerm
    return core


class MembershipFormatTests(SynchronousTestCase):
    """The membership and its entry's command, in plain words."""

    def test_roundTrip(self) -> None:
        """
        A membership entry is the word C{membership} and four words per
        member: voter or learner, name, host, port; it parses back equal.
        """
        membership = Membership(
            (Member("s1", "127.0.0.1", 10000), Member("s4", "::1", 10003, voter=False))
        )
        text = membership.encode()
        self.assertEqual(text, "membership voter s1 127.0.0.1 10000 learner s4 ::1 10003")
        self.assertTrue(isMembershipCommand(text))
        self.assertEqual(parseMembership(text), membership)
        self.assertEqual(membership.voters(), {"s1"})
        self.assertEqual(parseMembership("membership"), Membership())

    def test_notMembership(self) -> None:
        """Client commands are not membership entries; malformed ones do not parse."""
        for command in ("set membership 1", "membershipx", "noop", "c1#1@set a b"):
            self.assertFalse(isMembershipCommand(command))
        for text in (
            "membership voter s1 h",
            "membership boss s1 h 1",
            "membership voter s1 h 0",
            "membership voter s! h 1",
            "membership voter s1 h 1 voter s1 g 2",
            "membership voter s1 h 1 voter s2 h 1",
        ):
            self.assertRaises(MembershipError, parseMembership, text)

    def test_fromConfig(self) -> None:
        """The bootstrap membership of a config file: every node a voter, in file order."""
        config = parseConfig("s1 127.0.0.1 10000\ns2 127.0.0.1 10001\n")
        self.assertEqual(
            Membership.fromConfig(config),
            Membership((Member("s1", "127.0.0.1", 10000), Member("s2", "127.0.0.1", 10001))),
        )

    def test_edits(self) -> None:
        """
        Adding refuses a name or an address already taken, removing an
        unknown name or the last voter; promoting makes a learner a voter.
        """
        base = Membership((Member("s1", "h", 1), Member("s2", "h", 2)))
        self.assertRaisesRegex(MembershipError, "s1 is already", base.adding, Member("s1", "g", 9))
        self.assertRaisesRegex(
            MembershipError, "already the address of s2", base.adding, Member("s3", "h", 2)
        )
        self.assertRaisesRegex(MembershipError, "s9 is not a member", base.removing, "s9")
        only = base.removing("s2")
        self.assertRaisesRegex(MembershipError, "last voter", only.removing, "s1")
        grown = base.adding(parseMember("s3", "h", "3", voter=False))
        self.assertEqual(grown.voters(), {"s1", "s2"})
        self.assertEqual(grown.promoting("s3").voters(), {"s1", "s2", "s3"})
        self.assertRaises(MembershipError, parseMember, "s3", "h", "70000")
        self.assertRaises(MembershipError, parseMember, "s3", "", "1")

    def test_describe(self) -> None:
        """C{members} answers a JSON list of name, host, port and vote."""
        self.assertEqual(
            Membership((Member("s1", "h", 1, voter=False),)).describe(),
            '[{"name": "s1", "host": "h", "port": 1, "voter": false}]',
        )


class ChangeRuleTests(SynchronousTestCase):
    """
    A leader changes one server at a time, and only once it knows the
    latest committed membership.  Reference: dissertation section 4.2 and
    Ongaro's 2015 raft-dev note on single-server changes.
    """

    def test_onlyALeader(self) -> None:
        """A follower changes no membership."""
        core = makeCore()
        from txraft.core import NotLeaderError

        self.assertRaises(NotLeaderError, core.changeMembership, voters("a", "b"))
        core.step("b", AppendEntries(1, 0, 0, (), 0))
        for change, argument in (
            (core.changeMembership, voters("a", "b")),
            (core.transferLeadership, "c"),
        ):
            error = self.assertRaises(NotLeaderError, change, argument)
            self.assertEqual(error.leaderId, "b")

    def test_leaderMustCommitItsTermFirst(self) -> None:
        """
        A new leader whose no-op has not committed refuses a change: it may
        not yet know of a committed membership of an earlier term.
        """
        core = makeCore()
        makeLeader(core)
        error = self.assertRaises(LeaderNotReadyError, core.changeMembership, voters("a", "b"))
        self.assertEqual(str(error), "the leader has not yet committed an entry of its term")
        core.step("b", AppendEntriesResponse(core.currentTerm, True, matchIndex=1))
        self.assertEqual(core.commitIndex, 1)
        ready = core.changeMembership(voters("a", "b"))
        self.assertEqual(ready.entries, [Entry(2, 1, "membership voter a a 1 voter b b 1")])

    def test_oneChangeAtATime(self) -> None:
        """
        While a membership entry is uncommitted, another change is refused
        with the words clients see; once it commits, the next may start.
        """
        core = makeCore()
        makeLeader(core)
        core.step("b", AppendEntriesResponse(core.currentTerm, True, matchIndex=1))
        core.changeMembership(withLearner(voters("a", "b", "c"), "d"))
        core.persisted(2)
        error = self.assertRaises(
            ChangeInProgressError, core.changeMembership, voters("a", "b", "c")
        )
        self.assertEqual(str(error), "a membership change is in progress")
        core.step("b", AppendEntriesResponse(core.currentTerm, True, matchIndex=2))
        self.assertEqual(core.commitIndex, 2)
        core.changeMembership(voters("a", "b", "c"))

    def test_singleServerOnly(self) -> None:
        """
        Two servers added, one added and one removed, none changed, or an
        address changed along with an addition: not one server's change.
        """
        core = makeCore()
        makeLeader(core)
        core.step("b", AppendEntriesResponse(core.currentTerm, True, matchIndex=1))
        moved = Membership((Member("a", "a", 1), Member("b", "b", 1), Member("c", "x", 1)))
        for membership in (
            voters("a", "b", "c", "d", "e"),
            voters("a", "b", "d"),
            voters("a", "b", "c"),
            moved.adding(Member("d", "d", 1)),
        ):
            error = self.assertRaises(MembershipError, core.changeMembership, membership)
            self.assertEqual(str(error), "a membership change adds, removes or changes one server")
        self.assertEqual(core.log.lastIndex, 1)

    def test_clientCannotProposeMembership(self) -> None:
        """A membership entry only comes from L{RaftCore.changeMembership}."""
        core = makeCore()
        makeLeader(core)
        error = self.assertRaises(ValueError, core.propose, ["membership voter a a 1"])
        self.assertEqual(str(error), "a membership changes through changeMembership")


class NewestMembershipTests(SynchronousTestCase):
    """
    A server uses the newest membership in its log, committed or not.
    Reference: dissertation section 4.1.
    """

    def test_followerUsesUncommittedEntry(self) -> None:
        """
        A follower takes a membership as soon as the entry is in its log, and
        goes back to the one before if that entry is overwritten.
        """
        core = makeCore("b", terms=[1])
        grown = withLearner(voters("a", "b", "c"), "d")
        core.step("a", AppendEntries(1, 1, 1, (Entry(2, 1, grown.encode()),), 1))
        self.assertEqual((core.membership, core.membershipIndex), (grown, 2))
        self.assertEqual(core.peers, ("a", "c", "d"))
        core.step("a", AppendEntries(2, 1, 1, (Entry(2, 2, "set x 1"),), 1))
        self.assertEqual((core.membership, core.membershipIndex), (voters("a", "b", "c"), 0))

    def test_overwrittenChangeFallsBackToTheOneBefore(self) -> None:
        """
        A membership entry overwritten by a new leader gives way to the
        membership entry before it, which came in an earlier append, not to
        the bootstrap membership.
        """
        core = makeCore("b", terms=[1])
        grown = withLearner(voters("a", "b", "c"), "d")
        core.step("a", AppendEntries(1, 1, 1, (Entry(2, 1, grown.encode()),), 2))
        promoted = grown.promoting("d")
        core.step("a", AppendEntries(1, 2, 1, (Entry(3, 1, promoted.encode()),), 2))
        self.assertEqual((core.membership, core.membershipIndex), (promoted, 3))
        core.step("c", AppendEntries(2, 2, 1, (Entry(3, 2, "set x 1"),), 2))
        self.assertEqual((core.membership, core.membershipIndex), (grown, 2))

    def test_recoveredFromLog(self) -> None:
        """A core started from a log takes the newest membership entry in it."""
        shrunk = voters("a", "b")
        core = RaftCore(
            "a",
            membership=voters("a", "b", "c"),
            entries=[Entry(1, 1, "noop"), Entry(2, 1, shrunk.encode()), Entry(3, 1, "x")],
        )
        self.assertEqual((core.membership, core.membershipIndex, core.quorum()), (shrunk, 2, 2))
        self.assertEqual(core.membershipAt(1), voters("a", "b", "c"))

    def test_votesOfNonVotersNotCounted(self) -> None:
        """
        A candidate counts grants from the voters of its newest membership
        only: a learner's grant, or a stranger's, does not elect it.
        """
        core = RaftCore(
            "a",
            membership=withLearner(voters("a", "b", "c"), "d"),
            electionTicks=(10, 20),
            heartbeatTicks=3,
            preVote=False,
            checkQuorum=False,
        )
        while core.role != CANDIDATE:
            ready = core.tick()
        self.assertEqual(sorted(peer for peer, _ in ready.messages), ["b", "c"])
        core.step("d", RequestVoteResponse(1, True))
        core.step("z", RequestVoteResponse(1, True))
        self.assertEqual(core.role, CANDIDATE)
        core.step("c", RequestVoteResponse(1, True))
        self.assertEqual(core.role, LEADER)

    def test_nonVotersNeverCampaign(self) -> None:
        """
        A learner, a server removed from the membership and one waiting to
        join never start an election, however long they hear nothing.
        """
        learner = RaftCore("d", membership=withLearner(voters("a", "b", "c"), "d"))
        removed = RaftCore("d", membership=voters("a", "b", "c"))
        waiting = RaftCore("d", membership=Membership())
        for core in (learner, removed, waiting):
            for _ in range(1000):
                self.assertEqual(core.tick().messages, [])
            self.assertEqual((core.role, core.currentTerm), (FOLLOWER, 0))

    def test_strangersHeard(self) -> None:
        """
        A server takes AppendEntries from a leader its log does not know
        yet (a server added in an entry it has not received).
        """
        core = RaftCore("d", membership=Membership())
        ready = core.step("x", AppendEntries(1, 0, 0, (Entry(1, 1, "noop"),), 0))
        self.assertEqual(ready.reply, AppendEntriesResponse(1, True, matchIndex=1))
        self.assertEqual(core.leaderId, "x")


class ClusterChangeTests(SynchronousTestCase):
    """Membership changes in a running cluster of cores, with every safety check on."""

    def test_learnerGetsTheLogButNeverCounts(self) -> None:
        """
        A learner receives every entry, but an entry that only the leader
        and the learner hold does not commit.
        """
        net = RaftNetwork(FOUR, joining=["d"])
        electedWithNoop(net)
        entry = change(net, "a", withLearner(voters("a", "b", "c"), "d"))
        settle(net)
        self.assertEqual(net["d"].membership, net["a"].membership)
        self.assertGreaterEqual(net["d"].commitIndex, entry.index)
        net.cut("a", "b")
        net.cut("a", "c")
        (written,) = net.propose("a", ["set x 1"])
        settle(net, 1)
        self.assertEqual(net["d"].log.lastIndex, written.index)
        self.assertLess(net["a"].commitIndex, written.index)

    def test_growThreeToFive(self) -> None:
        """
        Servers join as learners, are made voters one at a time, and then
        count: with five voters an entry needs three of them.
        """
        net = RaftNetwork(FOUR + ("e",), joining=["d", "e"])
        electedWithNoop(net)
        membership = voters("a", "b", "c")
        for name in ("d", "e"):
            membership = withLearner(membership, name)
            change(net, "a", membership)
            settle(net)
            membership = membership.promoting(name)
            entry = change(net, "a", membership)
            settle(net)
            self.assertGreaterEqual(net["a"].commitIndex, entry.index)
        self.assertEqual(net["a"].quorum(), 3)
        self.assertEqual({net[n].membership for n in net.names}, {membership})
        for name in ("c", "d", "e"):
            net.isolate(name)
        (entry,) = net.propose("a", ["set y 2"])
        settle(net)
        self.assertLess(net["a"].commitIndex, entry.index)
        net.heal()
        settle(net)
        self.assertGreaterEqual(net["a"].commitIndex, entry.index)

    def test_removedLeaderStepsDownAfterCommit(self) -> None:
        """
        A leader that removes itself replicates the new membership, commits
        it without counting itself, then steps down and hands over at once:
        the most up-to-date voter is told to campaign, and leads before any
        election timer of the others runs out.
        """
        net = RaftNetwork(THREE_NAMES)
        leader = electedWithNoop(net)
        entry = change(net, "a", voters("b", "c"))
        self.assertEqual(leader.role, LEADER)
        self.assertEqual(leader.quorum(), 2)
        net.deliver()
        self.assertEqual(leader.role, FOLLOWER)
        self.assertGreaterEqual(leader.commitIndex, entry.index)
        net.deliver()
        self.assertIn(net.leader(), ("b", "c"))
        self.assertEqual(net[net.leader()].currentTerm, 2)
        for _ in range(200):
            self.assertEqual(net["a"].tick().messages, [])
        self.assertEqual(net["a"].role, FOLLOWER)

    def test_removedLeaderStepsDownOnAnswerOfLaggingFollower(self) -> None:
        """
        A leader that removed itself may commit the change on the answer of
        a follower it still has entries to send (a late answer, while it
        probes that follower): it steps down there and then, and sends
        that follower nothing more as a leader; the up-to-date voter is
        told to take over.  (Found by the simulation with membership
        changes, C{Simulation(217, authenticate=False, membership=True)}:
        the leader went on to send to the follower whose progress it had
        just dropped, and the step raised KeyError.)
        Reference: dissertation section 4.2.2.
        """
        a = makeCore("a", THREE_NAMES)
        makeLeader(a)
        for peer in ("b", "c"):
            a.step(peer, AppendEntriesResponse(a.currentTerm, True, matchIndex=1))
        self.assertEqual(a.commitIndex, 1)
        (removal,) = a.changeMembership(voters("b", "c")).entries
        (write,) = a.propose(["set x 1"]).entries
        a.step("c", AppendEntriesResponse(a.currentTerm, True, matchIndex=write.index))
        # b refuses an append (its answers were lost), so a probes it again...
        a.step(
            "b",
            AppendEntriesResponse(
                a.currentTerm, False, rejectedIndex=removal.index, hintIndex=1, hintTerm=1
            ),
        )
        self.assertTrue(a.progress("b").probing)
        # ...when b's late answer to the removal arrives, and commits it.
        ready = a.step("b", AppendEntriesResponse(a.currentTerm, True, matchIndex=removal.index))
        self.assertEqual(a.role, FOLLOWER)
        self.assertEqual([e.index for e in ready.committed], [removal.index])
        self.assertEqual([(peer, m.timeoutNow) for peer, m in ready.messages], [("c", True)])

    def test_removedLeaderStillNeededUntilCommit(self) -> None:
        """
        A leader that removes itself from two servers and loses its
        leadership before the other holds the change is still needed: the
        other cannot win without its vote, which it refuses for a shorter
        log.  So it campaigns, without counting its own vote, leads again,
        commits the change with the other's copy, and hands over to it.
        (Found by the simulation with membership changes and one voter
        allowed: the cluster never elected a leader again.)
        Reference: dissertation section 4.2.2 and Figure 4.6 ("a server
        that is not part of its own latest configuration should still start
        new elections, as it might still be needed until the Cnew entry is
        committed").
        """
        net = RaftNetwork(("a", "b"), preVote=True, checkQuorum=True)
        electedWithNoop(net)
        net.cut("a", "b")
        entry = change(net, "a", voters("b"))
        net.crash("a")
        a = net.restart("a")
        net.heal()
        self.assertFalse(a.isVoter())
        self.assertLess(a.commitIndex, entry.index)
        for _ in range(200):
            net.tick()
            net.deliver()
            if net.leader() == "b":
                break
        self.assertEqual(net.leader(), "b")
        self.assertIn("a", net.leaders.values())
        self.assertGreaterEqual(net["b"].commitIndex, entry.index)
        self.assertEqual(net["b"].membership, voters("b"))
        for _ in range(100):
            self.assertEqual(a.tick().messages, [])

    def test_removedLeaderDoesNotCountItself(self) -> None:
        """
        A leader removing itself from a cluster of three needs both other
        servers for the new membership, not itself and one of them.
        """
        net = RaftNetwork(THREE_NAMES)
        electedWithNoop(net)
        net.cut("a", "c")
        entry = change(net, "a", voters("b", "c"))
        settle(net)
        self.assertLess(net["a"].commitIndex, entry.index)
        self.assertEqual(net["a"].role, LEADER)

    def test_removedServerCannotDisturb(self) -> None:
        """
        A removed server that never learnt of its removal cannot depose the
        leader: its pre-votes are refused while the others hear from their
        leader, and nobody's term moves.
        """
        net = RaftNetwork(FOUR, preVote=True, checkQuorum=True)
        electedWithNoop(net)
        net.isolate("d")
        entry = change(net, "a", voters("a", "b", "c"))
        settle(net)
        self.assertGreaterEqual(net["a"].commitIndex, entry.index)
        net.heal()
        for _ in range(100):
            net.tick()
            net.deliver()
        self.assertEqual(net.leader(), "a")
        self.assertEqual(net["a"].currentTerm, 1)

    def test_joiningServerInstallsSnapshotWithMembership(self) -> None:
        """
        A server added after the leader compacted its log gets the
        snapshot, and with it the membership of its time; a restart from
        its disk keeps it.
        """
        net = RaftNetwork(FOUR, joining=["d"])
        electedWithNoop(net)
        learner = withLearner(voters("a", "b", "c"), "d")
        net.isolate("d")
        entry = change(net, "a", learner)
        net.propose("a", ["set x 1"])
        settle(net)
        net.compact("a", net["a"].commitIndex)
        self.assertEqual(net["a"].snapshot.membership, learner.encode())
        net.heal()
        settle(net)
        self.assertEqual(net["d"].log.compactedIndex, net["a"].log.compactedIndex)
        self.assertEqual(net["d"].membership, learner)
        self.assertGreaterEqual(net["d"].membershipIndex, entry.index)
        net.crash("d")
        self.assertEqual(net.restart("d").membership, learner)


THREE_NAMES = ("a", "b", "c")


class TransferTests(SynchronousTestCase):
    """Leadership transfer with TimeoutNow.  Reference: dissertation section 3.10."""

    def test_transferToUpToDateVoter(self) -> None:
        """
        The leader tells an up-to-date voter to campaign now; it wins the
        next term even though the others hear from their leader (their
        lease does not hold against a transfer), and the old leader
        follows it.
        """
        net = RaftNetwork(THREE_NAMES, preVote=True, checkQuorum=True)
        electedWithNoop(net)
        net.handle("a", net["a"].transferLeadership("b"))
        self.assertEqual(net["a"].leadTransferee, "b")
        error = self.assertRaises(TransferringError, net["a"].propose, ["set x 1"])
        self.assertEqual(error.args, ("b",))
        error = self.assertRaises(TransferringError, net["a"].changeMembership, voters("a", "b"))
        self.assertEqual(error.args, ("b",))
        net.deliver()
        self.assertEqual(net.leader(), "b")
        self.assertEqual(net["b"].currentTerm, 2)
        self.assertEqual((net["a"].role, net["a"].leadTransferee), (FOLLOWER, None))

    def test_laggingTargetCatchesUpFirst(self) -> None:
        """
        A target that lacks entries gets them first; TimeoutNow follows
        only once its log matches the leader's.
        """
        net = RaftNetwork(THREE_NAMES)
        electedWithNoop(net)
        net.cut("a", "b")
        net.propose("a", ["set x 1", "set y 2"])
        settle(net)
        net.heal()
        net.handle("a", net["a"].transferLeadership("b"))
        (first,) = [e for e in net.queue if e.dst == "b"]
        self.assertFalse(first.message.timeoutNow)
        self.assertEqual(net["b"].role, FOLLOWER)
        net.deliver()
        self.assertEqual(net.leader(), "b")
        self.assertEqual(net["b"].log.lastIndex, net["a"].log.lastIndex)

    def test_abandonedAfterElectionTimeout(self) -> None:
        """
        A transfer to an unreachable target is given up after an election
        timeout; the leader takes commands again.
        """
        net = RaftNetwork(THREE_NAMES)
        electedWithNoop(net)
        net.cut("a", "b")
        net.handle("a", net["a"].transferLeadership("b"))
        for _ in range(net.electionTicks[0] - 1):
            net.tick("a")
        self.assertEqual(net["a"].leadTransferee, "b")
        net.tick("a")
        self.assertIsNone(net["a"].leadTransferee)
        net.propose("a", ["set x 1"])

    def test_nobodyToHandOverToAtFirst(self) -> None:
        """A core that never led hands over to nobody: C{leadTransferee} is L{None}."""
        self.assertIsNone(makeCore().leadTransferee)

    def test_onlyToAnotherVoter(self) -> None:
        """The target must be another voter: not the leader, a learner, or a stranger."""
        core = makeCore()
        makeLeader(core)
        core.step("b", AppendEntriesResponse(core.currentTerm, True, matchIndex=1))
        core.changeMembership(withLearner(voters("a", "b", "c"), "d"))
        for target in ("a", "d", "z"):
            self.assertRaises(MembershipError, core.transferLeadership, target)

    def test_timeoutNowNeedsCaughtUpVoter(self) -> None:
        """
        A follower campaigns on TimeoutNow only if its log holds the
        leader's (the leader sends it with its last entry as prevLogIndex),
        and only if it votes; it skips the pre-vote.
        """
        follower = makeCore("b", terms=[1, 1], preVote=True)
        ready = follower.step("a", AppendEntries(1, 3, 1, (), 1, timeoutNow=True))
        self.assertEqual(follower.role, FOLLOWER)
        ready = follower.step("a", AppendEntries(1, 2, 1, (), 2, timeoutNow=True))
        self.assertEqual((follower.role, follower.currentTerm), (CANDIDATE, 2))
        self.assertIn(("a", RequestVote(2, 2, 1, transfer=True)), ready.messages)
        learner = RaftCore("d", membership=withLearner(voters("a", "b", "c"), "d"))
        learner.step("a", AppendEntries(1, 0, 0, (), 0, timeoutNow=True))
        self.assertNotIn(learner.role, (CANDIDATE, PRECANDIDATE))

    def test_transferVoteBreaksLeaseOnlyWhenMarked(self) -> None:
        """
        A voter that hears from its leader refuses an ordinary vote request
        but grants one marked as a transfer.
        """
        voter = makeCore("c", terms=[1], checkQuorum=True)
        voter.step("a", AppendEntries(1, 1, 1, (), 1))
        refused = voter.step("b", RequestVote(2, 1, 1))
        self.assertEqual(refused.reply, RequestVoteResponse(1, False))
        granted = voter.step("b", RequestVote(2, 1, 1, transfer=True))
        self.assertEqual(granted.reply, RequestVoteResponse(2, True))


class MoreRuleTests(SynchronousTestCase):
    """Corners of the membership rules that the cluster tests above do not reach."""

    def test_noClusterWithoutVoter(self) -> None:
        """The only voter cannot make itself a learner: a cluster needs a voter."""
        core = makeCore("a", ("a",))
        while core.role != LEADER:
            core.tick()
        core.persisted(1)
        self.assertEqual(core.commitIndex, 1)
        alone = Membership((Member("a", "a", 1, voter=False),))
        error = self.assertRaises(MembershipError, core.changeMembership, alone)
        self.assertEqual(str(error), "a cluster needs a voter")

    def test_transferRetriedAfterGivingUp(self) -> None:
        """A transfer given up can be asked again, and TimeoutNow is sent again."""
        net = RaftNetwork(THREE_NAMES)
        electedWithNoop(net)
        net.cut("a", "b")
        for _ in range(2):
            net.handle("a", net["a"].transferLeadership("b"))
            net.tick("a", times=net.electionTicks[0])
            self.assertIsNone(net["a"].leadTransferee)
        net.heal()
        net.queue.clear()
        net.handle("a", net["a"].transferLeadership("b"))
        self.assertTrue(any(e.message.timeoutNow for e in net.queue if e.dst == "b"))
        net.deliver()
        self.assertEqual(net.leader(), "b")

    def test_removedLeaderHandsToTheUpToDate(self) -> None:
        """
        A leader leaving a cluster where one voter lags tells the one whose
        log matches its own to take over, not the laggard.
        """
        net = RaftNetwork(FOUR)
        electedWithNoop(net)
        net.cut("a", "d")
        change(net, "a", voters("b", "c", "d"))
        net.deliver()
        handedTo = [e.dst for e in net.sent if getattr(e.message, "timeoutNow", False)]
        self.assertEqual(handedTo, [handedTo[0]])
        self.assertIn(handedTo[0], ("b", "c"))
        self.assertEqual(net.leader(), handedTo[0])

    def test_removedPeerGetsNothing(self) -> None:
        """Once a follower is removed, the leader sends it nothing more."""
        net = RaftNetwork(FOUR)
        electedWithNoop(net)
        change(net, "a", voters("a", "b", "c"))
        net.deliver()
        net.queue.clear()
        net.tick("a", times=3 * net.heartbeatTicks)
        self.assertEqual({e.dst for e in net.queue}, {"b", "c"})

    def test_snapshotOverridesConflictingMembership(self) -> None:
        """
        A follower holding another leader's uncommitted membership entry
        takes the membership of a snapshot that replaces its whole log.
        """
        core = makeCore("b", terms=[1])
        stale = withLearner(voters("a", "b", "c"), "d")
        core.step("c", AppendEntries(1, 1, 1, (Entry(2, 1, stale.encode()),), 1))
        self.assertEqual(core.membership, stale)
        current = voters("a", "b")
        ready = core.step(
            "a", InstallSnapshot(2, 5, 2, 0, b"x", done=True, membership=current.encode())
        )
        self.assertEqual(ready.snapshot.membership, current.encode())
        self.assertEqual((core.membership, core.membershipIndex), (current, 5))

    def test_snapshotWithoutMembershipMeansBootstrap(self) -> None:
        """
        A snapshot that records no membership covers no membership entry:
        a follower installing it runs on its bootstrap membership again.
        """
        core = makeCore("b", terms=[1])
        core.step("a", AppendEntries(1, 1, 1, (Entry(2, 1, voters("a", "b").encode()),), 1))
        core.step("a", InstallSnapshot(2, 5, 2, 0, b"x", done=True))
        self.assertEqual(core.membership, voters("a", "b", "c"))

    def test_lostTimeoutNowSentAgain(self) -> None:
        """
        A TimeoutNow that is lost is sent again with the target's next
        answer, and the transfer still happens before it is given up.
        """
        net = RaftNetwork(THREE_NAMES)
        electedWithNoop(net)
        net.handle("a", net["a"].transferLeadership("b"))
        lost = net.drop(lambda e: e.dst == "b" and e.message.timeoutNow)
        self.assertEqual(len(lost), 1)
        for _ in range(net.heartbeatTicks):
            net.tick("a")
            net.deliver()
        self.assertEqual(net.leader(), "b")


class SnapshotMembershipTests(SynchronousTestCase):
    """
    A follower installing a snapshot keeps the membership entries of the
    log it keeps after the snapshot, and only those (dissertation sections
    4.1 and 5.3).
    """

    def test_matchingSuffixKeepsItsMembership(self) -> None:
        """
        A snapshot whose last entry the follower holds leaves the entries
        after it, so a membership entry among them stays the newest; the
        membership as of the snapshot's own index is the snapshot's.
        """
        core = makeCore("b", terms=[1])
        grown = withLearner(voters("a", "b", "c"), "d")
        entries = (Entry(2, 1, "set x 1"), Entry(3, 1, grown.encode()))
        core.step("a", AppendEntries(1, 1, 1, entries, 1))
        then = voters("a", "b", "c")
        ready = core.step(
            "a", InstallSnapshot(1, 2, 1, 0, b"x", done=True, membership=then.encode())
        )
        self.assertIsNotNone(ready.snapshot)
        self.assertEqual((core.log.compactedIndex, core.log.lastIndex), (2, 3))
        self.assertEqual((core.membership, core.membershipIndex), (grown, 3))
        self.assertEqual(core.membershipAt(2), then)
        error = self.assertRaises(ValueError, core.membershipAt, 1)
        self.assertEqual(str(error), "entry 1 is compacted away")

    def test_compactionKeepsAMembershipEntryItCovers(self) -> None:
        """
        A compaction that keeps entries its snapshot covers keeps a
        membership entry among them as the newest; the snapshot records it
        as the membership of its time, and the one before is still known
        back to the log's new base.
        """
        core = makeCore("b", terms=[1], trailingEntries=3)
        grown = withLearner(voters("a", "b", "c"), "d")
        entries = (
            Entry(2, 1, "set x 1"),
            Entry(3, 1, grown.encode()),
            Entry(4, 1, "set y 1"),
            Entry(5, 1, "set z 1"),
        )
        core.step("a", AppendEntries(1, 1, 1, entries, 5))
        self.assertEqual(core.compact(Snapshot(5, 1, b"x")), 2)
        self.assertEqual((core.log.compactedIndex, core.snapshotIndex), (2, 5))
        self.assertEqual((core.membership, core.membershipIndex), (grown, 3))
        self.assertEqual(core.snapshot.membership, grown.encode())
        self.assertEqual(core.membershipAt(2), voters("a", "b", "c"))

    def test_conflictingSuffixTakesItsMembershipAlong(self) -> None:
        """
        A snapshot that conflicts with the follower's log replaces all of
        it: a membership entry after the snapshot's index goes too.
        """
        core = makeCore("b", terms=[1])
        stale = withLearner(voters("a", "b", "c"), "d")
        entries = (Entry(2, 1, "set x 1"), Entry(3, 1, stale.encode()))
        core.step("c", AppendEntries(1, 1, 1, entries, 1))
        current = voters("a", "b")
        core.step("a", InstallSnapshot(2, 2, 2, 0, b"x", done=True, membership=current.encode()))
        self.assertEqual(core.log.lastIndex, 2)
        self.assertEqual((core.membership, core.membershipIndex), (current, 2))

    def test_snapshotWithInvalidMembershipRefused(self) -> None:
        """
        A snapshot whose membership does not parse is not installed; the
        follower answers that it holds none of it, so the leader starts over.
        """
        core = makeCore("b", terms=[1])
        ready = core.step(
            "a", InstallSnapshot(1, 5, 1, 0, b"x", done=True, membership="membership boss a a 1")
        )
        self.assertIsNone(ready.snapshot)
        self.assertEqual(ready.reply, InstallSnapshotResponse(1, 5, 0))
        self.assertEqual((core.log.compactedIndex, core.membership), (0, voters("a", "b", "c")))

    def test_leaderIgnoresSnapshotAnswerOfStranger(self) -> None:
        """A leader ignores an InstallSnapshot answer from a server it does not replicate to."""
        core = makeCore()
        makeLeader(core)
        ready = core.step("d", InstallSnapshotResponse(core.currentTerm, 5, 0, matchIndex=5))
        self.assertEqual((ready.messages, core.role, core.commitIndex), ([], LEADER, 0))

    def test_removedServerStillNeededWhenChangesAreAdjacent(self) -> None:
        """
        A server added by one change and removed by the very next entry
        still campaigns while the removal is uncommitted: the membership
        before the removal, at the entry just before it, names it a voter
        (section 4.2.2).
        """
        core = RaftCore("c", membership=voters("a", "b"), preVote=False)
        entries = (
            Entry(1, 1, "noop"),
            Entry(2, 1, voters("a", "b", "c").encode()),
            Entry(3, 1, voters("a", "b").encode()),
        )
        core.step("a", AppendEntries(1, 0, 0, entries, 2))
        self.assertEqual((core.isVoter(), core.commitIndex), (False, 2))
        for _ in range(2 * core.electionTicks[1]):
            core.tick()
        self.assertEqual(core.role, CANDIDATE)

    def test_timeoutNowIsAFullHeartbeat(self) -> None:
        """
        TimeoutNow carries what every heartbeat carries: the leader's commit
        index and its read round, which the target's answer confirms.
        """
        net = RaftNetwork(THREE_NAMES)
        a = electedWithNoop(net)
        net.handle("a", a.read(["r"]))
        (readRound,) = {e.message.readRound for e in net.queue if e.dst == "b"}
        self.assertGreater(readRound, 0)
        ready = a.transferLeadership("b")
        ((peer, message),) = ready.messages
        self.assertEqual((peer, message.timeoutNow), ("b", True))
        self.assertEqual((message.leaderCommit, message.readRound), (a.commitIndex, readRound))
