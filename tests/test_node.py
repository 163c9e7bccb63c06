"""
Tests for L{txraft.node.RaftNode}, the driver, on its own: a clock from
C{twisted.internet.task}, a list for the network, memory stores.  The
service tests (tests/test_service.py) run it inside its Twisted plumbing,
and the simulation (tests/simulation) runs it under faults.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.helpers import RecordingLogStore, clientRequest, makeConfig
from tests.simulation import Simulation
from tests.simulation.clock import NodeClock
from tests.simulation.nodes import NodeObserver
from txraft import answers
from txraft.core import LEADER, RaftCore
from txraft.interfaces import INodeObserver, IRequestHandler, IResponseHandler, IStateMachine
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
)
from txraft.node import MAX_BACKLOG, NullObserver, RaftNode, _ObservedReply
from txraft.replies import AlreadyAnsweredError
from txraft.snapshotting import inBackground
from txraft.storage import MemoryLogStore, MemoryStateStore, StorageError


@implementer(INodeObserver)
class RecordingObserver(NullObserver):
    """An L{INodeObserver} that lists the driver's steps by name."""

    def __init__(self) -> None:
        self.steps: list[str] = []

    def coreStarted(self, core: object) -> None:
        """Record a new core."""
        self.steps.append("coreStarted")

    def persisted(self, ready: object) -> None:
        """Record a persisted Ready."""
        self.steps.append("persisted")

    def snapshotInstalled(self, snapshot: object) -> None:
        """Record an installed snapshot."""
        self.steps.append("snapshotInstalled")

    def applied(self, results: object) -> None:
        """Record applied entries (only when there were some)."""
        if results:
            self.steps.append("applied")

    def snapshotSaved(self, snapshot: object) -> None:
        """Record a saved snapshot."""
        self.steps.append("snapshotSaved")

    def diskFailed(self, error: str) -> None:
        """Record a disk failure."""
        self.steps.append("diskFailed")


