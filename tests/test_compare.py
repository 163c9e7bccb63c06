"""
The side-by-side benchmark's own logic (C{bench/compare.py} and its modules),
cheaply: its options, its ratios and table on fixed numbers, the load
generator's codecs and its loop against a tiny in-process server, and the
PySyncObj front end's answer order with a fake store.  No system is started.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable

from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import compare  # noqa: E402
import loadgen  # noqa: E402
import report  # noqa: E402
import syncobjnode  # noqa: E402


class OptionsTests(SynchronousTestCase):
    """The command line of C{bench/compare.py}."""

    def test_defaults(self) -> None:
        """Without options every system runs, 10 s per phase, 4 connections."""
        options = compare.Options()
        options.parseOptions([])
        self.assertEqual(options["systems"], compare.SYSTEMS)
        self.assertEqual((options["seconds"], options["connections"]), (10.0, 4))

    def test_quick(self) -> None:
        """C{--quick} shortens the phases and the sequential count."""
        options = compare.Options()
        options.parseOptions(["--quick", "--systems", "txraft,etcd"])
        self.assertEqual((options["seconds"], options["sequential"]), (1.0, 200))
        self.assertEqual(options["systems"], ["txraft", "etcd"])

    def test_badValues(self) -> None:
        """An unknown system, a zero count or a non-positive duration is refused."""
        for argv in (
            ["--systems", "redis"],
            ["--window", "0"],
            ["--seconds", "0"],
            ["--keys", "-1"],
        ):
            self.assertRaises(usage.UsageError, compare.Options().parseOptions, argv)

    def test_pipelinedKeys(self) -> None:
        """
        Pipelined writes cycle over C{--keys} keys (100,000 by default),
        across all connections, so that every system ends the phase holding
        the same map; with 0 every write is a new key.
        """
        options = compare.Options()
        options.parseOptions([])
        self.assertEqual(options["keys"], 100_000)
        keys = {compare.pipelinedKey(i, j, 4, 10) for i in range(4) for j in range(5)}
        self.assertEqual(keys, {f"p{n}" for n in range(10)})
        self.assertEqual(compare.pipelinedKey(1, 2, 4, 10), "p9")
        fresh = {compare.pipelinedKey(i, j, 4, 0) for i in range(4) for j in range(5)}
        self.assertEqual(len(fresh), 20)

    def test_exactlyOnceSystem(self) -> None:
        """
        C{txraft-once} is the 3-node cluster with its writes numbered, as
        the client library sends them, in a column of its own.
        """
        options = compare.Options()
        options.parseOptions(["--systems", "txraft-once"])
        system = compare.makeSystem("txraft-once", options)
        assert isinstance(system, compare.Txraft)
        self.assertEqual(
            (system.name, system.nodes, system.exactlyOnce), ("txraft exactly-once", 3, True)
        )
        plain = compare.makeSystem("txraft", options)
        assert isinstance(plain, compare.Txraft)
        self.assertEqual((plain.name, plain.exactlyOnce), ("txraft", False))

    def test_missingEtcd(self) -> None:
        """Without an etcd binary the system is a reason to skip, naming the package."""
        options = compare.Options()
        options.parseOptions(["--etcd", "/nonexistent/etcd"])
        reason = compare.makeSystem("etcd", options)
        self.assertIsInstance(reason, str)
        self.assertIn("etcd-server", reason)


class ReportTests(SynchronousTestCase):
    """The table of absolute figures and of txraft's ratios."""

    def measurements(self) -> list[report.Measurement]:
        """txraft, PySyncObj with fixed figures, and a skipped etcd."""
        mib = report.MIB
        return [
            report.Measurement(
                "txraft", writes=20000, reads=60000, sequential=[0.001] * 100, rss=[50 * mib]
            ),
            report.Measurement(
                "PySyncObj batched",
                writes=10000,
                reads=0,
                sequential=[0.004] * 100,
                rss=[40 * mib, 60 * mib],
                errors=3,
                firstError="UNAVAILABLE leader changed",
                leaderChanges=1,
            ),
            report.Measurement("etcd", skipped="no 'etcd' binary"),
        ]

    def test_ratio(self) -> None:
        """A ratio is ours over theirs; unknown or zero denominators give C{-}."""
        self.assertEqual(report.ratio(20000, 10000), "2.00x")
        self.assertEqual(report.ratio(1, 4), "0.25x")
        self.assertEqual(report.ratio(1, 0), "-")
        self.assertEqual(report.ratio(None, 3), "-")

    def test_percentiles(self) -> None:
        """p50 and p99 of the sequential latencies, in milliseconds."""
        measurement = report.Measurement("x", sequential=[i / 1000 for i in range(1, 101)])
        self.assertAlmostEqual(measurement.p50(), 50.5)
        self.assertAlmostEqual(measurement.p99(), 99.99)
        self.assertIsNone(report.Measurement("y").p99())

    def test_table(self) -> None:
        """
        The report has the absolute figures, txraft's ratio to each measured
        system, the first error, and says loudly which system was not measured.
        """
        text = report.formatReport(self.measurements())
        lines = text.splitlines()
        self.assertIn("| pipelined writes/s    | 20,000 |            10,000 |", lines)
        self.assertIn("| peak RSS per node     | 50 MiB |         40-60 MiB |", lines)
        ratios = text[text.index("txraft / ...") :]
        self.assertIn("| pipelined writes/s    |             2.00x |", ratios)
        self.assertIn("| sequential set p50 ms |             0.25x |", ratios)
        self.assertIn("| pipelined reads/s     |                 - |", ratios)
        self.assertIn("| errors                |            0 vs 3 |", ratios)
        self.assertIn("PySyncObj batched: first error: 'UNAVAILABLE leader changed'", text)
        self.assertIn("etcd: NOT MEASURED: no 'etcd' binary", text)

    def test_noReference(self) -> None:
        """Without txraft measured there is no ratio table, only the figures."""
        text = report.formatReport(self.measurements()[1:])
        self.assertNotIn("txraft / ...", text)
        self.assertIn("PySyncObj batched", text)


