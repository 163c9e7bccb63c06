"""
Tests for L{txraft.raftlog}.
"""

import gc

from twisted.trial.unittest import SynchronousTestCase

from txraft.core import RaftCore
from txraft.messages import Entry
from txraft.raftlog import RELEASE_CHUNK, CompactedError, RaftLog


def logWithTerms(*terms: int) -> RaftLog:
    """A log whose entry at index i+1 has term C{terms[i]} and command C{ci}."""
    return RaftLog(Entry(index, term, f"c{index}") for index, term in enumerate(terms, 1))


class EmptyLogTests(SynchronousTestCase):
    """
    The empty log and its index-0 sentinel.
    """

    def test_sentinel(self) -> None:
        """
        An empty log has lastIndex 0 and lastTerm 0, and C{term(0)} is 0, so
        an AppendEntries with prevLogIndex 0 always passes the consistency
        check (Figure 2, AppendEntries receiver step 2).
        """
        log = RaftLog()
        self.assertEqual((log.lastIndex, log.lastTerm, log.term(0)), (0, 0, 0))

    def test_termZeroOnFullLog(self) -> None:
        """
        C{term(0)} is 0 on a non-empty log too, and C{term(i)} is entry i's term.
        """
        log = logWithTerms(1, 1, 3)
        self.assertEqual([log.term(i) for i in range(4)], [0, 1, 1, 3])
        self.assertEqual((log.lastIndex, log.lastTerm), (3, 3))
        self.assertEqual(log.entry(3), Entry(3, 3, "c3"))


class AppendTests(SynchronousTestCase):
    """
    L{RaftLog.append} keeps the log contiguous and its terms non-decreasing.
    """

    def test_appendContinues(self) -> None:
        """
        Entries that follow the last index are appended in order.
        """
        log = logWithTerms(1)
        log.append([Entry(2, 1, "a"), Entry(3, 2, "b")])
        self.assertEqual(log.slice(1, 4), [Entry(1, 1, "c1"), Entry(2, 1, "a"), Entry(3, 2, "b")])

    def test_gapRejected(self) -> None:
        """
        An entry that does not follow the last index is refused and the log
        is unchanged.
        """
        log = logWithTerms(1, 1)
        self.assertRaises(ValueError, log.append, [Entry(4, 1, "gap")])
        self.assertRaises(ValueError, log.append, [Entry(2, 1, "overlap")])
        self.assertEqual(log.lastIndex, 2)

    def test_gapInConstructorRejected(self) -> None:
        """
        A recovered log with a hole is refused at construction.
        """
        self.assertRaises(ValueError, RaftLog, [Entry(1, 1, "a"), Entry(3, 1, "b")])

    def test_termRegressionRejected(self) -> None:
        """
        Terms in a Raft log never decrease (a leader only appends entries of
        its own, latest term), so an entry of an earlier term than the last
        is refused.
        """
        log = logWithTerms(1, 3)
        self.assertRaises(ValueError, log.append, [Entry(3, 2, "old")])
        self.assertEqual((log.lastIndex, log.lastTerm), (2, 3))


class SliceTests(SynchronousTestCase):
    """
    L{RaftLog.slice} with and without a byte budget.
    """

    def test_halfOpenRange(self) -> None:
        """
        C{slice(start, stop)} returns entries with C{start <= index < stop}.
        """
        log = logWithTerms(1, 1, 2, 2)
        self.assertEqual([e.index for e in log.slice(2, 4)], [2, 3])
        self.assertEqual(log.slice(5, 5), [])

    def test_maxBytesReturnsAtLeastOne(self) -> None:
        """
        Even an entry larger than the budget is returned alone, so replication
        always makes progress.
        """
        log = RaftLog([Entry(1, 1, "x" * 100), Entry(2, 1, "y")])
        self.assertEqual(log.slice(1, 3, maxBytes=10), [Entry(1, 1, "x" * 100)])
        self.assertEqual(log.slice(1, 3, maxBytes=0), [Entry(1, 1, "x" * 100)])

    def test_maxBytesStopsOnceOverBudget(self) -> None:
        """
        Entries are taken while their commands add up to no more than the budget.
        """
        log = RaftLog([Entry(i, 1, "abcd") for i in range(1, 6)])
        self.assertEqual([e.index for e in log.slice(1, 6, maxBytes=8)], [1, 2])
        self.assertEqual([e.index for e in log.slice(1, 6, maxBytes=9)], [1, 2])
        self.assertEqual([e.index for e in log.slice(1, 6, maxBytes=12)], [1, 2, 3])
        self.assertEqual(len(log.slice(1, 6, maxBytes=1000)), 5)


