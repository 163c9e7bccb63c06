"""
Durable snapshots of the state machine (dissertation chapter 5).

A node keeps one snapshot, C{DIR/NAME.snapshot}: a header line, the
cluster's membership as of the snapshot's last entry, then the state
machine's bytes::

    txraft-snapshot 2 INDEX TERM LENGTH SHA256
    membership voter s1 127.0.0.1 10000 voter s2 127.0.0.1 10001 voter s3 127.0.0.1 10002
    {"a": "1", "b": "hello world"}

INDEX and TERM are those of the last log entry the snapshot covers; LENGTH
is the number of bytes after the membership line's newline, and SHA256 the
hex digest of C{"INDEX TERM LENGTH\\n"}, the membership line with its
newline, and those bytes, so damage to the header's numbers or the
membership is caught as well as damage to the data.  The membership line is
empty when the log held no membership entry by then (the cluster still ran
on its bootstrap config file); version 1 files, written before membership
lived in the log, have no such line and still load.  For the key-value
store the data is one line of JSON, the map (then, once clients number
their requests, one more: their sessions; see
L{txraft.kv.KeyValueStore.capture}), so a snapshot stays readable with
C{tail -n +3}.  A snapshot is written to a temporary file, fsynced, renamed
over the old one and the directory fsynced, so a crash leaves either the
old snapshot or the new one; one that fails its checksum was damaged after
it was written, and the node refuses to start rather than start from a
state it cannot trust.

Renaming over the old snapshot would free its blocks in the rename itself,
on the event loop: 10 to 14 ms for the 31 MB of a million keys on ext4.
So the old file first gets a second name, C{NAME.snapshot.retired}, and
the rename only drops one of its names; whoever writes the next snapshot
(a forked child or a thread) removes the retired file first, and so pays
for freeing it.
"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

from zope.interface import implementer

from txraft.interfaces import ISnapshotStore
from txraft.messages import Snapshot
from txraft.storage import (
    OSFileSystem,
    StorageError,
    readAll,
    readWholeFile,
    removeLeftover,
    writeWholeFile,
)

MAGIC = b"txraft-snapshot"
VERSION = 2
#: The version before the membership line; still read.
VERSION_WITHOUT_MEMBERSHIP = 1
#: How much of a staged snapshot is read first, for its header and
#: membership lines (more is read if they are longer).
HEAD_BYTES = 64 * 1024


def checksum(index: int, term: int, data: bytes, membership: bytes | None = None) -> str:
    """
    The SHA256 a snapshot's header carries: of its numbers, its membership
    line (L{None} in a version 1 file, which has none) and its data.
    """
    digest = hashlib.sha256(f"{index} {term} {len(data)}\n".encode("ascii"))
    if membership is not None:
        digest.update(membership + b"\n")
    digest.update(data)
    return digest.hexdigest()


def encodeHeader(snapshot: Snapshot) -> bytes:
    """The header and membership lines of C{snapshot}'s file, newlines included."""
    membership = snapshot.membership.encode("utf-8")
    digest = checksum(snapshot.index, snapshot.term, snapshot.data, membership)
    header = f"{MAGIC.decode()} {VERSION} {snapshot.index} {snapshot.term} "
    header += f"{len(snapshot.data)} {digest}\n"
    return header.encode("ascii") + membership + b"\n"


def encodeSnapshot(snapshot: Snapshot) -> bytes:
    """The file contents for C{snapshot}: header line, then data."""
    return encodeHeader(snapshot) + snapshot.data


def decodeSnapshot(contents: bytes, source: str) -> Snapshot:
    """
    Parse and check the contents of a snapshot file.

    @raise StorageError: naming C{source}, if the header is malformed or the
        data's length or checksum do not match it.
    """
    header = _decodeHeader(contents, source)
    return _checked(header, contents[header.dataOffset :], source)


class _Header(NamedTuple):
    """What a snapshot file's first lines say, and where its data starts."""

    index: int
    term: int
    length: int
    digest: bytes
    membership: bytes | None
    dataOffset: int


def _decodeHeader(contents: bytes, source: str) -> _Header:
    """
    Parse the header line (and the membership line, in a version 2 file)
    at the start of C{contents}, which need hold no more of the file.  No
    slice of the data is taken: it may be tens of megabytes, and copying it
    holds the GIL.
    """
    newline = contents.find(b"\n")
    fields = contents[: max(newline, 0)].split(b" ")
    if newline < 0 or len(fields) != 6 or fields[0] != MAGIC:
        raise StorageError(f"{source}: not a txraft snapshot; refusing to start")
    try:
        version, index, term, length = (int(f) for f in fields[1:5])
    except ValueError:
        raise StorageError(f"{source}: malformed snapshot header; refusing to start") from None
    membership = None
    offset = newline + 1
    if version == VERSION:
        newline = contents.find(b"\n", offset)
        if newline < 0:
            raise StorageError(f"{source}: snapshot is truncated or malformed; refusing to start")
        membership, offset = contents[offset:newline], newline + 1
    elif version != VERSION_WITHOUT_MEMBERSHIP:
        raise StorageError(
            f"{source}: snapshot version {version} is not {VERSION}; refusing to start"
        )
    return _Header(index, term, length, fields[5], membership, offset)