def buildNode(
    names: tuple[str, ...] = ("s1",),
    observer: INodeObserver | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> tuple[RaftNode, Clock, list[tuple[str, Message]]]:
    """
    A driver for s1 of a cluster of C{names}, its clock (a new one unless
    given), and what it sent; C{options} go to L{RaftNode}.
    """
    clock = clock if clock is not None else Clock()
    sent: list[tuple[str, Message]] = []
    manager = options.pop("logManager", None)
    node = RaftNode(
        "s1",
        makeConfig(names),
        manager or LogManager(MemoryLogStore(), MemoryStateStore(), KeyValueStore()),
        clock,
        lambda peer, message: sent.append((peer, message)),
        electionTicks=(10, 20),
        heartbeatTicks=3,
        rng=random.Random(7),
        observer=observer,
        **options,
    )
    return node, clock, sent


def heldWrites() -> tuple[list[defer.Deferred[Any]], Callable[[Callable[[], Any]], Any]]:
    """
    A background runner for snapshots that holds each write until the test
    fires its Deferred, and the list of those Deferreds.
    """
    writes: list[defer.Deferred[Any]] = []

    def background(work: Callable[[], Any]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        writes.append(d)
        return d.addCallback(lambda _: work())

    return writes, background


class InterfaceTests(SynchronousTestCase):
    """Every side of each seam provides the interface it is written against."""

    def test_driver(self) -> None:
        """
        The driver is what the listening protocol (L{IRequestHandler}) and
        the peer links (L{IResponseHandler}) need.
        """
        node, _, _ = buildNode()
        self.assertTrue(verifyObject(IRequestHandler, node))
        self.assertTrue(verifyObject(IResponseHandler, node))

    def test_stateMachine(self) -> None:
        """The key-value store is an L{IStateMachine}, as the LogManager expects."""
        self.assertTrue(verifyObject(IStateMachine, KeyValueStore()))

    def test_observers(self) -> None:
        """
        The default observer, this module's recording one and the
        simulation's checking one all provide L{INodeObserver}.
        """
        sim = Simulation(1)
        self.assertTrue(verifyObject(INodeObserver, NullObserver()))
        self.assertTrue(verifyObject(INodeObserver, RecordingObserver()))
        self.assertTrue(verifyObject(INodeObserver, NodeObserver(sim.nodes["n1"])))

    def test_simulatedClock(self) -> None:
        """The simulation's clock is an C{IReactorTime}, as the driver expects."""
        sim = Simulation(1)
        node = sim.nodes["n1"]
        node.start()
        self.assertTrue(verifyObject(IReactorTime, NodeClock(sim.events, node)))


class DriverTests(SynchronousTestCase):
    """The driver's loop, on a clock it was given."""

    def test_singleNodeCommitsOnItsClock(self) -> None:
        """
        A one-node cluster elects itself on ticks alone; a command waits for
        the group commit that the driver schedules on its clock with
        C{callLater(0)}, then is answered once applied.
        """
        node, clock, sent = buildNode()
        node.ticks(20)
        for _ in range(20):
            node.ticks(1)
        self.assertEqual(node.core.role, LEADER)
        answer = clientRequest(node, "c1", "set a 1")
        self.assertNoResult(answer)
        clock.advance(0)
        self.assertEqual(self.successResultOf(answer), answers.OK)
        self.assertEqual(node.logManager.stateMachine.data, {"a": "1"})
        self.assertEqual(sent, [])

    def test_ticksCatchUpByAtMostOneHeartbeat(self) -> None:
        """
        Many ticks at once (after a stall) count as at most one heartbeat
        interval, so a node reads what its peers sent before it times out.
        """
        node, _, sent = buildNode(("s1", "s2", "s3"))
        node.ticks(1000)
        self.assertEqual(node.core._electionElapsed, 3)
        self.assertEqual(sent, [])

    def test_sendsThroughItsSendFunction(self) -> None:
        """A node whose election timer fires asks each peer through C{send}."""
        node, _, sent = buildNode(("s1", "s2", "s3"))
        for _ in range(20):
            node.ticks(1)
        self.assertEqual(sorted(peer for peer, _ in sent), ["s2", "s3"])
        self.assertTrue(all(isinstance(message, RequestVote) for _, message in sent))

    def test_observerSeesEachStepInOrder(self) -> None:
        """
        The observer hears of the core at start, then of each Ready once it
        is durable, then of what it applied.
        """
        observer = RecordingObserver()
        node, clock, _ = buildNode(observer=observer)
        self.assertEqual(observer.steps, ["coreStarted"])
        self.assertIsInstance(node.core, RaftCore)
        for _ in range(20):
            node.ticks(1)
        clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        self.assertEqual(observer.steps[0], "coreStarted")
        self.assertEqual(observer.steps[-2:], ["persisted", "applied"])
        self.assertNotIn("diskFailed", observer.steps)


def electS1(node: RaftNode, sent: list[tuple[str, Message]]) -> None:
    """Make s1 of a three-node cluster leader: s2 grants whatever s1 asks."""
    for _ in range(100):
        node.ticks(1)
        if node.core.role == LEADER:
            return
        asks = [m for peer, m in sent if peer == "s2" and isinstance(m, RequestVote)]
        sent.clear()
        for ask in asks:
            node.peerResponse("s2", RequestVoteResponse(ask.term, True, preVote=ask.preVote))
    raise AssertionError("s1 was not elected")


class SubmitTests(SynchronousTestCase):
    """How a client's request reaches the node and its answer comes back."""

    def test_failedAdministrativeCommand(self) -> None:
        """
        An operator's command whose work fails unexpectedly is answered
        C{ERROR internal error} once, and the failure is logged.
        """
        node, _, _ = buildNode()
        electSingleNode(node)
        failing: defer.Deferred[str] = defer.Deferred()
        node.admin.execute = lambda command: failing  # type: ignore[method-assign]
        given: list[str] = []
        node.submit(None, "members", None, given.append)
        self.assertEqual(given, [])
        failing.errback(RuntimeError("boom"))
        self.assertEqual(given, ["ERROR internal error"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_answerThatFailsIsGivenOnce(self) -> None:
        """
        When passing an operator's answer on fails, the failure is logged
        and the request is not answered a second time.
        """
        node, _, _ = buildNode()
        electSingleNode(node)
        later: defer.Deferred[str] = defer.Deferred()
        node.admin.execute = lambda command: later  # type: ignore[method-assign]
        given: list[str] = []

        def respond(answer: str) -> None:
            given.append(answer)
            raise RuntimeError("the connection is gone")

        node.submit(None, "members", None, respond)
        later.callback("OK members")
        self.assertEqual(given, ["OK members"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ParallelWriteTests(SynchronousTestCase):
    """
    A leader sends its new entries to its followers before its own fsync,
    which comes at the next turn of the reactor.  Reference: dissertation
    section 10.2.1.
    """

    def setUp(self) -> None:
        """s1 leads three nodes; its log store and its sends record, in one list."""
        self.events: list[tuple[str, object]] = []
        self.sent: list[tuple[str, Message]] = []
        self.clock = Clock()
        self.logStore = RecordingLogStore(self.events)

        def send(peer: str, message: Message) -> None:
            self.sent.append((peer, message))
            self.events.append(("send", peer))

        self.node = RaftNode(
            "s1",
            makeConfig(("s1", "s2", "s3")),
            LogManager(self.logStore, MemoryStateStore(), KeyValueStore()),
            self.clock,
            send,
            electionTicks=(10, 20),
            heartbeatTicks=3,
            rng=random.Random(7),
        )
        electS1(self.node, self.sent)

    def settle(self) -> None:
        """Let s1 sync its no-op and both followers acknowledge it."""
        self.clock.advance(0)
        term = self.node.core.currentTerm
        for peer in ("s2", "s3"):
            self.node.peerResponse(peer, AppendEntriesResponse(term, True, matchIndex=1))
        self.events.clear()

    def test_replyWaitsForWrittenEntries(self) -> None:
        """
        A leader deposed before its fsync ran syncs what it wrote before it
        answers anyone: its answer says how far its log matches.
        """
        term = self.node.core.currentTerm
        self.assertTrue(self.node.logManager.unsynced)
        reply = self.node.peerRequest("s2", AppendEntries(term + 1, 1, term, (), 0))
        self.assertEqual(reply, AppendEntriesResponse(term + 1, True, matchIndex=1))
        self.assertEqual(self.logStore.durable, [Entry(1, term, "noop")])
        self.assertEqual(self.node.core.durableIndex, 1)
        # The fsync due at the next turn finds nothing left to do.
        self.clock.advance(0)
        self.assertEqual(self.events.count(("sync", None)), 1)

    def test_durableThroughAnotherReadyCommits(self) -> None:
        """
        Entries made durable by the fsync of another Ready (here the one
        answering a pre-vote) count at once: the leader commits what a
        follower holds too, and applies it.
        """
        term = self.node.core.currentTerm
        self.node.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=1))
        self.assertEqual(self.node.core.commitIndex, 0)
        self.node.peerRequest("s3", RequestVote(term + 1, 1, term, preVote=True))
        self.assertEqual(self.node.core.commitIndex, 1)
        self.assertEqual(self.node.logManager.lastApplied, 1)

    def test_onlyALeadersMessagesGoFirst(self) -> None:
        """
        Any answer, even one that persists nothing (a pre-vote's), waits
        for what the node wrote: only a leader's own messages go out before
        its log is durable.
        """
        term = self.node.core.currentTerm
        self.node.peerRequest("s3", RequestVote(term + 1, 1, term, preVote=True))
        self.assertFalse(self.node.logManager.unsynced)
        self.assertEqual(self.logStore.durable, [Entry(1, term, "noop")])

    def test_sendsBeforeItsFsync(self) -> None:
        """The entries are written, sent to both followers, then synced."""
        self.settle()
        clientRequest(self.node, "c1", "set a 1")
        self.clock.advance(0)
        term = self.node.core.currentTerm
        self.assertEqual(
            self.events,
            [
                ("append", [Entry(2, term, "set a 1")]),
                ("send", "s2"),
                ("send", "s3"),
                ("sync", None),
            ],
        )
        self.assertEqual(self.node.core.durableIndex, 2)

    def test_fsyncFailureAfterSending(self) -> None:
        """
        A leader whose fsync fails after it sent the entries answers its
        client that its disk failed, never C{OK}, and falls silent.
        """
        self.settle()
        answer = clientRequest(self.node, "c1", "set a 1")

        def failingSync(point: object) -> None:
            raise OSError("no space left on device")

        self.logStore.syncTo = failingSync  # type: ignore[method-assign]
        self.clock.advance(0)
        self.assertTrue(self.node.silent)
        self.assertEqual(self.node.diskError, "no space left on device")
        self.assertEqual(self.successResultOf(answer), answers.DISK_FAILED)
        self.assertEqual(self.node.core.durableIndex, 1)

    def test_answeredOnceDurableOnAMajority(self) -> None:
        """
        The command is answered once the leader's copy is durable and one
        follower's acknowledgment came; the leader's own fsync ran once.
        """
        self.settle()
        answer = clientRequest(self.node, "c1", "set a 1")
        self.clock.advance(0)
        self.assertNoResult(answer)
        term = self.node.core.currentTerm
        self.node.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=2))
        self.assertEqual(self.successResultOf(answer), "OK")
        self.assertEqual(self.events.count(("sync", None)), 1)


class BackgroundSyncTests(SynchronousTestCase):
    """
    A leader's fsync of its own entries runs off the event loop
    (C{syncInBackground}): the node goes on meanwhile, and counts itself
    for the entries the fsync covered once it returns.
    """

    def setUp(self) -> None:
        """s1 leads three nodes; each background sync waits in C{self.syncs} to be run."""
        self.events: list[tuple[str, object]] = []
        self.sent: list[tuple[str, Message]] = []
        self.clock = Clock()
        self.logStore = RecordingLogStore(self.events)
        self.syncs: list[tuple[defer.Deferred[None], Callable[[], None]]] = []

        def syncInBackground(work: Callable[[], None]) -> defer.Deferred[None]:
            d: defer.Deferred[None] = defer.Deferred()
            self.syncs.append((d, work))
            return d

        self.node = RaftNode(
            "s1",
            makeConfig(("s1", "s2", "s3")),
            LogManager(self.logStore, MemoryStateStore(), KeyValueStore()),
            self.clock,
            lambda peer, message: self.sent.append((peer, message)),
            electionTicks=(10, 20),
            heartbeatTicks=3,
            rng=random.Random(7),
            syncInBackground=syncInBackground,
        )
        electS1(self.node, self.sent)
        self.clock.advance(0)
        self.finishSync()
        self.term = self.node.core.currentTerm
        for peer in ("s2", "s3"):
            self.node.peerResponse(peer, AppendEntriesResponse(self.term, True, matchIndex=1))

    def finishSync(self) -> None:
        """Run the oldest background sync, then fire its Deferred."""
        d, work = self.syncs.pop(0)
        work()
        d.callback(None)

    def test_appliedOnceItsOwnCopyIsDurable(self) -> None:
        """
        Both followers' acknowledgments commit the entry, but the leader
        applies it, and answers, only once its own fsync has returned: a
        disk that fails meanwhile never leaves its state machine ahead of
        its log.
        """
        answer = clientRequest(self.node, "c1", "set a 1")
        self.clock.advance(0)
        self.assertEqual(len(self.syncs), 1)
        self.assertEqual(self.node.core.durableIndex, 1)
        for peer in ("s2", "s3"):
            self.node.peerResponse(peer, AppendEntriesResponse(self.term, True, matchIndex=2))
        self.assertEqual(self.node.core.commitIndex, 2)
        self.assertEqual(self.node.logManager.lastApplied, 1)
        self.assertNoResult(answer)
        self.finishSync()
        self.assertEqual(self.node.core.durableIndex, 2)
        self.assertEqual(self.successResultOf(answer), "OK")

    def test_entriesWrittenMeanwhileGetTheirOwnSync(self) -> None:
        """
        While a sync runs the node takes, writes and sends more entries,
        and starts no second sync; once the first returns it counts only
        the entries that sync covered, and syncs the rest.
        """
        clientRequest(self.node, "c1", "set a 1")
        self.clock.advance(0)
        clientRequest(self.node, "c1", "set b 2")
        self.clock.advance(0)
        self.assertEqual(len(self.syncs), 1)
        self.assertEqual(self.node.core.log.lastIndex, 3)
        self.assertEqual([message.entries[-1].index for _, message in self.sent[-2:]], [3, 3])
        self.finishSync()
        self.assertEqual(self.node.core.durableIndex, 2)
        self.assertEqual([e.index for e in self.logStore.durable], [1, 2])
        self.clock.advance(0)
        self.assertEqual(len(self.syncs), 1)
        self.finishSync()
        self.assertEqual(self.node.core.durableIndex, 3)
        self.assertFalse(self.node.logManager.unsynced)

    def test_cutEntriesNotCounted(self) -> None:
        """
        A leader deposed while its sync runs, whose entry the new leader
        replaces, tells its core nothing when the old sync returns: that
        sync covered the entry that was cut, not the one now at its index
        (whatever makes that one durable tells the core so itself).
        """
        clientRequest(self.node, "c1", "set a 1")
        self.clock.advance(0)
        newer = AppendEntries(self.term + 1, 1, self.term, (Entry(2, self.term + 1, "noop"),), 1)
        reply = self.node.peerRequest("s2", newer)
        self.assertEqual(reply, AppendEntriesResponse(self.term + 1, True, matchIndex=2))
        told: list[int] = []
        self.patch(self.node.core, "persisted", told.append)
        self.finishSync()
        self.assertEqual(told, [])

    def test_failureSilencesTheNode(self) -> None:
        """
        A background sync that fails silences the node, and its clients
        are told the disk failed.
        """
        answer = clientRequest(self.node, "c1", "set a 1")
        self.clock.advance(0)
        d, _ = self.syncs.pop(0)
        d.errback(OSError("no space left on device"))
        self.assertTrue(self.node.silent)
        self.assertEqual(self.node.diskError, "no space left on device")
        self.assertEqual(self.successResultOf(answer), answers.DISK_FAILED)

    def test_lateSyncOfASilencedNodeIgnored(self) -> None:
        """A sync that returns after the node fell silent counts nothing."""
        clientRequest(self.node, "c1", "set a 1")
        self.clock.advance(0)
        self.node.stop()
        self.finishSync()
        self.assertEqual(self.node.core.durableIndex, 1)


class BacklogTests(SynchronousTestCase):
    """
    A leader that holds too many client requests says so, and when it has
    drained, so that its clients' connections stop reading meanwhile.
    """

    def test_overloadedUntilDrainedToHalf(self) -> None:
        """
        With C{maxBacklog} requests unanswered the node is overloaded: the
        Deferred it gives fires once it holds half as many, as commands are
        applied (not at the next tick), and not before; it fires in the
        reactor's next turn, so that the turn that answered the requests
        does not also read as many new ones.
        """
        self.assertEqual(buildNode()[0].maxBacklog, MAX_BACKLOG)
        raft, clock, sent = buildNode(("s1", "s2", "s3"), maxBacklog=4)
        electS1(raft, sent)
        term = raft.core.currentTerm
        for number in range(3):
            clientRequest(raft, "c1", f"set k{number} v")
        self.assertIsNone(raft.overloaded())
        clientRequest(raft, "c1", "set k3 v")
        drained = raft.overloaded()
        clock.advance(0)
        self.assertNoResult(drained)
        raft.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=2))
        self.assertEqual(raft.backlog(), 3)
        self.assertNoResult(drained)
        # Still overloaded while above half, though below the bound.
        later = raft.overloaded()
        raft.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=3))
        self.assertNoResult(drained)
        clock.advance(0)
        self.assertIsNone(self.successResultOf(drained))
        self.assertIsNone(self.successResultOf(later))
        self.assertIsNone(raft.overloaded())

    def test_notOverloadedAtStart(self) -> None:
        """A node that has just started holds no request, and takes them."""
        raft, _, _ = buildNode()
        self.assertIsNone(raft.overloaded())
        self.assertEqual(raft.backlog(), 0)

    def test_commandsAndReadsCount(self) -> None:
        """
        The backlog counts commands and reads, both before this turn's group
        commit takes them and after, while they wait to commit or for their
        leader's confirmation.
        """
        raft, clock, sent = buildNode(("s1", "s2", "s3"))
        electS1(raft, sent)
        clientRequest(raft, None, "set a 1")
        clientRequest(raft, None, "set b 1")
        clientRequest(raft, None, "get a")
        self.assertEqual(raft.backlog(), 3)
        clock.advance(0)
        self.assertEqual(raft.backlog(), 3)

    def test_diskFailureDrains(self) -> None:
        """
        A node whose disk fails answers every request it held, and so is
        no longer overloaded: its connections read again (and get told).
        """
        raft, clock, _ = buildNode(maxBacklog=1)
        electSingleNode(raft)

        def failing(ready: object, sync: bool = True) -> None:
            raise OSError("no space left on device")

        raft.logManager.persist = failing  # type: ignore[method-assign]
        clientRequest(raft, "c1", "set a 1")
        drained = raft.overloaded()
        clock.advance(0)
        self.assertTrue(raft.silent)
        self.assertIsNone(self.successResultOf(drained))


