"""
Tests for L{txraft.tap}: the twistd plugin's options and service tree.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stdout
from importlib import metadata

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.helpers import temporaryDirectory
from txraft import tap
from txraft.auth import readKeyFile, writeKeyFile
from txraft.core import MAX_INFLIGHT_APPENDS, TRAILING_ENTRIES
from txraft.membership import Membership
from txraft.metrics import NodeMetrics
from txraft.node import MAX_BACKLOG, SNAPSHOT_GROWTH, NullObserver
from txraft.service import RaftService
from txraft.web import HTTPService

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = "s1 127.0.0.1 10000\ns2 127.0.0.1 10001\ns3 127.0.0.1 10002\n"


class OptionsTests(SynchronousTestCase):
    """
    Tests for L{tap.Options}: everything that can be wrong with a node's
    setup is refused before the reactor starts, with one line saying what.
    """

    def setUp(self) -> None:
        """
        A temporary directory holding a three-node config.
        """
        self.directory = temporaryDirectory(self)
        self.config = self.writeConfig(CONFIG)
        self.dataDir = os.path.join(self.directory, "data")

    def writeConfig(self, text: str, name: str = "cluster.conf") -> str:
        """
        Write a config file and return its path.
        """
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def parse(self, *arguments: str) -> tap.Options:
        """
        Parse C{arguments} after the config and data dir options.
        """
        options = tap.Options()
        options.parseOptions(["--config", self.config, "--data-dir", self.dataDir, *arguments])
        return options

    def assertUsageError(self, arguments: list[str], message: str) -> None:
        """
        Assert that parsing C{arguments} is a usage error containing
        C{message}.
        """
        error = self.assertRaises(usage.UsageError, self.parse, *arguments)
        self.assertIn(message, str(error))

    def assertStartupError(self, arguments: list[str], *fragments: str) -> str:
        """
        Assert that parsing C{arguments} exits (non-zero, via L{SystemExit})
        with one line containing every fragment; return the line.
        """
        error = self.assertRaises(SystemExit, self.parse, *arguments)
        line = str(error.code)
        self.assertIsInstance(error.code, str)
        self.assertNotIn("\n", line)
        for fragment in fragments:
            self.assertIn(fragment, line)
        return line

    def test_defaults(self) -> None:
        """
        With just a name, the node takes its address from the config and
        the default timing: heartbeat 100 ms, election timeout 400-800 ms.
        """
        options = self.parse("--name", "s2")
        self.assertEqual((options.address.host, options.address.port), ("127.0.0.1", 10001))
        self.assertEqual(options.config.names(), ("s1", "s2", "s3"))
        self.assertEqual(options["heartbeat"], 100)
        self.assertEqual(options["election-timeout"], (400, 800))
        self.assertTrue(os.path.isdir(self.dataDir))

    def test_timing(self) -> None:
        """
        --heartbeat and --election-timeout are parsed as milliseconds.
        """
        options = self.parse("--name", "s1", "--heartbeat", "50", "--election-timeout", "150:300")
        self.assertEqual(options["heartbeat"], 50)
        self.assertEqual(options["election-timeout"], (150, 300))

    def writeKey(self, mode: int = 0o600) -> str:
        """Write a good cluster key file with C{mode}; return its path."""
        path = os.path.join(self.directory, "cluster.key")
        with open(path, "wb") as f:
            f.write(b"k" * 40)
        os.chmod(path, mode)
        return path

    def test_clusterKey(self) -> None:
        """--cluster-key FILE loads the key the node's peers must prove."""
        options = self.parse("--name", "s1", "--cluster-key", self.writeKey())
        self.assertEqual(options.clusterKey, b"k" * 40)

    def test_noClusterKeyOnLoopback(self) -> None:
        """
        Without --cluster-key a cluster on loopback addresses starts as it
        always did (with a warning when the service is made).
        """
        self.config = self.writeConfig("s1 127.0.0.1 10000\ns2 127.0.0.2 10001\ns3 ::1 10002\n")
        self.assertIsNone(self.parse("--name", "s1").clusterKey)

    def test_badClusterKey(self) -> None:
        """A key file readable by others stops the node, with one line naming the file."""
        path = self.writeKey(0o644)
        self.assertStartupError(["--name", "s1", "--cluster-key", path], path, "chmod 600")
        missing = os.path.join(self.directory, "missing.key")
        self.assertStartupError(["--name", "s1", "--cluster-key", missing], missing)

    def test_protectedMode(self) -> None:
        """
        Without --cluster-key a node whose cluster has an address beyond
        loopback refuses to start, naming --cluster-key and --insecure.
        """
        self.config = self.writeConfig("s1 127.0.0.1 10000\ns2 10.0.0.2 10001\ns3 db3 10002\n")
        self.assertStartupError(
            ["--name", "s1"], "10.0.0.2, db3", "--cluster-key", "--insecure", self.config
        )

    def test_protectedModeInsecure(self) -> None:
        """--insecure lets such a node start without a key; a key needs no --insecure."""
        self.config = self.writeConfig("s1 0.0.0.0 10000\ns2 10.0.0.2 10001\n")
        self.assertIsNone(self.parse("--name", "s1", "--insecure").clusterKey)
        options = self.parse("--name", "s1", "--cluster-key", self.writeKey())
        self.assertIsNotNone(options.clusterKey)

    def test_isLoopback(self) -> None:
        """Loopback is localhost, 127.0.0.0/8 and ::1, and nothing else."""
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1"]:
            self.assertTrue(tap.isLoopback(host), host)
        for host in ["0.0.0.0", "10.0.0.1", "::", "example.com", "128.0.0.1"]:
            self.assertFalse(tap.isLoopback(host), host)

    def test_nonNumericNamesOption(self) -> None:
        """A value that is not a number is refused naming its option."""
        for option in (
            "--heartbeat",
            "--snapshot-entries",
            "--trailing-entries",
            "--max-connections",
            "--max-backlog",
            "--max-inflight",
        ):
            with self.subTest(option=option):
                self.assertUsageError(
                    ["--name", "s1", option, "fast"],
                    f"{option} must be a whole number, not 'fast'",
                )
        self.assertUsageError(["--name", "s1", "--http", "web"], "--http: invalid port 'web'")

    def test_snapshotWriter(self) -> None:
        """
        Snapshots are written in a forked child by default, in a thread when
        asked; anything else is refused naming the choices.
        """
        self.assertEqual(self.parse("--name", "s1")["snapshot-writer"], "fork")
        self.assertEqual(
            self.parse("--name", "s1", "--snapshot-writer", "thread")["snapshot-writer"], "thread"
        )
        self.assertUsageError(
            ["--name", "s1", "--snapshot-writer", "gpu"],
            "--snapshot-writer must be fork or thread, not 'gpu'",
        )

    def test_httpOffByDefault(self) -> None:
        """Without --http the node serves no HTTP; with it, on that port."""
        self.assertIsNone(self.parse("--name", "s1")["http"])
        self.assertEqual(self.parse("--name", "s1", "--http", "8080")["http"], 8080)

    def test_version(self) -> None:
        """
        C{twistd txraft --version} prints txraft's version from its package
        metadata, not Twisted's.
        """
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            self.assertRaises(SystemExit, tap.Options().parseOptions, ["--version"])
        version = metadata.version("txraft")
        self.assertEqual(stdout.getvalue(), f"txraft (twistd plugin) {version}\n")

    def test_missingName(self) -> None:
        """
        --name is required.
        """
        self.assertUsageError([], "--name is required")

    def test_badName(self) -> None:
        """
        A name that no config line could hold is a usage error.
        """
        self.assertUsageError(["--name", "s 1"], "--name 's 1' must be")

    def test_unknownName(self) -> None:
        """
        A name not in the config exits with a line naming the config file.
        """
        self.assertStartupError(["--name", "s9"], "'s9'", self.config)

    def test_portMatches(self) -> None:
        """
        --port may repeat the config's port.
        """
        self.assertEqual(self.parse("--name", "s1", "--port", "10000").address.port, 10000)

    def test_portMismatch(self) -> None:
        """
        A --port that differs from the config's is refused, naming both
        ports and the config file: peers could not reach the node.
        """
        self.assertStartupError(["--name", "s1", "--port", "10001"], "10001", "10000", self.config)

    def test_badElectionTimeout(self) -> None:
        """
        --election-timeout must be two integers separated by a colon.
        """
        for value in ["400", "a:b", "400:", ":800", "400:800:900", "", "4.5:9"]:
            self.assertUsageError(
                ["--name", "s1", "--election-timeout", value], "--election-timeout must be"
            )

    def test_electionTimeoutOrder(self) -> None:
        """
        The election timeout's minimum must be below its maximum.
        """
        for value in ["800:400", "400:400", "-800:-400"]:
            self.assertUsageError(
                ["--name", "s1", "--election-timeout", value], "need 0 < --heartbeat"
            )

    def test_heartbeatTooSlow(self) -> None:
        """
        A heartbeat not below the election timeout's minimum would let
        followers time out under a healthy leader (Reference: section 5.6).
        """
        for heartbeat in ["400", "500"]:
            self.assertUsageError(
                ["--name", "s1", "--heartbeat", heartbeat, "--election-timeout", "400:800"],
                "need 0 < --heartbeat < election timeout MIN < MAX",
            )

    def test_heartbeatNotPositive(self) -> None:
        """
        The heartbeat must be a positive integer.
        """
        self.assertUsageError(["--name", "s1", "--heartbeat", "0"], "need 0 < --heartbeat")
        self.assertRaises(usage.UsageError, self.parse, "--name", "s1", "--heartbeat", "fast")

    def test_dataDirCreated(self) -> None:
        """
        A missing data dir is created, parents included, and the parent of
        each new directory is fsynced so that the creation survives a power
        failure.
        """
        synced: list[str] = []
        self.patch(tap, "fsyncDirectory", synced.append)
        self.dataDir = os.path.join(self.directory, "a", "b", "c")
        self.parse("--name", "s1")
        self.assertTrue(os.path.isdir(self.dataDir))
        expected = [os.path.join(self.directory, *parts) for parts in [(), ("a",), ("a", "b")]]
        self.assertEqual(synced, expected)

    def test_dataDirIsFile(self) -> None:
        """
        A regular file where the data dir should be is refused, naming it.
        """
        with open(self.dataDir, "w"):
            pass
        self.assertStartupError(["--name", "s1"], f"--data-dir {self.dataDir}")

    def test_dataDirUnderFile(self) -> None:
        """
        A data dir that cannot be created (its parent is a regular file) is
        refused, naming it.
        """
        parent = os.path.join(self.directory, "plain-file")
        with open(parent, "w"):
            pass
        self.dataDir = os.path.join(parent, "data")
        self.assertStartupError(["--name", "s1"], f"--data-dir {self.dataDir}", "cannot create")

    def test_missingConfig(self) -> None:
        """
        A missing config file is refused, naming it.
        """
        self.config = os.path.join(self.directory, "nowhere.conf")
        self.assertStartupError(["--name", "s1"], self.config, "cannot read cluster config")

    def test_malformedConfig(self) -> None:
        """
        A malformed config is refused with its file and line number.
        """
        self.config = self.writeConfig("s1 127.0.0.1 10000\ns2 127.0.0.1 port\n", "bad.conf")
        self.assertStartupError(["--name", "s1"], f"{self.config}:2:", "'port'")

    def test_duplicateInConfig(self) -> None:
        """
        A config naming a node twice is refused with the line of the second.
        """
        self.config = self.writeConfig(
            "# nodes\ns1 127.0.0.1 10000\ns1 127.0.0.1 10001\n", "dup.conf"
        )
        self.assertStartupError(["--name", "s1"], f"{self.config}:3:", "duplicate")


