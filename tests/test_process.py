"""
Process tests: real C{twistd -n txraft} nodes on 127.0.0.1, driven through
L{txraft.testing.localcluster}.

These are the only tests that use wall-clock time.  They wait for
conditions (a leader, an answer) with deadlines and never sleep to let
something happen; every wait is bounded, and every node process is stopped
in a cleanup.  When a test fails, the last lines of each node's output are
printed (pytest shows them with the failure).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from twisted.trial.unittest import SynchronousTestCase

from txraft.children import dieWithParent
from txraft.kv import KeyValueStore
from txraft.messages import Snapshot
from txraft.protocol import MAX_REQUEST
from txraft.snapshots import decodeSnapshot, encodeSnapshot
from txraft.testing.localcluster import (
    POLL_INTERVAL,
    LocalCluster,
    nodeCommand,
    nodeEnvironment,
)

#: The election bound of the issue: a leader within this many seconds of
#: the start, and a new leader serving writes this soon after a crash.
ELECTION_BOUND = 2.0

#: Generous bound for things that should take well under a second.
PATIENCE = 10.0

#: One line of a node's Raft log: C{INDEX TERM COMMAND}.
LOG_LINE = re.compile(r"(\d+) (\d+) (\S.*)")

TestMethod = TypeVar("TestMethod", bound=Callable[..., None])
T = TypeVar("T")


def showingNodeOutput(method: TestMethod) -> TestMethod:
    """
    Decorate a test method of a L{ProcessTestCase} so that, if it fails,
    each of its clusters' node output is printed before the failure is
    reported.
    """

    @functools.wraps(method)
    def wrapper(self: ProcessTestCase) -> None:
        try:
            method(self)
        except BaseException:
            for cluster in self.clusters:
                print(cluster.describe(lines=60), file=sys.stderr)
            raise

    return wrapper  # type: ignore[return-value]


class ProcessTestCase(SynchronousTestCase):
    """
    Base for tests that run real node processes: makes clusters in temporary
    directories and stops their processes when the test ends, pass or fail.
    """

    def setUp(self) -> None:
        self.clusters: list[LocalCluster] = []

    def makeCluster(
        self,
        names: Sequence[str] = ("s1", "s2", "s3"),
        extraArgs: Sequence[str] = (),
        keyed: bool = True,
        http: bool = False,
    ) -> LocalCluster:
        """
        A cluster (not yet started) whose processes and files the test's
        cleanup removes; keyed (peers authenticated) unless C{keyed} is
        false, serving HTTP if C{http}.
        """
        directory = tempfile.mkdtemp(prefix="txraft-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        cluster = LocalCluster(
            names, directory=directory, extraArgs=extraArgs, keyed=keyed, http=http
        )
        self.addCleanup(cluster.stopAll)
        self.clusters.append(cluster)
        return cluster

    def startedCluster(self) -> tuple[LocalCluster, str]:
        """A running three-node cluster with default timing, and its leader."""
        cluster = self.makeCluster()
        cluster.startAll()
        return cluster, cluster.waitForLeader(PATIENCE)

    def assertAllRunning(self, cluster: LocalCluster) -> None:
        """Fail unless every node process of C{cluster} is still running."""
        self.assertEqual(cluster.running(), cluster.names, "a node process died")

    def waitFor(self, condition: Callable[[], T | None], what: str) -> T:
        """
        Poll C{condition} until it returns something other than L{None} or
        C{False}, and return that; fail saying C{what} was awaited if
        L{PATIENCE} seconds pass first.
        """
        deadline = time.monotonic() + PATIENCE
        while True:
            result = condition()
            if result is not None and result is not False:
                return result
            if time.monotonic() > deadline:
                self.fail(f"gave up waiting for {what}")
            time.sleep(POLL_INTERVAL)

    def followerNamingLeader(self, cluster: LocalCluster, leader: str) -> str:
        """Wait for a follower that knows C{leader} leads, and return its name."""

        def follower() -> str | None:
            for name, status in cluster.statuses().items():
                if status and status["role"] == "follower" and status["leader"] == leader:
                    return name
            return None

        return self.waitFor(follower, f"a follower of {leader}")


class ElectionTests(ProcessTestCase):
    """A fresh cluster elects a leader promptly."""

    @showingNodeOutput
    def test_leaderWithinTwoSecondsOfStart(self) -> None:
        """
        Three nodes started together with the default timing (heartbeat
        100 ms, election timeout 400-800 ms) agree on one leader within
        two seconds of the last one answering.  (Process start-up is left
        out: on a busy machine starting Python and Twisted alone can take
        longer than that.)  Reference: section 5.2 (leader election).
        """
        cluster = self.makeCluster()
        started = time.monotonic()
        cluster.startAll()
        waiting = set(cluster.names)
        deadline = started + PATIENCE
        while waiting and time.monotonic() < deadline:
            waiting -= {name for name, status in cluster.statuses().items() if status}
            if waiting:
                time.sleep(POLL_INTERVAL)  # a poll's interval, bounded by the deadline
        self.assertEqual(waiting, set(), "nodes that never answered")
        up = time.monotonic()
        leader = cluster.waitForLeader(PATIENCE)
        elapsed = time.monotonic() - up
        print(f"nodes up {up - started:.3f}s after start; leader {leader} {elapsed:.3f}s later")
        self.assertLess(elapsed, ELECTION_BOUND)
        statuses = cluster.statuses(timeout=PATIENCE)
        self.assertEqual(
            [name for name, s in statuses.items() if s and s["role"] == "leader"], [leader]
        )


class FailoverTests(ProcessTestCase):
    """A crashed leader is replaced quickly and loses no acknowledged write."""

    @showingNodeOutput
    def test_newLeaderServesWritesSoonAfterLeaderIsKilled(self) -> None:
        """
        After C{kill -9} of the leader, a client that follows redirects has
        a C{set} answered C{OK} by a new leader within two seconds, and
        every write acknowledged before the crash is still readable; the
        old leader, restarted, rejoins as a follower and catches up.
        Reference: sections 5.2 and 5.4 (Leader Completeness).
        """
        cluster, leader = self.startedCluster()
        client = cluster.client()
        self.addCleanup(client.close)
        written = {f"key{i}": f"value {i}" for i in range(20)}
        for key, value in written.items():
            self.assertEqual(client.request(f"set {key} {value}"), "OK")

        cluster.kill(leader)
        killed = time.monotonic()
        self.assertEqual(client.request("set after failover", deadline=killed + PATIENCE), "OK")
        failover = time.monotonic() - killed
        newLeader = cluster.waitForLeader(PATIENCE)
        print(f"killed {leader}; {newLeader} served a write {failover:.3f}s later")
        self.assertNotEqual(newLeader, leader)
        self.assertLess(failover, ELECTION_BOUND)

        for key, value in written.items():
            self.assertEqual(client.request(f"get {key}"), f"OK {value}")
        self.assertEqual(client.request("get after"), "OK failover")

        cluster.start(leader)
        commitIndex = cluster.status(newLeader)["commitIndex"]

        def caughtUp() -> dict[str, object] | None:
            status = cluster.statuses().get(leader)
            if status and status["leader"] == newLeader and status["lastApplied"] >= commitIndex:
                return status
            return None

        status = self.waitFor(caughtUp, f"{leader} to apply up to {commitIndex}")
        self.assertEqual(status["role"], "follower")
        self.assertAllRunning(cluster)

    @showingNodeOutput
    def test_pausedLeaderGivesNoStaleAnswers(self) -> None:
        """
        A leader frozen with SIGSTOP is replaced; requests it received while
        frozen are answered, once it resumes, with C{REDIRECT} or
        C{UNAVAILABLE} (or a read of the current value), never a stale
        C{OK}; it then follows the new leader.  Reference: sections 5.1
        (a stale leader learns the new term) and 8 (no stale reads).
        """
        cluster, leader = self.startedCluster()
        client = cluster.client(timeout=1.0)
        self.addCleanup(client.close)
        self.assertEqual(client.request("set a before"), "OK")
        cluster.pause(leader)
        stale = cluster.connect(leader, PATIENCE)
        self.addCleanup(stale.close)
        stale.sendLines(["set a from-stale-leader", "get a"])
        newLeader = cluster.waitForLeader(PATIENCE)
        self.assertNotEqual(newLeader, leader)
        client.close()
        self.assertEqual(client.request("set a after", deadline=time.monotonic() + PATIENCE), "OK")

        cluster.resume(leader)
        setResponse, getResponse = stale.readLine(), stale.readLine()
        self.assertRegex(setResponse, r"^(REDIRECT|UNAVAILABLE) ")
        self.assertRegex(getResponse, r"^(REDIRECT |UNAVAILABLE |OK after$)")
        self.assertEqual(client.request("get a"), "OK after")
        self.waitFor(
            lambda: (cluster.statuses().get(leader) or {}).get("leader") == newLeader,
            f"{leader} to follow {newLeader}",
        )


class DurabilityTests(ProcessTestCase):
    """Acknowledged writes are on disk on a majority and survive a whole-cluster crash."""

    @showingNodeOutput
    def test_acknowledgedWritesSurviveWholeClusterRestart(self) -> None:
        """
        200 C{set}s answered C{OK} (half one at a time, half pipelined on one
        connection, some keys written several times) are all readable with
        their last values after every node is killed with SIGKILL and
        restarted; and each node's C{DIR/NAME.log} holds C{INDEX TERM
        COMMAND} lines with consecutive indexes from 1 and non-decreasing
        terms, every acknowledged command appearing in a majority of them.
        Reference: section 5.3 (log matching), Figure 2 (persistent state
        updated before responding to RPCs).
        """
        cluster, leader = self.startedCluster()
        client = cluster.client()
        self.addCleanup(client.close)
        rng = random.Random(1)
        expected: dict[str, str] = {}
        acknowledged: list[str] = []
        for i in range(100):
            key, value = f"k{rng.randrange(60)}", f"sequential {i} with spaces"
            command = f"set {key} {value}"
            self.assertEqual(client.request(command), "OK")
            expected[key] = value
            acknowledged.append(command)
        leader = cluster.waitForLeader(PATIENCE)
        pipelined = []
        for i in range(100):
            key, value = f"k{rng.randrange(80)}", f"pipelined {i}"
            pipelined.append(f"c1@set {key} {value}")
            expected[key] = value
            acknowledged.append(f"set {key} {value}")
        with cluster.connect(leader, PATIENCE) as connection:
            self.assertEqual(connection.pipeline(pipelined), ["OK"] * len(pipelined))

        cluster.killAll()
        logs = {name: self.readRaftLog(node.logPath) for name, node in cluster.nodes.items()}
        for command in acknowledged:
            holders = [name for name, entries in logs.items() if command in entries]
            self.assertGreaterEqual(len(holders), 2, f"{command!r} is only in {holders}")

        cluster.startAll()
        cluster.waitForLeader(PATIENCE)
        client.close()
        response = client.request("show", deadline=time.monotonic() + PATIENCE)
        self.assertTrue(response.startswith("OK "), response)
        self.assertEqual(json.loads(response[3:]), expected)
        with cluster.connect(cluster.waitForLeader(PATIENCE), PATIENCE) as connection:
            keys = sorted(expected)
            self.assertEqual(
                connection.pipeline([f"get {key}" for key in keys]),
                [f"OK {expected[key]}" for key in keys],
            )

    @showingNodeOutput
    def test_writesAcknowledgedBeforeLeaderCrashSurvive(self) -> None:
        """
        A client pipelines thousands of C{set}s to the leader, which is
        killed with SIGKILL while answers are still coming: after the
        failover, every write it answered C{OK} is readable with its value.
        Reference: section 5.4 (Leader Completeness), Figure 8.
        """
        cluster, leader = self.startedCluster()
        lines = [f"set k{i} v{i}" for i in range(20000)]
        connection = cluster.connect(leader, PATIENCE)
        self.addCleanup(connection.close)

        def send() -> None:
            try:
                connection.sendLines(lines)
            except OSError:
                pass  # the leader died with requests still in flight

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        self.addCleanup(sender.join, PATIENCE)
        acknowledged = []
        for i in range(len(lines)):
            if i == 1000:
                cluster.kill(leader)
            try:
                response = connection.readLine()
            except OSError:
                break
            self.assertEqual(response, "OK", lines[i])
            acknowledged.append(i)
        self.assertGreaterEqual(len(acknowledged), 1000)
        print(f"{len(acknowledged)} of {len(lines)} writes acknowledged before the crash")

        self.assertNotEqual(cluster.waitForLeader(PATIENCE), leader)
        client = cluster.client()
        self.addCleanup(client.close)
        response = client.request("show", deadline=time.monotonic() + PATIENCE)
        self.assertTrue(response.startswith("OK "), response)
        data = json.loads(response[3:])
        self.assertEqual([i for i in acknowledged if data.get(f"k{i}") != f"v{i}"], [])
        self.assertEqual({k: v for k, v in data.items() if v != f"v{k[1:]}"}, {})

    @showingNodeOutput
    def test_crashedLeadersUncommittedEntriesAreDiscarded(self) -> None:
        """
        A leader that appended entries no follower received, then crashed,
        rejoins after a new leader has written at the same indexes: its
        conflicting entries are removed from its log file, which ends up the
        same as the new leader's, and the lost writes are not in the store.
        Reference: section 5.3 and Figure 7 (the leader forces followers'
        logs to duplicate its own).
        """
        cluster, leader = self.startedCluster()
        client = cluster.client()
        self.addCleanup(client.close)
        self.assertEqual(client.request("set base 0"), "OK")
        followers = cluster.followers(leader)
        for name in followers:
            cluster.kill(name)
        appended = cluster.status(leader)["lastIndex"] + 5
        with cluster.connect(leader, PATIENCE) as connection:
            connection.sendLines([f"set lost{i} old" for i in range(5)])
            self.waitFor(
                lambda: cluster.status(leader)["lastIndex"] >= appended,
                f"{leader} to append the writes no follower will see",
            )
        cluster.kill(leader)

        for name in followers:
            cluster.start(name)
        newLeader = cluster.waitForLeader(PATIENCE)
        self.assertNotEqual(newLeader, leader)
        client.close()
        for i in range(8):
            self.assertEqual(
                client.request(f"set new{i} new", deadline=time.monotonic() + PATIENCE), "OK"
            )
        cluster.start(leader)

        def converged() -> bool:
            statuses = cluster.statuses()
            positions = {(s["lastIndex"], s["lastApplied"]) for s in statuses.values() if s}
            return len(statuses) == 3 and None not in statuses.values() and len(positions) == 1

        self.waitFor(converged, "every node to hold and apply the same log")
        with open(cluster.nodes[leader].logPath) as f:
            oldLeaderLog = f.read()
        with open(cluster.nodes[newLeader].logPath) as f:
            self.assertEqual(oldLeaderLog, f.read())
        self.assertNotIn("lost", oldLeaderLog)
        self.assertEqual(client.request("get lost0"), "NOT_FOUND")
        self.assertEqual(client.request("get new7"), "OK new")

    def readRaftLog(self, path: str) -> list[str]:
        """
        Return the commands of the Raft log at C{path}, checking that it is
        made of C{INDEX TERM COMMAND} lines, indexes consecutive from 1 and
        terms never decreasing.
        """
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        self.assertTrue(lines, f"{path} is empty")
        commands = []
        lastTerm = 0
        for number, line in enumerate(lines, start=1):
            match = LOG_LINE.fullmatch(line)
            self.assertIsNotNone(match, f"{path}:{number}: {line!r}")
            index, term, command = match.groups()
            self.assertEqual(int(index), number, f"{path}:{number}: {line!r}")
            self.assertGreaterEqual(int(term), max(lastTerm, 1), f"{path}:{number}: {line!r}")
            lastTerm = int(term)
            commands.append(command)
        return commands


class ExactlyOnceProcessTests(ProcessTestCase):
    """Numbered requests run once, across a killed leader and a restarted cluster."""

    @showingNodeOutput
    def test_retriedDeleteRunsOnce(self) -> None:
        """
        A numbered C{delete} answered C{OK} and retried, with the same SEQ,
        after the leader is killed with SIGKILL gets C{OK} again from the new
        leader: the answer recorded when it ran, not the C{NOT_FOUND} of a
        second run (which an unnumbered C{delete} shows).  Its log line is
        C{INDEX TERM CLIENTID#SEQ@COMMAND}.  Once every node has snapshotted
        past it, the whole cluster is killed and restarted (snapshot, then
        log replay): the retry still gets C{OK}, and changes nothing.
        Reference: dissertation section 6.3.
        """
        cluster = self.makeCluster(extraArgs=["--snapshot-entries", "20"])
        cluster.startAll()
        leader = cluster.waitForLeader(PATIENCE)
        client = cluster.client()
        self.addCleanup(client.close)
        self.assertEqual(client.request("p1#1@set k v"), "OK")
        self.assertEqual(client.request("p1#2@delete k"), "OK")

        cluster.kill(leader)
        deadline = time.monotonic() + PATIENCE
        self.assertEqual(client.request("p1#2@delete k", deadline=deadline), "OK")
        self.assertEqual(client.request("delete k"), "NOT_FOUND")
        self.assertEqual(client.request("p1#3@set k again"), "OK")
        self.assertEqual(client.request("p1#2@delete k"), "OK")
        self.assertEqual(client.request("get k"), "OK again")
        with open(cluster.nodes[leader].logPath, encoding="utf-8") as f:
            lines = [LOG_LINE.fullmatch(line) for line in f.read().splitlines()]
        commands = [match[3] for match in lines if match is not None]
        self.assertEqual(len(commands), len(lines))
        self.assertEqual(
            [c for c in commands if c != "noop"][:2], ["p1#1@set k v", "p1#2@delete k"]
        )

        for i in range(4, 50):
            self.assertEqual(client.request(f"p1#{i}@set n{i} {i}"), "OK")
        cluster.start(leader)
        self.waitFor(
            lambda: all(
                status and status["snapshotIndex"] > 10 for status in cluster.statuses().values()
            ),
            "every node to snapshot",
        )
        cluster.killAll()
        cluster.startAll()
        client.close()
        deadline = time.monotonic() + PATIENCE
        self.assertEqual(client.request("p1#2@delete k", deadline=deadline), "OK")
        self.assertEqual(client.request("p1#1@set k v"), "OK")
        self.assertEqual(client.request("get k"), "OK again")
        self.assertAllRunning(cluster)


#: Malformed client requests, each answered C{ERROR ...} on a connection that stays usable.
BAD_REQUESTS = [
    b"frobnicate k",
    b"GET k",
    b"c1@frobnicate",
    b"bad id!@get k",
    b"",
    b"   ",
    b"get",
    b"get ",
    b"delete",
    b"set",
    b"set k",
    b"set k ",
    b"get a b",
    b"delete a b",
    b"show all",
    b"status now",
    b"get \xff\xfe",
    b"set k \xc3\x28",
    b"\xff@get k",
    b"set k a\x00b",
    b"set k a\x1bb",
    b"c#0@get k",
    b"c#x@set k v",
    b"c#@get k",
    b"c#01@get k",
    b"c!#1@get k",
    b"c#1@status",
    b"c#1@frobnicate",
]

#: Forged or garbled peer lines, each answered C{ERROR ...} without changing any state.
FORGED_PEER_LINES = [
    b'intruder@AppendEntries {"term":99,"prevLogIndex":0,"prevLogTerm":0,'
    b'"entries":[],"leaderCommit":0}',
    b'intruder@RequestVote {"term":99,"lastLogIndex":99,"lastLogTerm":99}',
    b"s1@AppendEntries garbage",
    b"s2@AppendEntries",
    b"s3@AppendEntries {}",
    b"s1@AppendEntries []",
    b's2@AppendEntries {"term":-1,"prevLogIndex":0,"prevLogTerm":0,"entries":[],"leaderCommit":0}',
    b's3@AppendEntries {"term":1,"prevLogIndex":0,"prevLogTerm":0,'
    b'"entries":[[5,1,"set x 1"]],"leaderCommit":0}',
    b's1@RequestVote {"term":"x","lastLogIndex":0,"lastLogTerm":0}',
    b's2@RequestVote {"term":1,"lastLogIndex":0,"lastLogTerm":0,"extra":1}',
    b's3@RequestVoteResponse {"term":1,"voteGranted":true}',
    b's1@AppendEntriesResponse {"term":1,"success":true}',
    b"s2@RequestVote \xff\xfe",
]


class BadInputTests(ProcessTestCase):
    """Garbage from clients or impostors gets C{ERROR} and harms no node."""

    @showingNodeOutput
    def test_badInputIsRefusedAndClusterStillCommits(self) -> None:
        """
        On the leader and on a follower: every malformed request and every
        forged or garbled peer line, pipelined on one connection, gets one
        C{ERROR ...} line in order and the connection stays usable; 64 KiB
        of random bytes get one C{ERROR} per line; a request of 1 MiB is
        still read, but one of 1 MiB + 1 bytes gets C{ERROR line too long}
        after the answers to earlier requests and the node closes the
        connection.  Afterwards every node process is alive and the
        cluster commits writes.
        """
        cluster, leader = self.startedCluster()
        follower = self.followerNamingLeader(cluster, leader)
        for name in (leader, follower):
            with cluster.connect(name, PATIENCE) as connection:
                lines = BAD_REQUESTS + FORGED_PEER_LINES + [b"get\r"]
                connection.send(b"".join(line + b"\n" for line in lines) + b"status\r\n")
                for line in lines:
                    response = connection.readLine()
                    self.assertTrue(response.startswith("ERROR "), f"{line!r} -> {response!r}")
                self.assertTrue(connection.readLine().startswith("OK {"))

            with cluster.connect(name, PATIENCE) as connection:
                noise = random.Random(name).randbytes(64 * 1024) + b"\n"
                connection.send(noise)
                for number in range(noise.count(b"\n")):
                    response = connection.readLine()
                    self.assertTrue(response.startswith("ERROR "), f"line {number}: {response!r}")
                self.assertTrue(connection.request("status").startswith("OK {"))

            with cluster.connect(name, PATIENCE) as connection:
                longest = b"frobnicate " + b"x" * (MAX_REQUEST - len(b"frobnicate "))
                connection.send(longest + b"\n")
                self.assertTrue(connection.readLine().startswith("ERROR unknown command"))
                connection.send(b"status\n" + b"set k " + b"x" * (MAX_REQUEST + 1 - 6) + b"\n")
                self.assertTrue(connection.readLine().startswith("OK {"))
                self.assertEqual(connection.readLine(), "ERROR line too long")
                self.assertTrue(connection.isClosedByPeer(PATIENCE), "connection left open")

        self.assertAllRunning(cluster)
        for name, status in cluster.statuses(timeout=PATIENCE).items():
            self.assertLess(status["term"], 99, f"{name} took a forged term: {status}")
        for name in (leader, follower):
            self.assertIn(
                "rejected a peer line from unauthenticated 'intruder'",
                cluster.nodes[name].output(),
            )
        client = cluster.client()
        self.addCleanup(client.close)
        self.assertEqual(client.request("set survivor still here"), "OK")
        self.assertEqual(client.request("get survivor"), "OK still here")
        self.assertAllRunning(cluster)


class BundledClientTests(ProcessTestCase):
    """The bundled C{txraft-client} works against a real cluster."""

    def runClient(self, cluster: LocalCluster, *arguments: str) -> subprocess.CompletedProcess:
        """Run C{python -m txraft.client ARGUMENTS} with a bounded wait."""
        return subprocess.run(
            [sys.executable, "-m", "txraft.client", *arguments],
            env=cluster.env,
            cwd=cluster.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )

    @showingNodeOutput
    def test_clientFollowsRedirectFromFollower(self) -> None:
        """
        C{python -m txraft.client --id ID PORT set k v} pointed at a follower is
        redirected to the leader, prints C{OK} and exits 0; the value is
        then readable the same way.  Reference: section 8 (clients find the
        leader through redirects).
        """
        cluster, leader = self.startedCluster()
        follower = self.followerNamingLeader(cluster, leader)
        port = str(cluster.nodes[follower].port)
        result = self.runClient(cluster, "--id", "c42", port, "set", "k", "a value")
        self.assertEqual((result.returncode, result.stdout), (0, "OK\n"), result.stderr)
        self.assertIn(f"redirected to {leader}", result.stderr)
        result = self.runClient(cluster, port, "get", "k")
        self.assertEqual((result.returncode, result.stdout), (0, "OK a value\n"), result.stderr)


class StartupErrorTests(ProcessTestCase):
    """A node that cannot run exits at once, non-zero, saying why in one line."""

    def runNode(self, name: str, config: str, dataDir: str) -> tuple[int, str, float]:
        """
        Run a node that is expected to fail; return its exit status, its
        output and how long it ran.
        """
        started = time.monotonic()
        result = subprocess.run(
            nodeCommand(name, config, dataDir),
            env=nodeEnvironment(),
            cwd=self.cluster.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=PATIENCE,
            preexec_fn=dieWithParent,
        )
        output = result.stdout.decode("utf-8", "replace")
        return result.returncode, output, time.monotonic() - started

    def assertFailsClearly(self, name: str, config: str, dataDir: str, problem: str) -> None:
        """
        Assert that the node exits non-zero within a few seconds, that one
        line of its output contains C{problem}, and that it shows no traceback.
        """
        status, output, elapsed = self.runNode(name, config, dataDir)
        self.assertNotEqual(status, 0, output)
        self.assertLess(elapsed, 5.0, output)
        self.assertEqual(len([line for line in output.splitlines() if problem in line]), 1, output)
        self.assertNotIn("Traceback", output)

    def setUp(self) -> None:
        super().setUp()
        self.cluster = self.makeCluster(("s1", "s2"))

    def test_unknownName(self) -> None:
        """C{--name nosuch} is refused with a line naming the name and the config."""
        self.assertFailsClearly(
            "nosuch",
            self.cluster.configPath,
            self.cluster.directory,
            f"unknown node name 'nosuch': not in {self.cluster.configPath}",
        )

    def test_portClash(self) -> None:
        """A node whose port is already bound exits with a line naming the address."""
        host, port = self.cluster.address("s1")
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind((host, port))
        holder.listen()
        self.assertFailsClearly(
            "s1",
            self.cluster.configPath,
            self.cluster.directory,
            f"cannot listen on {host}:{port}",
        )

    def test_malformedConfig(self) -> None:
        """A config line without a port is refused with a line naming file and line."""
        path = os.path.join(self.cluster.directory, "bad.conf")
        with open(path, "w") as f:
            f.write("s1 127.0.0.1 1\ns2 127.0.0.1\n")
        self.assertFailsClearly("s1", path, self.cluster.directory, f"{path}:2: expected 3 fields")

    def test_dataDirIsAFile(self) -> None:
        """A data dir that is a regular file is refused with a line naming it."""
        path = os.path.join(self.cluster.directory, "not-a-dir")
        open(path, "w").close()
        self.assertFailsClearly("s1", self.cluster.configPath, path, f"--data-dir {path}")

    def test_corruptLog(self) -> None:
        """A Raft log with a line out of sequence is refused with a line naming file and line."""
        path = self.cluster.nodes["s1"].logPath
        with open(path, "w") as f:
            f.write("1 1 noop\n3 1 set a b\n")
        self.assertFailsClearly(
            "s1", self.cluster.configPath, self.cluster.directory, f"{path}:2: index 3"
        )

    @showingNodeOutput
    def test_dataDirInUse(self) -> None:
        """
        A second process for a node that is already running on the same
        data dir is refused, and the running one is unharmed.
        """
        self.cluster.start("s1")
        self.waitFor(lambda: self.cluster.statuses()["s1"], "s1 to answer")
        self.assertFailsClearly(
            "s1", self.cluster.configPath, self.cluster.directory, "already running"
        )
        self.assertEqual(self.cluster.status("s1")["name"], "s1")


class SnapshotProcessTests(ProcessTestCase):
    """
    Snapshots, InstallSnapshot and log compaction in real node processes
    run with C{--snapshot-entries 100}, C{--snapshot-growth 0} and
    C{--trailing-entries 0}: a compaction keeps none of the entries its
    snapshot covers, so a follower that lacks any of them needs the
    snapshot (dissertation chapter 5).
    """

    #: What the nodes are given as C{--snapshot-entries}.
    SNAPSHOT_ENTRIES = 100

    def makeSnapshottingCluster(self) -> LocalCluster:
        """
        A three-node cluster that snapshots every L{SNAPSHOT_ENTRIES}
        entries, however large the map, and keeps none it covers.
        """
        return self.makeCluster(
            extraArgs=[
                "--snapshot-entries",
                str(self.SNAPSHOT_ENTRIES),
                "--snapshot-growth",
                "0",
                "--trailing-entries",
                "0",
            ]
        )

    def settled(
        self, cluster: LocalCluster, names: Sequence[str]
    ) -> dict[str, dict[str, object]] | None:
        """
        The statuses of C{names} if they all hold, commit and apply the same
        log and none of them has a snapshot left to take (fewer than
        L{SNAPSHOT_ENTRIES} entries applied since its last one); else
        L{None}.
        """
        statuses = cluster.statuses()
        chosen = {name: statuses.get(name) for name in names}
        if any(status is None for status in chosen.values()):
            return None
        positions = {(s["lastIndex"], s["commitIndex"], s["lastApplied"]) for s in chosen.values()}
        if len(positions) != 1:
            return None
        for status in chosen.values():
            if status["lastApplied"] - status["snapshotIndex"] >= self.SNAPSHOT_ENTRIES:
                return None
        return chosen  # type: ignore[return-value]

    def storedState(self, cluster: LocalCluster, name: str) -> tuple[int, int, dict[str, str]]:
        """
        Read node C{name}'s files while it is stopped: its snapshot's last
        index, its log's line count, and the key-value map the snapshot and
        the log after it make; checking that the log starts no later than
        right after the snapshot (it may keep entries the snapshot covers),
        with consecutive indexes.
        """
        with open(os.path.join(cluster.directory, f"{name}.snapshot"), "rb") as f:
            snapshot = decodeSnapshot(f.read(), f"{name}.snapshot")
        store = KeyValueStore()
        store.restore(snapshot.data)
        with open(cluster.nodes[name].logPath, encoding="utf-8") as f:
            lines = f.read().splitlines()
        first = snapshot.index + 1
        for number, line in enumerate(lines):
            match = LOG_LINE.fullmatch(line)
            self.assertIsNotNone(match, f"{name}.log:{number + 1}: {line!r}")
            index, _, command = match.groups()
            if number == 0:
                first = int(index)
                self.assertLessEqual(first, snapshot.index + 1, f"{name}.log: {line!r}")
            self.assertEqual(int(index), first + number, f"{name}.log: {line!r}")
            if int(index) > snapshot.index and command != "noop":
                store.apply(command)
        return snapshot.index, len(lines), store.data

    @showingNodeOutput
    def test_followerBehindASnapshotGetsEntries(self) -> None:
        """
        With the default C{--trailing-entries}, a follower that was down
        while its leader took snapshots past the end of its log catches up
        with entries the leader kept, not with a snapshot, and ends with
        the leader's state.
        """
        cluster = self.makeCluster(extraArgs=["--snapshot-entries", "20"])
        cluster.startAll()
        leader = cluster.waitForLeader(PATIENCE)
        lagging = self.followerNamingLeader(cluster, leader)
        cluster.kill(lagging)
        with cluster.connect(leader, PATIENCE) as connection:
            lines = [f"set key{i} {i}" for i in range(100)]
            self.assertEqual(connection.pipeline(lines), ["OK"] * len(lines))
        self.waitFor(
            lambda: cluster.status(leader)["snapshotIndex"] >= 80 or None,  # type: ignore[operator]
            "the leader's snapshots",
        )
        cluster.start(lagging)
        self.waitFor(lambda: self.settled(cluster, cluster.names), "catching up")
        cluster.stop(lagging)
        self.assertNotIn("installed the leader's snapshot", cluster.nodes[lagging].output())
        _, _, state = self.storedState(cluster, lagging)
        self.assertEqual(state, {f"key{i}": str(i) for i in range(100)})

    @showingNodeOutput
    def test_laggingFollowerGetsSnapshotAndRestartIsCompact(self) -> None:
        """
        A follower down while 1000 keys (about 400 KiB, so more than one
        chunk) are written catches up, once restarted, from the leader's
        snapshot: the leader's log no longer holds what it lacks, and it
        ends with the leader's snapshot point, applied index and state.
        After a leader change every key reads back; after C{kill -9} of
        every node each log file holds only the entries after its node's
        snapshot, fewer than C{--snapshot-entries}, and on restart every
        acknowledged key is readable.  Reference: dissertation sections 5.1
        (snapshotting) and 5.3 (InstallSnapshot, Figure 5.3).
        """
        cluster = self.makeSnapshottingCluster()
        cluster.startAll()
        leader = cluster.waitForLeader(PATIENCE)
        lagging = self.followerNamingLeader(cluster, leader)
        other = next(name for name in cluster.names if name not in (leader, lagging))
        cluster.kill(lagging)
        with open(cluster.nodes[lagging].logPath, encoding="utf-8") as f:
            laggingLastIndex = len(f.read().splitlines())

        padding = "x" * 400
        expected: dict[str, str] = {}
        with cluster.connect(leader, PATIENCE) as connection:
            for start in range(0, 1000, 250):
                lines = [f"set key{i} {i} {padding}" for i in range(start, start + 250)]
                self.assertEqual(connection.pipeline(lines), ["OK"] * len(lines))
                expected.update({f"key{i}": f"{i} {padding}" for i in range(start, start + 250)})
            lines = [f"set key{i} rewritten" for i in range(0, 1000, 7)]
            lines += [f"delete key{i}" for i in range(3, 1000, 11)]
            self.assertEqual(connection.pipeline(lines), ["OK"] * len(lines))
        expected.update({f"key{i}": "rewritten" for i in range(0, 1000, 7)})
        for i in range(3, 1000, 11):
            del expected[f"key{i}"]

        running = self.waitFor(lambda: self.settled(cluster, [leader, other]), "snapshots")
        leaderStatus = running[leader]
        print(f"{leader} before {lagging} restarts: {leaderStatus}")
        self.assertGreater(leaderStatus["snapshotIndex"], laggingLastIndex)
        cluster.start(lagging)
        everyone = self.waitFor(lambda: self.settled(cluster, cluster.names), "catching up")
        caughtUp = everyone[lagging]
        self.assertEqual(caughtUp["lastApplied"], leaderStatus["lastApplied"])
        self.assertEqual(caughtUp["snapshotIndex"], leaderStatus["snapshotIndex"])
        cluster.stop(lagging)
        snapshotIndex, _, state = self.storedState(cluster, lagging)
        self.assertEqual(snapshotIndex, leaderStatus["snapshotIndex"])
        self.assertEqual(state, expected)
        cluster.start(lagging)

        cluster.kill(leader)
        newLeader = cluster.waitForLeader(PATIENCE)
        client = cluster.client()
        self.addCleanup(client.close)
        response = client.request("show", deadline=time.monotonic() + PATIENCE)
        self.assertEqual(json.loads(response.removeprefix("OK ")), expected)
        cluster.start(leader)
        self.waitFor(
            lambda: self.settled(cluster, cluster.names), f"{leader} to follow {newLeader}"
        )

        cluster.killAll()
        for name in cluster.names:
            snapshotIndex, lines, state = self.storedState(cluster, name)
            self.assertGreater(snapshotIndex, 0)
            self.assertLess(lines, self.SNAPSHOT_ENTRIES, f"{name}.log holds {lines} entries")
            self.assertEqual(state, expected, name)
        cluster.startAll()
        cluster.waitForLeader(PATIENCE)
        client.close()
        response = client.request("show", deadline=time.monotonic() + PATIENCE)
        self.assertEqual(json.loads(response.removeprefix("OK ")), expected)
        with cluster.connect(cluster.waitForLeader(PATIENCE), PATIENCE) as connection:
            keys = sorted(expected)
            self.assertEqual(
                connection.pipeline([f"get {key}" for key in keys]),
                [f"OK {expected[key]}" for key in keys],
            )
        self.assertAllRunning(cluster)

    def test_damagedSnapshotRefusesToStart(self) -> None:
        """
        A node whose snapshot file is torn or fails its checksum exits
        non-zero at once with one line naming the file, and no traceback:
        it does not start from a state it cannot trust.
        """
        cluster = self.makeCluster(("s1", "s2"))
        path = os.path.join(cluster.directory, "s1.snapshot")
        good = encodeSnapshot(Snapshot(5, 1, b'{"a":"1"}'))
        damaged = {
            "checksum does not match": good.replace(b'"1"', b'"2"'),
            "truncated or malformed": good[:-3],
        }
        for problem, contents in damaged.items():
            with open(path, "wb") as f:
                f.write(contents)
            cluster.start("s1")
            status = cluster.waitForExit("s1", PATIENCE)
            output = cluster.nodes["s1"].output().split("--- localcluster: starting")[-1]
            self.assertNotEqual(status, 0, output)
            self.assertEqual(
                len([line for line in output.splitlines() if f"{path}: snapshot" in line]),
                1,
                output,
            )
            self.assertIn(problem, output)
            self.assertNotIn("Traceback", output)


class BackupRestoreProcessTests(ProcessTestCase):
    """A backup of a running cluster, restored into a new one."""

    def runModule(self, cluster: LocalCluster, module: str, *arguments: str) -> str:
        """
        Run C{python -m MODULE ARGUMENTS} (the installed txraft, as the
        console scripts run it) with a bounded wait; return its stdout, and
        fail with its stderr unless it exits 0.
        """
        result = subprocess.run(
            [sys.executable, "-m", module, *arguments],
            env=cluster.env,
            cwd=cluster.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, f"{module}: {result.stdout}{result.stderr}")
        return result.stdout

    @showingNodeOutput
    def test_backupRestoredIntoNewCluster(self) -> None:
        """
        C{txraft-client --cluster-key KEY PORT backup FILE}, pointed at a
        follower of a keyed cluster, is redirected to the leader and writes
        the backup; with the old cluster stopped, C{txraft-restore} makes
        each node's data of a new cluster (other names, ports and key) from
        it, and the new cluster elects a leader, serves every key written
        before the backup, takes new writes, and runs on its own config's
        members.  C{txraft-restore} then refuses to run over a node's data.
        """
        old, leader = self.startedCluster()
        client = old.client()
        self.addCleanup(client.close)
        written = {f"key{i}": f"value {i}" for i in range(30)}
        for key, value in written.items():
            self.assertEqual(client.request(f"set {key} {value}"), "OK")
        client.close()
        follower = self.followerNamingLeader(old, leader)
        backupPath = os.path.join(old.directory, "backup.snapshot")
        out = self.runModule(
            old,
            "txraft.client",
            "--cluster-key",
            old.keyPath,
            str(old.nodes[follower].port),
            "backup",
            backupPath,
        )
        self.assertRegex(out, r"^backup of index \d+ \(term \d+, \d+ bytes\) written to ")
        old.stopAll()

        new = self.makeCluster(("n1", "n2", "n3"))
        for name in new.names:
            self.runModule(
                new,
                "txraft.restore",
                "--snapshot",
                backupPath,
                "--name",
                name,
                "--config",
                new.configPath,
                "--data-dir",
                new.directory,
            )
        new.startAll()
        new.waitForLeader(PATIENCE)
        newClient = new.client()
        self.addCleanup(newClient.close)
        deadline = time.monotonic() + PATIENCE
        for key, value in written.items():
            self.assertEqual(newClient.request(f"get {key}", deadline=deadline), f"OK {value}")
        self.assertEqual(newClient.request("set after restore"), "OK")
        port = str(new.nodes["n1"].port)
        table = self.runModule(new, "txraft.client", "--cluster-key", new.keyPath, port, "members")
        self.assertEqual(
            [row.split()[0::3] for row in table.splitlines()],
            [["NAME", "KIND"], ["n1", "voter"], ["n2", "voter"], ["n3", "voter"]],
        )
        self.assertAllRunning(new)

        result = subprocess.run(
            [sys.executable, "-m", "txraft.restore", "--snapshot", backupPath, "--name", "n1"]
            + ["--config", new.configPath, "--data-dir", new.directory],
            env=new.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("ERROR", result.stderr)


def processGone(pid: int) -> bool:
    """Whether process C{pid} has ended (a zombie nobody reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class OrphanTests(ProcessTestCase):
    """No node outlives the process that started it."""

    def test_nodesDieWithTheirStarter(self) -> None:
        """
        A process that started nodes through L{LocalCluster} and is then
        killed with C{SIGKILL} (as a test runner's timeout would kill it),
        so that it cleans nothing up, leaves no node running.
        """
        directory = tempfile.mkdtemp(prefix="txraft-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        script = (
            "import sys\n"
            "from txraft.testing.localcluster import LocalCluster\n"
            f"cluster = LocalCluster(['s1', 's2'], directory={directory!r})\n"
            "cluster.startAll()\n"
            "print(*(node.process.pid for node in cluster.nodes.values()), flush=True)\n"
            "sys.stdin.read()\n"
        )
        starter = subprocess.Popen(
            [sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(starter.wait)
        self.addCleanup(starter.kill)
        pids = [int(pid) for pid in starter.stdout.readline().split()]
        self.assertEqual(len(pids), 2)
        self.assertFalse(any(processGone(pid) for pid in pids))
        starter.kill()
        starter.wait()
        self.waitFor(lambda: all(processGone(pid) for pid in pids), "the nodes to die")

    def test_nodesOutliveTheThreadThatStartedThem(self) -> None:
        """
        A node started from a thread that then ends (as the chaos test's
        nemesis threads restart nodes) keeps running: Linux's parent-death
        signal follows the thread that forked the child, so L{LocalCluster}
        forks every node from one thread that lives as long as the process.
        """
        cluster = self.makeCluster(("s1",))
        starter = threading.Thread(target=cluster.start, args=("s1",))
        starter.start()
        starter.join()
        pid = cluster.nodes["s1"].process.pid
        cluster.waitForLeader(PATIENCE)
        self.assertFalse(processGone(pid))
        self.assertTrue(cluster.nodes["s1"].isRunning())
