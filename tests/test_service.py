"""
Tests for L{txraft.service.RaftService}: the Twisted shell around the core.

Most tests drive one node on a L{MemoryReactorClock} and play its peers by
calling L{RaftService.node.peerRequest} and L{RaftService.node.peerResponse} directly;
L{LoopbackClusterTests} runs three nodes over real loopback TCP.
"""

from __future__ import annotations

import gc
import json
import os
import random
import socket
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import txraft.service
from tests.helpers import (
    ELECTION_TICKS,
    HEARTBEAT_TICKS,
    TICK_SECONDS,
    RecordingLogStore,
    RecordingStateStore,
    advanceUntil,
    buildService,
    clientRequest,
    makeConfig,
    temporaryDirectory,
)
from txraft.config import ClusterConfig, NodeAddress
from txraft.core import CANDIDATE, FOLLOWER, LEADER, PRECANDIDATE
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    RequestVote,
    RequestVoteResponse,
    formatMessage,
)
from txraft.node import RaftNode
from txraft.protocol import CONNECTION_DONE, NodeFactory, NodeProtocol
from txraft.service import RaftService
from txraft.snapshots import MemorySnapshotStore
from txraft.snapshotting import inBackground
from txraft.storage import FileLogStore, FileStateStore, MemoryLogStore, MemoryStateStore
from txraft.testing.localcluster import freePorts


def connect(service: RaftService) -> tuple[NodeProtocol, StringTransport]:
    """
    Open an in-memory connection to C{service} through the factory it
    listens with.
    """
    node = NodeFactory(service.node).buildProtocol(None)
    transport = StringTransport()
    node.makeConnection(transport)
    return node, transport


