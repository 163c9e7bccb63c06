"""
Crash and disk-failure tests for the storage layer and the node around it.

L{SimulatedFileSystem} stands in for the operating system under
L{FileLogStore}, L{FileStateStore} and L{FileSnapshotStore}: it keeps a page
cache (what reads see) apart from what is durable (what survives a power
failure), and can "lose power" before any system call.  Every write path is
run with a crash before each of its system calls in turn; every state the
disk may then be in is recovered from, and what recovery returns is checked
against what was acknowledged.  The write paths include snapshots and log
compaction: a node taking a snapshot, a follower installing its leader's,
and the log store compacting, where recovery must give the snapshot and
every acknowledged entry after it.  The last classes make the disk fail instead (C{ENOSPC},
C{EACCES}, C{EIO}) under a running node and check that it stops
acknowledging, keeps answering what it safely can, and rejoins once the disk
works again.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
from collections.abc import Callable, Iterator

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

import txraft.storage
from tests.helpers import (
    TICK_SECONDS,
    RecordingLogStore,
    RecordingStateStore,
    advanceUntil,
    buildService,
    clientRequest,
    makeConfig,
    temporaryDirectory,
)
from txraft.answers import DISK_FAILED
from txraft.core import FOLLOWER, LEADER, Ready
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
)
from txraft.node import DISK_RETRY_SECONDS
from txraft.service import RaftService
from txraft.shardedmap import ShardedMap, frozenJSON
from txraft.snapshots import FileSnapshotStore, encodeSnapshot
from txraft.storage import (
    FileLogStore,
    FileStateStore,
    MemoryLogStore,
    MemoryStateStore,
    StorageError,
)

DIRECTORY = "/data"
LOG = "/data/s1.log"
STATE = "/data/s1.state"
SNAPSHOT = "/data/s1.snapshot"


class Crash(BaseException):
    """
    The simulated machine lost power.  A C{BaseException}, so that no
    C{except Exception} in the code under test can swallow it.
    """


class Inode:
    """
    One simulated file: C{data} is what reads see (the page cache),
    C{durable} what a power failure leaves, C{pending} the writes and
    truncations made since the last fsync, in order.
    """

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.durable = bytes(data)
        self.pending: list[tuple[str, int, bytes]] = []

    def copy(self) -> Inode:
        """An independent inode in the same state."""
        other = Inode()
        other.data = bytearray(self.data)
        other.durable = self.durable
        other.pending = list(self.pending)
        return other

    def crashContents(self, sector: int) -> set[bytes]:
        """
        Every content this file may have after a power failure: the durable
        one with any subset of the pending changes applied in order, any
        one of those writes cut short at any byte, or with any one of its
        C{sector}-aligned sectors left unwritten (zeros, as filesystems show
        allocated blocks never written).
        """
        results = set()
        for mask in range(2 ** len(self.pending)):
            chosen = [op for i, op in enumerate(self.pending) if mask >> i & 1]
            results.add(_apply(self.durable, chosen))
            for position, (kind, offset, data) in enumerate(chosen):
                if kind != "write":
                    continue
                variants = [data[:cut] for cut in range(len(data))]
                start = offset - offset % sector
                for sectorStart in range(start, offset + len(data), sector):
                    lo = max(sectorStart, offset) - offset
                    hi = min(sectorStart + sector, offset + len(data)) - offset
                    variants.append(data[:lo] + b"\x00" * (hi - lo) + data[hi:])
                for variant in variants:
                    torn = chosen[:position] + [("write", offset, variant)]
                    results.add(_apply(self.durable, torn + chosen[position + 1 :]))
        return results


def _apply(durable: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    data = bytearray(durable)
    for kind, offset, payload in ops:
        if kind == "truncate":
            del data[offset:]
            data.extend(b"\x00" * (offset - len(data)))
        else:
            data.extend(b"\x00" * (offset - len(data)))
            data[offset : offset + len(payload)] = payload
    return bytes(data)


class SimulatedFileSystem:
    """
    An in-memory, one-directory stand-in for L{txraft.storage.OSFileSystem}
    with a page cache and power failures.

    @ivar calls: the names of the system calls that changed something, in
        order (reads are not counted: crashing before a read is crashing
        after the call before it).
    @ivar crashAt: if set, the call that would become C{calls[crashAt]}
        raises L{Crash} instead of happening.
    @ivar fault: if set, called with each call's name before it happens;
        it may raise to make the call fail.
    """

    SECTOR = 8

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.names = {path: Inode(data) for path, data in (files or {}).items()}
        self.durableNames = dict(self.names)
        self.pendingNames: list[tuple[str, str, Inode | None]] = []
        self._fds: dict[int, Inode] = {}
        self._nextFd = 3
        self.calls: list[str] = []
        self.crashAt: int | None = None
        self.fault: Callable[[str], None] | None = None

    def _step(self, name: str) -> None:
        if self.fault is not None:
            self.fault(name)
        if self.crashAt is not None and len(self.calls) >= self.crashAt:
            raise Crash(name)
        self.calls.append(name)

    def _inode(self, fd: int) -> Inode:
        try:
            return self._fds[fd]
        except KeyError:
            raise OSError(errno.EBADF, "Bad file descriptor") from None

    # -- the OSFileSystem interface ------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """Open (and maybe create or empty) C{path}."""
        if flags & (os.O_CREAT | os.O_TRUNC):
            self._step("open")
        if path not in self.names:
            if not flags & os.O_CREAT:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            self.names[path] = Inode()
            self.pendingNames.append(("link", path, self.names[path]))
        inode = self.names[path]
        if flags & os.O_TRUNC:
            inode.pending.append(("truncate", 0, b""))
            del inode.data[:]
        fd, self._nextFd = self._nextFd, self._nextFd + 1
        self._fds[fd] = inode
        return fd

    def close(self, fd: int) -> None:
        """Forget C{fd}."""
        self._inode(fd)
        del self._fds[fd]

    def size(self, fd: int) -> int:
        """The file's size as reads see it."""
        return len(self._inode(fd).data)

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        """Read from the page cache."""
        return bytes(self._inode(fd).data[offset : offset + count])

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """Write into the page cache; durable only after an fsync."""
        inode = self._inode(fd)
        self._step("pwrite")
        data = bytes(data)
        inode.pending.append(("write", offset, data))
        inode.data[:] = _apply(bytes(inode.data), [("write", offset, data)])
        return len(data)

    def ftruncate(self, fd: int, length: int) -> None:
        """Change the file's size in the page cache."""
        inode = self._inode(fd)
        self._step("ftruncate")
        inode.pending.append(("truncate", length, b""))
        inode.data[:] = _apply(bytes(inode.data), [("truncate", length, b"")])

    def fsync(self, fd: int) -> None:
        """
        Make the file's contents durable (not its name).  If it fails, the
        kernel has given up on the pending writes: they stay in the page
        cache, but no later fsync will write them (as Linux does).
        """
        inode = self._inode(fd)
        try:
            self._step("fsync")
        except OSError:
            inode.pending = []
            raise
        inode.durable = _apply(inode.durable, inode.pending)
        inode.pending = []

    def fdatasync(self, fd: int) -> None:
        """The same as L{fsync} here: contents and size."""
        inode = self._inode(fd)
        try:
            self._step("fdatasync")
        except OSError:
            inode.pending = []
            raise
        inode.durable = _apply(inode.durable, inode.pending)
        inode.pending = []

    def replace(self, source: str, destination: str) -> None:
        """Rename C{source} over C{destination}; durable after L{fsyncDirectory}."""
        self._step("replace")
        if source not in self.names:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", source)
        self.names[destination] = self.names.pop(source)
        self.pendingNames.append(("rename", source, destination))

    def remove(self, path: str) -> None:
        """Unlink C{path}; durable after L{fsyncDirectory}."""
        if path not in self.names:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self._step("remove")
        del self.names[path]
        self.pendingNames.append(("unlink", path, None))

    def link(self, source: str, destination: str) -> None:
        """Give C{source}'s file a second name; durable after L{fsyncDirectory}."""
        self._step("link")
        if source not in self.names:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", source)
        if destination in self.names:
            raise FileExistsError(errno.EEXIST, "File exists", destination)
        self.names[destination] = self.names[source]
        self.pendingNames.append(("link", destination, self.names[source]))

    def fsyncDirectory(self, path: str) -> None:
        """Make every name change durable."""
        if path != DIRECTORY:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self._step("fsyncDirectory")
        self.durableNames = dict(self.names)
        self.pendingNames = []

    # -- crashes ------------------------------------------------------------------------

    def read(self, path: str) -> bytes | None:
        """What reads of C{path} see now, or L{None} if it does not exist."""
        inode = self.names.get(path)
        return None if inode is None else bytes(inode.data)

    def processCrash(self) -> SimulatedFileSystem:
        """
        The machine as a new process finds it after the old one was killed:
        the page cache is intact, and what it holds is still not durable.
        """
        other = SimulatedFileSystem()
        copies: dict[int, Inode] = {}

        def copy(inode: Inode) -> Inode:
            if id(inode) not in copies:
                copies[id(inode)] = inode.copy()
            return copies[id(inode)]

        other.names = {path: copy(inode) for path, inode in self.names.items()}
        other.durableNames = {path: copy(inode) for path, inode in self.durableNames.items()}
        other.pendingNames = [
            (kind, a, b if not isinstance(b, Inode) else copy(b))
            for kind, a, b in self.pendingNames
        ]
        return other

    def powerLossStates(self) -> Iterator[SimulatedFileSystem]:
        """
        Every state the disk may be in after a power failure now, each as a
        new file system holding only durable data: name changes since the
        last directory fsync survive in order, up to any point (a journal
        keeps them in order); each file's pending writes survive as
        L{Inode.crashContents} says.
        """
        seen = set()
        for kept in range(len(self.pendingNames) + 1):
            names = dict(self.durableNames)
            for kind, a, b in self.pendingNames[:kept]:
                if kind == "link":
                    names[a] = b  # type: ignore[assignment]
                elif kind == "unlink":
                    names.pop(a, None)
                elif a in names:
                    names[b] = names.pop(a)  # type: ignore[index]
            paths = sorted(names)
            options = [sorted(names[path].crashContents(self.SECTOR)) for path in paths]
            for contents in itertools.product(*options):
                key = tuple(zip(paths, contents, strict=True))
                if key not in seen:
                    seen.add(key)
                    yield SimulatedFileSystem(dict(key))