class AnswerTests(SynchronousTestCase):
    """What a waiting client is told, and when."""

    def test_overwrittenEntryIsNotAnswered(self) -> None:
        """
        A client whose entry was replaced by another leader's entry at the
        same index is told its command was overwritten, never the result of
        the command that took its place, even when the new leader's
        message deposes this one and commits that index in one step.
        Reference: section 5.3 (a new leader's log overwrites conflicting
        entries), section 8 (clients).
        """
        node, clock, sent = buildNode(("s1", "s2", "s3"))
        electS1(node, sent)
        term = node.core.currentTerm
        answer = clientRequest(node, "c1", "set a mine")
        clock.advance(0)
        index = node.core.log.lastIndex
        self.assertEqual(node.core.log.term(index), term)
        replacement = Entry(index, term + 1, "set a overwritten")
        previous = node.core.log.term(index - 1)
        node.peerRequest("s2", AppendEntries(term + 1, index - 1, previous, (replacement,), index))
        self.assertEqual(node.core.commitIndex, index)
        self.assertEqual(node.logManager.stateMachine.data, {"a": "overwritten"})
        self.assertEqual(self.successResultOf(answer), answers.OVERWRITTEN)


class DiskFailureTests(SynchronousTestCase):
    """A node whose disk failed rebuilds its core from the disk and rejoins."""

    def test_rebuiltCoreCountsAppliedAsCommitted(self) -> None:
        """
        The rebuilt core counts everything the kept state machine applied
        as committed, so that an older snapshot from the leader (here, one
        sent before the failure and delivered late) cannot take the state
        machine back.  Seed 2614 of the five-node simulation found this.
        Reference: Figure 2 (commitIndex "increases monotonically");
        dissertation Figure 5.3 (InstallSnapshot receiver, rule 6: keep what
        the log already holds past the snapshot).
        """
        node, clock, _ = buildNode(("s1", "s2", "s3"))
        entries = tuple(Entry(i, 1, f"set k{i} {i}") for i in range(1, 6))
        node.peerRequest("s2", AppendEntries(1, 0, 0, entries, 5))
        applied = {f"k{i}": str(i) for i in range(1, 6)}
        self.assertEqual(node.logManager.stateMachine.data, applied)

        def diskFull(ready: object, sync: bool = True) -> None:
            raise OSError("no space left on device")

        node.logManager.persist = diskFull  # type: ignore[method-assign]
        node.peerRequest("s2", AppendEntries(1, 5, 1, (Entry(6, 1, "set k6 6"),), 5))
        self.assertTrue(node.silent)
        self.assertEqual(node.diskError, "no space left on device")
        del node.logManager.persist
        clock.advance(node.diskRetrySeconds)
        self.assertFalse(node.silent)
        self.assertEqual(node.core.commitIndex, 5)
        older = InstallSnapshot(1, 3, 1, 0, b'{"k1":"1","k2":"2","k3":"3"}', True)
        reply = node.peerRequest("s2", older)
        self.assertIsInstance(reply, InstallSnapshotResponse)
        self.assertEqual(reply.matchIndex, 5)
        self.assertEqual(node.logManager.lastApplied, 5)
        self.assertEqual(node.logManager.stateMachine.data, applied)


