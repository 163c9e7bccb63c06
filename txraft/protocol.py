"""
The node's listening side: one port for clients and peers.

Every line is ``[SENDER@]MESSAGE``; a client's SENDER may carry a request
number, ``CLIENTID#SEQ`` (see L{txraft.sessions}).  A line whose MESSAGE starts with an RPC
name (``AppendEntries``, ``RequestVote``, ...) is a peer line; anything else
is a client request.  Each request line gets exactly one response line, in
request order, even when a later request is answered before an earlier one.

On a node with a cluster key, a connection must first prove the key with the
handshake of L{txraft.auth}; only then are its peer lines (and administrative
client commands) taken, and from then on every line both ways carries a MAC.
"""

from __future__ import annotations

from collections import deque
from functools import partial

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from txraft import answers
from txraft.admin import ADMIN_WORDS
from txraft.auth import AUTH1, AuthError, Responder, Session, authWord
from txraft.interfaces import IRequestHandler
from txraft.messages import (
    REQUESTS,
    Message,
    MessageError,
    formatMessage,
    parseMessage,
    rpcName,
    splitSender,
)
from txraft.ratelimit import LogLimiter
from txraft.sessions import RequestError, splitRequest

#: The default reason of a connection's end, as Twisted's own protocols use.
CONNECTION_DONE = Failure(ConnectionDone())

#: The longest line a node reads, peer lines included (bytes, without the newline).
MAX_LINE = 4 * 1024 * 1024

#: The longest client request line; longer ones get C{ERROR line too long}
#: and the connection is closed.
MAX_REQUEST = 1024 * 1024

#: Answers one connection may have pending (its requests read but not yet
#: answered, or answered but not yet written) before the node stops reading
#: from it; it reads again once half of them are written.  A client that
#: pipelines faster than the cluster commits waits in its own socket buffer,
#: and the node's event loop stays free for heartbeats.  With the transport's
#: own pause when the client does not read its answers, this bounds the
#: memory one connection can take.
MAX_PENDING = 1000

#: Seconds a connection may hold a partial line (or an unfinished key
#: handshake) before it is closed.
IDLE_TIMEOUT = 30.0

#: Client command words that only a connection that proved the cluster key
#: may use (on a keyed node): membership changes and leadership transfer.
ADMIN_COMMANDS: frozenset[str] = ADMIN_WORDS


def sendAtOnce(transport: object) -> None:
    """
    Turn Nagle's algorithm off on a TCP C{transport} (through TLS too):
    every line a node writes is a whole request or answer that its reader
    waits for, and across machines a small one held back until the last is
    acknowledged waits a round trip.  (On one machine it measured no
    difference either way: README, Inside.)  Other transports (in memory,
    in tests) are left alone.
    """
    setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setTcpNoDelay is not None:
        setTcpNoDelay(True)


NOT_AUTHENTICATED = answers.error("not authenticated: peer lines need the cluster key handshake")
NOT_AUTHORIZED = answers.error("not authorized")
NO_CERTIFICATE = answers.error("peer lines need a certificate signed by the cluster's CA")