class TruncateTests(SynchronousTestCase):
    """
    L{RaftLog.truncateFrom}.
    """

    def test_truncateFrom(self) -> None:
        """
        C{truncateFrom(i)} drops entry i and every later one, after which
        new entries may follow index i-1.
        """
        log = logWithTerms(1, 1, 2, 2)
        log.truncateFrom(3)
        self.assertEqual((log.lastIndex, log.lastTerm), (2, 1))
        log.append([Entry(3, 3, "new")])
        self.assertEqual(log.entry(3), Entry(3, 3, "new"))


class FindConflictByTermTests(SynchronousTestCase):
    """
    L{RaftLog.findConflictByTerm}: where a follower's log could still agree
    with a leader's (the accelerated backtracking of section 5.3).
    """

    def test_table(self) -> None:
        """
        The answer is the largest index not after C{index} (clamped to the
        log's end) whose term is not after C{term}.
        """
        # Figure 7's follower (f): terms 1 1 1 2 2 2 3 3 3 3 3.
        log = logWithTerms(1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3)
        cases = [
            ((10, 6), 10),  # every term of f is <= 6
            ((11, 3), 11),
            ((20, 3), 11),  # clamped to lastIndex
            ((10, 2), 6),
            ((10, 1), 3),
            ((5, 1), 3),
            ((10, 0), 0),
            ((0, 5), 0),
        ]
        for (index, term), expected in cases:
            self.assertEqual(
                log.findConflictByTerm(index, term), expected, f"findConflictByTerm{index, term}"
            )

    def test_emptyLog(self) -> None:
        """
        On an empty log the only place of agreement is index 0.
        """
        self.assertEqual(RaftLog().findConflictByTerm(7, 3), 0)


class IsUpToDateTests(SynchronousTestCase):
    """
    L{RaftLog.isUpToDate}: the voter's check of section 5.4.1.
    """

    def test_laterLastTermWins(self) -> None:
        """
        A log whose last term is later is more up-to-date whatever its length.
        """
        log = logWithTerms(1, 1, 2, 2, 2)
        self.assertTrue(log.isUpToDate(1, 3))
        self.assertFalse(log.isUpToDate(100, 1))

    def test_sameLastTermLongerWins(self) -> None:
        """
        With the same last term, the longer log is more up-to-date and equal
        logs are up-to-date with each other.
        """
        log = logWithTerms(1, 1, 2)
        self.assertTrue(log.isUpToDate(4, 2))
        self.assertTrue(log.isUpToDate(3, 2))
        self.assertFalse(log.isUpToDate(2, 2))

    def test_emptyLogs(self) -> None:
        """
        Every log is at least as up-to-date as an empty one, and an empty log
        is up-to-date only against an empty log.
        """
        self.assertTrue(RaftLog().isUpToDate(0, 0))
        self.assertTrue(RaftLog().isUpToDate(3, 1))
        self.assertFalse(logWithTerms(1).isUpToDate(0, 0))


