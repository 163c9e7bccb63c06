"""
This node's outgoing side: a link to each peer, and the line protocol that
carries its requests and matches the responses.

On a keyed cluster a link proves the key, and checks that the peer holds it,
before it sends the peer anything (L{txraft.auth}); a peer that fails is
hung up on and retried with the usual backoff.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import LogEvent, Logger, LogLevel, globalLogPublisher
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from txraft.auth import AuthError, Initiator, Session
from txraft.config import NodeAddress
from txraft.interfaces import IResponseHandler
from txraft.messages import Message, MessageError, formatMessage, parseMessage, splitSender
from txraft.protocol import CONNECTION_DONE, MAX_LINE, sendAtOnce

if TYPE_CHECKING:
    from txraft.tls import TLSConfig

#: Requests in flight to one peer beyond which new ones are dropped; the
#: core notices the gap and resends, so a slow follower cannot make the
#: leader buffer without bound.
MAX_IN_FLIGHT = 256

#: How many of the latest messages to a disconnected peer are kept for
#: when it connects.
BACKLOG = 4

#: Once a request's time ran out, how long more its answer is awaited before
#: the connection is dropped: a turn of the reactor, which reads whatever
#: came while this node was too busy to (seconds).
TIMEOUT_GRACE = 0.01


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
        clusterKey: bytes | None = None,
        requestTimeout: float = 1.0,
        tls: TLSConfig | None = None,
    ) -> None:
        """
        @param node: signs the requests, and takes the responses.
        @param maxDelay: the longest wait between two connection attempts.
        @param clusterKey: the key to prove to the peer, or L{None}.
        @param requestTimeout: how long a request (or the handshake) may go
            unanswered before the connection is dropped and made anew: an
            election timeout, so that a half-open connection to a rebooted
            host is noticed long before TCP gives up on it.
        @param tls: speak TLS to the peer, verifying its certificate, or
            L{None} for plain TCP.
        """
        self.node = node
        self.address = address
        self.clusterKey = clusterKey
        self.requestTimeout = requestTimeout
        self._reactor = reactor
        self.protocol: PeerClientProtocol | None = None
        #: The last handshake failure logged, so retries do not repeat it.
        self._authFailure: str | None = None
        #: Attempts failed since the link was last up (handshake included).
        self._failedAttempts = 0
        self._backlog: deque[Message] = deque(maxlen=BACKLOG)
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            reactor, address.host, address.port, timeout=maxDelay + 1
        )
        if tls is not None:
            endpoint = wrapClientTLS(tls.clientOptions(address.host), endpoint)
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

        An outage lasts until the link is up, which on a keyed cluster is
        when the handshake has finished: C{ClientService} counts a TCP
        connection as a success, so a peer that takes the connection and
        then fails the handshake would otherwise restart both the count and
        the backoff at every attempt.  Its handshake failure is logged
        instead (L{_authFailed}).
        """
        self._failedAttempts += 1
        if self._failedAttempts == 1 and self._authFailure is None:
            self.log.info(
                "cannot reach peer {peer} at {host}:{port}; retrying quietly until it answers",
                peer=self.address.name,
                host=self.address.host,
                port=self.address.port,
            )
        return self._backoff(self._failedAttempts)

    def _buildProtocol(self) -> PeerClientProtocol:
        protocol = PeerClientProtocol(
            self.node.name, self.address.name, self.clusterKey, self.requestTimeout, self._reactor
        )
        protocol.onConnectionMade = self._connected
        protocol.onConnectionLost = self._disconnected
        protocol.onAuthFailed = self._authFailed
        return protocol

    def _connected(self, protocol: PeerClientProtocol) -> None:
        self.log.info("connected to peer {peer}", peer=self.address.name)
        self._authFailure = None
        self._failedAttempts = 0
        self.protocol = protocol
        while self._backlog:
            self.send(self._backlog.popleft())

    def _authFailed(self, reason: str) -> None:
        """Log a failed handshake once, not on every retry."""
        if reason != self._authFailure:
            self.log.warn(
                "peer {peer} failed the cluster key handshake: {reason}",
                peer=self.address.name,
                reason=reason,
            )
        self._authFailure = reason

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