def openManager(fileSystem: SimulatedFileSystem) -> LogManager:
    """A LogManager over file stores on C{fileSystem}, as a node has them."""
    return LogManager(
        FileLogStore(LOG, fileSystem=fileSystem),  # type: ignore[arg-type]
        FileStateStore(STATE, fileSystem=fileSystem),  # type: ignore[arg-type]
        KeyValueStore(),
        FileSnapshotStore(SNAPSHOT, fileSystem=fileSystem),  # type: ignore[arg-type]
    )


def recoverFrom(fileSystem: SimulatedFileSystem) -> tuple[HardState, list[Entry]]:
    """Start a node's storage on C{fileSystem} and return what it recovers."""
    manager = openManager(fileSystem)
    try:
        return manager.recover()
    finally:
        manager.logStore.close()


def afterReady(
    state: tuple[HardState, list[Entry]], ready: Ready
) -> tuple[HardState, list[Entry]]:
    """The term, vote and log once C{ready} is persisted on top of C{state}."""
    hardState, entries = state
    if ready.hardState is not None:
        hardState = ready.hardState
    if ready.truncateFrom is not None:
        entries = entries[: ready.truncateFrom - 1]
    return hardState, entries + list(ready.entries)


def mayRecoverAs(
    before: tuple[HardState, list[Entry]],
    ready: Ready | None,
    recovered: tuple[HardState, list[Entry]],
) -> bool:
    """
    Whether a node that crashed while persisting C{ready} (L{None}: while
    starting) on top of the acknowledged C{before} may recover as
    C{recovered}: the term and vote are the old or the new ones, and the log
    is the old one or a prefix of the new one that keeps everything of the
    old one that C{ready} did not cut; the log changes only once the term
    and vote have.
    """
    if ready is None:
        return recovered == before
    hardState, entries = recovered
    oldState, oldEntries = before
    newState, newEntries = afterReady(before, ready)
    kept = len(oldEntries) if ready.truncateFrom is None else ready.truncateFrom - 1
    logChanged = entries != oldEntries
    if logChanged and not (len(entries) >= kept and newEntries[: len(entries)] == entries):
        return False
    if logChanged:
        return hardState == newState
    return hardState in (oldState, newState)


#: Every kind of write: term and vote alone, appends of one and several
#: entries, a conflicting suffix replaced (truncate and append in one
#: Ready), a truncation alone, and appends after both.
SCRIPT = [
    Ready(hardState=HardState(1, "s1")),
    Ready(entries=[Entry(1, 1, "noop")]),
    Ready(entries=[Entry(2, 1, "set a 1"), Entry(3, 1, "set b two words")]),
    Ready(
        hardState=HardState(2, None),
        truncateFrom=2,
        entries=[Entry(2, 2, "set c 3"), Entry(3, 2, "delete a"), Entry(4, 2, "get c")],
    ),
    Ready(hardState=HardState(3, "s2"), truncateFrom=4),
    Ready(entries=[Entry(4, 3, "set ü ☃")]),
]


#: Log writes alone, from the very first: nothing else fsyncs the directory.
LOG_SCRIPT = [
    Ready(entries=[Entry(1, 1, "noop"), Entry(2, 1, "set a 1")]),
    Ready(truncateFrom=2, entries=[Entry(2, 2, "set b 2"), Entry(3, 2, "set c 3")]),
    Ready(entries=[Entry(4, 2, "delete b")]),
]


def runScript(
    fileSystem: SimulatedFileSystem, script: list[Ready]
) -> tuple[tuple[HardState, list[Entry]], Ready | None]:
    """
    Start a node's storage on C{fileSystem} and persist C{script} until the
    file system crashes; return the last acknowledged state and the Ready
    being persisted at the crash (L{None} if it came during startup).

    @raise AssertionError: if the file system never crashes.
    """
    acknowledged = (HardState(), [])
    ready = None
    try:
        manager = openManager(fileSystem)
        acknowledged = manager.recover()
        for ready in script:
            manager.persist(ready)
            acknowledged = afterReady(acknowledged, ready)
    except Crash:
        return acknowledged, ready
    raise AssertionError("no crash")


class SimulatedFileSystemTests(SynchronousTestCase):
    """
    Tests for the test double itself: a crash loses what was not fsynced.
    """

    def test_unsyncedWriteMayBeLost(self) -> None:
        """
        A write not yet fsynced may survive a power failure whole, in part,
        or not at all; once fsynced it survives whole.
        """
        fs = SimulatedFileSystem()
        fd = fs.open(LOG, os.O_RDWR | os.O_CREAT)
        fs.fsyncDirectory(DIRECTORY)
        fs.pwrite(fd, b"0123456789abcdef", 0)
        contents = {state.read(LOG) for state in fs.powerLossStates()}
        self.assertIn(b"", contents)
        self.assertIn(b"01234", contents)
        self.assertIn(b"01234567\x00\x00\x00\x00\x00\x00\x00\x00", contents)
        self.assertIn(b"0123456789abcdef", contents)
        fs.fdatasync(fd)
        self.assertEqual([s.read(LOG) for s in fs.powerLossStates()], [b"0123456789abcdef"])

    def test_unsyncedNameMayBeLost(self) -> None:
        """
        A file created or renamed is only sure to keep its name after its
        directory is fsynced.
        """
        fs = SimulatedFileSystem()
        fd = fs.open(STATE + ".tmp", os.O_WRONLY | os.O_CREAT)
        fs.pwrite(fd, b"x", 0)
        fs.fsync(fd)
        fs.replace(STATE + ".tmp", STATE)
        self.assertIn(None, {state.read(STATE) for state in fs.powerLossStates()})
        fs.fsyncDirectory(DIRECTORY)
        self.assertEqual([s.read(STATE) for s in fs.powerLossStates()], [b"x"])

    def test_crashAt(self) -> None:
        """
        With C{crashAt} set, the file system raises L{Crash} instead of
        making that call, and records the calls made before it.
        """
        fs = SimulatedFileSystem()
        fs.crashAt = 2
        fd = fs.open(LOG, os.O_RDWR | os.O_CREAT)
        fs.pwrite(fd, b"a", 0)
        self.assertRaises(Crash, fs.fdatasync, fd)
        self.assertEqual(fs.calls, ["open", "pwrite"])


