"""
The client library: a L{ClusterClient} that talks to a whole txraft cluster,
one Deferred per request, on a reactor it is given.

It knows every node's address and sends to one at a time, pipelining up to
a window of requests on one connection.  A C{REDIRECT} sends it to the
leader; a lost connection, an C{UNAVAILABLE} answer or a node that stops
answering sends it, after a backoff, to the next node (or the same, after a
commit timeout), where it sends again every request still unanswered, in
order.  That is safe because
writes (C{set}, C{delete}) are numbered, C{CLIENTID#SEQ@COMMAND}, and a node
answers a retried SEQ with the answer it recorded instead of applying it
twice: exactly once (Raft dissertation, section 6.3).  Reads (C{get},
C{show}) and C{status} go unnumbered, so the leader answers them without a
log entry; a read changes nothing and is always safe to send again.

A node keeps the answers of a client's last L{SESSION_WINDOW} SEQs, so at
most that many requests are outstanding at once.  Each request has a
deadline, after which its Deferred fails with L{RequestTimeoutError}; a
slow one (an operator's command, a backup) may be given a deadline of its
own, and the node it waits on may stay silent that long.

For scripts that do not run a reactor, L{txraft.blocking} wraps this class.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Callable, Sequence

from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from txraft import answers
from txraft.answers import SESSION_EXPIRED
from txraft.auth import AuthError, Initiator, Session
from txraft.config import ClusterConfig
from txraft.sessions import SESSION_WINDOW

#: The command words that change the map, and so are numbered.
WRITES = frozenset({"set", "delete"})

#: C{UNAVAILABLE} answers after which the same node is asked again: it may
#: still lead, it was only slow.  After any other the client moves on.
STAY_ON = frozenset({answers.COMMIT_TIMEOUT, answers.READ_TIMEOUT})

#: Where a node connected to is named in messages: C{HOST:PORT}.
Address = tuple[str, int]

#: Makes the endpoint that reaches one node; a seam for tests.
Connector = Callable[[str, int], IStreamClientEndpoint]

#: The longest answer line accepted by default (a C{show} of a large map is long).
MAX_ANSWER = 64 * 1024 * 1024


class ClientLibError(Exception):
    """A request failed without an answer to return; C{str()} is one line."""


class RequestTimeoutError(ClientLibError):
    """No answer came before the request's deadline: it may or may not have run."""


class SessionExpiredError(ClientLibError):
    """
    The cluster no longer keeps this client's session, so it cannot say
    whether the numbered request ran; later requests use a fresh client ID.
    """


class SessionsUnsupportedError(ClientLibError):
    """
    The cluster does not understand numbered requests (txraft from before
    exactly-once sessions): the request was refused and did not run.
    """


class ClientClosedError(ClientLibError):
    """The client was closed before the request was answered."""


def newClientId() -> str:
    """A fresh random client ID, for a new session."""
    return "c" + secrets.token_hex(8)


def addressesFromConfig(config: ClusterConfig) -> list[Address]:
    """Every node's C{(host, port)} from a cluster config, in file order."""
    return [(node.host, node.port) for node in config.nodes]


def isWrite(command: str) -> bool:
    """Whether C{command} changes the map, and so is numbered."""
    words = command.split(None, 1)
    return bool(words) and words[0] in WRITES


def memberAddresses(answer: str) -> list[Address]:
    """
    The members' addresses in a C{status} answer (its C{members}, each
    C{HOST:PORT}); none if it has none, or is no status at all.
    """
    try:
        members = json.loads(answers.okValue(answer) or "null")["members"]
        found = [address.rpartition(":") for address in members.values()]
        return [(host.strip("[]"), answers.parsePort(port)) for host, _, port in found]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


