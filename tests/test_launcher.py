"""
Tests for L{txraft.launcher}, with in-memory fakes instead of real processes.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from importlib import metadata

from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from txraft.config import ConfigError, parseConfig
from txraft.launcher import (
    Cluster,
    LineSplitter,
    NodeProcessProtocol,
    Options,
    describeExit,
    httpPorts,
    nodeArguments,
    selectNodes,
)

CONFIG = parseConfig("s1 h 1\ns2 h 2\nnode3 h 3\n", "test.conf")


class FakeProcessTransport:
    """
    The transport of a fake child process: records the signals it is sent.
    """

    def __init__(self, protocol: NodeProcessProtocol, argv: list[str], env: dict) -> None:
        self.protocol = protocol
        self.argv = argv
        self.env = env
        self.signals: list[str] = []
        self.stdinClosed = False
        self.exited = False

    def closeStdin(self) -> None:
        """
        Record that the parent closed the child's stdin.
        """
        self.stdinClosed = True

    def signalProcess(self, signalName: str) -> None:
        """
        Record C{signalName}, failing like a real transport once exited.
        """
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(signalName)

    def exit(self, exitCode: int = 0, signal: int | None = None) -> None:
        """
        Make the fake child end with C{exitCode} or by C{signal}.
        """
        self.exited = True
        for childFD in (1, 2):
            self.protocol.childConnectionLost(childFD)
        if exitCode == 0 and signal is None:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(exitCode=exitCode, signal=signal))
        self.protocol.processEnded(reason)


class FakeProcessReactor:
    """
    An C{IReactorProcess} that records spawned processes instead of running them.

    @ivar failWith: if set, C{spawnProcess} raises it, as when exec fails.
    """

    def __init__(self) -> None:
        self.processes: dict[str, FakeProcessTransport] = {}
        self.failWith: Exception | None = None

    def spawnProcess(self, protocol, executable, args, env=None, path=None, **kwargs):
        """
        Record the process and connect C{protocol} to a fake transport.
        """
        if self.failWith is not None:
            raise self.failWith
        transport = FakeProcessTransport(protocol, args, env)
        self.processes[protocol.name] = transport
        protocol.makeConnection(transport)
        return transport


class OptionsTests(TestCase):
    """
    Tests for the command-line L{Options}.
    """

    def test_defaults(self) -> None:
        """
        By default the launcher reads C{etc/cluster.conf}, keeps data in
        C{logs}, and passes no timing options.
        """
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["config"], "etc/cluster.conf")
        self.assertEqual(options["data-dir"], "logs")
        self.assertIsNone(options["heartbeat"])
        self.assertIsNone(options["election-timeout"])
        self.assertEqual(options["only"], [])

    def test_onlyRepeatable(self) -> None:
        """
        C{--only} may be given several times and collects every name.
        """
        options = Options()
        options.parseOptions(["--only", "s1", "--only=s3"])
        self.assertEqual(options["only"], ["s1", "s3"])

    def test_killAfterIsANumber(self) -> None:
        """
        C{--kill-after} must be a number.
        """
        self.assertRaises(usage.UsageError, Options().parseOptions, ["--kill-after", "soon"])


class NodeArgumentsTests(TestCase):
    """
    Tests for L{nodeArguments} and L{selectNodes}.
    """

    def test_arguments(self) -> None:
        """
        A node runs the C{txraft} plugin in the foreground C{twist} runner with
        the cluster-wide config and data directory.
        """
        options = Options()
        options.parseOptions(["--config", "c.conf", "--data-dir", "d"])
        self.assertEqual(
            nodeArguments("/py", "s2", options),
            [
                "/py",
                "-m",
                "twisted",
                "--log-format=text",
                "txraft",
                "--name",
                "s2",
                "--config",
                "c.conf",
                "--data-dir",
                "d",
            ],
        )

    def test_timingPassedThrough(self) -> None:
        """
        C{--heartbeat} and C{--election-timeout} reach every node verbatim
        when given.
        """
        options = Options()
        options.parseOptions(["--heartbeat", "0.05", "--election-timeout=0.3"])
        self.assertEqual(
            nodeArguments("/py", "s1", options)[-4:],
            ["--heartbeat", "0.05", "--election-timeout", "0.3"],
        )

    def test_clusterKeyPassedThrough(self) -> None:
        """C{--cluster-key} reaches every node, so they all prove the same key."""
        options = Options()
        options.parseOptions(["--cluster-key", "etc/cluster.key"])
        self.assertEqual(
            nodeArguments("/py", "s1", options)[-2:], ["--cluster-key", "etc/cluster.key"]
        )

    def test_selectAll(self) -> None:
        """
        Without C{--only}, every node is started, in config order.
        """
        self.assertEqual(selectNodes(CONFIG, []), ("s1", "s2", "node3"))

    def test_selectOnly(self) -> None:
        """
        With C{--only}, just those nodes are started, still in config order.
        """
        self.assertEqual(selectNodes(CONFIG, ["node3", "s1"]), ("s1", "node3"))

    def test_selectUnknown(self) -> None:
        """
        C{--only} with a name not in the config is a L{ConfigError}.
        """
        self.assertRaises(ConfigError, selectNodes, CONFIG, ["s9"])


class LineSplitterTests(TestCase):
    """
    Tests for L{LineSplitter}.
    """

    def test_wholeLines(self) -> None:
        """
        Complete lines come out at once, without their line endings.
        """
        self.assertEqual(LineSplitter().feed(b"one\ntwo\r\n"), ["one", "two"])

    def test_partialLines(self) -> None:
        """
        A line split across chunks comes out once its newline arrives.
        """
        splitter = LineSplitter()
        self.assertEqual(splitter.feed(b"hel"), [])
        self.assertEqual(splitter.feed(b"lo\nwor"), ["hello"])
        self.assertEqual(splitter.feed(b"ld\n"), ["world"])

    def test_flush(self) -> None:
        """
        L{LineSplitter.flush} returns an unterminated last line once.
        """
        splitter = LineSplitter()
        splitter.feed(b"done\nlast")
        self.assertEqual(splitter.flush(), ["last"])
        self.assertEqual(splitter.flush(), [])

    def test_badBytes(self) -> None:
        """
        Bytes that are not UTF-8 are replaced rather than failing.
        """
        self.assertEqual(LineSplitter().feed(b"caf\xe9\n"), ["caf\ufffd"])

    def test_longLine(self) -> None:
        """
        A partial line longer than C{MAX_LENGTH} is emitted in pieces instead
        of being buffered forever.
        """
        splitter = LineSplitter()
        splitter.MAX_LENGTH = 4
        self.assertEqual(splitter.feed(b"abcdefghij"), ["abcd", "efgh"])
        self.assertEqual(splitter.flush(), ["ij"])


class NodeProcessProtocolTests(TestCase):
    """
    Tests for L{NodeProcessProtocol}.
    """

    def setUp(self) -> None:
        """
        Make a protocol for node C{s1} that records what it writes.
        """
        self.lines: list[str] = []
        self.protocol = NodeProcessProtocol("s1", "s1 | ", self.lines.append)

    def test_prefixesLines(self) -> None:
        """
        Each complete line of stdout or stderr is written with the prefix.
        """
        self.protocol.childDataReceived(1, b"started\nlis")
        self.protocol.childDataReceived(2, b"warning\n")
        self.protocol.childDataReceived(1, b"tening\n")
        self.assertEqual(self.lines, ["s1 | started", "s1 | warning", "s1 | listening"])

    def test_streamsKeptApart(self) -> None:
        """
        Partial lines on stdout and stderr are buffered separately, so they
        never splice into one line.
        """
        self.protocol.childDataReceived(1, b"out")
        self.protocol.childDataReceived(2, b"err\n")
        self.protocol.childDataReceived(1, b"put\n")
        self.assertEqual(self.lines, ["s1 | err", "s1 | output"])

    def test_exitCode(self) -> None:
        """
        When the child ends, its unterminated output and then its exit code
        are written, and L{NodeProcessProtocol.ended} fires with the reason.
        """
        self.protocol.childDataReceived(2, b"Traceback")
        reason = ProcessTerminated(exitCode=3)
        self.protocol.processEnded(Failure(reason))
        self.assertEqual(self.lines, ["s1 | Traceback", "s1 | exited with code 3"])
        self.assertIs(self.successResultOf(self.protocol.ended), reason)
        self.assertFalse(self.protocol.running)


class DescribeExitTests(TestCase):
    """
    Tests for L{describeExit}.
    """

    def test_done(self) -> None:
        """
        A clean exit reports code 0.
        """
        self.assertEqual(describeExit(Failure(ProcessDone(0))), "exited with code 0")

    def test_code(self) -> None:
        """
        A non-zero exit reports its code.
        """
        self.assertEqual(
            describeExit(Failure(ProcessTerminated(exitCode=2))), "exited with code 2"
        )

    def test_signal(self) -> None:
        """
        Death by signal reports the signal's name.
        """
        self.assertEqual(
            describeExit(Failure(ProcessTerminated(signal=15))), "exited on signal SIGTERM"
        )


class ClusterTests(TestCase):
    """
    Tests for L{Cluster}, driving fake processes.
    """

    def setUp(self) -> None:
        """
        Build a three-node cluster on a fake process reactor and a clock.
        """
        self.reactor = FakeProcessReactor()
        self.clock = Clock()
        self.lines: list[str] = []
        commands = {name: ["/py", name] for name in ("s1", "s2", "node3")}
        self.cluster = Cluster(
            self.reactor, self.clock, commands, self.lines.append, env={"A": "b"}, killAfter=5
        )

    def test_start(self) -> None:
        """
        L{Cluster.start} spawns every node with its argv and an unbuffered
        copy of the given environment, and closes their stdin.
        """
        self.cluster.start()
        self.assertEqual(list(self.reactor.processes), ["s1", "s2", "node3"])
        process = self.reactor.processes["s2"]
        self.assertEqual(process.argv, ["/py", "s2"])
        self.assertEqual(process.env, {"A": "b", "PYTHONUNBUFFERED": "1"})
        self.assertTrue(process.stdinClosed)
        self.assertEqual(self.cluster.running(), ["s1", "s2", "node3"])

    def test_alignedPrefixes(self) -> None:
        """
        Prefixes are padded to the longest node name so output lines up.
        """
        self.cluster.start()
        del self.lines[:]
        self.cluster.nodes["s1"].childDataReceived(1, b"a\n")
        self.cluster.nodes["node3"].childDataReceived(1, b"b\n")
        self.assertEqual(self.lines, ["s1    | a", "node3 | b"])

    def test_nodeExitsOnItsOwn(self) -> None:
        """
        A node that exits by itself is reported, the others keep running, and
        the launcher will exit non-zero.
        """
        ended = self.cluster.start()
        self.reactor.processes["s2"].exit(1)
        self.assertIn("s2    | exited with code 1", self.lines)
        self.assertEqual(self.cluster.running(), ["s1", "node3"])
        self.assertNoResult(ended)
        self.assertEqual(self.cluster.exitCode(), 1)

    def test_nodeInterrupted(self) -> None:
        """
        Nodes killed by SIGINT or SIGTERM from outside the launcher (a Ctrl-C
        reaches the whole process group) were stopped on purpose, not failed.
        """
        self.cluster.start()
        self.reactor.processes["s1"].exit(signal=2)
        self.reactor.processes["s2"].exit(signal=15)
        self.assertIn("s1    | exited on signal SIGINT", self.lines)
        self.assertEqual(self.cluster.exitCode(), 0)

    def test_nodeKilled(self) -> None:
        """
        A node killed by any other signal (a crash, the OOM killer) failed.
        """
        self.cluster.start()
        self.reactor.processes["s1"].exit(signal=9)
        self.assertEqual(self.cluster.exitCode(), 1)

    def test_allExitCleanly(self) -> None:
        """
        The Deferred from L{Cluster.start} fires once every node has ended,
        and clean exits give exit status 0.
        """
        ended = self.cluster.start()
        for process in self.reactor.processes.values():
            process.exit(0)
        self.assertIsNone(self.successResultOf(ended))
        self.assertEqual(self.cluster.exitCode(), 0)

    def test_stop(self) -> None:
        """
        L{Cluster.stop} waits a grace delay (the nodes may have had Ctrl-C's
        SIGINT already), then sends SIGTERM to every node still running and
        fires once they have all ended; being asked to stop is not a failure.
        """
        self.cluster.start()
        self.reactor.processes["s1"].exit(0)
        stopped = self.cluster.stop()
        self.assertEqual(self.reactor.processes["s2"].signals, [])
        self.clock.advance(1)
        self.assertEqual(self.reactor.processes["s1"].signals, [])
        self.assertEqual(self.reactor.processes["s2"].signals, ["TERM"])
        self.assertEqual(self.reactor.processes["node3"].signals, ["TERM"])
        self.assertNoResult(stopped)
        self.reactor.processes["s2"].exit(signal=15)
        self.reactor.processes["node3"].exit(signal=15)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.cluster.exitCode(), 0)

    def test_stopAfterCtrlC(self) -> None:
        """
        Nodes that end by themselves within the grace delay (as they do on
        Ctrl-C, which signals the whole process group) get no second signal.
        """
        self.cluster.start()
        stopped = self.cluster.stop()
        for process in self.reactor.processes.values():
            process.exit(signal=2)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual([p.signals for p in self.reactor.processes.values()], [[], [], []])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopEscalatesToKill(self) -> None:
        """
        A node still running C{killAfter} seconds after SIGTERM gets SIGKILL.
        """
        self.cluster.start()
        self.cluster.stop()
        self.clock.advance(1)
        self.reactor.processes["s1"].exit(signal=15)
        self.reactor.processes["s2"].exit(signal=15)
        self.clock.advance(4.9)
        self.assertEqual(self.reactor.processes["node3"].signals, ["TERM"])
        self.clock.advance(0.1)
        self.assertEqual(self.reactor.processes["node3"].signals, ["TERM", "KILL"])

    def test_stopWithNothingRunning(self) -> None:
        """
        Stopping when every node has already ended fires at once and sends
        no signal.
        """
        self.cluster.start()
        for process in self.reactor.processes.values():
            process.exit(0)
        self.assertIsNone(self.successResultOf(self.cluster.stop()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_spawnFails(self) -> None:
        """
        A node that cannot be spawned is reported as failed and counted as
        ended, without stopping the launcher from trying the others.
        """
        self.reactor.failWith = OSError("no such file")
        ended = self.cluster.start()
        self.assertIn("s1    | cannot start: no such file", self.lines)
        self.assertIsNone(self.successResultOf(ended))
        self.assertEqual(self.cluster.exitCode(), 1)


class HTTPTests(TestCase):
    """C{--http}: one HTTP port per node, for C{make cluster}."""

    def test_portsInConfigOrder(self) -> None:
        """
        The config's first node gets the C{--http} port, the others the
        ports after it, in config order; each node is started with its own.
        """
        options = Options()
        options.parseOptions(["--http", "8080"])
        ports = httpPorts(CONFIG, options["http"])
        self.assertEqual(ports, {"s1": 8080, "s2": 8081, "node3": 8082})
        self.assertEqual(
            nodeArguments("/py", "node3", options, ports["node3"])[-2:], ["--http", "8082"]
        )

    def test_offByDefault(self) -> None:
        """Without C{--http} no node serves HTTP."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(httpPorts(CONFIG, options["http"]), {})
        self.assertNotIn("--http", nodeArguments("/py", "s1", options))

    def test_pastTheLastPort(self) -> None:
        """Ports that would run past 65535 are a L{ConfigError}."""
        self.assertRaises(ConfigError, httpPorts, CONFIG, 65534)

    def test_badValuesNameTheOption(self) -> None:
        """A non-numeric C{--http} or C{--kill-after} is reported with the option's name."""
        for argv, named in [
            (["--http", "web"], "--http: invalid port 'web'"),
            (["--kill-after", "soon"], "--kill-after must be a number, not 'soon'"),
        ]:
            with self.subTest(argv=argv):
                error = self.assertRaises(usage.UsageError, Options().parseOptions, argv)
                self.assertIn(named, str(error))

    def test_version(self) -> None:
        """C{--version} prints txraft's version, not Twisted's."""
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            self.assertRaises(SystemExit, Options().parseOptions, ["--version"])
        self.assertEqual(stdout.getvalue(), f"txraft-cluster {metadata.version('txraft')}\n")
