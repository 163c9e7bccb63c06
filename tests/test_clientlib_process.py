"""
Process tests of the client library: L{txraft.blocking} against real
C{twistd -n txraft} nodes, one of them killed while writes are in flight.
"""

from __future__ import annotations

import io
import json
import threading
import time

from tests.test_process import PATIENCE, ProcessTestCase, showingNodeOutput
from txraft.blocking import BlockingClient, connect
from txraft.client import main
from txraft.clientlib import SessionsUnsupportedError
from txraft.testing.localcluster import POLL_INTERVAL, LocalCluster

#: Writes pipelined while the leader is killed.
WRITES = 600


class ClientLibraryProcessTests(ProcessTestCase):
    """The library's retries carry writes through a leader's crash."""

    def libraryClient(self, cluster: LocalCluster) -> BlockingClient:
        """
        A blocking client that knows every node, numbering its writes if
        the cluster keeps sessions (else unnumbered: see the test).
        """
        addresses = [cluster.address(name) for name in cluster.names]
        client = connect(addresses, timeout=PATIENCE)
        try:
            client.set("probe", "1")
        except SessionsUnsupportedError:
            client.close()
            client = connect(addresses, timeout=PATIENCE, exactlyOnce=False)
            client.set("probe", "1")
        self.addCleanup(client.close)
        return client

    @showingNodeOutput
    def test_writesSurviveLeaderKill(self) -> None:
        """
        A client given one node learns every member from its C{status}.
        Pipelined C{set}s and C{delete}s through the library all get an
        answer although the leader is killed (C{SIGKILL}) while they are in
        flight: the library finds the new leader and sends the unanswered
        ones again, with the same SEQs.  Every C{set} answers C{OK} and the
        final map is exactly what was written.

        With exactly-once sessions every C{delete} of a key that was there
        answers C{OK}: a retried one gets its recorded answer, not
        C{NOT_FOUND} from running twice (dissertation section 6.3).  On a
        cluster without sessions (txraft before them), the library sends
        writes unnumbered and a retried C{delete} may say C{NOT_FOUND}; that
        much is allowed then, and nothing more.
        """
        cluster, leader = self.startedCluster()
        with connect([cluster.address(leader)]) as one:
            addresses = [cluster.address(name) for name in cluster.names]
            self.assertEqual(sorted(one.discover()), sorted(addresses))
        client = self.libraryClient(cluster)
        olds = [f"old{i}" for i in range(WRITES // 4)]
        self.assertEqual(client.pipeline([f"set {k} x" for k in olds]), ["OK"] * len(olds))
        start = cluster.status(leader, PATIENCE)["commitIndex"]

        commands = [f"set k{i} v{i}" for i in range(WRITES)] + [f"delete {k}" for k in olds]
        results: list[list[str]] = []
        worker = threading.Thread(target=lambda: results.append(client.pipeline(commands)))
        worker.start()
        self.addCleanup(worker.join, PATIENCE * 3)
        self.waitForCommits(cluster, leader, start + 50)
        cluster.kill(leader)
        worker.join(PATIENCE * 3)

        [answers] = results
        sets, deletes = answers[:WRITES], answers[WRITES:]
        self.assertEqual(sets, ["OK"] * WRITES)
        allowed = {"OK"} if client.client.exactlyOnce else {"OK", "NOT_FOUND"}
        self.assertLessEqual(set(deletes), allowed)
        state = json.loads(client.show().removeprefix("OK "))
        self.assertEqual(state, {"probe": "1"} | {f"k{i}": f"v{i}" for i in range(WRITES)})
        self.assertNotEqual(cluster.waitForLeader(PATIENCE), leader)

    @showingNodeOutput
    def test_promptGoesOnWhenItsNodeDies(self) -> None:
        """
        C{txraft-client} at the prompt, started on the leader, learns the
        members from it; once that node is killed (C{SIGKILL}) the session's
        next commands are answered by the others (a new leader), and the
        write taken before the kill is there.
        """
        cluster, leader = self.startedCluster()
        host, port = cluster.address(leader)
        script = ["set a 1", "get a", "set b 2", "get b"]

        def readLine(prompt: str) -> str:
            if not script:
                raise EOFError()
            if len(script) == 3:
                cluster.kill(leader)
            return script.pop(0)

        stdout, stderr = io.StringIO(), io.StringIO()
        argv = ["--id", "c1", "--host", host, "--timeout", str(PATIENCE), str(port)]
        status = main(argv, readLine=readLine, stdout=stdout, stderr=stderr)
        self.assertEqual(status, 0, stderr.getvalue())
        out = stdout.getvalue()
        [named] = [line for line in out.splitlines() if line.startswith("[*] The cluster's")]
        self.assertEqual(
            sorted(named.split(": ", 1)[1].split(", ")),
            sorted(f"{h}:{p}" for h, p in map(cluster.address, cluster.names)),
        )
        self.assertTrue(out.endswith("OK\nOK 1\nOK\nOK 2\n\n"), out)
        self.assertNotEqual(cluster.waitForLeader(PATIENCE), leader)

    def waitForCommits(self, cluster: LocalCluster, leader: str, index: int) -> None:
        """Wait until C{leader} has committed up to C{index}, so writes are in flight."""
        deadline = time.monotonic() + PATIENCE
        while cluster.status(leader, PATIENCE)["commitIndex"] < index:
            self.assertLess(time.monotonic(), deadline, "the writes did not start")
            time.sleep(POLL_INTERVAL)