class PeerClientProtocol(LineReceiver, TimeoutMixin):
    """
    This node's outgoing connection to one peer: sends requests and matches
    each response line to the oldest unanswered request (the peer answers in
    order).  With a cluster key it first runs the handshake, and counts as
    connected only once both sides have proved the key.  A connection on
    which the handshake or a request goes unanswered for C{requestTimeout}
    seconds is aborted (its owner reconnects).
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    log = Logger()

    def __init__(
        self,
        localName: str,
        peerName: str,
        clusterKey: bytes | None = None,
        requestTimeout: float = 1.0,
        clock: IReactorTime | None = None,
    ) -> None:
        """
        @param clock: keeps time for C{requestTimeout}; without one, answers
            are awaited for ever.
        """
        self.localName = localName
        self.peerName = peerName
        self.requestTimeout = requestTimeout
        self._clock = clock
        self._pending: deque[defer.Deferred[Message]] = deque()
        self._initiator = (
            None if clusterKey is None else Initiator(clusterKey, localName, peerName)
        )
        self._confirming = False
        self._session: Session | None = None
        #: The time for an answer ran out, and no line has come since.
        self._overdue = False
        #: Called with this protocol when its connection is up (and
        #: authenticated, on a keyed cluster), and when it is lost.
        self.onConnectionMade: Callable[[PeerClientProtocol], None] | None = None
        self.onConnectionLost: Callable[[PeerClientProtocol], None] | None = None
        #: Called with the reason when the peer fails the handshake.
        self.onAuthFailed: Callable[[str], None] | None = None

    def connectionMade(self) -> None:
        """Start the handshake, or tell whoever owns this link that it is up."""
        sendAtOnce(self.transport)
        if self._initiator is not None:
            self._awaitAnswer(True)
            super().sendLine(self._initiator.hello().encode("utf-8"))
        elif self.onConnectionMade is not None:
            self.onConnectionMade(self)

    def _handshake(self, line: bytes) -> None:
        """Take the peer's answer to one handshake line."""
        assert self._initiator is not None
        text = line.decode("utf-8", "replace")
        try:
            if not self._confirming:
                super().sendLine(self._initiator.answerChallenge(text).encode("utf-8"))
                self._confirming = True
                return
            self._session = self._initiator.confirm(text)
        except AuthError as e:
            if self.onAuthFailed is not None:
                self.onAuthFailed(str(e))
            self.transport.loseConnection()
            return
        self._initiator = None
        self._awaitAnswer(False)
        if self.onConnectionMade is not None:
            self.onConnectionMade(self)

    def sendLine(self, line: bytes) -> None:
        """Send one line, with its MAC on an authenticated connection."""
        if self._session is not None:
            line = self._session.seal(line)
        super().sendLine(line)

    def sendRequest(self, message: Message) -> defer.Deferred[Message]:
        """Send C{message}; the Deferred fires with the peer's response."""
        d: defer.Deferred[Message] = defer.Deferred()
        if not self._pending:
            self._awaitAnswer(True)
        self._pending.append(d)
        self.sendLine(formatMessage(self.localName, message).encode("utf-8"))
        return d

    def pendingCount(self) -> int:
        """How many requests await their answer."""
        return len(self._pending)

    def lineReceived(self, line: bytes) -> None:
        """Fire the oldest request's Deferred with this response (or failure)."""
        self._overdue = False
        line = line.removesuffix(b"\r")
        if self._initiator is not None:
            self._handshake(line)
            return
        if self._session is not None:
            try:
                line = self._session.open(line)
            except AuthError as e:
                self.log.warn(
                    "dropping connection to {peer}: {error}", peer=self.peerName, error=e
                )
                self.transport.loseConnection()
                return
        if not self._pending:
            self.log.warn("unsolicited line from {peer}", peer=self.peerName)
            return
        d = self._pending.popleft()
        self._awaitAnswer(bool(self._pending))
        try:
            sender, rest = splitSender(line.decode("utf-8"))
            if sender != self.peerName:
                raise MessageError(f"response from {sender!r}, expected {self.peerName!r}")
            response = parseMessage(rest)
        except (UnicodeDecodeError, MessageError) as e:
            d.errback(MessageError(f"{self.peerName} answered {line[:80]!r}: {e}"))
            return
        d.callback(response)

    def _awaitAnswer(self, waiting: bool) -> None:
        """(Re)start the clock on the oldest unanswered line, or stop it."""
        if self._clock is not None:
            self.setTimeout(self.requestTimeout if waiting else None)

    def callLater(self, period: float, func: Callable[[], object]) -> object:
        """Schedule the timeout on this protocol's clock (L{TimeoutMixin} asks)."""
        assert self._clock is not None
        return self._clock.callLater(period, func)

    def timeoutConnection(self) -> None:
        """
        A request or the handshake went unanswered too long.  This node may
        itself have been too busy to read (a long turn of its event loop),
        with the answer already in its socket: the connection is dropped
        only if no line comes within L{TIMEOUT_GRACE} more, so that a node's
        own stall is not taken for its peer's silence.
        """
        self._overdue = True
        self.callLater(TIMEOUT_GRACE, self._dropIfStillOverdue)

    def _dropIfStillOverdue(self) -> None:
        """Drop the connection if still no answer came (L{timeoutConnection})."""
        if not self._overdue:
            return
        self.log.info(
            "no answer from {peer} in {seconds}s; reconnecting",
            peer=self.peerName,
            seconds=self.requestTimeout,
        )
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        """Fail every unanswered request."""
        self._awaitAnswer(False)
        pending, self._pending = self._pending, deque()
        for d in pending:
            d.errback(reason)
        if self.onConnectionLost is not None:
            self.onConnectionLost(self)
