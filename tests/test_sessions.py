"""
Tests for L{txraft.sessions}: the numbered request's wire and log forms, and
the session table's rules (Raft dissertation, section 6.3); for the sessions
of L{txraft.kv.KeyValueStore}, snapshots included; and for numbered requests
through the driver, across a restart, a snapshot and a change of leader.
"""

from __future__ import annotations

import json
import random

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import clientRequest, makeConfig
from tests.test_simulation import calmSimulation, followers
from txraft import answers
from txraft.core import LEADER
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.node import RaftNode
from txraft.sessions import (
    MAX_SEQ,
    READ,
    UNNUMBERED_ONLY,
    Numbered,
    Request,
    RequestError,
    SessionTable,
    parseNumbered,
    splitRequest,
)
from txraft.snapshots import MemorySnapshotStore
from txraft.storage import MemoryLogStore, MemoryStateStore


class SplitRequestTests(SynchronousTestCase):
    """L{splitRequest}: the client's line on the wire."""

    def test_numbered(self) -> None:
        """C{CLIENTID#SEQ@COMMAND} gives the client, its SEQ and the command."""
        self.assertEqual(splitRequest("c4#7@set b 5"), Request("c4", 7, "set b 5"))
        self.assertEqual(splitRequest("a_B-9#1@get k"), Request("a_B-9", 1, "get k"))

    def test_largestSeq(self) -> None:
        """SEQ may go up to L{MAX_SEQ}, a signed 64-bit integer."""
        self.assertEqual(MAX_SEQ, 2**63 - 1)
        self.assertEqual(splitRequest(f"c#{MAX_SEQ}@show"), Request("c", MAX_SEQ, "show"))

    def test_unnumberedAsBefore(self) -> None:
        """
        Without C{#SEQ} a line is what it always was: C{CLIENTID@COMMAND}
        or a bare command, and a C{#} or C{@} inside a command is the
        command's (its prefix holds whitespace).
        """
        self.assertEqual(splitRequest("c4@set b 5"), Request("c4", None, "set b 5"))
        self.assertEqual(splitRequest("set b 5"), Request(None, None, "set b 5"))
        self.assertEqual(splitRequest("set k#1@x y"), Request(None, None, "set k#1@x y"))
        self.assertEqual(splitRequest("set k a#1@b"), Request(None, None, "set k a#1@b"))
        self.assertEqual(splitRequest("get a#1"), Request(None, None, "get a#1"))
        self.assertEqual(splitRequest("c4@set k #1@x"), Request("c4", None, "set k #1@x"))

    def test_malformedSeq(self) -> None:
        """
        A SEQ that is zero, empty, not decimal, with leading zeros (one SEQ,
        one spelling), signed or beyond L{MAX_SEQ} is refused with its reason.
        """
        reason = "a whole number from 1 to 9223372036854775807 without leading zeros"
        for seq in ["0", "", "x", "01", "+1", "-1", "1.0", "1e3", "٣", str(MAX_SEQ + 1)]:
            with self.subTest(seq=seq):
                error = self.assertRaises(RequestError, splitRequest, f"c#{seq}@get k")
                self.assertEqual(str(error), f"invalid SEQ {seq!r}: {reason}")

    def test_malformedClientId(self) -> None:
        """A numbered line needs a valid client ID before its C{#}."""
        for line in ["#1@get k", "c!#1@get k", "c.d#1@get k", "é#1@get k"]:
            with self.subTest(line=line):
                error = self.assertRaises(RequestError, splitRequest, line)
                self.assertIn("invalid client ID", str(error))
                self.assertIn("CLIENTID#SEQ@COMMAND", str(error))

    def test_longReasonsAreCut(self) -> None:
        """A reason quotes at most 40 characters of what was wrong."""
        error = self.assertRaises(RequestError, splitRequest, "c#" + "9" * 5000 + "@get k")
        self.assertLess(len(str(error)), 150)