class _Request:
    """One request, from L{ClusterClient.request} until its Deferred fires."""

    __slots__ = ("command", "numbered", "timeout", "once", "line", "deferred", "timer")

    def __init__(
        self, command: str, numbered: bool, timeout: float | None = None, once: bool = False
    ) -> None:
        self.command = command
        self.numbered = numbered
        #: Its own deadline, if it is a slow request: its node may then stay
        #: silent that long while it is outstanding, too.
        self.timeout = timeout
        #: Whether an C{UNAVAILABLE} answer that may mean it ran is its answer.
        self.once = once
        #: The line sent, fixed when it is first sent (so its SEQ is too).
        self.line: str | None = None
        self.deferred: defer.Deferred[str] = defer.Deferred()
        self.timer: IDelayedCall | None = None

    @property
    def done(self) -> bool:
        return self.deferred.called

    def finish(self, result: str | Failure) -> None:
        """Fire the Deferred once, and stop the deadline."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if not self.deferred.called:
            if isinstance(result, Failure):
                self.deferred.errback(result)
            else:
                self.deferred.callback(result)


class NodeConnection(Protocol):
    """
    One connection to one node: proves the cluster key first if there is
    one, then hands each answer line to its L{ClusterClient}.  Connection
    state only; the requests live on the client.

    It splits lines itself, in time linear in their length however the
    bytes arrive: an answer may be hundreds of MiB (a backup), and
    L{twisted.protocols.basic.LineReceiver} copies and scans its whole
    buffer at every read, which takes a 64 MiB line minutes.
    """

    def __init__(self, client: ClusterClient, address: Address) -> None:
        self.client = client
        self.address = address
        self.ready = False
        self._buffer = bytearray()
        #: How much of the buffer is known to hold no newline.
        self._scanned = 0
        #: Why this side hung up, if it did.
        self.problem: str | None = None
        self._initiator: Initiator | None = None
        self._session: Session | None = None
        self._proof: str | None = None

    def connectionMade(self) -> None:
        """Start the key handshake, or be ready at once on an open cluster."""
        if self.client.clusterKey is None:
            self._becomeReady()
            return
        self._initiator = Initiator(self.client.clusterKey, self.client.authName)
        self.transport.write(self._initiator.hello().encode("utf-8") + b"\n")

    def dataReceived(self, data: bytes) -> None:
        """Take each whole line received; drop a node whose line grows too long."""
        buffer = self._buffer
        buffer += data
        while not self.transport.disconnecting:
            end = buffer.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(buffer)
                if self._scanned > self.client.maxAnswerLength:
                    self._lineTooLong()
                return
            if end > self.client.maxAnswerLength:
                self._lineTooLong()
                return
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            self._scanned = 0
            self.lineReceived(line)

    def lineReceived(self, line: bytes) -> None:
        """Finish the handshake, or open an answer's MAC and pass it on."""
        line = line.removesuffix(b"\r")
        try:
            if not self.ready:
                self._handshake(line.decode("utf-8", "replace"))
                return
            if self._session is not None:
                line = self._session.open(line)
        except AuthError as e:
            self.problem = f"cluster key handshake with {self.where} failed: {e}"
            self.transport.loseConnection()
            return
        self.client.answerReceived(self, line.decode("utf-8", "replace"))

    def _handshake(self, line: str) -> None:
        assert self._initiator is not None
        if self._proof is None:
            self._proof = self._initiator.answerChallenge(line)
            self.transport.write(self._proof.encode("utf-8") + b"\n")
        else:
            self._session = self._initiator.confirm(line)
            self._becomeReady()

    def _becomeReady(self) -> None:
        self.ready = True
        self.client.connectionReady(self)

    def send(self, lines: Sequence[str]) -> None:
        """Send request lines in one write, sealed on a keyed connection."""
        seal = self._session.seal if self._session is not None else (lambda b: b)
        self.transport.write(b"".join(seal(line.encode("utf-8")) + b"\n" for line in lines))

    def _lineTooLong(self) -> None:
        """A node that sends an endless line is dropped, not buffered."""
        self.problem = f"{self.where} sent an answer line too long"
        self._buffer.clear()
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the client, which sends the unanswered requests elsewhere."""
        self.client.connectionLost(self, reason)

    @property
    def where(self) -> str:
        """The node's address, C{HOST:PORT}, for messages."""
        return f"{self.address[0]}:{self.address[1]}"


