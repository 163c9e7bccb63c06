"""
The node's listening side: one port for clients and peers.

Every line is ``[SENDER@]MESSAGE``.  A line whose MESSAGE starts with an RPC
name (``AppendEntries``, ``RequestVote``, ...) is a peer line; anything else
is a client request.  Each request line gets exactly one response line, in
request order, even when a later request is answered before an earlier one.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from txraft.interfaces import IRequestHandler
from txraft.messages import (
    REQUESTS,
    MessageError,
    formatMessage,
    parseMessage,
    rpcName,
    splitSender,
)

#: The default reason of a connection's end, as Twisted's own protocols use.
CONNECTION_DONE = Failure(ConnectionDone())

#: The longest line a node reads, peer lines included (bytes, without the newline).
MAX_LINE = 4 * 1024 * 1024

#: The longest client request line; longer ones get C{ERROR line too long}
#: and the connection is closed.
MAX_REQUEST = 1024 * 1024

#: A connection with this many requests awaiting their answers is read no
#: further until half of them are answered: a client that pipelines faster
#: than the cluster commits waits in its own socket buffer, and the node's
#: event loop stays free for heartbeats.
MAX_PENDING = 1000


@implementer(IHalfCloseableProtocol)
class NodeProtocol(LineReceiver):
    """
    The server side of one connection to a node, from a client or a peer.

    Responses are queued in request order: each request takes a slot, and
    slots are written out from the front as soon as they are filled.  A
    client that closes its sending side (C{nc -N} at the end of its input)
    still gets every answer before the node closes the connection.  While
    L{MAX_PENDING} requests wait for their answers, the connection is not
    read.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    log = Logger()

    def __init__(self, node: IRequestHandler) -> None:
        self.node = node
        self._slots: deque[list[str | None]] = deque()
        self._closing = False

    def lineReceived(self, line: bytes) -> None:
        """Answer one request line, in order with the others."""
        if self._closing:
            return
        if len(line) > MAX_REQUEST and not self._looksLikePeerLine(line):
            self.lineLengthExceeded(line)
            return
        slot: list[str | None] = [None]
        self._slots.append(slot)
        if len(self._slots) >= MAX_PENDING and not self.paused:
            self.pauseProducing()
        result = self._dispatch(line.removesuffix(b"\r"))
        if isinstance(result, defer.Deferred):
            result.addErrback(self._internalError)
            result.addCallback(self._fill, slot)
        else:
            self._fill(result, slot)

    def _dispatch(self, line: bytes) -> str | defer.Deferred[str]:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return "ERROR request is not valid UTF-8"
        sender, rest = splitSender(text)
        if sender is not None and rpcName(rest):
            return self._peerLine(sender, rest)
        return self.node.clientRequest(sender, rest)

    def _peerLine(self, sender: str, rest: str) -> str:
        if not self.node.isPeer(sender):
            self.log.warn("rejected a peer line from unknown node {sender!r}", sender=sender)
            return f"ERROR {sender!r} is not a peer of this node"
        try:
            message = parseMessage(rest)
        except MessageError as e:
            self.log.warn("rejected a peer line from {sender}: {error}", sender=sender, error=e)
            return f"ERROR {e}"
        if not isinstance(message, REQUESTS):
            return f"ERROR {type(message).__name__} is not a request"
        reply = self.node.peerRequest(sender, message)
        if reply is None:
            return "ERROR this node is not serving"
        return formatMessage(self.node.name, reply)

    def _internalError(self, failure: Failure) -> str:
        self.log.failure("request failed", failure)
        return "ERROR internal error"

    @staticmethod
    def _looksLikePeerLine(line: bytes) -> bool:
        sender, rest = splitSender(line[:200].decode("utf-8", "replace"))
        return sender is not None and rpcName(rest) is not None

    def _fill(self, response: str, slot: list[str | None]) -> None:
        slot[0] = response
        while self._slots and self._slots[0][0] is not None:
            self.sendLine(self._slots.popleft()[0].encode("utf-8"))
        if self._closing:
            if not self._slots:
                self.transport.loseConnection()
        elif self.paused and len(self._slots) <= MAX_PENDING // 2:
            self.resumeProducing()

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse an over-long line, answer what came before it, then hang up."""
        self._closing = True
        self.transport.pauseProducing()
        self._slots.append(["ERROR line too long"])
        self._fill("ERROR line too long", self._slots[-1])

    def readConnectionLost(self) -> None:
        """The client sent all it will: answer what it asked, then close."""
        self._closing = True
        if not self._slots:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Nothing to do: answers are only written while the client reads."""

    def connectionMade(self) -> None:
        """Join the factory's set of open connections."""
        if self.factory is not None:
            self.factory.connected.add(self)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        """Forget pending answers: nobody is left to read them."""
        if self.factory is not None:
            self.factory.connected.discard(self)
        self._slots.clear()
        self._closing = True


class NodeFactory(Factory):
    """
    Builds a L{NodeProtocol} per accepted connection, all sharing one
    node, and keeps track of them so a stopping node can hang up.
    """

    noisy = False

    def __init__(self, node: IRequestHandler) -> None:
        self.node = node
        self.connected: set[NodeProtocol] = set()

    def buildProtocol(self, addr: object) -> NodeProtocol:
        """A protocol bound to this factory's node."""
        protocol = NodeProtocol(self.node)
        protocol.factory = self
        return protocol

    def disconnectAll(self) -> None:
        """Close every connection at once, pending answers and all."""
        for protocol in list(self.connected):
            protocol.transport.abortConnection()