class ParseNumberedTests(SynchronousTestCase):
    """L{parseNumbered} and L{Numbered.text}: the numbered command in the log."""

    def test_roundTrip(self) -> None:
        """The log's text of a numbered command parses back to it."""
        numbered = Numbered("c4", 12, "set b hello world")
        self.assertEqual(numbered.text, "c4#12@set b hello world")
        self.assertEqual(parseNumbered(numbered.text), numbered)

    def test_unnumberedEntries(self) -> None:
        """
        Every entry of a log written before sessions (commands in canonical
        form, and the no-op) is unnumbered, however its value looks.
        """
        for text in ["noop", "show", "get a", "set k#1@x y", "set k c#1@x", "delete c#1@x"]:
            self.assertIsNone(parseNumbered(text), text)

    def test_onlyCanonicalSeqs(self) -> None:
        """An entry with a SEQ the wire would refuse is no numbered command."""
        for text in ["c#0@get k", "c#01@get k", f"c#{MAX_SEQ + 1}@get k", "#1@get k"]:
            self.assertIsNone(parseNumbered(text), text)


class Recorder:
    """A command for L{SessionTable.apply} that counts its runs."""

    def __init__(self, answer: str = "OK") -> None:
        self.answer = answer
        self.runs = 0

    def __call__(self) -> str:
        self.runs += 1
        return self.answer


