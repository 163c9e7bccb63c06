"""
The one load generator of C{bench/compare.py}: a single thread that drives
any number of pipelined connections to one server with C{selectors}.

Every system under comparison is measured by this same code, so that the
client's own cost is the same for all of them; only the bytes on the wire
differ, and those are a L{Codec}'s business: L{LineCodec} speaks the
txraft line protocol (which the PySyncObj front end of C{syncobjnode.py}
speaks too), L{HTTPCodec} speaks etcd's HTTP/JSON gateway.
"""

from __future__ import annotations

import base64
import json
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from txraft.testing.load import Result

#: How long to wait for the answers still outstanding once sending stops, in seconds.
DRAIN_SECONDS = 30.0

#: A request to make: (verb, key, value); the value is ignored for C{get}.
Request = tuple[str, str, str]


class Codec(Protocol):
    """How one system's requests and answers look on the wire."""

    def encode(self, request: Request, connection: int = 0) -> bytes:
        """The bytes of one C{set} or C{get} request, sent on C{connection}."""

    def decode(self, buffer: bytearray) -> list[str]:
        """Remove every complete answer from C{buffer} and return them, in order."""

    def isSuccess(self, verb: str, answer: str) -> bool:
        """Whether C{answer} is the success answer to a C{verb} request."""


class LineCodec:
    """
    The txraft line protocol: C{set KEY VALUE} answered C{OK}, C{get KEY}
    C{OK VALUE}.  With a C{session}, writes are numbered as the client
    library numbers them (exactly once): those of connection C carry
    C{SESSION-C#SEQ@}, SEQ counting up from 1 over every phase the codec
    serves; reads go bare, as the library sends them.
    """

    def __init__(self, session: str | None = None) -> None:
        self.session = session
        #: The SEQ of each connection's last numbered write.
        self._seqs: dict[int, int] = {}

    def encode(self, request: Request, connection: int = 0) -> bytes:
        """One request line."""
        verb, key, value = request
        if verb != "set":
            return f"get {key}\n".encode()
        if self.session is None:
            return f"set {key} {value}\n".encode()
        seq = self._seqs[connection] = self._seqs.get(connection, 0) + 1
        return f"{self.session}-{connection}#{seq}@set {key} {value}\n".encode()

    def decode(self, buffer: bytearray) -> list[str]:
        """Every complete answer line."""
        end = buffer.rfind(b"\n")
        if end < 0:
            return []
        lines = bytes(buffer[:end]).decode("utf-8", "replace").split("\n")
        del buffer[: end + 1]
        return lines

    def isSuccess(self, verb: str, answer: str) -> bool:
        """A write is answered C{OK}; a read of a key written, C{OK VALUE}."""
        return answer == "OK" if verb == "set" else answer.startswith("OK ")


