"""
Tests for the C{backup} operator's command (L{txraft.admin}): the leader's
state machine, client sessions and membership as one snapshot file, taken
by the production driver (L{RaftNode}) on a L{Clock}.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.helpers import clientRequest
from tests.test_node import buildNode as buildNodeOf
from tests.test_node import electS1 as electS1Of
from tests.test_node import electSingleNode as electSingle
from txraft import answers
from txraft.admin import AdminError, encodeBackup, inThreads, parseAdmin
from txraft.kv import KeyValueStore
from txraft.membership import Membership
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Message,
    Snapshot,
)
from txraft.node import RaftNode
from txraft.snapshots import decodeSnapshot


class LaterRunner:
    """
    A background runner that holds each function until the test runs it,
    as a thread would run it some time later.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Callable[[], Any], defer.Deferred[Any]]] = []

    def __call__(self, function: Callable[[], Any]) -> defer.Deferred[Any]:
        """Hold C{function}; the Deferred fires once L{runNext} runs it."""
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append((function, d))
        return d

    def runNext(self) -> None:
        """Run the oldest function held, and fire its Deferred with the outcome."""
        function, d = self.pending.pop(0)
        defer.maybeDeferred(function).chainDeferred(d)


def buildNode(
    names: tuple[str, ...] = ("s1",), background: Callable[..., Any] | None = None
) -> tuple[RaftNode, Clock, list[tuple[str, Message]]]:
    """L{tests.test_node.buildNode}, its backups run by C{background}."""
    node, clock, sent = buildNodeOf(names)
    if background is not None:
        node.admin.background = background
    return node, clock, sent


def answerAppends(node: RaftNode, sent: list[tuple[str, Message]], peer: str = "s2") -> None:
    """Let C{peer} accept every AppendEntries s1 sent it (one majority of three)."""
    appends = [m for p, m in sent if p == peer and isinstance(m, AppendEntries)]
    sent.clear()
    for m in appends:
        match = m.prevLogIndex + len(m.entries)
        node.peerResponse(peer, AppendEntriesResponse(m.term, True, match, readRound=m.readRound))


def electS1(node: RaftNode, sent: list[tuple[str, Message]]) -> None:
    """Make s1 of three the leader (s2 votes for it) and commit its no-op."""
    electS1Of(node, sent)
    node.clock.advance(0)  # type: ignore[attr-defined]  # its no-op's fsync
    answerAppends(node, sent)
    assert node.core.commitIndex == node.core.log.lastIndex


def decodeAnswer(answer: str) -> Snapshot:
    """The snapshot an C{OK BASE64} answer to C{backup} carries."""
    value = answers.okValue(answer)
    assert value is not None, answer
    return decodeSnapshot(base64.b64decode(value, validate=True), "the backup")


def restored(snapshot: Snapshot) -> KeyValueStore:
    """A key-value store restored from C{snapshot}."""
    store = KeyValueStore()
    store.restore(snapshot.data)
    return store