class SessionTableTests(SynchronousTestCase):
    """Each rule of L{SessionTable.apply}."""

    def setUp(self) -> None:
        self.table = SessionTable(maxSessions=3, window=4)

    def test_firstSeqOpensSession(self) -> None:
        """SEQ 1 of an unknown client opens its session, runs, and is recorded."""
        command = Recorder("OK")
        self.assertEqual(self.table.apply("c", 1, 10, command), "OK")
        self.assertEqual(command.runs, 1)
        self.assertEqual(self.table.highest("c"), 1)
        self.assertEqual(self.table.lastIndex("c"), 10)

    def test_unknownClientLaterSeq(self) -> None:
        """
        A SEQ above 1 of an unknown client (never opened, or forgotten)
        gets C{ERROR session expired}, runs nothing and opens nothing: SEQ 1
        may or may not have run, so nothing is safe to do.
        """
        command = Recorder()
        self.assertEqual(self.table.apply("c", 2, 10, command), answers.SESSION_EXPIRED)
        self.assertEqual(answers.SESSION_EXPIRED, "ERROR session expired")
        self.assertEqual(command.runs, 0)
        self.assertEqual(len(self.table), 0)

    def test_higherSeqsRun(self) -> None:
        """Each SEQ above the highest runs, gaps allowed (SEQs only increase)."""
        for seq in (1, 2, 5, 6):
            command = Recorder(f"OK {seq}")
            self.assertEqual(self.table.apply("c", seq, seq * 10, command), f"OK {seq}")
            self.assertEqual(command.runs, 1)
        self.assertEqual(self.table.highest("c"), 6)

    def test_retryGetsRecordedAnswer(self) -> None:
        """
        A retry of a SEQ that ran gets the answer it got then and runs
        nothing, even when running again would answer otherwise.
        """
        self.table.apply("c", 1, 1, Recorder("OK"))
        self.table.apply("c", 2, 2, Recorder("NOT_FOUND"))
        again = Recorder("NOT_FOUND")
        self.assertEqual(self.table.apply("c", 1, 3, again), "OK")
        self.assertEqual(self.table.apply("c", 2, 4, again), "NOT_FOUND")
        self.assertEqual(again.runs, 0)
        self.assertEqual(self.table.highest("c"), 2)

    def test_retriedReadRunsAgain(self) -> None:
        """
        A read's answer is not kept (C{show}'s is the whole map): its retry
        reads again, which changes nothing and is as linearizable (the
        retry runs within the client's wait for the answer).
        """
        self.assertEqual(self.table.apply("c", 1, 1, Recorder("OK old"), read=True), "OK old")
        fresh = Recorder("OK new")
        self.assertEqual(self.table.apply("c", 1, 2, fresh, read=True), "OK new")
        self.assertEqual(fresh.runs, 1)
        self.assertEqual(self.table.capture(), [["c", 1, 2, [READ]]])

    def test_skippedSeq(self) -> None:
        """
        A SEQ below the highest that never ran cannot run later (the
        client moved on without it): an C{ERROR} saying so, nothing run.
        """
        self.table.apply("c", 1, 1, Recorder())
        self.table.apply("c", 3, 2, Recorder())
        command = Recorder()
        self.assertEqual(
            self.table.apply("c", 2, 3, command),
            "ERROR SEQ 2 never ran and now cannot: a later one of this client, SEQ 3, ran first",
        )
        self.assertEqual(command.runs, 0)

    def test_olderThanWindow(self) -> None:
        """
        Only the last C{window} SEQs' answers are kept: an older SEQ's retry
        gets C{ERROR session expired: ...} and runs nothing.
        """
        for seq in range(1, 6):
            self.table.apply("c", seq, seq, Recorder(f"OK {seq}"))
        command = Recorder()
        self.assertEqual(self.table.apply("c", 2, 9, command), "OK 2")
        self.assertEqual(
            self.table.apply("c", 1, 10, command),
            "ERROR session expired: the answer to SEQ 1 is no longer kept (only the last 4)",
        )
        self.assertEqual(command.runs, 0)

    def test_gapWiderThanWindow(self) -> None:
        """A jump past the whole window leaves only the new SEQ's answer kept."""
        self.table.apply("c", 1, 1, Recorder("OK 1"))
        self.table.apply("c", 100, 2, Recorder("OK 100"))
        self.assertEqual(self.table.capture(), [["c", 100, 2, [None, None, None, "OK 100"]]])
        answer = self.table.apply("c", 1, 3, Recorder())
        self.assertTrue(answer.startswith(answers.SESSION_EXPIRED + ": "), answer)

    def test_leastRecentlyUsedIsEvicted(self) -> None:
        """
        Opening a session beyond C{maxSessions} forgets the one whose last
        request is oldest in the log; any request, a retry included, makes
        its client recent.  The forgotten client's next SEQ is expired.
        """
        for index, client in enumerate(["a", "b", "c"], start=1):
            self.table.apply(client, 1, index, Recorder())
        self.table.apply("a", 1, 4, Recorder())  # a retry: now b is least recent
        self.table.apply("d", 1, 5, Recorder())
        self.assertEqual([s[0] for s in self.table.capture()], ["c", "a", "d"])
        self.assertIsNone(self.table.highest("b"))
        self.assertEqual(self.table.apply("b", 2, 6, Recorder()), answers.SESSION_EXPIRED)
        self.assertEqual([s[0] for s in self.table.capture()], ["c", "a", "d"])

    def test_evictedFirstSeqRunsAgain(self) -> None:
        """
        The one documented caveat: the retry of SEQ 1 of a session that was
        forgotten meanwhile opens a new session and runs again.
        """
        self.table.apply("a", 1, 1, Recorder())
        for index, client in enumerate(["b", "c", "d"], start=2):
            self.table.apply(client, 1, index, Recorder())
        again = Recorder()
        self.table.apply("a", 1, 5, again)
        self.assertEqual(again.runs, 1)

    def test_errorsTouchTheSession(self) -> None:
        """A refused request of a known client still makes it the most recent."""
        self.table.apply("a", 1, 1, Recorder())
        self.table.apply("a", 3, 2, Recorder())
        self.table.apply("b", 1, 3, Recorder())
        self.table.apply("a", 2, 4, Recorder())  # skipped: refused
        self.assertEqual(self.table.lastIndex("a"), 4)
        self.assertEqual([s[0] for s in self.table.capture()], ["b", "a"])


