"""
Chaos test: real C{twistd -n txraft} nodes, concurrent clients and a
nemesis that crashes, freezes and restarts nodes, and a linearizability
check of everything the clients saw (L{txraft.testing.chaos}).

Like the other process tests this runs on 127.0.0.1 only, with bounded
waits, and stops every process it started, pass or fail.  The nemesis
schedule is drawn from a random seed that the test prints; set
C{TXRAFT_CHAOS_SEED} to replay a schedule (the timing of everything else
will differ) and C{TXRAFT_CHAOS_SECONDS} to run longer (C{bench/soak.py}
runs the same thing for minutes).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Sequence

from twisted.trial.unittest import SynchronousTestCase

from txraft.testing.chaos import (
    FAULTS,
    ChaosReport,
    Recorder,
    WorkloadClient,
    raftLogExcerpt,
    runChaos,
)
from txraft.testing.linearizability import Operation
from txraft.testing.localcluster import HOST, LocalCluster, freePorts

#: Seconds of faults; the whole test takes a few seconds more.
DURATION = float(os.environ.get("TXRAFT_CHAOS_SECONDS") or 18)

#: Known outcomes the clients must get while the faults go on: the cluster
#: has a majority up most of the time, so it must keep serving.  A healthy
#: run gets thousands; this only catches a cluster that stalls.
MIN_OK = 200


def chaosSeed() -> int:
    """The seed from C{TXRAFT_CHAOS_SEED}, or a fresh random one."""
    text = os.environ.get("TXRAFT_CHAOS_SEED")
    return int(text) if text else random.SystemRandom().randrange(2**32)


#: Scripted answers of a L{ScriptedNode}: say nothing, or hang up.
SILENT = object()
HANGUP = object()


class ScriptedNode:
    """
    A stand-in for a node on 127.0.0.1: it reads request lines, one
    connection at a time, and answers each with the next scripted response,
    a line, L{SILENT} (nothing) or L{HANGUP} (close the connection).
    """

    def __init__(self, testCase: SynchronousTestCase, responses: Sequence[object]) -> None:
        self.responses = list(responses)
        self.received: list[str] = []
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(0.05)
        self.address = self.listener.getsockname()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        testCase.addCleanup(self.stop)

    def serve(self) -> None:
        """Answer connections one after another until stopped."""
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            with connection, connection.makefile("rb") as lines:
                for line in lines:
                    self.received.append(line.decode().rstrip("\n"))
                    response = self.responses.pop(0) if self.responses else SILENT
                    if response is HANGUP:
                        break
                    if response is not SILENT:
                        connection.sendall(f"{response}\n".encode())

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.stopped.set()
        self.thread.join(5)
        self.listener.close()


class WorkloadClientTests(SynchronousTestCase):
    """
    The chaos clients classify every answer soundly: known outcomes are
    recorded with their results, requests a node did not take are retried,
    and anything that may or may not have taken effect is recorded with an
    unknown outcome, never as a failure.
    """

    def client(
        self, nodes: dict[str, ScriptedNode | None], retryFor: float = 2.0
    ) -> tuple[WorkloadClient, Recorder]:
        """
        A client of C{nodes} (L{None}: a port nobody listens on) that starts
        with the first, times out after 0.3 s, and its recorder.
        """
        refused = iter(freePorts(len(nodes)))
        addresses = {
            name: node.address if node is not None else (HOST, next(refused))
            for name, node in nodes.items()
        }
        recorder = Recorder()
        client = WorkloadClient("c", addresses, recorder, random.Random(0), 0.3, retryFor)
        self.addCleanup(client.close)
        client.target = next(iter(nodes))
        return client, recorder

    def test_knownOutcomes(self) -> None:
        """
        C{OK VALUE} and C{NOT_FOUND} to a get, C{OK} to a set, C{OK} and
        C{NOT_FOUND} to a delete are recorded as known outcomes with what
        they say, each sent once as C{ID@COMMAND} and naming the node.
        """
        node = ScriptedNode(self, ["OK v 1", "NOT_FOUND", "OK", "OK", "NOT_FOUND"])
        client, recorder = self.client({"a": node})
        done = [
            client.perform("get", "k", None),
            client.perform("get", "k", None),
            client.perform("set", "k", "c-1"),
            client.perform("delete", "k", None),
            client.perform("delete", "k", None),
        ]
        self.assertEqual(recorder.history, done)
        self.assertEqual(
            [(o.client, o.kind, o.value, o.result, o.found) for o in done],
            [
                ("c/a", "get", None, "v 1", True),
                ("c/a", "get", None, None, False),
                ("c/a", "set", "c-1", None, True),
                ("c/a", "delete", None, None, True),
                ("c/a", "delete", None, None, False),
            ],
        )
        self.assertTrue(all(o.start <= o.end for o in done))
        self.assertEqual(
            node.received, ["c@get k", "c@get k", "c@set k c-1", "c@delete k", "c@delete k"]
        )
        self.assertEqual((recorder.ok, recorder.unknown, recorder.failed), (5, 0, 0))

    def test_requestsNotTakenAreRetried(self) -> None:
        """
        C{REDIRECT} is followed, and C{UNAVAILABLE no leader known} and a
        refused connection move on to the next node in config order: the
        operation is recorded once, with the outcome the node that finally
        took it gave.
        """
        c = ScriptedNode(self, ["UNAVAILABLE no leader known"])
        b = ScriptedNode(self, [f"REDIRECT c {HOST} {c.address[1]}"])
        a = ScriptedNode(self, [f"REDIRECT b {HOST} {b.address[1]}", "OK"])
        client, recorder = self.client({"a": a, "b": b, "c": c, "d": None})
        operation = client.perform("set", "k", "c-1")
        self.assertEqual(recorder.history, [operation])
        self.assertEqual((operation.client, operation.found), ("c/a", True))
        self.assertEqual([len(n.received) for n in (a, b, c)], [2, 1, 1])
        self.assertEqual((recorder.ok, recorder.unknown, recorder.failed), (1, 0, 0))

    def test_unknownOutcomes(self) -> None:
        """
        An C{UNAVAILABLE} other than "no leader known", silence until the
        timeout and a connection closed after the request are recorded as
        unknown outcomes (no end), and not retried.
        """
        for response in ["UNAVAILABLE not committed in time", SILENT, HANGUP]:
            node = ScriptedNode(self, [response, "OK"])
            client, recorder = self.client({"a": node})
            operation = client.perform("set", "k", "c-1")
            self.assertIsInstance(operation, Operation)
            self.assertIsNone(operation.end, response)
            self.assertEqual(recorder.history, [operation])
            self.assertEqual((recorder.ok, recorder.unknown), (0, 1))
            self.assertEqual(node.received, ["c@set k c-1"])

    def test_refusedEverywhereIsAFailure(self) -> None:
        """
        An operation no node would even accept a connection for, until its
        retry time ran out, is counted as failed and left out of the history.
        """
        client, recorder = self.client({"a": None, "b": None}, retryFor=0.3)
        self.assertIsNone(client.perform("get", "k", None))
        self.assertEqual((recorder.history, recorder.failed), ([], 1))

    def test_wrongAnswersAreAnomalies(self) -> None:
        """
        C{ERROR ...}, an answer that does not fit the command and a
        redirect to an unknown node are reported as anomalies, and the
        operation is left out of the history.
        """
        node = ScriptedNode(self, ["ERROR unknown command", "OK", "REDIRECT x 1.2.3.4 5", "OK"])
        client, recorder = self.client({"a": node})
        self.assertIsNone(client.perform("get", "k", None))
        self.assertIsNone(client.perform("get", "k", None))
        client.perform("set", "k", "c-1")
        self.assertEqual(len(recorder.anomalies), 3, recorder.anomalies)
        self.assertEqual(len(recorder.history), 1)


class ChaosTests(SynchronousTestCase):
    """Under crashes, freezes and leader kills, the store stays linearizable."""

    def makeCluster(self) -> LocalCluster:
        """A three-node cluster in a temporary directory; the cleanup stops it."""
        directory = tempfile.mkdtemp(prefix="txraft-chaos-")
        self.addCleanup(shutil.rmtree, directory, True)
        cluster = LocalCluster(("s1", "s2", "s3"), directory=directory)
        self.addCleanup(cluster.stopAll)
        return cluster

    def reportFailure(self, cluster: LocalCluster, report: ChaosReport | None) -> None:
        """Print what a failed run needs for a diagnosis: the seed, the checker, the nodes."""
        lines = []
        if report is not None:
            lines.append(report.summary())
            lines.append("faults:")
            lines.extend(f"  {fault.describe(report.started)}" for fault in report.faults)
            if not report.verdict.ok:
                lines.append(report.verdict.explanation)
                lines.append(
                    raftLogExcerpt(cluster, report.verdict.key, report.verdict.explanation)
                )
        lines.append(cluster.describe(lines=80))
        print("\n".join(lines), file=sys.stderr)

    def test_linearizableUnderCrashesAndPauses(self) -> None:
        """
        Four clients send random get/set/delete requests on three keys
        (each following REDIRECT, each request timing out after a second)
        while a nemesis repeatedly kills a random node and restarts it,
        freezes one with SIGSTOP for under two seconds, or kills the
        leader; two such schedules run at once, so at times two of the
        three nodes are down and the majority is lost (a leader that
        acknowledged a write before a majority stored it would then lose
        it).  Afterwards every node is healed and every key read once
        more.  The whole history, operations whose outcome the clients
        could not know included, must be linearizable: every acknowledged
        write survives (reads, final ones included, see it until it is
        overwritten) and no read sees a stale or invented value.  The
        cluster must also keep serving during the faults, no node may
        exit by itself and no answer may be malformed.
        Reference: sections 5.2 and 5.4 (Election Safety, Leader
        Completeness, State Machine Safety) and section 8 (linearizable
        semantics for clients).
        """
        seed = chaosSeed()
        print(f"chaos seed {seed}: TXRAFT_CHAOS_SEED={seed} replays this nemesis schedule")
        cluster = self.makeCluster()
        report = None
        try:
            cluster.startAll()
            cluster.waitForLeader(10.0)
            report = runChaos(cluster, duration=DURATION, seed=seed, overlap=2, log=print)
            print(report.summary())
            self.assertTrue(report.verdict.ok, f"seed {seed}: {report.verdict.explanation}")
            self.assertEqual(report.anomalies, [], f"seed {seed}")
            self.assertGreaterEqual(report.ok, MIN_OK, f"seed {seed}: the cluster stalled")
            self.assertEqual(sorted(report.finalValues), ["k0", "k1", "k2"], f"seed {seed}")
            self.assertGreaterEqual(len(report.faults), int(DURATION / 4), f"seed {seed}")
            self.assertLessEqual({f.kind for f in report.faults}, set(FAULTS))
        except BaseException:
            self.reportFailure(cluster, report)
            raise
        cluster.stopAll()
        self.assertEqual(cluster.running(), [], "a node process outlived the test")
