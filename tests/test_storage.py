"""
Tests for L{txraft.storage}: the file-backed and in-memory log and
term/vote stores, and the data directory lock.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.helpers import temporaryDirectory
from txraft.core import HardState
from txraft.messages import Entry
from txraft.storage import (
    FileLogStore,
    FileStateStore,
    ILogStore,
    IStateStore,
    MemoryLogStore,
    MemoryStateStore,
    StorageError,
    lockDataDirectory,
)

ENTRIES = [Entry(1, 1, "noop"), Entry(2, 1, "set a 1"), Entry(3, 2, "set b two words")]


class FileLogStoreTests(SynchronousTestCase):
    """
    Tests for L{FileLogStore}: the C{INDEX TERM COMMAND} log file.
    """

    def setUp(self) -> None:
        """
        A fresh directory and the path of a log file in it.
        """
        self.directory = temporaryDirectory(self)
        self.path = os.path.join(self.directory, "s1.log")

    def openStore(self) -> FileLogStore:
        """
        Open the log file as a store that is closed when the test ends.
        """
        store = FileLogStore(self.path)
        self.addCleanup(store.close)
        return store

    def readFile(self) -> bytes:
        """
        The raw bytes of the log file.
        """
        with open(self.path, "rb") as f:
            return f.read()

    def writeFile(self, data: bytes) -> None:
        """
        Replace the log file's contents with C{data}.
        """
        with open(self.path, "wb") as f:
            f.write(data)

    def test_interface(self) -> None:
        """
        L{FileLogStore} provides L{ILogStore}.
        """
        self.assertTrue(verifyObject(ILogStore, self.openStore()))

    def test_newFileIsEmpty(self) -> None:
        """
        Opening a store creates an empty file, which loads as an empty log.
        """
        store = self.openStore()
        self.assertTrue(os.path.exists(self.path))
        self.assertEqual(store.load(), [])

    def test_roundTrip(self) -> None:
        """
        Appended and synced entries load back, equal and in order, from a
        new store on the same file (what a restarted node reads).
        """
        store = self.openStore()
        store.load()
        store.append(ENTRIES[:2])
        store.append(ENTRIES[2:])
        store.sync()
        self.assertEqual(self.openStore().load(), ENTRIES)

    def test_fileFormat(self) -> None:
        """
        The file holds one C{INDEX TERM COMMAND} line per entry, as the
        essay specifies.
        """
        store = self.openStore()
        store.load()
        store.append(ENTRIES)
        store.sync()
        self.assertEqual(self.readFile(), b"1 1 noop\n2 1 set a 1\n3 2 set b two words\n")

    def test_oddValuesRoundTrip(self) -> None:
        """
        Commands with repeated and trailing spaces, tabs, C{@}, and
        non-ASCII text come back byte for byte.
        """
        entries = [
            Entry(1, 1, "set k  two  spaces  "),
            Entry(2, 1, "set k\ttab\there"),
            Entry(3, 1, "set k a@b @c"),
            Entry(4, 3, "set clé ünïcødé ☃ 雪 \u2028 \x85"),
            Entry(5, 3, "set k "),
        ]
        store = self.openStore()
        store.load()
        store.append(entries)
        store.sync()
        self.assertEqual(self.openStore().load(), entries)

    def test_truncateThenAppend(self) -> None:
        """
        L{FileLogStore.truncateFrom} removes the entry at an index and all
        later ones; entries appended afterwards follow the kept ones, in the
        file and on reload (a follower overwriting a conflicting suffix,
        Reference: section 5.3).
        """
        store = self.openStore()
        store.load()
        store.append(ENTRIES)
        store.sync()
        store.truncateFrom(2)
        replacement = [Entry(2, 3, "set c 3"), Entry(3, 3, "delete a")]
        store.append(replacement)
        store.sync()
        self.assertEqual(self.readFile(), b"1 1 noop\n2 3 set c 3\n3 3 delete a\n")
        self.assertEqual(self.openStore().load(), [ENTRIES[0]] + replacement)

    def test_truncateAfterReload(self) -> None:
        """
        A store that loaded an existing file knows where each line starts,
        so truncating right after recovery cuts at the right byte.
        """
        store = self.openStore()
        store.load()
        store.append(ENTRIES)
        store.sync()
        reopened = self.openStore()
        reopened.load()
        reopened.truncateFrom(3)
        reopened.append([Entry(3, 4, "set z z")])
        reopened.sync()
        self.assertEqual(self.openStore().load(), ENTRIES[:2] + [Entry(3, 4, "set z z")])

    def test_truncateEverything(self) -> None:
        """
        Truncating from index 1 empties the log.
        """
        store = self.openStore()
        store.load()
        store.append(ENTRIES)
        store.truncateFrom(1)
        store.sync()
        self.assertEqual(self.readFile(), b"")
        self.assertEqual(self.openStore().load(), [])

    def test_truncateBeyondEnd(self) -> None:
        """
        Truncating from an index past the last entry changes nothing.
        """
        store = self.openStore()
        store.load()
        store.append(ENTRIES)
        store.truncateFrom(4)
        store.sync()
        self.assertEqual(self.openStore().load(), ENTRIES)

    def test_tornLastLineDropped(self) -> None:
        """
        A last line without its newline (a crash in the middle of an append)
        is dropped on load and cut from the file: no server acknowledged it.
        """
        self.writeFile(b"1 1 noop\n2 1 set a 1\n3 1 set b hal")
        store = self.openStore()
        self.assertEqual(store.load(), ENTRIES[:2])
        self.assertEqual(self.readFile(), b"1 1 noop\n2 1 set a 1\n")

    def test_tornLastLineThenAppend(self) -> None:
        """
        After a torn line is dropped, new entries land right after the last
        whole line, so the file reloads cleanly.
        """
        self.writeFile(b"1 1 noop\n2 1 set a 1\n3 1 set b hal")
        store = self.openStore()
        store.load()
        store.append([Entry(3, 2, "set c 3")])
        store.sync()
        self.assertEqual(self.readFile(), b"1 1 noop\n2 1 set a 1\n3 2 set c 3\n")
        self.assertEqual(self.openStore().load(), ENTRIES[:2] + [Entry(3, 2, "set c 3")])

    def test_tornLastLineThenTruncate(self) -> None:
        """
        After a torn line is dropped, truncating and appending still cut at
        the right place.
        """
        self.writeFile(b"1 1 noop\n2 1 set a 1\n3 1 set b hal")
        store = self.openStore()
        store.load()
        store.truncateFrom(2)
        store.append([Entry(2, 2, "set d 4")])
        store.sync()
        self.assertEqual(self.openStore().load(), [ENTRIES[0], Entry(2, 2, "set d 4")])

    def test_tornOnlyLine(self) -> None:
        """
        A file holding nothing but a torn first line loads as an empty log
        and is emptied.
        """
        self.writeFile(b"1 1 no")
        self.assertEqual(self.openStore().load(), [])
        self.assertEqual(self.readFile(), b"")

    def test_tornNonUtf8LastLine(self) -> None:
        """
        A torn last line is dropped even if it was cut inside a multi-byte
        UTF-8 character.
        """
        self.writeFile(b"1 1 noop\n2 1 set a \xe2\x98")
        self.assertEqual(self.openStore().load(), ENTRIES[:1])

    def assertCorrupt(self, data: bytes, line: int, reason: str) -> None:
        """
        Assert that loading a file holding C{data} raises L{StorageError}
        naming the file, the line number and C{reason}, and leaves the file
        untouched.
        """
        self.writeFile(data)
        error = self.assertRaises(StorageError, self.openStore().load)
        self.assertIn(f"{self.path}:{line}:", str(error))
        self.assertIn(reason, str(error))
        self.assertEqual(self.readFile(), data)

    def test_corruptLineInMiddle(self) -> None:
        """
        A line that is not C{INDEX TERM COMMAND} is corruption: the node
        refuses to start rather than guess.
        """
        self.assertCorrupt(b"1 1 noop\ngarbage\n3 1 set b 2\n", 2, "corrupt log line")
        self.assertCorrupt(b"1 1 noop\nx 1 set a 1\n", 2, "corrupt log line")
        self.assertCorrupt(b"1 1 noop\n2 y set a 1\n", 2, "corrupt log line")
        self.assertCorrupt(b"1 1 noop\n2 1\n", 2, "corrupt log line")

    def test_emptyLineInMiddle(self) -> None:
        """
        An empty line is corruption.
        """
        self.assertCorrupt(b"1 1 noop\n\n2 1 set a 1\n", 2, "corrupt log line")

    def test_nonUtf8Line(self) -> None:
        """
        A complete line that is not UTF-8 is corruption.
        """
        self.assertCorrupt(b"1 1 noop\n2 1 set a \xff\xfe\n", 2, "corrupt log line")

    def test_indexGap(self) -> None:
        """
        An index that skips ahead is corruption.
        """
        self.assertCorrupt(b"1 1 noop\n2 1 set a 1\n4 1 set b 2\n", 3, "index 4 where 3")

    def test_indexDecrease(self) -> None:
        """
        An index that goes back (a duplicated line) is corruption.
        """
        self.assertCorrupt(b"1 1 noop\n2 1 set a 1\n2 1 set a 1\n", 3, "index 2 where 3")

    def test_firstIndexNotOne(self) -> None:
        """
        The log starts at index 1.
        """
        self.assertCorrupt(b"2 1 noop\n", 1, "index 2 where 1")

    def test_termBackwards(self) -> None:
        """
        A term lower than the previous line's is corruption: terms in a
        Raft log never decrease (Reference: section 5.3).
        """
        self.assertCorrupt(b"1 2 noop\n2 2 set a 1\n3 1 set b 2\n", 3, "term 1 goes backwards")

    def test_carriageReturn(self) -> None:
        """
        A line ending in CRLF holds a command with a carriage return, which
        no valid command has: it is corruption, not an entry to replicate.
        """
        self.assertCorrupt(b"1 1 noop\r\n2 1 set a 1\n", 1, "corrupt log line")

    def test_termZero(self) -> None:
        """
        Term 0 belongs to no entry.
        """
        self.assertCorrupt(b"1 0 noop\n", 1, "term 0")


class FileStateStoreTests(SynchronousTestCase):
    """
    Tests for L{FileStateStore}: the term and vote file.
    """

    def setUp(self) -> None:
        """
        A fresh directory and a store path in it.
        """
        self.directory = temporaryDirectory(self)
        self.path = os.path.join(self.directory, "s1.state")
        self.store = FileStateStore(self.path)

    def writeFile(self, data: bytes) -> None:
        """
        Replace the state file's contents with C{data}.
        """
        with open(self.path, "wb") as f:
            f.write(data)

    def test_interface(self) -> None:
        """
        L{FileStateStore} provides L{IStateStore}.
        """
        self.assertTrue(verifyObject(IStateStore, self.store))

    def test_missingFile(self) -> None:
        """
        A missing file is a node that never voted: term 0, no vote.
        """
        self.assertEqual(self.store.load(), HardState())

    def test_roundTrip(self) -> None:
        """
        A saved term and vote load back from a new store on the same file
        (Figure 2: currentTerm and votedFor survive restarts).
        """
        self.store.save(HardState(7, "s2"))
        self.assertEqual(FileStateStore(self.path).load(), HardState(7, "s2"))
        self.store.save(HardState(8, None))
        self.assertEqual(FileStateStore(self.path).load(), HardState(8, None))

    def test_atomicReplace(self) -> None:
        """
        Saving replaces the file by renaming a complete new one over it: no
        temporary file is left behind and the file is always whole JSON.
        """
        self.store.save(HardState(1, "s1"))
        self.store.save(HardState(2, "s3"))
        self.assertEqual(os.listdir(self.directory), ["s1.state"])
        with open(self.path, "rb") as f:
            self.assertEqual(json.loads(f.read()), {"currentTerm": 2, "votedFor": "s3"})

    def test_staleTemporaryIgnored(self) -> None:
        """
        A temporary file left by a crash during a save does not affect
        loading, and the next save replaces it.
        """
        self.store.save(HardState(3, "s1"))
        with open(self.path + ".tmp", "wb") as f:
            f.write(b'{"currentT')
        self.assertEqual(self.store.load(), HardState(3, "s1"))
        self.store.save(HardState(4, None))
        self.assertEqual(self.store.load(), HardState(4, None))

    def assertCorrupt(self, data: bytes) -> None:
        """
        Assert that a state file holding C{data} makes L{FileStateStore.load}
        raise L{StorageError} naming the file.
        """
        self.writeFile(data)
        error = self.assertRaises(StorageError, self.store.load)
        self.assertIn(self.path, str(error))
        self.assertIn("corrupt", str(error))

    def test_corruptJson(self) -> None:
        """
        A file that is not JSON (empty, truncated, binary) is corruption.
        """
        for data in [b"", b'{"currentTerm": 1', b"\xff\xfe", b"null", b"[1, 2]", b"3"]:
            self.assertCorrupt(data)

    def test_missingFields(self) -> None:
        """
        A JSON object without both fields is corruption.
        """
        self.assertCorrupt(b'{"currentTerm": 1}')
        self.assertCorrupt(b'{"votedFor": null}')

    def test_badFieldValues(self) -> None:
        """
        A term that is not a non-negative integer, or a vote that is not a
        node name, is corruption.
        """
        for term, vote in [
            ("1", None),
            (-1, None),
            (1.5, None),
            (True, None),
            (1, 5),
            (1, ""),
            (1, "bad name"),
            (1, "s1\n"),
        ]:
            self.assertCorrupt(json.dumps({"currentTerm": term, "votedFor": vote}).encode())


class LockDataDirectoryTests(SynchronousTestCase):
    """
    Tests for L{lockDataDirectory}.
    """

    def setUp(self) -> None:
        """
        A fresh data directory.
        """
        self.directory = temporaryDirectory(self)

    def lock(self, name: str) -> int:
        """
        Lock C{name} in the directory, releasing it when the test ends.
        """
        fd = lockDataDirectory(self.directory, name)
        self.addCleanup(os.close, fd)
        return fd

    def test_secondLockRefused(self) -> None:
        """
        While one holder has a node's lock, a second attempt for the same
        node name fails with L{StorageError} naming the lock file and node.
        """
        self.lock("s1")
        error = self.assertRaises(StorageError, lockDataDirectory, self.directory, "s1")
        self.assertIn(os.path.join(self.directory, "s1.lock"), str(error))
        self.assertIn("node s1 is already running", str(error))

    def test_otherNamesIndependent(self) -> None:
        """
        Different nodes may share a data directory.
        """
        self.lock("s1")
        self.lock("s2")

    def test_releasedOnClose(self) -> None:
        """
        Closing the descriptor (as process exit does) frees the lock.
        """
        os.close(lockDataDirectory(self.directory, "s1"))
        self.lock("s1")


class MemoryLogStoreTests(SynchronousTestCase):
    """
    Tests for L{MemoryLogStore}, the simulations' log with crash semantics.
    """

    def test_interface(self) -> None:
        """
        L{MemoryLogStore} and L{MemoryStateStore} provide the store interfaces.
        """
        self.assertTrue(verifyObject(ILogStore, MemoryLogStore()))
        self.assertTrue(verifyObject(IStateStore, MemoryStateStore()))

    def test_crashLosesUnsynced(self) -> None:
        """
        L{MemoryLogStore.crash} keeps what was synced and loses what was
        appended after the last sync.
        """
        store = MemoryLogStore()
        store.append(ENTRIES[:2])
        store.sync()
        store.append(ENTRIES[2:])
        store.crash()
        self.assertEqual(store.load(), ENTRIES[:2])

    def test_crashUndoesUnsyncedTruncate(self) -> None:
        """
        A truncation not yet synced is undone by a crash, too.
        """
        store = MemoryLogStore()
        store.append(ENTRIES)
        store.sync()
        store.truncateFrom(2)
        store.crash()
        self.assertEqual(store.load(), ENTRIES)

    def test_loadReturnsDurable(self) -> None:
        """
        L{MemoryLogStore.load} returns what a restarted node would find: the
        synced entries only.
        """
        store = MemoryLogStore()
        store.append(ENTRIES)
        self.assertEqual(store.load(), [])
        store.append(ENTRIES)
        store.sync()
        self.assertEqual(store.load(), ENTRIES)

    def test_memoryStateStore(self) -> None:
        """
        L{MemoryStateStore} starts at term 0 with no vote and returns what
        was saved.
        """
        store = MemoryStateStore()
        self.assertEqual(store.load(), HardState())
        store.save(HardState(3, "s2"))
        self.assertEqual(store.load(), HardState(3, "s2"))