class CrashAtEveryStepTests(SynchronousTestCase):
    """
    A power failure before each system call of every write path, and
    recovery from every state the disk may be left in.
    """

    def crashPoints(
        self, script: list[Ready], files: dict[str, bytes] | None = None
    ) -> Iterator[tuple[SimulatedFileSystem, tuple[HardState, list[Entry]], Ready | None]]:
        """
        Run C{script} once per system call it makes, crashing before that
        call; yield each crashed file system with the acknowledged state and
        the Ready in flight.
        """
        for step in itertools.count():
            fs = SimulatedFileSystem(files)
            fs.crashAt = step
            try:
                yield (fs, *runScript(fs, script))
            except AssertionError:
                # The script ran to its end: every call has been crashed before.
                self.assertEqual(len(fs.calls), step)
                self.assertTrue({"open", "pwrite", "fdatasync", "fsyncDirectory"} <= set(fs.calls))
                return

    def test_recoveryAfterEveryCrash(self) -> None:
        """
        Whatever step of whichever write a power failure interrupts, and
        whatever of the unsynced data the disk kept, the node starts, with
        everything it acknowledged: the log of the last completed
        L{LogManager.persist}, or a prefix of the one in flight that keeps
        what it did not cut; the term and vote are saved before the log
        changes (Reference: Figure 2, "updated on stable storage before
        responding to RPCs").
        """
        checked = 0
        for script in [SCRIPT, LOG_SCRIPT]:
            for fs, acknowledged, ready in self.crashPoints(script):
                for state in fs.powerLossStates():
                    recovered = recoverFrom(state)
                    self.assertTrue(
                        mayRecoverAs(acknowledged, ready, recovered),
                        f"after {fs.calls} recovered {recovered}, acknowledged {acknowledged}",
                    )
                    checked += 1
        self.assertGreater(checked, 300)

    def test_recoveryIsDurable(self) -> None:
        """
        What a node recovers after a process crash (the page cache intact,
        its unsynced data included) is made durable before the node acts on
        it: another crash, of the machine this time, right after recovery
        recovers exactly the same.
        """
        for script in [SCRIPT, LOG_SCRIPT]:
            for fs, acknowledged, ready in self.crashPoints(script):
                restarted = fs.processCrash()
                recovered = recoverFrom(restarted)
                self.assertTrue(mayRecoverAs(acknowledged, ready, recovered))
                for state in restarted.powerLossStates():
                    self.assertEqual(recoverFrom(state), recovered, f"after {fs.calls}")

    def test_crashDuringRecovery(self) -> None:
        """
        A crash at any step of a recovery that cuts a torn tail leaves a
        disk that recovers as well, to what was acknowledged.
        """
        checked = 0
        for fs, acknowledged, ready in self.crashPoints(SCRIPT[:3]):
            if ready is None or not ready.entries:
                continue
            for torn in fs.powerLossStates():
                log = torn.read(LOG) or b""
                if log.endswith(b"\n") and b"\x00" not in log:
                    continue  # nothing torn: recovery changes nothing
                for step in itertools.count():
                    attempt = torn.processCrash()
                    attempt.crashAt = step
                    try:
                        recoverFrom(attempt)
                    except Crash:
                        pass
                    else:
                        break
                    for state in [attempt.processCrash(), *attempt.powerLossStates()]:
                        self.assertTrue(mayRecoverAs(acknowledged, ready, recoverFrom(state)))
                        checked += 1
        self.assertGreater(checked, 100)

    def test_crashDuringLargeAppend(self) -> None:
        """
        An append larger than L{MAX_UNSYNCED_BYTES} is written and fsynced
        piece by piece; a crash at any step, tearing the piece in flight in
        any way, recovers to what was acknowledged.
        """
        self.patch(txraft.storage, "MAX_UNSYNCED_BYTES", 24)
        entries = [Entry(i, 1, f"set key{i} {i}") for i in range(1, 7)]
        entries.append(Entry(7, 1, "set long " + "v" * 30))
        script = [Ready(entries=entries), Ready(entries=[Entry(8, 2, "noop")])]
        pieces = 0
        for fs, acknowledged, ready in self.crashPoints(script):
            pieces = max(pieces, fs.calls.count("fdatasync"))
            for state in fs.powerLossStates():
                recovered = recoverFrom(state)
                self.assertTrue(mayRecoverAs(acknowledged, ready, recovered), recovered)
        self.assertGreater(pieces, 4)

    def test_crashWithOldFiles(self) -> None:
        """
        Starting from files a previous run left behind (a log whose last
        line is torn), every crash still recovers to what was acknowledged.
        """
        files = {
            LOG: b"1 1 noop\n2 1 set a 1\n3 1 set b",
            STATE: b'{"currentTerm": 1, "votedFor": "s1"}\n',
        }
        script = [
            Ready(hardState=HardState(2, "s1"), entries=[Entry(3, 2, "noop")]),
            Ready(truncateFrom=2, entries=[Entry(2, 2, "set z 9")]),
        ]
        old = (HardState(1, "s1"), [Entry(1, 1, "noop"), Entry(2, 1, "set a 1")])
        for fs, acknowledged, ready in self.crashPoints(script, files):
            for state in fs.powerLossStates():
                recovered = recoverFrom(state)
                if ready is None:
                    self.assertEqual(recovered, old)
                else:
                    self.assertTrue(mayRecoverAs(acknowledged, ready, recovered))

    def test_stateSaveIsAtomic(self) -> None:
        """
        A crash at any step of saving the term and vote leaves the old or the
        new state, never a broken file or none (Figure 2: currentTerm and
        votedFor are persistent).
        """
        old, new = HardState(4, "s2"), HardState(5, None)
        for step in itertools.count():
            fs = SimulatedFileSystem({STATE: b'{"currentTerm": 4, "votedFor": "s2"}\n'})
            fs.crashAt = step
            try:
                FileStateStore(STATE, fileSystem=fs).save(new)  # type: ignore[arg-type]
            except Crash:
                for state in fs.powerLossStates():
                    loaded = FileStateStore(STATE, fileSystem=state).load()  # type: ignore[arg-type]
                    self.assertIn(loaded, (old, new))
                continue
            self.assertEqual(fs.calls, ["open", "pwrite", "fsync", "replace", "fsyncDirectory"])
            break

    def test_stateLoadIsDurable(self) -> None:
        """
        A term and vote that a killed process renamed into place but never
        made durable are made durable by the next load, before the node acts
        on them.
        """
        for step in range(5):
            fs = SimulatedFileSystem({STATE: b'{"currentTerm": 4, "votedFor": "s2"}\n'})
            fs.crashAt = step
            store = FileStateStore(STATE, fileSystem=fs)  # type: ignore[arg-type]
            self.assertRaises(Crash, store.save, HardState(5, None))
            restarted = fs.processCrash()
            loaded = FileStateStore(STATE, fileSystem=restarted).load()  # type: ignore[arg-type]
            for state in restarted.powerLossStates():
                again = FileStateStore(STATE, fileSystem=state).load()  # type: ignore[arg-type]
                self.assertEqual(again, loaded)

    def test_memoryStoresCrashAtEveryStep(self) -> None:
        """
        The in-memory stores the simulations use keep the same promise: a
        crash before any store call of L{LogManager.persist} recovers to
        what L{mayRecoverAs} allows.
        """
        for calls in itertools.count():
            budget = Budget(calls)
            logStore, stateStore = CrashingLogStore(budget), CrashingStateStore(budget)
            manager = LogManager(logStore, stateStore, KeyValueStore())
            acknowledged: tuple[HardState, list[Entry]] = (HardState(), [])
            try:
                for ready in SCRIPT:
                    manager.persist(ready)
                    acknowledged = afterReady(acknowledged, ready)
            except Crash:
                logStore.crash()
                recovered = (stateStore.load(), logStore.load())
                self.assertTrue(mayRecoverAs(acknowledged, ready, recovered), recovered)
                continue
            break
        self.assertGreater(calls, 10)


