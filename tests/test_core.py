"""
Tests for L{txraft.core}: every rule of Figure 2 of the Raft paper (Ongaro &
Ousterhout, "In Search of an Understandable Consensus Algorithm", 2014), on
the pure core, with logical ticks and seeded randomness only.

Single-core tests step one L{RaftCore} with hand-made messages; cluster
tests use L{tests.raftnet.RaftNetwork}, which also checks the safety
properties of Figure 3 after every L{Ready}.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import attrs
from twisted.trial.unittest import SynchronousTestCase

import txraft.core
from tests.raftnet import (
    Envelope,
    InvariantError,
    RaftNetwork,
    checkLogMatching,
    decodeApplied,
    encodeApplied,
    entriesOf,
    makeEntries,
    termsOf,
)
from txraft.core import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    NOOP,
    PRECANDIDATE,
    NotLeaderError,
    RaftCore,
    Ready,
)
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
)

THREE = ("a", "b", "c")
FIVE = ("a", "b", "c", "d", "e")


def makeCore(
    name: str = "a",
    names: Sequence[str] = THREE,
    *,
    seed: int = 0,
    electionTicks: tuple[int, int] = (10, 20),
    heartbeatTicks: int = 3,
    terms: Sequence[int] = (),
    hardState: HardState | None = None,
    maxAppendBytes: int | None = None,
    maxInflightAppends: int | None = None,
    preVote: bool = False,
    checkQuorum: bool = False,
    trailingEntries: int = 0,
) -> RaftCore:
    """
    A core with a seeded timer and a log with the given C{terms}, running
    Figure 2's algorithm unless PreVote or CheckQuorum are asked for, and
    compacting every entry a snapshot covers unless C{trailingEntries}.
    """
    extra: dict[str, object] = {
        "preVote": preVote,
        "checkQuorum": checkQuorum,
        "trailingEntries": trailingEntries,
    }
    if maxAppendBytes is not None:
        extra["maxAppendBytes"] = maxAppendBytes
    if maxInflightAppends is not None:
        extra["maxInflightAppends"] = maxInflightAppends
    return RaftCore(
        name,
        names,
        hardState=hardState if hardState is not None else HardState(max(terms, default=0)),
        entries=makeEntries(terms),
        electionTicks=electionTicks,
        heartbeatTicks=heartbeatTicks,
        rng=random.Random(seed),
        **extra,
    )


def ticksUntil(core: RaftCore, role: str, limit: int = 1000) -> tuple[int, Ready]:
    """Tick C{core} until it has C{role}; return the ticks used and the last L{Ready}."""
    for count in range(1, limit + 1):
        ready = core.tick()
        if core.role == role:
            return count, ready
    raise AssertionError(f"{core.name} not {role} after {limit} ticks")


def makeLeader(core: RaftCore) -> Ready:
    """
    Let C{core} time out and receive every vote; return the L{Ready} that
    made it leader.  Its no-op is then durable (L{RaftCore.persisted}), as
    the driver's next turn makes it.
    """
    ticksUntil(core, CANDIDATE)
    for peer in core.peers:
        ready = core.step(peer, RequestVoteResponse(core.currentTerm, True))
        if core.role == LEADER:
            core.persisted(core.log.lastIndex)
            return ready
    raise AssertionError("no majority")


def appendsIn(ready: Ready) -> dict[str, AppendEntries]:
    """The AppendEntries of C{ready.messages}, by destination."""
    return {peer: m for peer, m in ready.messages if isinstance(m, AppendEntries)}


def isAppend(envelope: Envelope) -> bool:
    """Whether C{envelope} carries an AppendEntries."""
    return isinstance(envelope.message, AppendEntries)


class ElectionTests(SynchronousTestCase):
    """
    Leader election.  Reference: section 5.2.
    """

    def test_followerTimesOutWithinRange(self) -> None:
        """
        A follower that hears from no leader becomes a candidate after a
        timeout drawn from [low, high) ticks; it increments its term, votes
        for itself, persists both in the same L{Ready}, and sends RequestVote
        with its last log index and term to every other server.
        Reference: section 5.2, Figure 2 (Followers, Candidates).
        """
        for seed in range(30):
            core = makeCore(names=FIVE, seed=seed, terms=[1, 1, 2], electionTicks=(10, 20))
            ticks, ready = ticksUntil(core, CANDIDATE)
            self.assertGreaterEqual(ticks, 10)
            self.assertLess(ticks, 20)
            self.assertEqual((core.currentTerm, core.votedFor), (3, "a"))
            self.assertEqual(ready.hardState, HardState(3, "a"))
            self.assertEqual(
                ready.messages, [(peer, RequestVote(3, 3, 2)) for peer in ("b", "c", "d", "e")]
            )

    def test_timeoutsDifferAcrossSeeds(self) -> None:
        """
        Election timeouts are randomized so that servers rarely time out
        together; with different seeds they differ.
        Reference: section 5.2 ("randomized election timeouts").
        """
        ticks = {ticksUntil(makeCore(seed=seed), CANDIDATE)[0] for seed in range(20)}
        self.assertGreater(len(ticks), 3)
        self.assertTrue(ticks <= set(range(10, 20)), ticks)

    def test_timeoutRedrawnEachElection(self) -> None:
        """
        A candidate that neither wins nor loses starts a new election, in the
        next term, after a fresh randomized timeout.
        Reference: section 5.2 (third outcome of an election).
        """
        core = makeCore(seed=3)
        ticksUntil(core, CANDIDATE)
        gaps = []
        for term in range(2, 12):
            count = 0
            while core.currentTerm < term:
                count += 1
                ready = core.tick()
            self.assertEqual(core.role, CANDIDATE)
            self.assertEqual(ready.hardState, HardState(term, "a"))
            gaps.append(count)
        self.assertTrue(all(10 <= gap < 20 for gap in gaps), gaps)
        self.assertGreater(len(set(gaps)), 1)

    def test_candidateWinsWithMajority(self) -> None:
        """
        A candidate becomes leader once it holds votes from a majority of the
        cluster, itself included; refused votes do not count.  As leader it
        at once sends AppendEntries to every other server.
        Reference: section 5.2.
        """
        core = makeCore(names=FIVE)
        ticksUntil(core, CANDIDATE)
        term = core.currentTerm
        core.step("b", RequestVoteResponse(term, False))
        core.step("c", RequestVoteResponse(term, True))
        core.step("c", RequestVoteResponse(term, True))  # a duplicate is one vote
        self.assertEqual(core.role, CANDIDATE)
        ready = core.step("d", RequestVoteResponse(term, True))
        self.assertEqual((core.role, core.leaderId, core.currentTerm), (LEADER, "a", term))
        self.assertEqual(sorted(appendsIn(ready)), ["b", "c", "d", "e"])

    def test_splitVoteStartsNewElection(self) -> None:
        """
        When two candidates split the votes of a four-server cluster neither
        wins; one of them times out and wins a new election in a higher term.
        Reference: section 5.2 (split votes).
        """
        net = RaftNetwork(("a", "b", "c", "d"), seed=1)
        net.campaign("a")
        net.campaign("b")
        self.assertEqual((net["a"].currentTerm, net["b"].currentTerm), (1, 1))
        # c hears a first, d hears b first.
        net.drop(lambda e: (e.src, e.dst) in {("a", "d"), ("b", "c")})
        net.deliver()
        self.assertEqual(net["c"].votedFor, "a")
        self.assertEqual(net["d"].votedFor, "b")
        self.assertEqual([net[n].role for n in "ab"], [CANDIDATE, CANDIDATE])
        self.assertIsNone(net.leader())
        net.runUntil(lambda: net.leader() is not None, 100)
        self.assertEqual(net[net.leader()].currentTerm, 2)
        self.assertEqual(net.leaders, {2: net.leader()})

    def test_candidateStepsDownOnAppendEntriesOfSameTerm(self) -> None:
        """
        A candidate that receives AppendEntries from another server claiming
        leadership of its own term recognises that leader and returns to
        follower, and accepts the entries.
        Reference: section 5.2.
        """
        core = makeCore(terms=[1])
        ticksUntil(core, CANDIDATE)
        term = core.currentTerm
        ready = core.step("b", AppendEntries(term, 1, 1, (Entry(2, term, "x"),), 0))
        self.assertEqual((core.role, core.leaderId, core.currentTerm), (FOLLOWER, "b", term))
        self.assertEqual(core.votedFor, "a")
        self.assertEqual(ready.reply, AppendEntriesResponse(term, True, matchIndex=2))
        self.assertEqual(ready.entries, [Entry(2, term, "x")])

    def test_higherTermStepsDown(self) -> None:
        """
        Any server, whatever its role, that sees a term greater than its own in
        any request or response adopts that term, clears its vote, persists
        both, and becomes a follower; only AppendEntries names a leader.
        Reference: section 5.1, Figure 2 (Rules for Servers, All Servers).
        """
        messages = [
            RequestVote(9, 5, 2),
            RequestVoteResponse(9, False),
            AppendEntries(9, 0, 0, (), 0),
            AppendEntriesResponse(9, False),
            AppendEntriesResponse(9, True, matchIndex=1),
        ]
        for role in (FOLLOWER, CANDIDATE, LEADER):
            for message in messages:
                core = makeCore(terms=[1, 1])
                if role == CANDIDATE:
                    ticksUntil(core, CANDIDATE)
                elif role == LEADER:
                    makeLeader(core)
                ready = core.step("b", message)
                case = f"{role} stepping {message}"
                self.assertEqual((core.role, core.currentTerm), (FOLLOWER, 9), case)
                expectedVote = "b" if isinstance(message, RequestVote) else None
                self.assertEqual(ready.hardState, HardState(9, expectedVote), case)
                expectedLeader = "b" if isinstance(message, AppendEntries) else None
                self.assertEqual(core.leaderId, expectedLeader, case)
                self.assertRaises(NotLeaderError, core.propose, ["x"])

    def test_staleTermRequestRejected(self) -> None:
        """
        A request from a term before the receiver's is refused with the
        receiver's term, so that the stale sender steps down, and changes
        nothing; stale responses are ignored.
        Reference: section 5.1, Figure 2 (receiver implementation, step 1).
        """
        core = makeCore(terms=[1, 3], hardState=HardState(5, None))
        ready = core.step("b", RequestVote(4, 10, 4))
        self.assertEqual(ready.reply, RequestVoteResponse(5, False))
        self.assertIsNone(ready.hardState)
        ready = core.step("b", AppendEntries(4, 2, 3, (Entry(3, 4, "x"),), 2))
        self.assertEqual(ready.reply, AppendEntriesResponse(5, False))
        self.assertEqual((ready.entries, ready.committed, ready.truncateFrom), ([], [], None))
        self.assertEqual((core.log.lastIndex, core.commitIndex, core.leaderId), (2, 0, None))
        for response in [RequestVoteResponse(4, True), AppendEntriesResponse(4, True, 2)]:
            self.assertEqual(core.step("c", response), Ready())
        self.assertEqual((core.currentTerm, core.votedFor), (5, None))

    def test_staleLeaderStepsDownOnRefusal(self) -> None:
        """
        A deposed leader that sends AppendEntries to a server of a later term
        learns that term from the refusal and steps down.  (While isolated it
        still believes it leads: the core has no check-quorum.)
        Reference: section 5.1.
        """
        net = RaftNetwork(THREE)
        net.elect("a")
        net.isolate("a")
        net.runUntil(lambda: net.leader() not in (None, "a"), 100)
        self.assertEqual(net["a"].role, LEADER)
        net.heal()
        net.tick("a", times=net.heartbeatTicks)
        net.deliver()
        self.assertEqual(net["a"].role, FOLLOWER)
        self.assertEqual(net["a"].currentTerm, net[net.leader()].currentTerm)

    def test_singleNodeCluster(self) -> None:
        """
        A cluster of one is its own majority: it elects itself on its first
        timeout and commits each proposal as soon as the driver has made it
        durable (L{RaftCore.persisted}).  Reference: section 5.2, 5.3.
        """
        core = makeCore(names=("a",))
        _, ready = ticksUntil(core, LEADER)
        self.assertEqual(ready.messages, [])
        self.assertEqual(ready.committed, [])
        self.assertEqual(core.persisted(1).committed, [Entry(1, 1, NOOP)])
        ready = core.propose(["set x 1", "set y 2"])
        self.assertEqual(ready.entries, [Entry(2, 1, "set x 1"), Entry(3, 1, "set y 2")])
        self.assertEqual(ready.committed, [])
        self.assertEqual(core.persisted(3).committed, ready.entries)
        self.assertEqual(core.commitIndex, 3)
        for _ in range(50):
            self.assertEqual(core.tick(), Ready())
        self.assertEqual((core.role, core.currentTerm), (LEADER, 1))

    def test_leaderHoldsOffElections(self) -> None:
        """
        While the leader's heartbeats arrive, no follower times out: the
        same leader stays in the same term for many election timeouts.
        Reference: section 5.2.
        """
        net = RaftNetwork(FIVE, seed=4)
        net.elect("c")
        for _ in range(300):
            net.tick()
            net.deliver()
        self.assertEqual(net.leaders, {1: "c"})
        self.assertEqual([net[n].currentTerm for n in FIVE], [1] * 5)
        self.assertEqual([net[n].leaderId for n in FIVE], ["c"] * 5)


class VotingTests(SynchronousTestCase):
    """
    RequestVote receivers.  Reference: sections 5.2 and 5.4.1, Figure 2.
    """

    def test_oneVotePerTerm(self) -> None:
        """
        A server grants at most one vote per term, first come first served;
        the candidate it voted for may ask again (a retried request) and is
        granted again.
        Reference: section 5.2, Figure 2 (RequestVote receiver, step 2).
        """
        core = makeCore()
        self.assertEqual(core.step("b", RequestVote(1, 0, 0)).reply, RequestVoteResponse(1, True))
        self.assertEqual(core.step("c", RequestVote(1, 5, 5)).reply, RequestVoteResponse(1, False))
        self.assertEqual(core.step("b", RequestVote(1, 0, 0)).reply, RequestVoteResponse(1, True))
        self.assertEqual(core.votedFor, "b")
        # A new term brings a new vote.
        self.assertEqual(core.step("c", RequestVote(2, 0, 0)).reply, RequestVoteResponse(2, True))

    def test_candidatesAndLeadersVoteForThemselves(self) -> None:
        """
        A candidate has voted for itself in its term, so it refuses another
        candidate of the same term; so does a leader.
        Reference: section 5.2.
        """
        core = makeCore()
        ticksUntil(core, CANDIDATE)
        term = core.currentTerm
        ready = core.step("b", RequestVote(term, 9, 9))
        self.assertEqual(ready.reply, RequestVoteResponse(term, False))
        self.assertEqual(core.role, CANDIDATE)
        core.step("c", RequestVoteResponse(term, True))
        self.assertEqual(core.role, LEADER)
        ready = core.step("b", RequestVote(term, 9, 9))
        self.assertEqual(ready.reply, RequestVoteResponse(term, False))
        self.assertEqual(core.role, LEADER)

    def test_grantFromEarlierTermNotCounted(self) -> None:
        """
        A vote granted in an earlier term does not count in the current
        one: the voter may have voted for another candidate since, and two
        leaders would lead one term.  Here the grant b gave for term 1
        arrives once a has moved on to term 2, where b voted for c.
        Reference: section 5.2, Figure 2 (Candidates: "votes received from
        majority of servers" of the current term).
        """
        core = makeCore()
        ticksUntil(core, CANDIDATE)
        self.assertEqual(core.currentTerm, 1)
        for _ in range(100):
            core.tick()
            if core.currentTerm == 2:
                break
        self.assertEqual((core.role, core.currentTerm), (CANDIDATE, 2))
        core.step("b", RequestVoteResponse(1, True))
        self.assertEqual(core.role, CANDIDATE)
        # A grant of term 2 is counted.
        core.step("b", RequestVoteResponse(2, True))
        self.assertEqual(core.role, LEADER)

    def test_votePersistedWithReply(self) -> None:
        """
        A granted vote is in C{Ready.hardState} of the same L{Ready} as the
        reply granting it, so the driver makes it durable before answering.
        Reference: Figure 2 ("updated on stable storage before responding").
        """
        core = makeCore(hardState=HardState(3, None))
        ready = core.step("b", RequestVote(3, 0, 0))
        self.assertEqual(ready.reply, RequestVoteResponse(3, True))
        self.assertEqual(ready.hardState, HardState(3, "b"))
        ready = core.step("c", RequestVote(4, 0, 0))
        self.assertEqual(ready.reply, RequestVoteResponse(4, True))
        self.assertEqual(ready.hardState, HardState(4, "c"))
        # Re-granting the same vote changes nothing durable.
        ready = core.step("c", RequestVote(4, 0, 0))
        self.assertEqual((ready.reply, ready.hardState), (RequestVoteResponse(4, True), None))

    def test_upToDateCheck(self) -> None:
        """
        A vote is granted only to a candidate whose log is at least as
        up-to-date as the voter's: the later last term wins, and with equal
        last terms the longer log wins.
        Reference: section 5.4.1.
        """
        voterTerms = [1, 1, 2, 2]  # lastIndex 4, lastTerm 2
        cases = [
            ((4, 2), True),  # identical
            ((5, 2), True),  # same last term, longer
            ((3, 2), False),  # same last term, shorter
            ((1, 3), True),  # later last term, much shorter
            ((9, 1), False),  # earlier last term, much longer
            ((0, 0), False),  # empty log
        ]
        for (lastIndex, lastTerm), granted in cases:
            core = makeCore(terms=voterTerms, hardState=HardState(4, None))
            ready = core.step("b", RequestVote(5, lastIndex, lastTerm))
            self.assertEqual(ready.reply, RequestVoteResponse(5, granted), (lastIndex, lastTerm))
            self.assertEqual(core.votedFor, "b" if granted else None)

    def test_grantingVoteResetsElectionTimer(self) -> None:
        """
        A follower converts to candidate only if its timeout elapses without
        granting a vote (or hearing from a leader): granting restarts the
        timer, refusing in the same term does not.
        Reference: Figure 2 (Rules for Servers, Followers).
        """
        core = makeCore(electionTicks=(10, 11), hardState=HardState(2, None))
        for _ in range(9):
            core.tick()
        core.step("b", RequestVote(2, 0, 0))  # granted
        for _ in range(9):
            core.tick()
        self.assertEqual(core.role, FOLLOWER)
        core.step("c", RequestVote(2, 0, 0))  # refused: already voted for b
        core.tick()
        self.assertEqual((core.role, core.currentTerm), (CANDIDATE, 3))

    def test_refusedHigherTermVoteKeepsTimer(self) -> None:
        """
        A follower that adopts a higher term from a RequestVote it refuses
        (the candidate's log is behind) keeps its election timer running, so
        a candidate that can never win cannot hold off everyone else's
        elections.  Reference: Figure 2 (Rules for Servers, Followers).
        """
        core = makeCore(electionTicks=(10, 11), terms=[1, 1])
        for _ in range(9):
            core.tick()
        ready = core.step("b", RequestVote(5, 0, 0))
        self.assertEqual(ready.reply, RequestVoteResponse(5, False))
        core.tick()
        self.assertEqual((core.role, core.currentTerm), (CANDIDATE, 6))

    def test_recoveredVoteIsKept(self) -> None:
        """
        A server restarted with a persisted vote does not vote for anyone
        else in that term, but repeats its vote to the same candidate.
        Reference: Figure 2 (votedFor is persistent state).
        """
        core = makeCore(hardState=HardState(3, "b"))
        self.assertEqual(core.step("c", RequestVote(3, 9, 9)).reply, RequestVoteResponse(3, False))
        self.assertEqual(core.step("b", RequestVote(3, 0, 0)).reply, RequestVoteResponse(3, True))

    def test_restartedVoterDoesNotVoteTwice(self) -> None:
        """
        Through the network helper: a server that voted, crashed and was
        restarted from its persisted state refuses a rival of the same term.
        Reference: Figure 2, section 5.2.
        """
        net = RaftNetwork(THREE)
        net.campaign("a")
        net.deliver(hold=lambda e: e.dst == "c" or e.src == "c")
        self.assertEqual(net["b"].votedFor, "a")
        net.crash("b")
        net.restart("b")
        net.drop(lambda e: True)
        self.assertEqual((net["b"].currentTerm, net["b"].votedFor), (1, "a"))
        ready = net["b"].step("c", RequestVote(1, 5, 5))
        self.assertEqual(ready.reply, RequestVoteResponse(1, False))


class FollowerAppendTests(SynchronousTestCase):
    """
    AppendEntries receivers.  Reference: section 5.3, Figure 2.
    """

    def test_consistencyCheck(self) -> None:
        """
        A follower refuses entries unless its log has an entry at
        prevLogIndex whose term is prevLogTerm, and then changes nothing; the
        refusal names the rejected index and a hint of where the logs could
        still agree.
        Reference: section 5.3, Figure 2 (AppendEntries receiver, step 2).
        """
        core = makeCore(terms=[1, 1, 2], hardState=HardState(3, None))
        entries = (Entry(4, 3, "x"),)
        # prevLogIndex beyond the log.
        ready = core.step("b", AppendEntries(3, 5, 3, (Entry(6, 3, "x"),), 0))
        self.assertEqual(
            ready.reply,
            AppendEntriesResponse(3, False, 0, rejectedIndex=5, hintIndex=3, hintTerm=2),
        )
        # A different term at prevLogIndex.
        ready = core.step("b", AppendEntries(3, 3, 3, entries, 3))
        self.assertEqual(
            ready.reply,
            AppendEntriesResponse(3, False, 0, rejectedIndex=3, hintIndex=3, hintTerm=2),
        )
        self.assertEqual((ready.entries, ready.truncateFrom, ready.committed), ([], None, []))
        self.assertEqual((termsOf(core), core.commitIndex), ([1, 1, 2], 0))
        # The matching prefix is accepted.
        ready = core.step("b", AppendEntries(3, 3, 2, entries, 0))
        self.assertEqual(ready.reply, AppendEntriesResponse(3, True, matchIndex=4))
        self.assertEqual(termsOf(core), [1, 1, 2, 3])

    def test_conflictingSuffixReplaced(self) -> None:
        """
        If an existing entry conflicts with a new one (same index, different
        term), the follower deletes it and all that follow, reporting the
        truncation in C{Ready.truncateFrom}, and appends the new entries.
        Reference: section 5.3, Figure 2 (AppendEntries receiver, steps 3-4).
        """
        core = makeCore(terms=[1, 1, 2, 2, 2], hardState=HardState(3, None))
        new = (Entry(3, 1, "set i3 t1"), Entry(4, 3, "y"))
        ready = core.step("b", AppendEntries(3, 2, 1, new, 0))
        self.assertEqual(ready.truncateFrom, 3)
        self.assertEqual(ready.entries, list(new))
        self.assertEqual(ready.reply, AppendEntriesResponse(3, True, matchIndex=4))
        self.assertEqual(entriesOf(core), makeEntries([1, 1]) + list(new))

    def test_matchingEntriesSkipped(self) -> None:
        """
        Entries the follower already holds are skipped: only the part after
        them is appended, with no truncation.
        Reference: Figure 2 (AppendEntries receiver, step 4: "not already in the log").
        """
        core = makeCore(terms=[1, 1, 2], hardState=HardState(2, None))
        extra = Entry(4, 2, "more")
        ready = core.step("b", AppendEntries(2, 1, 1, (*makeEntries([1, 1, 2])[1:], extra), 0))
        self.assertEqual((ready.truncateFrom, ready.entries), (None, [extra]))

    def test_delayedAppendDoesNotTruncate(self) -> None:
        """
        A duplicate or delayed AppendEntries whose entries all match the log
        does not truncate the later entries the follower already has, and
        reports as matched only what it carried.
        Reference: section 5.3 (Figure 2 step 3 applies only on conflict).
        """
        core = makeCore(terms=[1, 2, 2, 2, 2], hardState=HardState(2, "b"))
        old = AppendEntries(2, 1, 1, tuple(makeEntries([1, 2, 2])[1:]), 0)
        ready = core.step("b", old)
        self.assertEqual(ready.reply, AppendEntriesResponse(2, True, matchIndex=3))
        self.assertEqual((ready.truncateFrom, ready.entries), (None, []))
        self.assertEqual(termsOf(core), [1, 2, 2, 2, 2])

    def test_followerCommitIndex(self) -> None:
        """
        A follower sets commitIndex to min(leaderCommit, index of the last new
        entry), so a stale suffix after what the leader sent is never
        committed, even when leaderCommit covers its indexes.
        Reference: Figure 2 (AppendEntries receiver, step 5).
        """
        # Index 3 (term 2) is left over from a deposed leader; the leader of
        # term 3 has committed its own, different, index 3.
        core = makeCore(terms=[1, 1, 2], hardState=HardState(3, None))
        ready = core.step("b", AppendEntries(3, 2, 1, (), 3))
        self.assertEqual(core.commitIndex, 2)
        self.assertEqual(ready.committed, makeEntries([1, 1]))
        self.assertEqual(ready.reply, AppendEntriesResponse(3, True, matchIndex=2))
        # Once the leader's index 3 arrives it replaces the stale one and commits.
        ready = core.step("b", AppendEntries(3, 2, 1, (Entry(3, 3, "new"),), 3))
        self.assertEqual(ready.truncateFrom, 3)
        self.assertEqual(ready.committed, [Entry(3, 3, "new")])
        # leaderCommit below the log: commit only to leaderCommit.
        ready = core.step("b", AppendEntries(3, 3, 3, (Entry(4, 3, "z"),), 3))
        self.assertEqual((core.commitIndex, ready.committed), (3, []))

    def test_commitIndexNeverDecreases(self) -> None:
        """
        A delayed AppendEntries with a smaller leaderCommit, or a heartbeat
        from before the last entries, does not lower commitIndex.
        Reference: Figure 2 (commitIndex "increases monotonically").
        """
        core = makeCore(terms=[1, 1, 1, 1, 1], hardState=HardState(1, None))
        core.step("b", AppendEntries(1, 5, 1, (), 5))
        self.assertEqual(core.commitIndex, 5)
        for delayed in [AppendEntries(1, 2, 1, (), 2), AppendEntries(1, 0, 0, (), 0)]:
            ready = core.step("b", delayed)
            self.assertEqual((core.commitIndex, ready.committed), (5, []))
            self.assertTrue(ready.reply.success)

    def test_appendEntriesResetsElectionTimer(self) -> None:
        """
        AppendEntries from the current leader, even a refused one, keeps a
        follower from starting an election.
        Reference: Figure 2 (Rules for Servers, Followers).
        """
        core = makeCore(electionTicks=(10, 11), hardState=HardState(1, None))
        for _ in range(5):
            for _ in range(9):
                core.tick()
            core.step("b", AppendEntries(1, 7, 1, (), 0))  # refused: no entry 7
        for _ in range(9):
            core.tick()
        self.assertEqual(core.role, FOLLOWER)
        core.tick()
        self.assertEqual(core.role, CANDIDATE)


# Figure 7 of the paper: the leader at the start of term 8 and six followers.
FIGURE7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


class LeaderReplicationTests(SynchronousTestCase):
    """
    The leader's side of log replication.  Reference: section 5.3.
    """

    def leaderWithMatch(self, matchIndex: int) -> RaftCore:
        """Leader C{a} of term 2 over eight entries of term 1; C{b} matches up to C{matchIndex}."""
        core = makeCore(terms=[1] * 8)
        makeLeader(core)
        core.step("b", AppendEntriesResponse(core.currentTerm, True, matchIndex=matchIndex))
        progress = core.progress("b")
        self.assertEqual((progress.matchIndex, progress.probing), (matchIndex, False))
        return core

    def test_rejectionAtMatchIndexIsStale(self) -> None:
        """
        A rejection of an append whose prevLogIndex the follower is known to
        match can only be a late answer to an older request: the leader
        ignores it and goes on pipelining from where it was.
        """
        core = self.leaderWithMatch(9)
        before = attrs.evolve(core.progress("b"))
        core.step("b", AppendEntriesResponse(2, False, rejectedIndex=9, hintIndex=3, hintTerm=1))
        self.assertEqual(core.progress("b"), before)

    def test_rejectionNeverResumesBelowMatch(self) -> None:
        """
        Whatever a rejection's hint says, the leader resumes right after what
        the follower is known to match, never below it: those entries need
        no resending.
        """
        core = self.leaderWithMatch(5)
        core.step("b", AppendEntriesResponse(2, False, rejectedIndex=8, hintIndex=2, hintTerm=1))
        progress = core.progress("b")
        self.assertEqual((progress.nextIndex, progress.probing), (6, True))

    def test_figure7(self) -> None:
        """
        Each of the six follower logs of Figure 7 (missing entries, extra
        uncommitted entries, or both) ends identical to the leader's once the
        leader of term 8 has replicated its no-op, with at most two
        AppendEntries each: the first one, and one more after the follower's
        hint (instead of one round trip per entry or per term).
        Reference: section 5.3, Figure 7.
        """
        names = ("leader", *FIGURE7_FOLLOWERS)
        logs = {name: makeEntries(terms) for name, terms in FIGURE7_FOLLOWERS.items()}
        logs["leader"] = makeEntries(FIGURE7_LEADER)
        net = RaftNetwork(
            names,
            logs=logs,
            hardStates={name: HardState(7) for name in names},
        )
        leader = net.elect("leader")
        self.assertEqual(leader.currentTerm, 8)
        # (c) and (d) refused to vote: their logs are more up-to-date.
        self.assertEqual(net["c"].votedFor, None)
        self.assertEqual(net["d"].votedFor, None)
        expected = makeEntries(FIGURE7_LEADER) + [Entry(11, 8, NOOP)]
        self.assertEqual(entriesOf(leader), expected)
        rounds = {name: net.count("leader", name) for name in FIGURE7_FOLLOWERS}
        for name in FIGURE7_FOLLOWERS:
            self.assertEqual(entriesOf(net[name]), expected, name)
            self.assertLessEqual(rounds[name], 2, rounds)
        # Followers that only needed a suffix replaced did it in one round trip.
        self.assertEqual((rounds["c"], rounds["d"]), (1, 1))
        self.assertEqual(leader.commitIndex, 11)
        net.tick("leader", times=net.heartbeatTicks)
        net.deliver()
        self.assertEqual([net[n].commitIndex for n in names], [11] * 7)

    def test_laggingFollowerCaughtUpInOneRoundTrip(self) -> None:
        """
        A follower that missed many entries refuses the leader's next
        AppendEntries with a hint at its last index, and the leader sends
        every missing entry in the very next AppendEntries: two requests and
        two responses in all.
        Reference: section 5.3 (optimization of the rejection).
        """
        net = RaftNetwork(THREE)
        net.elect("a")
        net.deliver()
        net.isolate("c")
        for number in range(20):
            net.propose("a", [f"set k {number}"])
            net.deliver()
        self.assertEqual(net["a"].commitIndex, 21)
        self.assertEqual(net["c"].log.lastIndex, 1)
        net.heal()
        before = len(net.sent)
        net.tick("a", times=net.heartbeatTicks)
        net.deliver()
        toC = [e for e in net.sent[before:] if "c" in (e.src, e.dst)]
        self.assertEqual(
            [type(e.message).__name__ for e in toC],
            ["AppendEntries", "AppendEntriesResponse"] * 2,
        )
        self.assertFalse(toC[1].message.success)
        self.assertEqual(len(toC[2].message.entries), 20)
        self.assertEqual(entriesOf(net["c"]), entriesOf(net["a"]))
        self.assertEqual(net["c"].commitIndex, 21)

    def test_pipelining(self) -> None:
        """
        Once a follower has acknowledged an append, the leader sends each new
        proposal at once, without waiting for the previous one's answer,
        each carrying only the new entries.
        Reference: section 5.3 (the leader retries and replicates
        continuously); the essay's pipelining.
        """
        net = RaftNetwork(THREE)
        net.elect("a")
        net.deliver()
        self.assertFalse(net["a"].progress("b").probing)
        [x] = net.propose("a", ["set x 1"])
        [y] = net.propose("a", ["set y 2"])
        [z] = net.propose("a", ["set z 3"])
        inFlight = [e.message for e in net.queue if e.dst == "b"]
        self.assertEqual(
            inFlight,
            [
                AppendEntries(1, 1, 1, (x,), 1),
                AppendEntries(1, 2, 1, (y,), 1),
                AppendEntries(1, 3, 1, (z,), 1),
            ],
        )
        self.assertEqual(net["a"].progress("b").nextIndex, 5)
        net.deliver()
        self.assertEqual(net["a"].commitIndex, 4)

    def test_batchSentAsOneTupleToEveryFollower(self) -> None:
        """
        A new batch goes to every follower as the very same tuple, so that
        it is encoded once; once the log has changed, the next append is
        cut afresh, even from the same index.
        """
        core = makeCore(terms=[1, 1])
        makeLeader(core)
        for peer in core.peers:
            core.step(peer, AppendEntriesResponse(core.currentTerm, True, matchIndex=3))
        sent = appendsIn(core.propose(["set x 1", "set y 2"]))
        self.assertEqual([e.command for e in sent["b"].entries], ["set x 1", "set y 2"])
        self.assertIs(sent["b"].entries, sent["c"].entries)
        for peer in core.peers:
            core.progress(peer).nextIndex = 4
            core.progress(peer).inflight.clear()
        again = appendsIn(core.propose(["set z 3"]))
        self.assertEqual(
            [e.command for e in again["b"].entries], ["set x 1", "set y 2", "set z 3"]
        )
        self.assertIs(again["b"].entries, again["c"].entries)

    def test_rewrittenLogCutAfresh(self) -> None:
        """
        Entries cut from the end and written again up to the same index are
        sent as they now are, not as the tuple cut before.
        """
        core = makeCore(terms=[1, 1])
        makeLeader(core)
        for peer in core.peers:
            core.step(peer, AppendEntriesResponse(core.currentTerm, True, matchIndex=3))
        core.propose(["set x 1"])
        core.log.truncateFrom(4)
        core.log.append([Entry(4, core.currentTerm, "set x 2")])
        for peer in core.peers:
            core.progress(peer).nextIndex = 4
            core.progress(peer).inflight.clear()
        core.tick()
        sent = appendsIn(core.tick()) or appendsIn(core.tick()) or appendsIn(core.tick())
        self.assertEqual([e.command for e in sent["b"].entries], ["set x 2"])

    def test_probeModeOneOutstanding(self) -> None:
        """
        While the leader does not know where a follower's log matches, it
        keeps at most one AppendEntries outstanding to it: new proposals do
        not send more until the answer comes, or a heartbeat retries it.
        Reference: section 5.3; the essay's probe state.
        """
        net = RaftNetwork(THREE)
        net.campaign("a")
        net.deliver(hold=isAppend)
        self.assertEqual(net["a"].role, LEADER)
        self.assertEqual(len(net.queue), 2)  # the no-op, one to each follower
        net.propose("a", ["set x 1"])
        net.propose("a", ["set y 2"])
        self.assertEqual(len(net.queue), 2)
        net.tick("a", times=net.heartbeatTicks - 1)
        self.assertEqual(len(net.queue), 2)
        net.tick("a")
        self.assertEqual([e.dst for e in net.queue], ["b", "c", "b", "c"])
        retry = net.queue[-1].message
        self.assertEqual([e.command for e in retry.entries], [NOOP, "set x 1", "set y 2"])
        net.drop(lambda e: True)
        # Only the answer to the retried probe reaches the leader; it switches
        # to pipelining.
        net.tick("a", times=net.heartbeatTicks)
        net.deliver()
        self.assertFalse(net["a"].progress("b").probing)
        self.assertEqual(net["a"].commitIndex, 3)

    def test_backlogSentInBatches(self) -> None:
        """
        A follower far behind receives the backlog in AppendEntries of at most
        maxAppendBytes of commands (at least one entry each), the next batch
        sent as soon as the previous one is acknowledged, without waiting
        for a heartbeat.
        Reference: section 5.3.
        """
        net = RaftNetwork(THREE, maxAppendBytes=40)
        net.elect("a")
        net.deliver()
        net.isolate("c")
        for number in range(30):
            net.propose("a", [f"set key{number:02} value"])  # 15 bytes each
        net.deliver()
        net.heal()
        before = len(net.sent)
        net.tick("a", times=net.heartbeatTicks)
        net.deliver()
        batches = [
            e.message.entries
            for e in net.sent[before:]
            if e.dst == "c" and isAppend(e) and e.message.entries
        ]
        self.assertEqual([len(b) for b in batches], [2] * 15)
        net.tick("a", times=net.heartbeatTicks)
        net.deliver()
        self.assertEqual(entriesOf(net["c"]), entriesOf(net["a"]))
        self.assertEqual(net["c"].commitIndex, 31)

    def test_atMostAWindowOfAppendsOut(self) -> None:
        """
        A leader never has more than maxInflightAppends appends with entries
        out to one follower, unanswered: proposals beyond wait.  A heartbeat
        still goes out while the window is full, without entries, and each
        answer frees a place at once: the next append carries every entry
        that waited.  (etcd's MaxInflightMsgs; the heartbeats are what keeps
        the follower's election timer from running out.)
        """
        core = makeCore(terms=[1], hardState=HardState(1, None), maxInflightAppends=2)
        self.assertEqual(RaftCore("a").maxInflightAppends, txraft.core.MAX_INFLIGHT_APPENDS)
        makeLeader(core)  # term 2, its no-op at index 2
        core.step("b", AppendEntriesResponse(2, True, matchIndex=2))
        sent = [appendsIn(core.propose([f"set k {n}"])).get("b") for n in range(4)]
        core.persisted(6)
        self.assertEqual(
            [m and [e.index for e in m.entries] for m in sent], [[3], [4], None, None]
        )
        self.assertEqual(core.progress("b").inflight, [3, 4])
        for _ in range(core.heartbeatTicks - 1):
            self.assertEqual(appendsIn(core.tick()), {})
        heartbeat = appendsIn(core.tick())["b"]
        self.assertEqual(heartbeat, AppendEntries(2, 4, 2, (), 2))
        ready = core.step("b", AppendEntriesResponse(2, True, matchIndex=3))
        self.assertEqual(
            appendsIn(ready)["b"], AppendEntries(2, 4, 2, tuple(entriesOf(core)[4:]), 3)
        )
        self.assertEqual(core.progress("b").inflight, [4, 6])
        # An answer covering every append out empties the window.
        core.step("b", AppendEntriesResponse(2, True, matchIndex=6))
        self.assertEqual(core.progress("b").inflight, [])

    def test_heartbeatFindsLostAppends(self) -> None:
        """
        When every append of a full window is lost, the next heartbeat (sent
        from where the lost ones ended) is refused, and the follower gets
        every entry it missed from the probe that follows.
        """
        net = RaftNetwork(THREE, maxInflightAppends=2)
        net.elect("a")
        net.deliver()
        for number in range(5):
            net.propose("a", [f"set k {number}"])
        self.assertEqual(len([e for e in net.queue if e.dst == "c"]), 2)
        net.drop(lambda e: e.dst == "c")
        net.deliver()
        self.assertEqual(net["a"].commitIndex, 6)
        net.tick("a", times=net.heartbeatTicks)
        net.deliver()
        self.assertEqual(entriesOf(net["c"]), entriesOf(net["a"]))
        self.assertEqual(net["c"].commitIndex, 6)

    def test_refusalEmptiesTheWindow(self) -> None:
        """
        The appends out after one the follower refused will be refused too,
        or are stale: after a refusal they take no place in the window, so
        once the probe lands the leader sends a whole window again.
        """
        core = makeCore(
            terms=[1], hardState=HardState(1, None), maxInflightAppends=2, maxAppendBytes=1
        )
        makeLeader(core)  # term 2, its no-op at index 2
        core.step("b", AppendEntriesResponse(2, True, matchIndex=2))
        for number in range(4):
            core.propose([f"set k {number}"])  # 3 and 4 go, 5 and 6 wait
        # b lost entry 3: it refuses the append of entry 4.
        core.step("b", AppendEntriesResponse(2, False, rejectedIndex=3, hintIndex=2, hintTerm=2))
        self.assertEqual(core.progress("b").inflight, [])
        # The probe carries one entry (maxAppendBytes), and its answer sends the next.
        ready = core.step("b", AppendEntriesResponse(2, True, matchIndex=3))
        self.assertEqual([e.index for e in appendsIn(ready)["b"].entries], [4])
        ready = core.propose(["set k 4"])
        self.assertEqual([e.index for e in appendsIn(ready)["b"].entries], [5])

    def test_answerFromANonMemberIgnored(self) -> None:
        """
        An answer to AppendEntries from a server the leader does not
        replicate to (one removed from the membership, say) changes nothing
        and sends nothing.
        """
        core = makeCore()
        makeLeader(core)
        ready = core.step("d", AppendEntriesResponse(core.currentTerm, True, matchIndex=1))
        self.assertEqual((ready.messages, core.commitIndex), ([], 0))

    def test_probeAfterRejection(self) -> None:
        """
        After a refusal the leader sends one probe at the hinted index and
        nothing more to that follower until the probe is answered.
        Reference: section 5.3.
        """
        core = makeCore(terms=[1, 1, 1], hardState=HardState(1, None))
        makeLeader(core)  # term 2, no-op at index 4
        core.step("c", AppendEntriesResponse(2, True, matchIndex=4))
        self.assertFalse(core.progress("c").probing)
        core.step("b", AppendEntriesResponse(2, False, rejectedIndex=3, hintIndex=1, hintTerm=1))
        self.assertEqual(core.progress("b").nextIndex, 2)
        self.assertTrue(core.progress("b").probing)
        ready = core.propose(["set q 1"])
        self.assertNotIn("b", appendsIn(ready))
        self.assertIn("c", appendsIn(ready))
        # A repeated stale refusal of the old probe is ignored.
        ready = core.step(
            "b", AppendEntriesResponse(2, False, rejectedIndex=3, hintIndex=1, hintTerm=1)
        )
        self.assertEqual(ready.messages, [])


class LeaderTests(SynchronousTestCase):
    """
    Rules for leaders.  Reference: sections 5.2, 5.4.2, Figure 2.
    """

    def test_heartbeats(self) -> None:
        """
        A leader sends AppendEntries to every follower every heartbeatTicks
        ticks, empty when the follower is up to date, carrying its commitIndex.
        Reference: section 5.2, Figure 2 (Rules for Servers, Leaders).
        """
        net = RaftNetwork(FIVE, heartbeatTicks=4)
        net.elect("a")
        net.deliver()
        for tick in range(1, 13):
            before = len(net.sent)
            net.tick("a")
            sent = net.sent[before:]
            if tick % 4:
                self.assertEqual(sent, [], tick)
            else:
                self.assertEqual([e.dst for e in sent], ["b", "c", "d", "e"], tick)
                self.assertEqual({e.message for e in sent}, {AppendEntries(1, 1, 1, (), 1)})
            net.deliver()

    def test_newLeaderAppendsNoop(self) -> None:
        """
        A new leader appends a no-op entry of its own term at once, so that
        entries of earlier terms can commit through it.
        Reference: section 5.4.2, section 8 (no-op at the start of a term).
        """
        core = makeCore(terms=[1, 1, 2], hardState=HardState(2, None))
        ready = makeLeader(core)
        self.assertEqual(ready.entries, [Entry(4, 3, NOOP)])
        for peer, message in appendsIn(ready).items():
            self.assertEqual(message, AppendEntries(3, 3, 2, (Entry(4, 3, NOOP),), 0), peer)

    def test_fourNodesNeedThree(self) -> None:
        """
        In a cluster of four, an entry commits once three servers (the
        leader and two followers) hold it, not two.  Reference: Figure 2
        (Leaders: "a majority of matchIndex[i] >= N").
        """
        core = makeCore(names=("a", "b", "c", "d"))
        ticksUntil(core, CANDIDATE)
        for peer in ("b", "c"):
            core.step(peer, RequestVoteResponse(core.currentTerm, True))
        self.assertEqual(core.role, LEADER)
        core.persisted(1)
        term = core.currentTerm
        core.step("b", AppendEntriesResponse(term, True, matchIndex=1))
        self.assertEqual(core.commitIndex, 0)
        core.step("c", AppendEntriesResponse(term, True, matchIndex=1))
        self.assertEqual(core.commitIndex, 1)

    def test_previousTermCommitsOnlyThroughCurrentTerm(self) -> None:
        """
        A leader never commits an entry of a previous term by counting
        replicas, even when a majority holds it; it commits it, with
        everything before, once an entry of its own term is on a majority.
        Reference: section 5.4.2, Figure 2 (Leaders, last rule).
        """
        core = makeCore(terms=[1, 1], hardState=HardState(1, None))
        makeLeader(core)  # term 2, no-op at index 3
        ready = core.step("b", AppendEntriesResponse(2, True, matchIndex=2))
        self.assertEqual((core.commitIndex, ready.committed), (0, []))
        ready = core.step("c", AppendEntriesResponse(2, True, matchIndex=2))
        self.assertEqual((core.commitIndex, ready.committed), (0, []))
        ready = core.step("c", AppendEntriesResponse(2, True, matchIndex=3))
        self.assertEqual(core.commitIndex, 3)
        self.assertEqual(ready.committed, [*makeEntries([1, 1]), Entry(3, 2, NOOP)])

    def test_figure8(self) -> None:
        """
        Figure 8: an entry of an earlier term on a majority is not committed
        and can be overwritten.

        (a) s1 leads term 2 and gets index 2 to s2 only.  (b) s1 crashes; s5
        wins term 3 with votes from s3, s4, s5 and appends a different index
        2, then crashes.  (c) s1 restarts, wins term 4, and copies its term-2
        index 2 to s3 and s4, so it knows index 2 is on a majority (s1, s3,
        s4; s2 too); index 3, its term-4 no-op, is held back.  Index 2 must
        not commit.  (d) s1 crashes; s5 wins term 5 with votes from s2, s3,
        s4 and replaces index 2 everywhere, which is safe because it was
        never committed.  (s1 learns of s3 and s4 rather than s2 because a
        restarted leader has forgotten its old followers' progress.)
        Reference: section 5.4.2, Figure 8 (a)-(d).
        """
        net = self.figure8UpToC()
        net.crash("s1")
        net.restart("s5")
        net.campaign("s5")  # term 4: everyone already voted for s1
        net.deliver()
        self.assertEqual(net["s5"].role, CANDIDATE)
        net.elect("s5")
        self.assertEqual(net["s5"].currentTerm, 5)
        self.assertEqual({net["s2"].votedFor, net["s3"].votedFor, net["s4"].votedFor}, {"s5"})
        for name in ("s2", "s3", "s4", "s5"):
            self.assertEqual(termsOf(net[name]), [1, 3, 5], name)
        self.assertEqual(net["s5"].commitIndex, 3)
        self.assertEqual([e.term for e in net.committedLog], [1, 3, 5])
        net.restart("s1")
        net.runUntil(lambda: termsOf(net["s1"]) == [1, 3, 5], 100)

    def test_figure8Committed(self) -> None:
        """
        Figure 8 (e): if instead s1 gets its term-4 entry to a majority
        before crashing, index 2 commits with it, and s5 can no longer win an
        election, so the committed entries stay.
        Reference: section 5.4.2, Figure 8 (e).
        """
        net = self.figure8UpToC()
        net.deliver()  # release index 3
        self.assertEqual(net["s1"].commitIndex, 3)
        self.assertEqual([e.term for e in net.applied["s1"]], [1, 2, 4])
        net.crash("s1")
        net.restart("s5")
        for _ in range(5):
            net.campaign("s5")
            net.deliver()
            self.assertNotEqual(net["s5"].role, LEADER)
        net.runUntil(lambda: net.leader() is not None, 200)
        net.runUntil(lambda: all(termsOf(net[n])[:3] == [1, 2, 4] for n in net.up()), 100)
        net.runUntil(lambda: all(len(net.applied[n]) >= 3 for n in net.up()), 100)

    def figure8UpToC(self) -> RaftNetwork:
        """
        Build Figure 8 (a)-(c) and check that index 2 is on a majority, that
        the leader knows it, and that it is not committed.
        """
        names = ("s1", "s2", "s3", "s4", "s5")
        net = RaftNetwork(names, maxAppendBytes=1)
        # Term 1: index 1 is committed everywhere.
        net.elect("s2")
        net.tick("s2", times=net.heartbeatTicks)
        net.deliver()
        self.assertEqual([net[n].commitIndex for n in names], [1] * 5)

        # (a) s1 leads term 2; its index 2 reaches s2 only.
        net.elect("s1", hold=lambda e: isAppend(e) and e.dst in ("s3", "s4", "s5"))
        net.drop(lambda e: True)
        self.assertEqual(net["s1"].currentTerm, 2)
        self.assertEqual([termsOf(net[n]) for n in names], [[1, 2], [1, 2], [1], [1], [1]])

        # (b) s1 crashes; s5 leads term 3 with votes from s3, s4 and itself.
        net.crash("s1")
        net.elect("s5", hold=isAppend)
        net.drop(lambda e: True)
        self.assertEqual(net["s5"].currentTerm, 3)
        self.assertEqual((net["s3"].votedFor, net["s4"].votedFor), ("s5", "s5"))
        self.assertFalse(net["s2"].votedFor == "s5")
        self.assertEqual(termsOf(net["s5"]), [1, 3])
        net.crash("s5")

        # (c) s1 restarts and needs two elections (s3, s4 voted in term 3).
        net.restart("s1")
        net.campaign("s1")
        net.deliver()
        self.assertEqual((net["s1"].role, net["s1"].currentTerm), (CANDIDATE, 3))

        def holdIndex3(envelope: Envelope) -> bool:
            # Keep index 3 from anyone who would accept it.
            message = envelope.message
            return (
                isinstance(message, AppendEntries)
                and any(e.index == 3 for e in message.entries)
                and envelope.dst in net.cores
                and net[envelope.dst].log.lastIndex >= 2
            )

        net.elect("s1", hold=holdIndex3)
        self.assertEqual(net["s1"].currentTerm, 4)
        self.assertEqual([termsOf(net[n]) for n in names[:4]], [[1, 2, 4], [1, 2], [1, 2], [1, 2]])
        matched = [net["s1"].progress(n).matchIndex for n in ("s3", "s4")]
        self.assertEqual(matched, [2, 2])
        # On a majority, known to the leader, yet not committed: its term is 2.
        self.assertEqual(net["s1"].commitIndex, 0)
        self.assertEqual(len(net.committedLog), 1)
        return net


class DurableLeaderTests(SynchronousTestCase):
    """
    A leader writes its log in parallel with sending it: it counts itself
    in a majority only for the entries its driver has said are durable
    (L{RaftCore.persisted}).  Reference: dissertation section 10.2.1.
    """

    def test_leaderCountsItselfOnlyOnceDurable(self) -> None:
        """
        With one follower's acknowledgment, a leader's entry commits only
        once the leader's own copy is durable.
        """
        core = makeCore()
        makeLeader(core)  # term 1, its no-op at index 1, durable
        entry = core.propose(["set x 1"]).entries[0]
        core.step("b", AppendEntriesResponse(1, True, matchIndex=2))
        # Only the no-op, durable here and on b.
        self.assertEqual(core.commitIndex, 1)
        self.assertEqual(core.persisted(2).committed, [entry])
        self.assertEqual(core.commitIndex, 2)

    def test_followersAloneMakeAMajority(self) -> None:
        """
        Followers that hold an entry durably commit it without the leader's
        own fsync: a slow disk on the leader does not hold the cluster up.
        """
        core = makeCore()
        makeLeader(core)
        core.propose(["set x 1"])
        core.step("b", AppendEntriesResponse(1, True, matchIndex=2))
        self.assertEqual(core.commitIndex, 1)
        core.step("c", AppendEntriesResponse(1, True, matchIndex=2))
        self.assertEqual(core.commitIndex, 2)
        self.assertEqual(core.durableIndex, 1)

    def test_leaderAppliesOnlyWhatItHoldsDurably(self) -> None:
        """
        An entry its followers alone committed is handed to the leader's
        state machine only once its own copy is durable: a disk that fails
        before never leaves the state machine ahead of the log.
        """
        core = makeCore()
        makeLeader(core)
        entry = core.propose(["set x 1"]).entries[0]
        core.step("b", AppendEntriesResponse(1, True, matchIndex=2))
        ready = core.step("c", AppendEntriesResponse(1, True, matchIndex=2))
        self.assertEqual((core.commitIndex, ready.committed), (2, []))
        self.assertEqual(core.persisted(2).committed, [entry])

    def test_durableIndexNeverGoesBackNorPastTheLog(self) -> None:
        """
        An older C{persisted} arriving late changes nothing, and one past
        the log's end counts only what the log holds.
        """
        core = makeCore(names=("a",))
        ticksUntil(core, LEADER)
        core.propose(["set x 1", "set y 2"])
        core.persisted(3)
        core.persisted(2)
        self.assertEqual(core.durableIndex, 3)
        core.persisted(9)
        self.assertEqual((core.durableIndex, core.commitIndex), (3, 3))

    def test_onlyALeadersMessagesGoBeforeItsFsync(self) -> None:
        """
        A leader's messages may go out before its new entries are durable;
        a follower's acknowledgment may not, nor anything sent with a term,
        vote, truncation or snapshot to persist.
        """
        leader = makeCore()
        self.assertTrue(makeLeader(leader).syncAfterSend)
        self.assertTrue(leader.propose(["set x 1"]).syncAfterSend)
        follower = makeCore("b")
        ready = follower.step("a", AppendEntries(1, 0, 0, (Entry(1, 1, NOOP),), 0))
        self.assertEqual(len(ready.entries), 1)
        self.assertFalse(ready.syncAfterSend)
        entries = [Entry(1, 1, NOOP)]
        for other in (
            Ready(entries=entries, hardState=HardState(1)),
            Ready(entries=entries, truncateFrom=1),
            Ready(entries=entries, snapshot=Snapshot(1, 1, b"[]")),
            Ready(reply=AppendEntriesResponse(1, True, matchIndex=1)),
        ):
            self.assertFalse(other.syncAfterSend, other)
        self.assertTrue(Ready(entries=entries).syncAfterSend)

    def test_loadedLogIsDurable(self) -> None:
        """What a core starts with came from its disk."""
        self.assertEqual(makeCore(terms=[1, 1, 2]).durableIndex, 3)

    def test_truncationForgetsDurability(self) -> None:
        """
        Entries a follower drops are no longer durable ones: its durable
        index falls back to before them until the driver says again.
        """
        core = makeCore(terms=[1, 1, 1])
        ready = core.step("b", AppendEntries(2, 1, 1, (Entry(2, 2, "set x 1"),), 1))
        self.assertEqual(ready.truncateFrom, 2)
        self.assertEqual(core.durableIndex, 1)
        core.persisted(2)
        self.assertEqual(core.durableIndex, 2)

    def test_snapshotReplacingTheLogForgetsDurability(self) -> None:
        """A snapshot that replaces the whole log leaves nothing durable beyond its end."""
        core = makeCore(terms=[1, 1, 1, 1, 1, 1])
        core.step("b", AppendEntries(3, 0, 0, (), 0))
        data = encodeApplied(makeEntries([1, 3, 3, 3]))
        core.step("b", InstallSnapshot(3, 4, 3, 0, data, done=True))
        self.assertEqual(core.durableIndex, 4)


class CommitAndApplyTests(SynchronousTestCase):
    """
    Commitment and C{Ready.committed}.  Reference: sections 5.3, 5.4.2.
    """

    def test_committedHandedOutOnceInOrder(self) -> None:
        """
        Across many L{Ready}s, on the leader and on every follower, each
        committed entry appears in C{Ready.committed} exactly once and in
        index order, and entries appear only once committed.
        Reference: Figure 2 (lastApplied, "apply log[lastApplied] to the
        state machine").
        """
        net = RaftNetwork(THREE, seed=2)
        rng = random.Random(7)
        proposed = []
        handedOut: dict[str, list[Entry]] = {n: [] for n in THREE}
        realHandle = net.handle

        def recordingHandle(name: str, ready: Ready, requester: str | None = None) -> None:
            for entry in ready.committed:
                self.assertLessEqual(entry.index, net[name].commitIndex)
            handedOut[name].extend(ready.committed)
            realHandle(name, ready, requester)

        net.handle = recordingHandle  # type: ignore[method-assign]
        net.elect("a")
        for number in range(60):
            commands = [f"set k{number} {i}" for i in range(rng.randrange(1, 4))]
            proposed.extend(net.propose("a", commands))
            net.tick()
            net.deliver(hold=lambda e: rng.random() < 0.3)
        net.runUntil(lambda: all(net[n].commitIndex == net["a"].log.lastIndex for n in THREE), 50)
        for name in THREE:
            self.assertEqual([e.index for e in handedOut[name]], list(range(1, len(proposed) + 2)))
            self.assertEqual(handedOut[name][1:], proposed)

    def test_proposeOnNonLeader(self) -> None:
        """
        Only the leader accepts proposals: a follower raises
        L{NotLeaderError} naming the leader it knows, a candidate names none.
        Reference: section 8 (clients are redirected to the leader).
        """
        net = RaftNetwork(THREE)
        net.elect("b")
        net.deliver()
        error = self.assertRaises(NotLeaderError, net["a"].propose, ["set x 1"])
        self.assertEqual(error.leaderId, "b")
        net.isolate("a")
        net.campaign("a")
        error = self.assertRaises(NotLeaderError, net["a"].propose, ["set x 1"])
        self.assertIsNone(error.leaderId)
        self.assertEqual(net["a"].log.lastIndex, 1)

    def test_notLeaderErrorNamesLeader(self) -> None:
        """A refused proposal's error carries the leader it knows of, as its argument too."""
        error = NotLeaderError("b")
        self.assertEqual((error.leaderId, error.args), ("b", ("b",)))

    def test_proposalEntries(self) -> None:
        """
        C{Ready.entries} of a proposal are the new entries, in order, with the
        leader's term and consecutive indexes.
        Reference: section 5.3.
        """
        core = makeCore()
        makeLeader(core)
        ready = core.propose(["set a 1", "get a", "delete a"])
        self.assertEqual(
            ready.entries,
            [Entry(2, 1, "set a 1"), Entry(3, 1, "get a"), Entry(4, 1, "delete a")],
        )


class RobustnessTests(SynchronousTestCase):
    """
    Inputs no correct peer sends.
    """

    def test_ownNameRefused(self) -> None:
        """
        A message from the server itself is a driver bug: L{ValueError},
        and nothing changes.  (A server outside the membership is heard:
        see L{MembershipTests}.)
        """
        core = makeCore()
        error = self.assertRaises(ValueError, core.step, "a", RequestVote(5, 0, 0))
        self.assertEqual(str(error), "'a' is this server")
        self.assertEqual((core.currentTerm, core.votedFor), (0, None))

    def test_badTimingsRefused(self) -> None:
        """
        A heartbeat must be at least one tick and shorter than the shortest
        election timeout, whose range must not be empty; a commit index
        past the log is a driver bug.
        """
        for heartbeat, election in [(0, (10, 20)), (10, (10, 20)), (3, (10, 10))]:
            error = self.assertRaises(
                ValueError, makeCore, heartbeatTicks=heartbeat, electionTicks=election
            )
            self.assertEqual(str(error), "need 0 < heartbeatTicks < electionTicks low < high")
        makeCore(heartbeatTicks=1, electionTicks=(2, 3))
        error = self.assertRaises(
            ValueError, RaftCore, "a", THREE, entries=makeEntries([1]), commitIndex=2
        )
        self.assertEqual(str(error), "committed up to 2 beyond the log's end")

    def test_negativeTrailingEntriesRefused(self) -> None:
        """A log cannot keep fewer than no entries when it compacts."""
        error = self.assertRaises(ValueError, makeCore, trailingEntries=-1)
        self.assertEqual(str(error), "trailingEntries must be at least 0")
        self.assertEqual(makeCore(trailingEntries=0).trailingEntries, 0)

    def test_installSnapshotToLeaderOfSameTermRefused(self) -> None:
        """
        InstallSnapshot claiming the term a server itself leads is refused
        with an InstallSnapshotResponse of its term, and nothing changes.
        """
        core = makeCore()
        makeLeader(core)
        ready = core.step("b", InstallSnapshot(1, 5, 1, 0, b"[]", True))
        self.assertEqual(ready.reply, InstallSnapshotResponse(1))
        self.assertEqual((core.role, core.log.compactedIndex), (LEADER, 0))

    def test_forgedMatchIndexIgnored(self) -> None:
        """
        A success answer claiming a matchIndex beyond the leader's own log
        cannot be true and is ignored: it neither commits nor moves progress.
        Reference: Figure 3 (Leader Append-Only; commitment needs real replicas).
        """
        core = makeCore()
        makeLeader(core)
        ready = core.step("b", AppendEntriesResponse(1, True, matchIndex=50))
        self.assertEqual((core.commitIndex, ready.committed, ready.messages), (0, [], []))
        self.assertEqual(core.progress("b").matchIndex, 0)
        core.step("b", AppendEntriesResponse(1, True, matchIndex=1))
        self.assertEqual(core.commitIndex, 1)

    def test_appendConflictingWithCommittedRefused(self) -> None:
        """
        AppendEntries that would overwrite a committed entry can only come
        from a faulty leader: it is refused and changes neither the log nor
        commitIndex.
        Reference: Figure 3 (State Machine Safety).
        """
        core = makeCore(terms=[1, 1, 1], hardState=HardState(2, None))
        core.step("b", AppendEntries(2, 3, 1, (), 2))
        self.assertEqual(core.commitIndex, 2)
        ready = core.step("b", AppendEntries(2, 1, 1, (Entry(2, 2, "evil"),), 3))
        self.assertEqual(ready.reply, AppendEntriesResponse(2, False))
        self.assertEqual((ready.truncateFrom, ready.entries, ready.committed), (None, [], []))
        self.assertEqual((termsOf(core), core.commitIndex), ([1, 1, 1], 2))

    def test_appendEntriesToLeaderOfSameTermRefused(self) -> None:
        """
        AppendEntries claiming the term a server itself leads is refused and
        the leader keeps its log and role (Election Safety makes it impossible).
        Reference: Figure 3 (Election Safety).
        """
        core = makeCore()
        makeLeader(core)
        ready = core.step("b", AppendEntries(1, 1, 1, (Entry(2, 1, "x"),), 2))
        self.assertEqual(ready.reply, AppendEntriesResponse(1, False))
        self.assertEqual((core.role, termsOf(core), core.commitIndex), (LEADER, [1], 0))


def run(net: RaftNetwork, ticks: int) -> None:
    """Tick everyone and deliver everything, C{ticks} times."""
    for _ in range(ticks):
        net.tick()
        net.deliver()


class PreVoteTests(SynchronousTestCase):
    """
    PreVote: a server asks whether it could win before it bumps its term.
    Reference: dissertation section 9.6.
    """

    def test_preVoteByDefault(self) -> None:
        """
        PreVote is on unless turned off: a core made without the option
        becomes a pre-candidate, not a candidate, when its timer fires.
        """
        core = RaftCore("a", THREE, electionTicks=(10, 20), heartbeatTicks=3, rng=random.Random(0))
        _, ready = ticksUntil(core, PRECANDIDATE)
        self.assertEqual(core.currentTerm, 0)
        self.assertTrue(all(message.preVote for _, message in ready.messages))

    def test_checkQuorumAndHeartbeatByDefault(self) -> None:
        """
        CheckQuorum is on unless turned off, and a leader heartbeats every
        10 ticks unless told otherwise: a core made without those options
        that wins and then hears from no one steps down after an election
        timeout, having sent heartbeats at ticks 10 and 20.
        """
        core = RaftCore("a", THREE, electionTicks=(30, 40), rng=random.Random(0))
        self.assertEqual((core.checkQuorum, core.heartbeatTicks), (True, 10))
        ticksUntil(core, PRECANDIDATE)
        core.step("b", RequestVoteResponse(1, True, preVote=True))
        core.step("b", RequestVoteResponse(1, True))
        self.assertEqual(core.role, LEADER)
        beats = []
        for number in range(1, 31):
            if core.tick().messages:
                beats.append(number)
        self.assertEqual(beats, [10, 20, 30])
        self.assertEqual(core.role, FOLLOWER)

    def test_stalePreVoteGrantDoesNotCancelAGrant(self) -> None:
        """
        In a cluster of five, a pre-vote grant left over from an earlier
        round does not take back the grant the same server just gave: with
        one more grant the pre-candidate has its three and campaigns.
        """
        names = ("a", "b", "c", "d", "e")
        core = makeCore(names=names, preVote=True, terms=[1])
        ticksUntil(core, PRECANDIDATE)
        core.step("b", RequestVoteResponse(2, True, preVote=True))
        core.step("b", RequestVoteResponse(1, True, preVote=True))
        self.assertEqual(core.role, PRECANDIDATE)
        core.step("c", RequestVoteResponse(2, True, preVote=True))
        self.assertEqual((core.role, core.currentTerm), (CANDIDATE, 2))

    def test_preCandidateKeepsTermAndVote(self) -> None:
        """
        A follower whose election timer fires first becomes a pre-candidate:
        its term and vote do not change (nothing to persist) and it asks
        every peer about the next term with C{preVote} set.
        """
        core = makeCore(preVote=True, hardState=HardState(3, "b"), terms=[1, 3])
        _, ready = ticksUntil(core, PRECANDIDATE)
        self.assertEqual((core.currentTerm, core.votedFor, core.leaderId), (3, "b", None))
        self.assertIsNone(ready.hardState)
        self.assertEqual(
            sorted(ready.messages),
            [(peer, RequestVote(4, 2, 3, preVote=True)) for peer in ("b", "c")],
        )

    def test_preVoteMajorityStartsElection(self) -> None:
        """
        With a majority of pre-votes (its own and one more of three), the
        pre-candidate starts a real election in the next term.
        """
        core = makeCore(preVote=True)
        ticksUntil(core, PRECANDIDATE)
        ready = core.step("b", RequestVoteResponse(1, True, preVote=True))
        self.assertEqual((core.role, core.currentTerm, core.votedFor), (CANDIDATE, 1, "a"))
        self.assertEqual(ready.hardState, HardState(1, "a"))
        self.assertIn(("c", RequestVote(1, 0, 0)), ready.messages)

    def test_stalePreVoteGrantsNotCounted(self) -> None:
        """
        A pre-vote granted for an earlier round does not count in this one,
        and a pre-vote answer that arrives after the round ended (here, to a
        follower) starts nothing.  Reference: dissertation section 9.6.
        """
        core = makeCore(preVote=True, terms=[1, 1])
        ticksUntil(core, PRECANDIDATE)
        self.assertEqual(core.currentTerm, 1)
        core.step("b", RequestVoteResponse(1, True, preVote=True))
        self.assertEqual((core.role, core.currentTerm), (PRECANDIDATE, 1))
        follower = makeCore(preVote=True, terms=[1, 1])
        follower.step("b", RequestVoteResponse(2, True, preVote=True))
        follower.step("c", RequestVoteResponse(2, True, preVote=True))
        self.assertEqual((follower.role, follower.currentTerm), (FOLLOWER, 1))

    def test_preVoteRefusalWithHigherTermStepsDown(self) -> None:
        """
        A refused pre-vote that carries a later term makes the pre-candidate
        a follower of that term.
        """
        core = makeCore(preVote=True)
        ticksUntil(core, PRECANDIDATE)
        core.step("b", RequestVoteResponse(7, False, preVote=True))
        self.assertEqual((core.role, core.currentTerm), (FOLLOWER, 7))

    def test_answeringPreVoteChangesNothing(self) -> None:
        """
        A server answers a pre-vote for a later term by the up-to-date
        rule alone and keeps its own term and vote, so a pre-vote round
        leaves no trace to persist.
        """
        core = makeCore(preVote=True, hardState=HardState(2, "c"), terms=[1, 2])
        ready = core.step("b", RequestVote(3, 2, 2, preVote=True))
        self.assertEqual(ready.reply, RequestVoteResponse(3, True, preVote=True))
        ready = core.step("c", RequestVote(3, 1, 1, preVote=True))
        self.assertEqual(ready.reply, RequestVoteResponse(2, False, preVote=True))
        self.assertEqual((core.currentTerm, core.votedFor), (2, "c"))
        self.assertIsNone(ready.hardState)

    def test_preVoteForCurrentTermRefused(self) -> None:
        """A pre-vote must be about a later term than the voter's."""
        core = makeCore(preVote=True, hardState=HardState(3, None))
        ready = core.step("b", RequestVote(3, 0, 0, preVote=True))
        self.assertEqual(ready.reply, RequestVoteResponse(3, False, preVote=True))

    def test_rejoiningNodeDoesNotDisruptLeader(self) -> None:
        """
        A follower cut off from the cluster for a long time keeps failing
        its pre-votes, so its term does not grow; when the partition heals,
        the healthy leader stays leader in the same term.  Without PreVote
        the same schedule deposes it.
        """
        for preVote, disrupted in [(True, False), (False, True)]:
            net = RaftNetwork(THREE, preVote=preVote, checkQuorum=preVote)
            net.runUntil(lambda net=net: net.leader() is not None, 200)
            leader = net.leader()
            term = net[leader].currentTerm
            lonely = next(n for n in THREE if n != leader)
            net.isolate(lonely)
            run(net, 200)
            net.heal()
            run(net, 50)
            stillLeading = net[leader].role == LEADER and net[leader].currentTerm == term
            self.assertEqual(stillLeading, not disrupted, f"preVote={preVote}")


class CheckQuorumTests(SynchronousTestCase):
    """
    CheckQuorum: leaders step down without a majority; followers that hear
    from a leader ignore vote requests.
    Reference: dissertation sections 6.2 and 4.2.3.
    """

    def test_isolatedLeaderStepsDown(self) -> None:
        """
        A leader cut off from every follower steps down within two
        minimum election timeouts (one full check window), and the others
        elect a new leader.
        """
        net = RaftNetwork(THREE, preVote=True, checkQuorum=True)
        net.runUntil(lambda: net.leader() is not None, 200)
        leader = net.leader()
        net.isolate(leader)
        ticks = net.runUntil(lambda: net[leader].role != LEADER, 100)
        self.assertLessEqual(ticks, 2 * net.electionTicks[0])
        others = [n for n in THREE if n != leader]
        net.runUntil(lambda: any(net[n].role == LEADER for n in others), 200)

    def test_leaderWithMajorityStays(self) -> None:
        """A leader that hears from a majority every window keeps leading."""
        net = RaftNetwork(THREE, preVote=True, checkQuorum=True)
        net.runUntil(lambda: net.leader() is not None, 200)
        leader = net.leader()
        term = net[leader].currentTerm
        net.cut(leader, next(n for n in THREE if n != leader))
        run(net, 300)
        self.assertEqual((net.leader(), net[leader].currentTerm), (leader, term))

    def test_quorumCheckedEveryMinimumTimeout(self) -> None:
        """
        A leader checks its quorum every minimum election timeout, counting
        from the last check: one that passed a check with a follower's
        answer and then hears nothing leads exactly one more window.
        """
        core = makeCore(checkQuorum=True)
        makeLeader(core)
        low = core.electionTicks[0]
        for _ in range(low - 1):
            core.tick()
        core.step("b", AppendEntriesResponse(core.currentTerm, True, matchIndex=1))
        core.tick()  # the first check: b answered
        self.assertEqual(core.role, LEADER)
        for _ in range(low - 1):
            core.tick()
        self.assertEqual(core.role, LEADER)
        core.tick()  # the second check: nobody answered
        self.assertEqual(core.role, FOLLOWER)

    def test_followerInLeaseIgnoresVoteRequests(self) -> None:
        """
        A follower that heard from its leader within the minimum election
        timeout refuses a higher-term RequestVote without adopting its term.
        """
        core = makeCore(checkQuorum=True)
        core.step("b", AppendEntries(2, 0, 0, (), 0))
        ready = core.step("c", RequestVote(5, 9, 4))
        self.assertEqual(ready.reply, RequestVoteResponse(2, False))
        self.assertEqual((core.currentTerm, core.leaderId), (2, "b"))
        core.tick()
        ready = core.step("c", RequestVote(5, 9, 4, preVote=True))
        self.assertEqual(ready.reply, RequestVoteResponse(2, False, preVote=True))

    def test_leaderIgnoresVoteRequests(self) -> None:
        """
        A leader is in its own lease: a higher-term RequestVote from a
        server that cannot hear it is refused, and the leader keeps its
        term and its role (dissertation section 4.2.3).
        """
        core = makeCore(checkQuorum=True)
        makeLeader(core)
        term = core.currentTerm
        ready = core.step("c", RequestVote(term + 3, 9, term))
        self.assertEqual(ready.reply, RequestVoteResponse(term, False))
        self.assertEqual((core.role, core.currentTerm), (LEADER, term))

    def test_followerOutOfLeaseVotes(self) -> None:
        """
        Once the minimum election timeout passes without word from the
        leader, the follower grants votes again.
        """
        core = makeCore(checkQuorum=True, electionTicks=(10, 30))
        core.step("b", AppendEntries(2, 0, 0, (), 0))
        for _ in range(10):
            core.tick()
        ready = core.step("c", RequestVote(5, 9, 4))
        self.assertEqual(ready.reply, RequestVoteResponse(5, True))


def snapshotOf(entries: Sequence[Entry], index: int) -> Snapshot:
    """A snapshot of a state machine that applied C{entries} up to C{index}."""
    return Snapshot(index, entries[index - 1].term, encodeApplied(entries[:index]))


class SnapshotTests(SynchronousTestCase):
    """
    Log compaction and InstallSnapshot.
    Reference: dissertation chapter 5, Figure 5.3.
    """

    def leaderWithBacklog(self, count: int = 30) -> tuple[RaftNetwork, str, str]:
        """
        A three-node network whose leader committed C{count} proposals while
        one follower was down, then compacted its log; return the network,
        the leader and the follower that is down.
        """
        net = RaftNetwork(THREE)
        net.runUntil(lambda: net.leader() is not None, 200)
        leader = net.leader()
        lagging = next(n for n in THREE if n != leader)
        net.crash(lagging)
        for number in range(count):
            net.propose(leader, [f"set k{number} {number}"])
            net.deliver()
        net.compact(leader, net[leader].commitIndex)
        return net, leader, lagging

    def test_compactForgetsPrefix(self) -> None:
        """
        Compacting keeps the snapshot's index and term as the log's base:
        the entries it covers are gone, later ones and lookups of the base
        term still work, and the snapshot is what followers will get.
        """
        net, leader, _ = self.leaderWithBacklog(10)
        core = net[leader]
        self.assertEqual(core.log.compactedIndex, core.commitIndex)
        self.assertEqual(core.log.term(core.log.compactedIndex), core.currentTerm)
        self.assertEqual(entriesOf(core), [])
        self.assertEqual(decodeApplied(core.snapshot.data), net.applied[leader])
        [entry] = net.propose(leader, ["set after compaction"])
        self.assertEqual(entry.index, core.log.compactedIndex + 1)

    def test_compactOnlyAppliedEntries(self) -> None:
        """The core refuses to compact past what it handed out to apply."""
        core = makeCore()
        makeLeader(core)
        core.propose(["set a 1"])
        entries = entriesOf(core)
        self.assertRaises(ValueError, core.compact, snapshotOf(entries, 2))

    def test_compactOnlyNewEntries(self) -> None:
        """
        Compacting again to the index the log already starts after is a
        driver bug: L{ValueError} saying so, and the log stays as it is.
        """
        net, leader, _ = self.leaderWithBacklog(10)
        core = net[leader]
        index = core.log.compactedIndex
        error = self.assertRaises(ValueError, core.compact, core.snapshot)
        self.assertEqual(str(error), f"cannot compact to {index}: not applied or not new")
        self.assertEqual(core.log.compactedIndex, index)

    def test_compactRefusesAnotherTerm(self) -> None:
        """
        A snapshot whose term is not the log's at its index is a driver bug:
        L{ValueError} saying so, and the log stays as it is.
        """
        net, leader, _ = self.leaderWithBacklog(10)
        core = net[leader]
        [entry] = net.propose(leader, ["set one more"])
        net.deliver()
        wrong = Snapshot(entry.index, entry.term + 1, b"[]")
        error = self.assertRaises(ValueError, core.compact, wrong)
        self.assertEqual(str(error), f"snapshot {entry.index} has the wrong term")
        self.assertLess(core.log.compactedIndex, entry.index)

    def test_laggingFollowerGetsSnapshot(self) -> None:
        """
        A follower that needs entries the leader compacted away receives the
        snapshot with InstallSnapshot, installs it (its state machine then
        holds exactly what the others applied) and is replicated to with
        AppendEntries after it.
        """
        net, leader, lagging = self.leaderWithBacklog()
        net.restart(lagging)
        net.runUntil(lambda: net[lagging].commitIndex == net[leader].commitIndex, 50)
        installs = [e for e in net.sent if isinstance(e.message, InstallSnapshot)]
        self.assertTrue(installs)
        self.assertEqual({e.dst for e in installs}, {lagging})
        self.assertEqual(net[lagging].log.compactedIndex, net[leader].log.compactedIndex)
        self.assertEqual(net.applied[lagging], net.applied[leader])
        [entry] = net.propose(leader, ["set later 1"])
        net.runUntil(lambda: entry in net.applied[lagging], 10)
        appends = [e.message for e in net.sent if e.dst == lagging and isAppend(e)]
        self.assertTrue(any(entry in message.entries for message in appends))

    def test_compactKeepsTrailingEntries(self) -> None:
        """
        A compaction keeps the last C{trailingEntries} entries its snapshot
        covers: the log's base is that many before the snapshot's index,
        which is still the snapshot followers get.
        """
        net = RaftNetwork(THREE, trailingEntries=4)
        net.runUntil(lambda: net.leader() is not None, 200)
        leader = net.leader()
        for number in range(10):
            net.propose(leader, [f"set k{number} {number}"])
            net.deliver()
        core = net[leader]
        snapshot = net.compact(leader, core.commitIndex)
        self.assertEqual(core.snapshotIndex, snapshot.index)
        self.assertEqual(core.log.compactedIndex, snapshot.index - 4)
        self.assertEqual(
            [e.index for e in entriesOf(core)], list(range(snapshot.index - 3, snapshot.index + 1))
        )
        self.assertEqual(core.snapshot, snapshot)

    def test_followerALittleBehindGetsEntries(self) -> None:
        """
        A follower that lacks only entries the leader kept after compacting
        is sent those entries, and no snapshot.
        """
        net = RaftNetwork(THREE, trailingEntries=20)
        net.runUntil(lambda: net.leader() is not None, 200)
        leader = net.leader()
        lagging = next(n for n in THREE if n != leader)
        net.crash(lagging)
        for number in range(10):
            net.propose(leader, [f"set k{number} {number}"])
            net.deliver()
        net.compact(leader, net[leader].commitIndex)
        self.assertLess(net[leader].log.compactedIndex, net.disks[lagging].entries[-1].index)
        net.restart(lagging)
        net.runUntil(lambda: net[lagging].commitIndex == net[leader].commitIndex, 50)
        self.assertEqual([e for e in net.sent if isinstance(e.message, InstallSnapshot)], [])
        self.assertEqual(net.applied[lagging], net.applied[leader])

    def test_leaderKeepsEntriesAfterASnapshotItSends(self) -> None:
        """
        While a follower receives a snapshot, its leader's compactions keep
        the entries after that snapshot, so once the follower holds it, it
        gets those entries rather than the next snapshot.
        """
        self.patch(txraft.core, "SNAPSHOT_CHUNK_BYTES", 64)
        net, leader, lagging = self.leaderWithBacklog()
        first = net[leader].snapshot
        net.restart(lagging)
        # The first chunk is out; the leader takes more writes and a snapshot.
        net.tick(leader, times=net.heartbeatTicks)
        net.deliver(hold=lambda e: isinstance(e.message, InstallSnapshot))
        for number in range(5):
            net.propose(leader, [f"set later{number} {number}"])
            net.deliver(hold=lambda e: e.dst == lagging)
        second = net.compact(leader, net[leader].commitIndex)
        self.assertGreater(second.index, first.index)
        self.assertEqual(net[leader].log.compactedIndex, first.index)
        net.runUntil(lambda: net[lagging].commitIndex == net[leader].commitIndex, 100)
        installed = {
            e.message.lastIncludedIndex
            for e in net.delivered
            if isinstance(e.message, InstallSnapshot) and e.dst == lagging
        }
        self.assertEqual(installed, {first.index})
        self.assertEqual(net.applied[lagging], net.applied[leader])

    def test_silentFollowerHoldsNoEntries(self) -> None:
        """
        A follower that has not answered since the leader's last election
        timeout keeps nothing in the leader's log, though it was being sent
        a snapshot: one that is down must not stop compaction.
        """
        self.patch(txraft.core, "SNAPSHOT_CHUNK_BYTES", 64)
        net, leader, lagging = self.leaderWithBacklog()
        first = net[leader].snapshot
        net.restart(lagging)
        net.tick(leader, times=net.heartbeatTicks)
        net.deliver(hold=lambda e: isinstance(e.message, InstallSnapshot) and e.message.offset > 0)
        self.assertIsNotNone(net[leader].progress(lagging).snapshot)
        net.crash(lagging)
        net.queue.clear()
        for number in range(5):
            net.propose(leader, [f"set later{number} {number}"])
            net.deliver()
        net.tick(leader, times=2 * net.electionTicks[0])
        second = net.compact(leader, net[leader].commitIndex)
        self.assertGreater(second.index, first.index)
        self.assertEqual(net[leader].log.compactedIndex, second.index)

    def test_snapshotSentInChunks(self) -> None:
        """
        A snapshot larger than one chunk goes in consecutive chunks, each
        acknowledged before the next, the last one marked done.
        """
        self.patch(txraft.core, "SNAPSHOT_CHUNK_BYTES", 64)
        net, leader, lagging = self.leaderWithBacklog()
        net.restart(lagging)
        net.runUntil(lambda: net[lagging].commitIndex == net[leader].commitIndex, 50)
        chunks = [e.message for e in net.delivered if isinstance(e.message, InstallSnapshot)]
        size = len(net[leader].snapshot.data)
        self.assertEqual(len(chunks), -(-size // 64))
        self.assertEqual([c.offset for c in chunks], list(range(0, size, 64)))
        self.assertEqual([c.done for c in chunks], [False] * (len(chunks) - 1) + [True])

    def test_lostChunkIsResent(self) -> None:
        """
        When a chunk is lost, the leader's next heartbeat resends it, and the
        follower still ends up with the whole snapshot.
        """
        self.patch(txraft.core, "SNAPSHOT_CHUNK_BYTES", 64)
        net, leader, lagging = self.leaderWithBacklog()
        net.restart(lagging)
        dropped: list[int] = []

        def dropThirdChunk(envelope: Envelope) -> bool:
            message = envelope.message
            if isinstance(message, InstallSnapshot) and message.offset == 128 and not dropped:
                dropped.append(message.offset)
                return True
            return False

        for _ in range(10):
            net.tick()
            net.deliver(hold=dropThirdChunk)
            net.queue.clear()  # the held chunk is lost
        net.runUntil(lambda: net[lagging].commitIndex == net[leader].commitIndex, 50)
        self.assertEqual(dropped, [128])
        self.assertEqual(net.applied[lagging], net.applied[leader])

    def test_installKeepsMatchingSuffix(self) -> None:
        """
        A snapshot whose last entry the follower holds (same index and term)
        replaces only the prefix: later entries stay.
        Reference: Figure 5.3, receiver rule 6.
        """
        core = makeCore(terms=[1, 1, 2, 2, 2])
        core.step("b", AppendEntries(2, 5, 2, (), 0))
        snapshot = snapshotOf(entriesOf(core), 3)
        ready = core.step("b", InstallSnapshot(2, 3, 2, 0, snapshot.data, done=True))
        self.assertEqual(ready.reply, InstallSnapshotResponse(2, 3, len(snapshot.data), 3))
        self.assertEqual(ready.snapshot, snapshot)
        self.assertIsNone(ready.truncateFrom)
        self.assertEqual((core.log.compactedIndex, core.log.lastIndex), (3, 5))
        self.assertEqual(core.commitIndex, 3)

    def test_installDiscardsConflictingLog(self) -> None:
        """
        A snapshot whose last entry the follower does not hold replaces the
        whole log, conflicting suffix included.
        Reference: Figure 5.3, receiver rule 7.
        """
        core = makeCore(terms=[1, 1, 1, 1, 1, 1])
        core.step("b", AppendEntries(3, 0, 0, (), 0))
        data = encodeApplied(makeEntries([1, 3, 3, 3]))
        ready = core.step("b", InstallSnapshot(3, 4, 3, 0, data, done=True))
        self.assertEqual(ready.reply.matchIndex, 4)
        self.assertEqual(ready.truncateFrom, 5)
        self.assertEqual(
            (core.log.compactedIndex, core.log.lastIndex, core.log.lastTerm), (4, 4, 3)
        )
        self.assertEqual(ready.committed, [])

    def test_snapshotAlreadyCovered(self) -> None:
        """
        A snapshot that ends at or before the follower's commit index changes
        nothing; the follower says how far it matches.
        """
        core = makeCore(terms=[1, 1, 1])
        core.step("b", AppendEntries(1, 3, 1, (), 3))
        ready = core.step("b", InstallSnapshot(1, 2, 1, 0, b"[]", done=True))
        self.assertEqual(ready.reply, InstallSnapshotResponse(1, 2, 0, matchIndex=3))
        self.assertIsNone(ready.snapshot)

    def test_chunkOutOfOrderAsksForStart(self) -> None:
        """
        A chunk of a snapshot whose start the follower never saw is not
        taken; the follower asks for offset 0.
        """
        core = makeCore()
        ready = core.step("b", InstallSnapshot(1, 9, 1, 64, b"x" * 10))
        self.assertEqual(ready.reply, InstallSnapshotResponse(1, 9, 0))
        self.assertIsNone(ready.snapshot)

    def test_strayChunkAfterCoveredSnapshot(self) -> None:
        """
        After a snapshot the follower's log already covers (it is answered
        at once and forgotten), a chunk from the middle of another snapshot
        is answered like any chunk whose start the follower never saw.
        """
        core = makeCore(terms=[1, 1, 1])
        core.step("b", AppendEntries(1, 3, 1, (), 3))
        core.step("b", InstallSnapshot(1, 2, 1, 0, b"x" * 10))
        ready = core.step("b", InstallSnapshot(1, 9, 1, 64, b"x" * 10))
        self.assertEqual(ready.reply, InstallSnapshotResponse(1, 9, 0))

    def test_strayChunkAfterInstall(self) -> None:
        """
        Once a snapshot is installed, a later chunk of another snapshot
        whose start the follower never saw is answered like any such chunk:
        send me offset 0.
        """
        core = makeCore()
        data = encodeApplied(makeEntries([1, 1]))
        ready = core.step("b", InstallSnapshot(1, 2, 1, 0, data, True))
        self.assertEqual(core.log.compactedIndex, 2)
        ready = core.step("b", InstallSnapshot(1, 9, 1, 64, b"x" * 10))
        self.assertEqual(ready.reply, InstallSnapshotResponse(1, 9, 0))

    def test_wholeSnapshotFlowsWithoutTicks(self) -> None:
        """
        Each chunk's answer brings the next chunk at once, and the answer to
        the last brings the entries after the snapshot: once started, a
        follower catches up with no heartbeat's help.
        """
        self.patch(txraft.core, "SNAPSHOT_CHUNK_BYTES", 64)
        net, leader, lagging = self.leaderWithBacklog()
        net.propose(leader, ["set after snapshot"])
        net.restart(lagging)
        for _ in range(net.heartbeatTicks + 1):
            net.tick(leader)
            if net.count(leader, lagging, InstallSnapshot):
                break
        net.deliver()
        self.assertGreater(net.count(leader, lagging, InstallSnapshot), 2)
        self.assertEqual(net[lagging].log.compactedIndex, net[leader].log.compactedIndex)
        self.assertEqual(net[lagging].log.lastIndex, net[leader].log.lastIndex)

    def test_entriesFollowASnapshotAtOnce(self) -> None:
        """
        A follower whose window of appends was full when the leader
        compacted past it gets the snapshot, and the answer that installs it
        brings the entries after it at once: the appends out before it take
        no place in the window.
        """
        net = RaftNetwork(THREE, maxInflightAppends=1)
        net.elect("a")
        net.deliver()
        [first] = net.propose("a", ["set k 1"])
        net.drop(lambda e: e.dst == "c")
        net.propose("a", ["set k 2"])
        net.deliver()
        self.assertEqual(net["a"].progress("c").inflight, [first.index])
        net.compact("a", net["a"].commitIndex)
        [later] = net.propose("a", ["set k 3"])
        while not net.count("a", "c", InstallSnapshot):
            net.tick("a")
        net.deliver()
        self.assertEqual(net["c"].log.lastIndex, later.index)

    def test_oneChunkInFlight(self) -> None:
        """
        While a chunk is unanswered, new proposals do not send the follower
        another one (dissertation section 5.1.1: one chunk at a time).
        """
        self.patch(txraft.core, "SNAPSHOT_CHUNK_BYTES", 64)
        net, leader, lagging = self.leaderWithBacklog()
        net.restart(lagging)

        def chunk(envelope: Envelope) -> bool:
            return isinstance(envelope.message, InstallSnapshot)

        for _ in range(net.heartbeatTicks + 1):
            net.tick(leader)
            net.deliver(hold=chunk)
            if net.count(leader, lagging, InstallSnapshot):
                break
        self.assertEqual(net.count(leader, lagging, InstallSnapshot), 1)
        for number in range(3):
            net.propose(leader, [f"set more {number}"])
            net.deliver(hold=chunk)
        self.assertEqual(net.count(leader, lagging, InstallSnapshot), 1)

    def leaderOwingSnapshotToC(self) -> RaftCore:
        """
        A leader of term 2 whose log was compacted to a snapshot of 200
        bytes at index 6 (four 64-byte chunks), which c, knowing nothing,
        needs.
        """
        self.patch(txraft.core, "SNAPSHOT_CHUNK_BYTES", 64)
        core = makeCore(terms=[1] * 5)
        makeLeader(core)
        core.step("b", AppendEntriesResponse(core.currentTerm, True, matchIndex=6))
        core.log.compact(6)
        core.snapshot = Snapshot(6, core.currentTerm, b"x" * 200)
        core.progress("c").nextIndex = 1
        return core

    def test_followerThatLostTheStartGetsItAtTheNextHeartbeat(self) -> None:
        """
        A follower that answers a chunk by asking for another offset (it
        restarted, and lost what it had) is not sent a second stream at
        once, but the chunk it asks for goes at the very next heartbeat.
        Reference: dissertation section 5.1.1.
        """
        core = self.leaderOwingSnapshotToC()

        def chunks(ready: Ready) -> list[int]:
            return [
                m.offset for p, m in ready.messages if p == "c" and isinstance(m, InstallSnapshot)
            ]

        for _ in range(3 * core.heartbeatTicks):
            if chunks(core.tick()) == [0]:
                break
        ready = core.step("c", InstallSnapshotResponse(core.currentTerm, 6, 64))
        self.assertEqual(chunks(ready), [64])
        ready = core.step("c", InstallSnapshotResponse(core.currentTerm, 6, 0))
        self.assertEqual(chunks(ready), [])
        sent = []
        for _ in range(core.heartbeatTicks):
            sent += chunks(core.tick())
        self.assertEqual(sent, [0])

    def test_unansweredChunkResentAfterAWholeInterval(self) -> None:
        """
        A chunk still unanswered at the first heartbeat after it went may
        just be slow: it is sent again at the next heartbeat, a whole
        interval later, not at once.  Reference: dissertation section
        5.1.1 (one chunk at a time).
        """
        core = self.leaderOwingSnapshotToC()

        def heartbeatChunks() -> list[int]:
            sent = []
            for _ in range(core.heartbeatTicks):
                ready = core.tick()
                sent += [m.offset for p, m in ready.messages if isinstance(m, InstallSnapshot)]
            return sent

        for _ in range(3):
            if heartbeatChunks() == [0]:
                break
        self.assertEqual(heartbeatChunks(), [])
        self.assertEqual(heartbeatChunks(), [0])

    def test_slowAnswersDoNotMultiplyChunks(self) -> None:
        """
        While a follower answers chunks slower than heartbeats come, each
        chunk is sent again only when unanswered for a whole heartbeat
        interval, and answers to copies start no second stream: the snapshot
        takes about one message per chunk, not one more stream per
        heartbeat (the old rule sent four times as many here).  Reference:
        dissertation section 5.1.1 (one chunk at a time).
        """
        self.patch(txraft.core, "SNAPSHOT_CHUNK_BYTES", 64)
        net, leader, lagging = self.leaderWithBacklog()
        snapshot = net[leader].snapshot
        assert snapshot is not None
        chunks = -(-len(snapshot.data) // 64)
        self.assertGreater(chunks, 5)
        net.restart(lagging)

        def answer(envelope: Envelope) -> bool:
            return isinstance(envelope.message, InstallSnapshotResponse)

        for _ in range(10 * chunks):
            if net[lagging].log.compactedIndex == snapshot.index:
                break
            # Answers take four heartbeat intervals to come back.
            for _ in range(4 * net.heartbeatTicks):
                net.tick(leader)
                net.deliver(hold=answer)
            net.deliver()
        self.assertEqual(net[lagging].log.compactedIndex, snapshot.index)
        # A chunk out for four intervals is resent at most twice, and the
        # answers to those copies send nothing more.
        self.assertLessEqual(net.count(leader, lagging, InstallSnapshot), 2 * chunks)

    def test_appendBehindSnapshotAcknowledged(self) -> None:
        """
        An AppendEntries whose prevLogIndex the follower's snapshot already
        covers is answered with success at the snapshot's index, so the
        leader moves on from there.
        """
        core = makeCore()
        data = encodeApplied(makeEntries([1, 1, 1]))
        core.step("b", InstallSnapshot(1, 3, 1, 0, data, True))
        ready = core.step("b", AppendEntries(1, 1, 1, (), 1))
        self.assertEqual(ready.reply, AppendEntriesResponse(1, True, matchIndex=3))

    def test_staleInstallSnapshotRefused(self) -> None:
        """An InstallSnapshot from an old term is refused with the current term."""
        core = makeCore(hardState=HardState(4, None))
        ready = core.step("b", InstallSnapshot(3, 9, 2, 0, b"[]", done=True))
        self.assertEqual(ready.reply, InstallSnapshotResponse(4))
        self.assertIsNone(ready.snapshot)

    def test_appliedEntriesCountAsCommitted(self) -> None:
        """
        A core rebuilt while the state machine has applied more than its
        snapshot covers (after a disk failure) starts with those entries
        committed: it does not hand them out again, and a snapshot from the
        leader that ends before them changes nothing.
        """
        entries = makeEntries([1, 1, 1, 1, 1])
        core = RaftCore(
            "a", THREE, hardState=HardState(1), entries=entries, commitIndex=4, preVote=False
        )
        self.assertEqual(core.commitIndex, 4)
        ready = core.step("b", AppendEntries(1, 5, 1, (), 5))
        self.assertEqual(ready.committed, entries[4:])
        ready = core.step("b", InstallSnapshot(1, 3, 1, 0, b"[]", done=True))
        self.assertIsNone(ready.snapshot)
        self.assertEqual(ready.reply.matchIndex, 5)
        self.assertRaises(ValueError, RaftCore, "a", THREE, entries=entries, commitIndex=6)

    def test_restartFromSnapshot(self) -> None:
        """
        A node restarted from a snapshot and the log after it starts with
        the snapshot's entries committed and applied, and catches up.
        """
        net, leader, _ = self.leaderWithBacklog()
        net.crash(leader)
        core = net.restart(leader)
        self.assertEqual(core.commitIndex, core.log.compactedIndex)
        self.assertEqual(len(net.applied[leader]), core.commitIndex)
        net.runUntil(lambda: net.leader() is not None and len(net.up()) == 2, 300)


def settled(net: RaftNetwork) -> bool:
    """Whether one running leader exists and every node is in its term."""
    leader = net.leader()
    return leader is not None and all(
        net[n].currentTerm == net[leader].currentTerm for n in net.up()
    )


class RandomizedTests(SynchronousTestCase):
    """
    Seeded random schedules on a five-server cluster, checking Figure 3's
    safety properties after every step (see L{RaftNetwork}).
    """

    def runSchedule(
        self, seed: int, ticks: int, compactEvery: int = 0, **options: bool
    ) -> RaftNetwork:
        """
        Run C{ticks} ticks of proposals (batched into AppendEntries of at
        most 40 bytes of commands), message drops and delays, leader
        isolations, cut links, crashes and restarts; then heal everything.
        """
        rng = random.Random(seed)
        net = RaftNetwork(
            FIVE,
            seed=seed,
            electionTicks=(10, 20),
            heartbeatTicks=3,
            maxAppendBytes=40,
            **options,
        )
        for number in range(ticks):
            roll = rng.random()
            leader = net.leader()
            if roll < 0.01 and leader is not None:
                net.isolate(leader)
            elif roll < 0.02:
                net.cut(*rng.sample(FIVE, 2))
            elif roll < 0.03:
                net.heal()
            elif roll < 0.035 and len(net.up()) > 1:
                net.crash(rng.choice(net.up()))
            elif roll < 0.05 and len(net.up()) < len(FIVE):
                net.restart(rng.choice([n for n in FIVE if n not in net.cores]))
            if compactEvery and number % compactEvery == 0:
                for name in net.up():
                    if net[name].commitIndex > net[name].log.compactedIndex:
                        net.compact(name, net[name].commitIndex)
            leaders = [n for n in net.up() if net[n].role == LEADER]
            if leaders and rng.random() < 0.3:
                net.propose(rng.choice(leaders), [f"set k{number % 7} {number}"])
            net.tick()
            net.deliverRandomly(rng, drop=0.1, delay=0.15)
        net.heal()
        for name in FIVE:
            if name not in net.cores:
                net.restart(name)
        return net

    def test_safetyAndConvergence(self) -> None:
        """
        Under drops, delays, reordering, partitions of the leader, crashes
        and restarts: at most one leader per term, logs match, every state
        machine applies a prefix of one sequence, commitIndex never
        decreases (all checked after every L{Ready}).  Once faults heal, a
        single leader emerges, a new proposal commits within a bounded
        number of ticks, and all logs become identical.
        Reference: Figure 3 (safety properties), section 5.
        """
        for seed in range(4):
            self.checkSafetyAndConvergence(seed)

    def test_safetyAndConvergenceWithPreVoteAndCheckQuorum(self) -> None:
        """
        The same schedules with PreVote and CheckQuorum on keep every safety
        property and still converge once faults heal.
        Reference: dissertation sections 9.6 and 6.2.
        """
        for seed in range(4):
            self.checkSafetyAndConvergence(seed, preVote=True, checkQuorum=True)

    def test_safetyAndConvergenceWithSnapshots(self) -> None:
        """
        The same schedules, every node compacting its log every 100 ticks:
        lagging and restarted nodes catch up through InstallSnapshot and
        every safety property still holds.
        Reference: dissertation chapter 5.
        """
        for seed in range(4):
            self.checkSafetyAndConvergence(seed, compactEvery=100, preVote=True, checkQuorum=True)

    def checkSafetyAndConvergence(self, seed: int, compactEvery: int = 0, **options: bool) -> None:
        """Run one schedule and check progress, convergence and identical logs."""
        net = self.runSchedule(seed, 1500, compactEvery, **options)
        self.assertGreater(len(net.leaders), 1, f"seed {seed}: no leader changes")
        self.assertGreater(len(net.committedLog), 50, f"seed {seed}: little progress")

        net.runUntil(lambda net=net: settled(net), 150)
        leader = net.leader()
        [entry] = net.propose(leader, [f"set final {seed}"])
        net.runUntil(lambda net=net, e=entry: all(e in net.applied[n] for n in FIVE), 30)
        first = max(net[n].log.firstIndex for n in FIVE)
        logs = [net[n].log.slice(first, net[n].log.lastIndex + 1) for n in FIVE]
        self.assertTrue(all(log == logs[0] for log in logs), f"seed {seed}")


class InvariantCheckerTests(SynchronousTestCase):
    """
    The safety checks of L{RaftNetwork} fire on violations, so the tests
    above that rely on them could fail.
    """

    def test_logMatchingViolation(self) -> None:
        """
        Two logs with the same term at an index but different entries before
        it violate Log Matching.
        Reference: Figure 3.
        """
        a = RaftCore("a", THREE, entries=[Entry(1, 1, "x"), Entry(2, 2, "y")])
        b = RaftCore("b", THREE, entries=[Entry(1, 1, "z"), Entry(2, 2, "y")])
        self.assertRaises(InvariantError, checkLogMatching, a, b)
        c = RaftCore("c", THREE, entries=[Entry(1, 1, "x"), Entry(2, 3, "w")])
        checkLogMatching(a, c)

    def test_divergentApplyDetected(self) -> None:
        """
        Two state machines applying different entries at one index violate
        State Machine Safety; applying out of order is caught too.
        Reference: Figure 3.
        """
        net = RaftNetwork(THREE)
        net._apply("a", [Entry(1, 1, "x")])
        self.assertRaises(InvariantError, net._apply, "b", [Entry(1, 1, "other")])
        self.assertRaises(InvariantError, net._apply, "c", [Entry(2, 1, "x")])

    def test_unpersistedLogDetected(self) -> None:
        """
        A L{Ready} whose entries do not continue the disk's log is caught.
        """
        net = RaftNetwork(THREE)
        self.assertRaises(InvariantError, net.handle, "a", Ready(entries=[Entry(2, 1, "x")]))