class SessionSnapshotTests(SynchronousTestCase):
    """L{SessionTable.capture} and L{SessionTable.restore}."""

    def test_roundTrip(self) -> None:
        """
        A table restored from a capture (through JSON, as in a snapshot)
        decides every later request as the original does.
        """
        table = SessionTable(maxSessions=3, window=4)
        table.apply("a", 1, 1, Recorder("OK a1"))
        table.apply("b", 1, 2, Recorder("OK b1"), read=True)
        table.apply("a", 3, 3, Recorder("OK a3"))
        other = SessionTable(maxSessions=3, window=4)
        other.restore(json.loads(json.dumps(table.capture())))
        self.assertEqual(other.capture(), table.capture())
        for seq, index in [(1, 4), (3, 5), (2, 6), (4, 7)]:
            first, second = Recorder("OK new"), Recorder("OK new")
            self.assertEqual(
                other.apply("a", seq, index, second), table.apply("a", seq, index, first)
            )
            self.assertEqual(first.runs, second.runs)

    def test_restoreOrdersByIndex(self) -> None:
        """Restored sessions are ordered by their last index, whatever the list's order."""
        table = SessionTable()
        table.restore([["late", 1, 9, ["OK"]], ["early", 1, 2, ["OK"]]])
        self.assertEqual([s[0] for s in table.capture()], ["early", "late"])

    def test_restoreKeepsBounds(self) -> None:
        """
        A capture beyond this table's bounds keeps the most recent sessions
        and the newest answers, as applying would have.
        """
        table = SessionTable(maxSessions=2, window=2)
        table.restore([["a", 3, 1, ["1", "2", "3"]], ["b", 1, 2, ["1"]], ["c", 1, 3, ["1"]]])
        self.assertEqual(table.capture(), [["b", 1, 2, ["1"]], ["c", 1, 3, ["1"]]])
        table.restore([["a", 3, 1, ["1", "2", "3"]]])
        self.assertEqual(table.capture(), [["a", 3, 1, ["2", "3"]]])

    def test_restoreRefusesMalformed(self) -> None:
        """Anything but a capture is refused, and the table stays as it was."""
        table = SessionTable()
        table.apply("a", 1, 1, Recorder())
        before = table.capture()
        for state in [
            {},
            [["a", 1, 1]],
            [["a", 1, 1, ["OK"], 5]],
            ["a"],
            [["a b", 1, 1, []]],
            [[1, 1, 1, []]],
            [["a", 0, 1, []]],
            [["a", True, 1, []]],
            [["a", 1, -1, []]],
            [["a", 1, "1", []]],
            [["a", 1, 1, "OK"]],
            [["a", 1, 1, ["OK", "OK"]]],
            [["a", 1, 1, [1]]],
            [["a", 1, 1, []], ["a", 2, 2, []]],
            [["a", MAX_SEQ + 1, 1, []]],
        ]:
            with self.subTest(state=state):
                self.assertRaises(ValueError, table.restore, state)
                self.assertEqual(table.capture(), before)