class SingleNodeTests(SynchronousTestCase):
    """
    A one-node cluster: it elects itself and commits alone.
    """

    def setUp(self) -> None:
        """
        Start node C{s1} of a one-node cluster on a fake reactor, with a log
        store that records its calls.
        """
        self.reactor = MemoryReactorClock()
        self.logStore = RecordingLogStore()
        self.service = buildService(
            makeConfig(["s1"], [10000]), "s1", self.reactor, logStore=self.logStore
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def becomeLeader(self) -> None:
        """
        Advance the clock until C{s1} leads, then clear the store's record.
        """
        advanceUntil(self.reactor, lambda: self.service.node.core.role == LEADER)
        self.reactor.advance(0)
        self.logStore.events.clear()

    def test_startupObjectsLeftToReferenceCounting(self) -> None:
        """
        Whatever exists once a node has started is exempt from the cyclic
        garbage collector (C{gc.freeze}): a full collection no longer walks
        the tens of thousands of objects of its startup, which under load
        stalled the event loop long enough to lose the leadership.
        """
        marker: list[object] = []
        service = buildService(makeConfig(["s1"], [10001]), "s1", MemoryReactorClock())
        self.assertTrue(any(o is marker for o in gc.get_objects()))
        service.startService()
        self.addCleanup(service.stopService)
        self.assertFalse(any(o is marker for o in gc.get_objects()))

    def test_listensOnConfiguredAddress(self) -> None:
        """
        Starting the service listens on the node's host and port from the
        cluster config.
        """
        [(port, factory, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (10000, "127.0.0.1"))
        self.assertIsInstance(factory, NodeFactory)

    def test_electsItself(self) -> None:
        """
        A single node becomes leader once its election timeout passes, in
        a term it voted for itself in (Reference: section 5.2).
        """
        ticks = advanceUntil(self.reactor, lambda: self.service.node.core.role == LEADER)
        self.assertLessEqual(ticks, ELECTION_TICKS[1] + 1)
        status = self.service.node.status()
        self.assertEqual((status["role"], status["leader"], status["term"]), (LEADER, "s1", 1))

    def test_afterStall(self) -> None:
        """
        After a stall of many tick intervals (a paused process) the clock
        goes on ticking: the node still elects itself within one election
        timeout of normal ticks.
        """
        self.reactor.advance(100)
        ticks = advanceUntil(self.reactor, lambda: self.service.node.core.role == LEADER)
        self.assertLessEqual(ticks, ELECTION_TICKS[1] + 1)

    def test_setAnsweredAfterApplied(self) -> None:
        """
        C{set} is answered C{OK} only once its entry is durable and applied:
        the answer comes after the log sync, and the value is in the state
        machine by then (linearizable writes, Reference: section 8).
        """
        self.becomeLeader()
        seen = []
        d = clientRequest(self.service.node, None, "set a 1")
        d.addCallback(
            lambda reply: seen.append(
                (
                    reply,
                    list(self.logStore.durable),
                    dict(self.service.logManager.stateMachine.data),
                )
            )
        )
        self.assertNoResult(d)
        self.reactor.advance(0)
        [(reply, durable, data)] = seen
        self.assertEqual(reply, "OK")
        self.assertEqual(durable[-1].command, "set a 1")
        self.assertEqual(data, {"a": "1"})

    def test_commands(self) -> None:
        """
        get/set/delete/show through the service give the state machine's
        replies.
        """
        self.becomeLeader()
        requests = ["get a", "set a x y", "get a", "set b 2", "show", "delete a", "delete a"]
        results = [clientRequest(self.service.node, "c1", text) for text in requests]
        self.reactor.advance(0)
        self.assertEqual(
            [self.successResultOf(d) for d in results],
            [
                "NOT_FOUND",
                "OK",
                "OK x y",
                "OK",
                'OK {"a": "x y", "b": "2"}',
                "OK",
                "NOT_FOUND",
            ],
        )

    def test_overTheProtocol(self) -> None:
        """
        Pipelined requests over a connection are answered in order once
        applied, each with one line.
        """
        self.becomeLeader()
        node, transport = connect(self.service)
        node.dataReceived(b"c1@set a 1\r\nget a\nbogus\nset k a@b\nget k\n")
        self.assertEqual(transport.value(), b"")
        self.reactor.advance(0)
        self.assertEqual(
            transport.value(), b"OK\nOK 1\nERROR unknown command 'bogus'\nOK\nOK a@b\n"
        )

    def test_badCommandAnsweredAtOnce(self) -> None:
        """
        A malformed command gets C{ERROR} at once and is not logged.
        """
        self.becomeLeader()
        self.assertEqual(
            clientRequest(self.service.node, None, "set a"),
            "ERROR set needs a value after the key",
        )
        self.reactor.advance(0)
        self.assertEqual(self.logStore.events, [])

    def test_status(self) -> None:
        """
        C{status} is answered at once, by any node, with a JSON object of
        the node's name, role, term, leader, commitIndex and lastIndex.
        """
        before = json.loads(clientRequest(self.service.node, None, "status").removeprefix("OK "))
        self.assertEqual(
            {k: before[k] for k in ["name", "role", "term", "leader", "commitIndex", "lastIndex"]},
            {
                "name": "s1",
                "role": FOLLOWER,
                "term": 0,
                "leader": None,
                "commitIndex": 0,
                "lastIndex": 0,
            },
        )
        self.becomeLeader()
        clientRequest(self.service.node, None, "set a 1")
        self.reactor.advance(0)
        reply = clientRequest(self.service.node, "c9", " status ")
        self.assertTrue(reply.startswith("OK {"), reply)
        after = json.loads(reply[3:])
        self.assertEqual(
            {k: after[k] for k in ["name", "role", "term", "leader", "commitIndex", "lastIndex"]},
            {
                "name": "s1",
                "role": LEADER,
                "term": 1,
                "leader": "s1",
                "commitIndex": 2,
                "lastIndex": 2,
            },
        )

    def test_groupCommit(self) -> None:
        """
        Commands that arrive in one reactor turn share one append and one
        fsync; a command in a later turn gets its own, and a read none.
        """
        self.becomeLeader()
        results = [clientRequest(self.service.node, None, f"set k{i} {i}") for i in range(5)]
        self.assertEqual(self.logStore.events, [])
        self.reactor.advance(0)
        [(append, entries), (sync, _)] = self.logStore.events
        self.assertEqual((append, sync), ("append", "sync"))
        self.assertEqual([e.command for e in entries], [f"set k{i} {i}" for i in range(5)])
        self.assertEqual([self.successResultOf(d) for d in results], ["OK"] * 5)
        self.logStore.events.clear()
        later = clientRequest(self.service.node, None, "delete k3")
        self.reactor.advance(0)
        self.assertEqual(self.successResultOf(later), "OK")
        self.assertEqual([name for name, _ in self.logStore.events], ["append", "sync"])
        self.logStore.events.clear()
        read = clientRequest(self.service.node, None, "get k4")
        self.reactor.advance(0)
        self.assertEqual(self.successResultOf(read), "OK 4")
        self.assertEqual(self.logStore.events, [])

    def test_storageFailureStopsAcknowledging(self) -> None:
        """
        A log write that fails stops the node from acknowledging anything,
        but not its reactor: waiting clients are answered C{UNAVAILABLE},
        C{status} reports the error, and no later command is acknowledged
        (a node whose memory is ahead of its disk must not speak).
        """
        self.becomeLeader()
        self.logStore.failWrites = True
        waiting = clientRequest(self.service.node, None, "set a 1")
        self.reactor.advance(0)
        self.assertTrue(self.successResultOf(waiting).startswith("UNAVAILABLE "))
        self.assertFalse(self.reactor.hasStopped)
        self.assertIn("diskError", self.service.node.status())
        self.assertEqual(len(self.flushLoggedErrors()), 0)
        later = clientRequest(self.service.node, None, "get a")
        self.reactor.advance(0)
        answer = later if isinstance(later, str) else self.successResultOf(later)
        self.assertTrue(answer.startswith("UNAVAILABLE "), answer)

    def test_stop(self) -> None:
        """
        Stopping the service stops its clock and its children (the
        LogManager and the peer links).
        """
        self.becomeLeader()
        term = self.service.node.core.currentTerm
        self.service.stopService()
        self.assertFalse(self.service.running)
        self.assertFalse(self.service.logManager.running)
        self.reactor.advance(10)
        self.assertEqual(self.service.node.core.currentTerm, term)

    def test_stopAnswersBatched(self) -> None:
        """
        A command received in the same reactor turn as the stop (batched,
        not yet proposed) still gets exactly one answer.
        """
        self.becomeLeader()
        batched = clientRequest(self.service.node, None, "set a 1")
        self.service.stopService()
        self.reactor.advance(1)
        self.assertTrue(self.successResultOf(batched).startswith("UNAVAILABLE "))


class ThreeNodeTests(SynchronousTestCase):
    """
    Node C{s1} of a three-node cluster on a fake reactor; the tests play
    C{s2} and C{s3}.
    """

    def setUp(self) -> None:
        """
        Start C{s1} with recording stores.
        """
        self.reactor = MemoryReactorClock()
        self.events: list[tuple[str, object]] = []
        self.logStore = RecordingLogStore(self.events)
        self.stateStore = RecordingStateStore(self.events)
        self.service = buildService(
            makeConfig(),
            "s1",
            self.reactor,
            logStore=self.logStore,
            stateStore=self.stateStore,
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def becomeLeader(self) -> int:
        """
        Let C{s1} campaign, give it C{s2}'s pre-vote and vote, and
        acknowledge its no-op; return its term.
        """
        advanceUntil(self.reactor, lambda: self.service.node.core.role == PRECANDIDATE)
        term = self.service.node.core.currentTerm + 1
        self.service.node.peerResponse("s2", RequestVoteResponse(term, True, preVote=True))
        self.assertEqual(self.service.node.core.role, CANDIDATE)
        self.service.node.peerResponse("s2", RequestVoteResponse(term, True))
        self.assertEqual(self.service.node.core.role, LEADER)
        self.reactor.advance(0)  # the turn that makes its no-op durable
        self.service.node.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=1))
        self.assertEqual(self.service.node.core.commitIndex, 1)
        return term

    def test_linksFollowMembership(self) -> None:
        """
        A member added to the membership gets a link as soon as its entry is
        in the log; a removed one loses its link.
        """
        self.becomeLeader()
        self.assertEqual(sorted(self.service.linkedPeers()), ["s2", "s3"])
        node = self.service.node
        added = clientRequest(node, None, "add-learner s4 127.0.0.1 10003")
        self.reactor.advance(0)
        self.assertEqual(self.service.linkedPeers()["s4"], NodeAddress("s4", "127.0.0.1", 10003))
        self.assertIn(("127.0.0.1", 10003), [(h, p) for h, p, *_ in self.reactor.tcpClients])
        term, index = node.core.currentTerm, node.core.log.lastIndex
        node.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=index))
        self.assertEqual(self.successResultOf(added), "OK")
        removed = clientRequest(node, None, "remove s3")
        self.reactor.advance(0)
        self.assertEqual(sorted(self.service.linkedPeers()), ["s2", "s4"])
        node.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=index + 1))
        self.assertEqual(self.successResultOf(removed), "OK")

    def test_connectsToPeers(self) -> None:
        """
        Starting the service starts connecting to every other node.
        """
        self.reactor.advance(0)
        targets = sorted((host, port) for host, port, *_ in self.reactor.tcpClients)
        self.assertEqual(targets, [("127.0.0.1", 10001), ("127.0.0.1", 10002)])

    def test_noLeaderKnown(self) -> None:
        """
        A follower that knows no leader answers commands C{UNAVAILABLE no
        leader known}, at once, and logs nothing.
        """
        for command in ["get a", "set a 1", "delete a", "show"]:
            self.assertEqual(
                clientRequest(self.service.node, None, command), "UNAVAILABLE no leader known"
            )
        self.assertEqual(self.logStore.events, [])

    def test_redirect(self) -> None:
        """
        A follower that heard from a leader redirects commands to it with
        the leader's address from the config.
        """
        self.service.node.peerRequest("s2", AppendEntries(1, 0, 0, (), 0))
        self.assertEqual(
            clientRequest(self.service.node, "c1", "get a"), "REDIRECT s2 127.0.0.1 10001"
        )
        node, transport = connect(self.service)
        node.dataReceived(b"set a 1\nstatus\n")
        lines = transport.value().split(b"\n")
        self.assertEqual(lines[0], b"REDIRECT s2 127.0.0.1 10001")
        status = json.loads(lines[1].removeprefix(b"OK "))
        self.assertEqual((status["role"], status["leader"], status["term"]), (FOLLOWER, "s2", 1))

    def test_candidateHasNoLeader(self) -> None:
        """
        A node campaigning (here in its pre-vote round) knows no leader:
        commands get C{UNAVAILABLE}.
        """
        advanceUntil(self.reactor, lambda: self.service.node.core.role == PRECANDIDATE)
        self.assertEqual(
            clientRequest(self.service.node, None, "get a"), "UNAVAILABLE no leader known"
        )

    def test_okOnlyAfterMajority(self) -> None:
        """
        The leader answers C{set} only once a majority (itself and one
        follower) stores the entry and it is applied (Reference: section
        5.3, Figure 2 "Rules for Servers", leaders).
        """
        term = self.becomeLeader()
        node, transport = connect(self.service)
        node.dataReceived(b"set a 1\nstatus\n")
        self.reactor.advance(0)
        self.assertEqual(self.service.node.core.log.lastIndex, 2)
        self.assertEqual(self.service.logManager.stateMachine.data, {})
        self.assertEqual(transport.value(), b"")
        self.service.node.peerResponse("s3", AppendEntriesResponse(term, True, matchIndex=1))
        self.assertEqual(transport.value(), b"")
        self.service.node.peerResponse("s3", AppendEntriesResponse(term, True, matchIndex=2))
        [ok, status, _] = transport.value().split(b"\n")
        self.assertEqual(ok, b"OK")
        self.assertEqual(self.service.logManager.stateMachine.data, {"a": "1"})
        # status is answered when it arrives, but written after the set's answer.
        self.assertEqual(json.loads(status[3:])["role"], LEADER)

    def test_leadershipLostBeforeCommit(self) -> None:
        """
        When the leader steps down on seeing a higher term (here in a
        follower's answer), clients waiting
        for uncommitted commands are told C{UNAVAILABLE leadership lost
        before commit}: the outcome is unknown (Reference: section 5.1).
        """
        term = self.becomeLeader()
        waiting = clientRequest(self.service.node, None, "set a 1")
        self.reactor.advance(0)
        self.assertNoResult(waiting)
        self.service.node.peerResponse("s3", AppendEntriesResponse(term + 1, False))
        self.assertEqual(self.service.node.core.role, FOLLOWER)
        self.assertEqual(
            self.successResultOf(waiting), "UNAVAILABLE leadership lost before commit"
        )
        self.assertEqual(
            clientRequest(self.service.node, None, "get a"), "UNAVAILABLE no leader known"
        )

    def test_stepDownToNewLeader(self) -> None:
        """
        A leader that receives AppendEntries of a later term follows the new
        leader: waiting clients get C{UNAVAILABLE}, new ones a redirect.
        """
        term = self.becomeLeader()
        node, transport = connect(self.service)
        node.dataReceived(b"set a 1\nset b 2\n")
        self.reactor.advance(0)
        self.service.node.peerRequest("s3", AppendEntries(term + 1, 1, term, (), 1))
        self.assertEqual(
            transport.value(),
            b"UNAVAILABLE leadership lost before commit\n"
            b"UNAVAILABLE leadership lost before commit\n",
        )
        node.dataReceived(b"get a\n")
        self.assertTrue(transport.value().endswith(b"REDIRECT s3 127.0.0.1 10002\n"))

    def test_batchedWhenSteppingDown(self) -> None:
        """
        Commands batched in the turn the leader steps down are answered as a
        follower would answer them.
        """
        term = self.becomeLeader()
        batched = clientRequest(self.service.node, None, "set a 1")
        self.service.node.peerRequest("s3", AppendEntries(term + 1, 1, term, (), 1))
        self.reactor.advance(0)
        self.assertEqual(self.successResultOf(batched), "REDIRECT s3 127.0.0.1 10002")

    def test_followerReplicates(self) -> None:
        """
        A follower stores a leader's entries durably before acknowledging
        them, and applies what the leader says is committed.
        """
        entries = (Entry(1, 1, "noop"), Entry(2, 1, "set a 1"))
        reply = self.service.node.peerRequest("s2", AppendEntries(1, 0, 0, entries, 2))
        self.assertEqual(reply, AppendEntriesResponse(1, True, matchIndex=2))
        self.assertEqual(self.logStore.durable, list(entries))
        self.assertEqual(self.service.logManager.stateMachine.data, {"a": "1"})
        self.assertEqual(self.service.logManager.lastApplied, 2)

    def test_termPersistedBeforeVote(self) -> None:
        """
        A vote is saved before it is granted (Figure 2: persistent state is
        updated on stable storage before responding to RPCs).
        """
        reply = self.service.node.peerRequest("s2", RequestVote(4, 0, 0))
        self.assertEqual(reply, RequestVoteResponse(4, True))
        self.assertEqual(self.stateStore.load().currentTerm, 4)
        self.assertEqual(self.stateStore.load().votedFor, "s2")

    def test_failedLogWriteNotAcknowledged(self) -> None:
        """
        A follower whose log write fails does not acknowledge the entries:
        the leader must not count them as stored (Figure 2).
        """
        self.logStore.failWrites = True
        node, transport = connect(self.service)
        line = formatMessage("s2", AppendEntries(1, 0, 0, (Entry(1, 1, "noop"),), 0))
        node.dataReceived(line.encode() + b"\n")
        self.assertNotIn(b'"success":true', transport.value())
        self.assertEqual(transport.value().count(b"\n"), 1)
        self.assertIn("diskError", self.service.node.status())

    def test_failedVoteWriteNotGranted(self) -> None:
        """
        A vote that cannot be saved is not granted.
        """
        self.stateStore.failWrites = True
        node, transport = connect(self.service)
        node.dataReceived(formatMessage("s2", RequestVote(4, 0, 0)).encode() + b"\n")
        self.assertNotIn(b'"voteGranted":true', transport.value())
        self.assertEqual(transport.value().count(b"\n"), 1)
        self.assertIn("diskError", self.service.node.status())

    def test_stopAnswersWaiting(self) -> None:
        """
        Stopping a leader first tries to hand its leadership over; when no
        peer answers, the transfer is given up after an election timeout, the
        node stops, and clients whose commands await commit get
        C{UNAVAILABLE}.
        """
        self.becomeLeader()
        waiting = clientRequest(self.service.node, None, "set a 1")
        self.reactor.advance(0)
        stopped = self.service.stopService()
        self.assertNoResult(stopped)
        self.assertNoResult(waiting)
        advanceUntil(self.reactor, lambda: bool(stopped.called), limit=ELECTION_TICKS[0] + 2)
        self.assertEqual(self.successResultOf(waiting), "UNAVAILABLE node is shutting down")

    def test_stoppedNodeTicksNoMore(self) -> None:
        """
        A stopped node's clock stops: it never campaigns.
        """
        self.service.stopService()
        self.reactor.advance(10)
        self.assertEqual(self.service.node.core.role, FOLLOWER)
        self.assertEqual(self.service.node.core.currentTerm, 0)

    def test_stoppedNodeSilent(self) -> None:
        """
        Once stopped, a node no longer answers peers on connections it
        accepted before: it must not vote or acknowledge entries it can no
        longer store.
        """
        node, transport = connect(self.service)
        self.service.stopService()
        node.dataReceived(formatMessage("s2", RequestVote(5, 0, 0)).encode() + b"\n")
        self.assertNotIn(b'"voteGranted":true', transport.value())
        self.assertEqual(self.service.node.core.currentTerm, 0)


