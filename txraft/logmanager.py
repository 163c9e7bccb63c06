"""
The LogManager: a node's durable log, its term and vote, and its state machine.

This is the essay's LogManager, behind Raft: it recovers the log on boot,
makes each L{Ready} durable before the node acts on it, and executes
committed commands in index order, exactly once.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.logger import Logger

from txraft.core import NOOP, HardState, Ready
from txraft.kv import KeyValueStore
from txraft.messages import Entry
from txraft.storage import ILogStore, IStateStore, StorageError


class LogManager(Service):
    """
    Owns the stores and the key-value state machine of one node.

    @ivar lastApplied: the index of the last entry executed on the state
        machine (Figure 2's lastApplied); only increases.
    """

    log = Logger()

    def __init__(
        self, logStore: ILogStore, stateStore: IStateStore, stateMachine: KeyValueStore
    ) -> None:
        self.logStore = logStore
        self.stateStore = stateStore
        self.stateMachine = stateMachine
        self.lastApplied = 0

    def recover(self) -> tuple[HardState, list[Entry]]:
        """Read back the term, vote and log, as the core needs them to start."""
        hardState = self.stateStore.load()
        entries = self.logStore.load()
        self.log.info(
            "recovered term {term}, vote {vote}, {count} log entries",
            term=hardState.currentTerm,
            vote=hardState.votedFor,
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
        if len(entries) < self.lastApplied:
            raise StorageError(
                f"the log holds {len(entries)} entries but {self.lastApplied} were applied"
            )
        return hardState, entries

    def persist(self, ready: Ready) -> None:
        """
        Make C{ready}'s term, vote and log changes durable (step 1 of the
        L{Ready} contract).  Raises whatever the disk raises: a node that
        cannot persist must not go on acting as if it had.
        """
        if ready.hardState is not None:
            self.stateStore.save(ready.hardState)
        if ready.truncateFrom is not None:
            self.logStore.truncateFrom(ready.truncateFrom)
        if ready.entries:
            self.logStore.append(ready.entries)
        if ready.truncateFrom is not None or ready.entries:
            self.logStore.sync()

    def apply(self, entries: list[Entry]) -> list[tuple[Entry, str | None]]:
        """
        Execute committed C{entries} in order and return each one's reply
        (L{None} for a leader's no-op).  Entries already applied are skipped,
        so each command runs exactly once.
        """
        results = []
        for entry in entries:
            if entry.index <= self.lastApplied:
                continue
            if entry.index != self.lastApplied + 1:
                raise RuntimeError(f"apply gap: {entry.index} after {self.lastApplied}")
            reply = None if entry.command == NOOP else self.stateMachine.apply(entry.command)
            self.lastApplied = entry.index
            results.append((entry, reply))
        return results

    def stopService(self) -> None:
        """Close the log file."""
        super().stopService()
        self.logStore.close()
