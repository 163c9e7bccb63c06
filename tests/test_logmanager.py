"""
Tests for L{txraft.logmanager.LogManager}: recovery, persistence of each
L{Ready}, and exactly-once, in-order application to the state machine.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import RecordingLogStore, RecordingStateStore, temporaryDirectory
from txraft.core import NOOP, Ready
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import Entry, HardState, Snapshot
from txraft.snapshots import FileSnapshotStore
from txraft.storage import FileLogStore, FileStateStore, StorageError, lockDataDirectory

ENTRIES = [
    Entry(1, 1, NOOP),
    Entry(2, 1, "set a 1"),
    Entry(3, 1, "get a"),
    Entry(4, 2, "delete a"),
    Entry(5, 2, "get a"),
]


class PersistTests(SynchronousTestCase):
    """
    Tests for L{LogManager.persist}: step 1 of the L{Ready} contract.
    """

    def setUp(self) -> None:
        """
        A LogManager over stores that record their calls in one list.
        """
        self.events: list[tuple[str, object]] = []
        self.logStore = RecordingLogStore(self.events)
        self.stateStore = RecordingStateStore(self.events)
        self.manager = LogManager(self.logStore, self.stateStore, KeyValueStore())

    def test_termAndVoteBeforeLog(self) -> None:
        """
        The term and vote are saved before the log changes, and the log is
        synced last, so nothing in the Ready is acted on before it is all
        durable (Figure 2: "updated on stable storage before responding").
        """
        ready = Ready(hardState=HardState(2, "s1"), truncateFrom=2, entries=ENTRIES[1:3])
        self.manager.persist(ready)
        self.assertEqual(
            self.events,
            [
                ("save", HardState(2, "s1")),
                ("truncateFrom", 2),
                ("append", ENTRIES[1:3]),
                ("sync", None),
            ],
        )

    def test_entriesAreDurable(self) -> None:
        """
        Appended entries survive a crash right after L{LogManager.persist}.
        """
        self.manager.persist(Ready(entries=ENTRIES[:2]))
        self.logStore.crash()
        self.assertEqual(self.logStore.load(), ENTRIES[:2])

    def test_truncationIsDurable(self) -> None:
        """
        A truncation alone is synced too: a crash must not bring back
        entries the node told the leader it dropped.
        """
        self.manager.persist(Ready(entries=ENTRIES))
        self.manager.persist(Ready(truncateFrom=3))
        self.logStore.crash()
        self.assertEqual(self.logStore.load(), ENTRIES[:2])

    def test_hardStateOnly(self) -> None:
        """
        A Ready with only a new term and vote saves them and leaves the log
        alone (no needless fsync).
        """
        self.manager.persist(Ready(hardState=HardState(5, None)))
        self.assertEqual(self.events, [("save", HardState(5, None))])
        self.assertEqual(self.stateStore.load(), HardState(5, None))

    def test_nothingToPersist(self) -> None:
        """
        An empty Ready touches no store.
        """
        self.manager.persist(Ready())
        self.assertEqual(self.events, [])

    def test_writtenWithoutSync(self) -> None:
        """
        A leader's entries persisted without C{sync} are written, not
        synced, and the manager says so until L{LogManager.sync}; a crash
        meanwhile loses them.
        """
        self.manager.persist(Ready(entries=ENTRIES[:1]))
        self.manager.persist(Ready(entries=ENTRIES[1:3]), sync=False)
        self.assertTrue(self.manager.unsynced)
        self.assertEqual(self.events[-1], ("append", ENTRIES[1:3]))
        self.logStore.crash()
        self.assertEqual(self.logStore.load(), ENTRIES[:1])
        self.manager.persist(Ready(entries=ENTRIES[1:3]), sync=False)
        self.manager.sync()
        self.assertIs(self.manager.unsynced, False)
        self.logStore.crash()
        self.assertEqual(self.logStore.load(), ENTRIES[:3])

    def test_syncedReadyTakesEarlierWritesAlong(self) -> None:
        """
        A Ready persisted with C{sync}, even one that only saves a term,
        makes the entries written before it without a sync durable too:
        what follows it may acknowledge them.
        """
        self.manager.persist(Ready(entries=ENTRIES[:2]), sync=False)
        self.manager.persist(Ready(hardState=HardState(5, None)))
        self.assertEqual(self.events[-1], ("sync", None))
        self.assertFalse(self.manager.unsynced)
        self.logStore.crash()
        self.assertEqual(self.logStore.load(), ENTRIES[:2])

    def test_syncMarkCoversWhatWasWritten(self) -> None:
        """
        A sync mark covers the entries written before it: once its sync has
        returned, a crash keeps them and loses those written after; the
        manager stays unsynced until a mark taken after the last write has.
        """
        self.manager.persist(Ready(entries=ENTRIES[:2]), sync=False)
        mark = self.manager.syncMark()
        self.manager.persist(Ready(entries=ENTRIES[2:3]), sync=False)
        self.manager.syncTo(mark)
        self.assertTrue(self.manager.synced(mark))
        self.assertTrue(self.manager.unsynced)
        later = self.manager.syncMark()
        self.manager.syncTo(later)
        self.assertTrue(self.manager.synced(later))
        self.assertIs(self.manager.unsynced, False)
        self.logStore.crash()
        self.assertEqual(self.logStore.load(), ENTRIES[:3])

    def test_syncMarkOfCutEntries(self) -> None:
        """
        A mark taken before its entries were cut says, once its sync
        returns, that it made nothing of the log durable.
        """
        self.manager.persist(Ready(entries=ENTRIES[:3]), sync=False)
        mark = self.manager.syncMark()
        self.manager.persist(Ready(truncateFrom=3))
        self.manager.syncTo(mark)
        self.assertFalse(self.manager.synced(mark))

    def test_recoveryRefusesALogBehindTheStateMachine(self) -> None:
        """
        After a disk failure the state machine is kept: a log that lost an
        entry it applied (none left, and no snapshot) is refused.
        """
        self.manager.persist(Ready(entries=ENTRIES[:1]))
        self.manager.apply(ENTRIES[:1])
        self.logStore.durable = []
        error = self.assertRaises(StorageError, self.manager.recoverAfterFailure)
        self.assertEqual(str(error), "the log ends at index 0 but 1 were applied")

    def test_storageFailurePropagates(self) -> None:
        """
        An L{OSError} from a store propagates: the node must not go on as if
        the write had happened.
        """
        self.logStore.failWrites = True
        self.assertRaises(OSError, self.manager.persist, Ready(entries=ENTRIES[:1]))
        self.stateStore.failWrites = True
        self.assertRaises(OSError, self.manager.persist, Ready(hardState=HardState(1, None)))


class ApplyTests(SynchronousTestCase):
    """
    Tests for L{LogManager.apply}: step 3 of the L{Ready} contract.
    """

    def setUp(self) -> None:
        """
        A LogManager over in-memory stores and a fresh key-value store.
        """
        self.stateMachine = KeyValueStore()
        self.manager = LogManager(RecordingLogStore(), RecordingStateStore(), self.stateMachine)

    def test_inOrderWithReplies(self) -> None:
        """
        Committed entries are executed in index order and each one's reply
        is returned with it; a leader's no-op has no reply (Reference:
        section 5.4.2) and does not touch the state machine.
        """
        results = self.manager.apply(ENTRIES)
        self.assertEqual(
            results,
            [
                (ENTRIES[0], None),
                (ENTRIES[1], "OK"),
                (ENTRIES[2], "OK 1"),
                (ENTRIES[3], "OK"),
                (ENTRIES[4], "NOT_FOUND"),
            ],
        )
        self.assertEqual(self.manager.lastApplied, 5)

    def test_exactlyOnce(self) -> None:
        """
        Entries at or below lastApplied are skipped, so an entry handed over
        twice is executed once (Figure 2: lastApplied).
        """
        self.manager.apply(ENTRIES[:3])
        results = self.manager.apply(ENTRIES[1:])
        self.assertEqual(results, [(ENTRIES[3], "OK"), (ENTRIES[4], "NOT_FOUND")])
        self.assertEqual(self.manager.apply(ENTRIES), [])
        self.assertEqual(self.manager.lastApplied, 5)

    def test_applyInSteps(self) -> None:
        """
        Applying the log in several batches gives the same map as applying
        it at once.
        """
        other = LogManager(RecordingLogStore(), RecordingStateStore(), KeyValueStore())
        other.apply(ENTRIES[:3])
        self.manager.apply(ENTRIES[:3])
        self.assertEqual(other.stateMachine.data, {"a": "1"})
        other.apply(ENTRIES[3:])
        self.manager.apply(ENTRIES)
        self.assertEqual(other.stateMachine.data, self.stateMachine.data)

    def test_gapRefused(self) -> None:
        """
        An entry that does not follow lastApplied is refused: applying out of
        order would make replicas diverge.
        """
        self.manager.apply(ENTRIES[:1])
        error = self.assertRaises(RuntimeError, self.manager.apply, ENTRIES[2:])
        self.assertEqual(str(error), "apply gap: 3 after 1")
        self.assertEqual(self.manager.lastApplied, 1)

    def test_empty(self) -> None:
        """
        Applying nothing returns nothing.
        """
        self.assertEqual(self.manager.apply([]), [])
        self.assertEqual(self.manager.lastApplied, 0)


class StopTests(SynchronousTestCase):
    """Tests for L{LogManager.stopService}."""

    def test_releasesTheDataDirectoryLock(self) -> None:
        """
        Stopping releases the data directory's lock it was given, once: the
        same node may lock the directory again (a restart in one process).
        """
        directory = temporaryDirectory(self)
        manager = LogManager(
            FileLogStore(os.path.join(directory, "s1.log")),
            FileStateStore(os.path.join(directory, "s1.state")),
            KeyValueStore(),
            dataDirectoryLock=lockDataDirectory(directory, "s1"),
        )
        manager.stopService()
        self.assertIsNone(manager.dataDirectoryLock)
        manager.stopService()
        self.addCleanup(os.close, lockDataDirectory(directory, "s1"))


class RecoverTests(SynchronousTestCase):
    """
    Tests for L{LogManager.recover} over the file stores.
    """

    def setUp(self) -> None:
        """
        A data directory for C{s1}.
        """
        self.directory = temporaryDirectory(self)

    def openManager(self) -> LogManager:
        """
        A LogManager over file stores in the data directory, its log closed
        when the test ends.
        """
        manager = LogManager(
            FileLogStore(os.path.join(self.directory, "s1.log")),
            FileStateStore(os.path.join(self.directory, "s1.state")),
            KeyValueStore(),
        )
        self.addCleanup(manager.logStore.close)
        return manager

    def test_fresh(self) -> None:
        """
        An empty data directory recovers as term 0, no vote, empty log.
        """
        self.assertEqual(self.openManager().recover(), (HardState(), []))

    def test_recoverPersisted(self) -> None:
        """
        What was persisted, including a truncation and a later term and
        vote, is what the next LogManager on the same files recovers
        (Figure 2: persistent state on all servers).
        """
        manager = self.openManager()
        manager.recover()
        manager.persist(Ready(hardState=HardState(1, "s1"), entries=ENTRIES[:3]))
        manager.persist(
            Ready(hardState=HardState(2, "s2"), truncateFrom=3, entries=[Entry(3, 2, "set b 2")])
        )
        manager.persist(Ready(entries=[Entry(4, 2, "set c 3")]))
        self.assertEqual(
            self.openManager().recover(),
            (HardState(2, "s2"), ENTRIES[:2] + [Entry(3, 2, "set b 2"), Entry(4, 2, "set c 3")]),
        )

    def test_recoveredEntriesReapply(self) -> None:
        """
        A restarted node starts with lastApplied 0 and rebuilds the same map
        by applying its recovered log again.
        """
        manager = self.openManager()
        manager.recover()
        manager.persist(Ready(entries=ENTRIES[:2]))
        manager.apply(ENTRIES[:2])
        restarted = self.openManager()
        _, entries = restarted.recover()
        self.assertEqual(restarted.lastApplied, 0)
        restarted.apply(entries)
        self.assertEqual(restarted.stateMachine.data, manager.stateMachine.data)

    def openSnapshottingManager(self) -> LogManager:
        """A L{openManager} that also keeps snapshots in the data directory."""
        manager = self.openManager()
        manager.snapshotStore = FileSnapshotStore(os.path.join(self.directory, "s1.snapshot"))
        return manager

    def test_snapshotThenLog(self) -> None:
        """
        A node that took a snapshot recovers the snapshot into its state
        machine (lastApplied at its end) and the log entries after it.
        Reference: dissertation section 5.1.
        """
        manager = self.openSnapshottingManager()
        manager.recover()
        manager.persist(Ready(entries=ENTRIES[:3]))
        manager.apply(ENTRIES[:3])
        snapshot, staged = manager.captureSnapshot()()
        manager.commitSnapshot(snapshot, staged)
        manager.persist(Ready(entries=ENTRIES[3:]))
        restarted = self.openSnapshottingManager()
        hardState, entries = restarted.recover()
        self.assertEqual(restarted.snapshot, Snapshot(3, 1, b'{"a":"1"}'))
        self.assertEqual((restarted.lastApplied, restarted.lastAppliedTerm), (3, 1))
        self.assertEqual(restarted.stateMachine.data, {"a": "1"})
        self.assertEqual(entries, ENTRIES[3:])
        restarted.apply(entries)
        self.assertEqual(restarted.stateMachine.data, {})

    def test_captureIsConsistent(self) -> None:
        """
        A snapshot captured before more commands apply holds the state as of
        its own index, whenever it is serialized.
        """
        manager = self.openSnapshottingManager()
        manager.recover()
        manager.apply(ENTRIES[:2])
        write = manager.captureSnapshot()
        manager.apply(ENTRIES[2:4])
        snapshot, _ = write()
        self.assertEqual((snapshot.index, snapshot.data), (2, b'{"a":"1"}'))

    def test_captureStateWritesNothing(self) -> None:
        """
        L{LogManager.captureState}, what a backup takes, holds the state and
        the membership as of its own index however many commands apply
        before it is serialized, and stages nothing: the file a snapshot of
        the node itself is staged in is left alone.
        """
        manager = self.openSnapshottingManager()
        manager.recover()
        membership = "membership voter s1 127.0.0.1 10000"
        manager.apply([*ENTRIES[:2], Entry(3, 1, membership)])
        serialize = manager.captureState()
        manager.apply([Entry(4, 2, "set a 2")])
        self.assertEqual(serialize(), Snapshot(3, 1, b'{"a":"1"}', membership))
        self.assertEqual(os.listdir(self.directory), ["s1.log"])

    def test_receivedSnapshotPersisted(self) -> None:
        """
        A snapshot from the leader is saved and the log entries it covers
        dropped before the node answers; installing it resets the state
        machine.
        """
        manager = self.openSnapshottingManager()
        manager.recover()
        manager.persist(Ready(entries=ENTRIES[:2]))
        snapshot = Snapshot(4, 2, b'{"b":"2"}')
        manager.persist(Ready(truncateFrom=3, snapshot=snapshot))
        manager.installSnapshot(snapshot)
        self.assertEqual((manager.lastApplied, manager.stateMachine.data), (4, {"b": "2"}))
        restarted = self.openSnapshottingManager()
        self.assertEqual(restarted.recover(), (HardState(), []))
        self.assertEqual(restarted.stateMachine.data, {"b": "2"})

    def test_unusableSnapshotRefused(self) -> None:
        """A snapshot whose data is no key-value state refuses to start."""
        manager = self.openSnapshottingManager()
        manager.snapshotStore.save(Snapshot(2, 1, b"[1, 2]"))
        error = self.assertRaises(StorageError, self.openSnapshottingManager().recover)
        self.assertIn("snapshot up to 2 is unusable", str(error))

    def test_stopServiceClosesLog(self) -> None:
        """
        Stopping the LogManager service closes the log file.
        """
        manager = LogManager(
            FileLogStore(os.path.join(self.directory, "s1.log")),
            FileStateStore(os.path.join(self.directory, "s1.state")),
            KeyValueStore(),
        )
        manager.recover()
        manager.startService()
        manager.stopService()
        self.assertRaises(OSError, manager.logStore.sync)