@implementer(IHalfCloseableProtocol, IPushProducer)
class NodeProtocol(LineReceiver):
    """
    The server side of one connection to a node, from a client or a peer.

    Responses are queued in request order: each request takes a slot, and
    slots are written out from the front as soon as they are filled.  A
    client that closes its sending side (C{nc -N} at the end of its input)
    still gets every answer before the node closes the connection.

    A client that pipelines requests without reading the answers is not
    read from (Twisted's producer/consumer flow control) while
    L{MAX_PENDING} answers are pending or the transport's write buffer is
    full, nor is any client while the node is overloaded; one that stops in
    the middle of a line is closed after C{idleTimeout} seconds.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    log = Logger()

    def __init__(
        self,
        node: IRequestHandler,
        clusterKey: bytes | None = None,
        limiter: LogLimiter | None = None,
        clock: IReactorTime | None = None,
        idleTimeout: float = IDLE_TIMEOUT,
        requirePeerCertificate: bool = False,
    ) -> None:
        """
        @param clusterKey: the cluster's key, or L{None} if peers are not
            authenticated (insecure mode).
        @param limiter: limits the warnings about strangers' lines, shared by
            every connection.
        @param clock: keeps time for C{idleTimeout}; without one, a partial
            line is waited for for ever.
        @param requirePeerCertificate: take peer lines only from a TLS
            connection that presented a certificate (signed by the CA).
        """
        self.node = node
        self.clusterKey = clusterKey
        self.limiter = limiter if limiter is not None else LogLimiter()
        self._clock = clock
        self.idleTimeout = idleTimeout
        self.requirePeerCertificate = requirePeerCertificate
        self._idleCall: IDelayedCall | None = None
        self._partial = False
        self._slots: deque[list[str | None]] = deque()
        self._closing = False
        #: Why reading is paused: "answers" (too many pending), "writes"
        #: (the transport's buffer is full), "backlog" (the node holds too
        #: many requests of all its clients).
        self._pauses: set[str] = set()
        #: The client's end of input came while reading was paused.
        self._eof = False
        self._responder: Responder | None = None
        #: Set once the other side has proved the cluster key.
        self.session: Session | None = None
        #: Whole lines received and not yet taken (see L{dataReceived});
        #: C{_buffer} holds the unfinished one after them.
        self._lines: deque[bytes] = deque()
        #: Answers taken from the front of the slots, to be written in one
        #: piece at the end of this reactor turn (L{_fill}).
        self._out: list[str] = []
        self._outCall: IDelayedCall | None = None

    def lineReceived(self, line: bytes) -> None:
        """Answer one request line, in order with the others."""
        if self._closing:
            return
        line = line.removesuffix(b"\r")
        if self.session is not None:
            try:
                line = self.session.open(line)
            except AuthError as e:
                self._warn("dropped an authenticated connection: {error}", error=e)
                self._refuse(answers.error(str(e)))
                return
        elif self._responder is not None or (
            # Every handshake line holds "@AUTH": most lines skip the decoding.
            b"@AUTH" in line[:100] and authWord(line[:100].decode("utf-8", "replace"))
        ):
            self._handshake(line)
            return
        if len(line) > MAX_REQUEST and not self._looksLikePeerLine(line):
            self.lineLengthExceeded(line)
            return
        slot: list[str | None] = [None]
        self._slots.append(slot)
        if len(self._slots) >= MAX_PENDING:
            self._pause("answers")
        answer = self._dispatch(line, slot)
        if answer is not None:
            self._fill(slot, answer)

    def _dispatch(self, line: bytes, slot: list[str | None]) -> str | None:
        """The answer to C{line}, or L{None} if the node will fill C{slot} with it."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return "ERROR request is not valid UTF-8"
        if "@" not in text:
            # A bare command, most clients' every line: no sender to split off.
            clientId, seq, command = None, None, text
        else:
            sender, rest = splitSender(text)
            if sender is not None and rpcName(rest):
                answer = self._peerLine(sender, rest)
                if isinstance(answer, Deferred):
                    answer.addCallback(partial(self._fill, slot))
                    return None
                return answer
            try:
                clientId, seq, command = splitRequest(text)
            except RequestError as e:
                return answers.error(str(e))
        if self._needsProof() and command.split(" ", 1)[0] in ADMIN_COMMANDS:
            return NOT_AUTHORIZED
        try:
            self.node.submit(clientId, command, seq, partial(self._fill, slot))
        except Exception:
            self.log.failure("request failed")
            if slot[0] is None:
                return answers.INTERNAL_ERROR
        self._holdWhileOverloaded()
        return None

    def _holdWhileOverloaded(self) -> None:
        """
        Read no more requests while the node holds too many unanswered from
        all its clients; read again once it has drained.  Peer lines never
        wait for this: heartbeats and votes must get through.
        """
        drained = self.node.overloaded()
        if drained is not None:
            self._pause("backlog")
            drained.addCallback(lambda _: self._resume("backlog"))

    def _lacksCertificate(self) -> bool:
        """Whether peer lines need a certificate this connection did not present."""
        return self.requirePeerCertificate and not _hasPeerCertificate(self.transport)

    def _needsProof(self) -> bool:
        """Whether this connection must yet prove the cluster key to be trusted."""
        return self.clusterKey is not None and self.session is None

    def _peerLine(self, sender: str, rest: str) -> str | Deferred[str]:
        if not self.node.isPeer(sender):
            self._warn("rejected a peer line from unknown node {sender!r}", sender=sender)
            return f"ERROR {sender!r} is not a peer of this node"
        if self._lacksCertificate():
            self._warn("rejected a peer line from {sender!r} without a certificate", sender=sender)
            return NO_CERTIFICATE
        if self._needsProof():
            self._warn("rejected a peer line from unauthenticated {sender!r}", sender=sender)
            return NOT_AUTHENTICATED
        if self.session is not None and sender != self.session.peerName:
            self._warn(
                "rejected a line from {sender!r} on {peer}'s connection",
                sender=sender,
                peer=self.session.peerName,
            )
            return answers.error(f"this connection authenticated as {self.session.peerName!r}")
        try:
            message = parseMessage(rest)
        except MessageError as e:
            self._warn("rejected a peer line from {sender}: {error}", sender=sender, error=e)
            return f"ERROR {e}"
        if not isinstance(message, REQUESTS):
            return f"ERROR {type(message).__name__} is not a request"
        reply = self.node.peerRequest(sender, message)
        if isinstance(reply, Deferred):
            return reply.addCallback(self._peerAnswer)
        return self._peerAnswer(reply)

    def _peerAnswer(self, reply: Message | None) -> str:
        """The line that answers a peer's request with C{reply}."""
        if reply is None:
            return "ERROR this node is not serving"
        return formatMessage(self.node.name, reply)

    def _handshake(self, line: bytes) -> None:
        """
        Take one line of the key handshake, answering it at once: it comes
        first on a connection, with no other answer pending.
        """
        text = line.decode("utf-8", "replace")
        word = authWord(text)
        if self.clusterKey is None:
            self._refuse(answers.error("this node has no cluster key"))
            return
        if self._lacksCertificate():
            self._warn("refused a handshake without a certificate")
            self._refuse(NO_CERTIFICATE)
            return
        if self._slots or (word == AUTH1) != (self._responder is None):
            self._warn("dropped a connection: out-of-order handshake line")
            self._refuse(answers.error("handshake out of order"))
            return
        try:
            if self._responder is None:
                self._responder = Responder(self.clusterKey, self.node.name)
                self.sendLine(self._responder.challenge(text).encode("utf-8"))
                return
            session = self._responder.verify(text)
        except AuthError as e:
            self._warn("failed handshake: {error}", error=e)
            self._refuse(answers.error(f"authentication failed: {e}"))
            return
        self.sendLine(self._responder.confirmation().encode("utf-8"))
        self._responder, self.session = None, session

    def sendLine(self, line: bytes) -> None:
        """Send one line, with its MAC once the connection is authenticated."""
        self._writeOut()
        if self.session is not None:
            line = self.session.seal(line)
        super().sendLine(line)

    def _warn(self, format: str, **kwargs: object) -> None:
        """Log a warning about a stranger's line, unless too many came lately."""
        suppressed = self.limiter.allow()
        if suppressed is None:
            return
        if suppressed:
            format += " ({suppressed} similar warnings suppressed)"
        self.log.warn(format, suppressed=suppressed, **kwargs)

    def _refuse(self, answer: str) -> None:
        """Answer C{answer} after what came before it, then hang up."""
        self._closing = True
        self.transport.pauseProducing()
        slot: list[str | None] = [None]
        self._slots.append(slot)
        self._fill(slot, answer)

    @staticmethod
    def _looksLikePeerLine(line: bytes) -> bool:
        sender, rest = splitSender(line[:200].decode("utf-8", "replace"))
        return sender is not None and rpcName(rest) is not None

    def _fill(self, slot: list[str | None], response: str) -> None:
        """
        Fill C{slot} with C{response}; send every answer ready at the front:
        at once if no request of the connection waits any more (a lone
        request's answer goes without delay), else with the others of this
        reactor turn in one write at its end (under pipelined load a batch
        of answers costs one write, not one each).
        """
        slot[0] = response
        slots = self._slots
        if slots and slots[0][0] is not None:
            if self.session is None:
                out = self._out
                out.append(slots.popleft()[0])
                while slots and slots[0][0] is not None:
                    out.append(slots.popleft()[0])
                if not slots or self._clock is None:
                    self._writeOut()
                elif self._outCall is None:
                    self._outCall = self._clock.callLater(0, self._writeOut)
            else:
                while slots and slots[0][0] is not None:
                    self.sendLine(slots.popleft()[0].encode("utf-8"))
        if self._closing and not slots:
            self.transport.loseConnection()
        elif "answers" in self._pauses and len(slots) <= MAX_PENDING // 2:
            self._resume("answers")

    def _writeOut(self) -> None:
        """Write the answers taken for this turn's write (L{_fill}), if any."""
        if self._outCall is not None:
            if self._outCall.active():
                self._outCall.cancel()
            self._outCall = None
        out = self._out
        if out:
            out.append("")
            self.transport.write("\n".join(out).encode("utf-8"))
            out.clear()

    def dataReceived(self, data: bytes) -> None:
        """
        Take the bytes, answer each whole line in order while not paused,
        and watch for a line (or handshake) left unfinished.

        This is L{LineReceiver.dataReceived} split a chunk at a time: that
        one copies the rest of its buffer for every line it takes, which
        for a chunk of a few thousand pipelined requests cost more than a
        microsecond a line.
        """
        if b"\n" in data:
            lines = (self._buffer + data).split(b"\n")
            self._buffer = lines.pop()
            self._lines.extend(lines)
        elif data:
            self._buffer += data
        if not self._busyReceiving:
            self._busyReceiving = True
            try:
                self._takeLines()
            finally:
                self._busyReceiving = False
        if data:
            self._partial = not data.endswith(self.delimiter)
        self._watchIdle(self._partial or self._responder is not None)

    def _takeLines(self) -> None:
        """Answer the whole lines received, in order, until paused or hanging up."""
        lines = self._lines
        while lines and not self.paused:
            line = lines.popleft()
            if len(line) > self.MAX_LENGTH:
                lines.clear()
                self._buffer = b""
                self.lineLengthExceeded(line)
                return
            self.lineReceived(line)
            if self.transport is not None and self.transport.disconnecting:
                return
        if not lines and len(self._buffer) > self.MAX_LENGTH:
            # A line too long even unfinished.
            self._buffer = b""
            self.lineLengthExceeded(b"")

    def _watchIdle(self, waiting: bool) -> None:
        """Start the idle clock when something is left unfinished; stop it when not."""
        if not waiting or self._closing:
            if self._idleCall is not None and self._idleCall.active():
                self._idleCall.cancel()
            self._idleCall = None
        elif self._idleCall is None and self._clock is not None:
            self._idleCall = self._clock.callLater(self.idleTimeout, self._idleTimedOut)

    def _idleTimedOut(self) -> None:
        self._idleCall = None
        self._warn("closed a connection idle {seconds}s mid-line", seconds=self.idleTimeout)
        self.transport.abortConnection()

    def pauseProducing(self) -> None:
        """The transport's write buffer is full: stop reading requests."""
        self._pause("writes")

    def resumeProducing(self) -> None:
        """The transport's write buffer has drained: read requests again."""
        self._resume("writes")

    def _pause(self, reason: str) -> None:
        if not self._pauses:
            LineReceiver.pauseProducing(self)
        self._pauses.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._pauses:
            return
        self._pauses.discard(reason)
        if self._pauses or self._closing:
            return
        if not self._eof:
            LineReceiver.resumeProducing(self)
            return
        # The transport has no more to read: just finish the lines buffered.
        self.paused = False
        self.dataReceived(b"")
        if not self.paused:
            self.readConnectionLost()

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse an over-long line, answer what came before it, then hang up."""
        self._refuse("ERROR line too long")

    def readConnectionLost(self) -> None:
        """The client sent all it will: answer what it asked, then close."""
        if self.paused and self._pauses:
            self._eof = True
            return
        self._closing = True
        self._watchIdle(False)
        if not self._slots:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Nothing to do: answers are only written while the client reads."""

    def connectionMade(self) -> None:
        """
        Join the factory's set of open connections; pause when the client
        does not read; send every line at once.
        """
        if self.factory is not None:
            self.factory.connected.add(self)
        sendAtOnce(self.transport)
        self.transport.registerProducer(self, True)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        """Forget pending answers: nobody is left to read them."""
        if self.factory is not None:
            self.factory.connected.discard(self)
        self._slots.clear()
        self._out.clear()
        if self._outCall is not None and self._outCall.active():
            self._outCall.cancel()
        self._outCall = None
        self._closing = True
        self._watchIdle(False)