class WiredPeerTests(SynchronousTestCase):
    """
    Node C{s1} of a three-node cluster on a fake reactor, with its outgoing
    peer connections completed over in-memory transports: the tests read
    what it sends to C{s2} and C{s3} and answer on those connections.
    """

    def setUp(self) -> None:
        """
        Start C{s1} and complete its connections to C{s2} and C{s3}.
        """
        self.reactor = MemoryReactorClock()
        self.logStore = RecordingLogStore()
        self.service = buildService(makeConfig(), "s1", self.reactor, logStore=self.logStore)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.reactor.advance(0)
        self.peers = {}
        for _, port, factory, *_ in self.reactor.tcpClients:
            name = {10001: "s2", 10002: "s3"}[port]
            peer = factory.buildProtocol(None)
            transport = StringTransport()
            peer.makeConnection(transport)
            self.peers[name] = (peer, transport)

    def sent(self, name: str) -> list[str]:
        """
        The lines C{s1} sent to peer C{name} since the last call.
        """
        _, transport = self.peers[name]
        lines = transport.value().decode("utf-8").splitlines()
        transport.clear()
        return lines

    def answer(self, name: str, message: object) -> None:
        """
        Send C{message} from peer C{name} as the response to the oldest
        request on its connection.
        """
        peer, _ = self.peers[name]
        peer.dataReceived(formatMessage(name, message).encode() + b"\n")

    def test_lostLinkForgotten(self) -> None:
        """
        Once a peer's connection is lost, the link no longer writes to it:
        it knows it is down.
        """
        peer, _ = self.peers["s2"]
        self.assertIsNotNone(self.service._links["s2"].protocol)
        peer.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.service._links["s2"].protocol)

    def test_backlogSentOnConnect(self) -> None:
        """
        A request made while a peer's link is down (here a pre-vote to a
        peer still starting) goes out as soon as the link connects, instead
        of waiting a whole election timeout for the next one.
        """
        peer, _ = self.peers["s2"]
        peer.connectionLost(Failure(ConnectionDone()))
        advanceUntil(self.reactor, lambda: self.service.node.core.role == PRECANDIDATE)
        preVote = formatMessage("s1", RequestVote(1, 0, 0, preVote=True))
        self.assertEqual(self.sent("s3"), [preVote])
        protocol = self.service._links["s2"]._buildProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value().decode().splitlines(), [preVote])

    def becomeLeader(self) -> int:
        """
        Let C{s1} campaign; answer its pre-votes, RequestVotes and then its
        no-op on the wire, granting and acknowledging; return its term.
        """
        advanceUntil(self.reactor, lambda: self.service.node.core.role == PRECANDIDATE)
        term = self.service.node.core.currentTerm + 1
        preVote = RequestVote(term, 0, 0, preVote=True)
        for name in ["s2", "s3"]:
            self.assertEqual(self.sent(name), [formatMessage("s1", preVote)])
        for name in ["s2", "s3"]:
            self.answer(name, RequestVoteResponse(term, True, preVote=True))
        self.assertEqual(self.service.node.core.role, CANDIDATE)
        for name in ["s2", "s3"]:
            self.assertEqual(self.sent(name), [formatMessage("s1", RequestVote(term, 0, 0))])
        for name in ["s2", "s3"]:
            self.answer(name, RequestVoteResponse(term, True))
        self.assertEqual(self.service.node.core.role, LEADER)
        self.reactor.advance(0)  # the turn that makes its no-op durable
        for name in ["s2", "s3"]:
            [line] = self.sent(name)
            self.assertTrue(line.startswith("s1@AppendEntries "), line)
            self.answer(name, AppendEntriesResponse(term, True, matchIndex=1))
        self.assertEqual(self.service.node.core.commitIndex, 1)
        return term

    def test_electionOnTheWire(self) -> None:
        """
        A candidate asks every peer for its vote over its connection and
        becomes leader on a majority of answers (Reference: section 5.2).
        """
        term = self.becomeLeader()
        self.assertEqual(self.service.node.status()["leader"], "s1")
        self.assertEqual(self.service.node.status()["term"], term)

    def test_groupCommitOneAppendPerFollower(self) -> None:
        """
        Commands that arrive in one reactor turn share one AppendEntries per
        follower, and they are answered once a follower acknowledges it.
        """
        term = self.becomeLeader()
        node, transport = connect(self.service)
        node.dataReceived(b"".join(b"set k%d %d\n" % (i, i) for i in range(5)))
        self.logStore.events.clear()
        self.reactor.advance(0)
        # Sent before the leader's own fsync (dissertation section 10.2.1).
        self.assertEqual([name for name, _ in self.logStore.events], ["append", "sync"])
        for name in ["s2", "s3"]:
            [line] = self.sent(name)
            self.assertEqual(
                line,
                formatMessage(
                    "s1",
                    AppendEntries(
                        term,
                        1,
                        term,
                        tuple(Entry(i + 2, term, f"set k{i} {i}") for i in range(5)),
                        1,
                    ),
                ),
            )
        self.assertEqual(transport.value(), b"")
        self.answer("s3", AppendEntriesResponse(term, True, matchIndex=6))
        self.assertEqual(transport.value(), b"OK\n" * 5)

    def test_unknownOutcomeTimesOut(self) -> None:
        """
        A command the leader cannot commit (no follower answers) is answered
        C{UNAVAILABLE} after a while (the leader steps down once it misses a
        majority, or the command times out), and when a later leader commits
        it anyway, the client is not answered a second time: exactly one
        response per request.
        """
        term = self.becomeLeader()
        node, transport = connect(self.service)
        node.dataReceived(b"set a 1\n")
        self.reactor.advance(0)
        advanceUntil(self.reactor, lambda: transport.value() != b"", limit=2000)
        self.assertTrue(transport.value().startswith(b"UNAVAILABLE "), transport.value())
        self.assertEqual(transport.value().count(b"\n"), 1)
        self.service.node.peerRequest("s2", AppendEntries(term + 1, 2, term, (), 2))
        self.assertEqual(self.service.logManager.stateMachine.data, {"a": "1"})
        self.assertEqual(transport.value().count(b"\n"), 1)

    def test_diskFailedNodeSilent(self) -> None:
        """
        A node whose log write failed says nothing more to its peers while
        its disk fails: its memory is ahead of its disk, so its vote
        requests and heartbeats could advertise entries it does not durably
        hold.
        """
        self.logStore.failWrites = True
        reply = self.service.node.peerRequest(
            "s2", AppendEntries(1, 0, 0, (Entry(1, 1, "noop"),), 0)
        )
        self.assertNotEqual(reply, AppendEntriesResponse(1, True, matchIndex=1))
        self.assertIn("diskError", self.service.node.status())
        self.sent("s2"), self.sent("s3")
        for _ in range(5 * ELECTION_TICKS[1]):
            self.reactor.advance(TICK_SECONDS)
        self.assertEqual((self.sent("s2"), self.sent("s3")), ([], []))