class FailingCall:
    """
    A L{SimulatedFileSystem.fault} that fails the call that would become
    C{fileSystem.calls[index]} with C{EIO}, and every later attempt at it,
    until C{failing} is set to false.
    """

    def __init__(self, fileSystem: SimulatedFileSystem, index: int) -> None:
        self.fileSystem = fileSystem
        self.index = index
        self.failing = True

    def __call__(self, name: str) -> None:
        """Fail the chosen call."""
        if self.failing and len(self.fileSystem.calls) == self.index:
            raise OSError(errno.EIO, os.strerror(errno.EIO))


class RecoverAfterFailureTests(SynchronousTestCase):
    """
    Tests for L{LogManager.recoverAfterFailure} over file stores whose
    system calls fail.
    """

    def test_everyFailedCallThenRecovery(self) -> None:
        """
        Whichever system call of whichever write fails (a failed fsync
        losing the pending writes for good, as on Linux), once the disk
        works again L{LogManager.recoverAfterFailure} returns a state that
        the acknowledged one may crash into, and has made it durable: a
        power failure right after it recovers exactly that.
        """
        for step in itertools.count():
            fs = SimulatedFileSystem()
            manager = openManager(fs)
            manager.recover()
            fault = FailingCall(fs, len(fs.calls) + step)
            fs.fault = fault
            acknowledged: tuple[HardState, list[Entry]] = (HardState(), [])
            try:
                for ready in SCRIPT:
                    manager.persist(ready)
                    acknowledged = afterReady(acknowledged, ready)
            except OSError:
                pass
            else:
                break
            self.assertRaises(OSError, manager.recoverAfterFailure)
            fault.failing = False
            recovered = manager.recoverAfterFailure()
            self.assertTrue(mayRecoverAs(acknowledged, ready, recovered), recovered)
            for state in fs.powerLossStates():
                self.assertEqual(recoverFrom(state), recovered)
        self.assertGreater(step, 20)


# -- snapshots and compaction ---------------------------------------------------------

#: What a node's storage holds, as L{LogManager.recover} gives it back: the
#: term and vote, the snapshot (if any) and the log entries after it.
Stored = tuple[HardState, Snapshot | None, list[Entry]]

#: A node that never wrote anything.
EMPTY: Stored = (HardState(), None, [])


def kvSnapshot(index: int, term: int, data: dict[str, str]) -> Snapshot:
    """A snapshot of the key-value map C{data} as of entry C{index}, as the store writes it."""
    return Snapshot(index, term, b"".join(frozenJSON(ShardedMap(data).freeze())))


def recoverStored(fileSystem: SimulatedFileSystem) -> Stored:
    """
    Start a node's storage on C{fileSystem} and return what it recovers,
    after checking that the state machine was loaded from the snapshot.
    """
    manager = openManager(fileSystem)
    try:
        hardState, entries = manager.recover()
        snapshot = manager.snapshot
        loaded = (manager.lastApplied, manager.stateMachine.data)
        expected = (snapshot.index, json.loads(snapshot.data)) if snapshot else (0, {})
        if loaded != expected:
            raise AssertionError(f"state machine {loaded} is not the snapshot's {expected}")
        return hardState, snapshot, entries
    finally:
        manager.logStore.close()


def after(snapshot: Snapshot | None, entries: list[Entry]) -> list[Entry]:
    """The entries that C{snapshot} does not cover."""
    return [e for e in entries if e.index > (snapshot.index if snapshot else 0)]


class Step:
    """One write of a script, what it leaves, and what a crash during it may leave."""

    def run(self, manager: LogManager) -> None:
        """Do it, as the node does."""
        raise NotImplementedError

    def after(self, before: Stored) -> Stored:
        """What the storage holds once it is done."""
        raise NotImplementedError

    def allows(self, before: Stored, recovered: Stored) -> bool:
        """
        Whether a crash during it may recover as C{recovered}: by default
        the state before or the state after, nothing in between.
        """
        return recovered in (before, self.after(before))


class Persist(Step):
    """
    L{LogManager.persist} of a Ready, then what the service does after it:
    load a snapshot it carries into the state machine, apply its entries if
    C{apply}.
    """

    def __init__(self, ready: Ready, apply: bool = False) -> None:
        self.ready = ready
        self.apply = apply

    def __repr__(self) -> str:
        return f"Persist({self.ready!r})"

    def run(self, manager: LogManager) -> None:
        """Persist, install, apply."""
        manager.persist(self.ready)
        if self.ready.snapshot is not None:
            manager.installSnapshot(self.ready.snapshot)
        if self.apply:
            manager.apply(self.ready.entries)

    def cut(self, entries: list[Entry]) -> list[Entry]:
        """C{entries} without those that C{truncateFrom} removes."""
        truncateFrom = self.ready.truncateFrom
        return entries if truncateFrom is None else [e for e in entries if e.index < truncateFrom]

    def after(self, before: Stored) -> Stored:
        """Term and vote replaced; the log cut, compacted, then appended to."""
        hardState, snapshot, entries = before
        snapshot = self.ready.snapshot or snapshot
        entries = after(snapshot, self.cut(entries)) + list(self.ready.entries)
        return self.ready.hardState or hardState, snapshot, entries

    def allows(self, before: Stored, recovered: Stored) -> bool:
        """
        The log changes only once the term and vote have.  Without a
        snapshot, as L{mayRecoverAs}.  With one: the old snapshot with the
        old log or the cut one, or the new snapshot with what it keeps of
        the cut log and any prefix of the appended entries (Reference:
        dissertation Figure 5.3, InstallSnapshot receiver rules 5-7).
        """
        oldState, oldSnapshot, oldEntries = before
        newState, newSnapshot, newEntries = self.after(before)
        hardState, snapshot, entries = recovered
        kept = newEntries[: len(newEntries) - len(self.ready.entries)]
        if self.ready.snapshot is not None and snapshot == newSnapshot:
            logFine = len(entries) >= len(kept) and newEntries[: len(entries)] == entries
        elif snapshot == oldSnapshot and self.ready.snapshot is not None:
            logFine = entries in (oldEntries, self.cut(oldEntries))
        elif snapshot == oldSnapshot:
            prefix = len(entries) >= len(kept) and newEntries[: len(entries)] == entries
            logFine = entries == oldEntries or prefix
        else:
            logFine = False
        if (snapshot, entries) != (oldSnapshot, oldEntries):
            return logFine and hardState == newState
        return logFine and hardState in (oldState, newState)


class SaveSnapshot(Step):
    """C{ISnapshotStore.save} alone: the store's own atomic replacement."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return f"SaveSnapshot({self.snapshot!r})"

    def run(self, manager: LogManager) -> None:
        """Save it."""
        manager.snapshotStore.save(self.snapshot)

    def after(self, before: Stored) -> Stored:
        """The new snapshot, and the log after it (recovery compacts the rest)."""
        hardState, _, entries = before
        return hardState, self.snapshot, after(self.snapshot, entries)


class Compact(Step):
    """C{FileLogStore.compact}, up to where the saved snapshot ends."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"Compact({self.index})"

    def run(self, manager: LogManager) -> None:
        """Compact the log file."""
        manager.logStore.compact(self.index)

    def after(self, before: Stored) -> Stored:
        """
        The same: what it drops, the snapshot covers, and recovery drops it
        too.  So a crash at any step of it recovers exactly the same.
        """
        return before


