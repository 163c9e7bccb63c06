"""
Reads without log writes (dissertation section 6.4, ReadIndex): the core's
leadership rounds (L{txraft.core.RaftCore.read}), the driver's queue of
reads (L{txraft.reads.ReadQueue}), and the driver answering them
(L{txraft.node.RaftNode}).  The simulation checks the same reads for
linearizability under faults (tests/test_simulation.py).
"""

from __future__ import annotations

from functools import partial

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import clientRequest
from tests.test_core import FIVE, THREE, makeCore, makeLeader, ticksUntil
from tests.test_node import buildNode, electS1
from txraft import answers
from txraft.core import CANDIDATE, FOLLOWER, LEADER, NotLeaderError, RaftCore
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    Message,
    RequestVoteResponse,
    Snapshot,
)
from txraft.node import RaftNode
from txraft.reads import PendingRead, ReadQueue
from txraft.replies import Reply


def leaderWithNoopCommitted(names: tuple[str, ...] = THREE) -> RaftCore:
    """Core C{a}, leader of term 1 with its no-op held by every follower."""
    core = makeCore("a", names)
    makeLeader(core)
    for peer in core.peers:
        core.step(peer, AppendEntriesResponse(core.currentTerm, True, matchIndex=1))
    assert core.commitIndex == 1
    return core


def ack(core: RaftCore, peer: str, round: int, success: bool = True) -> list[object]:
    """Step C{peer}'s answer carrying read round C{round}; return the reads it confirmed."""
    if success:
        answer = AppendEntriesResponse(
            core.currentTerm, True, matchIndex=core.log.lastIndex, readRound=round
        )
    else:
        answer = AppendEntriesResponse(
            core.currentTerm, False, rejectedIndex=0, hintIndex=0, readRound=round
        )
    return core.step(peer, answer).reads