@implementer(INodeObserver)
class EventObserver(NullObserver):
    """An L{INodeObserver} that keeps the timed and leader events with their arguments."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def leaderChanged(self, leader: str | None, term: int) -> None:
        """Record the new leader."""
        self.events.append(("leaderChanged", leader, term))

    def synced(self, seconds: float) -> None:
        """Record a sync and how long it took."""
        self.events.append(("synced", seconds))

    def committed(self, seconds: float) -> None:
        """Record a commit and its latency."""
        self.events.append(("committed", seconds))

    def answered(self, command: str, answer: str, seconds: float) -> None:
        """Record an answer."""
        self.events.append(("answered", command, answer, seconds))

    def snapshotTaken(self, seconds: float) -> None:
        """Record a snapshot and how long it took."""
        self.events.append(("snapshotTaken", seconds))

    def diskFailed(self, error: str) -> None:
        """Record a disk failure and its error."""
        self.events.append(("diskFailed", error))


def electSingleNode(node: RaftNode) -> None:
    """Tick a one-node cluster's driver until it leads."""
    for _ in range(21):
        node.ticks(1)
    assert node.core.role == LEADER


class ObservedReplyTests(SynchronousTestCase):
    """The reply a client request waits for."""

    def test_answeredOnce(self) -> None:
        """A second answer is a bug in whoever gave it, and says what it was."""
        node, _, _ = buildNode()
        given: list[str] = []
        reply = _ObservedReply(given.append, node, 0.0)
        reply.give("OK")
        error = self.assertRaises(AlreadyAnsweredError, reply.give, "again")
        self.assertEqual(str(error), "answered twice, now with 'again'")
        self.assertEqual(given, ["OK"])