class TakeSnapshot(Step):
    """
    The service taking a snapshot: L{LogManager.captureSnapshot}, the
    background part (serialize and stage), L{LogManager.commitSnapshot}.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return f"TakeSnapshot({self.snapshot!r})"

    def run(self, manager: LogManager) -> None:
        """Capture, stage, commit (which compacts)."""
        snapshot, staged = manager.captureSnapshot()()
        if snapshot != self.snapshot:
            raise AssertionError(f"captured {snapshot.data!r}, scripted {self.snapshot.data!r}")
        manager.commitSnapshot(snapshot, staged)

    def after(self, before: Stored) -> Stored:
        """The new snapshot and the log after it."""
        hardState, _, entries = before
        return hardState, self.snapshot, after(self.snapshot, entries)


def sets(first: int, last: int, term: int) -> list[Entry]:
    """Entries C{set kI I} for I from C{first} to C{last}."""
    return [Entry(i, term, f"set k{i} {i}") for i in range(first, last + 1)]


def setsMap(last: int) -> dict[str, str]:
    """The map that L{sets} from 1 to C{last} leave."""
    return {f"k{i}": str(i) for i in range(1, last + 1)}


#: (a) The log store compacting in the middle of its log, then all of it,
#: with appends and a truncation after each.
COMPACT_SCRIPT: list[Step] = [
    Persist(Ready(hardState=HardState(1, "s1"), entries=sets(1, 6, 1))),
    SaveSnapshot(kvSnapshot(4, 1, setsMap(4))),
    Compact(4),
    Persist(Ready(entries=sets(7, 7, 1))),
    SaveSnapshot(kvSnapshot(7, 1, setsMap(7))),
    Compact(7),
    Persist(Ready(entries=sets(8, 9, 1))),
    Persist(Ready(hardState=HardState(2, "s2"), truncateFrom=9, entries=[Entry(9, 2, "noop")])),
]

#: (b) A follower's Ready path installing snapshots from its leader: one
#: whose last entry its log holds (the suffix is kept), one that conflicts
#: with its log (C{truncateFrom}, then everything goes), one beyond its log
#: (everything goes), with appends after each.
INSTALL_SCRIPT: list[Step] = [
    Persist(Ready(hardState=HardState(1, "s2"), entries=sets(1, 5, 1))),
    Persist(Ready(snapshot=kvSnapshot(3, 1, setsMap(3)))),
    Persist(Ready(entries=sets(6, 7, 1))),
    Persist(
        Ready(
            hardState=HardState(2, None),
            truncateFrom=7,
            snapshot=kvSnapshot(6, 2, {"k6": "from the new leader"}),
        )
    ),
    Persist(Ready(entries=[Entry(7, 2, "set k7 7")])),
    Persist(Ready(snapshot=kvSnapshot(10, 2, {"k10": "far ahead"}))),
    Persist(Ready(hardState=HardState(3, "s3"), entries=[Entry(11, 3, "noop")])),
]

#: (c) A node snapshotting its own state machine: once with every entry of
#: its log applied (the whole log is compacted), once with an entry after
#: the snapshot (it is kept).
CAPTURE_SCRIPT: list[Step] = [
    Persist(Ready(hardState=HardState(1, "s1"), entries=sets(1, 3, 1)), apply=True),
    TakeSnapshot(kvSnapshot(3, 1, setsMap(3))),
    Persist(Ready(entries=[Entry(4, 1, "set k4 4"), Entry(5, 1, "delete k1")]), apply=True),
    Persist(Ready(entries=[Entry(6, 1, "set k6 6")])),
    TakeSnapshot(kvSnapshot(5, 1, {"k2": "2", "k3": "3", "k4": "4"})),
    Persist(Ready(entries=[Entry(7, 1, "set k7 7")])),
]

SNAPSHOT_SCRIPTS = {
    "compact": COMPACT_SCRIPT,
    "install": INSTALL_SCRIPT,
    "capture": CAPTURE_SCRIPT,
}


class NoCrashError(Exception):
    """A script ran to its end without the file system crashing."""


def runSteps(
    fileSystem: SimulatedFileSystem, steps: list[Step], initial: Stored = EMPTY
) -> tuple[Stored, Step | None]:
    """
    Start a node's storage on C{fileSystem} (holding C{initial}) and run
    C{steps} until the file system crashes; return the last acknowledged
    state and the step in flight (L{None}: the crash came while starting).

    @raise NoCrashError: if it never crashes.
    """
    acknowledged, step = initial, None
    try:
        manager = openManager(fileSystem)
        manager.recover()
        for step in steps:
            step.run(manager)
            acknowledged = step.after(acknowledged)
    except Crash:
        return acknowledged, step
    raise NoCrashError()


def mayRecover(acknowledged: Stored, step: Step | None, recovered: Stored) -> bool:
    """Whether a crash during C{step} (L{None}: while starting) may recover as C{recovered}."""
    return recovered == acknowledged if step is None else step.allows(acknowledged, recovered)


class SnapshotCrashTests(SynchronousTestCase):
    """
    A power failure before each system call of the snapshot and compaction
    write paths, and recovery (snapshot, then the log after it) from every
    state the disk may be left in.
    """

    def crashPoints(
        self, steps: list[Step], files: dict[str, bytes] | None = None, initial: Stored = EMPTY
    ) -> Iterator[tuple[SimulatedFileSystem, Stored, Step | None]]:
        """
        Run C{steps} once per system call they make, crashing before that
        call; yield each crashed file system with the acknowledged state
        and the step in flight.
        """
        for number in itertools.count():
            fs = SimulatedFileSystem(files)
            fs.crashAt = number
            try:
                yield (fs, *runSteps(fs, steps, initial))
            except NoCrashError:
                self.assertEqual(len(fs.calls), number)
                return

    def checkEveryCrash(
        self, steps: list[Step], files: dict[str, bytes] | None = None, initial: Stored = EMPTY
    ) -> set[str]:
        """
        For a crash before each call of C{steps}: every power-loss state
        recovers as L{mayRecover} allows; after a process crash (the page
        cache intact), recovery is allowed too and durable (a power failure
        right after it recovers the same); and a crash at any step of that
        recovery recovers as allowed as well.  Return the names of the
        calls crashed before.
        """
        calls: set[str] = set()
        for fs, acknowledged, step in self.crashPoints(steps, files, initial):
            calls.update(fs.calls)
            where = f"crash after {fs.calls[-3:]} during {step!r}"
            for state in fs.powerLossStates():
                recovered = recoverStored(state)
                self.assertTrue(mayRecover(acknowledged, step, recovered), f"{where}: {recovered}")
            restarted = fs.processCrash()
            recovered = recoverStored(restarted)
            self.assertTrue(mayRecover(acknowledged, step, recovered), f"{where}: {recovered}")
            for state in restarted.powerLossStates():
                self.assertEqual(recoverStored(state), recovered, where)
            for number in itertools.count():
                attempt = fs.processCrash()
                attempt.crashAt = number
                try:
                    recoverStored(attempt)
                except Crash:
                    pass
                else:
                    break
                for state in [attempt.processCrash(), *attempt.powerLossStates()]:
                    again = recoverStored(state)
                    self.assertTrue(mayRecover(acknowledged, step, again), f"{where}: {again}")
        return calls

    def test_compaction(self) -> None:
        """
        C{FileLogStore.compact} in the middle of the log and of all of it,
        with appends and a truncation after each: whatever step a power
        failure interrupts, the node recovers the snapshot and every
        acknowledged entry after it, nothing missing and no gap; the
        temporary C{.compact} file never wins over the log.  Reference:
        dissertation section 5.1 (recovery = snapshot + log after it).
        """
        calls = self.checkEveryCrash(COMPACT_SCRIPT)
        self.assertTrue({"open", "pwrite", "fdatasync", "replace", "fsyncDirectory"} <= calls)

    def test_followerInstallsSnapshot(self) -> None:
        """
        A follower persisting a snapshot from its leader (the log suffix
        kept; or a conflicting log cut with C{truncateFrom} and discarded;
        or a log the snapshot is beyond), crashed at every step: it
        recovers the old snapshot with its old (or cut) log, or the new
        one with what it keeps, never a mix, and the term before any of it.
        Reference: dissertation Figure 5.3, InstallSnapshot receiver rules.
        """
        calls = self.checkEveryCrash(INSTALL_SCRIPT)
        self.assertTrue({"ftruncate", "fsync", "replace", "fsyncDirectory"} <= calls)

    def test_takeSnapshot(self) -> None:
        """
        A node taking its own snapshot (capture, stage, commit, compact),
        crashed at every step: it recovers the old snapshot with the whole
        log after it, or the new one with the log after that; the staged
        file never wins.  Reference: dissertation section 5.1.
        """
        calls = self.checkEveryCrash(CAPTURE_SCRIPT)
        self.assertIn("replace", calls)

    def test_crashWithOldFiles(self) -> None:
        """
        Starting from files a crash left between saving a snapshot and
        compacting the log (the log still holds what the snapshot covers,
        its last line torn, and a half-written C{.compact}), every crash
        still recovers to what was acknowledged.
        """
        snapshot = kvSnapshot(2, 1, setsMap(2))
        files = {
            LOG: b"1 1 set k1 1\n2 1 set k2 2\n3 1 set k3 3\n4 1 set k4",
            LOG + ".compact": b"3 1 set k3 3\n",
            SNAPSHOT: encodeSnapshot(snapshot),
            STATE: b'{"currentTerm": 1, "votedFor": "s1"}\n',
        }
        initial = (HardState(1, "s1"), snapshot, sets(3, 3, 1))
        steps: list[Step] = [
            Persist(Ready(entries=[Entry(4, 1, "set k4 four")]), apply=False),
            SaveSnapshot(kvSnapshot(4, 1, {"k4": "four"})),
            Compact(4),
        ]
        self.checkEveryCrash(steps, files, initial)

    def test_snapshotSaveIsAtomic(self) -> None:
        """
        A crash at any step of saving a snapshot leaves the old one or the
        new one, whole, never a torn or missing one: it is written to a
        temporary file, fsynced, renamed into place (the old one keeping a
        second name, removed later) and the directory fsynced.
        """
        old, new = kvSnapshot(5, 1, {"a": "1"}), kvSnapshot(9, 2, {"a": "2", "b": "x" * 40})
        for number in itertools.count():
            fs = SimulatedFileSystem({SNAPSHOT: encodeSnapshot(old)})
            fs.crashAt = number
            store = FileSnapshotStore(SNAPSHOT, fileSystem=fs)  # type: ignore[arg-type]
            try:
                store.save(new)
            except Crash:
                for state in fs.powerLossStates():
                    loaded = FileSnapshotStore(SNAPSHOT, fileSystem=state).load()  # type: ignore[arg-type]
                    self.assertIn(loaded, (old, new))
                continue
            self.assertEqual(
                fs.calls,
                ["open", "pwrite", "pwrite", "fsync", "link", "replace", "fsyncDirectory"],
            )
            break

    def test_snapshotLoadIsDurable(self) -> None:
        """
        A snapshot that a killed process renamed into place but did not
        make durable is made durable by loading it, before the node acts on
        it (and compacts its log): a power failure right after the load
        finds the same snapshot.
        """
        old, new = kvSnapshot(5, 1, {"a": "1"}), kvSnapshot(9, 2, {"a": "2"})
        for number in range(7):
            fs = SimulatedFileSystem({SNAPSHOT: encodeSnapshot(old)})
            fs.crashAt = number
            store = FileSnapshotStore(SNAPSHOT, fileSystem=fs)  # type: ignore[arg-type]
            self.assertRaises(Crash, store.save, new)
            restarted = fs.processCrash()
            loaded = FileSnapshotStore(SNAPSHOT, fileSystem=restarted).load()  # type: ignore[arg-type]
            for state in restarted.powerLossStates():
                again = FileSnapshotStore(SNAPSHOT, fileSystem=state).load()  # type: ignore[arg-type]
                self.assertEqual(again, loaded, f"crash after {fs.calls}")

    def test_damagedSnapshotRefused(self) -> None:
        """
        A snapshot file that is torn (any prefix of it), zeroed in any
        sector, or whose data fails its checksum makes the node refuse to
        start with a message naming the file, and leaves the log alone
        rather than compact it on the strength of a snapshot it cannot
        trust.
        """
        good = encodeSnapshot(kvSnapshot(2, 1, setsMap(2)))
        damaged = [good[:cut] for cut in range(len(good))]
        sector = SimulatedFileSystem.SECTOR
        damaged += [
            good[:i] + b"\x00" * sector + good[i + sector :] for i in range(0, len(good), sector)
        ]
        damaged += [good[:i] + bytes([good[i] ^ 1]) + good[i + 1 :] for i in range(100, len(good))]
        logData = b"1 1 set k1 1\n2 1 set k2 2\n3 1 set k3 3\n"
        for contents in damaged:
            fs = SimulatedFileSystem({LOG: logData, SNAPSHOT: contents})
            error = self.assertRaises(StorageError, recoverStored, fs)
            self.assertIn(SNAPSHOT, str(error))
            self.assertIn("refusing to start", str(error))
            self.assertEqual(fs.read(LOG), logData)
            self.assertEqual(fs.read(SNAPSHOT), contents)

    def test_leftoversNeverWin(self) -> None:
        """
        Temporary files a crash left (C{NAME.log.compact}, C{NAME.snapshot.tmp},
        C{NAME.snapshot.staged}, C{NAME.state.tmp}), even well-formed and
        newer-looking ones, never take the place of the real files, with or
        without a real snapshot; the first three are removed for good.
        """
        snapshot = kvSnapshot(3, 1, setsMap(3))
        real = {
            LOG: b"4 1 set k4 4\n5 1 set k5 5\n",
            SNAPSHOT: encodeSnapshot(snapshot),
            STATE: b'{"currentTerm": 1, "votedFor": "s1"}\n',
        }
        leftovers = {
            LOG + ".compact": b"5 1 set k5 5\n6 2 set k6 6\n",
            SNAPSHOT + ".tmp": encodeSnapshot(kvSnapshot(6, 2, {"k": "tmp"})),
            SNAPSHOT + ".staged": encodeSnapshot(kvSnapshot(5, 1, {"k": "staged"})),
            STATE + ".tmp": b'{"currentTerm": 7, "votedFor": "s3"}\n',
        }
        withSnapshot = (HardState(1, "s1"), snapshot, sets(4, 5, 1))
        withoutSnapshot = (HardState(1, "s1"), None, sets(1, 2, 1))
        cases = [
            (real, withSnapshot),
            ({LOG: b"1 1 set k1 1\n2 1 set k2 2\n", STATE: real[STATE]}, withoutSnapshot),
        ]
        for files, expected in cases:
            fs = SimulatedFileSystem({**files, **leftovers})
            self.assertEqual(recoverStored(fs), expected)
            for state in fs.powerLossStates():
                self.assertEqual(sorted(state.names), sorted([*files, STATE + ".tmp"]))
                self.assertEqual(recoverStored(state), expected)


class FailingName:
    """
    A L{SimulatedFileSystem.fault} that fails every call named C{name} with
    C{EIO} while C{failing} is true.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.failing = True

    def __call__(self, name: str) -> None:
        """Fail the chosen call."""
        if self.failing and name == self.name:
            raise OSError(errno.EIO, os.strerror(errno.EIO))


