"""
Tests for L{txraft.peers}: this node's outgoing connections to its peers
(L{PeerClientProtocol}).
"""

from __future__ import annotations

import random

from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from txraft import peers
from txraft.config import NodeAddress
from txraft.interfaces import IResponseHandler
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    MessageError,
    RequestVote,
    RequestVoteResponse,
    formatMessage,
)
from txraft.peers import PeerClientProtocol, PeerLink
from txraft.protocol import CONNECTION_DONE


class PeerClientProtocolTests(SynchronousTestCase):
    """
    Tests for L{PeerClientProtocol}, this node's connection to one peer.
    """

    def setUp(self) -> None:
        """
        Connect C{s1}'s protocol for peer C{s2} to a L{StringTransport}.
        """
        self.protocol = PeerClientProtocol("s1", "s2")
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.lost: list[PeerClientProtocol] = []
        self.protocol.onConnectionLost = self.lost.append

    def test_sendRequest(self) -> None:
        """
        A request goes out as one C{s1@RPC JSON} line.
        """
        self.protocol.sendRequest(RequestVote(2, 1, 1))
        self.assertEqual(
            self.transport.value(),
            b's1@RequestVote {"term":2,"lastLogIndex":1,"lastLogTerm":1}\n',
        )
        self.assertEqual(self.protocol.pendingCount(), 1)

    def test_responsesMatchedInOrder(self) -> None:
        """
        Response lines fire the requests' Deferreds in request order (the
        peer answers in order).
        """
        first = self.protocol.sendRequest(RequestVote(2, 1, 1))
        second = self.protocol.sendRequest(AppendEntries(2, 0, 0, (), 0))
        self.assertNoResult(first)
        self.protocol.dataReceived(
            (
                formatMessage("s2", RequestVoteResponse(2, True))
                + "\n"
                + formatMessage("s2", AppendEntriesResponse(2, True, 0))
                + "\r\n"
            ).encode()
        )
        self.assertEqual(self.successResultOf(first), RequestVoteResponse(2, True))
        self.assertEqual(self.successResultOf(second), AppendEntriesResponse(2, True, 0))
        self.assertEqual(self.protocol.pendingCount(), 0)

    def test_errorLineFailsOldest(self) -> None:
        """
        An C{ERROR} line fails the oldest request's Deferred with
        L{MessageError}; later requests still get their responses.
        """
        first = self.protocol.sendRequest(RequestVote(2, 1, 1))
        second = self.protocol.sendRequest(RequestVote(3, 1, 1))
        self.protocol.dataReceived(b"ERROR something\n")
        self.failureResultOf(first, MessageError)
        self.assertNoResult(second)
        self.protocol.dataReceived(
            formatMessage("s2", RequestVoteResponse(3, False)).encode() + b"\n"
        )
        self.assertEqual(self.successResultOf(second), RequestVoteResponse(3, False))

    def test_wrongSenderFails(self) -> None:
        """
        A response claiming to come from another node, or that does not
        parse, fails its request.
        """
        first = self.protocol.sendRequest(RequestVote(2, 1, 1))
        second = self.protocol.sendRequest(RequestVote(2, 1, 1))
        third = self.protocol.sendRequest(RequestVote(2, 1, 1))
        self.protocol.dataReceived(
            formatMessage("s3", RequestVoteResponse(2, True)).encode()
            + b"\ns2@RequestVoteResponse {\n\xff\n"
        )
        self.failureResultOf(first, MessageError)
        self.failureResultOf(second, MessageError)
        self.failureResultOf(third, MessageError)

    def test_unsolicitedLineIgnored(self) -> None:
        """
        A line with no request waiting for it is ignored.
        """
        self.protocol.dataReceived(b"s2@RequestVoteResponse {}\n")
        self.assertEqual(self.protocol.pendingCount(), 0)
        self.assertFalse(self.transport.disconnecting)

    def test_connectionLostFailsPending(self) -> None:
        """
        Losing the connection fails every pending request with the reason
        and tells C{onConnectionLost}.
        """
        first = self.protocol.sendRequest(RequestVote(2, 1, 1))
        second = self.protocol.sendRequest(RequestVote(2, 1, 1))
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(first, ConnectionLost)
        self.failureResultOf(second, ConnectionLost)
        self.assertEqual(self.protocol.pendingCount(), 0)
        self.assertEqual(self.lost, [self.protocol])

    def test_connectionLostWithoutPending(self) -> None:
        """
        Losing an idle connection still tells C{onConnectionLost}.
        """
        self.protocol.connectionLost(CONNECTION_DONE)
        self.assertEqual(self.lost, [self.protocol])

    def test_randomResponses(self) -> None:
        """
        Random bytes from a peer, in random chunks, never raise: each
        complete line settles exactly one pending request.
        """
        rng = random.Random(99)
        alphabet = [b"s2@", b"s3@", b"RequestVoteResponse", b" ", b"{}", b"\xff", b"x", b"\n"]
        for _ in range(100):
            client = PeerClientProtocol("s1", "s2")
            client.makeConnection(StringTransport())
            pending = [client.sendRequest(RequestVote(1, 0, 0)) for _ in range(30)]
            settled: list[object] = []
            for d in pending:
                d.addBoth(settled.append)
            data = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(100)))
            lines = data.count(b"\n")
            while data:
                size = rng.randrange(1, 10)
                client.dataReceived(data[:size])
                data = data[size:]
            self.assertEqual(len(settled), min(lines, 30))
            self.assertEqual(client.pendingCount(), 30 - len(settled))