class CompactionTests(SynchronousTestCase):
    """
    A log that starts after a snapshot point (dissertation chapter 5).
    """

    def test_compactKeepsBase(self) -> None:
        """
        Compacting forgets the entries up to the point but keeps its term, so
        consistency checks against it still work; later entries are kept.
        """
        log = logWithTerms(1, 1, 2, 2, 3)
        log.compact(3)
        self.assertEqual((log.compactedIndex, log.compactedTerm, log.firstIndex), (3, 2, 4))
        self.assertEqual((log.lastIndex, log.lastTerm, log.term(3), log.term(5)), (5, 3, 2, 3))
        self.assertEqual([e.index for e in log.slice(4, 6)], [4, 5])
        self.assertRaises(CompactedError, log.term, 2)
        self.assertRaises(CompactedError, log.entry, 3)
        self.assertRaises(CompactedError, log.slice, 3, 6)
        self.assertRaises(CompactedError, log.truncateFrom, 3)

    def test_compactWholeLog(self) -> None:
        """A log compacted to its last entry is empty but keeps its last index and term."""
        log = logWithTerms(1, 2)
        log.compact(2)
        self.assertEqual((log.lastIndex, log.lastTerm, log.slice(3, 3)), (2, 2, []))
        log.append([Entry(3, 2, "x")])
        self.assertEqual(log.lastIndex, 3)

    def test_compactIsIdempotent(self) -> None:
        """Compacting to a point already covered changes nothing."""
        log = logWithTerms(1, 1, 1)
        log.compact(2)
        log.compact(1)
        self.assertEqual((log.compactedIndex, log.lastIndex), (2, 3))

    def test_restoreKeepsMatchingSuffix(self) -> None:
        """Restoring to a point the log holds (same term) keeps the entries after it."""
        log = logWithTerms(1, 1, 2, 2)
        log.restore(2, 1)
        self.assertEqual((log.compactedIndex, log.firstIndex, log.lastIndex), (2, 3, 4))

    def test_restoreDiscardsOtherwise(self) -> None:
        """
        Restoring to a point the log lacks, or holds with another term, drops
        every entry.
        """
        for index, term in [(2, 5), (9, 4)]:
            log = logWithTerms(1, 1, 2, 2)
            log.restore(index, term)
            self.assertEqual((log.lastIndex, log.lastTerm), (index, term))
            self.assertEqual(log.slice(index + 1, index + 1), [])

    def test_findConflictStopsAtSnapshot(self) -> None:
        """
        The search for where another log could agree never goes before the
        snapshot point: what it covers is committed and agrees with every
        leader's log.
        """
        log = logWithTerms(1, 1, 5, 5, 5)
        log.compact(3)
        self.assertEqual(log.findConflictByTerm(5, 2), 3)
        self.assertEqual(log.findConflictByTerm(1, 1), 3)


class SnapshotPointTests(SynchronousTestCase):
    """A log that starts after a snapshot."""

    def makeLog(self) -> RaftLog:
        """A log whose snapshot ends at index 2, term 3, followed by entries 3 to 5 of term 3."""
        return RaftLog([Entry(i, 3, f"set k {i}") for i in range(3, 6)], 2, 3)

    def test_restoreAtSnapshotPointKeepsLog(self) -> None:
        """
        Restoring the snapshot the log already starts after keeps every
        entry after it (dissertation Figure 5.3, rule 6).
        """
        log = self.makeLog()
        log.restore(2, 3)
        self.assertEqual((log.compactedIndex, log.lastIndex), (2, 5))

    def test_findConflictStopsAtSnapshotPoint(self) -> None:
        """
        Looking for an older term never goes before the snapshot point, even
        when the snapshot's term is newer: what it covers is committed.
        """
        self.assertEqual(self.makeLog().findConflictByTerm(5, 1), 2)

    def test_compactedLookupsNameTheIndex(self) -> None:
        """Asking for an entry the snapshot covers, or truncating there, names the index."""
        log = self.makeLog()
        self.assertEqual(self.assertRaises(CompactedError, log.entry, 1).args, (1,))
        self.assertEqual(self.assertRaises(CompactedError, log.truncateFrom, 2).args, (2,))
        self.assertEqual(self.assertRaises(CompactedError, log.term, 1).args, (1,))
        self.assertEqual(self.assertRaises(CompactedError, log.slice, 2, 5).args, (2,))

    def test_appendRefusalsSayWhy(self) -> None:
        """An entry that leaves a gap, or goes back in term, is refused saying which and why."""
        log = self.makeLog()
        error = self.assertRaises(ValueError, log.append, [Entry(7, 3, "set k 7")])
        self.assertEqual(str(error), "entry 7 does not follow 5")
        error = self.assertRaises(ValueError, log.append, [Entry(6, 2, "set k 6")])
        self.assertEqual(str(error), "entry 6 has a term before 3")