class SnapshotFailureTests(SynchronousTestCase):
    """
    The snapshot and compaction write paths over a disk whose system calls
    fail: once the disk works again the node recovers a state it may, and
    what it writes next is durable.
    """

    def test_everyFailedCallThenRecovery(self) -> None:
        """
        Whichever system call of the compaction, install and snapshot
        scripts fails with C{EIO}, L{LogManager.recoverAfterFailure} fails
        while the disk does, then returns a state the step in flight may
        leave, made durable; an entry appended after it survives a power
        failure with everything before it.
        """
        for name, steps in SNAPSHOT_SCRIPTS.items():
            for number in itertools.count():
                fs = SimulatedFileSystem()
                manager = openManager(fs)
                manager.recover()
                fault = FailingCall(fs, len(fs.calls) + number)
                fs.fault = fault
                acknowledged, step = EMPTY, None
                try:
                    for step in steps:
                        step.run(manager)
                        acknowledged = step.after(acknowledged)
                except OSError:
                    pass
                else:
                    break
                where = f"{name}: {step!r} failed after {fs.calls[-3:]}"
                self.assertRaises(OSError, manager.recoverAfterFailure)
                fault.failing = False
                hardState, entries = manager.recoverAfterFailure()
                recovered = (hardState, manager.snapshot, entries)
                self.assertTrue(mayRecover(acknowledged, step, recovered), f"{where}: {recovered}")
                lastIndex = manager.logStore.lastIndex  # type: ignore[attr-defined]
                lastTerm = entries[-1].term if entries else 1
                nextEntry = Entry(lastIndex + 1, max(lastTerm, hardState.currentTerm), "noop")
                more = Persist(Ready(entries=[nextEntry]))
                more.run(manager)
                for state in fs.powerLossStates():
                    self.assertEqual(recoverStored(state), more.after(recovered), where)
            self.assertGreater(number, 20)

    def test_loadAfterFailedCompactionIsDurable(self) -> None:
        """
        A compaction whose directory fsync fails after the rename leaves
        the new file's name not durable: loading the log again makes it
        durable, so an entry appended after the load is not lost with the
        rename if the power fails.
        """
        fs = SimulatedFileSystem()
        store = FileLogStore(LOG, fileSystem=fs)  # type: ignore[arg-type]
        store.load()
        store.append(sets(1, 4, 1))
        store.sync()
        fault = FailingName("fsyncDirectory")
        fs.fault = fault
        self.assertRaises(OSError, store.compact, 2)
        fault.failing = False
        self.assertEqual(store.load(2), sets(3, 4, 1))
        store.append(sets(5, 5, 1))
        store.sync()
        for state in fs.powerLossStates():
            restarted = FileLogStore(LOG, fileSystem=state)  # type: ignore[arg-type]
            self.assertEqual(restarted.load(2), sets(3, 5, 1))