class RequestTimeoutTests(SynchronousTestCase):
    """
    A peer connection on which a request (or the handshake) goes unanswered
    for an election timeout is aborted, so a half-open connection to a
    rebooted host is replaced instead of queueing until TCP gives up.
    """

    def connect(self, clusterKey: bytes | None = None) -> PeerClientProtocol:
        """C{s1}'s protocol for C{s2}, timing out after 1 s on a fake clock."""
        self.clock = Clock()
        self.protocol = PeerClientProtocol("s1", "s2", clusterKey, 1.0, self.clock)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return self.protocol

    def answer(self, message: object) -> None:
        """Feed C{s2}'s answer line."""
        self.protocol.dataReceived(formatMessage("s2", message).encode() + b"\n")

    def test_unansweredRequestAborts(self) -> None:
        """A request without an answer for the timeout aborts the connection."""
        d = self.connect().sendRequest(RequestVote(2, 1, 1))
        self.clock.advance(0.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.clock.advance(peers.TIMEOUT_GRACE)
        self.assertTrue(self.transport.disconnected)
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)

    def test_answersKeepItOpen(self) -> None:
        """
        A connection whose requests are answered stays open however long it
        lives, and an idle one (nothing unanswered) is never timed out.
        """
        protocol = self.connect()
        for _ in range(5):
            protocol.sendRequest(RequestVote(2, 1, 1))
            self.clock.advance(0.9)
            self.answer(RequestVoteResponse(2, True))
        self.clock.advance(10)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_answerWaitingWhenTimeRunsOut(self) -> None:
        """
        When the time runs out while this node was too busy to read, the
        connection is dropped only if no line comes within the grace that
        follows (the reactor reads what came meanwhile): an answer that was
        waiting keeps it open, and the clock starts again for the requests
        still unanswered.
        """
        protocol = self.connect()
        first = protocol.sendRequest(RequestVote(2, 1, 1))
        protocol.sendRequest(RequestVote(2, 1, 1))
        self.clock.advance(1.0)
        self.assertFalse(self.transport.disconnecting)
        self.answer(RequestVoteResponse(2, True))
        self.clock.advance(peers.TIMEOUT_GRACE)
        self.assertFalse(self.transport.disconnecting)
        self.successResultOf(first)
        self.clock.advance(0.5)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.6)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2 * peers.TIMEOUT_GRACE)
        self.assertTrue(self.transport.disconnected)

    def test_unansweredHandshakeAborts(self) -> None:
        """A peer that never answers the handshake is dropped after the timeout."""
        self.connect(b"k" * 32)
        self.assertTrue(self.transport.value().startswith(b"s1@AUTH1 "))
        self.clock.advance(1.1)
        self.clock.advance(peers.TIMEOUT_GRACE)
        self.assertTrue(self.transport.disconnected)

    def test_lostConnectionStopsTheClock(self) -> None:
        """Once the connection is lost no timeout is left pending."""
        d = self.connect().sendRequest(RequestVote(2, 1, 1))
        self.protocol.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PeerLinkLogTests(SynchronousTestCase):
    """A link to a peer that is down says so once per outage, not once per retry."""

    def test_unreachableLoggedOncePerOutage(self) -> None:
        """
        Refused connection attempts to a down peer are retried with backoff
        (several here); only the first of them is logged, and
        C{ClientService}'s own line for each retry is not.
        """
        reactor = MemoryReactorClock()
        link = PeerLink(Responder(), NodeAddress("s2", "127.0.0.1", 10001), reactor, 0.1)
        with capturedLogs() as events:
            link.clientService.startService()
            attempts = 0
            for _ in range(20):
                reactor.advance(0.1)
                while reactor.tcpClients:
                    attempts += 1
                    _, _, factory, _, _ = reactor.tcpClients.pop()
                    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            link.clientService.stopService()
        self.assertGreaterEqual(attempts, 4)
        self.assertEqual(
            [formatEvent(e) for e in events],
            ["cannot reach peer s2 at 127.0.0.1:10001; retrying quietly until it answers"],
        )

    def test_failedHandshakesLoggedOnceAndBackedOff(self) -> None:
        """
        A peer that takes each TCP connection and then fails the key
        handshake is logged once for its reason, not as unreachable at every
        attempt (C{ClientService} counts the TCP connection as a success),
        and the attempts still back off to the longest delay.  Once a link
        is up, a later outage is logged again.
        """
        reactor = MemoryReactorClock()
        address = NodeAddress("s2", "127.0.0.1", 10001)
        link = PeerLink(Responder(), address, reactor, 0.5, clusterKey=b"k" * 32)
        attemptTimes = []
        with capturedLogs() as events:
            link.clientService.startService()
            for _ in range(400):
                reactor.advance(0.01)
                while reactor.tcpClients:
                    attemptTimes.append(reactor.seconds())
                    _, _, factory, _, _ = reactor.tcpClients.pop()
                    protocol = factory.buildProtocol(None)
                    protocol.makeConnection(StringTransport())
                    protocol.dataReceived(b"s2@AUTH1 " + b"00" * 32 + b" " + b"00" * 32 + b"\n")
                    protocol.connectionLost(Failure(ConnectionLost()))
            failures = [formatEvent(e) for e in events]
            gaps = [b - a for a, b in zip(attemptTimes, attemptTimes[1:], strict=False)]
            link._connected(PeerClientProtocol("s1", "s2"))
            link._retryDelay(1)
            link.clientService.stopService()
        self.assertGreaterEqual(len(attemptTimes), 4)
        self.assertEqual(len(failures), 1, failures)
        self.assertIn("peer s2 failed the cluster key handshake", failures[0])
        self.assertLess(gaps[0], 0.1)
        self.assertGreaterEqual(gaps[-1], 0.45)
        self.assertEqual(
            formatEvent(events[-1]),
            "cannot reach peer s2 at 127.0.0.1:10001; retrying quietly until it answers",
        )


@implementer(IResponseHandler)
class Responder:
    """An L{IResponseHandler} that takes no response: the peer never answers here."""

    name = "s1"

    def peerResponse(self, sender: str, message: object) -> None:
        """Ignore it."""
