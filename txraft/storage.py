"""
Durable homes for the Raft log and for the current term and vote.

Two small interfaces, L{ILogStore} and L{IStateStore}, each with a
file-backed implementation (what a node runs on) and an in-memory one (what
simulations run on; it forgets unsynced writes when it "crashes").

The log file is the essay's format, one entry per line::

    INDEX TERM COMMAND

Indexes start at 1 and increase by one per line; terms never decrease.  A
crash in the middle of an append can leave a last line without its newline:
recovery drops it with a warning, since no server acknowledged an entry
before its newline was fsynced.  Anything else that does not fit the format
is corruption, and the node refuses to start rather than guess.
"""

from __future__ import annotations

import fcntl
import json
import os

from twisted.logger import Logger
from zope.interface import Interface, implementer

from txraft.core import HardState
from txraft.messages import NAME_PATTERN, Entry

log = Logger()


class StorageError(Exception):
    """Stored data is unusable; ``str()`` names the file (and line) and the problem."""


class ILogStore(Interface):
    """A node's log of entries, durable once L{sync} returns."""

    def load() -> list[Entry]:
        """Every entry in the store, in index order."""

    def truncateFrom(index: int) -> None:  # noqa: N805
        """Remove the entry at C{index} and every later one."""

    def append(entries: list[Entry]) -> None:  # noqa: N805
        """Add C{entries}, which continue the log without a gap."""

    def sync() -> None:
        """Make every earlier change durable."""

    def close() -> None:
        """Release the store's resources."""


class IStateStore(Interface):
    """Where the current term and vote live."""

    def load() -> HardState:
        """The last saved state, or the initial one."""

    def save(state: HardState) -> None:  # noqa: N805
        """Replace the saved state durably before returning."""


def fsyncDirectory(path: str) -> None:
    """Make the creation, removal or renaming of files in C{path} durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def _sync(fd: int) -> None:
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


@implementer(ILogStore)
class FileLogStore:
    """The log as an ``INDEX TERM COMMAND`` text file, appended and fsynced in batches."""

    def __init__(self, path: str) -> None:
        self.path = path
        created = not os.path.exists(path)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if created:
            _sync(self._fd)
            fsyncDirectory(os.path.dirname(os.path.abspath(path)))
        self._offsets: list[int] = []  # byte offset of each entry's line, by index - 1
        self._size = 0

    def load(self) -> list[Entry]:
        """Read and check the whole file; drop a torn last line; see the module docstring."""
        with open(self.path, "rb") as f:
            data = f.read()
        entries: list[Entry] = []
        self._offsets = []
        position = 0
        lineNumber = 0
        while position < len(data):
            lineNumber += 1
            end = data.find(b"\n", position)
            if end < 0:
                log.warn(
                    "{path}:{line}: dropping a torn last line of {count} bytes",
                    path=self.path,
                    line=lineNumber,
                    count=len(data) - position,
                )
                os.ftruncate(self._fd, position)
                _sync(self._fd)
                break
            entry = self._parseLine(data[position:end], lineNumber, entries)
            entries.append(entry)
            self._offsets.append(position)
            position = end + 1
        self._size = min(position, len(data))
        return entries

    def _parseLine(self, raw: bytes, lineNumber: int, previous: list[Entry]) -> Entry:
        where = f"{self.path}:{lineNumber}"
        try:
            if b"\r" in raw:
                raise ValueError("carriage return")
            index, term, command = raw.decode("utf-8").split(" ", 2)
            entry = Entry(int(index), int(term), command)
        except ValueError:
            raise StorageError(
                f"{where}: corrupt log line {raw[:60]!r}; refusing to start"
            ) from None
        expectedIndex = previous[-1].index + 1 if previous else 1
        if entry.index != expectedIndex:
            raise StorageError(
                f"{where}: index {entry.index} where {expectedIndex} was expected; "
                "refusing to start"
            )
        if entry.term < 1 or (previous and entry.term < previous[-1].term):
            raise StorageError(f"{where}: term {entry.term} goes backwards; refusing to start")
        return entry

    def truncateFrom(self, index: int) -> None:
        """Cut the file at the start of line C{index}."""
        if index > len(self._offsets):
            return
        self._size = self._offsets[index - 1]
        del self._offsets[index - 1 :]
        os.ftruncate(self._fd, self._size)

    def append(self, entries: list[Entry]) -> None:
        """Write C{entries} with one system call; call L{sync} to make them durable."""
        lines = []
        for entry in entries:
            line = f"{entry.index} {entry.term} {entry.command}\n".encode()
            self._offsets.append(self._size)
            self._size += len(line)
            lines.append(line)
        data = memoryview(b"".join(lines))
        while data:
            data = data[os.write(self._fd, data) :]

    def sync(self) -> None:
        """fdatasync the file."""
        _sync(self._fd)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


@implementer(IStateStore)
class FileStateStore:
    """The term and vote as a small JSON file replaced atomically on every change."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> HardState:
        """Read the file; a missing file is a node that never voted."""
        try:
            with open(self.path, "rb") as f:
                fields = json.loads(f.read())
            term, votedFor = fields["currentTerm"], fields["votedFor"]
        except FileNotFoundError:
            return HardState()
        except (ValueError, KeyError, TypeError):
            raise StorageError(f"{self.path}: corrupt term/vote file; refusing to start") from None
        validTerm = isinstance(term, int) and not isinstance(term, bool) and term >= 0
        validVote = votedFor is None or (
            isinstance(votedFor, str) and NAME_PATTERN.match(votedFor) is not None
        )
        if not (validTerm and validVote):
            raise StorageError(f"{self.path}: corrupt term/vote file; refusing to start")
        return HardState(term, votedFor)

    def save(self, state: HardState) -> None:
        """Write a temporary file, fsync it, rename it over the old one, fsync the directory."""
        temporary = self.path + ".tmp"
        body = json.dumps({"currentTerm": state.currentTerm, "votedFor": state.votedFor})
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        fsyncDirectory(os.path.dirname(os.path.abspath(self.path)))


@implementer(ILogStore)
class MemoryLogStore:
    """
    An in-memory log with crash semantics: L{crash} forgets what was not
    synced, as a power failure would.
    """

    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.durable: list[Entry] = []

    def load(self) -> list[Entry]:
        """The durable entries (what a restarted node finds)."""
        self.entries = list(self.durable)
        return list(self.entries)

    def truncateFrom(self, index: int) -> None:
        """Drop entries from C{index} on (not yet durably)."""
        del self.entries[index - 1 :]

    def append(self, entries: list[Entry]) -> None:
        """Add C{entries} (not yet durably)."""
        self.entries.extend(entries)

    def sync(self) -> None:
        """Make the current entries durable."""
        self.durable = list(self.entries)

    def close(self) -> None:
        """Nothing to release."""

    def crash(self) -> None:
        """Lose every change since the last L{sync}."""
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