class ObserverEventTests(SynchronousTestCase):
    """What the driver tells its observer, for metrics."""

    def test_leaderSyncCommitAnswer(self) -> None:
        """
        A node that elects itself tells of the new leader and of each sync;
        a command answered after commit tells its commit latency (from its
        proposal, here at once on a one-node cluster) and, counted from its
        arrival (before the group commit ran), its answer's time, command
        word and kind.
        """
        observer = EventObserver()
        node, clock, _ = buildNode(observer=observer)
        electSingleNode(node)
        self.assertIn(("leaderChanged", "s1", 1), observer.events)
        self.assertIn(("synced", 0.0), observer.events)
        clock.advance(1)
        answer = clientRequest(node, "c1", "set a 1")
        clock.advance(0.25)
        self.assertEqual(self.successResultOf(answer), answers.OK)
        self.assertEqual(
            observer.events[-2:], [("committed", 0.0), ("answered", "set", "OK", 0.25)]
        )
        # No time passes on this clock while a write is made durable, at
        # 1.25 s as at the start.
        syncs = [event for event in observer.events if event[0] == "synced"]
        self.assertEqual(set(syncs), {("synced", 0.0)})
        self.assertGreater(len(syncs), 1)

    def test_followerSyncs(self) -> None:
        """
        A follower tells of the sync of the entries it appends, timed (no
        time passes on this clock), and of none when a heartbeat leaves
        nothing to write.
        """
        observer = EventObserver()
        node, clock, _ = buildNode(("s1", "s2", "s3"), observer=observer)
        clock.advance(1)
        node.peerRequest("s2", AppendEntries(1, 0, 0, (Entry(1, 1, "noop"),), 0))
        self.assertEqual([e for e in observer.events if e[0] == "synced"], [("synced", 0.0)])
        node.peerRequest("s2", AppendEntries(1, 1, 1, (), 1))
        self.assertEqual([e for e in observer.events if e[0] == "synced"], [("synced", 0.0)])

    def test_everyAnswerIsCounted(self) -> None:
        """
        C{status}, a numbered C{status} (refused), a bad line and a command
        on a node without a leader are each reported with a bounded command
        word and their answer's kind.
        """
        observer = EventObserver()
        node, _, _ = buildNode(("s1", "s2", "s3"), observer=observer)
        clientRequest(node, None, "status")
        clientRequest(node, "c1", "status", seq=1)
        clientRequest(node, None, "frob x")
        clientRequest(node, None, "get a")
        self.assertEqual(
            [(e[1], answers.kind(e[2])) for e in observer.events if e[0] == "answered"],
            [("status", "ok"), ("status", "error"), ("invalid", "error"), ("get", "unavailable")],
        )


class LeaderCommitTests(SynchronousTestCase):
    """The leader's commit index as a follower knows it, for the health check."""

    def test_followerKeepsLeadersCommit(self) -> None:
        """
        A follower whose log trails the leader's (here: it has nothing) still
        learns the leader's commit index from AppendEntries, so it can tell
        how far behind it is.
        """
        node, _, _ = buildNode(("s1", "s2", "s3"))
        self.assertIsNone(node.leaderCommitIndex())
        node.peerRequest("s2", AppendEntries(1, 40, 1, (), 57))
        self.assertEqual(node.leaderCommitIndex(), 57)
        status = node.status()
        self.assertEqual((status["leaderCommit"], status["commitIndex"]), (57, 0))
        self.assertEqual(status["members"]["s3"], "127.0.0.1:10002")


class ReadBarrierTests(SynchronousTestCase):
    """L{RaftNode.readBarrier}: what a backup waits for before it freezes the state."""

    def test_leaderConfirmedAndApplied(self) -> None:
        """
        On a leader it fires, with a read's success, once the leader is
        confirmed and has applied every write it acknowledged before.
        Reference: dissertation section 6.4 (ReadIndex).
        """
        node, clock, _ = buildNode()
        electSingleNode(node)
        write = clientRequest(node, None, "set a 1")
        barrier = node.readBarrier()
        self.assertNoResult(barrier)
        clock.advance(0)
        self.assertEqual(self.successResultOf(write), answers.OK)
        self.assertTrue(answers.isSuccess(self.successResultOf(barrier)))
        self.assertEqual(node.logManager.lastApplied, node.core.commitIndex)

    def test_followerRefuses(self) -> None:
        """A follower answers at once, as to a read: a redirect to its leader."""
        node, _, _ = buildNode(("s1", "s2", "s3"))
        node.peerRequest("s2", AppendEntries(1, 0, 0, (), 0))
        self.assertEqual(node.readBarrier(), answers.redirect("s2", "127.0.0.1", 10001))

    def test_readOfALeaderDeposedBeforeItsTurn(self) -> None:
        """
        A read that reached a leader which another leader deposed before
        the read's turn came is redirected to the new leader.
        """
        node, clock, sent = buildNode(("s1", "s2", "s3"))
        electS1(node, sent)
        read = clientRequest(node, "c1", "get a")
        node.peerRequest("s2", AppendEntries(node.core.currentTerm + 1, 0, 0, (), 0))
        clock.advance(0)
        self.assertEqual(self.successResultOf(read), answers.redirect("s2", "127.0.0.1", 10001))