class SnapshotServiceTests(SynchronousTestCase):
    """
    The service takes snapshots as entries apply, and installs those its
    leader sends.  Reference: dissertation chapter 5.
    """

    def setUp(self) -> None:
        """A node over in-memory stores that snapshots every 5 entries."""
        self.reactor = MemoryReactorClock()
        self.written: list[int] = []

        def background(write: Callable[[], Any]) -> defer.Deferred[Any]:
            # Run the slow part later, as a thread would, and note it.
            result = write()
            self.written.append(result[0].index)
            return deferLater(self.reactor, 0.001, lambda: result)

        self.logStore = MemoryLogStore()
        self.snapshotStore = MemorySnapshotStore()
        logManager = LogManager(
            self.logStore, MemoryStateStore(), KeyValueStore(), self.snapshotStore
        )
        self.service = RaftService(
            makeConfig(["s1", "s2", "s3"], [10000, 10001, 10002]),
            "s1",
            logManager,
            self.reactor,
            tickSeconds=TICK_SECONDS,
            electionTicks=ELECTION_TICKS,
            heartbeatTicks=HEARTBEAT_TICKS,
            rng=random.Random(0),
            snapshotEntries=5,
            snapshotter=inBackground(background),
            trailingEntries=2,
        )
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def follow(self, entries: list[Entry], commit: int) -> None:
        """Receive C{entries} from leader C{s2} in term 1, committed up to C{commit}."""
        reply = self.service.node.peerRequest("s2", AppendEntries(1, 0, 0, tuple(entries), commit))
        self.assertEqual(reply, AppendEntriesResponse(1, True, matchIndex=len(entries)))

    def test_snapshotAfterEnoughEntries(self) -> None:
        """
        Once 5 entries were applied, the node snapshots its state machine in
        the background and, when that is done, compacts its log but for the
        last C{trailingEntries} entries the snapshot covers.
        """
        entries = [Entry(i, 1, f"set k{i} {i}") for i in range(1, 8)]
        self.follow(entries[:4], 4)
        self.assertEqual(self.written, [])
        self.follow(entries, 6)
        self.assertEqual(self.written, [6])
        self.assertIsNone(self.snapshotStore.snapshot)
        self.reactor.advance(0.001)
        snapshot = self.snapshotStore.snapshot
        self.assertEqual((snapshot.index, snapshot.term), (6, 1))
        self.assertEqual(json.loads(snapshot.data), {f"k{i}": str(i) for i in range(1, 7)})
        self.assertEqual([e.index for e in self.logStore.durable], [5, 6, 7])
        self.assertEqual(self.service.node.core.log.compactedIndex, 4)
        self.assertEqual(self.service.node.status()["snapshotIndex"], 6)

    def test_installFromLeader(self) -> None:
        """
        A snapshot from the leader is saved, replaces the state machine and
        the log, and the node answers that it matches up to its end.
        """
        self.follow([Entry(1, 1, "set old 1")], 0)
        data = b'{"a":"1"}'
        reply = self.service.node.peerRequest("s2", InstallSnapshot(1, 9, 1, 0, data, done=True))
        self.assertEqual(reply, InstallSnapshotResponse(1, 9, len(data), matchIndex=9))
        self.assertEqual(self.snapshotStore.snapshot.index, 9)
        self.assertEqual(self.logStore.durable, [])
        self.assertEqual(self.service.logManager.stateMachine.data, {"a": "1"})
        self.assertEqual(self.service.logManager.lastApplied, 9)
        self.service.node.peerRequest("s2", AppendEntries(1, 9, 1, (Entry(10, 1, "set b 2"),), 10))
        self.assertEqual(self.service.logManager.stateMachine.data, {"a": "1", "b": "2"})

    def test_overtakenSnapshotDropped(self) -> None:
        """
        A snapshot the node was still writing when it installed a later one
        from its leader is dropped, not put over the newer one.
        """
        entries = [Entry(i, 1, f"set k{i} {i}") for i in range(1, 7)]
        self.follow(entries, 6)
        self.assertEqual(self.written, [6])
        data = b'{"z":"26"}'
        self.service.node.peerRequest("s2", InstallSnapshot(1, 20, 1, 0, data, done=True))
        self.reactor.advance(0.001)
        self.assertEqual(self.snapshotStore.snapshot.index, 20)
        self.assertEqual(self.service.node.core.log.compactedIndex, 20)


