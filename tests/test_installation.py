"""
Tests for loading a leader's snapshot a step per reactor turn
(L{txraft.installation}, driven by L{txraft.node.RaftNode}): the node goes
on taking entries and answering its leader while it loads, and applies
nothing until it has.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from twisted.internet import defer
from twisted.internet.task import Clock, TaskStopped
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.helpers import clientRequest
from tests.test_node import buildNode, electS1
from txraft import answers
from txraft.core import LEADER
from txraft.installation import APPLY_STEP_ENTRIES, Installation
from txraft.interfaces import INodeObserver
from txraft.kv import KeyValueStore
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVoteResponse,
    Snapshot,
)
from txraft.node import NullObserver


def mapSnapshot(keys: int, value: str = "v") -> bytes:
    """A snapshot of a map of C{keys} keys, large enough to load in many steps."""
    store = KeyValueStore()
    for i in range(keys):
        store.apply(f"set key{i:06} {value}{i:06}")
    return store.capture()()


@implementer(INodeObserver)
class InstallObserver(NullObserver):
    """Lists the snapshots a node installed, by index."""

    def __init__(self) -> None:
        self.installed: list[int] = []
        self.syncTimes: list[float] = []

    def snapshotInstalled(self, snapshot: Snapshot) -> None:
        """Record an installed snapshot's index."""
        self.installed.append(snapshot.index)

    def synced(self, seconds: float) -> None:
        """Record how long a write to the disk took."""
        self.syncTimes.append(seconds)


class TurnClock(Clock):
    """
    A clock that can also run one turn of a reactor: the calls due when
    the turn starts, not those they schedule for now (which
    L{Clock.advance} would run too).
    """

    def turn(self) -> None:
        """Run the calls due now, each once, in their order."""
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            if call in self.calls:
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


def loadUntilInstalled(clock: TurnClock, observer: InstallObserver) -> int:
    """Turn C{clock} until C{observer} saw an install; return how many turns that took."""
    for turns in range(1000):
        if observer.installed:
            return turns
        clock.turn()
    raise AssertionError("the snapshot never finished loading")