class MakeServiceTests(SynchronousTestCase):
    """
    Tests for L{tap.makeService}.
    """

    def setUp(self) -> None:
        """
        A config and an empty data directory.
        """
        self.directory = temporaryDirectory(self)
        self.config = os.path.join(self.directory, "cluster.conf")
        with open(self.config, "w") as f:
            f.write(CONFIG)
        self.dataDir = os.path.join(self.directory, "data")

    def options(self, name: str = "s1", *arguments: str) -> tap.Options:
        """
        Parsed options for node C{name} over the data directory.
        """
        options = tap.Options()
        options.parseOptions(
            ["--config", self.config, "--data-dir", self.dataDir, "--name", name, *arguments]
        )
        return options

    def makeService(self, options: tap.Options) -> RaftService:
        """
        Build the service and release its files and lock when the test ends.
        """
        service = tap.makeService(options)
        self.addCleanup(service.logManager.stopService)
        return service

    def test_buildsRaftService(self) -> None:
        """
        makeService returns the node's L{RaftService}, not yet started, with
        its timing converted from milliseconds to 10 ms ticks and its files
        in the data dir.
        """
        service = self.makeService(self.options("s2", "--election-timeout", "300:600"))
        self.assertIsInstance(service, RaftService)
        self.assertFalse(service.running)
        self.assertEqual(service.name, "s2")
        self.assertEqual(service.address.port, 10001)
        self.assertEqual(service.tickSeconds, tap.TICK_MS / 1000)
        self.assertEqual(service.node.core.electionTicks, (30, 60))
        self.assertEqual(service.node.core.heartbeatTicks, 10)
        self.assertTrue(os.path.exists(os.path.join(self.dataDir, "s2.log")))
        self.assertIs(service.reactor, reactor)

    def test_flowControlOptions(self) -> None:
        """
        --max-backlog and --max-inflight reach the node and its core;
        without them the node takes the defaults, and zero is refused.
        """
        service = self.makeService(
            self.options("s2", "--max-backlog", "64", "--max-inflight", "2")
        )
        self.assertEqual((service.node.maxBacklog, service.node.core.maxInflightAppends), (64, 2))
        service = self.makeService(self.options("s3"))
        self.assertEqual(
            (service.node.maxBacklog, service.node.core.maxInflightAppends),
            (MAX_BACKLOG, MAX_INFLIGHT_APPENDS),
        )
        for option in ("--max-backlog", "--max-inflight"):
            with self.subTest(option=option):
                error = self.assertRaises(usage.UsageError, self.options, "s2", option, "0")
                self.assertEqual(str(error), f"{option} must be at least 1")

    def test_trailingEntries(self) -> None:
        """
        --trailing-entries reaches the core, zero included; without it the
        core keeps L{TRAILING_ENTRIES}; a negative count is refused.
        """
        service = self.makeService(self.options("s2", "--trailing-entries", "0"))
        self.assertEqual(service.node.core.trailingEntries, 0)
        service = self.makeService(self.options("s3"))
        self.assertEqual(service.node.core.trailingEntries, TRAILING_ENTRIES)
        error = self.assertRaises(usage.UsageError, self.options, "s2", "--trailing-entries", "-1")
        self.assertEqual(str(error), "--trailing-entries must be at least 0")

    def test_snapshotGrowth(self) -> None:
        """
        --snapshot-growth reaches the node, zero included; without it the
        node uses L{SNAPSHOT_GROWTH}; a negative share or a word is refused.
        """
        service = self.makeService(self.options("s2", "--snapshot-growth", "0"))
        self.assertEqual(service.node.snapshotGrowth, 0.0)
        service = self.makeService(self.options("s1", "--snapshot-growth", "2.5"))
        self.assertEqual(service.node.snapshotGrowth, 2.5)
        service = self.makeService(self.options("s3"))
        self.assertEqual(service.node.snapshotGrowth, SNAPSHOT_GROWTH)
        error = self.assertRaises(usage.UsageError, self.options, "s2", "--snapshot-growth", "-1")
        self.assertEqual(str(error), "--snapshot-growth must be at least 0")
        error = self.assertRaises(
            usage.UsageError, self.options, "s2", "--snapshot-growth", "lots"
        )
        self.assertIn("--snapshot-growth must be a number, not 'lots'", str(error))

    def test_keyedService(self) -> None:
        """
        With --cluster-key the node's port and peer links use the key, and
        no warning about unauthenticated peers is logged.
        """
        key = os.path.join(self.directory, "cluster.key")
        writeKeyFile(key)
        warnings = self.capturedWarnings()
        service = self.makeService(self.options("s1", "--cluster-key", key))
        self.assertEqual(service._factory.clusterKey, readKeyFile(key))
        self.assertEqual(service._links["s2"].clusterKey, readKeyFile(key))
        self.assertEqual(warnings, [])

    def test_unkeyedServiceWarns(self) -> None:
        """Without --cluster-key the node warns that peers are not authenticated."""
        warnings = self.capturedWarnings()
        service = self.makeService(self.options("s1"))
        self.assertIsNone(service._factory.clusterKey)
        self.assertEqual(len(warnings), 1)
        self.assertIn("no --cluster-key", formatEvent(warnings[0]))

    def capturedWarnings(self) -> list[dict[str, object]]:
        """The warnings logged from now until the test ends."""
        events: list[dict[str, object]] = []

        def observe(event: dict[str, object]) -> None:
            if event.get("log_level") == LogLevel.warn:
                events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return events

    def test_httpSide(self) -> None:
        """
        With --http the service tree holds an HTTP service on the node's
        host and that port, and the node reports to its metrics; without
        it, neither.
        """
        service = self.makeService(self.options("s1", "--http", "8081"))
        http = [child for child in service if isinstance(child, HTTPService)]
        self.assertEqual([(h.host, h.portNumber) for h in http], [("127.0.0.1", 8081)])
        self.assertIsInstance(service.node.observer, NodeMetrics)
        plain = self.makeService(self.options("s2"))
        self.assertFalse([child for child in plain if isinstance(child, HTTPService)])
        self.assertIsInstance(plain.node.observer, NullObserver)

    def test_recoversState(self) -> None:
        """
        A node built over an existing data dir starts from the term, vote
        and log stored there (Figure 2: persistent state).
        """
        os.makedirs(self.dataDir)
        with open(os.path.join(self.dataDir, "s1.log"), "w") as f:
            f.write("1 1 noop\n2 1 set a 1\n3 2 noop\n")
        with open(os.path.join(self.dataDir, "s1.state"), "w") as f:
            f.write('{"currentTerm": 3, "votedFor": "s2"}\n')
        service = self.makeService(self.options())
        self.assertEqual(service.node.core.currentTerm, 3)
        self.assertEqual(service.node.core.votedFor, "s2")
        self.assertEqual(service.node.core.log.lastIndex, 3)

    def test_join(self) -> None:
        """
        With --join and an empty data dir a node has no membership and links
        to no one: it waits to be added.  Its log, once it holds a
        membership, is what a restart goes by, with or without --join.
        """
        service = self.makeService(self.options("s3", "--join"))
        self.assertEqual(service.node.core.membership, Membership())
        self.assertEqual(service.linkedPeers(), {})
        service.logManager.stopService()
        with open(os.path.join(self.dataDir, "s3.log"), "w") as f:
            f.write(
                "1 1 noop\n2 1 membership voter s1 127.0.0.1 10000 learner s3 127.0.0.1 10002\n"
            )
        for arguments in (["--join"], []):
            service = self.makeService(self.options("s3", *arguments))
            self.assertEqual(service.node.core.membership.names(), ("s1", "s3"))
            self.assertEqual(sorted(service.linkedPeers()), ["s1"])
            service.logManager.stopService()

    def test_corruptLog(self) -> None:
        """
        A corrupt log stops the node with one line naming the file and line.
        """
        os.makedirs(self.dataDir)
        path = os.path.join(self.dataDir, "s1.log")
        with open(path, "w") as f:
            f.write("1 1 noop\n3 1 set a 1\n")
        error = self.assertRaises(SystemExit, tap.makeService, self.options())
        self.assertIn(f"{path}:2:", str(error.code))
        self.assertNotIn("\n", str(error.code))

    def test_corruptState(self) -> None:
        """
        A corrupt term/vote file stops the node with one line naming it.
        """
        os.makedirs(self.dataDir)
        path = os.path.join(self.dataDir, "s1.state")
        with open(path, "w") as f:
            f.write("{not json")
        error = self.assertRaises(SystemExit, tap.makeService, self.options())
        self.assertIn(path, str(error.code))

    def test_secondNodeSameNameRefused(self) -> None:
        """
        A second node of the same name over the same data dir is refused
        with a line naming the lock, so two processes never write one log.
        """
        self.makeService(self.options())
        error = self.assertRaises(SystemExit, tap.makeService, self.options())
        self.assertIn(os.path.join(self.dataDir, "s1.lock"), str(error.code))
        self.assertIn("already running", str(error.code))

    def test_lockReleasedOnStop(self) -> None:
        """
        Stopping a node releases its data dir's lock: the same node can start
        again in the same process, as it cannot while the first one runs.
        """
        first = tap.makeService(self.options())
        self.assertRaises(SystemExit, tap.makeService, self.options())
        first.logManager.stopService()
        self.makeService(self.options())

    def test_otherNodesShareDataDir(self) -> None:
        """
        Different nodes may share a data dir.
        """
        self.makeService(self.options("s1"))
        self.makeService(self.options("s2"))

    def test_pidfileKeptApart(self) -> None:
        """
        twistd's default pidfile (C{twistd.pid} in the working directory)
        becomes C{DIR/NAME.pid}, so nodes started from one directory do not
        collide.
        """
        options = self.options("s3")
        options.parent = {"pidfile": os.path.join(os.getcwd(), "twistd.pid")}
        self.makeService(options)
        self.assertEqual(
            options.parent["pidfile"], os.path.abspath(os.path.join(self.dataDir, "s3.pid"))
        )

    def test_chosenPidfileKept(self) -> None:
        """
        A pidfile the user chose, or none at all, is left alone.
        """
        chosen = [
            os.path.join(self.directory, "mine.pid"),
            os.path.join(self.directory, "twistd.pid"),
            "",
        ]
        for pidfile in chosen:
            options = self.options()
            options.parent = {"pidfile": pidfile}
            service = tap.makeService(options)
            service.logManager.stopService()
            self.assertEqual(options.parent["pidfile"], pidfile)


