"""
This node's outgoing side: a link to each peer, and the line protocol that
carries its requests and matches the responses.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import LogEvent, Logger, LogLevel, globalLogPublisher
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from txraft.config import NodeAddress
from txraft.interfaces import IResponseHandler
from txraft.messages import Message, MessageError, formatMessage, parseMessage, splitSender
from txraft.protocol import CONNECTION_DONE, MAX_LINE

#: Requests in flight to one peer beyond which new ones are dropped; the
#: core notices the gap and resends, so a slow follower cannot make the
#: leader buffer without bound.
MAX_IN_FLIGHT = 256

#: How many of the latest messages to a disconnected peer are kept for
#: when it connects.
BACKLOG = 4


class PeerLink:
    """
    This node's outgoing connection to one peer.  It reconnects forever
    with capped exponential backoff.  The last few messages sent while it
    is down go out when it connects (a vote request sent while a peer is
    still starting is not lost for a whole election timeout); older ones
    are dropped, and the core's heartbeats retry them.
    """

    log = Logger()

    def __init__(
        self,
        node: IResponseHandler,
        address: NodeAddress,
        reactor: IReactorTime,
        maxDelay: float,
    ) -> None:
        """
        @param node: signs the requests, and takes the responses.
        @param maxDelay: the longest wait between two connection attempts.
        """
        self.node = node
        self.address = address
        self.protocol: PeerClientProtocol | None = None
        self._backlog: deque[Message] = deque(maxlen=BACKLOG)
        endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=maxDelay + 1)
        factory = Factory.forProtocol(self._buildProtocol)
        factory.noisy = False
        jitter = random.Random()
        self._backoff = backoffPolicy(
            initialDelay=0.02, maxDelay=maxDelay, jitter=lambda: jitter.random() * 0.02
        )
        self.clientService = QuietClientService(
            endpoint, factory, retryPolicy=self._retryDelay, clock=reactor
        )

    def _retryDelay(self, failedAttempts: int) -> float:
        """
        How long to wait before the next attempt; the first failure of an
        outage is logged, the retries after it are not.
        """
        if failedAttempts == 1:
            self.log.info(
                "cannot reach peer {peer} at {host}:{port}; retrying quietly until it answers",
                peer=self.address.name,
                host=self.address.host,
                port=self.address.port,
            )
        return self._backoff(failedAttempts)

    def _buildProtocol(self) -> PeerClientProtocol:
        protocol = PeerClientProtocol(self.node.name, self.address.name)
        protocol.onConnectionMade = self._connected
        protocol.onConnectionLost = self._disconnected
        return protocol

    def _connected(self, protocol: PeerClientProtocol) -> None:
        self.log.info("connected to peer {peer}", peer=self.address.name)
        self.protocol = protocol
        while self._backlog:
            self.send(self._backlog.popleft())

    def _disconnected(self, protocol: PeerClientProtocol) -> None:
        if self.protocol is protocol:
            self.log.info("lost connection to peer {peer}", peer=self.address.name)
            self.protocol = None

    def send(self, message: Message) -> None:
        """Send C{message} if connected and not overloaded; step its response into the core."""
        protocol = self.protocol
        if protocol is None:
            self._backlog.append(message)
            return
        if protocol.pendingCount() >= MAX_IN_FLIGHT:
            return
        d = protocol.sendRequest(message)
        d.addCallbacks(self._responded, self._failed)

    def _responded(self, response: Message) -> None:
        self.node.peerResponse(self.address.name, response)

    def _failed(self, failure: Failure) -> None:
        self.log.debug("request to {peer} failed: {f}", peer=self.address.name, f=failure.value)


def _withoutRetries(event: LogEvent) -> None:
    """Publish C{event} unless it is C{ClientService}'s info about its next retry."""
    if event.get("log_level") != LogLevel.info:
        globalLogPublisher(event)


class QuietClientService(ClientService):
    """
    A C{ClientService} that does not log its every retry ("Scheduling
    retry N", several a second while a peer is down; twistd's log shows
    every level, so a lower one would not hide them): L{PeerLink} says
    once per outage that a peer is unreachable.  Its warnings still show.
    """

    _log = Logger(observer=_withoutRetries)


class PeerClientProtocol(LineReceiver):
    """
    This node's outgoing connection to one peer: sends requests and matches
    each response line to the oldest unanswered request (the peer answers in
    order).
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    log = Logger()

    def __init__(self, localName: str, peerName: str) -> None:
        self.localName = localName
        self.peerName = peerName
        self._pending: deque[defer.Deferred[Message]] = deque()
        #: Called with this protocol when its connection is made, and lost.
        self.onConnectionMade: Callable[[PeerClientProtocol], None] | None = None
        self.onConnectionLost: Callable[[PeerClientProtocol], None] | None = None

    def connectionMade(self) -> None:
        """Tell whoever owns this link that it is up."""
        if self.onConnectionMade is not None:
            self.onConnectionMade(self)

    def sendRequest(self, message: Message) -> defer.Deferred[Message]:
        """Send C{message}; the Deferred fires with the peer's response."""
        d: defer.Deferred[Message] = defer.Deferred()
        self._pending.append(d)
        self.sendLine(formatMessage(self.localName, message).encode("utf-8"))
        return d

    def pendingCount(self) -> int:
        """How many requests await their answer."""
        return len(self._pending)

    def lineReceived(self, line: bytes) -> None:
        """Fire the oldest request's Deferred with this response (or failure)."""
        if not self._pending:
            self.log.warn("unsolicited line from {peer}", peer=self.peerName)
            return
        d = self._pending.popleft()
        try:
            sender, rest = splitSender(line.decode("utf-8"))
            if sender != self.peerName:
                raise MessageError(f"response from {sender!r}, expected {self.peerName!r}")
            response = parseMessage(rest)
        except (UnicodeDecodeError, MessageError) as e:
            d.errback(MessageError(f"{self.peerName} answered {line[:80]!r}: {e}"))
            return
        d.callback(response)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        """Fail every unanswered request."""
        pending, self._pending = self._pending, deque()
        for d in pending:
            d.errback(reason)
        if self.onConnectionLost is not None:
            self.onConnectionLost(self)
