"""
Tests for L{txraft.storage}: the file-backed and in-memory log and
term/vote stores, and the data directory lock.
"""

from __future__ import annotations

import errno
import json
import os

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

import txraft.storage
from tests.helpers import ReadRecordingFileSystem, temporaryDirectory
from txraft.core import MAX_APPEND_BYTES
from txraft.interfaces import ILogStore, IStateStore
from txraft.messages import (
    AppendEntries,
    Entry,
    HardState,
    MessageError,
    Snapshot,
    formatMessage,
    parseMessage,
)
from txraft.protocol import MAX_REQUEST
from txraft.snapshots import FileSnapshotStore
from txraft.storage import (
    MAX_UNSYNCED_BYTES,
    SYNC_EVERY_BYTES,
    FileLogStore,
    FileStateStore,
    MemoryLogStore,
    MemoryStateStore,
    OSFileSystem,
    StorageError,
    formatEntry,
    fsyncDirectory,
    lockDataDirectory,
    readWholeFile,
    removeLeftover,
    scanLog,
    writeWholeFile,
)

ENTRIES = [Entry(1, 1, "noop"), Entry(2, 1, "set a 1"), Entry(3, 2, "set b two words")]

#: A log written in three batches, and its file.
BATCHES = [
    [Entry(1, 1, "noop"), Entry(2, 1, "set a 1")],
    [Entry(3, 2, "noop"), Entry(4, 2, "set b two words"), Entry(5, 2, "get a")],
    [Entry(6, 3, "set clé ☃"), Entry(7, 3, "delete a")],
]
LOG_DATA = b"".join(
    f"{e.index} {e.term} {e.command}\n".encode() for batch in BATCHES for e in batch
)