class ClusterClient:
    """
    A client of a whole txraft cluster: C{request(command)} returns a
    Deferred that fires with the answer line (C{OK ...}, C{NOT_FOUND} or
    C{ERROR ...}), or fails with a L{ClientLibError}.  Never C{REDIRECT} or
    C{UNAVAILABLE}: those are followed and retried here until the deadline.
    """

    log = Logger()

    #: The first backoff before asking a node again, doubled each failure
    #: in a row up to L{MAX_BACKOFF} (seconds).
    BACKOFF = 0.05
    MAX_BACKOFF = 1.0

    def __init__(
        self,
        reactor: IReactorTime,
        addresses: Sequence[Address],
        clientId: str | None = None,
        timeout: float = 10.0,
        window: int = SESSION_WINDOW,
        exactlyOnce: bool = True,
        clusterKey: bytes | None = None,
        authName: str | None = None,
        tls: Callable[[str], IOpenSSLClientConnectionCreator] | None = None,
        connector: Connector | None = None,
        onRedirect: Callable[[answers.Redirect], None] | None = None,
        stallTimeout: float | None = None,
        maxAnswerLength: int = MAX_ANSWER,
    ) -> None:
        """
        @param reactor: the reactor to connect and keep time on (an
            C{IReactorTCP} and C{IReactorTime}, unless C{connector} is given).
        @param addresses: every node's C{(host, port)}; the first is tried first.
        @param clientId: the ID numbered requests carry; by default a fresh
            random one (L{newClientId}).  An ID is one session, whose SEQs
            start at 1: never give it to two clients, nor to a new client
            after an old one used it (its SEQs would be taken for retries).
        @param timeout: seconds from L{request} until its Deferred fails
            with L{RequestTimeoutError}, retries included.
        @param window: the most requests outstanding at once, at most
            L{SESSION_WINDOW}.
        @param exactlyOnce: number writes (the default).  C{False} sends them
            unnumbered, for clusters without sessions: a write retried after
            an unknown outcome may then apply twice.
        @param clusterKey: prove this key on each connection (for
            administrative commands), or L{None}.
        @param authName: the name to prove it as (by default the client ID).
        @param tls: makes the TLS options for a node's host name, or L{None}
            for plain TCP.
        @param connector: makes the endpoint for C{(host, port)}; by default a
            L{HostnameEndpoint} on C{reactor}, wrapped in TLS with C{tls}.
        @param onRedirect: called with each C{REDIRECT} followed.
        @param stallTimeout: seconds a node may leave every request
            unanswered before the client gives up on it and asks the next
            (a paused or cut-off node keeps its connection open); by
            default half of C{timeout}.
        @param maxAnswerLength: the longest answer line accepted, in bytes;
            a node that sends a longer one is dropped.
        """
        if not addresses:
            raise ValueError("a cluster client needs at least one node address")
        if not 1 <= window <= SESSION_WINDOW:
            raise ValueError(f"window must be from 1 to {SESSION_WINDOW}, not {window}")
        self.reactor = reactor
        #: The nodes known, in the order they are tried; a redirect to a
        #: node not among them adds it.
        self.addresses: list[Address] = list(addresses)
        self.clientId = clientId if clientId is not None else newClientId()
        self.timeout = timeout
        self.window = window
        self.exactlyOnce = exactlyOnce
        self.clusterKey = clusterKey
        #: The name proved in the key handshake.
        self.authName = authName or self.clientId
        self._connector = connector or self._defaultConnector(tls)
        self._onRedirect = onRedirect
        self.stallTimeout = timeout / 2 if stallTimeout is None else stallTimeout
        self.maxAnswerLength = maxAnswerLength
        #: Fires when the node has answered nothing for L{stallTimeout}, or
        #: longer while a slow request is outstanding.
        self._stall: IDelayedCall | None = None
        #: When the silence that C{_stall} times began.
        self._stallStart = 0.0
        #: The SEQ the next numbered request gets.
        self._nextSeq = 1
        #: The node tried next, as an index into L{addresses}.
        self._target = 0
        #: Requests not yet sent, in order.
        self._waiting: deque[_Request] = deque()
        #: Requests sent and not yet answered, in order; a request whose
        #: deadline passed stays until its answer comes, to keep the order.
        self._outstanding: deque[_Request] = deque()
        self._connection: NodeConnection | None = None
        self._connecting = False
        self._retry: IDelayedCall | None = None
        #: Failures in a row since the last answer, for the backoff.
        self._failures = 0
        #: Whether a redirect was followed since the last answer: the first
        #: is followed at once, later ones (nodes still electing) back off.
        self._redirected = False
        #: What went wrong last, for the timeout's message.
        self._problem = "no node asked yet"
        self._closed = False
        self._readyWaiters: list[defer.Deferred[None]] = []
        self._refusals = 0

    def _defaultConnector(
        self, tls: Callable[[str], IOpenSSLClientConnectionCreator] | None
    ) -> Connector:
        def connector(host: str, port: int) -> IStreamClientEndpoint:
            endpoint: IStreamClientEndpoint
            # A host name is resolved; an address is connected to at once
            # (a HostnameEndpoint reports a refusal only after its 0.3s
            # attempt delay, slow when a node is down).
            if isIPAddress(host):
                endpoint = TCP4ClientEndpoint(self.reactor, host, port, self.timeout)
            elif isIPv6Address(host):
                endpoint = TCP6ClientEndpoint(self.reactor, host, port, self.timeout)
            else:
                endpoint = HostnameEndpoint(self.reactor, host, port, timeout=self.timeout)
            if tls is None:
                return endpoint
            # TLS batches small writes until the clock's next turn: ours,
            # not the global reactor's, which may never run.
            return wrapClientTLS(tls(host), endpoint, clock=self.reactor)

        return connector

    # The public API.

    def request(
        self, command: str, timeout: float | None = None, once: bool = False
    ) -> defer.Deferred[str]:
        """
        Send C{command} (C{get KEY}, C{set KEY VALUE}, ...) to the leader and
        return a Deferred of its answer line.  Writes are numbered (unless
        C{exactlyOnce} is off), so however often they are sent they run once.

        @param timeout: seconds for this request instead of the client's
            C{timeout}, for a slow one (an operator's command, a backup):
            the node asked may then also stay silent that long while it is
            outstanding, rather than C{stallTimeout}, before the client
            sends it elsewhere (which would start it over).
        @param once: for a command that no session numbers and that must
            not run twice (an operator's change to the cluster): an
            C{UNAVAILABLE} answer is its answer, unless it says the command
            did not run (L{answers.NOT_EXECUTED}), so that it is not sent
            again.  A lost connection still sends it again.
        @raise ValueError: for a command that spans lines.
        """
        if "\n" in command or "\r" in command:
            raise ValueError("a command must be a single line")
        numbered = self.exactlyOnce and isWrite(command)
        request = _Request(command, numbered, timeout, once)
        if self._closed:
            request.finish(Failure(ClientClosedError("the client is closed")))
            return request.deferred
        deadline = self.timeout if timeout is None else timeout
        request.timer = self.reactor.callLater(deadline, self._expire, request)
        self._waiting.append(request)
        self._pump()
        return request.deferred

    def get(self, key: str) -> defer.Deferred[str]:
        """C{get KEY}: fires with C{OK VALUE} or C{NOT_FOUND}."""
        return self.request(f"get {key}")

    def set(self, key: str, value: str) -> defer.Deferred[str]:
        """C{set KEY VALUE}, once: fires with C{OK}."""
        return self.request(f"set {key} {value}")

    def delete(self, key: str) -> defer.Deferred[str]:
        """C{delete KEY}, once: fires with C{OK}, or C{NOT_FOUND} if it had no value."""
        return self.request(f"delete {key}")

    def show(self) -> defer.Deferred[str]:
        """C{show}: fires with C{OK} and the whole map as JSON."""
        return self.request("show")

    def discover(self) -> defer.Deferred[list[Address]]:
        """
        Ask a node for the cluster's members (its C{status}) and add each
        one's address to those known, so that the client can go on when
        every node it was given is down.  Fires with every known address.
        """

        def learn(answer: str) -> list[Address]:
            for address in memberAddresses(answer):
                if address not in self.addresses:
                    self.addresses.append(address)
            return list(self.addresses)

        return self.request("status").addCallback(learn)

    def connect(self) -> defer.Deferred[None]:
        """
        Fire once a connection to some node is ready, or fail with
        L{ClientLibError} once every known node has refused since this
        call: a quick check that the cluster is reachable at all.
        """
        if self._connection is not None and self._connection.ready:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        if not self._readyWaiters:
            self._refusals = 0
        self._readyWaiters.append(waiter)
        self._pump()
        return waiter

    def close(self) -> None:
        """Fail every unanswered request with L{ClientClosedError} and hang up."""
        self._closed = True
        for call in (self._retry, self._stall):
            if call is not None and call.active():
                call.cancel()
        for request in [*self._outstanding, *self._waiting]:
            request.finish(Failure(ClientClosedError("the client is closed")))
        self._outstanding.clear()
        self._waiting.clear()
        self._failReady(ClientClosedError("the client is closed"))
        if self._connection is not None:
            self._connection.transport.loseConnection()

    @property
    def address(self) -> Address:
        """The node asked now, or next."""
        return self.addresses[self._target]

    # What the connection reports.

    def connectionReady(self, connection: NodeConnection) -> None:
        """A connection is up (its key proved): send everything unanswered."""
        if connection is not self._connection:
            return
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            waiter.callback(None)
        resend = [r for r in self._outstanding if not r.done]
        self._outstanding = deque(resend)
        if resend:
            connection.send([r.line for r in resend if r.line is not None])
            self._watch(connection)
        self._pump()

    def answerReceived(self, connection: NodeConnection, line: str) -> None:
        """Match an answer line with the oldest request sent on C{connection}."""
        if connection is not self._connection or not self._outstanding:
            return
        request = self._outstanding.popleft()
        try:
            redirect = answers.parseRedirect(line)
        except answers.AnswerError as e:
            request.finish(Failure(ClientLibError(str(e))))
            return
        if redirect is not None:
            self._outstanding.appendleft(request)
            self._follow(connection, redirect, line)
        elif answers.isUnavailable(line) and not (
            request.once and line not in answers.NOT_EXECUTED
        ):
            self._outstanding.appendleft(request)
            stay = line in STAY_ON
            self._giveUpOn(connection, f"{connection.where}: {line}", self._target + (not stay))
        else:
            self._failures = 0
            self._redirected = False
            self._watch(connection, answered=True)
            self._answered(request, line)
            self._pump()

    def connectionLost(self, connection: NodeConnection, reason: Failure) -> None:
        """A connection ended: if it was ours, retry on the next node."""
        if connection is not self._connection:
            return
        self._connection = None
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        self.noteProblem(connection.problem or f"{connection.where}: {reason.getErrorMessage()}")
        if not connection.ready:
            self._refused()
        self._scheduleRetry(self._target + 1)

    def noteProblem(self, problem: str) -> None:
        """Remember what went wrong last, for the message of a timeout."""
        self._problem = problem
        self.log.debug("{problem}", problem=problem)

    # Inside.

    def _answered(self, request: _Request, line: str) -> None:
        if request.numbered and line.startswith(SESSION_EXPIRED):
            self._newSession(request)
            request.finish(Failure(SessionExpiredError(f"{request.command!r}: {line}")))
        elif request.numbered and line.startswith(f"ERROR unknown command '{self.clientId}#"):
            request.finish(
                Failure(
                    SessionsUnsupportedError(
                        "the cluster does not take numbered requests "
                        "(txraft before exactly-once sessions)"
                    )
                )
            )
        else:
            request.finish(line)

    def _newSession(self, expired: _Request) -> None:
        """The session is gone: number the requests not yet sent under a new ID."""
        if expired.line is None or not expired.line.startswith(f"{self.clientId}#"):
            return  # an older session's answer: the current one is already new
        old, self.clientId, self._nextSeq = self.clientId, newClientId(), 1
        self.log.info("session {old} expired; going on as {new}", old=old, new=self.clientId)

    def _pump(self) -> None:
        """Connect if there is work; else send what the window allows."""
        if self._closed:
            return
        connection = self._connection
        if connection is None:
            busy = self._waiting or self._outstanding or self._readyWaiters
            if busy and not self._connecting and not self._scheduled():
                self._connect()
            return
        if not connection.ready:
            return
        lines = []
        while self._waiting and len(self._outstanding) < self.window:
            request = self._waiting.popleft()
            if request.done:
                continue
            request.line = self._format(request)
            self._outstanding.append(request)
            lines.append(request.line)
        if lines:
            connection.send(lines)
            self._watch(connection)

    def _format(self, request: _Request) -> str:
        if not request.numbered:
            return request.command
        seq, self._nextSeq = self._nextSeq, self._nextSeq + 1
        return f"{self.clientId}#{seq}@{request.command}"

    def _scheduled(self) -> bool:
        return self._retry is not None and self._retry.active()

    def _connect(self) -> None:
        address = self.address
        self._connecting = True
        factory = Factory.forProtocol(lambda: NodeConnection(self, address))
        d = self._connector(*address).connect(factory)
        d.addCallbacks(self._connected, self._connectFailed, errbackArgs=(address,))

    def _connected(self, connection: NodeConnection) -> None:
        self._connecting = False
        if self._closed:
            connection.transport.loseConnection()
            return
        self._connection = connection
        # A connection on a cluster without a key is ready the moment it is
        # made, before the endpoint says so: send now.
        if connection.ready:
            self.connectionReady(connection)

    def _connectFailed(self, reason: Failure, address: Address) -> None:
        self._connecting = False
        self.noteProblem(
            f"connection to {address[0]}:{address[1]} failed: {reason.getErrorMessage()}"
        )
        self._refused()
        self._scheduleRetry(self._target + 1)

    def _refused(self) -> None:
        """One more node could not be reached: fail L{connect} if all could not."""
        self._refusals += 1
        if self._readyWaiters and self._refusals >= len(self.addresses):
            self._failReady(ClientLibError(self._problem))

    def _failReady(self, error: Exception) -> None:
        waiters, self._readyWaiters = self._readyWaiters, []
        for waiter in waiters:
            waiter.errback(Failure(error))

    def _follow(self, connection: NodeConnection, redirect: answers.Redirect, line: str) -> None:
        """Hang up and ask the leader a redirect names, at once the first time."""
        address = (redirect.host, redirect.port)
        if address not in self.addresses:
            self.addresses.append(address)
        if self._onRedirect is not None:
            self._onRedirect(redirect)
        first, self._redirected = not self._redirected, True
        target = self.addresses.index(address)
        self._giveUpOn(connection, f"{connection.where}: {line}", target, now=first)

    def _giveUpOn(
        self, connection: NodeConnection, problem: str, target: int, now: bool = False
    ) -> None:
        """Stop using C{connection}; resend its unanswered requests to C{target}."""
        self.noteProblem(problem)
        self._connection = None
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        connection.transport.loseConnection()
        self._scheduleRetry(target, now)

    def _scheduleRetry(self, target: int, now: bool = False) -> None:
        """Connect to C{target} next: at once, or after the backoff unless C{now}."""
        self._target = target % len(self.addresses)
        if self._closed or self._scheduled():
            return
        delay = 0.0
        if not now:
            delay = 0.0 if self._failures == 0 else self.BACKOFF * 2 ** (self._failures - 1)
            self._failures += 1
        self._retry = self.reactor.callLater(min(delay, self.MAX_BACKOFF), self._pump)

    def _watch(self, connection: NodeConnection, answered: bool = False) -> None:
        """
        Keep a stall timer while requests are outstanding on C{connection}:
        started by the first one sent, restarted by each answer.
        """
        active = self._stall is not None and self._stall.active()
        if not self._outstanding:
            if active:
                self._stall.cancel()
            return
        delay = max([self.stallTimeout, *(r.timeout or 0 for r in self._outstanding)])
        now = self.reactor.seconds()
        if not active:
            self._stallStart = now
            self._stall = self.reactor.callLater(delay, self._stalled, connection)
        elif answered:
            self._stallStart = now
            self._stall.reset(delay)
        elif self._stallStart + delay > self._stall.getTime():
            # The silence goes on, but a patient request just sent stretches it.
            self._stall.reset(self._stallStart + delay - now)

    def _stalled(self, connection: NodeConnection) -> None:
        """The node answered nothing for a while: ask the next one."""
        if connection is self._connection and self._outstanding:
            silence = self.reactor.seconds() - self._stallStart
            problem = f"no answer from {connection.where} within {silence:g}s"
            self._giveUpOn(connection, problem, self._target + 1)

    def _expire(self, request: _Request) -> None:
        """A request's deadline passed: fail it (an outstanding one keeps its place)."""
        if request in self._waiting:
            self._waiting.remove(request)
        timeout = self.timeout if request.timeout is None else request.timeout
        if request in self._outstanding and self._connection is not None:
            problem = f"no answer from {self._connection.where} within {timeout:g}s"
        else:
            problem = f"no answer within {timeout:g}s; last: {self._problem}"
        message = f"{request.command!r}: {problem}"
        request.finish(Failure(RequestTimeoutError(message)))