class Budget:
    """A number of store calls, after which the next one crashes."""

    def __init__(self, calls: int) -> None:
        self.left = calls

    def spend(self, name: str) -> None:
        """Count one call, or raise L{Crash} if none is left."""
        if self.left == 0:
            raise Crash(name)
        self.left -= 1


class CrashingLogStore(MemoryLogStore):
    """A L{MemoryLogStore} whose writes spend a shared L{Budget}."""

    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self.budget = budget

    def truncateFrom(self, index: int) -> None:
        """Spend, then truncate."""
        self.budget.spend("truncateFrom")
        super().truncateFrom(index)

    def append(self, entries: list[Entry]) -> None:
        """Spend, then append."""
        self.budget.spend("append")
        super().append(entries)

    def sync(self) -> None:
        """Spend, then sync."""
        self.budget.spend("sync")
        super().sync()


class CrashingStateStore(MemoryStateStore):
    """A L{MemoryStateStore} whose saves spend a shared L{Budget}."""

    def __init__(self, budget: Budget) -> None:
        super().__init__()
        self.budget = budget

    def save(self, state: HardState) -> None:
        """Spend, then save."""
        self.budget.spend("save")
        super().save(state)


class LoggedEvents:
    """Collect the log events of a test as strings."""

    def __init__(self, testCase: SynchronousTestCase) -> None:
        self.events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(self.events.append)
        testCase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def texts(self) -> list[str]:
        """Each event's formatted text."""
        return [formatEvent(event) for event in self.events]


class DiskFailureServiceTests(SynchronousTestCase):
    """
    A node whose disk fails: it stops acknowledging and stops taking part
    in Raft, keeps answering C{status} and redirects, and rejoins from what
    its disk durably holds once the disk works again.
    """

    def setUp(self) -> None:
        """
        Node C{s1} of a three-node cluster over recording in-memory stores
        on a fake reactor; the tests play C{s2} and C{s3}.
        """
        self.reactor = MemoryReactorClock()
        self.events: list[tuple[str, object]] = []
        self.logStore = RecordingLogStore(self.events)
        self.stateStore = RecordingStateStore(self.events)
        self.logged = LoggedEvents(self)
        self.service = buildService(
            makeConfig(), "s1", self.reactor, logStore=self.logStore, stateStore=self.stateStore
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.sent: list[tuple[str, object]] = []
        for name, link in self.service._links.items():
            link.send = lambda message, name=name: self.sent.append((name, message))

    def follow(self, entries: int = 2) -> None:
        """
        Make C{s1} a follower of C{s2} in term 1 holding C{entries}
        committed entries.
        """
        log = tuple(Entry(i, 1, "noop" if i == 1 else f"set k{i} {i}") for i in range(1, 4))
        reply = self.service.node.peerRequest("s2", AppendEntries(1, 0, 0, log[:entries], entries))
        self.assertEqual(reply, AppendEntriesResponse(1, True, matchIndex=entries))

    def fail(self) -> None:
        """Make every write of both stores fail."""
        self.logStore.failWrites = self.stateStore.failWrites = True

    def heal(self) -> None:
        """Let writes succeed again."""
        self.logStore.failWrites = self.stateStore.failWrites = False

    def test_failedAppendNotAcknowledgedNodeKeepsRunning(self) -> None:
        """
        A follower whose log write fails does not acknowledge the entries
        (Figure 2), and does not stop: its reactor runs on and C{status}
        reports the error and no role it cannot hold.
        """
        self.follow()
        self.fail()
        reply = self.service.node.peerRequest(
            "s2", AppendEntries(1, 2, 1, (Entry(3, 1, "set k3 3"),), 2)
        )
        self.assertIsNone(reply)
        self.assertFalse(self.reactor.hasStopped)
        status = self.service.node.status()
        self.assertEqual(status["role"], FOLLOWER)
        self.assertIn("No space left on device", status["diskError"])
        self.assertTrue(
            any("cannot persist its Raft state" in text for text in self.logged.texts())
        )

    def test_silentToPeers(self) -> None:
        """
        While its disk fails, a node answers no peer request, neither votes
        nor acknowledges, and sends nothing, however long it waits: what it
        holds in memory is ahead of what it holds on disk.
        """
        self.follow()
        self.fail()
        self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (Entry(3, 1, "x"),), 2))
        self.sent.clear()
        self.assertIsNone(self.service.node.peerRequest("s3", RequestVote(5, 9, 4)))
        self.assertIsNone(self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (), 2)))
        for _ in range(200):
            self.reactor.advance(TICK_SECONDS)
        self.assertEqual(self.sent, [])
        self.assertEqual(self.service.node.core.currentTerm, 1)

    def test_clientsAnswered(self) -> None:
        """
        While its disk fails, a follower still answers C{status} and
        redirects to the leader it last knew; a leader whose disk fails
        answers waiting and new commands with L{DISK_FAILED}.
        """
        self.follow()
        self.fail()
        self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (Entry(3, 1, "x"),), 2))
        self.assertTrue(clientRequest(self.service.node, None, "status").startswith("OK {"))
        self.assertEqual(
            clientRequest(self.service.node, None, "get a"), "REDIRECT s2 127.0.0.1 10001"
        )
        self.assertEqual(
            clientRequest(self.service.node, None, "bogus"), "ERROR unknown command 'bogus'"
        )

    def test_leaderDiskFails(self) -> None:
        """
        A leader whose append fails answers the waiting client
        L{DISK_FAILED}, and new commands too, and calls itself a follower
        without a leader in C{status}.
        """
        service = buildService(
            makeConfig(["s1"], [10000]), "s1", self.reactor, logStore=self.logStore
        )
        service.startService()
        self.addCleanup(service.stopService)
        advanceUntil(self.reactor, lambda: service.node.core.role == LEADER)
        self.reactor.advance(0)
        self.logStore.failWrites = True
        waiting = clientRequest(service.node, None, "set a 1")
        self.reactor.advance(0)
        self.assertEqual(self.successResultOf(waiting), DISK_FAILED)
        self.assertEqual(clientRequest(service.node, None, "get a"), DISK_FAILED)
        status = service.node.status()
        self.assertEqual((status["role"], status["leader"]), (FOLLOWER, None))

    def test_rejoinFromDisk(self) -> None:
        """
        Once the disk takes writes again, the node rebuilds its state from
        what is durable (not from its memory, which held an entry the disk
        never got), rejoins as a follower, and acknowledges the leader's
        retransmission; the state machine keeps what it applied, and
        nothing is applied twice.
        """
        self.follow(entries=2)
        self.assertEqual(self.service.logManager.stateMachine.data, {"k2": "2"})
        self.fail()
        self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (Entry(3, 1, "set k3 3"),), 2))
        self.assertEqual(self.service.node.core.log.lastIndex, 3)
        self.reactor.advance(DISK_RETRY_SECONDS)
        self.assertIn("diskError", self.service.node.status())
        self.heal()
        self.reactor.advance(DISK_RETRY_SECONDS)
        self.assertNotIn("diskError", self.service.node.status())
        core = self.service.node.core
        self.assertEqual((core.role, core.currentTerm, core.log.lastIndex), (FOLLOWER, 1, 2))
        reply = self.service.node.peerRequest(
            "s2", AppendEntries(1, 2, 1, (Entry(3, 1, "set k3 3"),), 3)
        )
        self.assertEqual(reply, AppendEntriesResponse(1, True, matchIndex=3))
        self.assertEqual(self.logStore.durable[-1], Entry(3, 1, "set k3 3"))
        self.assertEqual(self.service.logManager.stateMachine.data, {"k2": "2", "k3": "3"})
        self.assertTrue(any("can write to its disk again" in t for t in self.logged.texts()))

    def test_failedVoteForgotten(self) -> None:
        """
        A vote that could not be saved was never granted: once the disk
        works again the node is back at its durable term, and may vote in
        the new term once (Reference: section 5.2).
        """
        self.stateStore.failWrites = True
        self.assertIsNone(self.service.node.peerRequest("s2", RequestVote(4, 0, 0)))
        self.stateStore.failWrites = False
        self.reactor.advance(DISK_RETRY_SECONDS)
        self.assertEqual(
            (self.service.node.core.currentTerm, self.service.node.core.votedFor), (0, None)
        )
        reply = self.service.node.peerRequest("s3", RequestVote(4, 0, 0))
        self.assertEqual(reply, RequestVoteResponse(4, True))
        self.assertEqual(self.stateStore.load(), HardState(4, "s3"))
        reply = self.service.node.peerRequest("s2", RequestVote(4, 0, 0))
        self.assertEqual(reply, RequestVoteResponse(4, False))

    def test_retriesWhileFailing(self) -> None:
        """
        While the disk keeps failing, the node tries again every
        L{DISK_RETRY_SECONDS} and stays out of Raft.
        """
        self.follow()
        self.fail()
        self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (Entry(3, 1, "x"),), 2))
        warnings = lambda: sum("disk still failing" in t for t in self.logged.texts())  # noqa: E731
        for attempt in range(1, 4):
            self.reactor.advance(DISK_RETRY_SECONDS)
            self.assertEqual(warnings(), attempt)
            self.assertIn("diskError", self.service.node.status())
        self.assertIsNone(self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (), 2)))

    def test_stallAfterFailureSendsNothing(self) -> None:
        """
        When several ticks are due at once and the first one's write fails,
        the rest are not run, and nothing that tick asked to send is sent.
        """
        ticks = []

        def tick() -> Ready:
            ticks.append(1)
            return Ready(hardState=HardState(9, "s1"), messages=[("s2", RequestVote(9, 0, 0))])

        self.service.node.core.tick = tick  # type: ignore[method-assign]
        self.stateStore.failWrites = True
        self.reactor.advance(TICK_SECONDS * 5)
        self.assertEqual(len(ticks), 1)
        self.assertEqual(self.sent, [])
        self.assertIn("diskError", self.service.node.status())

    def test_corruptionOnRetryStops(self) -> None:
        """
        If the stored state turns out unusable when the node reads it back,
        it stops, as it would refuse to start.
        """
        self.follow()
        self.fail()
        self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (Entry(3, 1, "x"),), 2))

        def corrupt(after: int = 0) -> list[Entry]:
            raise StorageError("s1.log:2: corrupt log line; refusing to start")

        self.logStore.load = corrupt  # type: ignore[method-assign]
        self.reactor.advance(DISK_RETRY_SECONDS)
        self.assertTrue(self.reactor.hasStopped)
        self.assertTrue(any("stored state unusable" in t for t in self.logged.texts()))

    def test_lostAppliedEntriesStops(self) -> None:
        """
        A log read back with fewer entries than the node already applied
        stops the node rather than rejoin with a state machine ahead of it.
        """
        self.follow()
        self.fail()
        self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (Entry(3, 1, "x"),), 2))
        self.logStore.durable = self.logStore.durable[:1]
        self.heal()
        self.reactor.advance(DISK_RETRY_SECONDS)
        self.assertTrue(self.reactor.hasStopped)

    def test_stopCancelsRetry(self) -> None:
        """
        Stopping a node whose disk fails cancels its retries.
        """
        self.follow()
        self.fail()
        self.service.node.peerRequest("s2", AppendEntries(1, 2, 1, (Entry(3, 1, "x"),), 2))
        self.service.stopService()
        retries = [
            c for c in self.reactor.getDelayedCalls() if c.func == self.service.node._rejoin
        ]
        self.assertEqual(retries, [])