class LeadershipRoundTests(SynchronousTestCase):
    """
    The core releases a read only once a majority has answered heartbeats
    sent after it came.  Reference: dissertation section 6.4, steps 2 and 3.
    """

    def test_onlyALeaderReads(self) -> None:
        """A follower refuses reads and names the leader it knows."""
        core = makeCore("b")
        core.step("a", AppendEntries(1, 0, 0, (), 0))
        with self.assertRaises(NotLeaderError) as caught:
            core.read(["r"])
        self.assertEqual(caught.exception.leaderId, "a")

    def test_roundOfHeartbeats(self) -> None:
        """
        A read sends every follower a heartbeat of a new round and is not
        released before any answer.
        """
        core = leaderWithNoopCommitted()
        ready = core.read(["r"])
        self.assertEqual(ready.reads, [])
        appends = {peer: m for peer, m in ready.messages if isinstance(m, AppendEntries)}
        self.assertEqual(sorted(appends), ["b", "c"])
        self.assertEqual({m.readRound for m in appends.values()}, {1})

    def test_probedFollowerGetsTheRoundToo(self) -> None:
        """
        A follower whose probe is still unanswered gets the round's
        heartbeat as well (the probe again): a read may need its answer.
        """
        core = leaderWithNoopCommitted()
        progress = core.progress("c")
        progress.probing = progress.probeSent = True
        ready = core.read(["r"])
        self.assertEqual(
            sorted(peer for peer, m in ready.messages if isinstance(m, AppendEntries)), ["b", "c"]
        )
        self.assertEqual(ack(core, "c", 1, success=False), ["r"])

    def test_majorityReleases(self) -> None:
        """In three servers, the leader and one follower's answer to the round release it."""
        core = leaderWithNoopCommitted()
        core.read(["r"])
        self.assertEqual(ack(core, "b", 1), ["r"])

    def test_fiveNeedTwoFollowers(self) -> None:
        """In five servers, one follower's answer is not a majority; two are."""
        core = leaderWithNoopCommitted(FIVE)
        core.read(["r"])
        self.assertEqual(ack(core, "b", 1), [])
        self.assertEqual(ack(core, "b", 1), [])
        self.assertEqual(ack(core, "c", 1), ["r"])

    def test_fourNeedThree(self) -> None:
        """
        In four servers a majority is three: the leader and one follower
        are not enough, whatever the order of the answers.
        """
        core = leaderWithNoopCommitted(("a", "b", "c", "d"))
        core.read(["r"])
        self.assertEqual(ack(core, "b", 1), [])
        self.assertEqual(ack(core, "d", 1), ["r"])

    def test_answerToEarlierHeartbeatDoesNotCount(self) -> None:
        """
        An answer to a heartbeat sent before the read came (an earlier
        round) proves nothing about the leader after it.
        """
        core = leaderWithNoopCommitted()
        core.read(["r"])
        self.assertEqual(ack(core, "b", 0), [])
        self.assertEqual(ack(core, "c", 0), [])

    def test_rejectionConfirmsToo(self) -> None:
        """
        A follower that refuses the entries still answers in the leader's
        term: it follows this leader, which is all a read needs.
        """
        core = leaderWithNoopCommitted()
        core.read(["r"])
        self.assertEqual(ack(core, "b", 1, success=False), ["r"])

    def test_roundFromTheFutureIgnored(self) -> None:
        """An answer claiming a round not yet sent confirms nothing."""
        core = leaderWithNoopCommitted()
        core.read(["r"])
        self.assertEqual(ack(core, "b", 2), [])
        self.assertEqual(ack(core, "b", 1), ["r"])

    def test_oneRoundOutSharedByWaitingReads(self) -> None:
        """
        Reads that come while a round is out send nothing and wait; when it
        returns, one new round serves all of them.
        """
        core = leaderWithNoopCommitted()
        core.read(["r1"])
        self.assertEqual(core.read(["r2"]).messages, [])
        self.assertEqual(core.read(["r3"]).messages, [])
        ready = core.step("b", AppendEntriesResponse(1, True, matchIndex=1, readRound=1))
        self.assertEqual(ready.reads, ["r1"])
        self.assertEqual(
            {m.readRound for _, m in ready.messages if isinstance(m, AppendEntries)}, {2}
        )
        self.assertEqual(ack(core, "c", 2), ["r2", "r3"])

    def test_heartbeatsCarryTheLatestRound(self) -> None:
        """
        Every later AppendEntries carries the latest round, so a lost
        heartbeat of a round is made up by the next one.
        """
        core = leaderWithNoopCommitted()
        core.read(["r"])
        ready = core.tick()
        for _ in range(core.heartbeatTicks):
            ready = core.tick()
            if ready.messages:
                break
        appends = [m for _, m in ready.messages if isinstance(m, AppendEntries)]
        self.assertEqual({m.readRound for m in appends}, {1})

    def test_singleServerReadsAtOnce(self) -> None:
        """A leader alone is its own majority: its reads are released at once."""
        core = makeCore("a", ("a",))
        ticksUntil(core, LEADER)
        ready = core.read(["r"])
        self.assertEqual((ready.reads, ready.messages), (["r"], []))

    def test_steppingDownDropsReads(self) -> None:
        """
        A leader that learns of a later term drops its reads; as leader
        again, answers to its old rounds release nothing.
        """
        core = leaderWithNoopCommitted()
        core.read(["r"])
        core.step("b", AppendEntriesResponse(5, False))
        self.assertEqual(core.role, FOLLOWER)
        for _ in range(200):
            core.tick()
            if core.role == CANDIDATE:
                break
        for peer in ("b", "c"):
            core.step(peer, RequestVoteResponse(core.currentTerm, True))
        self.assertEqual(core.role, LEADER)
        self.assertEqual(ack(core, "b", 1), [])

    def test_followerInSnapshotLeftOut(self) -> None:
        """
        A follower receiving a snapshot gets no heartbeat for a read: its
        chunks go at their own pace, and a read round would resend one.
        """
        core = leaderWithNoopCommitted()
        core.log.compact(1)
        core.snapshot = Snapshot(1, 1, b"{}")
        core.progress("c").nextIndex = 1  # c needs what the snapshot replaced
        while core.progress("c").snapshot is None:
            core.tick()
        ready = core.read(["r"])
        self.assertEqual(sorted(peer for peer, _ in ready.messages), ["b"])
        self.assertFalse(any(isinstance(m, InstallSnapshot) for _, m in ready.messages))


class FollowerEchoTests(SynchronousTestCase):
    """A follower's every answer to its leader carries the request's read round."""

    def test_success(self) -> None:
        """An accepted append is answered with its round."""
        core = makeCore("b")
        reply = core.step("a", AppendEntries(1, 0, 0, (Entry(1, 1, "x"),), 0, readRound=4)).reply
        self.assertEqual((reply.success, reply.readRound), (True, 4))

    def test_rejection(self) -> None:
        """A refused append (the logs do not match) is answered with its round."""
        core = makeCore("b")
        reply = core.step("a", AppendEntries(1, 3, 1, (), 0, readRound=9)).reply
        self.assertEqual((reply.success, reply.readRound), (False, 9))