class ReleaseTests(SynchronousTestCase):
    """A compaction lets go of what it drops a chunk at a time."""

    def test_compactionReleasesAChunkAtATime(self) -> None:
        """
        A compaction keeps the entries it drops but for L{RELEASE_CHUNK} of
        them, and each append or L{RaftLog.release} lets go of as many more,
        the kept entries untouched.
        """
        count = 3 * RELEASE_CHUNK + 10
        log = logWithTerms(*[1] * (count + 5))
        log.compact(count)
        self.assertEqual(log.releasing, count - RELEASE_CHUNK)
        log.append([Entry(count + 6, 1, "new")])
        self.assertEqual(log.releasing, count - 2 * RELEASE_CHUNK)
        log.release()
        log.release()
        self.assertEqual(log.releasing, 0)
        log.release()
        kept = [Entry(i, 1, f"c{i}") for i in range(count + 1, count + 6)]
        self.assertEqual(log.slice(count + 1, count + 7), [*kept, Entry(count + 6, 1, "new")])

    def test_laterCompactionDropsOnlyWhatItCovers(self) -> None:
        """
        A compaction of a log compacted before lets go of the entries
        between the two points only, and keeps the rest.
        """
        log = logWithTerms(*[1] * (3 * RELEASE_CHUNK))
        log.compact(RELEASE_CHUNK)
        log.release()
        self.assertEqual(log.releasing, 0)
        log.compact(RELEASE_CHUNK + 10)
        self.assertEqual(log.releasing, 0)
        log.compact(2 * RELEASE_CHUNK + 20)
        self.assertEqual(log.releasing, RELEASE_CHUNK + 10 - RELEASE_CHUNK)
        self.assertEqual(log.entry(2 * RELEASE_CHUNK + 21).command, f"c{2 * RELEASE_CHUNK + 21}")

    def test_restoreReleasesTheWholeLogLikewise(self) -> None:
        """A snapshot that replaces the whole log lets go of it the same way."""
        log = logWithTerms(*[1] * (2 * RELEASE_CHUNK))
        log.restore(5 * RELEASE_CHUNK, 3)
        self.assertEqual((log.lastIndex, log.releasing), (5 * RELEASE_CHUNK, RELEASE_CHUNK))

    def test_coreTickReleases(self) -> None:
        """The core lets go of another chunk every tick."""
        core = RaftCore(
            "a", ("a",), entries=[Entry(i, 1, "c") for i in range(1, 3 * RELEASE_CHUNK)]
        )
        core.log.compact(3 * RELEASE_CHUNK - 1)
        before = core.log.releasing
        core.tick()
        self.assertEqual(core.log.releasing, before - RELEASE_CHUNK)


class StorageTests(SynchronousTestCase):
    """How the log holds its entries."""

    def test_entriesNotTrackedByTheCollector(self) -> None:
        """
        Once the garbage collector has looked at them, the entries the log
        holds are no longer among the objects it tracks (and walks in each
        full collection); an entry asked for is still an L{Entry}.
        """
        log = RaftLog(Entry(i, 1, f"untracked-{i}") for i in range(1, 101))
        gc.collect()
        tracked = [o for o in gc.get_objects() if isinstance(o, tuple) and "untracked-7" in o]
        self.assertEqual(tracked, [])
        self.assertEqual(log.entry(7), Entry(7, 1, "untracked-7"))
        self.assertIs(type(log.entry(7)), Entry)
        self.assertEqual([type(e) for e in log.slice(1, 3)], [Entry, Entry])

    def test_rewritesCountCutsFromTheEnd(self) -> None:
        """
        A truncation, or a restore that drops the whole log, counts as a
        rewrite; appending, compacting and a restore that keeps the log's
        suffix do not.
        """
        log = logWithTerms(1, 1, 2, 2)
        log.append([Entry(5, 2, "c5")])
        log.compact(1)
        log.restore(2, 1)
        self.assertEqual(log.rewrites, 0)
        log.truncateFrom(4)
        self.assertEqual(log.rewrites, 1)
        log.truncateFrom(3)
        self.assertEqual(log.rewrites, 2)
        log.restore(9, 3)
        self.assertEqual(log.rewrites, 3)