class FollowerLoadingTests(SynchronousTestCase):
    """A follower that installs a large snapshot from its leader."""

    def setUp(self) -> None:
        self.observer = InstallObserver()
        self.fatal: list[str] = []
        self.clock = TurnClock()
        self.node, _, self.sent = buildNode(
            ("s1", "s2", "s3"), self.observer, self.clock, onFatal=self.fatal.append
        )
        self.snapshot = mapSnapshot(20_000)

    def install(self, index: int, data: bytes) -> object:
        """s2, leader in term 1, sends its snapshot up to C{index} in one chunk."""
        return self.node.peerRequest("s2", InstallSnapshot(1, index, 1, 0, data, True))

    def test_answersItsLeaderWhileLoading(self) -> None:
        """
        The snapshot is acknowledged at once (it is durable), and entries
        after it are taken and acknowledged while it loads; they are
        applied only once it has, after it.
        """
        reply = self.install(100, self.snapshot)
        self.assertIsInstance(reply, InstallSnapshotResponse)
        self.assertEqual(reply.matchIndex, 100)
        self.assertEqual(self.observer.installed, [])
        manager = self.node.logManager
        self.assertEqual((manager.lastApplied, len(manager.stateMachine.data)), (0, 0))
        reply = self.node.peerRequest(
            "s2", AppendEntries(1, 100, 1, (Entry(101, 1, "set key000001 new"),), 101)
        )
        self.assertEqual(reply, AppendEntriesResponse(1, True, matchIndex=101))
        self.clock.turn()
        self.node.peerRequest("s2", AppendEntries(1, 101, 1, (Entry(102, 1, "set z 1"),), 102))
        self.assertEqual(self.node.core.commitIndex, 102)
        self.assertEqual(manager.lastApplied, 0)
        turns = loadUntilInstalled(self.clock, self.observer)
        self.assertGreater(turns, 3)
        self.assertEqual(self.observer.installed, [100])
        self.assertEqual(manager.lastApplied, 102)
        self.assertEqual(manager.read("get z"), "OK 1")
        self.assertEqual(len(manager.stateMachine.data), 20_001)
        self.assertEqual(manager.read("get key000001"), "OK new")
        self.assertEqual(manager.read("get key019999"), "OK v019999")

    def test_newerSnapshotReplacesOneLoading(self) -> None:
        """
        A newer snapshot that comes while one loads replaces it: the older
        one's loading stops, and the state is the newer one's.
        """
        self.install(100, self.snapshot)
        self.clock.turn()
        self.install(200, mapSnapshot(20_000, value="w"))
        loadUntilInstalled(self.clock, self.observer)
        for _ in range(50):
            self.clock.turn()
        self.assertEqual(self.observer.installed, [200])
        manager = self.node.logManager
        self.assertEqual(manager.lastApplied, 200)
        self.assertEqual(manager.read("get key000007"), "OK w000007")
        self.assertEqual((self.fatal, self.node.silent), ([], False))

    def test_smallerNewerSnapshotReplacesOneLoading(self) -> None:
        """
        A newer snapshot small enough to load at once, coming while a large
        one loads, is installed at once, and the node then applies as usual.
        """
        self.install(100, self.snapshot)
        self.clock.turn()
        self.install(200, b'{"a":"1"}')
        self.assertEqual(self.observer.installed, [200])
        self.assertFalse(self.node.installingSnapshot)
        self.node.peerRequest("s2", AppendEntries(1, 200, 1, (Entry(201, 1, "set b 2"),), 201))
        self.assertEqual(self.node.logManager.read("get b"), "OK 2")
        for _ in range(20):
            self.clock.turn()
        self.assertEqual(self.observer.installed, [200])
        self.assertEqual(self.node.logManager.read("get key000001"), "NOT_FOUND")

    def test_unusableSnapshotStopsTheNode(self) -> None:
        """
        A snapshot found unusable part way through loading stops the node
        (C{onFatal}, with the reason): it cannot go on without it.  The
        state machine stays as it was.
        """
        bad = self.snapshot.replace(b'"key019999":"v019999"', b'"key019999":19999')
        self.install(100, bad)
        for _ in range(100):
            self.clock.turn()
        self.assertEqual(
            self.fatal,
            ["snapshot up to 100 is unusable: a key-value snapshot is a JSON object of strings"],
        )
        self.assertTrue(self.node.silent)
        self.assertEqual((self.node.logManager.lastApplied, self.observer.installed), (0, []))

    def test_stopWhileLoading(self) -> None:
        """A node stopped while it loads a snapshot stops loading it."""
        self.install(100, self.snapshot)
        self.clock.turn()
        self.node.stop()
        self.assertFalse(self.node.installingSnapshot)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.node.logManager.lastApplied, 0)
        self.assertEqual(self.observer.installed, [])

    def test_smallSnapshotInOneTurn(self) -> None:
        """A small snapshot is installed in the turn that brought it, as before steps."""
        self.install(3, b'{"a":"1"}')
        self.assertEqual(self.observer.installed, [3])
        self.assertEqual(self.node.logManager.lastApplied, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LeaderLoadingTests(SynchronousTestCase):
    """A node elected while it still loads a snapshot."""

    def setUp(self) -> None:
        self.observer = InstallObserver()
        self.clock = TurnClock()
        self.fatal: list[str] = []
        self.node, _, self.sent = buildNode(
            ("s1", "s2", "s3"), self.observer, self.clock, onFatal=self.fatal.append
        )

    def electWhileLoading(self, snapshot: bytes) -> tuple[object, object]:
        """
        Install C{snapshot}, be elected, take a write and a read and commit
        the write while the snapshot loads; return their answers.
        """
        node, clock = self.node, self.clock
        node.peerRequest("s2", InstallSnapshot(1, 100, 1, 0, snapshot, True))
        electS1(node, self.sent)
        self.assertEqual(node.core.role, LEADER)
        written = clientRequest(node, "c1", "set key000003 mine")
        read = clientRequest(node, "c1", "get key000004")
        clock.turn()  # proposed and sent
        clock.turn()  # durable here
        lastIndex = node.core.log.lastIndex
        appends = [m for peer, m in self.sent if peer == "s2" and isinstance(m, AppendEntries)]
        node.peerResponse(
            "s2",
            AppendEntriesResponse(
                node.core.currentTerm, True, matchIndex=lastIndex, readRound=appends[-1].readRound
            ),
        )
        self.assertEqual(node.core.commitIndex, lastIndex)
        self.assertNoResult(written)
        self.assertNoResult(read)
        return written, read

    def test_answersOnceLoaded(self) -> None:
        """
        Commands the node commits as leader while it loads are applied
        after the snapshot, and their clients answered only then, as are
        its reads: each sees the snapshot's state.
        """
        written, read = self.electWhileLoading(mapSnapshot(20_000))
        loadUntilInstalled(self.clock, self.observer)
        self.assertEqual(self.successResultOf(written), answers.OK)
        self.assertEqual(self.successResultOf(read), "OK v000004")
        self.assertEqual(self.node.logManager.read("get key000003"), "OK mine")

    def test_waitingClientsToldTheNodeStops(self) -> None:
        """
        The clients waiting when the snapshot turns out unusable are told
        that the node is shutting down.
        """
        bad = mapSnapshot(20_000).replace(b'"key019999":"v019999"', b'"key019999":19999')
        written, read = self.electWhileLoading(bad)
        for _ in range(100):
            self.clock.turn()
        self.assertEqual(len(self.fatal), 1)
        self.assertEqual(self.successResultOf(written), answers.SHUTTING_DOWN)
        self.assertEqual(self.successResultOf(read), answers.SHUTTING_DOWN)


class SavingOffTheLoopTests(SynchronousTestCase):
    """
    A follower that saves its leader's snapshot off the event loop
    (C{saveInBackground}) says nothing its disk does not hold yet.
    """

    def setUp(self) -> None:
        self.observer = InstallObserver()
        self.saves: list[defer.Deferred[None]] = []
        self.clock = TurnClock()
        self.node, _, self.sent = buildNode(
            ("s1", "s2", "s3"), self.observer, self.clock, saveInBackground=self.heldSave
        )

    def heldSave(self, work: Callable[[], object]) -> defer.Deferred[object]:
        """Run C{work} once the test fires the Deferred it keeps in C{saves}."""
        d: defer.Deferred[None] = defer.Deferred()
        self.saves.append(d)
        return d.addCallback(lambda _: work())

    def test_repliesOnceDurable(self) -> None:
        """
        The reply to the snapshot's last chunk, and to every request after
        it, waits until the snapshot is saved, and those requests are
        stepped only then, in order; the node's own clock stands still
        meanwhile.
        """
        manager = self.node.logManager
        done = self.node.peerRequest("s2", InstallSnapshot(1, 3, 1, 0, b'{"a":"1"}', True))
        self.assertEqual(len(self.saves), 1)
        self.assertTrue(self.node.savingSnapshot)
        self.assertTrue(self.node.installingSnapshot)
        self.assertNoResult(done)
        self.assertIsNone(manager.snapshotStore.load())
        after = self.node.peerRequest("s2", AppendEntries(1, 3, 1, (Entry(4, 1, "set b 2"),), 4))
        self.assertNoResult(after)
        self.assertEqual(self.node.status()["leaderCommit"], 3)
        self.assertEqual(self.node.core.log.lastIndex, 3)
        self.node.ticks(100)
        self.assertEqual(self.sent, [])
        self.saves[0].callback(None)
        self.assertEqual(manager.snapshotStore.load(), Snapshot(3, 1, b'{"a":"1"}'))
        self.assertEqual(self.successResultOf(done).matchIndex, 3)
        self.assertEqual(self.successResultOf(after), AppendEntriesResponse(1, True, matchIndex=4))
        self.assertEqual(self.observer.installed, [3])
        self.assertEqual(manager.read("get b"), "OK 2")
        self.assertFalse(self.node.installingSnapshot)
        self.assertEqual(self.node.core.durableIndex, 4)
        self.assertEqual(self.node.status()["leaderCommit"], 4)

    def test_saveTimeReported(self) -> None:
        """
        The observer hears how long the save took, from the chunk to the
        disk's answer; the core then counts the snapshot durable.
        """
        self.clock.advance(1)
        self.node.peerRequest("s2", InstallSnapshot(1, 3, 1, 0, b'{"a":"1"}', True))
        self.clock.advance(0.25)
        self.saves[0].callback(None)
        self.assertEqual(self.observer.syncTimes, [0.25])
        self.assertEqual(self.node.core.durableIndex, 3)

    def test_heldSnapshotStartsTheNextSave(self) -> None:
        """
        A newer snapshot's last chunk held behind a save starts the next
        save when it is stepped; its reply still comes before the replies
        to what came after it, and it replaces the older one, even one
        still loading.
        """
        fired: list[str] = []
        self.node.peerRequest("s2", InstallSnapshot(1, 100, 1, 0, mapSnapshot(20_000), True))
        self.saves[0].callback(None)
        self.assertTrue(self.node.installingSnapshot)  # loading, a step per turn
        newer = self.node.peerRequest("s2", InstallSnapshot(1, 200, 1, 0, b'{"b":"2"}', True))
        self.assertEqual(len(self.saves), 2)
        after = self.node.peerRequest("s2", AppendEntries(1, 200, 1, (), 200))
        newer.addCallback(lambda _: fired.append("snapshot"))
        after.addCallback(lambda _: fired.append("append"))
        self.saves[1].callback(None)
        self.assertEqual(fired, ["snapshot", "append"])
        for _ in range(50):
            self.clock.turn()
        self.assertEqual(self.observer.installed, [200])
        self.assertEqual(self.node.logManager.read("get b"), "OK 2")

    def test_snapshotHeldBehindASave(self) -> None:
        """
        A snapshot's last chunk that comes while another is saved is
        stepped after it and starts its own save; the requests held behind
        it wait for that one, and their replies come after its reply.
        """
        fired: list[str] = []
        self.node.peerRequest("s2", InstallSnapshot(1, 3, 1, 0, b'{"a":"1"}', True))
        newer = self.node.peerRequest("s2", InstallSnapshot(1, 9, 1, 0, b'{"b":"2"}', True))
        after = self.node.peerRequest("s2", AppendEntries(1, 9, 1, (), 9))
        newer.addCallback(lambda reply: fired.append(f"snapshot {reply.matchIndex}"))
        after.addCallback(lambda reply: fired.append(f"append {reply.matchIndex}"))
        self.saves[0].callback(None)
        self.assertEqual((fired, len(self.saves)), ([], 2))
        self.saves[1].callback(None)
        self.assertEqual(fired, ["snapshot 9", "append 9"])
        self.assertEqual(self.node.logManager.read("get b"), "OK 2")

    def test_responsesWaitToo(self) -> None:
        """A peer's response that comes while the snapshot is saved is stepped after it."""
        self.node.peerRequest("s2", InstallSnapshot(1, 3, 1, 0, b'{"a":"1"}', True))
        self.node.peerResponse("s3", RequestVoteResponse(5, False))
        self.assertEqual(self.node.core.currentTerm, 1)
        self.saves[0].callback(None)
        self.assertEqual(self.node.core.currentTerm, 5)

    def test_saveFails(self) -> None:
        """
        A save that fails is a failed disk: the node falls silent, and the
        requests that waited are refused (L{None}: not serving).
        """
        done = self.node.peerRequest("s2", InstallSnapshot(1, 3, 1, 0, b'{"a":"1"}', True))
        after = self.node.peerRequest("s2", AppendEntries(1, 3, 1, (), 3))
        self.saves[0].errback(OSError("no space left on device"))
        self.assertTrue(self.node.silent)
        self.assertEqual(self.node.diskError, "no space left on device")
        self.assertIsNone(self.successResultOf(done))
        self.assertIsNone(self.successResultOf(after))
        self.assertFalse(self.node.savingSnapshot)

    def test_stopWhileSaving(self) -> None:
        """
        A node stopped while it saves refuses what waited, and does nothing
        more once the save ends; a rejoin after a disk failure waits for it.
        """
        done = self.node.peerRequest("s2", InstallSnapshot(1, 3, 1, 0, b'{"a":"1"}', True))
        self.node.stop()
        self.assertIsNone(self.successResultOf(done))
        self.saves[0].callback(None)
        self.assertEqual(self.observer.installed, [])
        self.assertIsNone(self.node.peerRequest("s2", AppendEntries(1, 3, 1, (), 3)))

    def test_rejoinWaitsForTheSave(self) -> None:
        """A node whose disk failed does not read it back while a save is still writing it."""
        self.node.peerRequest("s2", InstallSnapshot(1, 3, 1, 0, b'{"a":"1"}', True))
        self.node._storageFailed(OSError("disk full"))
        self.clock.advance(self.node.diskRetrySeconds)
        self.assertTrue(self.node.silent)
        self.saves[0].callback(None)
        self.clock.advance(self.node.diskRetrySeconds)
        self.assertFalse(self.node.silent)
        self.assertEqual(self.node.logManager.lastApplied, 3)


class InstallationTests(SynchronousTestCase):
    """L{Installation} on its own."""

    def setUp(self) -> None:
        self.clock = TurnClock()
        self.events: list[object] = []

    def installation(self, steps: Iterator[None]) -> Installation:
        """An installation of C{steps} that records when it loaded and what it applied."""
        return Installation(
            steps,
            self.clock,
            loaded=lambda: self.events.append("loaded"),
            apply=lambda entries: self.events.append([entry.index for entry in entries]),
        )

    def test_oneStepPerTurn(self) -> None:
        """The first step is taken at once, each other at a later turn of the clock."""
        taken: list[int] = []

        def steps() -> Iterator[None]:
            for step in range(3):
                taken.append(step)
                yield None

        installation = self.installation(steps())
        done = installation.start()
        self.assertEqual(taken, [0])
        self.clock.turn()
        self.assertEqual(taken, [0, 1])
        self.assertNoResult(done)
        self.clock.turn()
        self.assertEqual(self.events, [])
        self.clock.turn()
        self.assertEqual(self.events, ["loaded"])
        self.assertIs(self.successResultOf(done), installation)

    def test_waitingEntriesAppliedInSteps(self) -> None:
        """
        Entries that waited for the snapshot are applied after it loaded,
        at most L{APPLY_STEP_ENTRIES} per turn, those that come meanwhile
        included, in order.
        """
        installation = self.installation(iter([None]))
        done = installation.start()
        count = 2 * APPLY_STEP_ENTRIES + 1
        installation.unapplied += [Entry(i, 1, "noop") for i in range(1, count + 1)]
        self.clock.turn()
        self.assertEqual(self.events[0], "loaded")
        self.assertEqual(self.events[1], list(range(1, APPLY_STEP_ENTRIES + 1)))
        installation.unapplied.append(Entry(count + 1, 1, "noop"))
        self.clock.turn()
        self.clock.turn()
        self.assertEqual(self.events[3], [count, count + 1])
        self.clock.turn()
        self.successResultOf(done)

    def test_doneInTheFirstStep(self) -> None:
        """
        An installation done in its first step fires at once, with itself;
        cancelling it then changes nothing.
        """
        installation = self.installation(iter([]))
        self.assertIs(self.successResultOf(installation.start()), installation)
        installation.cancel()
        self.assertEqual((self.events, self.clock.getDelayedCalls()), (["loaded"], []))

    def test_cancel(self) -> None:
        """A cancelled installation takes no more steps and says it was stopped."""
        installation = self.installation(iter([None, None, None]))
        done = installation.start()
        installation.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.failureResultOf(done, TaskStopped)
        installation.cancel()
        self.assertEqual(self.events, [])

    def test_failingFirstStep(self) -> None:
        """What the first step raises fails the Deferred."""

        def steps() -> Iterator[None]:
            raise ValueError("bad")
            yield None

        self.failureResultOf(self.installation(steps()).start(), ValueError)