class LineClient(LineReceiver):
    """
    A test client: sends request lines and queues the response lines.
    """

    delimiter = b"\n"

    def __init__(self) -> None:
        self.responses: defer.DeferredQueue[str] = defer.DeferredQueue()
        self.lost: defer.Deferred[None] = defer.Deferred()

    def lineReceived(self, line: bytes) -> None:
        """Queue a response."""
        self.responses.put(line.decode("utf-8"))

    def connectionLost(self, reason: Failure) -> None:
        """Note the end of the connection."""
        self.lost.callback(None)

    def request(self, line: str) -> defer.Deferred[str]:
        """Send C{line}; fires with the next response line."""
        self.sendLine(line.encode("utf-8"))
        return self.responses.get()


class TrackingFactory(NodeFactory):
    """
    A L{NodeFactory} that remembers the connections it accepted, so a test
    can cut them as the death of the node's process would.
    """

    def __init__(self, node: RaftNode, *args: object, **kwargs: object) -> None:
        super().__init__(node, *args, **kwargs)
        self.accepted: list[NodeProtocol] = []

    def buildProtocol(self, addr: object) -> NodeProtocol:
        """Build and remember a protocol whose end fires a Deferred."""
        node = super().buildProtocol(addr)
        node.lost = defer.Deferred()
        original = node.connectionLost

        def connectionLost(reason: Failure = CONNECTION_DONE) -> None:
            original(reason)
            node.lost.callback(None)

        node.connectionLost = connectionLost
        self.accepted.append(node)
        return node