class KeyValueSessionTests(SynchronousTestCase):
    """Numbered commands in L{KeyValueStore}, and its snapshot with sessions."""

    def test_numberedWritesRunOnce(self) -> None:
        """
        A numbered C{delete} applied twice (a retry that reached the log
        again) answers C{OK} both times, as its first run did, though a
        second run would say C{NOT_FOUND}; a retried C{set} does not undo a
        later write of another client.
        """
        store = KeyValueStore()
        self.assertEqual(store.apply("c#1@set k first", 1), "OK")
        self.assertEqual(store.apply("c#2@delete k", 2), "OK")
        self.assertEqual(store.apply("c#2@delete k", 3), "OK")
        self.assertEqual(store.apply("delete k", 4), "NOT_FOUND")
        self.assertEqual(store.apply("set k second", 5), "OK")
        self.assertEqual(store.apply("c#1@set k first", 6), "OK")
        self.assertEqual(store.data, {"k": "second"})

    def test_numberedSetInAnyForm(self) -> None:
        """
        A numbered C{set} written as a leader logs it (canonical) and one
        written otherwise (two spaces after the word, a value with spaces)
        both set what their parse says, and both run once.
        """
        store = KeyValueStore()
        self.assertEqual(store.apply("c#1@set  k v", 1), "OK")
        self.assertEqual(store.apply("c#2@set j  two words", 2), "OK")
        self.assertEqual(store.data, {"k": "v", "j": " two words"})
        store.apply("set k later", 3)
        self.assertEqual(store.apply("c#1@set  k v", 4), "OK")
        self.assertEqual(store.apply("c#2@set j  two words", 5), "OK")
        self.assertEqual(store.data, {"k": "later", "j": " two words"})
        self.assertEqual(store.sessions.highest("c"), 2)

    def test_numberedReads(self) -> None:
        """Numbered reads answer as reads do, and open a session."""
        store = KeyValueStore()
        store.apply("set k v", 1)
        self.assertEqual(store.apply("c#1@get k", 2), "OK v")
        self.assertEqual(store.apply("c#2@show", 3), 'OK {"k": "v"}')
        self.assertEqual(store.sessions.highest("c"), 2)

    def test_expiredChangesNothing(self) -> None:
        """A numbered command on an unknown session changes nothing."""
        store = KeyValueStore()
        self.assertEqual(store.apply("c#5@set k v", 1), answers.SESSION_EXPIRED)
        self.assertEqual(store.data, {})

    def test_unparsableNumberedCommand(self) -> None:
        """A forged numbered entry whose command does not parse changes nothing."""
        store = KeyValueStore()
        self.assertEqual(store.apply("c#1@bogus", 1), "ERROR unknown command 'bogus'")
        self.assertEqual(len(store.sessions), 0)

    def test_snapshotWithoutSessionsUnchanged(self) -> None:
        """With no session, a snapshot is the map alone, as before sessions existed."""
        store = KeyValueStore()
        store.apply("set a 1", 1)
        self.assertEqual(store.capture()(), b'{"a":"1"}')

    def test_snapshotWithSessions(self) -> None:
        """
        With sessions, a snapshot is the map's line, a newline, and the
        sessions' line; restored, a retry still gets its recorded answer.
        """
        store = KeyValueStore()
        store.apply("c#1@set k v", 7)
        store.apply("c#2@delete k", 8)
        data = store.capture()()
        self.assertEqual(data, b'{}\n[["c",2,8,["OK","OK"]]]')
        other = KeyValueStore()
        other.restore(data)
        self.assertEqual(other.apply("c#2@delete k", 9), "OK")
        self.assertEqual(other.sessions.lastIndex("c"), 9)

    def test_oldSnapshotLoads(self) -> None:
        """A snapshot written before sessions (the map alone) loads, with no session."""
        store = KeyValueStore()
        store.apply("c#1@set x y", 1)
        store.restore(b'{"a":"1","b":"hello world"}')
        self.assertEqual(store.data, {"a": "1", "b": "hello world"})
        self.assertEqual(len(store.sessions), 0)

    def test_badSessionsChangeNothing(self) -> None:
        """A snapshot with a good map but bad sessions is refused as a whole."""
        store = KeyValueStore()
        store.apply("c#1@set x y", 1)
        for data in [b'{"a":"1"}\nnot json', b'{"a":"1"}\n{}', b'{"a":"1"}\n']:
            self.assertRaises(ValueError, store.restore, data)
        self.assertEqual(store.data, {"x": "y"})
        self.assertEqual(store.sessions.highest("c"), 1)

    def test_restoreKeepsBounds(self) -> None:
        """A restored store keeps its session table's bounds."""
        store = KeyValueStore(SessionTable(maxSessions=1, window=2))
        store.restore(b'{}\n[["a",1,1,["OK"]],["b",1,2,["OK"]]]')
        self.assertEqual(store.sessions.maxSessions, 1)
        self.assertEqual(store.sessions.capture(), [["b", 1, 2, ["OK"]]])