def _checked(header: _Header, data: bytes, source: str) -> Snapshot:
    """The snapshot of C{header} and C{data}, once they are found to match."""
    index, term, membership = header.index, header.term, header.membership
    if index < 1 or term < 1 or header.length != len(data):
        raise StorageError(f"{source}: snapshot is truncated or malformed; refusing to start")
    if checksum(index, term, data, membership).encode("ascii") != header.digest:
        raise StorageError(f"{source}: snapshot checksum does not match; refusing to start")
    try:
        text = (membership or b"").decode("utf-8")
    except UnicodeDecodeError:
        raise StorageError(
            f"{source}: snapshot membership is not UTF-8; refusing to start"
        ) from None
    return Snapshot(index, term, data, text)


@implementer(ISnapshotStore)
class FileSnapshotStore:
    """
    One snapshot file, replaced atomically.  Every system call goes through
    an L{OSFileSystem}, as the log's and the term's do, so that tests can
    crash it between any two.
    """

    def __init__(self, path: str, *, fileSystem: OSFileSystem | None = None) -> None:
        self.path = path
        self.temporary = path + ".tmp"
        self.staging = path + ".staged"
        #: The replaced snapshot, kept by a second name until the next one is written.
        self.retired = path + ".retired"
        self._fs = fileSystem if fileSystem is not None else OSFileSystem()
        self._directory = os.path.dirname(os.path.abspath(path))

    def load(self) -> Snapshot | None:
        """
        Read and check the snapshot file, then make its name durable: the
        process that renamed it into place may have died before fsyncing
        the directory, and the node is about to act on it (compacting the
        log it covers).  Leftover temporary files are removed: they are a
        snapshot that was never put in place, or one already replaced,
        never the current one.
        """
        fs = self._fs
        leftovers = (self.temporary, self.staging, self.retired)
        removed = [removeLeftover(fs, path) for path in leftovers]
        contents = readWholeFile(fs, self.path)
        snapshot = None if contents is None else decodeSnapshot(contents, self.path)
        if snapshot is not None or any(removed):
            fs.fsyncDirectory(self._directory)
        return snapshot

    def save(self, snapshot: Snapshot) -> None:
        """Write a temporary file, fsync it, rename it into place, fsync the directory."""
        self.commit(self._write(snapshot, self.temporary))

    def stage(self, snapshot: Snapshot) -> str:
        """Write and fsync the staging file; return its path."""
        return self._write(snapshot, self.staging)

    def readStaged(self, staged: object) -> Snapshot:
        """
        Read back a snapshot staged by another process (a child that wrote
        it).

        @raise StorageError: if the file is not a whole, valid snapshot.
        """
        assert isinstance(staged, str)
        fs = self._fs
        try:
            fd = fs.open(staged, os.O_RDONLY)
        except FileNotFoundError:
            raise StorageError(f"{staged}: the staged snapshot is missing") from None
        try:
            size = fs.size(fd)
            # The header and membership lines first, then the data on its
            # own: a million keys make tens of megabytes, which a slice of
            # the whole file would copy holding the GIL, stalling the event
            # loop meanwhile; a read fills its bytes with the GIL released.
            head = b""
            while head.count(b"\n") < 2 and len(head) < size:
                more = fs.pread(fd, min(size, max(HEAD_BYTES, 2 * len(head))), 0)
                if len(more) <= len(head):
                    break
                head = more
            header = _decodeHeader(head, staged)
            data = readAll(fs, fd, header.dataOffset)
        finally:
            fs.close(fd)
        return _checked(header, data, staged)

    def commit(self, staged: object) -> None:
        """
        Rename the staged file over the snapshot and fsync the directory.
        The old snapshot keeps a second name (L{retired}), so that the
        rename does not free its blocks: the next L{stage} removes it.
        """
        assert isinstance(staged, str)
        fs = self._fs
        # Left over only if no snapshot was staged since the last commit
        # (one installed from the leader): then it is freed here after all.
        removeLeftover(fs, self.retired)
        try:
            fs.link(self.path, self.retired)
        except FileNotFoundError:
            pass  # the node's first snapshot
        fs.replace(staged, self.path)
        fs.fsyncDirectory(self._directory)

    def _write(self, snapshot: Snapshot, path: str) -> str:
        removeLeftover(self._fs, self.retired)
        writeWholeFile(self._fs, path, [encodeHeader(snapshot), snapshot.data])
        return path


@implementer(ISnapshotStore)
class MemorySnapshotStore:
    """A snapshot kept in memory; L{save} is durable at once, like the file's rename."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def load(self) -> Snapshot | None:
        """The saved snapshot."""
        return self.snapshot

    def save(self, snapshot: Snapshot) -> None:
        """Replace the saved snapshot."""
        self.snapshot = snapshot

    def stage(self, snapshot: Snapshot) -> Snapshot:
        """Nothing to write: the snapshot itself is what L{commit} takes."""
        return snapshot

    def commit(self, staged: object) -> None:
        """Make C{staged} the saved snapshot."""
        assert isinstance(staged, Snapshot)
        self.snapshot = staged
