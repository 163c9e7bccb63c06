"""
The in-memory Raft log the core reasons about.

Indexes start at 1; index 0 is the empty log's sentinel with term 0, so
``term(0) == 0`` and ``prevLogIndex == 0`` always matches.  This module does
no I/O: the core reports every change it makes here in its L{Ready} so that
the LogManager can make the same change durable.
"""

from __future__ import annotations

from collections.abc import Iterable

from txraft.messages import Entry


class RaftLog:
    """An ordered list of entries with the lookups Raft needs."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: list[Entry] = []
        self.append(list(entries))

    @property
    def lastIndex(self) -> int:
        """The index of the last entry, 0 when empty."""
        return len(self._entries)

    @property
    def lastTerm(self) -> int:
        """The term of the last entry, 0 when empty."""
        return self._entries[-1].term if self._entries else 0

    def term(self, index: int) -> int:
        """The term of the entry at C{index} (0 for index 0)."""
        if index == 0:
            return 0
        return self._entries[index - 1].term

    def entry(self, index: int) -> Entry:
        """The entry at C{index} (1-based)."""
        return self._entries[index - 1]

    def slice(self, start: int, stop: int, maxBytes: int | None = None) -> list[Entry]:
        """
        Entries with C{start <= index < stop}; if C{maxBytes} is given, stop
        once the commands add up to more than it (but return at least one).
        """
        entries = self._entries[start - 1 : stop - 1]
        if maxBytes is None:
            return entries
        total = 0
        for count, entry in enumerate(entries):
            total += len(entry.command)
            if total > maxBytes and count > 0:
                return entries[:count]
        return entries

    def append(self, entries: list[Entry]) -> None:
        """Append C{entries}, which must continue the log without a gap."""
        for entry in entries:
            if entry.index != self.lastIndex + 1:
                raise ValueError(f"entry {entry.index} does not follow {self.lastIndex}")
            if entry.term < self.lastTerm:
                raise ValueError(f"entry {entry.index} has a term before {self.lastTerm}")
            self._entries.append(entry)

    def truncateFrom(self, index: int) -> None:
        """Drop every entry at C{index} and after."""
        del self._entries[index - 1 :]

    def findConflictByTerm(self, index: int, term: int) -> int:
        """
        The largest index not after C{index} whose entry's term is not after
        C{term}: the last place where a log that has C{term} at C{index}
        can still agree with this one.
        """
        index = min(index, self.lastIndex)
        while index > 0 and self.term(index) > term:
            index -= 1
        return index

    def isUpToDate(self, lastIndex: int, lastTerm: int) -> bool:
        """
        Whether a log ending at (C{lastIndex}, C{lastTerm}) is at least as
        up-to-date as this one (section 5.4.1): later last term wins, then
        the longer log.
        """
        if lastTerm != self.lastTerm:
            return lastTerm > self.lastTerm
        return lastIndex >= self.lastIndex