class TwistdTests(TestCase):
    """
    Run C{twistd txraft} in a child process.
    """

    def runTwistd(self, config: str, *arguments: str) -> defer.Deferred[tuple[int, list[str]]]:
        """
        Run C{twistd -n txraft} with a config of C{config} and C{arguments};
        fire with its exit status and its output lines.
        """
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "cluster.conf")
        with open(path, "w") as f:
            f.write(config)
        d = getProcessOutputAndValue(
            sys.executable,
            ["-c", "from twisted.scripts.twistd import run; run()", "-n", "txraft"]
            + ["--config", path, "--data-dir", directory, *arguments],
            env=dict(os.environ, PYTHONPATH=REPOSITORY),
            path=directory,
        )
        return d.addCallback(
            lambda result: (result[2], (result[0] + result[1]).decode("utf-8").splitlines())
        )

    def test_protectedModeExits(self) -> None:
        """
        Without --cluster-key, a node of a cluster that reaches beyond
        loopback exits non-zero with one line naming --cluster-key and
        --insecure.
        """
        d = self.runTwistd("s1 127.0.0.1 10000\ns2 192.0.2.7 10001\n", "--name", "s1")

        def check(result: tuple[int, list[str]]) -> None:
            code, lines = result
            self.assertNotEqual(code, 0)
            self.assertEqual(len(lines), 1, lines)
            self.assertIn("--cluster-key", lines[0])
            self.assertIn("--insecure", lines[0])

        return d.addCallback(check)

    def test_openKeyFileExits(self) -> None:
        """A key file readable by others stops the node with one line naming it."""
        directory = temporaryDirectory(self)
        key = os.path.join(directory, "cluster.key")
        with open(key, "wb") as f:
            f.write(b"k" * 40)
        os.chmod(key, 0o644)
        d = self.runTwistd(CONFIG, "--name", "s1", "--cluster-key", key)

        def check(result: tuple[int, list[str]]) -> None:
            code, lines = result
            self.assertNotEqual(code, 0)
            self.assertEqual(len(lines), 1, lines)
            self.assertIn(key, lines[0])

        return d.addCallback(check)

    def test_unknownNameExits(self) -> None:
        """
        C{twistd -n txraft} with an unknown --name exits non-zero and prints
        one line naming the name and the config file, and no usage text.
        """
        directory = temporaryDirectory(self)
        config = os.path.join(directory, "cluster.conf")
        with open(config, "w") as f:
            f.write(CONFIG)
        env = dict(os.environ, PYTHONPATH=REPOSITORY)
        d = getProcessOutputAndValue(
            sys.executable,
            [
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "txraft",
                "--name",
                "nosuch",
                "--config",
                config,
            ],
            env=env,
            path=directory,
        )

        def check(result: tuple[bytes, bytes, int]) -> None:
            out, err, code = result
            self.assertNotEqual(code, 0)
            lines = (out + err).decode("utf-8", "replace").splitlines()
            self.assertEqual(len(lines), 1, lines)
            self.assertIn("'nosuch'", lines[0])
            self.assertIn(config, lines[0])
            self.assertFalse(os.path.exists(os.path.join(directory, "twistd.pid")))

        return d.addCallback(check)