class BackupTests(SynchronousTestCase):
    """The leader answers C{backup} with a snapshot file of its state."""

    def test_leaderAnswersWithSnapshotFile(self) -> None:
        """
        The answer is C{OK} and the base64 of a valid snapshot file (version
        2) as of the leader's last applied index: the map, the numbered
        client's session, and the membership, named in full although the
        cluster still runs on its config file.
        """
        node, clock, _ = buildNode()
        electSingle(node)
        clientRequest(node, "c1", "set a 1", seq=1)
        clientRequest(node, None, "set b two words")
        clock.advance(0)
        answer = clientRequest(node, None, "backup")
        clock.advance(0)
        snapshot = decodeAnswer(self.successResultOf(answer))
        manager = node.logManager
        self.assertEqual(
            (snapshot.index, snapshot.term), (manager.lastApplied, node.core.currentTerm)
        )
        self.assertEqual(snapshot.membership, "membership voter s1 127.0.0.1 10000")
        store = restored(snapshot)
        self.assertEqual(store.data, {"a": "1", "b": "two words"})
        self.assertEqual(store.sessions.capture(), manager.stateMachine.sessions.capture())
        self.assertEqual([session[0] for session in store.sessions.capture()], ["c1"])

    def test_membershipOfTheLog(self) -> None:
        """
        Once the log holds a membership, the backup has the one applied by
        its index (learners included), as the node's own snapshots do.
        """
        membership = "membership voter s1 127.0.0.1 10000 learner s4 127.0.0.1 10003"
        snapshot = Snapshot(3, 1, b"{}", membership)
        self.assertEqual(decodeAnswer(encodeBackup(snapshot, Membership())).membership, membership)

    def test_followerRedirects(self) -> None:
        """
        A follower answers C{REDIRECT} to the leader it knows, and a node
        that knows none C{UNAVAILABLE}, as for any other command.
        """
        node, _, _ = buildNode(("s1", "s2", "s3"))
        self.assertEqual(clientRequest(node, None, "backup"), answers.NO_LEADER)
        node.peerRequest("s2", AppendEntries(1, 0, 0, (Entry(1, 1, "set a 1"),), 1))
        self.assertEqual(
            clientRequest(node, None, "backup"), answers.redirect("s2", "127.0.0.1", 10001)
        )

    def test_waitsForTheReadIndex(self) -> None:
        """
        The leader answers only once a majority confirmed it still leads
        (ReadIndex), so the backup holds every write acknowledged before it
        was asked for, by this leader or a newer one.  Reference:
        dissertation section 6.4.
        """
        node, clock, sent = buildNode(("s1", "s2", "s3"))
        electS1(node, sent)
        write = clientRequest(node, None, "set a 1")
        clock.advance(0)
        answerAppends(node, sent)
        self.assertEqual(self.successResultOf(write), answers.OK)
        answer = clientRequest(node, None, "backup")
        clock.advance(0)
        self.assertNoResult(answer)
        answerAppends(node, sent)
        snapshot = decodeAnswer(self.successResultOf(answer))
        self.assertEqual(snapshot.index, node.core.commitIndex)
        self.assertEqual(restored(snapshot).data, {"a": "1"})

    def test_deposedBeforeConfirmed(self) -> None:
        """A leader deposed before the read index is confirmed says so, and takes none."""
        runner = LaterRunner()
        node, clock, sent = buildNode(("s1", "s2", "s3"), background=runner)
        electS1(node, sent)
        answer = clientRequest(node, None, "backup")
        clock.advance(0)
        term = node.core.currentTerm + 1
        node.peerRequest("s2", AppendEntries(term, 0, 0, (), 0))
        self.assertEqual(self.successResultOf(answer), answers.READ_LEADERSHIP_LOST)
        self.assertEqual(runner.pending, [])

    def test_serializedLaterAsOfOneIndex(self) -> None:
        """
        The state is frozen when the backup is taken and serialized by the
        background runner afterwards: writes applied in between are not in
        it, and its index is that of the frozen state.
        """
        runner = LaterRunner()
        node, clock, _ = buildNode(background=runner)
        electSingle(node)
        clientRequest(node, None, "set a 1")
        clock.advance(0)
        index = node.logManager.lastApplied
        answer = clientRequest(node, None, "backup")
        clock.advance(0)
        self.assertEqual(len(runner.pending), 1)
        clientRequest(node, None, "set a 2")
        clock.advance(0)
        self.assertGreater(node.logManager.lastApplied, index)
        self.assertNoResult(answer)
        runner.runNext()
        snapshot = decodeAnswer(self.successResultOf(answer))
        self.assertEqual(snapshot.index, index)
        self.assertEqual(restored(snapshot).data, {"a": "1"})

    def test_oneAtATime(self) -> None:
        """
        A backup asked for while another is serialized waits for it (one
        frozen copy of the map at a time), then is taken afresh.
        """
        runner = LaterRunner()
        node, clock, _ = buildNode(background=runner)
        electSingle(node)
        first = clientRequest(node, None, "backup")
        second = clientRequest(node, None, "backup")
        clock.advance(0)
        self.assertEqual(len(runner.pending), 1)
        clientRequest(node, None, "set a 1")
        clock.advance(0)
        runner.runNext()
        self.assertEqual(restored(decodeAnswer(self.successResultOf(first))).data, {})
        self.assertNoResult(second)
        clock.advance(0)
        runner.runNext()
        self.assertEqual(restored(decodeAnswer(self.successResultOf(second))).data, {"a": "1"})

    def test_failureAnswered(self) -> None:
        """A backup that cannot be serialized is answered C{ERROR}, and logged."""

        def failing(function: Callable[[], Any]) -> defer.Deferred[Any]:
            return defer.fail(MemoryError("out of memory"))

        node, clock, _ = buildNode(background=failing)
        electSingle(node)
        answer = clientRequest(node, None, "backup")
        clock.advance(0)
        self.assertEqual(self.successResultOf(answer), "ERROR backup failed: out of memory")
        self.assertEqual(len(self.flushLoggedErrors(MemoryError)), 1)
        second = clientRequest(node, None, "backup")
        node.admin.background = defer.maybeDeferred
        clock.advance(0)
        self.assertTrue(self.successResultOf(second).startswith("OK "))

    def test_noArgumentsNoSeq(self) -> None:
        """C{backup} takes no arguments, and no SEQ: it is no command of the log."""
        self.assertRaisesRegex(AdminError, "backup takes no arguments", parseAdmin, "backup x")
        node, _, _ = buildNode()
        electSingle(node)
        self.assertTrue(clientRequest(node, "c1", "backup", seq=1).startswith("ERROR "))


@implementer(IReactorThreads)
class ThreadedClock(Clock):
    """A clock with a thread pool whose work waits until the test runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.work: list[tuple[Callable[..., None], Callable[[], Any]]] = []

    def getThreadPool(self) -> ThreadedClock:
        """This clock is its own pool."""
        return self

    def callInThreadWithCallback(
        self, onResult: Callable[..., None], function: Callable[[], Any]
    ) -> None:
        """Keep C{function} and where its result goes."""
        self.work.append((onResult, function))

    def callFromThread(self, function: Callable[..., Any], *args: Any) -> None:
        """Back on the event loop: at once."""
        function(*args)


class InThreadsTests(SynchronousTestCase):
    """Where a node serializes its backups: L{inThreads}."""

    def test_reactorThreadPool(self) -> None:
        """On a reactor with threads, the function runs in its thread pool."""
        clock = ThreadedClock()
        d = inThreads(clock)(lambda: "serialized")
        self.assertNoResult(d)
        ((onResult, function),) = clock.work
        onResult(True, function())
        self.assertEqual(self.successResultOf(d), "serialized")

    def test_plainClock(self) -> None:
        """On a clock without threads (tests, the simulation), it runs at once."""
        self.assertEqual(self.successResultOf(inThreads(Clock())(lambda: 3)), 3)