class LogTests(SynchronousTestCase):
    """The driver's log tells the story of the cluster as this node lives it."""

    def messages(self, events: list[dict[str, object]]) -> list[str]:
        """The formatted text of C{events}."""
        return [formatEvent(event) for event in events]

    def test_followerLogsEachNewLeader(self) -> None:
        """A follower logs the leader and term of each leader it starts to follow."""
        node, _, _ = buildNode(("s1", "s2", "s3"))
        with capturedLogs() as events:
            node.peerRequest("s2", AppendEntries(1, 0, 0, (), 0))
            node.peerRequest("s2", AppendEntries(1, 0, 0, (), 0))
            node.peerRequest("s3", AppendEntries(2, 0, 0, (), 0))
        followed = [m for m in self.messages(events) if "follows leader" in m]
        self.assertEqual(
            followed,
            ["node s1 follows leader s2 in term 1", "node s1 follows leader s3 in term 2"],
        )

    def test_votesGrantedAndRefused(self) -> None:
        """
        A granted vote and a refused one are both logged at info level, naming
        the candidate and the term (Reference: section 5.2, one vote per term).
        """
        node, _, _ = buildNode(("s1", "s2", "s3"))
        with capturedLogs() as events:
            granted = node.peerRequest("s2", RequestVote(1, 0, 0))
            refused = node.peerRequest("s3", RequestVote(1, 0, 0))
        self.assertEqual(
            (granted, refused), (RequestVoteResponse(1, True), RequestVoteResponse(1, False))
        )
        votes = [(e["log_level"], formatEvent(e)) for e in events if "vote" in formatEvent(e)]
        self.assertEqual(
            votes,
            [
                (LogLevel.info, "s1 grants its vote to s2 for term 1"),
                (LogLevel.info, "s1 refuses its vote to s3 for term 1"),
            ],
        )

    def test_commitTimeoutWarns(self) -> None:
        """A command that does not commit in time is answered and logged as a warning."""
        node, clock, sent = buildNode(("s1", "s2", "s3"))
        electS1(node, sent)
        with capturedLogs() as events:
            answer = clientRequest(node, "c1", "set a 1")
            clock.advance(0)
            clock.advance(node.commitTimeout + 1)
            node.ticks(1)
        self.assertEqual(self.successResultOf(answer), answers.COMMIT_TIMEOUT)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertIn("did not commit within 5.0s", " ".join(warnings))

    def test_shutdownLogged(self) -> None:
        """Stopping a node says so, with where it stood."""
        node, _, _ = buildNode()
        with capturedLogs() as events:
            node.stop()
        self.assertIn("node s1 shutting down in term 0, applied up to 0", self.messages(events))

    def test_stopAnswersWaitingClients(self) -> None:
        """
        Stopping a leader answers each client still waiting for its command
        to commit: the node is shutting down (so the client may retry
        elsewhere), not silence.
        """
        node, clock, sent = buildNode(("s1", "s2", "s3"))
        electS1(node, sent)
        waiting = clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        self.assertNoResult(waiting)
        node.stop()
        self.assertEqual(self.successResultOf(waiting), answers.SHUTTING_DOWN)

    def test_preVotesLoggedAtDebug(self) -> None:
        """A pre-vote granted or refused is logged as a pre-vote, at debug level only."""
        node, _, _ = buildNode(("s1", "s2", "s3"))
        with capturedLogs() as events:
            node.peerRequest("s2", RequestVote(1, 0, 0, preVote=True))
        votes = [(e["log_level"], formatEvent(e)) for e in events if "vote" in formatEvent(e)]
        self.assertEqual(votes, [(LogLevel.debug, "s1 grants its pre-vote to s2 for term 1")])


class StatusTests(SynchronousTestCase):
    """What C{status} reports."""

    def test_everyField(self) -> None:
        """
        C{status} names the node, its role, term, leader and vote, its
        commit, applied, last and snapshot indexes, the leader's commit
        index as far as it knows, and every member's address.
        """
        node, clock, _ = buildNode()
        electSingleNode(node)
        clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        self.assertEqual(
            node.status(),
            {
                "name": "s1",
                "role": LEADER,
                "term": 1,
                "leader": "s1",
                "votedFor": "s1",
                "commitIndex": 2,
                "lastApplied": 2,
                "lastIndex": 2,
                "snapshotIndex": 0,
                "leaderCommit": 2,
                "members": {"s1": f"127.0.0.1:{node.config.node('s1').port}"},
                "learners": [],
            },
        )


class SnapshotPolicyTests(SynchronousTestCase):
    """When the driver takes snapshots."""

    def test_retriedAfterAFailedWrite(self) -> None:
        """
        A snapshot whose write fails is logged, and taken again at the
        first Ready after the next tick.  Reference: dissertation section 5.1.
        """
        attempts: list[str] = []

        def background(work: Callable[[], Any]) -> defer.Deferred[Any]:
            attempts.append("write")
            if len(attempts) == 1:
                return defer.fail(OSError("no space left on device"))
            return defer.maybeDeferred(work)

        node, clock, _ = buildNode(snapshotEntries=2, snapshotter=inBackground(background))
        electSingleNode(node)
        clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        # The no-op and the set: a snapshot is due, and its write fails.
        self.assertEqual((len(attempts), node.core.snapshotIndex), (1, 0))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        clientRequest(node, "c1", "set b 2")
        clock.advance(0)
        self.assertEqual(len(attempts), 1)
        node.ticks(1)
        clientRequest(node, "c1", "set c 3")
        clock.advance(0)
        # The proposal's Ready, before its entry is durable and applied.
        self.assertEqual((len(attempts), node.core.snapshotIndex), (2, 3))

    def test_nextSnapshotWaitsForATick(self) -> None:
        """
        Once a snapshot is in place the node takes the next one, however
        many entries came meanwhile, only after a tick: the turn that
        compacted the log does not also start another snapshot.
        """
        node, clock, _ = buildNode(snapshotEntries=2)
        electSingleNode(node)
        clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        self.assertEqual(node.core.snapshotIndex, 2)
        for key in "bcd":
            clientRequest(node, "c1", f"set {key} 1")
            clock.advance(0)
        self.assertEqual((node.logManager.lastApplied, node.core.snapshotIndex), (5, 2))
        node.ticks(1)
        self.assertEqual(node.core.snapshotIndex, 5)