class CodecTests(SynchronousTestCase):
    """How requests and answers look on the wire."""

    def test_lines(self) -> None:
        """Complete lines are taken from the buffer; a partial one stays."""
        codec = loadgen.LineCodec()
        self.assertEqual(codec.encode(("set", "k", "v")), b"set k v\n")
        self.assertEqual(codec.encode(("get", "k", "")), b"get k\n")
        buffer = bytearray(b"OK\nOK v\nUNAV")
        self.assertEqual(codec.decode(buffer), ["OK", "OK v"])
        self.assertEqual(buffer, bytearray(b"UNAV"))
        self.assertTrue(codec.isSuccess("get", "OK v"))
        self.assertFalse(codec.isSuccess("get", "NOT_FOUND"))

    def test_numberedWrites(self) -> None:
        """
        With a session, each connection's writes carry C{SESSION-C#SEQ@},
        SEQ counting up from 1 across every phase the codec serves (so a
        later phase never repeats an earlier one's SEQ); reads go bare.
        """
        codec = loadgen.LineCodec("bench1")
        self.assertEqual(codec.encode(("set", "k", "v"), 0), b"bench1-0#1@set k v\n")
        self.assertEqual(codec.encode(("set", "k", "w"), 1), b"bench1-1#1@set k w\n")
        self.assertEqual(codec.encode(("get", "k", ""), 0), b"get k\n")
        self.assertEqual(codec.encode(("set", "j", "v"), 0), b"bench1-0#2@set j v\n")

    def test_http(self) -> None:
        """
        Pipelined HTTP responses are split by C{Content-Length}; a read
        succeeds only when it found the key.
        """
        codec = loadgen.HTTPCodec("127.0.0.1:2379")
        request = codec.encode(("set", "k", "v"))
        self.assertTrue(request.startswith(b"POST /v3/kv/put HTTP/1.1\r\n"))
        self.assertTrue(request.endswith(b'{"key": "aw==", "value": "dg=="}'))
        one = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        buffer = bytearray(one + one[:20])
        self.assertEqual(codec.decode(buffer), ["200 {}"])
        self.assertEqual(codec.decode(buffer), [])
        buffer += one[20:]
        self.assertEqual(codec.decode(buffer), ["200 {}"])
        self.assertTrue(codec.isSuccess("set", "200 {}"))
        self.assertFalse(codec.isSuccess("get", "200 {}"))
        self.assertTrue(codec.isSuccess("get", '200 {"kvs": []}'))


