"""
Shared fixtures for the tests of the Twisted shell and the storage layer:
temporary directories, cluster configs, free loopback ports, and
L{RaftService}s built on in-memory stores.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Callable, Sequence

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.trial.unittest import SynchronousTestCase

from txraft.config import ClusterConfig, parseConfig
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import Entry, HardState
from txraft.node import RaftNode
from txraft.service import RaftService
from txraft.storage import MemoryLogStore, MemoryStateStore, OSFileSystem, SyncPoint

#: Timing used by service tests: short enough to elect in a few dozen ticks.
TICK_SECONDS = 0.01
ELECTION_TICKS = (10, 20)
HEARTBEAT_TICKS = 3


def temporaryDirectory(testCase: SynchronousTestCase) -> str:
    """
    Make a fresh directory outside the repository, removed when
    C{testCase} ends.
    """
    path = tempfile.mkdtemp(prefix="txraft-test-")
    testCase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def makeConfig(
    names: Sequence[str] = ("s1", "s2", "s3"), ports: Sequence[int] = ()
) -> ClusterConfig:
    """
    A cluster config of C{names} on 127.0.0.1, at C{ports} or at 10000,
    10001, ...
    """
    ports = list(ports) or [10000 + i for i in range(len(names))]
    text = "".join(f"{name} 127.0.0.1 {port}\n" for name, port in zip(names, ports, strict=True))
    return parseConfig(text, source="test.conf")


class RecordingLogStore(MemoryLogStore):
    """
    A L{MemoryLogStore} that records every call, in order, in a shared
    C{events} list, and can be told to fail its writes with L{OSError}.
    """

    def __init__(self, events: list[tuple[str, object]] | None = None) -> None:
        super().__init__()
        self.events = [] if events is None else events
        self.failWrites = False

    def _write(self, name: str, argument: object) -> None:
        if self.failWrites:
            raise OSError(28, "No space left on device")
        self.events.append((name, argument))

    def truncateFrom(self, index: int) -> None:
        """Record, then truncate."""
        self._write("truncateFrom", index)
        super().truncateFrom(index)

    def append(self, entries: list[Entry]) -> None:
        """Record, then append."""
        self._write("append", list(entries))
        super().append(entries)

    def sync(self) -> None:
        """Record, then make durable."""
        self._write("sync", None)
        super().sync()

    def syncTo(self, point: SyncPoint) -> None:
        """Record as a sync, then make the entries of C{point} durable."""
        self._write("sync", None)
        super().syncTo(point)


class RecordingStateStore(MemoryStateStore):
    """
    A L{MemoryStateStore} that records every save in a shared C{events}
    list, and can be told to fail with L{OSError}.
    """

    def __init__(self, events: list[tuple[str, object]] | None = None) -> None:
        super().__init__()
        self.events = [] if events is None else events
        self.failWrites = False

    def save(self, state: HardState) -> None:
        """Record, then save."""
        if self.failWrites:
            raise OSError(5, "Input/output error")
        self.events.append(("save", state))
        super().save(state)


class ReadRecordingFileSystem(OSFileSystem):
    """The real system calls, with each C{pread}'s count and offset recorded in C{reads}."""

    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []

    def pread(self, fd: int, count: int, offset: int) -> bytes:
        """Record, then read."""
        self.reads.append((count, offset))
        return super().pread(fd, count, offset)


def clientRequest(
    node: RaftNode, clientId: str | None, text: str, seq: int | None = None
) -> str | defer.Deferred[str]:
    """
    C{node}'s answer to a client's request (L{RaftNode.submit}): the line,
    if it came at once, else a Deferred of it.
    """
    given: list[str] = []
    waiting: defer.Deferred[str] = defer.Deferred()

    def respond(answer: str) -> None:
        given.append(answer)
        waiting.callback(answer)

    node.submit(clientId, text, seq, respond)
    return given[0] if given else waiting


def buildService(
    config: ClusterConfig,
    name: str,
    reactor: IReactorTime,
    *,
    logStore: MemoryLogStore | None = None,
    stateStore: MemoryStateStore | None = None,
    seed: int = 0,
    electionTicks: tuple[int, int] = ELECTION_TICKS,
    heartbeatTicks: int = HEARTBEAT_TICKS,
) -> RaftService:
    """
    A L{RaftService} for node C{name} of C{config} on C{reactor}, with
    in-memory stores (fresh ones unless given) and a seeded random source.
    """
    logManager = LogManager(
        logStore if logStore is not None else MemoryLogStore(),
        stateStore if stateStore is not None else MemoryStateStore(),
        KeyValueStore(),
    )
    return RaftService(
        config,
        name,
        logManager,
        reactor,
        tickSeconds=TICK_SECONDS,
        electionTicks=electionTicks,
        heartbeatTicks=heartbeatTicks,
        rng=random.Random(seed),
    )


def advanceUntil(
    clock: object, predicate: Callable[[], bool], limit: int = 1000, step: float = TICK_SECONDS
) -> int:
    """
    Advance C{clock} one tick at a time until C{predicate()} holds; return
    how many ticks it took.

    @raise AssertionError: if it still does not hold after C{limit} ticks.
    """
    for count in range(limit + 1):
        if predicate():
            return count
        clock.advance(step)  # type: ignore[attr-defined]
    raise AssertionError(f"condition not reached within {limit} ticks")