class RejoinTests(SynchronousTestCase):
    """A node whose disk failed tries again, and stops on corrupt data."""

    def failDisk(self) -> tuple[RaftNode, Clock, list[str]]:
        """A one-node leader whose disk failed; what it reports as fatal."""
        fatal: list[str] = []
        node, clock, _ = buildNode(onFatal=fatal.append)
        electSingleNode(node)

        def diskFull(ready: object, sync: bool = True) -> None:
            raise OSError("no space left on device")

        node.logManager.persist = diskFull  # type: ignore[method-assign]
        clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        self.assertTrue(node.silent)
        del node.logManager.persist
        return node, clock, fatal

    def test_stillFailingDiskIsReported(self) -> None:
        """
        While the disk still fails, the node stays silent, reports the
        latest error and tries again later.
        """
        node, clock, fatal = self.failDisk()

        def stillBroken() -> None:
            raise OSError("read-only file system")

        node.logManager.recoverAfterFailure = stillBroken  # type: ignore[method-assign]
        clock.advance(node.diskRetrySeconds)
        self.assertTrue(node.silent)
        self.assertEqual(node.diskError, "read-only file system")
        self.assertEqual(node.status()["diskError"], "read-only file system")
        del node.logManager.recoverAfterFailure
        clock.advance(node.diskRetrySeconds)
        self.assertFalse(node.silent)
        self.assertIsNone(node.diskError)
        self.assertEqual(fatal, [])

    def test_corruptDataIsFatal(self) -> None:
        """Stored data found corrupt on rejoining stops the node, saying why."""
        node, clock, fatal = self.failDisk()

        def corrupt() -> None:
            raise StorageError("s1.log, line 2: not INDEX TERM COMMAND")

        node.logManager.recoverAfterFailure = corrupt  # type: ignore[method-assign]
        clock.advance(node.diskRetrySeconds)
        self.assertEqual(fatal, ["s1.log, line 2: not INDEX TERM COMMAND"])
        self.assertTrue(node.silent)

    def test_stopsCleanlyAfterRejoining(self) -> None:
        """A node that rejoined after a disk failure stops like any other, retrying nothing."""
        node, clock, _ = self.failDisk()
        clock.advance(node.diskRetrySeconds)
        self.assertFalse(node.silent)
        node.stop()
        self.assertTrue(node.silent)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_stopWhileDiskFailedRetriesNothing(self) -> None:
        """
        Stopping a node whose disk failed cancels its retry; stopping it
        again (a service stopping after a fatal error) does no harm.
        """
        node, clock, _ = self.failDisk()
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        node.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        node.stop()
        self.assertEqual((node.silent, clock.getDelayedCalls()), (True, []))

    def test_defaultFatalRaises(self) -> None:
        """Without an C{onFatal}, corrupt data raises L{StorageError} with its reason."""
        node, _, _ = buildNode()
        error = self.assertRaises(StorageError, node._onFatal, "s1.log is damaged")
        self.assertEqual(str(error), "s1.log is damaged")


