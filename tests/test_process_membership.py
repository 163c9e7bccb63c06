"""
Process tests of membership changes: real C{twistd -n txraft} nodes grow
from three to five, replace a dead node, remove their leader, and restart
one by one while a client writes.  Reference: dissertation chapter 4 and
section 3.10.

The first three nodes start a cluster from a config file naming only them;
the others start with C{--join} and wait to be added.  The clusters are
unkeyed, so the harness's plain connections may send operators' commands
(a keyed cluster refuses them from a connection without the key: see
L{tests.test_protocol}).
"""

from __future__ import annotations

import os
import signal
import threading
import time

from tests.test_process import PATIENCE, ProcessTestCase, showingNodeOutput
from txraft import answers
from txraft.testing.localcluster import LocalCluster, writeConfig

FOUNDERS = ("s1", "s2", "s3")


class MembershipProcessTests(ProcessTestCase):
    """Membership changes between real node processes."""

    def foundedCluster(
        self, names: tuple[str, ...], extraArgs: tuple[str, ...] = ()
    ) -> tuple[LocalCluster, str]:
        """
        A cluster of C{names} whose first three nodes are running, founded
        from a config of only them; the others are not started.  Returns
        the cluster and its leader.
        """
        cluster = self.makeCluster(names, keyed=False, extraArgs=extraArgs)
        founders = os.path.join(cluster.directory, "founders.conf")
        writeConfig(founders, {name: cluster.address(name) for name in FOUNDERS})
        self.foundersConfig = founders
        for name in FOUNDERS:
            cluster.start(name, ["--config", founders])
        return cluster, cluster.waitForLeader(PATIENCE)

    def admin(self, cluster: LocalCluster, line: str) -> str:
        """Send an operator's command to the leader (following redirects); its answer."""
        with cluster.client(timeout=PATIENCE) as client:
            return client.request(line, retry=False)

    def voters(self, cluster: LocalCluster, name: str) -> dict[str, bool]:
        """Each member's name and whether it votes, as node C{name} sees it."""
        status = cluster.status(name)
        learners = set(status["learners"])  # type: ignore[arg-type]
        return {member: member not in learners for member in status["members"]}  # type: ignore[union-attr]

    def add(self, cluster: LocalCluster, name: str) -> None:
        """Start C{name} with C{--join} and add it; require C{OK}."""
        cluster.start(name, ["--join"])
        host, port = cluster.address(name)
        self.assertEqual(self.admin(cluster, f"add {name} {host} {port}"), answers.OK)

    @showingNodeOutput
    def test_growThenReplaceADeadNode(self) -> None:
        """
        Two joining nodes are added one after the other and every node runs
        with five voters; then a follower is killed for good, its data wiped,
        and it is removed and replaced by a new node under a new name.
        Every write acknowledged along the way is still there.
        """
        cluster, leader = self.foundedCluster(("s1", "s2", "s3", "s4", "s5", "s6"))
        written = {}
        with cluster.client(timeout=PATIENCE) as client:
            for i in range(20):
                self.assertEqual(client.request(f"set k{i} {i}"), answers.OK)
                written[f"k{i}"] = str(i)
        for name in ("s4", "s5"):
            self.add(cluster, name)
        five = dict.fromkeys(("s1", "s2", "s3", "s4", "s5"), True)
        for name in five:
            self.waitFor(lambda name=name: self.voters(cluster, name) == five, f"{name}: 5 voters")

        leader = cluster.waitForLeader(PATIENCE)
        dead = next(name for name in five if name != leader)
        cluster.kill(dead)
        for suffix in (".log", ".state", ".snapshot"):
            path = os.path.join(cluster.directory, dead + suffix)
            if os.path.exists(path):
                os.remove(path)
        self.assertEqual(self.admin(cluster, f"remove {dead}"), answers.OK)
        self.add(cluster, "s6")
        with cluster.client(timeout=PATIENCE) as client:
            for i in range(20, 30):
                self.assertEqual(client.request(f"set k{i} {i}"), answers.OK)
                written[f"k{i}"] = str(i)
            leader = cluster.waitForLeader(PATIENCE)
            members = self.voters(cluster, leader)
            self.assertEqual(sorted(members), sorted(set(five) - {dead} | {"s6"}))
            self.assertTrue(all(members.values()), members)
            for key, value in written.items():
                self.assertEqual(client.request(f"get {key}"), f"OK {value}")

    @showingNodeOutput
    def test_removeTheLeader(self) -> None:
        """
        The leader removes itself: it answers C{OK}, another node leads, the
        cluster takes writes without it, and it leads no more.
        """
        cluster, leader = self.foundedCluster(FOUNDERS)
        self.assertEqual(self.admin(cluster, f"remove {leader}"), answers.OK)
        remaining = [name for name in FOUNDERS if name != leader]

        def newLeader() -> str | None:
            for name, status in cluster.statuses().items():
                if status is None or name not in remaining:
                    continue
                if status["role"] == "leader" and leader not in status["members"]:  # type: ignore[operator]
                    return name
            return None

        self.waitFor(newLeader, "a leader among the others")
        with cluster.client(timeout=PATIENCE) as client:
            self.assertEqual(client.request("set after removal"), answers.OK)
        # On a busy machine the two may elect again; whoever leads is one of them.
        self.waitFor(newLeader, "a leader among the others, after the write")
        self.assertNotEqual(cluster.status(leader)["role"], "leader")

    @showingNodeOutput
    def test_rollingRestartHandsOver(self) -> None:
        """
        Every node in turn is stopped with SIGTERM and started again while a
        client writes without pause.  A stopping leader hands over, so no
        write waits for an election: the longest wait is far below the
        election timeout (set long here, 2 to 4 s, to tell the two apart on
        a busy machine), and every acknowledged write is there at the end.
        """
        cluster = self.makeCluster(
            FOUNDERS, keyed=False, extraArgs=["--election-timeout", "2000:4000"]
        )
        cluster.startAll()
        cluster.waitForLeader(PATIENCE * 2)
        acknowledged: list[str] = []
        gaps: list[float] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def write() -> None:
            try:
                with cluster.client(timeout=PATIENCE) as client:
                    last = time.monotonic()
                    i = 0
                    while not stop.is_set():
                        if client.request(f"set r{i} {i}") == answers.OK:
                            acknowledged.append(f"r{i}")
                        now = time.monotonic()
                        gaps.append(now - last)
                        last, i = now, i + 1
            except BaseException as e:
                failures.append(e)

        writer = threading.Thread(target=write)
        writer.start()
        try:
            for name in FOUNDERS:
                count = len(acknowledged)
                self.waitFor(lambda count=count: len(acknowledged) > count + 20, "writes")
                # twistd ends with the signal it was stopped by: not SIGKILL,
                # which would mean it did not stop within PATIENCE.
                self.assertEqual(cluster.stop(name, timeout=PATIENCE), -signal.SIGTERM)
                cluster.start(name)
                cluster.waitForLeader(PATIENCE * 2)
            count = len(acknowledged)
            self.waitFor(lambda: len(acknowledged) > count + 20, "writes after the restarts")
        finally:
            stop.set()
            writer.join(PATIENCE)
        self.assertEqual(failures, [])
        self.assertLess(max(gaps), 1.5, "a write waited as long as an election")
        with cluster.client(timeout=PATIENCE) as client:
            for key in acknowledged[:: max(1, len(acknowledged) // 50)] + acknowledged[-5:]:
                self.assertEqual(client.request(f"get {key}"), f"OK {key[1:]}")
