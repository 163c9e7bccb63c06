"""
The in-memory Raft log the core reasons about.

Indexes start at 1.  The log may begin after a snapshot: entries up to
C{compactedIndex} are compacted away and only the index and term of the last
one are kept (dissertation chapter 5), so C{term(compactedIndex)} still
answers.  A server keeps some entries its newest snapshot covers (see
L{txraft.core.TRAILING_ENTRIES}), so C{compactedIndex} may lie before that
snapshot's index, never after.  On an uncompacted log, C{compactedIndex}
is 0 with term 0: the
sentinel that makes C{prevLogIndex == 0} always match.

This module does no I/O: the core reports every change it makes here in its
L{Ready} so that the LogManager can make the same change durable.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from txraft.messages import Entry

#: An entry as the log holds it: C{(index, term, command)}, a plain tuple.
#: Python's garbage collector stops tracking a plain tuple of untracked
#: values (ints, strings) the first time it looks at it, but never a named
#: tuple: a log of 500,000 L{Entry} objects made each full collection walk
#: them all, 60 to 100 ms on the event loop.
_Stored = tuple[int, int, str]

#: Make an L{Entry} of a stored tuple (L{Entry._make} without its checks).
_toEntry = partial(tuple.__new__, Entry)

#: A compaction lets go of the entries it drops at most this many at a
#: time, and each append (and L{RaftLog.release}) of as many more: freeing
#: the 300,000 entries a snapshot of a large map covered took 56 ms in one
#: go, and the event loop with them.
RELEASE_CHUNK = 5_000


class CompactedError(LookupError):
    """The entry asked for is compacted away: a snapshot covers it."""


class RaftLog:
    """An ordered list of entries after a compaction point, with the lookups Raft needs."""

    def __init__(
        self, entries: Iterable[Entry] = (), compactedIndex: int = 0, compactedTerm: int = 0
    ) -> None:
        self.compactedIndex = compactedIndex
        self.compactedTerm = compactedTerm
        self._entries: list[_Stored] = []
        # Lists of entries compacted away, still to let go of (L{release}).
        self._dropped: list[list[_Stored]] = []
        #: How many times entries were cut from the end (L{truncateFrom}, or
        #: all of them by L{restore}): until it changes, the entries between
        #: two indexes stay the same.
        self.rewrites = 0
        self.append(list(entries))

    @property
    def firstIndex(self) -> int:
        """The index of the first entry still held."""
        return self.compactedIndex + 1

    @property
    def lastIndex(self) -> int:
        """The index of the last entry (the compaction point's when no entry follows it)."""
        return self.compactedIndex + len(self._entries)

    @property
    def lastTerm(self) -> int:
        """The term of the last entry (or of the last one compacted away)."""
        return self._entries[-1][1] if self._entries else self.compactedTerm

    def term(self, index: int) -> int:
        """
        The term of the entry at C{index}.

        @raise CompactedError: if C{index} is before the compaction point.
        """
        if index == self.compactedIndex:
            return self.compactedTerm
        if index < self.compactedIndex:
            raise CompactedError(index)
        return self._entries[index - self.firstIndex][1]

    def entry(self, index: int) -> Entry:
        """The entry at C{index}, which must be after the compaction point."""
        if index <= self.compactedIndex:
            raise CompactedError(index)
        return _toEntry(self._entries[index - self.firstIndex])

    def slice(self, start: int, stop: int, maxBytes: int | None = None) -> list[Entry]:
        """
        Entries with C{start <= index < stop}; if C{maxBytes} is given, stop
        once the commands add up to more than it (but return at least one).
        """
        if start <= self.compactedIndex:
            raise CompactedError(start)
        entries = self._entries[start - self.firstIndex : stop - self.firstIndex]
        if maxBytes is not None:
            total = 0
            for count, (_, _, command) in enumerate(entries):
                total += len(command)
                if total > maxBytes and count > 0:
                    entries = entries[:count]
                    break
        return list(map(_toEntry, entries))

    def append(self, entries: list[Entry]) -> None:
        """Append C{entries}, which must continue the log without a gap."""
        lastIndex, lastTerm = self.lastIndex, self.lastTerm
        for entry in entries:
            if entry.index != lastIndex + 1:
                raise ValueError(f"entry {entry.index} does not follow {lastIndex}")
            if entry.term < lastTerm:
                raise ValueError(f"entry {entry.index} has a term before {lastTerm}")
            lastIndex, lastTerm = entry.index, entry.term
        self._entries += map(tuple, entries)
        self.release()

    def truncateFrom(self, index: int) -> None:
        """Drop every entry at C{index} and after (never one compacted away)."""
        if index <= self.compactedIndex:
            raise CompactedError(index)
        self.rewrites += 1
        del self._entries[index - self.firstIndex :]

    def compact(self, index: int) -> None:
        """Forget the entries up to C{index}, which a snapshot now covers."""
        if index <= self.compactedIndex:
            return
        term = self.term(index)
        dropped, self._entries = self._entries, self._entries[index - self.compactedIndex :]
        # The kept entries stay referenced: this frees none of them.
        del dropped[index - self.compactedIndex :]
        self._drop(dropped)
        self.compactedIndex, self.compactedTerm = index, term

    @property
    def releasing(self) -> int:
        """How many entries compacted away are still to be let go of."""
        return sum(map(len, self._dropped))

    def _drop(self, entries: list[_Stored]) -> None:
        """Let go of C{entries}, which nothing else refers to, a chunk now and the rest later."""
        self._dropped.append(entries)
        self.release()

    def release(self) -> None:
        """
        Free another L{RELEASE_CHUNK} of the entries compacted away, from
        the end of their list (so without moving the rest).  Each append
        does; so should the owner every now and then (the core, each tick),
        or an idle log keeps them.
        """
        left = RELEASE_CHUNK
        dropped = self._dropped
        while dropped and left:
            entries = dropped[-1]
            count = min(left, len(entries))
            del entries[len(entries) - count :]
            left -= count
            if not entries:
                dropped.pop()

    def restore(self, index: int, term: int) -> None:
        """
        Start over from a snapshot ending at (C{index}, C{term}): keep the
        entries after it if this log holds that very entry, else drop all
        (dissertation Figure 5.3, InstallSnapshot receiver rules 6 and 7).
        """
        if self.compactedIndex <= index <= self.lastIndex and self.term(index) == term:
            self.compact(index)
            return
        self._drop(self._entries)
        self._entries = []
        self.rewrites += 1
        self.compactedIndex, self.compactedTerm = index, term

    def findConflictByTerm(self, index: int, term: int) -> int:
        """
        The largest index not after C{index} whose entry's term is not after
        C{term}: the last place where a log that has C{term} at C{index}
        can still agree with this one.  Never before the compaction point,
        which is committed and so agrees with every leader's log.
        """
        index = min(index, self.lastIndex)
        while index > self.compactedIndex and self.term(index) > term:
            index -= 1
        return max(index, self.compactedIndex)

    def isUpToDate(self, lastIndex: int, lastTerm: int) -> bool:
        """
        Whether a log ending at (C{lastIndex}, C{lastTerm}) is at least as
        up-to-date as this one (section 5.4.1): later last term wins, then
        the longer log.
        """
        if lastTerm != self.lastTerm:
            return lastTerm > self.lastTerm
        return lastIndex >= self.lastIndex