class RecordingFileSystem(OSFileSystem):
    """
    The real system calls, each recorded by name (with the bytes written,
    for C{pwrite}) in C{calls}.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """Record, then write."""
        self.calls.append(("pwrite", (bytes(data), offset)))
        return super().pwrite(fd, data, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        """Record, then truncate."""
        self.calls.append(("ftruncate", length))
        super().ftruncate(fd, length)

    def fsync(self, fd: int) -> None:
        """Record, then fsync."""
        self.calls.append(("fsync", None))
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        """Record, then fdatasync."""
        self.calls.append(("fdatasync", None))
        super().fdatasync(fd)

    def replace(self, source: str, destination: str) -> None:
        """Record, then rename."""
        self.calls.append(("replace", os.path.basename(destination)))
        super().replace(source, destination)

    def fsyncDirectory(self, path: str) -> None:
        """Record, then fsync the directory."""
        self.calls.append(("fsyncDirectory", None))
        super().fsyncDirectory(path)

    def names(self) -> list[str]:
        """The names of the calls made so far."""
        return [name for name, _ in self.calls]


def lineEnds(data: bytes) -> list[int]:
    """The offset just after each newline in C{data}."""
    return [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]


def openedStore(case: SynchronousTestCase, path: str, fileSystem: OSFileSystem) -> FileLogStore:
    """A L{FileLogStore} of C{path} on C{fileSystem}, loaded, closed when C{case} ends."""
    store = FileLogStore(path, fileSystem=fileSystem)
    case.addCleanup(store.close)
    store.load()
    return store


class LowDescriptorFileSystem(OSFileSystem):
    """
    The real system calls, but handing out the lowest free descriptor
    numbers from 0, as a process started with its standard input closed
    gets them; C{descriptors} maps each open one to the real one.
    """

    def __init__(self) -> None:
        self.descriptors: dict[int, int] = {}

    def closeAll(self) -> None:
        """Close whatever is still open."""
        for fd in list(self.descriptors):
            self.close(fd)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """Open, and number the descriptor from 0."""
        fd = min(set(range(len(self.descriptors) + 1)) - set(self.descriptors))
        self.descriptors[fd] = super().open(path, flags, mode)
        return fd

    def close(self, fd: int) -> None:
        """Close the real descriptor."""
        super().close(self.descriptors.pop(fd))

    def size(self, fd: int) -> int:
        """The size of the real descriptor's file."""
        return super().size(self.descriptors[fd])

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        """Read the real descriptor."""
        return super().pread(self.descriptors[fd], count, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """Write the real descriptor."""
        return super().pwrite(self.descriptors[fd], data, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        """Truncate the real descriptor's file."""
        super().ftruncate(self.descriptors[fd], length)

    def fsync(self, fd: int) -> None:
        """fsync the real descriptor."""
        super().fsync(self.descriptors[fd])

    def fdatasync(self, fd: int) -> None:
        """fdatasync the real descriptor."""
        super().fdatasync(self.descriptors[fd])


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

    def test_syncToAPoint(self) -> None:
        """
        L{FileLogStore.syncTo} fdatasyncs the file (it may run in another
        thread than the writes); L{FileLogStore.markSynced} then says its
        point's lines are still the log's.
        """
        fileSystem = RecordingFileSystem()
        store = FileLogStore(self.path, fileSystem=fileSystem)
        self.addCleanup(store.close)
        store.load()
        store.append(ENTRIES[:2])
        point = store.syncPoint()
        store.append(ENTRIES[2:])
        del fileSystem.calls[:]
        store.syncTo(point)
        self.assertEqual(fileSystem.calls, [("fdatasync", None)])
        self.assertTrue(store.markSynced(point))

    def test_syncPointOfCutOrReplacedLines(self) -> None:
        """
        A point taken before a truncation, a compaction or a close is not
        marked: its sync covered lines cut, or another file; one taken
        after a compaction replaced the file syncs nothing of the old one.
        """
        fileSystem = RecordingFileSystem()
        store = FileLogStore(self.path, fileSystem=fileSystem)
        store.load()
        store.append(ENTRIES)
        for change in (lambda: store.truncateFrom(3), lambda: store.compact(1), store.close):
            point = store.syncPoint()
            change()
            del fileSystem.calls[:]
            store.syncTo(point)
            self.assertFalse(store.markSynced(point))
            self.assertEqual(fileSystem.calls, [])

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
        An empty line is corruption, the first line too: a line that ends
        with its newline is whole, not torn.
        """
        self.assertCorrupt(b"1 1 noop\n\n2 1 set a 1\n", 2, "corrupt log line")
        self.assertCorrupt(b"\n1 1 noop\n2 1 set a 1\n", 1, "corrupt log line b''")

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
        Without a snapshot the log starts at index 1: one that starts later
        has lost entries.
        """
        self.assertCorrupt(b"2 1 noop\n", 1, "starts at index 2 but the snapshot ends at 0")

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

    def test_corruptLineQuoted(self) -> None:
        """
        The reason for refusing a corrupt line quotes its first 60 bytes,
        enough to find it without flooding the log, and says when the line
        is not UTF-8.
        """
        for bad, problem in [
            (b"2 x " + b"y" * 100, ""),
            (b"2 1 set a " + b"\xff" * 100, " (not UTF-8)"),
        ]:
            self.writeFile(b"1 1 noop\n" + bad + b"\n3 1 noop\n")
            error = self.assertRaises(StorageError, self.openStore().load)
            self.assertEqual(
                str(error),
                f"{self.path}:2: corrupt log line {bad[:60]!r}{problem}; refusing to start",
            )

    def writeBatches(self, fileSystem: OSFileSystem | None = None) -> FileLogStore:
        """
        Append and sync L{BATCHES} one by one through a fresh store; return
        it.
        """
        store = openedStore(self, self.path, fileSystem)
        for batch in BATCHES:
            store.append(batch)
            store.sync()
        self.assertEqual(self.readFile(), LOG_DATA)
        return store

    def test_everyTruncationRecovers(self) -> None:
        """
        A log cut at any byte (a crash that kept any prefix of what was
        written) loads as the entries whose lines are whole, with a warning
        naming the file and line when a line was cut; the file is trimmed to
        them and takes appends again.
        """
        allEntries = [entry for batch in BATCHES for entry in batch]
        ends = lineEnds(LOG_DATA)
        for cut in range(len(LOG_DATA) + 1):
            self.writeFile(LOG_DATA[:cut])
            whole = sum(1 for end in ends if end <= cut)
            store = FileLogStore(self.path)
            with capturedLogs() as events:
                loaded = store.load()
            self.assertEqual(loaded, allEntries[:whole], f"cut at {cut}")
            kept = ends[whole - 1] if whole else 0
            self.assertEqual(self.readFile(), LOG_DATA[:kept])
            warnings = [formatEvent(e) for e in events]
            if cut == kept:
                self.assertEqual(warnings, [])
            else:
                [warning] = warnings
                self.assertIn(f"{self.path}:{whole + 1}: dropping a torn tail", warning)
            store.append([Entry(whole + 1, 9, "set z 9")])
            store.sync()
            store.close()
            reopened = FileLogStore(self.path)
            self.assertEqual(
                reopened.load(), allEntries[:whole] + [Entry(whole + 1, 9, "set z 9")]
            )
            reopened.close()

    def test_zeroedSectorsDropped(self) -> None:
        """
        A log with any 8 bytes zeroed (a block of the last write that never
        reached the disk, though the file's size grew) loads as the entries
        before the damaged line, with a warning: a torn write, not
        corruption, since it lies within the last L{MAX_UNSYNCED_BYTES}.
        """
        allEntries = [entry for batch in BATCHES for entry in batch]
        ends = lineEnds(LOG_DATA)
        for start in range(0, len(LOG_DATA), 8):
            damaged = LOG_DATA[:start] + b"\x00" * 8 + LOG_DATA[start + 8 :]
            self.writeFile(damaged[: len(LOG_DATA)])
            whole = sum(1 for end in ends if end <= start)
            with capturedLogs() as events:
                self.assertEqual(self.openStore().load(), allEntries[:whole], f"at {start}")
            self.assertEqual(len(events), 1)
            self.assertEqual(self.readFile(), LOG_DATA[: ends[whole - 1] if whole else 0])

    def test_zeroesFarFromEndAreCorruption(self) -> None:
        """
        NUL bytes further from the end of the file than a write can leave
        unsynced are corruption: the node refuses to start, naming the
        line, and the file is left as it was.
        """
        self.patch(txraft.storage, "MAX_UNSYNCED_BYTES", 40)
        damaged = LOG_DATA.replace(b"4 2 set b", b"4 2 \x00\x00\x00 b")
        self.assertGreater(len(LOG_DATA) - LOG_DATA.index(b"4 2 set b"), 40)
        start = LOG_DATA.index(b"4 2 set b")
        raw = damaged[start : damaged.index(b"\n", start)]
        self.assertCorrupt(
            damaged,
            4,
            f"{self.path}:4: corrupt log line {raw!r}, with NUL bytes "
            f"{len(LOG_DATA) - start} bytes before the end of the file: "
            "too far back to be a torn write; refusing to start",
        )
        tail = LOG_DATA.replace(b"6 3 set", b"6 3 \x00\x00\x00")
        self.writeFile(tail)
        self.assertEqual(len(self.openStore().load()), 5)

    def test_zeroesJustWithinUnsyncedBytes(self) -> None:
        """
        A line with NUL bytes that starts exactly L{MAX_UNSYNCED_BYTES}
        before the end of the file may be where the last unsynced write
        began: it is a torn write, dropped with what follows it.
        """
        start = LOG_DATA.index(b"4 2 set b")
        self.patch(txraft.storage, "MAX_UNSYNCED_BYTES", len(LOG_DATA) - start)
        self.writeFile(LOG_DATA.replace(b"4 2 set b", b"4 2 \x00\x00\x00 b"))
        self.assertEqual(self.openStore().load(), BATCHES[0] + BATCHES[1][:1])
        self.assertEqual(self.readFile(), LOG_DATA[:start])

    def test_zeroedTailThenAppend(self) -> None:
        """
        After a last line with NUL bytes is dropped, new entries land right
        after the last whole line, so the file reloads cleanly.
        """
        start = LOG_DATA.index(b"7 3 delete a")
        self.writeFile(LOG_DATA[:start] + b"7 3 \x00\x00\x00\x00te a\n")
        store = self.openStore()
        self.assertEqual(store.load(), BATCHES[0] + BATCHES[1] + BATCHES[2][:1])
        store.append([Entry(7, 4, "set c 3")])
        store.sync()
        self.assertEqual(self.readFile(), LOG_DATA[:start] + b"7 4 set c 3\n")

    def test_zeroesInLongLastLine(self) -> None:
        """
        A last line longer than L{MAX_UNSYNCED_BYTES} is written on its own,
        so NUL bytes anywhere in it are a torn write of that line alone.
        """
        self.patch(txraft.storage, "MAX_UNSYNCED_BYTES", 16)
        self.writeFile(b"1 1 noop\n2 1 set a \x00\x00 this line is long\n")
        self.assertEqual(self.openStore().load(), [Entry(1, 1, "noop")])

    def test_damagedLineAnywhereIsCorruption(self) -> None:
        """
        A line that is damaged without NUL bytes, anywhere, the last line
        included, is corruption and not a torn write: a torn write leaves
        either the bytes written or zeros.
        """
        for number, start in enumerate([0, *lineEnds(LOG_DATA)[:-1]], start=1):
            damaged = LOG_DATA[:start] + b"x" + LOG_DATA[start + 1 :]
            self.assertCorrupt(damaged, number, "corrupt log line")

    def test_scanLogKeepsEverySyncedLine(self) -> None:
        """
        L{scanLog} of any prefix of a log, with any 8-byte block of the part
        after a given sync point zeroed, keeps every line before that point
        (what was synced is never dropped).
        """
        synced = len(b"1 1 noop\n2 1 set a 1\n")
        for start in range(synced - synced % 8, len(LOG_DATA), 8):
            damaged = bytearray(LOG_DATA)
            for i in range(max(start, synced), min(start + 8, len(LOG_DATA))):
                damaged[i] = 0
            for cut in range(synced, len(LOG_DATA) + 1):
                scanned = scanLog(bytes(damaged[:cut]), self.path)
                self.assertGreaterEqual(scanned.end, synced)
                self.assertEqual(scanned.entries[:2], BATCHES[0])

    def test_unstorableCommandsRefused(self) -> None:
        """
        A command holding a newline, a carriage return or NUL would break
        the line format or read as a torn write: the store refuses it with
        L{ValueError} before writing anything, and stays usable.
        """
        store = self.openStore()
        store.load()
        for command in ["set a 1\n2 1 set b 2", "set a 1\r", "set a \x00"]:
            self.assertRaises(
                ValueError, store.append, [Entry(1, 1, "noop"), Entry(2, 1, command)]
            )
        self.assertEqual(self.readFile(), b"")
        store.append(ENTRIES)
        store.sync()
        self.assertEqual(self.openStore().load(), ENTRIES)

    def test_discontinuousAppendRefused(self) -> None:
        """
        Entries that would leave a gap, repeat an index or lower the term
        are refused before anything is written, naming the entry: the file
        would not load.  Term 0 is no term at all, even for a first entry.
        """
        store = self.openStore()
        store.load()
        error = self.assertRaises(ValueError, store.append, [Entry(1, 0, "x")])
        self.assertEqual(str(error), "entry 1: index and term must be positive")
        store.append(ENTRIES)
        for entries in [
            [Entry(5, 2, "x")],
            [Entry(3, 2, "x")],
            [Entry(4, 1, "x")],
            [Entry(4, 2, "x"), Entry(5, 1, "x")],
        ]:
            error = self.assertRaises(ValueError, store.append, entries)
            self.assertEqual(str(error), f"entry {entries[-1].index} does not continue the log")
        store.sync()
        self.assertEqual(self.openStore().load(), ENTRIES)

    def test_writeBeforeLoadRefused(self) -> None:
        """
        A store that has not loaded the file does not know where its lines
        end, so it refuses to change it.
        """
        self.writeFile(b"1 1 noop\n")
        store = self.openStore()
        error = self.assertRaises(StorageError, store.append, [Entry(2, 1, "x")])
        self.assertEqual(str(error), f"{self.path}: load() the log before changing it")
        self.assertRaises(StorageError, store.truncateFrom, 1)
        self.assertEqual(self.readFile(), b"1 1 noop\n")

    def test_openSyncsDirectory(self) -> None:
        """
        Opening the log fsyncs its directory even when the file exists: the
        process that created it may have died before making its name
        durable.
        """
        self.writeFile(b"1 1 noop\n")
        fileSystem = RecordingFileSystem()
        FileLogStore(self.path, fileSystem=fileSystem).close()
        self.assertEqual(fileSystem.names(), ["fsyncDirectory"])

    def test_loadSyncs(self) -> None:
        """
        Loading fsyncs the file, so entries a killed process wrote but never
        synced are durable before the node acts on them.
        """
        self.writeFile(LOG_DATA)
        fileSystem = RecordingFileSystem()
        openedStore(self, self.path, fileSystem)
        self.assertEqual(fileSystem.names(), ["fsyncDirectory", "fdatasync"])

    def test_truncateIsSynced(self) -> None:
        """
        Truncating fsyncs before returning, so no later append can reach the
        disk while the old suffix is still there.
        """
        fileSystem = RecordingFileSystem()
        store = self.writeBatches(fileSystem)
        fileSystem.calls.clear()
        store.truncateFrom(3)
        self.assertEqual(fileSystem.names(), ["ftruncate", "fdatasync"])

    def test_appendSyncsInPieces(self) -> None:
        """
        An append of more than L{MAX_UNSYNCED_BYTES} is written and fsynced
        in pieces no larger than that (or one line longer than it), so a
        crash can only tear the end of the file.
        """
        self.patch(txraft.storage, "MAX_UNSYNCED_BYTES", 30)
        fileSystem = RecordingFileSystem()
        store = openedStore(self, self.path, fileSystem)
        entries = [Entry(i, 1, f"set k{i} {i}") for i in range(1, 8)]
        entries.append(Entry(8, 1, "set long " + "v" * 40))
        store.append(entries)
        store.sync()
        unsynced = 0
        for name, argument in fileSystem.calls:
            if name == "pwrite":
                data, _ = argument
                unsynced += len(data)
                self.assertTrue(unsynced <= 30 or data.count(b"\n") == 1, fileSystem.calls)
            elif name == "fdatasync":
                unsynced = 0
        self.assertGreater(fileSystem.names().count("fdatasync"), 3)
        self.assertEqual(self.openStore().load(), entries)

    def test_appendFillsPiecesToTheLimit(self) -> None:
        """
        Each write of an append holds as many lines as keep the unsynced
        bytes within L{MAX_UNSYNCED_BYTES}, the limit itself included, and
        only bytes written since the last fsync count.
        """
        self.patch(txraft.storage, "MAX_UNSYNCED_BYTES", 100)
        fileSystem = RecordingFileSystem()
        store = openedStore(self, self.path, fileSystem)
        entries = [Entry(i, 1, "set k " + "v" * 39) for i in range(1, 7)]
        lines = [formatEntry(entry) for entry in entries]
        self.assertEqual({len(line) for line in lines}, {50})
        fileSystem.calls.clear()
        store.append(entries[:4])
        self.assertEqual(
            fileSystem.calls,
            [
                ("pwrite", (lines[0] + lines[1], 0)),
                ("fdatasync", None),
                ("pwrite", (lines[2] + lines[3], 100)),
            ],
        )
        store.sync()
        fileSystem.calls.clear()
        store.append(entries[4:])
        self.assertEqual(fileSystem.calls, [("pwrite", (lines[4] + lines[5], 200))])

    def test_failedFirstLoadRewritesEverything(self) -> None:
        """
        A store whose first load failed to fsync knows no byte of the file
        to be durable: the next load writes all of it again, then fsyncs.
        """
        self.writeFile(LOG_DATA)
        fileSystem = RecordingFileSystem()
        store = FileLogStore(self.path, fileSystem=fileSystem)
        self.addCleanup(store.close)
        failures = [OSError(errno.EIO, os.strerror(errno.EIO))]
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            if failures:
                raise failures.pop()
            real(fd)

        self.patch(os, "fdatasync", fdatasync)
        self.assertRaises(OSError, store.load)
        fileSystem.calls.clear()
        self.assertEqual(store.load(), [entry for batch in BATCHES for entry in batch])
        self.assertEqual(
            fileSystem.calls,
            [
                ("pwrite", (LOG_DATA, 0)),
                ("ftruncate", len(LOG_DATA)),
                ("fdatasync", None),
            ],
        )

    def test_defaultUnsyncedLimit(self) -> None:
        """
        The default limit holds the largest AppendEntries batch and the
        largest client command, so that a normal append is one write.
        """
        self.assertGreaterEqual(MAX_UNSYNCED_BYTES, MAX_APPEND_BYTES)
        self.assertGreaterEqual(MAX_UNSYNCED_BYTES, MAX_REQUEST)

    def diskFull(self, spaceLeft: int) -> list[int]:
        """
        Make C{os.pwrite} write C{spaceLeft} more bytes, then fail with
        C{ENOSPC}; set the returned list's item to C{None} to free space.
        """
        space = [spaceLeft]
        real = os.pwrite

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            if space[0] is None:
                return real(fd, data, offset)
            if space[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written = real(fd, bytes(data)[: space[0]], offset)
            space[0] -= written
            return written

        self.patch(os, "pwrite", pwrite)
        return space

    def test_diskFullMidAppend(self) -> None:
        """
        A disk that fills up in the middle of an append: the append raises
        L{OSError} C{ENOSPC} naming the file; the store refuses to write
        until loaded again; the file loads (whole lines kept, the torn one
        dropped); once space is freed the same store loads, appends and
        syncs again.
        """
        store = self.openStore()
        store.load()
        store.append(BATCHES[0])
        store.sync()
        space = self.diskFull(len(b"3 2 noop\n4 2 set"))
        error = self.assertRaises(OSError, store.append, BATCHES[1])
        self.assertEqual((error.errno, error.filename), (errno.ENOSPC, self.path))
        self.assertRaises(StorageError, store.sync)
        self.assertRaises(StorageError, store.append, BATCHES[2])
        other = FileLogStore(self.path)
        self.assertEqual(other.load(), BATCHES[0] + BATCHES[1][:1])
        other.close()
        space[0] = None
        self.assertEqual(store.load(), BATCHES[0] + BATCHES[1][:1])
        store.append(BATCHES[1][1:])
        store.append(BATCHES[2])
        store.sync()
        self.assertEqual(self.readFile(), LOG_DATA)

    def test_failedSyncRewrites(self) -> None:
        """
        After an fsync fails (C{EIO}: the kernel may have given up on the
        pages), loading writes the unsynced part of the file again and
        fsyncs it, so it is truly durable before the node trusts it.
        """
        fileSystem = RecordingFileSystem()
        store = openedStore(self, self.path, fileSystem)
        store.append(BATCHES[0])
        store.sync()
        store.append(BATCHES[1])

        failing = [True]
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            if failing[0]:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(fd)

        self.patch(os, "fdatasync", fdatasync)
        error = self.assertRaises(OSError, store.sync)
        self.assertEqual((error.errno, error.filename), (errno.EIO, self.path))
        self.assertRaises(OSError, store.load)
        self.assertRaises(StorageError, store.sync)
        failing[0] = False
        fileSystem.calls.clear()
        self.assertEqual(store.load(), BATCHES[0] + BATCHES[1])
        synced = len(b"1 1 noop\n2 1 set a 1\n")
        end = len(b"".join(LOG_DATA.splitlines(keepends=True)[:5]))
        self.assertEqual(
            fileSystem.calls,
            [
                ("pwrite", (LOG_DATA[synced:end], synced)),
                ("ftruncate", end),
                ("fdatasync", None),
            ],
        )
        store.append(BATCHES[2])
        store.sync()
        self.assertEqual(self.readFile(), LOG_DATA)

    def test_failedTruncateLeavesValidFile(self) -> None:
        """
        A truncation that fails leaves a file that loads as the log before
        or after it; the store must be loaded again before it writes.
        """
        store = self.writeBatches()

        def ftruncate(fd: int, length: int) -> None:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

        self.patch(os, "ftruncate", ftruncate)
        self.assertRaises(OSError, store.truncateFrom, 3)
        error = self.assertRaises(StorageError, store.append, [Entry(3, 4, "x")])
        self.assertEqual(str(error), f"{self.path}: an earlier write failed; load() it again")
        other = FileLogStore(self.path)
        self.addCleanup(other.close)
        self.assertEqual(other.load(), [entry for batch in BATCHES for entry in batch])

    def test_closeTwice(self) -> None:
        """
        Closing a closed store does nothing; writing to it fails with
        L{OSError} C{EBADF}, saying that the log is closed and naming it.
        """
        store = FileLogStore(self.path)
        store.load()
        store.close()
        store.close()
        for write in [store.sync, lambda: store.append([Entry(1, 1, "noop")])]:
            error = self.assertRaises(OSError, write)
            self.assertEqual(
                (error.errno, error.strerror, error.filename),
                (errno.EBADF, "the log is closed", self.path),
            )

    def test_descriptorZero(self) -> None:
        """
        A log opened as descriptor 0 (the first one a daemon started with
        its standard input closed gets) is written, synced and closed like
        any other.
        """
        fileSystem = LowDescriptorFileSystem()
        self.addCleanup(fileSystem.closeAll)
        store = FileLogStore(self.path, fileSystem=fileSystem)
        self.assertEqual(list(fileSystem.descriptors), [0])
        store.load()
        store.append(ENTRIES)
        store.sync()
        store.close()
        self.assertEqual(fileSystem.descriptors, {})
        self.assertEqual(self.readFile(), b"1 1 noop\n2 1 set a 1\n3 2 set b two words\n")


class FileLogCompactionTests(SynchronousTestCase):
    """
    Tests for L{FileLogStore.compact} and for logs that start after a
    snapshot (dissertation chapter 5).
    """

    def setUp(self) -> None:
        """A log of five entries in a fresh directory."""
        self.directory = temporaryDirectory(self)
        self.path = os.path.join(self.directory, "s1.log")
        self.entries = [Entry(i, 1 + i // 3, f"set k{i} {i}") for i in range(1, 6)]
        store = self.openStore()
        store.append(self.entries)
        store.sync()
        store.close()

    def openStore(self, after: int = 0) -> FileLogStore:
        """Open and load the log, closing it when the test ends."""
        store = FileLogStore(self.path)
        self.addCleanup(store.close)
        store.load(after)
        return store

    def load(self, after: int = 0) -> list[Entry]:
        """The entries a freshly opened store loads after C{after}."""
        store = FileLogStore(self.path)
        self.addCleanup(store.close)
        return store.load(after)

    def lines(self) -> list[str]:
        """The log file's lines."""
        with open(self.path, encoding="utf-8") as f:
            return f.read().splitlines()

    def test_compactRewritesFile(self) -> None:
        """
        Compacting keeps the format and only the lines after the point; the
        store goes on appending and truncating with the same indexes, and a
        reopened store reads the same log.
        """
        store = self.openStore()
        store.compact(3)
        self.assertEqual(self.lines(), ["4 2 set k4 4", "5 2 set k5 5"])
        store.append([Entry(6, 2, "set k6 6")])
        store.truncateFrom(5)
        store.append([Entry(5, 3, "set k5 again")])
        store.sync()
        self.assertEqual(self.load(3), [self.entries[3], Entry(5, 3, "set k5 again")])
        self.assertEqual(os.listdir(self.directory), ["s1.log"])

    def test_compactFirstEntry(self) -> None:
        """Compacting up to the first entry drops that one line."""
        store = self.openStore()
        store.compact(1)
        self.assertEqual(self.lines()[0], "2 1 set k2 2")
        self.assertEqual(self.load(1), self.entries[1:])

    def test_compactReadsOnlyTheTail(self) -> None:
        """
        Compacting reads the lines it keeps, in one read of just their
        bytes, not the whole log.
        """
        size = os.path.getsize(self.path)
        fileSystem = ReadRecordingFileSystem()
        store = openedStore(self, self.path, fileSystem)
        fileSystem.reads.clear()
        store.compact(3)
        tail = os.path.getsize(self.path)
        self.assertEqual(fileSystem.reads, [(tail, size - tail)])

    def test_compactionLeavesNothingToRedo(self) -> None:
        """
        A compaction fsyncs the new file, renames it over the log and
        fsyncs the directory; once that succeeded the next load has only
        the file to fsync, not the directory again.
        """
        fileSystem = RecordingFileSystem()
        store = openedStore(self, self.path, fileSystem)
        fileSystem.calls.clear()
        store.compact(3)
        self.assertEqual(fileSystem.names(), ["pwrite", "fdatasync", "replace", "fsyncDirectory"])
        fileSystem.calls.clear()
        self.assertEqual(store.load(3), self.entries[3:])
        self.assertEqual(fileSystem.names(), ["fdatasync"])

    def test_compactEverything(self) -> None:
        """
        Compacting past the last entry empties the file; the next entry is
        the one after the compaction point.
        """
        store = self.openStore()
        store.compact(9)
        self.assertEqual(self.lines(), [])
        self.assertRaises(ValueError, store.append, [Entry(6, 2, "x")])
        store.append([Entry(10, 2, "set k10 10")])
        store.sync()
        self.assertEqual(self.load(9), [Entry(10, 2, "set k10 10")])

    def test_compactIsIdempotent(self) -> None:
        """Compacting to a point already dropped changes nothing."""
        store = self.openStore()
        store.compact(3)
        store.compact(2)
        self.assertEqual(len(self.lines()), 2)

    def test_loadAfterDropsCoveredPrefix(self) -> None:
        """
        Loading after a snapshot point returns only the later entries and
        compacts away a prefix that a crash between saving the snapshot and
        compacting left behind.
        """
        self.assertEqual(self.load(2), self.entries[2:])
        self.assertEqual(self.lines()[0], "3 2 set k3 3")

    def test_loadLogStartingAtSnapshotEnd(self) -> None:
        """
        A log whose first entry is the snapshot's last (a crash came between
        saving the snapshot and compacting) loses that one line on load,
        and goes on from the entry after it.
        """
        self.openStore().compact(2)
        store = FileLogStore(self.path)
        self.addCleanup(store.close)
        self.assertEqual(store.load(3), self.entries[3:])
        self.assertEqual(self.lines(), ["4 2 set k4 4", "5 2 set k5 5"])
        store.append([Entry(6, 2, "set k6 6")])
        store.sync()
        self.assertEqual(self.load(3), [*self.entries[3:], Entry(6, 2, "set k6 6")])

    def test_emptyLogAfterSnapshot(self) -> None:
        """
        An empty log loaded after a snapshot (all of it compacted away)
        continues right after the snapshot's last entry.
        """
        store = self.openStore()
        store.compact(5)
        store.close()
        store = self.openStore(5)
        self.assertRaises(ValueError, store.append, [Entry(5, 3, "x")])
        store.append([Entry(6, 3, "set k6 6")])
        store.sync()
        self.assertEqual(self.lines(), ["6 3 set k6 6"])

    def test_loadFinishesAFailedCompaction(self) -> None:
        """
        A compaction that renamed its file over the log but failed to
        fsync the directory leaves the store refusing writes; the next load
        fsyncs the directory, and once that is done no later load does it
        again.
        """

        failures: list[OSError] = []

        class FailingDirectorySync(RecordingFileSystem):
            def fsyncDirectory(self, path: str) -> None:
                super().fsyncDirectory(path)
                if failures:
                    raise failures.pop()

        fileSystem = FailingDirectorySync()
        store = openedStore(self, self.path, fileSystem)
        failures.append(OSError(errno.EIO, os.strerror(errno.EIO)))
        self.assertRaises(OSError, store.compact, 3)
        self.assertEqual(self.lines(), ["4 2 set k4 4", "5 2 set k5 5"])
        self.assertRaises(StorageError, store.append, [Entry(6, 2, "x")])
        fileSystem.calls.clear()
        self.assertEqual(store.load(3), self.entries[3:])
        self.assertEqual(fileSystem.names()[-2:], ["fdatasync", "fsyncDirectory"])
        fileSystem.calls.clear()
        self.assertEqual(store.load(3), self.entries[3:])
        self.assertEqual(fileSystem.names(), ["fdatasync"])

    def test_loadAfterEnd(self) -> None:
        """
        A snapshot past the whole log (installed from a leader) leaves an
        empty log that continues after the snapshot.
        """
        store = self.openStore(7)
        self.assertEqual(self.lines(), [])
        store.append([Entry(8, 3, "x")])

    def test_gapAfterSnapshotRefused(self) -> None:
        """
        A log that starts after the entry following the snapshot has lost
        entries: the node refuses to start, naming the file.
        """
        self.openStore().compact(3)
        error = self.assertRaises(StorageError, FileLogStore(self.path).load, 2)
        self.assertIn(f"{self.path}:1:", str(error))
        self.assertIn("starts at index 4 but the snapshot ends at 2", str(error))

    def test_truncateIntoSnapshotRefused(self) -> None:
        """Entries a snapshot covers cannot be truncated: they are committed."""
        store = self.openStore()
        store.compact(3)
        error = self.assertRaises(ValueError, store.truncateFrom, 3)
        self.assertEqual(str(error), "entry 3 is compacted away")

    def test_leftoverCompactionFileIgnored(self) -> None:
        """
        A compaction a crash interrupted before its rename leaves the old
        log in place; the half-written new file is removed.
        """
        with open(self.path + ".compact", "wb") as f:
            f.write(b"4 2 set k4")
        self.assertEqual(self.load(), self.entries)
        self.assertFalse(os.path.exists(self.path + ".compact"))


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

    def test_permissionDenied(self) -> None:
        """
        A save that may not create its temporary file (C{EACCES}) raises
        L{PermissionError} naming that file and leaves the old state.
        """
        self.store.save(HardState(3, "s1"))
        real = os.open

        def deny(path: str, flags: int, mode: int = 0o777) -> int:
            if path.endswith(".tmp"):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            return real(path, flags, mode)

        self.patch(os, "open", deny)
        error = self.assertRaises(PermissionError, self.store.save, HardState(4, None))
        self.assertEqual(error.filename, self.path + ".tmp")
        self.assertEqual(FileStateStore(self.path).load(), HardState(3, "s1"))

    def test_diskFull(self) -> None:
        """
        A save that runs out of space (C{ENOSPC}) raises L{OSError} naming
        the file and leaves the old state; once there is space again the
        next save works.
        """
        self.store.save(HardState(3, "s1"))
        real = os.pwrite
        full = [True]

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            if full[0]:
                real(fd, bytes(data)[:3], offset)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd, data, offset)

        self.patch(os, "pwrite", pwrite)
        error = self.assertRaises(OSError, self.store.save, HardState(4, None))
        self.assertEqual((error.errno, error.filename), (errno.ENOSPC, self.path))
        self.assertEqual(
            str(error), f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}: {self.path!r}"
        )
        self.assertEqual(FileStateStore(self.path).load(), HardState(3, "s1"))
        full[0] = False
        self.store.save(HardState(4, None))
        self.assertEqual(FileStateStore(self.path).load(), HardState(4, None))

    def test_shortWrites(self) -> None:
        """
        A save whose writes are cut short (as C{write} may) still writes the
        whole file.
        """
        real = os.pwrite
        self.patch(os, "pwrite", lambda fd, data, offset: real(fd, bytes(data)[:1], offset))
        self.store.save(HardState(12, "s3"))
        self.assertEqual(FileStateStore(self.path).load(), HardState(12, "s3"))

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

    def test_syncToMakesThePointDurable(self) -> None:
        """
        L{MemoryLogStore.syncTo} makes durable the entries appended before
        its point, not those after, and never takes back a later L{sync}.
        """
        store = MemoryLogStore()
        store.append(ENTRIES[:2])
        point = store.syncPoint()
        store.append(ENTRIES[2:])
        store.syncTo(point)
        self.assertTrue(store.markSynced(point))
        store.crash()
        self.assertEqual(store.load(), ENTRIES[:2])
        store.append(ENTRIES[2:])
        store.sync()
        store.syncTo(point)
        store.crash()
        self.assertEqual(store.load(), ENTRIES)

    def test_syncPointOfCutEntries(self) -> None:
        """A point taken before a truncation makes nothing durable and is not marked."""
        store = MemoryLogStore()
        store.append(ENTRIES)
        point = store.syncPoint()
        store.truncateFrom(2)
        store.syncTo(point)
        self.assertFalse(store.markSynced(point))
        self.assertEqual(store.durable, [])

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

    def test_gapAfterSnapshotRefused(self) -> None:
        """
        Like the file's, a log that starts after the entry following the
        snapshot has lost entries: loading refuses, saying where the
        snapshot ends.
        """
        store = MemoryLogStore()
        store.append(ENTRIES)
        store.sync()
        store.compact(2)
        error = self.assertRaises(StorageError, store.load, 1)
        self.assertEqual(str(error), "the log starts after the snapshot's end 1")
        self.assertEqual(store.load(2), ENTRIES[2:])

    def test_memoryStateStore(self) -> None:
        """
        L{MemoryStateStore} starts at term 0 with no vote and returns what
        was saved.
        """
        store = MemoryStateStore()
        self.assertEqual(store.load(), HardState())
        store.save(HardState(3, "s2"))
        self.assertEqual(store.load(), HardState(3, "s2"))


class StorableCommandsTests(SynchronousTestCase):
    """
    The log file cannot hold a command with CR, LF or NUL (L{FileLogStore}
    refuses one), so no such command may get into a node's log.
    """

    def test_peerCommandWithNulRejected(self) -> None:
        """
        An AppendEntries whose command holds NUL (which no client command
        can) is rejected when parsed, like one holding a newline, rather
        than reaching the log store.
        """
        line = formatMessage("s2", AppendEntries(1, 0, 0, (Entry(1, 1, "set a \x00"),), 0))
        _, rest = line.split("@", 1)
        self.assertRaises(MessageError, parseMessage, rest)


class FileModeTests(SynchronousTestCase):
    """The files a node writes are readable and writable by their owner, never executable."""

    def test_everyFileIs0644(self) -> None:
        """
        With the usual umask of 022, the log (before and after compaction),
        the term and vote, the snapshot and the lock file are all
        C{rw-r--r--}: a data file is not a program, and other users may
        read but not change it.
        """
        directory = temporaryDirectory(self)
        self.addCleanup(os.umask, os.umask(0o022))
        log = FileLogStore(os.path.join(directory, "s1.log"))
        self.addCleanup(log.close)
        log.load()
        log.append([Entry(i, 1, f"set k{i} {i}") for i in range(1, 6)])
        log.sync()
        self.assertEqual(os.stat(os.path.join(directory, "s1.log")).st_mode & 0o777, 0o644)
        log.compact(3)
        FileStateStore(os.path.join(directory, "s1.state")).save(HardState(2, "s2"))
        FileSnapshotStore(os.path.join(directory, "s1.snapshot")).save(
            Snapshot(3, 1, b'{"k1":"1"}')
        )
        self.addCleanup(os.close, lockDataDirectory(directory, "s1"))
        modes = {
            name: oct(os.stat(os.path.join(directory, name)).st_mode & 0o777)
            for name in sorted(os.listdir(directory))
        }
        self.assertEqual(
            modes,
            dict.fromkeys(["s1.lock", "s1.log", "s1.snapshot", "s1.state"], oct(0o644)),
        )

    def test_openCreatesAs0644ByDefault(self) -> None:
        """
        L{OSFileSystem.open} creates a file C{rw-r--r--} when no mode is
        given, like the mode every store passes.
        """
        self.addCleanup(os.umask, os.umask(0o022))
        path = os.path.join(temporaryDirectory(self), "f")
        fileSystem = OSFileSystem()
        fileSystem.close(fileSystem.open(path, os.O_WRONLY | os.O_CREAT))
        self.assertEqual(oct(os.stat(path).st_mode & 0o777), oct(0o644))


class FileHelperTests(SynchronousTestCase):
    """The small functions the file stores are built of."""

    def test_removeLeftoverSaysWhetherThereWasOne(self) -> None:
        """
        A leftover temporary file is removed and reported, so that the
        caller knows to fsync the directory; no file, nothing to report.
        """
        path = os.path.join(temporaryDirectory(self), "s1.log.compacting")
        with open(path, "wb") as f:
            f.write(b"half a compaction")
        self.assertIs(removeLeftover(OSFileSystem(), path), True)
        self.assertFalse(os.path.exists(path))
        self.assertIs(removeLeftover(OSFileSystem(), path), False)

    def test_writeWholeFileWritesPartsInOrder(self) -> None:
        """Every part lands right after the one before it, and nothing else is in the file."""
        path = os.path.join(temporaryDirectory(self), "f")
        with open(path, "wb") as f:
            f.write(b"an older and longer content")
        writeWholeFile(OSFileSystem(), path, [b"one ", b"two ", b"three"])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"one two three")

    def test_writeWholeFileSyncsAsItGoes(self) -> None:
        """
        A file of several L{SYNC_EVERY_BYTES} is fdatasynced each time that
        many more bytes were written, across parts, then fsynced whole: a
        concurrent fsync of the log never waits for a whole snapshot.
        """
        calls: list[tuple[str, int]] = []

        class Recording(OSFileSystem):
            def pwrite(self, fd: int, data: bytes, offset: int) -> int:
                calls.append(("pwrite", offset + len(data)))
                return super().pwrite(fd, data, offset)

            def fdatasync(self, fd: int) -> None:
                calls.append(("fdatasync", self.size(fd)))
                super().fdatasync(fd)

            def fsync(self, fd: int) -> None:
                calls.append(("fsync", self.size(fd)))
                super().fsync(fd)

        every = SYNC_EVERY_BYTES
        parts = [b"h" * 10, b"a" * (2 * every), b"b" * (every // 2)]
        path = os.path.join(temporaryDirectory(self), "f")
        writeWholeFile(Recording(), path, parts)
        self.assertEqual(
            [call for call in calls if call[0] != "pwrite"],
            [("fdatasync", every), ("fdatasync", 2 * every), ("fsync", 10 + 5 * every // 2)],
        )
        self.assertEqual(max(end for kind, end in calls if kind == "pwrite"), 10 + 5 * every // 2)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), b"".join(parts))

    def test_readWholeFileInShortReads(self) -> None:
        """
        A file whose reads come back short (as C{pread} may) is read whole,
        each piece right after the one before.
        """

        class ShortReads(OSFileSystem):
            def pread(self, fd: int, count: int, offset: int) -> bytes:
                return super().pread(fd, min(count, 3), offset)

        path = os.path.join(temporaryDirectory(self), "f")
        with open(path, "wb") as f:
            f.write(LOG_DATA)
        self.assertEqual(readWholeFile(ShortReads(), path), LOG_DATA)

    def test_readWholeFileThatShrank(self) -> None:
        """
        A file that turns out shorter than its size said (cut while it was
        read) reads as what is there.
        """

        class Shrunk(OSFileSystem):
            def size(self, fd: int) -> int:
                return super().size(fd) + 10

        path = os.path.join(temporaryDirectory(self), "f")
        with open(path, "wb") as f:
            f.write(LOG_DATA)
        self.assertEqual(readWholeFile(Shrunk(), path), LOG_DATA)

    def test_fdatasyncWithoutFdatasync(self) -> None:
        """
        Where the system has no C{fdatasync} (macOS), the log is made
        durable with C{fsync} instead.
        """
        real = os.fdatasync
        del os.fdatasync
        self.addCleanup(setattr, os, "fdatasync", real)
        synced = []
        self.patch(os, "fsync", synced.append)
        fd = os.open(temporaryDirectory(self), os.O_RDONLY)
        self.addCleanup(os.close, fd)
        OSFileSystem().fdatasync(fd)
        self.assertEqual(synced, [fd])

    def test_fsyncDirectoryOfAFile(self) -> None:
        """
        Asked to fsync the directory of a path that is a file, the file
        system refuses rather than fsync the file and leave its name
        unsynced.
        """
        path = os.path.join(temporaryDirectory(self), "f")
        with open(path, "wb"):
            pass
        self.assertRaises(NotADirectoryError, OSFileSystem().fsyncDirectory, path)
        self.assertRaises(NotADirectoryError, fsyncDirectory, path)

    def test_fsyncDirectory(self) -> None:
        """
        L{fsyncDirectory} fsyncs the directory itself, which is what makes
        the creation or renaming of a file in it durable.
        """
        directory = temporaryDirectory(self)
        synced = []
        real = os.fsync

        def fsync(fd: int) -> None:
            synced.append(os.fstat(fd).st_ino)
            real(fd)

        self.patch(os, "fsync", fsync)
        fsyncDirectory(directory)
        self.assertEqual(synced, [os.stat(directory).st_ino])

    def test_formatEntryRefusesWhatCannotBeStored(self) -> None:
        """
        An index or a term below 1, or a command that would break the
        line format, is refused with the entry's index named.
        """
        self.assertEqual(formatEntry(Entry(1, 1, "set a 1")), b"1 1 set a 1\n")
        for entry, problem in [
            (Entry(0, 1, "set a 1"), "entry 0: index and term must be positive"),
            (Entry(2, 0, "set a 1"), "entry 2: index and term must be positive"),
            (Entry(3, 1, "set a 1\nset b 2"), "entry 3: a command cannot hold CR, LF or NUL"),
        ]:
            error = self.assertRaises(ValueError, formatEntry, entry)
            self.assertEqual(str(error), problem)
