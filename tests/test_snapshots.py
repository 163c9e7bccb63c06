"""
Tests for L{txraft.snapshots}: the snapshot file format and its store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.helpers import ReadRecordingFileSystem
from txraft.interfaces import ISnapshotStore
from txraft.messages import Snapshot
from txraft.snapshots import (
    HEAD_BYTES,
    FileSnapshotStore,
    MemorySnapshotStore,
    encodeHeader,
    encodeSnapshot,
)
from txraft.storage import StorageError

SNAPSHOT = Snapshot(
    42,
    7,
    '{"a":"1","caf\u00e9":"\u2603 x"}'.encode(),
    "membership voter s1 127.0.0.1 10000 learner s2 127.0.0.1 10001",
)


def damagedCopies(good: bytes) -> list[bytes]:
    """
    Copies of the snapshot file C{good} (of L{SNAPSHOT}) with its header,
    length, checksum, version, index, term or membership not holding.
    """
    return [
        good[:-1],
        good + b"x",
        good[:-2] + b"!}",
        b"not a snapshot\n{}",
        good.replace(b"txraft-snapshot 2", b"txraft-snapshot 9"),
        good.replace(b"txraft-snapshot 2", b"txraft-snapshot 1"),
        good.replace(b"learner s2", b"voter s2"),
        good.split(b"\n")[0] + b"\n",
        good.replace(b" 42 ", b" x "),
        good.replace(b" 42 7 ", b" 43 7 "),
        good.replace(b" 42 7 ", b" 42 6 "),
        good.split(b"\n")[0],
    ]


class FileSnapshotStoreTests(SynchronousTestCase):
    """The snapshot file: written atomically, checked when read."""

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, "s1.snapshot")
        self.store = FileSnapshotStore(self.path)

    def test_providesInterface(self) -> None:
        """L{FileSnapshotStore} provides L{ISnapshotStore}."""
        self.assertTrue(verifyObject(ISnapshotStore, self.store))

    def test_noSnapshot(self) -> None:
        """A node that never took a snapshot has none."""
        self.assertIsNone(self.store.load())

    def test_roundTrip(self) -> None:
        """A saved snapshot loads back equal, and a later save replaces it."""
        self.store.save(SNAPSHOT)
        self.assertEqual(FileSnapshotStore(self.path).load(), SNAPSHOT)
        later = Snapshot(50, 8, b"{}")
        self.store.save(later)
        self.assertEqual(FileSnapshotStore(self.path).load(), later)
        self.assertEqual(os.listdir(self.directory), ["s1.snapshot"])

    def test_readableFormat(self) -> None:
        """
        The file is a header line naming index, term, length and checksum,
        the membership's line, then the state machine's bytes as they are.
        """
        self.store.save(SNAPSHOT)
        with open(self.path, "rb") as f:
            header, membership, data = f.read().split(b"\n", 2)
        self.assertEqual(header.split(b" ")[:5], [b"txraft-snapshot", b"2", b"42", b"7", b"25"])
        self.assertEqual(membership.decode(), SNAPSHOT.membership)
        self.assertEqual(data, SNAPSHOT.data)

    def test_withoutMembership(self) -> None:
        """
        A snapshot of a cluster whose log held no membership yet has an
        empty membership line, and loads back the same.
        """
        snapshot = Snapshot(3, 1, b"{}")
        self.store.save(snapshot)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read().split(b"\n")[1:], [b"", b"{}"])
        self.assertEqual(FileSnapshotStore(self.path).load(), snapshot)

    def test_versionOneLoads(self) -> None:
        """
        A version 1 file, written before the membership line existed, still
        loads, with no membership; its checksum is still checked.
        """
        data = b'{"a":"1"}'
        digest = hashlib.sha256(b"5 2 9\n" + data).hexdigest()
        contents = f"txraft-snapshot 1 5 2 9 {digest}\n".encode() + data
        with open(self.path, "wb") as f:
            f.write(contents)
        self.assertEqual(self.store.load(), Snapshot(5, 2, data))
        with open(self.path, "wb") as f:
            f.write(contents.replace(b'"1"', b'"2"'))
        self.assertRaises(StorageError, self.store.load)

    def test_leftoverTemporaryIgnored(self) -> None:
        """
        A temporary file left by a crash before the rename is removed; the
        snapshot in place is the one loaded.
        """
        self.store.save(SNAPSHOT)
        with open(self.path + ".tmp", "wb") as f:
            f.write(b"txraft-snapshot 1 99 9 100 ab")
        self.assertEqual(self.store.load(), SNAPSHOT)
        self.assertFalse(os.path.exists(self.path + ".tmp"))

    def test_commitLeavesFreeingTheOldOneToTheNextWriter(self) -> None:
        """
        Committing a snapshot does not free the old one's blocks (on the
        event loop): the old file keeps a second name, and whoever stages
        the next snapshot (a forked child, a thread) removes it.  A restart
        removes it too.
        """
        self.store.save(SNAPSHOT)
        old = os.stat(self.path).st_ino
        later = Snapshot(50, 8, b"{}")
        self.store.commit(self.store.stage(later))
        self.assertEqual(os.stat(self.store.retired).st_ino, old)
        self.assertEqual(FileSnapshotStore(self.path).load(), later)
        self.assertFalse(os.path.exists(self.store.retired))
        self.store.commit(self.store.stage(Snapshot(60, 8, b"{}")))
        self.store.stage(Snapshot(70, 8, b"{}"))
        self.assertFalse(os.path.exists(self.store.retired))

    def test_commitWithARetiredLeftover(self) -> None:
        """
        A retired file no staging removed (the last snapshot was installed
        from the leader) is removed by the next commit, which retires the
        snapshot it replaces in its place.
        """
        self.store.save(SNAPSHOT)
        self.store.save(Snapshot(50, 8, b"{}"))
        current = os.stat(self.path).st_ino
        self.store.save(Snapshot(60, 8, b"{}"))
        self.assertEqual(os.stat(self.store.retired).st_ino, current)
        self.assertEqual(self.store.load(), Snapshot(60, 8, b"{}"))

    def test_damageRefused(self) -> None:
        """
        A snapshot whose header, length or checksum do not hold is refused
        with a message naming the file: it was damaged after it was written.
        The checksum covers the header's index and term and the membership
        too.
        """
        for contents in damagedCopies(encodeSnapshot(SNAPSHOT)):
            with open(self.path, "wb") as f:
                f.write(contents)
            error = self.assertRaises(StorageError, self.store.load)
            self.assertIn(self.path, str(error))

    def test_stagedReadsBack(self) -> None:
        """
        A staged snapshot reads back equal, also with a membership line
        longer than the first read; it is not the saved one until committed.
        """
        members = " ".join(f"voter n{i} 127.0.0.1 {i}" for i in range(HEAD_BYTES // 20))
        for snapshot in [SNAPSHOT, Snapshot(9, 2, b"{}", f"membership {members}")]:
            staged = self.store.stage(snapshot)
            self.assertEqual(self.store.readStaged(staged), snapshot)
            self.assertIsNone(FileSnapshotStore(self.path).load())

    def test_stagedDataReadOnItsOwn(self) -> None:
        """
        Reading a staged snapshot back reads its data with one read of its
        own, from where it starts: never sliced out of a copy of the whole
        file, which for a million keys held the GIL for tens of
        milliseconds, stalling the node's event loop meanwhile.
        """
        fileSystem = ReadRecordingFileSystem()
        store = FileSnapshotStore(self.path, fileSystem=fileSystem)
        staged = store.stage(SNAPSHOT)
        fileSystem.reads.clear()
        self.assertEqual(store.readStaged(staged), SNAPSHOT)
        start = len(encodeHeader(SNAPSHOT))
        self.assertEqual(fileSystem.reads[-1], (len(SNAPSHOT.data), start))
        self.assertEqual([offset for _, offset in fileSystem.reads[:-1]], [0])

    def test_stagedDamageRefused(self) -> None:
        """
        A staged snapshot that is missing, or whose header, length or
        checksum do not hold, is refused naming the staged file.
        """
        staged = self.store.staging
        error = self.assertRaises(StorageError, self.store.readStaged, staged)
        self.assertIn(staged, str(error))
        for contents in [*damagedCopies(encodeSnapshot(SNAPSHOT)), b""]:
            with open(staged, "wb") as f:
                f.write(contents)
            error = self.assertRaises(StorageError, self.store.readStaged, staged)
            self.assertIn(staged, str(error))


class MemorySnapshotStoreTests(SynchronousTestCase):
    """The in-memory store used by simulations."""

    def test_roundTrip(self) -> None:
        """It starts empty and keeps the last snapshot saved."""
        store = MemorySnapshotStore()
        self.assertIsNone(store.load())
        store.save(SNAPSHOT)
        self.assertEqual(store.load(), SNAPSHOT)

    def test_providesInterface(self) -> None:
        """L{MemorySnapshotStore} provides L{ISnapshotStore}."""
        self.assertTrue(verifyObject(ISnapshotStore, MemorySnapshotStore()))