class HTTPCodec:
    """
    etcd's HTTP/JSON gateway to its v3 API: C{POST /v3/kv/put} and
    C{/v3/kv/range} with base64 keys and values, over HTTP/1.1 keep-alive.
    An answer is decoded as C{"STATUS BODY"}.
    """

    def __init__(self, host: str) -> None:
        self.host = host

    def encode(self, request: Request, connection: int = 0) -> bytes:
        """One HTTP request with a JSON body."""
        verb, key, value = request
        document = {"key": base64.b64encode(key.encode()).decode()}
        if verb == "set":
            document["value"] = base64.b64encode(value.encode()).decode()
        return httpPost(self.host, "/v3/kv/put" if verb == "set" else "/v3/kv/range", document)

    def decode(self, buffer: bytearray) -> list[str]:
        """Every complete response (C{Content-Length} framed, as etcd sends them)."""
        answers = []
        while (headerEnd := buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(buffer[:headerEnd]).decode("latin-1").split("\r\n")
            length = 0
            for field in head[1:]:
                name, _, fieldValue = field.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(fieldValue)
            end = headerEnd + 4 + length
            if len(buffer) < end:
                break
            status = head[0].split(" ")[1]
            answers.append(f"{status} {bytes(buffer[headerEnd + 4 : end]).decode()}")
            del buffer[:end]
        return answers

    def isSuccess(self, verb: str, answer: str) -> bool:
        """Status 200; for a read, the key found."""
        return answer.startswith("200 ") and (verb == "set" or '"kvs"' in answer)


def httpPost(host: str, path: str, document: object) -> bytes:
    """The bytes of an HTTP/1.1 keep-alive C{POST} of C{document} as JSON."""
    body = json.dumps(document).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class _Connection:
    """One connection's state in L{drive}."""

    def __init__(self, number: int, address: tuple[str, int]) -> None:
        self.number = number
        self.socket = socket.create_connection(address, timeout=10)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.setblocking(False)
        self.output = bytearray()
        self.input = bytearray()
        self.pending: deque[tuple[float, str]] = deque()
        self.sent = 0
        self.open = True


def drive(
    address: tuple[str, int],
    codec: Codec,
    makeRequest: Callable[[int, int], Request],
    connections: int = 1,
    window: int = 1,
    seconds: float | None = None,
    count: int | None = None,
    name: str = "",
) -> Result:
    """
    Send requests on C{connections} connections to C{address}, keeping up to
    C{window} unanswered on each, for C{seconds} or until C{count} requests
    per connection were sent, then wait for the outstanding answers (giving
    up after L{DRAIN_SECONDS} without any).

    @param makeRequest: gives the request numbered C{j} on connection C{i}.
    @return: the latency of each success, the failures (a wrong answer, a
        lost connection, no answer in L{DRAIN_SECONDS}), and the seconds from
        the first send to the last answer.
    """
    result = Result(name)
    opened = [_Connection(i, address) for i in range(connections)]
    selector = selectors.DefaultSelector()
    for connection in opened:
        selector.register(connection.socket, selectors.EVENT_READ, connection)
    started = last = time.perf_counter()
    stopSending = started + seconds if seconds is not None else float("inf")
    try:
        while True:
            now = time.perf_counter()
            sending = now < stopSending
            for connection in opened:
                if connection.open and sending:
                    _fill(connection, codec, makeRequest, window, count)
            live = [c for c in opened if c.open and (c.pending or (sending and _more(c, count)))]
            if not live or now - last > DRAIN_SECONDS:
                break
            for connection in live:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if connection.output else 0)
                selector.modify(connection.socket, events, connection)
            for key, events in selector.select(timeout=0.05):
                connection = key.data
                if events & selectors.EVENT_WRITE:
                    _flush(connection, result)
                if events & selectors.EVENT_READ and connection.open:
                    if _receive(connection, codec, result):
                        last = time.perf_counter()
    finally:
        for connection in opened:
            for _ in connection.pending:
                result.error("no answer")
            connection.pending.clear()
            selector.unregister(connection.socket)
            connection.socket.close()
        selector.close()
    result.seconds = last - started
    return result


def _more(connection: _Connection, count: int | None) -> bool:
    return count is None or connection.sent < count


def _fill(
    connection: _Connection,
    codec: Codec,
    makeRequest: Callable[[int, int], Request],
    window: int,
    count: int | None,
) -> None:
    now = time.perf_counter()
    while len(connection.pending) < window and _more(connection, count):
        request = makeRequest(connection.number, connection.sent)
        connection.output += codec.encode(request, connection.number)
        connection.pending.append((now, request[0]))
        connection.sent += 1
    if connection.output:
        _flushNow(connection)


def _flushNow(connection: _Connection) -> None:
    try:
        sent = connection.socket.send(connection.output)
    except BlockingIOError:
        return
    del connection.output[:sent]


def _flush(connection: _Connection, result: Result) -> None:
    try:
        _flushNow(connection)
    except OSError as e:
        _lose(connection, result, f"send failed: {e}")


def _receive(connection: _Connection, codec: Codec, result: Result) -> bool:
    try:
        data = connection.socket.recv(1 << 18)
    except BlockingIOError:
        return False
    except OSError as e:
        _lose(connection, result, f"receive failed: {e}")
        return False
    if not data:
        _lose(connection, result, "connection closed by the server")
        return False
    connection.input += data
    received = time.perf_counter()
    for answer in codec.decode(connection.input):
        sentAt, verb = connection.pending.popleft()
        if codec.isSuccess(verb, answer):
            result.latencies.append(received - sentAt)
        else:
            result.error(answer[:200])
    return True


def _lose(connection: _Connection, result: Result, reason: str) -> None:
    for _ in connection.pending:
        result.error(reason)
    connection.pending.clear()
    connection.open = False