class ReadQueueTests(SynchronousTestCase):
    """L{ReadQueue}: a read is answered once taken at its index and confirmed."""

    def setUp(self) -> None:
        self.queue = ReadQueue()
        self.state = {"applied": 0}
        #: The answer given to each read, by its command.
        self.given: dict[str, str] = {}

    def read(self, command: str, index: int, arrived: float = 0.0) -> PendingRead:
        """Queue a read of C{command} at C{index}; its answer goes to C{given}."""
        read = PendingRead(command, arrived, Reply(partial(self.given.__setitem__, command)))
        self.queue.add(read, index)
        return read

    def take(self, applied: int) -> None:
        """The state machine reached C{applied}: its state is that number."""
        self.queue.take(applied, lambda command: f"{command} at {applied}")

    def test_takenAtItsIndexAnsweredWhenConfirmed(self) -> None:
        """The value is the state at the read's index; the answer waits for confirmation."""
        read = self.read("get a", 3)
        self.take(2)
        self.assertEqual(read.value, None)
        self.take(3)
        self.assertNotIn(read.command, self.given)
        self.queue.confirm([read])
        self.assertEqual(self.given[read.command], "get a at 3")
        self.assertFalse(self.queue)

    def test_confirmedFirst(self) -> None:
        """A confirmed read is answered as soon as its index is applied."""
        read = self.read("get a", 3)
        self.queue.confirm([read])
        self.assertNotIn(read.command, self.given)
        self.take(3)
        self.assertEqual(self.given[read.command], "get a at 3")

    def test_nextIndex(self) -> None:
        """The queue says which index the next read to take needs."""
        self.assertIsNone(self.queue.nextIndex())
        self.read("r1", 2)
        self.read("r2", 5)
        self.assertEqual(self.queue.nextIndex(), 2)
        self.take(4)
        self.assertEqual(self.queue.nextIndex(), 5)

    def test_failUnconfirmedOnly(self) -> None:
        """A leader that stepped down fails the reads not confirmed and keeps the others."""
        kept, failed = self.read("r1", 1), self.read("r2", 1)
        self.queue.confirm([kept])
        self.queue.fail("lost", unconfirmedOnly=True)
        self.assertEqual(self.given[failed.command], "lost")
        self.take(1)
        self.assertEqual(self.given[kept.command], "r1 at 1")

    def test_failUntaken(self) -> None:
        """After a snapshot jumps past their index, reads not taken are failed."""
        taken, untaken = self.read("r1", 1), self.read("r2", 4)
        self.take(1)
        self.queue.failUntaken("jumped")
        self.assertEqual(self.given[untaken.command], "jumped")
        self.queue.confirm([taken])
        self.assertEqual(self.given[taken.command], "r1 at 1")

    def test_expire(self) -> None:
        """Reads that came at or before the deadline are answered; later ones wait."""
        early, late = self.read("r1", 1, arrived=1.0), self.read("r2", 1, arrived=2.0)
        self.queue.expire(1.0, "late")
        self.assertEqual(self.given[early.command], "late")
        self.assertNotIn(late.command, self.given)


def acknowledge(node: RaftNode, sent: list[tuple[str, Message]], peer: str = "s2") -> None:
    """Let C{peer} accept every AppendEntries sent to it so far, answering its read round."""
    for to, message in list(sent):
        if to == peer and isinstance(message, AppendEntries):
            last = message.prevLogIndex + len(message.entries)
            node.peerResponse(
                peer,
                AppendEntriesResponse(
                    message.term, True, matchIndex=last, readRound=message.readRound
                ),
            )
    sent.clear()


def confirmWithoutEntries(node: RaftNode) -> None:
    """Let s2 answer s1's first read round while holding none of its new entries."""
    node.peerResponse(
        "s2",
        AppendEntriesResponse(
            node.core.currentTerm, False, rejectedIndex=0, hintIndex=0, readRound=1
        ),
    )


