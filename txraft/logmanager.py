"""
The LogManager: a node's durable log, its term and vote, and its state machine.

This is the essay's LogManager, behind Raft: it recovers the log on boot,
makes each L{Ready} durable before the node acts on it, and executes
committed commands in index order, exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

from twisted.application.service import Service
from twisted.logger import Logger

from txraft.core import NOOP, Ready
from txraft.interfaces import ILogStore, ISnapshotStore, IStateMachine, IStateStore
from txraft.membership import isMembershipCommand
from txraft.messages import Entry, HardState, Snapshot
from txraft.snapshots import MemorySnapshotStore
from txraft.storage import StorageError


class SyncMark(NamedTuple):
    """Where a sync off the event loop reaches (L{LogManager.syncMark})."""

    #: The log store's own sync point.
    point: object
    #: How many writes of entries came before it.
    appends: int


class LogManager(Service):
    """
    Owns the stores and the state machine of one node.

    @ivar lastApplied: the index of the last entry executed on the state
        machine (Figure 2's lastApplied); only increases, except that a
        snapshot from the leader may move it further.
    @ivar lastAppliedTerm: the term of that entry.
    @ivar snapshot: the saved snapshot, if any: the log starts after it.
    @ivar membership: the command of the last membership entry applied (or
        of the snapshot's membership), empty if none was: what a snapshot
        taken now records (L{txraft.membership}).
    """

    log = Logger()

    def __init__(
        self,
        logStore: ILogStore,
        stateStore: IStateStore,
        stateMachine: IStateMachine,
        snapshotStore: ISnapshotStore | None = None,
        dataDirectoryLock: int | None = None,
    ) -> None:
        """
        @param dataDirectoryLock: the descriptor of the lock that keeps other
            processes off these files (see L{lockDataDirectory}); it is
            released when the service stops.
        """
        self.logStore = logStore
        self.stateStore = stateStore
        self.stateMachine = stateMachine
        self.snapshotStore = snapshotStore if snapshotStore is not None else MemorySnapshotStore()
        self.snapshot: Snapshot | None = None
        self.lastApplied = 0
        self.lastAppliedTerm = 0
        self.membership = ""
        self.dataDirectoryLock = dataDirectoryLock
        #: Whether log entries were written and not yet fsynced (L{persist}).
        self.unsynced = False
        # How many times entries were written: a sync mark records it.
        self._appends = 0

    def recover(self) -> tuple[HardState, list[Entry]]:
        """
        Read back the term, vote, snapshot and log, as the core needs them
        to start: the latest valid snapshot, then the log after it
        (dissertation section 5.1); the entries the snapshot covers that
        the log kept are dropped.  The state machine is loaded from the
        snapshot unless it is already further along.
        """
        hardState = self.stateStore.load()
        snapshot = self.snapshotStore.load()
        if snapshot is not None and snapshot.index > self.lastApplied:
            self.installSnapshot(snapshot)
        self.snapshot = snapshot
        entries = self.logStore.load(snapshot.index if snapshot else 0)
        self.log.info(
            "recovered term {term}, vote {vote}, snapshot up to {index}, {count} log entries",
            term=hardState.currentTerm,
            vote=hardState.votedFor,
            index=snapshot.index if snapshot else 0,
            count=len(entries),
        )
        return hardState, entries

    def recoverAfterFailure(self) -> tuple[HardState, list[Entry]]:
        """
        After a write failed, read back the term, vote and log the disk
        holds and write them again until they are durable, so the node can
        rebuild its core from them: its memory may be ahead of its disk, and
        only what is durable may be acted on.  The state machine is kept;
        every entry it has applied must still be in the log.

        @raise OSError: if the disk still fails; try again later.
        @raise StorageError: if the stored data is corrupt or has lost
            entries this node applied; it cannot go on.
        """
        hardState, entries = self.recover()
        self.stateStore.save(hardState)
        self.logStore.sync()
        lastIndex = entries[-1].index if entries else self.snapshot.index if self.snapshot else 0
        if lastIndex < self.lastApplied:
            raise StorageError(
                f"the log ends at index {lastIndex} but {self.lastApplied} were applied"
            )
        return hardState, entries

    def persist(self, ready: Ready, sync: bool = True) -> None:
        """
        Make C{ready}'s term, vote and log changes durable (step 1 of the
        L{Ready} contract).  Raises whatever the disk raises: a node that
        cannot persist must not go on acting as if it had.

        @param sync: fsync the log now, with whatever earlier calls wrote
            without; if not (only for a Ready whose C{syncAfterSend} is
            set), its entries are written but not durable until L{sync}
            (meanwhile C{unsynced} is set).
        """
        if ready.hardState is not None:
            self.stateStore.save(ready.hardState)
        if ready.truncateFrom is not None:
            self.logStore.truncateFrom(ready.truncateFrom)
        if ready.snapshot is not None:
            # The conflicting suffix must be gone for good before a snapshot
            # that does not chain to it is saved; and the snapshot is saved
            # before the log loses what it covers: a crash in between leaves
            # both, and recovery compacts again.
            if ready.truncateFrom is not None:
                self.logStore.sync()
            self.snapshotStore.save(ready.snapshot)
            self.logStore.compact(ready.snapshot.index)
            self.snapshot = ready.snapshot
        if ready.entries:
            self.logStore.append(ready.entries)
            self._appends += 1
        if not sync:
            self.unsynced = self.unsynced or bool(ready.entries)
        elif ready.truncateFrom is not None or ready.entries or self.unsynced:
            self.sync()

    def sync(self) -> None:
        """Make every entry written so far durable (after L{persist} without C{sync})."""
        self.logStore.sync()
        self.unsynced = False

    def syncMark(self) -> SyncMark:
        """
        Where a sync started now reaches: every entry written so far.  Pass
        it to L{syncTo}, off the event loop, then to L{synced}.
        """
        return SyncMark(self.logStore.syncPoint(), self._appends)

    def syncTo(self, mark: SyncMark) -> None:
        """Make the entries of C{mark} durable; safe in another thread (L{ILogStore.syncTo})."""
        self.logStore.syncTo(mark.point)

    def synced(self, mark: SyncMark) -> bool:
        """
        L{syncTo} of C{mark} returned: whether its entries are durable and
        still the log's.  C{unsynced} is cleared if nothing was written since.
        """
        if not self.logStore.markSynced(mark.point):
            return False
        if mark.appends == self._appends:
            self.unsynced = False
        return True

    def apply(self, entries: list[Entry]) -> list[tuple[Entry, str | None]]:
        """
        Execute committed C{entries} in order and return each one's reply
        (L{None} for a leader's no-op and for a membership entry, which the
        state machine never sees).  Entries already applied are skipped, so
        each command runs exactly once.
        """
        results = []
        for entry in entries:
            if entry.index <= self.lastApplied:
                continue
            if entry.index != self.lastApplied + 1:
                raise RuntimeError(f"apply gap: {entry.index} after {self.lastApplied}")
            if entry.command == NOOP:
                reply = None
            elif isMembershipCommand(entry.command):
                self.membership, reply = entry.command, None
            else:
                reply = self.stateMachine.apply(entry.command, entry.index)
            self.lastApplied, self.lastAppliedTerm = entry.index, entry.term
            results.append((entry, reply))
        return results

    def read(self, command: str) -> str:
        """Answer the read-only C{command} from the state machine as applied so far."""
        return self.stateMachine.read(command)

    def installSnapshot(self, snapshot: Snapshot) -> None:
        """
        Reset the state machine to C{snapshot} (on recovery), all at once.

        @raise StorageError: if it does not hold a valid state.
        """
        for _ in self.installing(snapshot):
            pass

    def installing(self, snapshot: Snapshot) -> Iterator[None]:
        """
        Reset the state machine to C{snapshot} (from the leader) in steps,
        for an event loop to take one per turn (L{IStateMachine.restoring}).
        Until the last step ends, the state machine, L{lastApplied} and
        L{membership} stay as they were.

        @raise StorageError: (from a step) if it does not hold a valid state.
        """
        try:
            yield from self.stateMachine.restoring(snapshot.data)
        except ValueError as e:
            raise StorageError(f"snapshot up to {snapshot.index} is unusable: {e}") from None
        self.lastApplied, self.lastAppliedTerm = snapshot.index, snapshot.term
        self.membership = snapshot.membership

    def captureState(self) -> Callable[[], Snapshot]:
        """
        Freeze the state machine as of the last applied entry, and return
        the slow part of making a snapshot of it: serializing it, which may
        run in another thread.  Nothing is written: a backup (L{txraft.admin})
        takes this, so that it never touches the file a snapshot is staged in.
        """
        index, term, membership = self.lastApplied, self.lastAppliedTerm, self.membership
        serialize = self.stateMachine.capture()
        return lambda: Snapshot(index, term, serialize(), membership)

    def captureSnapshot(self) -> Callable[[], tuple[Snapshot, object]]:
        """
        Freeze the state machine as of the last applied entry, and return
        the slow part of taking a snapshot of it: serializing and staging
        it durably.  That part may run in another thread; L{commitSnapshot}
        finishes the job in this one.
        """
        serialize = self.captureState()
        store = self.snapshotStore

        def write() -> tuple[Snapshot, object]:
            snapshot = serialize()
            return snapshot, store.stage(snapshot)

        return write

    def commitSnapshot(
        self, snapshot: Snapshot, staged: object, compactTo: int | None = None
    ) -> None:
        """
        Make a staged snapshot the saved one, then drop the log entries up
        to C{compactTo} (default: all it covers).  A restart drops the
        rest it covers (L{recover}).
        """
        self.snapshotStore.commit(staged)
        self.snapshot = snapshot
        self.logStore.compact(snapshot.index if compactTo is None else compactTo)

    def stopService(self) -> None:
        """Close the log file and release the data directory's lock."""
        super().stopService()
        self.logStore.close()
        if self.dataDirectoryLock is not None:
            os.close(self.dataDirectoryLock)
            self.dataDirectoryLock = None