def lineServer(answersBeforeClose: int | None = None) -> tuple[str, int]:
    """
    A server on 127.0.0.1 answering C{OK} to every line, for one test: it
    hangs up after C{answersBeforeClose} answers if given.
    """
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(connection: socket.socket) -> None:
        answered = 0
        with connection:
            while data := connection.recv(65536):
                count = data.count(b"\n")
                if answersBeforeClose is not None:
                    count = min(count, answersBeforeClose - answered)
                connection.sendall(b"OK\n" * count)
                answered += count
                if answered == answersBeforeClose:
                    return

    def accept() -> None:
        with listener:
            listener.settimeout(5)
            while True:
                try:
                    connection, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()


class DriveTests(SynchronousTestCase):
    """The load generator's loop against a real socket on loopback."""

    def test_counted(self) -> None:
        """Every request on every connection is answered and timed."""
        result = loadgen.drive(
            lineServer(),
            loadgen.LineCodec(),
            lambda i, j: ("set", f"k{i}-{j}", "v"),
            2,
            10,
            count=50,
        )
        self.assertEqual((len(result.latencies), result.errors), (100, 0))
        self.assertGreater(result.seconds, 0)

    def test_lost(self) -> None:
        """Requests outstanding when the server hangs up count as errors."""
        result = loadgen.drive(
            lineServer(answersBeforeClose=5),
            loadgen.LineCodec(),
            lambda i, j: ("set", f"k{j}", "v"),
            1,
            10,
            count=20,
        )
        self.assertEqual(len(result.latencies), 5)
        self.assertGreater(result.errors, 0)
        # A close with requests unread may reach the client as a reset.
        self.assertIn(
            result.firstError.split(":")[0], ["connection closed by the server", "receive failed"]
        )


class FakeStore:
    """A C{ReplDict} stand-in that keeps each C{set}'s callback for the test to call."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.callbacks: list[Callable[[object, int], None]] = []

    def set(self, key: str, value: str, callback: Callable[[object, int], None]) -> None:
        """Remember the callback; apply nothing until the test says."""
        self.callbacks.append(callback)

    def get(self, key: str) -> str | None:
        """The stored value."""
        return self.data.get(key)


class ThreadlessReactor(MemoryReactor):
    """A memory reactor whose C{callFromThread} calls at once."""

    def callFromThread(self, f: Callable[..., object], *args: object) -> None:
        """Call C{f} now: the test has one thread."""
        f(*args)


class FrontEndTests(SynchronousTestCase):
    """The PySyncObj node's line front end (without PySyncObj)."""

    def test_answersInOrder(self) -> None:
        """
        Answers leave in request order even when PySyncObj reports the
        second write first, and a failure names PySyncObj's reason.
        """
        factory = syncobjnode.Factory.forProtocol(syncobjnode.FrontEnd)
        factory.store = FakeStore()
        factory.store.data["a"] = "1"
        factory.handOver = syncobjnode.HandOver(ThreadlessReactor())
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"set x 1\nset y 2\nget a\n")
        self.assertEqual(transport.value(), b"")
        first, second = factory.store.callbacks
        second(None, 0)
        self.assertEqual(transport.value(), b"")
        first(None, 2)
        self.assertEqual(transport.value(), b"UNAVAILABLE missing leader\nOK\nOK 1\n")

    def test_oneWakeUpForManyAnswers(self) -> None:
        """
        Answers that PySyncObj's thread hands over before the reactor runs
        cost one C{callFromThread}, and all reach the client at that wake-up.
        """
        calls: list[Callable[[], object]] = []
        reactor = ThreadlessReactor()
        reactor.callFromThread = calls.append
        handOver = syncobjnode.HandOver(reactor)
        factory = syncobjnode.Factory.forProtocol(syncobjnode.FrontEnd)
        factory.store = FakeStore()
        factory.handOver = handOver
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"set x 1\nset y 2\n")
        for callback in factory.store.callbacks:
            callback(None, 0)
        self.assertEqual((len(calls), transport.value()), (1, b""))
        calls.pop()()
        self.assertEqual(transport.value(), b"OK\nOK\n")