class FileDiskFailureTests(SynchronousTestCase):
    """
    A one-node cluster on real files whose disk fills up: the node stops
    acknowledging, its files stay valid, and it carries on once space is
    back.
    """

    def setUp(self) -> None:
        """A data directory and a node on it, started on a fake reactor."""
        self.directory = temporaryDirectory(self)
        self.reactor = MemoryReactorClock()
        self.service = self.startNode()

    def startNode(self) -> RaftService:
        """Build and start C{s1} over file stores in the data directory."""
        logManager = LogManager(
            FileLogStore(os.path.join(self.directory, "s1.log")),
            FileStateStore(os.path.join(self.directory, "s1.state")),
            KeyValueStore(),
        )
        service = RaftService(
            makeConfig(["s1"], [10000]),
            "s1",
            logManager,
            self.reactor,
            tickSeconds=TICK_SECONDS,
            electionTicks=(10, 20),
            heartbeatTicks=3,
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def request(self, text: str) -> str:
        """Send C{text} as a client and return the answer."""
        result = clientRequest(self.service.node, None, text)
        self.reactor.advance(0)
        return result if isinstance(result, str) else self.successResultOf(result)

    def diskFull(self, spaceLeft: int = 0) -> None:
        """
        Make C{os.pwrite} write at most C{spaceLeft} more bytes, then fail
        with C{ENOSPC}, until L{freeSpace}.
        """
        self.spaceLeft = spaceLeft
        real = os.pwrite

        def pwrite(fd: int, data: bytes, offset: int) -> int:
            if self.spaceLeft is None:
                return real(fd, data, offset)
            if self.spaceLeft <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written = real(fd, bytes(data)[: self.spaceLeft], offset)
            self.spaceLeft -= written
            return written

        self.patch(os, "pwrite", pwrite)

    def freeSpace(self) -> None:
        """Let writes succeed again."""
        self.spaceLeft = None

    def test_diskFullThenFreed(self) -> None:
        """
        With the disk full in the middle of a write, the command is answered
        L{DISK_FAILED} and C{status} names the log file; the file still
        loads; once space is freed the node rejoins, elects itself and
        commits again, and a restart finds every acknowledged write and no
        torn line.
        """
        advanceUntil(self.reactor, lambda: self.service.node.core.role == LEADER)
        self.reactor.advance(0)
        self.assertEqual(self.request("set a 1"), "OK")
        self.diskFull(spaceLeft=5)
        self.assertEqual(self.request("set b 2"), DISK_FAILED)
        self.assertIn("No space left on device", self.service.node.status()["diskError"])
        self.assertIn("s1.log", self.service.node.status()["diskError"])
        self.assertEqual(self.request("get a"), DISK_FAILED)
        other = FileLogStore(os.path.join(self.directory, "s1.log"))
        self.addCleanup(other.close)
        self.assertEqual([e.command for e in other.load()], ["noop", "set a 1"])
        self.reactor.advance(DISK_RETRY_SECONDS)
        self.assertIn("diskError", self.service.node.status())
        self.freeSpace()
        self.reactor.advance(DISK_RETRY_SECONDS)
        advanceUntil(self.reactor, lambda: self.service.node.core.role == LEADER)
        self.reactor.advance(0)
        self.assertEqual(self.request("set c 3"), "OK")
        self.assertEqual(self.request("get a"), "OK 1")
        self.service.stopService()
        restarted = self.startNode()
        commands = [entry.command for entry in restarted.node.core.log.slice(1, 100)]
        self.assertEqual([c for c in commands if c != "noop"], ["set a 1", "set c 3"])