class MoreSnapshotPolicyTests(SynchronousTestCase):
    """How often, and how many at a time, the driver takes snapshots."""

    def test_everySnapshotEntriesApplied(self) -> None:
        """
        A snapshot is taken once C{snapshotEntries} entries were applied
        since the last one, in this reactor turn when no background runner
        is given (and a tick came since the last one).
        """
        node, clock, _ = buildNode(snapshotEntries=2, snapshotGrowth=0.0)
        electSingleNode(node)
        taken = []
        for i in range(4):
            clientRequest(node, "c1", f"set k{i} {i}")
            clock.advance(0)
            taken.append(node.core.snapshotIndex)
            node.ticks(1)
        # The no-op and the first set make 2; then every second entry.
        self.assertEqual(taken, [2, 2, 4, 4])

    def test_snapshotWaitsForTheLogToGrowWithTheState(self) -> None:
        """
        With C{snapshotGrowth}, a snapshot also waits until the commands
        applied since the last one add up to that share of its size: a large
        state is not written again every few entries.
        """
        node, clock, _ = buildNode(snapshotEntries=1, snapshotGrowth=1.0)
        electSingleNode(node)
        clientRequest(node, "c1", "set big " + "x" * 100)
        clock.advance(0)
        first = node.logManager.snapshot
        assert first is not None
        size = len(first.data)
        applied = 0
        for i in range(size // 20):
            node.ticks(1)
            clientRequest(node, "c1", f"set k{i:03} {'v' * 10}")  # 20 bytes
            clock.advance(0)
            applied += 20
            if applied < size:
                self.assertIs(node.logManager.snapshot, first)
        node.ticks(1)
        clientRequest(node, "c1", f"set k{i:03} {'v' * 10}")
        clock.advance(0)
        self.assertEqual(node.logManager.snapshot.index, node.logManager.lastApplied)

    def applyTurn(self, node: RaftNode, clock: Clock, length: int) -> None:
        """Apply, in a turn of its own, a C{set} command C{length} bytes long."""
        node.ticks(1)
        clientRequest(node, "c1", "set k " + "v" * (length - 6))
        clock.advance(0)

    def test_growthCountedToTheByte(self) -> None:
        """
        A snapshot comes once the commands applied since the last one add
        up to exactly C{snapshotGrowth} times its size, not a byte sooner,
        counted afresh from each snapshot.
        """
        for short in (1, 0):
            node, clock, _ = buildNode(snapshotEntries=1, snapshotGrowth=1.0)
            electSingleNode(node)
            node.ticks(1)
            clientRequest(node, "c1", "set big " + "x" * 100)
            clock.advance(0)
            manager = node.logManager
            for _ in range(2):
                last = manager.snapshot
                assert last is not None
                self.applyTurn(node, clock, len(last.data) - 7 - short)
                self.assertIs(manager.snapshot, last)
                self.applyTurn(node, clock, 7)
                if short:
                    self.assertIs(manager.snapshot, last)
                    self.applyTurn(node, clock, 7)
                self.assertEqual(manager.snapshot.index, manager.lastApplied)

    def test_growthCountedAfreshOnRestart(self) -> None:
        """
        A restarted node counts from its snapshot what it applies again, so
        a restart does not put the next snapshot off: a byte short of the
        growth (its new leader's no-op included) takes none, one more
        command takes it.
        """
        manager = LogManager(MemoryLogStore(), MemoryStateStore(), KeyValueStore())
        node, clock, _ = buildNode(snapshotEntries=1, snapshotGrowth=1.0, logManager=manager)
        electSingleNode(node)
        clientRequest(node, "c1", "set big " + "x" * 100)
        clock.advance(0)
        first = manager.snapshot
        assert first is not None
        self.applyTurn(node, clock, len(first.data) - len("noop") - 1)
        again = LogManager(
            manager.logStore, manager.stateStore, KeyValueStore(), manager.snapshotStore
        )
        restarted, clock, _ = buildNode(snapshotEntries=1, snapshotGrowth=1.0, logManager=again)
        electSingleNode(restarted)
        self.assertEqual(again.lastApplied, first.index + 2)
        self.assertEqual(again.snapshot, first)
        self.applyTurn(restarted, clock, 7)
        self.assertEqual(again.snapshot.index, again.lastApplied)

    def test_growthCountedFromAnInstalledSnapshot(self) -> None:
        """A follower counts from the snapshot its leader sent, to the byte."""
        node, clock, _ = buildNode(("s1", "s2", "s3"), snapshotEntries=1, snapshotGrowth=1.0)
        data = b'{"a": "2"}'
        node.peerRequest("s2", InstallSnapshot(1, 5, 1, 0, data, done=True))
        clock.advance(0)
        self.assertEqual(node.logManager.snapshot.index, 5)
        almost = Entry(6, 1, "set k " + "v" * (len(data) - 7))
        node.peerRequest("s2", AppendEntries(1, 5, 1, (almost,), 6))
        clock.advance(0)
        self.assertEqual((node.logManager.lastApplied, node.logManager.snapshot.index), (6, 5))
        node.ticks(1)
        node.peerRequest("s2", AppendEntries(1, 6, 1, (Entry(7, 1, "set b 1"),), 7))
        clock.advance(0)
        self.assertEqual(node.logManager.snapshot.index, 7)

    def test_oneSnapshotAtATime(self) -> None:
        """While a snapshot is being written, no other one starts."""
        writes, background = heldWrites()

        node, clock, _ = buildNode(snapshotEntries=1, snapshotter=inBackground(background))
        electSingleNode(node)
        for i in range(3):
            clientRequest(node, "c1", f"set k{i} {i}")
            clock.advance(0)
        self.assertEqual(len(writes), 1)

    def test_overtakenSnapshotDropped(self) -> None:
        """
        A snapshot still being written when the node installs a later one
        from its leader is dropped when the write ends: the leader's stays
        the node's snapshot, and the log is not compacted to the older one.
        """
        writes, background = heldWrites()

        node, clock, _ = buildNode(
            ("s1", "s2", "s3"), snapshotEntries=2, snapshotter=inBackground(background)
        )
        entries = (Entry(1, 1, "noop"), Entry(2, 1, "set a 1"))
        node.peerRequest("s2", AppendEntries(1, 0, 0, entries, 2))
        self.assertEqual((node.logManager.lastApplied, len(writes)), (2, 1))
        later = Snapshot(5, 1, b'{"a": "2"}')
        node.peerRequest("s2", InstallSnapshot(1, 5, 1, 0, later.data, done=True))
        self.assertEqual(node.core.snapshotIndex, 5)
        writes[0].callback(None)
        self.assertEqual(node.logManager.snapshot, later)
        self.assertEqual(node.core.snapshotIndex, 5)
        self.assertEqual(node.logManager.read("get a"), "OK 2")

    def test_snapshotTimeReported(self) -> None:
        """The observer hears how long a snapshot took, from its start to its compaction."""
        observer = EventObserver()
        writes, background = heldWrites()

        node, clock, _ = buildNode(
            observer=observer, snapshotEntries=2, snapshotter=inBackground(background)
        )
        electSingleNode(node)
        clock.advance(10)
        clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        clock.advance(0.5)
        writes[0].callback(None)
        self.assertIn(("snapshotTaken", 0.5), observer.events)

    def test_failedCompactionStopsTheNode(self) -> None:
        """
        A snapshot written but not put in place (the disk failed) makes the
        node fall silent with that error, as any failed write does.
        """
        observer = EventObserver()
        node, clock, _ = buildNode(observer=observer, snapshotEntries=2)
        electSingleNode(node)

        def diskFull(snapshot: object, staged: object, compactTo: int) -> None:
            raise OSError("no space left on device")

        node.logManager.commitSnapshot = diskFull  # type: ignore[method-assign]
        clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        self.assertTrue(node.silent)
        self.assertEqual(node.diskError, "no space left on device")
        self.assertIn(("diskFailed", "no space left on device"), observer.events)


class MoreDriverTests(SynchronousTestCase):
    """Timeouts, unnamed errors and the leader the observer hears of."""

    def test_commitTimeoutAtItsDeadline(self) -> None:
        """
        A command not applied C{commitTimeout} seconds after its proposal
        is answered L{answers.COMMIT_TIMEOUT} at the first tick from then.
        """
        node, clock, sent = buildNode(("s1", "s2", "s3"))
        electS1(node, sent)
        answer = clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        clock.advance(node.commitTimeout)
        node.ticks(1)
        self.assertEqual(self.successResultOf(answer), answers.COMMIT_TIMEOUT)

    def test_unnamedDiskErrorNamedByItsType(self) -> None:
        """A write that fails without a message is reported by the error's type."""
        observer = EventObserver()
        node, clock, _ = buildNode(observer=observer, onFatal=lambda reason: None)
        electSingleNode(node)

        def failing(ready: object, sync: bool = True) -> None:
            raise OSError()

        node.logManager.persist = failing  # type: ignore[method-assign]
        clientRequest(node, "c1", "set a 1")
        clock.advance(0)
        self.assertEqual(node.diskError, "OSError")
        self.assertIn(("diskFailed", "OSError"), observer.events)
        del node.logManager.persist

        def stillFailing() -> None:
            raise OSError()

        node.logManager.recoverAfterFailure = stillFailing  # type: ignore[method-assign]
        clock.advance(node.diskRetrySeconds)
        self.assertEqual(node.diskError, "OSError")

    def test_noLeaderNoLeaderEvent(self) -> None:
        """
        The observer hears of a leader only once there is one: not when a
        node starts, nor when it rejoins after a disk failure knowing none.
        """
        observer = EventObserver()
        node, clock, _ = buildNode(("s1", "s2", "s3"), observer=observer)
        node.ticks(1)
        clientRequest(node, "c1", "status")
        self.assertEqual([e for e in observer.events if e[0] == "leaderChanged"], [])
        node._storageFailed(OSError("I/O error"))
        clock.advance(node.diskRetrySeconds)
        self.assertFalse(node.silent)
        node.ticks(1)
        self.assertEqual([e for e in observer.events if e[0] == "leaderChanged"], [])

    def test_leaderLearnedFromSnapshot(self) -> None:
        """
        A follower that learned its leader from a snapshot reports the
        leader's commit index as at least the snapshot's.
        """
        node, _, _ = buildNode(("s1", "s2", "s3"))
        node.peerRequest("s2", InstallSnapshot(1, 3, 1, 0, b'{"a":"1"}', True))
        self.assertEqual(node.status()["leaderCommit"], 3)