class DriverReadTests(SynchronousTestCase):
    """The driver answers reads from the state at their index, without a log entry."""

    def leader(self, **options: object) -> tuple[RaftNode, object, list[tuple[str, Message]]]:
        """s1, leader of three with its no-op committed, and s2's key a = 1."""
        node, clock, sent = buildNode(("s1", "s2", "s3"), **options)
        electS1(node, sent)
        acknowledge(node, sent)
        clientRequest(node, "c", "set a 1")
        clock.advance(0)
        acknowledge(node, sent)
        self.assertEqual(node.logManager.stateMachine.data, {"a": "1"})
        sent.clear()
        return node, clock, sent

    def test_readWritesNoEntry(self) -> None:
        """A read appends nothing to the log and is answered once a follower confirms."""
        node, clock, sent = self.leader()
        lastIndex = node.core.log.lastIndex
        answer = clientRequest(node, "c", "get a")
        clock.advance(0)
        self.assertNoResult(answer)
        acknowledge(node, sent)
        self.assertEqual(self.successResultOf(answer), "OK 1")
        self.assertEqual(node.core.log.lastIndex, lastIndex)

    def test_seesEarlierWritesNotLater(self) -> None:
        """
        Pipelined in one turn, C{set a 2; get a; set a 3}: the read sees the
        write before it and not the one after, though both commit together.
        """
        node, clock, sent = self.leader()
        requests = ["set a 2", "get a", "set a 3", "show"]
        results = [clientRequest(node, "c", text) for text in requests]
        clock.advance(0)
        acknowledge(node, sent)
        self.assertEqual(
            [self.successResultOf(d) for d in results], ["OK", "OK 2", "OK", 'OK {"a": "3"}']
        )

    def test_newLeaderWaitsForItsNoop(self) -> None:
        """
        A new leader confirmed by a majority still answers no read before
        its no-op commits: until then it may not know every committed write.
        """
        node, clock, sent = buildNode(("s1", "s2", "s3"))
        electS1(node, sent)
        answer = clientRequest(node, "c", "get a")
        clock.advance(0)
        confirmWithoutEntries(node)
        self.assertNoResult(answer)
        acknowledge(node, sent)
        self.assertEqual(self.successResultOf(answer), "NOT_FOUND")

    def test_leadershipLost(self) -> None:
        """A leader deposed before a majority confirmed it fails its reads, to be sent again."""
        node, clock, sent = self.leader()
        answer = clientRequest(node, "c", "get a")
        clock.advance(0)
        node.peerRequest("s3", AppendEntries(node.core.currentTerm + 1, 0, 0, (), 0))
        self.assertEqual(self.successResultOf(answer), answers.READ_LEADERSHIP_LOST)
        self.assertIn(answers.READ_LEADERSHIP_LOST, answers.NOT_EXECUTED)

    def confirmedButNotApplied(self) -> tuple[RaftNode, object, list[tuple[str, Message]], object]:
        """
        s1 leads, took C{set a 2} and then C{get a}; s2 confirmed the read's
        round but holds no new entry, so the read waits for its index.
        """
        node, clock, sent = self.leader()
        clientRequest(node, "c", "set a 2")
        answer = clientRequest(node, "c", "get a")
        clock.advance(0)
        confirmWithoutEntries(node)
        self.assertNoResult(answer)
        return node, clock, sent, answer

    def test_confirmedReadOutlivesItsLeader(self) -> None:
        """
        A read whose leader was confirmed stays linearizable after that
        leader steps down: it is answered from the state at its index once
        the entry commits under the next leader.
        """
        node, clock, sent, answer = self.confirmedButNotApplied()
        term, last = node.core.currentTerm, node.core.log.lastIndex
        previous = node.core.log.entry(last).term
        node.peerRequest("s2", AppendEntries(term + 1, last, previous, (), node.core.commitIndex))
        self.assertEqual(node.core.role, FOLLOWER)
        self.assertNoResult(answer)
        noop = Entry(last + 1, term + 1, "noop")
        node.peerRequest("s2", AppendEntries(term + 1, last, previous, (noop,), last + 1))
        self.assertEqual(self.successResultOf(answer), "OK 2")

    def test_snapshotPastAWaitingRead(self) -> None:
        """
        A read still waiting for its index when the node installs a snapshot
        past it (its leader stepped down) cannot take the state there: it is
        answered that its leadership was lost, to be sent again.
        """
        node, clock, sent, answer = self.confirmedButNotApplied()
        term = node.core.currentTerm
        last = node.core.log.lastIndex
        data = b'{"a":"9"}'
        node.peerRequest("s2", InstallSnapshot(term + 1, last + 5, term + 1, 0, data, True))
        self.assertEqual(self.successResultOf(answer), answers.READ_LEADERSHIP_LOST)

    def test_followerRedirects(self) -> None:
        """A follower answers a read with a redirect to its leader, as any command."""
        node, clock, sent = buildNode(("s1", "s2", "s3"))
        node.peerRequest("s2", AppendEntries(1, 0, 0, (), 0))
        self.assertTrue(clientRequest(node, "c", "get a").startswith("REDIRECT s2 "))

    def test_timeout(self) -> None:
        """A read no majority confirms within the commit timeout is answered so."""
        node, clock, sent = self.leader(commitTimeout=0.01)
        answer = clientRequest(node, "c", "get a")
        clock.advance(0)
        clock.advance(0.02)
        node.ticks(1)
        self.assertEqual(self.successResultOf(answer), answers.READ_TIMEOUT)

    def test_stopAnswersReads(self) -> None:
        """A node that stops answers every read still waiting."""
        node, clock, sent = self.leader()
        waiting = clientRequest(node, "c", "get a")
        clock.advance(0)
        arriving = clientRequest(node, "c", "get a")
        node.stop()
        self.assertEqual(self.successResultOf(waiting), answers.SHUTTING_DOWN)
        self.assertEqual(self.successResultOf(arriving), answers.SHUTTING_DOWN)
