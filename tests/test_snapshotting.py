"""
Tests for L{txraft.snapshotting}: where a node serializes and writes its
snapshots.  The forked child is real: these tests fork this process and
wait for the child on the reactor.
"""

from __future__ import annotations

import gc
import os

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.helpers import temporaryDirectory
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import Entry, Snapshot
from txraft.snapshots import FileSnapshotStore
from txraft.snapshotting import SnapshotChildError, inBackground, inChild
from txraft.storage import MemoryLogStore, MemoryStateStore


def managerWith(directory: str, commands: list[str]) -> LogManager:
    """A LogManager with a snapshot file in C{directory}, having applied C{commands}."""
    manager = LogManager(
        MemoryLogStore(),
        MemoryStateStore(),
        KeyValueStore(),
        FileSnapshotStore(os.path.join(directory, "s1.snapshot")),
    )
    manager.apply([Entry(i, 1, command) for i, command in enumerate(commands, start=1)])
    return manager


class BrokenStore(KeyValueStore):
    """A state machine whose serializing fails."""

    def capture(self):  # type: ignore[no-untyped-def]
        """Freeze nothing; serializing raises."""

        def serialize() -> bytes:
            raise RuntimeError("cannot serialize")

        return serialize


class WitnessStore(KeyValueStore):
    """A state machine that notes in a file which process freezes it and which serializes it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def capture(self):  # type: ignore[no-untyped-def]
        """Note the freezing, then hand out a serializing that notes itself too."""
        self.note("freeze")
        serialize = super().capture()

        def serializing() -> bytes:
            self.note("serialize")
            return serialize()

        return serializing

    def note(self, what: str) -> None:
        """Append C{what} and this process's ID to the file."""
        with open(self.path, "a") as f:
            f.write(f"{what} {os.getpid()}\n")


class InChildTests(TestCase):
    """L{inChild} writes the snapshot in a forked child."""

    @inlineCallbacks
    def test_nodeProcessNeitherFreezesNorSerializes(self) -> Deferred[None]:  # type: ignore[misc]
        """
        The node's own process does no work that grows with the map: the
        child freezes the state and serializes it, the parent neither (a
        million keys cost the event loop a second of C{json.dumps} when a
        thread of the node serialized them, and their copy before that).
        """
        directory = temporaryDirectory(self)
        notes = os.path.join(directory, "notes")
        manager = LogManager(
            MemoryLogStore(),
            MemoryStateStore(),
            WitnessStore(notes),
            FileSnapshotStore(os.path.join(directory, "s1.snapshot")),
        )
        manager.apply([Entry(1, 1, "set a 1")])
        snapshot, _ = yield inChild(reactor, threads.deferToThread)(manager)
        self.assertEqual(snapshot.index, 1)
        with open(notes) as f:
            seen = [line.split() for line in f]
        self.assertEqual([what for what, _ in seen], ["freeze", "serialize"])
        self.assertNotIn(str(os.getpid()), {pid for _, pid in seen})

    @inlineCallbacks
    def test_writesStateAsOfTheFork(self) -> Deferred[None]:  # type: ignore[misc]
        """
        The child writes the state as of the moment it was forked, staged
        in the store's file; what the parent applies meanwhile is not in it;
        the parent reads the snapshot back and can commit it.
        """
        directory = temporaryDirectory(self)
        manager = managerWith(directory, ["set a 1", "set b 2"])
        taking = inChild(reactor, threads.deferToThread)(manager)
        manager.apply([Entry(3, 1, "set c 3")])
        snapshot, staged = yield taking
        self.assertEqual((snapshot.index, snapshot.term), (2, 1))
        restored = KeyValueStore()
        restored.restore(snapshot.data)
        self.assertEqual(restored.data, {"a": "1", "b": "2"})
        store = manager.snapshotStore
        assert isinstance(store, FileSnapshotStore)
        self.assertEqual(staged, store.staging)
        manager.commitSnapshot(snapshot, staged)
        self.assertEqual(store.load(), snapshot)

    def brokenManager(self) -> LogManager:
        """A LogManager over a snapshot file, whose state machine cannot be serialized."""
        manager = LogManager(
            MemoryLogStore(),
            MemoryStateStore(),
            BrokenStore(),
            FileSnapshotStore(os.path.join(temporaryDirectory(self), "s1.snapshot")),
        )
        manager.apply([Entry(1, 1, "set a 1")])
        return manager

    @inlineCallbacks
    def test_childFailureReported(self) -> Deferred[None]:  # type: ignore[misc]
        """A child that cannot write the snapshot fails the Deferred, naming its exit code."""
        manager = self.brokenManager()
        failure = yield self.assertFailure(
            inChild(reactor, threads.deferToThread)(manager), SnapshotChildError
        )
        self.assertIn("exited with 1", str(failure))

    @inlineCallbacks
    def test_noCollectionWhileTheChildShares(self) -> Deferred[None]:  # type: ignore[misc]
        """
        The cyclic garbage collector is off from the fork until the child is
        reaped, and on again after: a collection writes to every object it
        visits, so while the child shares the node's memory each page it
        touched would be copied (a full collection of a node holding a
        million keys took 100 to 250 ms instead of 10).
        """
        self.assertTrue(gc.isenabled())
        directory = temporaryDirectory(self)
        manager = managerWith(directory, ["set a 1"])
        taking = inChild(reactor, threads.deferToThread)(manager)
        self.assertFalse(gc.isenabled())
        yield taking
        self.assertTrue(gc.isenabled())

    @inlineCallbacks
    def test_collectionBackAfterAFailedChild(self) -> Deferred[None]:  # type: ignore[misc]
        """A child that fails turns the collector back on all the same."""
        manager = self.brokenManager()
        taking = inChild(reactor, threads.deferToThread)(manager)
        self.assertFalse(gc.isenabled())
        yield self.assertFailure(taking, SnapshotChildError)
        self.assertTrue(gc.isenabled())

    @inlineCallbacks
    def test_collectorLeftOffStaysOff(self) -> Deferred[None]:  # type: ignore[misc]
        """A collector that was off before the fork is not turned on by the child's end."""
        directory = temporaryDirectory(self)
        manager = managerWith(directory, ["set a 1"])
        gc.disable()
        self.addCleanup(gc.enable)
        yield inChild(reactor, threads.deferToThread)(manager)
        self.assertFalse(gc.isenabled())

    def test_needsAFileStore(self) -> None:
        """A store in memory cannot take a child's snapshot: refused before forking."""
        manager = LogManager(MemoryLogStore(), MemoryStateStore(), KeyValueStore())
        self.assertRaises(TypeError, inChild(reactor, threads.deferToThread), manager)


class InBackgroundTests(SynchronousTestCase):
    """L{inBackground} freezes the state now and writes it with the runner given."""

    def test_freezesNowWritesLater(self) -> None:
        """
        The state is frozen when the snapshot is asked for; the runner
        serializes and writes it when it likes.
        """
        directory = temporaryDirectory(self)
        manager = managerWith(directory, ["set a 1"])
        work: list[object] = []

        def later(function):  # type: ignore[no-untyped-def]
            work.append(function)
            return Deferred()

        inBackground(later)(manager)
        manager.apply([Entry(2, 1, "set a 2")])
        [write] = work
        snapshot, _ = write()  # type: ignore[operator]
        self.assertEqual(snapshot, Snapshot(1, 1, b'{"a":"1"}'))