class LoopbackClusterTests(TestCase):
    """
    Three nodes on the real reactor, talking over loopback TCP, their peer
    connections authenticated with a cluster key.
    """

    timeout = 30

    #: The key every node is given (L{None}: peers are not authenticated).
    clusterKey: bytes | None = b"loopback-cluster-test-key-0123456789"

    def setUp(self) -> None:
        """
        Prepare a data directory; remember every service to stop it at the
        end.
        """
        self.directory = temporaryDirectory(self)
        self.patch(txraft.service, "NodeFactory", TrackingFactory)
        self.services: dict[str, RaftService] = {}
        self.clients: list[LineClient] = []
        self.addCleanup(self.stopEverything)

    def makeNode(self, config: ClusterConfig, name: str) -> RaftService:
        """
        Build node C{name} over file stores in the data directory.
        """
        logManager = LogManager(
            FileLogStore(os.path.join(self.directory, f"{name}.log")),
            FileStateStore(os.path.join(self.directory, f"{name}.state")),
            KeyValueStore(),
        )
        node = RaftService(
            config,
            name,
            logManager,
            reactor,
            tickSeconds=TICK_SECONDS,
            electionTicks=(15, 30),
            heartbeatTicks=3,
            clusterKey=self.clusterKey,
        )
        return node

    def startNode(self, config: ClusterConfig, name: str) -> RaftService:
        """
        Build and start node C{name}.
        """
        node = self.makeNode(config, name)
        try:
            node.startService()
        except SystemExit:
            node.logManager.logStore.close()
            raise
        self.services[name] = node
        return node

    def startCluster(self) -> ClusterConfig:
        """
        Start three nodes on free ports, trying new ports if one was taken
        in the meantime.
        """
        for _ in range(5):
            config = makeConfig(ports=freePorts(3))
            try:
                for name in config.names():
                    self.startNode(config, name)
            except SystemExit:
                for name in list(self.services):
                    self.crash(name)
                continue
            return config
        self.fail("could not find three free ports")

    def crash(self, name: str) -> defer.Deferred[object]:
        """
        Stop node C{name} as its process ending would: cut every connection
        it accepted and stop its service.
        """
        node = self.services.pop(name)
        accepted = node._factory.accepted
        for protocol in accepted:
            protocol.transport.abortConnection()
        lost = [protocol.lost for protocol in accepted]
        return defer.gatherResults([defer.maybeDeferred(node.stopService)] + lost)

    @defer.inlineCallbacks
    def stopEverything(self) -> Generator[defer.Deferred[object], object, None]:
        """
        Stop every node and client connection so the reactor is clean.
        """
        for client in self.clients:
            client.transport.loseConnection()
        yield defer.gatherResults([client.lost for client in self.clients])
        yield defer.gatherResults([self.crash(name) for name in list(self.services)])

    @defer.inlineCallbacks
    def waitFor(
        self, predicate: Callable[[], object], what: str, seconds: float = 8.0
    ) -> Generator[defer.Deferred[object], object, object]:
        """
        Poll C{predicate} every few milliseconds until it returns something
        true, which is returned; fail the test after C{seconds}.
        """
        deadline = reactor.seconds() + seconds
        while True:
            result = predicate()
            if result:
                return result
            if reactor.seconds() > deadline:
                self.fail(f"timed out waiting for {what}")
            yield task.deferLater(reactor, 0.01, lambda: None)

    def stableLeader(self) -> RaftService | None:
        """
        The leader every running node agrees on, in one term, if any.
        """
        nodes = list(self.services.values())
        leaders = [n for n in nodes if n.node.core.role == LEADER]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        agreed = all(
            n.node.core.leaderId == leader.name
            and n.node.core.currentTerm == leader.node.core.currentTerm
            for n in nodes
        )
        return leader if agreed else None

    @defer.inlineCallbacks
    def connectClient(
        self, node: RaftService
    ) -> Generator[defer.Deferred[object], object, LineClient]:
        """
        Open a TCP connection to C{node}'s port.
        """
        endpoint = TCP4ClientEndpoint(reactor, node.address.host, node.address.port)
        client = yield connectProtocol(endpoint, LineClient())
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def requestLeader(
        self, line: str
    ) -> Generator[defer.Deferred[object], object, tuple[RaftService, str]]:
        """
        Send C{line} over TCP to the node all others agree leads, and return
        it with the response.  Should leadership move while the request is
        in flight (a very slow machine), try again with the new leader.
        """
        deadline = reactor.seconds() + 8
        while True:
            leader = yield self.waitFor(self.stableLeader, "a leader")
            if leader.name not in self.connections:
                self.connections[leader.name] = yield self.connectClient(leader)
            response = yield self.connections[leader.name].request(line)
            moved = response.startswith(("REDIRECT ", "UNAVAILABLE "))
            if not moved or reactor.seconds() > deadline:
                return leader, response

    def assertRedirect(self, config: ClusterConfig, response: str) -> str:
        """
        Assert that C{response} redirects to a node at the address the config
        gives it, and return that node's name.
        """
        words = response.split(" ")
        self.assertEqual(len(words), 4, response)
        self.assertEqual(words[0], "REDIRECT", response)
        address = config.node(words[1])
        self.assertEqual(words[2:], [address.host, str(address.port)])
        return words[1]

    @defer.inlineCallbacks
    def test_linesGoOutAtOnce(self) -> Generator[defer.Deferred[object], object, None]:
        """
        Every connection a node has, to its peers and from them and from
        clients, has Nagle's algorithm off: no line waits for the
        acknowledgement of the one before.
        """
        self.startCluster()
        yield self.connectClient(self.services["s1"])
        links = yield self.waitFor(
            lambda: (
                all(
                    link.protocol is not None
                    for service in self.services.values()
                    for link in service._links.values()
                )
                and [
                    link.protocol
                    for service in self.services.values()
                    for link in service._links.values()
                ]
            ),
            "every peer link",
        )
        accepted = [p for service in self.services.values() for p in service._factory.accepted]
        self.assertEqual((len(links), len(accepted)), (6, 7))
        for protocol in [*links, *accepted]:
            handle = protocol.transport.getHandle()
            self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    @defer.inlineCallbacks
    def test_failoverAndCatchUp(self) -> Generator[defer.Deferred[object], object, None]:
        """
        Three nodes elect one leader that serves reads and writes over TCP
        and followers redirect to it; when the leader dies the other two
        elect a new one in a later term that keeps the committed data and
        serves writes; the old node restarts from its files and catches up
        to the same log and map (Reference: sections 5.2-5.4).
        """
        self.connections: dict[str, LineClient] = {}
        config = self.startCluster()
        leader, response = yield self.requestLeader("c1@set a 1")
        self.assertEqual(response, "OK")
        leader, response = yield self.requestLeader("c1@get a")
        self.assertEqual(response, "OK 1")
        follower = next(n for n in self.services.values() if n is not leader)
        other = yield self.connectClient(follower)
        redirectedTo = self.assertRedirect(config, (yield other.request("get a")))
        self.assertEqual(redirectedTo, self.stableLeader().name)

        oldName, oldTerm = leader.name, leader.node.core.currentTerm
        yield self.crash(oldName)
        newLeader, response = yield self.requestLeader("get a")
        self.assertEqual(response, "OK 1")
        self.assertNotEqual(newLeader.name, oldName)
        self.assertGreater(newLeader.node.core.currentTerm, oldTerm)
        _, response = yield self.requestLeader("set b 2")
        self.assertEqual(response, "OK")

        restarted = self.startNode(config, oldName)

        def caughtUp() -> bool:
            current = self.stableLeader()
            return (
                current is not None
                and restarted.node.core.log.lastIndex == current.node.core.log.lastIndex
                and restarted.logManager.lastApplied == current.logManager.lastApplied
            )

        yield self.waitFor(caughtUp, "the restarted node to catch up")
        self.assertEqual(restarted.logManager.stateMachine.data, {"a": "1", "b": "2"})


class InsecureLoopbackClusterTests(LoopbackClusterTests):
    """
    The same loopback cluster without a cluster key (insecure mode), as
    C{twistd -n txraft} runs on the shipped localhost config.
    """

    clusterKey = None