def _hasPeerCertificate(transport: object) -> bool:
    """
    Whether the other end of C{transport} presented a TLS certificate
    (which, with a CA configured, OpenSSL has verified against it).
    """
    getPeerCertificate = getattr(transport, "getPeerCertificate", None)
    return getPeerCertificate is not None and getPeerCertificate() is not None


class NodeFactory(Factory):
    """
    Builds a L{NodeProtocol} per accepted connection, all sharing one
    node, and keeps track of them so a stopping node can hang up.

    Beyond C{maxConnections} open connections a new one is closed at once,
    unless it comes from one of C{peerHosts}: a peer is never refused for
    it (strangers on a peer's own host are not limited either).
    """

    noisy = False
    log = Logger()

    def __init__(
        self,
        node: IRequestHandler,
        clusterKey: bytes | None = None,
        clock: IReactorTime | None = None,
        maxConnections: int | None = None,
        peerHosts: frozenset[str] = frozenset(),
        requirePeerCertificate: bool = False,
    ) -> None:
        """
        @param clusterKey: the key peers must prove, or L{None} for none.
        @param requirePeerCertificate: take peer lines only from connections
            that presented a TLS certificate signed by the cluster's CA.
        @param clock: keeps time for idle connections and for the limit on
            warnings about strangers.
        @param maxConnections: how many connections to keep open at most
            (peers' aside), or L{None} for no limit.
        @param peerHosts: the addresses the peers connect from.
        """
        self.node = node
        self.clusterKey = clusterKey
        self.clock = clock
        self.maxConnections = maxConnections
        self.peerHosts = peerHosts
        self.requirePeerCertificate = requirePeerCertificate
        self.limiter = LogLimiter(clock)
        self._refusals = LogLimiter(clock)
        self.connected: set[NodeProtocol] = set()

    def buildProtocol(self, addr: object) -> NodeProtocol | None:
        """A protocol bound to this factory's node, or L{None} to refuse the connection."""
        host = getattr(addr, "host", None)
        full = self.maxConnections is not None and len(self.connected) >= self.maxConnections
        if full and host not in self.peerHosts:
            suppressed = self._refusals.allow()
            if suppressed is not None:
                self.log.warn(
                    "refused a connection from {host}: {count} connections open "
                    "({suppressed} refusals not logged)",
                    host=host,
                    count=len(self.connected),
                    suppressed=suppressed,
                )
            return None
        protocol = NodeProtocol(
            self.node,
            self.clusterKey,
            self.limiter,
            self.clock,
            requirePeerCertificate=self.requirePeerCertificate,
        )
        protocol.factory = self
        return protocol

    def disconnectAll(self) -> None:
        """Close every connection at once, pending answers and all."""
        for protocol in list(self.connected):
            protocol.transport.abortConnection()