class DriverTests(SynchronousTestCase):
    """
    Numbered requests through the driver of a one-node cluster whose stores
    outlive it, as a restarted process's files do.
    """

    def setUp(self) -> None:
        self.stores = (MemoryLogStore(), MemoryStateStore())
        self.snapshotStore = MemorySnapshotStore()

    def start(self, snapshotEntries: int | None = None) -> RaftNode:
        """A node (a new process) over the stores, elected leader."""
        self.clock = Clock()
        manager = LogManager(*self.stores, KeyValueStore(), self.snapshotStore)
        node = RaftNode(
            "s1",
            makeConfig(("s1",)),
            manager,
            self.clock,
            lambda peer, message: None,
            electionTicks=(10, 20),
            heartbeatTicks=3,
            rng=random.Random(7),
            snapshotEntries=snapshotEntries,
        )
        for _ in range(21):
            node.ticks(1)
        self.assertEqual(node.core.role, LEADER)
        return node

    def request(self, node: RaftNode, text: str, seq: int | None = None) -> str:
        """Client c's answer to C{text}, numbered C{seq}, once it is committed."""
        answer = clientRequest(node, "c", text, seq=seq)
        self.clock.advance(0)
        return self.successResultOf(defer.maybeDeferred(lambda: answer))

    def test_numberedCommandsGoThroughTheLog(self) -> None:
        """
        A numbered command is logged as C{CLIENTID#SEQ@COMMAND}, its command
        canonical; numbered reads are logged too, so their SEQ is recorded,
        though the leader answers unnumbered ones without a log entry.
        """
        node = self.start()
        self.assertEqual(self.request(node, "set  a 1", seq=1), "OK")
        self.assertEqual(self.request(node, "get a", seq=2), "OK 1")
        self.assertEqual(self.request(node, "get a"), "OK 1")
        commands = [e.command for e in self.stores[0].load()]
        self.assertEqual(commands, ["noop", "c#1@set a 1", "c#2@get a"])

    def test_seqWithoutClientIsUnnumbered(self) -> None:
        """
        A SEQ without a client ID opens no session (no line on the wire
        splits so, but the driver's interface allows it): the command is
        logged and applied as an unnumbered one.
        """
        node = self.start()
        for text in ("set a 1", "get a"):
            answer = clientRequest(node, None, text, seq=4)
            self.clock.advance(0)
            self.successResultOf(defer.maybeDeferred(lambda answer=answer: answer))
        commands = [e.command for e in self.stores[0].load()]
        self.assertEqual(commands, ["noop", "set a 1"])
        self.assertEqual(len(node.logManager.stateMachine.sessions), 0)

    def test_numberedStatusRefused(self) -> None:
        """
        C{status} is each node's own, not the log's: a numbered one is
        refused, and changes nothing.
        """
        node = self.start()
        self.assertEqual(
            UNNUMBERED_ONLY, "ERROR status takes no SEQ: each node answers it outside the log"
        )
        self.assertEqual(self.request(node, "status", seq=1), UNNUMBERED_ONLY)
        self.assertEqual(len(node.logManager.stateMachine.sessions), 0)

    def test_retryAfterRestart(self) -> None:
        """
        After a restart, which replays the log, the retry of a numbered
        C{delete} that ran gets its recorded C{OK}, not the C{NOT_FOUND} a
        second run would give.  Reference: dissertation section 6.3.
        """
        node = self.start()
        self.assertEqual(self.request(node, "set k v", seq=1), "OK")
        self.assertEqual(self.request(node, "delete k", seq=2), "OK")
        node.stop()
        node = self.start()
        self.assertEqual(self.request(node, "delete k", seq=2), "OK")
        self.assertEqual(self.request(node, "delete k"), "NOT_FOUND")
        self.assertEqual(self.request(node, "set k v", seq=1), "OK")
        self.assertEqual(node.logManager.stateMachine.data, {})

    def test_retryAfterSnapshot(self) -> None:
        """
        Sessions are part of the snapshot: once the log holding a numbered
        C{delete} is compacted away, a restarted node, which starts from the
        snapshot, still answers its retry with the recorded C{OK}.
        """
        node = self.start(snapshotEntries=3)
        self.assertEqual(self.request(node, "set k v", seq=1), "OK")
        self.assertEqual(self.request(node, "delete k", seq=2), "OK")
        snapshot = self.snapshotStore.load()
        self.assertIsNotNone(snapshot)
        self.assertEqual(snapshot.index, 3)
        self.assertEqual(self.stores[0].load(3), [])
        node.stop()
        node = self.start()
        self.assertEqual(node.core.log.compactedIndex, 3)
        self.assertEqual(self.request(node, "delete k", seq=2), "OK")
        self.assertEqual(self.request(node, "delete k"), "NOT_FOUND")


