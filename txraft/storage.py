"""
Durable homes for the Raft log and for the current term and vote.

The two stores of L{txraft.interfaces}, L{ILogStore} and L{IStateStore}, each with a
file-backed implementation (what a node runs on) and an in-memory one (what
simulations run on; it forgets unsynced writes when it "crashes").  The file
stores make every system call through an L{OSFileSystem}, so that tests can
crash them, or fail them, between any two calls.

The log file is the essay's format, one entry per line::

    INDEX TERM COMMAND

Indexes increase by one per line, from 1, or once the log has been compacted
from the first entry it kept, at most one after the last entry a snapshot
covers (the entries before are in C{NAME.snapshot}, see L{txraft.snapshots},
and a node keeps some the snapshot covers, L{txraft.core.TRAILING_ENTRIES});
terms are positive and never decrease; COMMAND is UTF-8 text without carriage
return, newline or NUL (the store refuses to write one that has them).  The
format is a contract that other tools read, so the lines carry nothing else.

What is durable, and when:

  - The log is appended with C{pwrite} and made durable with C{fdatasync}
    (L{FileLogStore.sync}), which the LogManager calls before the node acts
    on what it wrote.  Truncating a conflicting suffix is fsynced at once,
    before anything is appended after it, so that no crash can combine a
    new line with the old suffix it was meant to replace.
  - The term and vote are replaced atomically: a temporary file is written
    and fsynced, renamed over C{NAME.state}, and the directory is fsynced.
  - Opening the log fsyncs its directory, so the file's name is durable
    before any entry in it is acknowledged.  Loading fsyncs what it read
    (the log; the state file's directory), since a process that died between
    a write and its fsync leaves data that only the page cache holds.
  - A write that fails (C{ENOSPC}, C{EIO}, ...) leaves the files valid: the
    log store then refuses to write until it is loaded again, and that load
    writes the unsynced part again before fsyncing it, since after a failed
    fsync the kernel may have dropped the dirty pages it could not write.

Recovery, and why there is no per-line checksum.  A crash can only damage
what was written since the last fsync, and L{FileLogStore.append} fsyncs
before that unsynced tail grows past L{MAX_UNSYNCED_BYTES} (unless a single
line is longer).  Filesystems fill blocks that were allocated but never
written with zeros (txraft assumes one that never shows stale data after a
crash: ext4's default C{data=ordered}, XFS, btrfs, ZFS), and no command
contains NUL.  So a torn write shows up as a last line without its newline,
or as a line holding NUL bytes within the last L{MAX_UNSYNCED_BYTES} of the
file (or in its last line); recovery drops that line and everything after
it, with a warning, and nothing dropped was ever acknowledged.  Anything
else that does not parse, an index out of sequence or a term going
backwards, anywhere, is corruption: the node refuses to start, naming the
file and line, rather than guess.  A checksum per line would have to change
the line (a trailing field would become part of COMMAND for every tool that
reads the log) or live in a sidecar file, which would need its own fsync on
every append to say where the last write began, doubling the cost of the
write path; what it would add, detecting bit rot inside a well-formed line,
is the disk's ECC's job.  The one damage that recovery cannot tell from a
torn write is NUL bytes within the last MiB: it is dropped as if torn.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import operator
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from txraft.interfaces import ILogStore, IStateStore
from txraft.messages import NAME_PATTERN, UNSTORABLE, Entry, HardState

log = Logger()

#: L{writeWholeFile} fdatasyncs a file it writes every this many bytes.  On
#: ext4 an fsync commits the journal, which first writes out the data of
#: every file whose blocks were allocated since the last commit: the log's
#: fsync on the event loop waited for much of a snapshot of tens of
#: megabytes being written meanwhile.  On this project's test machine the
#: longest fdatasync of a small file while 31 MB were written took 15 to
#: 18 ms when they were written at once, 7 to 11 ms in pieces of 4 MiB.
SYNC_EVERY_BYTES = 4 * 1024 * 1024

#: L{FileLogStore.append} fsyncs before its unsynced bytes would pass this
#: (unless a single line is longer), which bounds how far from the end of
#: the file recovery may find the damage of a torn write.
MAX_UNSYNCED_BYTES = 1024 * 1024

#: A well-formed log line without its newline: INDEX TERM COMMAND.
_LINE = re.compile(rb"([1-9][0-9]{0,18}) (0|[1-9][0-9]{0,18}) ([^\r\n\x00]*)\Z")


class StorageError(Exception):
    """Stored data is unusable; ``str()`` names the file (and line) and the problem."""


class OSFileSystem:
    """
    The system calls the file stores make, and nothing else: tests replace
    it with one that fails or "loses power" between any two calls.
    """

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """C{os.open}."""
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        """C{os.close}."""
        os.close(fd)

    def size(self, fd: int) -> int:
        """The size of the open file C{fd}."""
        return os.fstat(fd).st_size

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        """C{os.pread}."""
        return os.pread(fd, count, offset)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """C{os.pwrite}: may write less than C{data}."""
        return os.pwrite(fd, data, offset)

    def ftruncate(self, fd: int, length: int) -> None:
        """C{os.ftruncate}."""
        os.ftruncate(fd, length)

    def fsync(self, fd: int) -> None:
        """C{os.fsync}: the file's data and metadata."""
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        """C{os.fdatasync} where there is one: the data, and the size if it changed."""
        (getattr(os, "fdatasync", None) or os.fsync)(fd)

    def replace(self, source: str, destination: str) -> None:
        """C{os.replace}: rename atomically."""
        os.replace(source, destination)

    def remove(self, path: str) -> None:
        """C{os.remove}; raises L{FileNotFoundError} if there is no such file."""
        os.remove(path)

    def link(self, source: str, destination: str) -> None:
        """C{os.link}: a second name for C{source}'s file."""
        os.link(source, destination)

    def fsyncDirectory(self, path: str) -> None:
        """Make the creation, removal or renaming of files in C{path} durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsyncDirectory(path: str) -> None:
    """Make the creation, removal or renaming of files in C{path} durable."""
    OSFileSystem().fsyncDirectory(path)


def lockDataDirectory(directory: str, name: str) -> int:
    """
    Take an exclusive lock on C{DIR/NAME.lock} so two processes never run
    the same node over the same files; returns the descriptor to keep open.

    @raise StorageError: if another process holds it.
    """
    path = os.path.join(directory, f"{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(f"{path}: node {name} is already running on this data dir") from None
    return fd


def removeLeftover(fileSystem: OSFileSystem, path: str) -> bool:
    """
    Remove C{path}, a temporary file a crash may have left, if it is there,
    and say whether it was.  Not durable by itself: the caller fsyncs the
    directory (a leftover that comes back is removed again next time).
    """
    try:
        fileSystem.remove(path)
    except FileNotFoundError:
        return False
    return True


def readAll(fileSystem: OSFileSystem, fd: int, offset: int = 0) -> bytes:
    """
    The bytes of C{fd} from C{offset} to its end, in one read unless the
    read comes short; a read fills its bytes with the GIL released, and a
    single chunk is returned as it is, not copied.
    """
    size = fileSystem.size(fd)
    chunks = []
    while offset < size:
        chunk = fileSystem.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _writeAll(fileSystem: OSFileSystem, fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = fileSystem.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def readWholeFile(fileSystem: OSFileSystem, path: str) -> bytes | None:
    """The contents of C{path}, or L{None} if there is no such file."""
    try:
        fd = fileSystem.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return readAll(fileSystem, fd)
    finally:
        fileSystem.close(fd)


def writeWholeFile(fileSystem: OSFileSystem, path: str, parts: list[bytes]) -> None:
    """
    Create or empty C{path}, write C{parts} one after the other and fsync
    it; its name is not durable until its directory is fsynced.  A large
    file is fdatasynced every L{SYNC_EVERY_BYTES} on the way.
    """
    fd = fileSystem.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        offset = unsynced = 0
        for part in parts:
            view = memoryview(part)
            while view:
                piece = view[: SYNC_EVERY_BYTES - unsynced]
                _writeAll(fileSystem, fd, piece, offset)
                offset += len(piece)
                unsynced += len(piece)
                view = view[len(piece) :]
                if unsynced == SYNC_EVERY_BYTES:
                    fileSystem.fdatasync(fd)
                    unsynced = 0
        fileSystem.fsync(fd)
    finally:
        fileSystem.close(fd)


def formatEntry(entry: Entry) -> bytes:
    """
    The log line of C{entry}, newline included.

    @raise ValueError: if the entry cannot be stored: a command holding a
        carriage return, a newline or NUL, or an index or term below 1.
    """
    if UNSTORABLE.search(entry.command):
        raise ValueError(f"entry {entry.index}: a command cannot hold CR, LF or NUL")
    if entry.index < 1 or entry.term < 1:
        raise ValueError(f"entry {entry.index}: index and term must be positive")
    return f"{entry.index} {entry.term} {entry.command}\n".encode()


class _BadLineError(Exception):
    """A line that is not the next entry; ``str()`` is why."""


def _parseLine(raw: bytes, expectedIndex: int | None, previousTerm: int) -> Entry:
    match = _LINE.match(raw)
    if match is None:
        raise _BadLineError(f"corrupt log line {raw[:60]!r}")
    try:
        command = match.group(3).decode("utf-8")
    except UnicodeDecodeError:
        raise _BadLineError(f"corrupt log line {raw[:60]!r} (not UTF-8)") from None
    entry = Entry(int(match.group(1)), int(match.group(2)), command)
    if expectedIndex is not None and entry.index != expectedIndex:
        raise _BadLineError(f"index {entry.index} where {expectedIndex} was expected")
    if entry.term < max(previousTerm, 1):
        raise _BadLineError(f"term {entry.term} goes backwards")
    return entry


@attrs.frozen
class ScannedLog:
    """
    What L{scanLog} found in a log file.

    @ivar entries: the entries of the intact lines, in order.
    @ivar offsets: the byte offset of each of those lines.
    @ivar end: where the intact lines end; the file is cut here.
    @ivar tornLine: the line number where a torn tail starts, or L{None}.
    """

    entries: list[Entry]
    offsets: list[int]
    end: int
    tornLine: int | None


def scanLog(data: bytes, path: str) -> ScannedLog:
    """
    Parse the contents of a log file, telling a torn tail (which is dropped)
    from corruption (which is not); see the module docstring.

    @raise StorageError: naming C{path} and the line, on corruption.
    """
    entries: list[Entry] = []
    offsets: list[int] = []
    position = 0
    lineNumber = 0
    while position < len(data):
        lineNumber += 1
        end = data.find(b"\n", position)
        if end < 0:
            return ScannedLog(entries, offsets, position, lineNumber)
        raw = data[position:end]
        try:
            expected = entries[-1].index + 1 if entries else None
            entry = _parseLine(raw, expected, entries[-1].term if entries else 0)
        except _BadLineError as e:
            fromEnd = len(data) - position
            if b"\x00" in raw:
                if fromEnd <= MAX_UNSYNCED_BYTES or end == len(data) - 1:
                    return ScannedLog(entries, offsets, position, lineNumber)
                reason = (
                    f"{e}, with NUL bytes {fromEnd} bytes before the end of the file: "
                    "too far back to be a torn write"
                )
            else:
                reason = str(e)
            raise StorageError(f"{path}:{lineNumber}: {reason}; refusing to start") from None
        entries.append(entry)
        offsets.append(position)
        position = end + 1
    return ScannedLog(entries, offsets, position, None)


class SyncPoint(NamedTuple):
    """
    How far a log store's sync started at one moment reaches: C{position}
    (bytes of the file, entries of a memory log) of the store's
    C{generation} (see L{FileLogStore.syncPoint}).
    """

    generation: int
    position: int


@implementer(ILogStore)
class FileLogStore:
    """
    The log as an C{INDEX TERM COMMAND} text file, appended and fsynced in
    batches.  L{load} must come first.  After a write fails, the store
    refuses further writes until L{load} has read the file back and made it
    durable again.
    """

    def __init__(self, path: str, *, fileSystem: OSFileSystem | None = None) -> None:
        self.path = path
        self._compacting = path + ".compact"
        self._fs = fileSystem if fileSystem is not None else OSFileSystem()
        self._directory = os.path.dirname(os.path.abspath(path))
        self._fd = self._fs.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # Even if an earlier process created the file, it may have died
            # before making the name durable.  A compaction it left
            # unfinished is dropped: the old file is still in place.
            removeLeftover(self._fs, self._compacting)
            self._fs.fsyncDirectory(self._directory)
        except BaseException:
            self._fs.close(self._fd)
            raise
        self._first = 1  # the index of the first line (the next one's, if none)
        self._offsets: list[int] = []  # byte offset of each entry's line, by index - first
        self._terms: list[int] = []  # each entry's term, by index - first
        self._size = 0  # where the next line goes
        self._synced = 0  # bytes known durable: only what lies after may be torn
        self._loaded = False
        self._failed = False
        self._renameUnsynced = False  # a compaction's rename, not yet made durable
        # Changes whenever lines written may be cut or the file replaced: a
        # sync point from before no longer says what is durable.
        self._generation = 0
        # Held by a sync off the event loop while it uses the file
        # descriptor, and by whatever replaces or closes it.
        self._fdLock = threading.Lock()

    def load(self, after: int = 0) -> list[Entry]:
        """
        Read and check the whole file; cut a torn tail with a warning; make
        what remains durable; see the module docstring.  After a failed
        write it also writes the unsynced part again, since an fsync that
        failed may have left pages the kernel no longer means to write.
        Entries up to C{after}, which a snapshot covers (kept when the log
        was compacted, or a crash came between saving it and compacting),
        are compacted away.  After a compaction that renamed its file into
        place but failed to fsync the directory, it fsyncs the directory.

        @raise StorageError: if the log starts after C{after + 1}.
        """
        fs = self._fs
        with self._writing(loading=True):
            data = readAll(fs, self._fd)
        scanned = scanLog(data, self.path)
        if scanned.tornLine is not None:
            log.warn(
                "{path}:{line}: dropping a torn tail of {count} bytes "
                "(a crash or failure during an append; none of it was acknowledged)",
                path=self.path,
                line=scanned.tornLine,
                count=len(data) - scanned.end,
            )
        with self._writing(loading=True):
            if self._failed:
                start = min(self._synced, scanned.end)
                _writeAll(fs, self._fd, data[start : scanned.end], start)
            if scanned.end != len(data) or self._failed:
                fs.ftruncate(self._fd, scanned.end)
            fs.fdatasync(self._fd)
            if self._renameUnsynced:
                # A compaction renamed its file over the log, then failed to
                # fsync the directory: nothing may be appended to a file
                # whose name a power failure could still take back.
                fs.fsyncDirectory(self._directory)
                self._renameUnsynced = False
        entries = scanned.entries
        if entries and entries[0].index > after + 1:
            raise StorageError(
                f"{self.path}:1: the log starts at index {entries[0].index} but the "
                f"snapshot ends at {after}: entries are missing; refusing to start"
            )
        self._first = entries[0].index if entries else after + 1
        self._offsets = scanned.offsets
        self._terms = [entry.term for entry in entries]
        self._size = self._synced = scanned.end
        self._loaded = True
        self._failed = False
        self._generation += 1
        if entries and entries[0].index <= after:
            self.compact(after)
        return [entry for entry in entries if entry.index > after]

    @property
    def lastIndex(self) -> int:
        """The index of the last line (or of the snapshot's end, if none)."""
        return self._first + len(self._offsets) - 1

    @contextmanager
    def _writing(self, loading: bool = False) -> Iterator[None]:
        """Refuse to write on top of an unknown state; remember a failure."""
        if not loading:
            self._checkWritable()
        elif self._fd < 0:
            raise OSError(errno.EBADF, "the log is closed", self.path)
        try:
            yield
        except OSError as e:
            self._failed = True
            if e.filename is None and e.errno is not None:
                raise OSError(e.errno, e.strerror, self.path) from e
            raise
        except BaseException:
            self._failed = True
            raise

    def _checkWritable(self) -> None:
        if self._fd < 0:
            raise OSError(errno.EBADF, "the log is closed", self.path)
        if not self._loaded:
            raise StorageError(f"{self.path}: load() the log before changing it")
        if self._failed:
            raise StorageError(f"{self.path}: an earlier write failed; load() it again")

    def truncateFrom(self, index: int) -> None:
        """
        Cut the file at the start of line C{index} and fsync: a later append
        must never reach the disk without this cut.
        """
        self._checkWritable()
        if index > self.lastIndex:
            return
        if index < self._first:
            raise ValueError(f"entry {index} is compacted away")
        position = index - self._first
        self._generation += 1
        with self._writing():
            size = self._offsets[position]
            self._fs.ftruncate(self._fd, size)
            self._fs.fdatasync(self._fd)
            self._size = self._synced = size
            del self._offsets[position:]
            del self._terms[position:]

    def compact(self, index: int) -> None:
        """
        Drop the lines up to C{index}: write the rest to a new file, fsync
        it, rename it over the log and fsync the directory, so a crash
        leaves either the old file or the new one.
        """
        self._checkWritable()
        if index < self._first:
            return
        keep = min(index + 1 - self._first, len(self._offsets))
        start = self._offsets[keep] if keep < len(self._offsets) else self._size
        fs = self._fs
        with self._writing():
            tail = readAll(fs, self._fd, start)
            fd = fs.open(self._compacting, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _writeAll(fs, fd, tail, 0)
                fs.fdatasync(fd)
                fs.replace(self._compacting, self.path)
            except BaseException:
                fs.close(fd)
                raise
            self._renameUnsynced = True
            with self._fdLock:
                self._generation += 1
                old, self._fd = self._fd, fd
                fs.close(old)
            fs.fsyncDirectory(self._directory)
            self._renameUnsynced = False
        self._offsets = [offset - start for offset in self._offsets[keep:]]
        self._terms = self._terms[keep:]
        self._first = index + 1
        self._size = self._synced = len(tail)

    def append(self, entries: list[Entry]) -> None:
        """
        Write C{entries}, in one system call unless there are more than
        L{MAX_UNSYNCED_BYTES} of them; call L{sync} to make them durable.

        @raise ValueError: before writing anything, if the entries do not
            continue the log or cannot be stored (see L{formatEntry}).
        """
        self._checkWritable()
        if not entries:
            return
        lastIndex = self.lastIndex
        lastTerm = self._terms[-1] if self._terms else 0
        indexes = [entry.index for entry in entries]
        terms = [entry.term for entry in entries]
        # Checked a batch at a time; only a bad one is gone through entry by entry.
        if indexes != list(range(lastIndex + 1, lastIndex + 1 + len(entries))) or not all(
            map(operator.le, [lastTerm, *terms], terms)
        ):
            for entry in entries:
                if entry.index != lastIndex + 1 or entry.term < lastTerm:
                    raise ValueError(f"entry {entry.index} does not continue the log")
                lastIndex, lastTerm = entry.index, entry.term
        if terms[0] < 1 or UNSTORABLE.search(" ".join([entry.command for entry in entries])):
            for entry in entries:
                formatEntry(entry)  # raises for the first entry that cannot be stored
        lines = [f"{index} {term} {command}\n".encode() for index, term, command in entries]
        with self._writing():
            if self._size - self._synced + sum(map(len, lines)) <= MAX_UNSYNCED_BYTES:
                self._write(lines)
            else:
                self._writeSyncing(lines)
            self._terms += terms

    def _writeSyncing(self, lines: list[bytes]) -> None:
        """Write C{lines}, an fdatasync before the unsynced bytes would pass the bound."""
        batch: list[bytes] = []
        batchBytes = 0
        for line in lines:
            unsynced = self._size - self._synced + batchBytes
            if unsynced and unsynced + len(line) > MAX_UNSYNCED_BYTES:
                self._write(batch)
                batch, batchBytes = [], 0
                self._fs.fdatasync(self._fd)
                self._synced = self._size
            batch.append(line)
            batchBytes += len(line)
        self._write(batch)

    def _write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        _writeAll(self._fs, self._fd, data, self._size)
        # Each line's offset, and after the last the new size.
        *offsets, self._size = itertools.accumulate(map(len, lines), initial=self._size)
        self._offsets += offsets

    def sync(self) -> None:
        """fdatasync the file."""
        with self._writing():
            self._fs.fdatasync(self._fd)
            self._synced = self._size

    def syncPoint(self) -> SyncPoint:
        """What a L{syncTo} started now makes durable: every line written so far."""
        return SyncPoint(self._generation, self._size)

    def syncTo(self, point: SyncPoint) -> None:
        """
        fdatasync the file, safely from another thread than the one that
        writes; nothing to do if the file was cut or replaced since C{point}.
        """
        with self._fdLock:
            if point.generation == self._generation:
                with self._writing():
                    self._fs.fdatasync(self._fd)

    def markSynced(self, point: SyncPoint) -> bool:
        """
        Record that a L{syncTo} of C{point} returned; whether what it covers
        is still there to be durable (no cut or replacement since).
        """
        if point.generation != self._generation:
            return False
        self._synced = max(self._synced, point.position)
        return True

    def close(self) -> None:
        """Close the file."""
        with self._fdLock:
            self._generation += 1
            if self._fd >= 0:
                fd, self._fd = self._fd, -1
                self._fs.close(fd)


@implementer(IStateStore)
class FileStateStore:
    """The term and vote as a small JSON file replaced atomically on every change."""

    def __init__(self, path: str, *, fileSystem: OSFileSystem | None = None) -> None:
        self.path = path
        self._fs = fileSystem if fileSystem is not None else OSFileSystem()
        self._directory = os.path.dirname(os.path.abspath(path))

    def load(self) -> HardState:
        """
        Read the file, then make its name durable (a process that died
        right after the rename may not have; its contents were fsynced
        before the rename); a missing file is a node that never voted.
        """
        fs = self._fs
        try:
            fd = fs.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return HardState()
        try:
            data = readAll(fs, fd)
        finally:
            fs.close(fd)
        fs.fsyncDirectory(self._directory)
        try:
            fields = json.loads(data)
            term, votedFor = fields["currentTerm"], fields["votedFor"]
        except (ValueError, KeyError, TypeError):
            raise StorageError(f"{self.path}: corrupt term/vote file; refusing to start") from None
        validTerm = isinstance(term, int) and not isinstance(term, bool) and term >= 0
        validVote = votedFor is None or (
            isinstance(votedFor, str) and NAME_PATTERN.fullmatch(votedFor) is not None
        )
        if not (validTerm and validVote):
            raise StorageError(f"{self.path}: corrupt term/vote file; refusing to start")
        return HardState(term, votedFor)

    def save(self, state: HardState) -> None:
        """
        Write a temporary file, fsync it, rename it over the old one, fsync
        the directory.  A failure at any step leaves the old state in place
        (or, once renamed, the new one); an OSError names the file.
        """
        fs = self._fs
        temporary = self.path + ".tmp"
        body = json.dumps({"currentTerm": state.currentTerm, "votedFor": state.votedFor})
        try:
            fd = fs.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _writeAll(fs, fd, body.encode() + b"\n", 0)
                fs.fsync(fd)
            finally:
                fs.close(fd)
            fs.replace(temporary, self.path)
            fs.fsyncDirectory(self._directory)
        except OSError as e:
            if e.filename is None and e.errno is not None:
                raise OSError(e.errno, e.strerror, self.path) from e
            raise


@implementer(ILogStore)
class MemoryLogStore:
    """
    An in-memory log with crash semantics: L{crash} forgets what was not
    synced, as a power failure would.
    """

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.durable: list[Entry] = []
        # Changes whenever entries may be cut or dropped (see FileLogStore).
        self._generation = 0

    def load(self, after: int = 0) -> list[Entry]:
        """The durable entries after C{after} (what a restarted node finds)."""
        if self.durable and self.durable[0].index > after + 1:
            raise StorageError(f"the log starts after the snapshot's end {after}")
        self.compact(after)
        self.entries = list(self.durable)
        return list(self.entries)

    def truncateFrom(self, index: int) -> None:
        """Drop entries from C{index} on (not yet durably)."""
        self._generation += 1
        self.entries = [e for e in self.entries if e.index < index]

    def compact(self, index: int) -> None:
        """Drop entries up to C{index}, durably at once (like the file's rename)."""
        self._generation += 1
        self.entries = [e for e in self.entries if e.index > index]
        self.durable = [e for e in self.durable if e.index > index]

    def append(self, entries: list[Entry]) -> None:
        """Add C{entries} (not yet durably)."""
        self.entries.extend(entries)

    def sync(self) -> None:
        """Make the current entries durable."""
        self.durable = list(self.entries)

    def syncPoint(self) -> SyncPoint:
        """What a L{syncTo} started now makes durable: the entries so far."""
        return SyncPoint(self._generation, len(self.entries))

    def syncTo(self, point: SyncPoint) -> None:
        """Make the entries of C{point} durable, unless cut or dropped since."""
        if point.generation == self._generation and point.position > len(self.durable):
            self.durable = self.entries[: point.position]

    def markSynced(self, point: SyncPoint) -> bool:
        """Whether the entries of C{point} are still the log's (no cut since)."""
        return point.generation == self._generation

    def close(self) -> None:
        """Nothing to release."""

    def crash(self) -> None:
        """Lose every change since the last L{sync}."""
        self._generation += 1
        self.entries = list(self.durable)


@implementer(IStateStore)
class MemoryStateStore:
    """An in-memory term and vote; L{save} is durable at once, like the file's rename."""

    def __init__(self) -> None:
        self.state = HardState()

    def load(self) -> HardState:
        """The saved state."""
        return self.state

    def save(self, state: HardState) -> None:
        """Replace the saved state."""
        self.state = state