class LeaderChangeTests(SynchronousTestCase):
    """Numbered requests across a change of leader, in the simulation."""

    def submit(self, node: object, text: str, seq: int) -> list[str]:
        """Send client s9's C{text} numbered C{seq} to C{node}'s driver; its answer, to come."""
        answer = clientRequest(node.driver, "s9", text, seq=seq)  # type: ignore[attr-defined]
        results: list[str] = []
        defer.maybeDeferred(lambda: answer).addCallback(results.append)
        return results

    def test_retryAfterLeaderCrash(self) -> None:
        """
        A leader crashes once a follower holds a numbered C{delete} of it,
        before anyone answers its client; the new leader commits the entry.
        The client, which never got an answer, retries the same SEQ at the
        new leader: that entry is logged and committed too, but answers
        C{OK}, as the first did, and runs nowhere: the key another client
        wrote meanwhile stays.  Reference: dissertation section 6.3.
        """
        sim = calmSimulation(seed=2)
        leader = sim.leader()
        assert leader is not None
        opened = self.submit(leader, "set k v", 1)
        sim.runUntil(lambda: bool(opened), limitMs=1000)
        self.assertEqual(opened, ["OK"])
        lost = self.submit(leader, "delete k", 2)
        entry = "s9#2@delete k"

        def replicated() -> bool:
            return any(
                entry in (e.command for e in node.core.log.slice(1, node.core.log.lastIndex + 1))
                for node in followers(sim)
            )

        sim.runUntil(replicated, limitMs=1000)
        self.assertTrue(replicated())
        self.assertEqual(lost, [])
        sim.crash(leader, "killed by the test")
        sim.runUntil(lambda: sim.leader() not in (None, leader), limitMs=3000)
        newLeader = sim.leader()
        assert newLeader is not None
        retried = self.submit(newLeader, "delete k", 2)
        sim.runUntil(lambda: bool(retried), limitMs=1000)
        self.assertEqual(retried, ["OK"])
        rewritten = clientRequest(newLeader.driver, "other", "set k w")
        sim.runUntil(lambda: bool(rewritten.called), limitMs=1000)
        self.assertEqual(self.successResultOf(rewritten), "OK")
        retried = self.submit(newLeader, "delete k", 2)
        sim.runUntil(lambda: bool(retried), limitMs=1000)
        self.assertEqual(retried, ["OK"])
        committed = [e.command for e in sim.checker.committed]
        self.assertEqual(committed.count(entry), 3)
        sim.runUntil(lambda: sim.finished)
        sim.finish()
        for node in sim.nodes.values():
            self.assertEqual(node.stateMachine.data.get("k"), "w")
