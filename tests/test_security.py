"""
Process tests of the cluster key (issue 9): real C{twistd -n txraft} nodes
on 127.0.0.1 attacked by a stranger who knows every node's name but not the
key, and a node started with the wrong key.
"""

from __future__ import annotations

import json
import os
import socket
import time

from tests.test_process import PATIENCE, ProcessTestCase, showingNodeOutput
from txraft import answers
from txraft.auth import readKeyFile, writeKeyFile
from txraft.client import LineConnection
from txraft.messages import AppendEntries, Entry, InstallSnapshot, RequestVote, formatMessage
from txraft.testing.localcluster import LocalCluster

#: The forged term: far above any the test cluster reaches on its own.
FORGED_TERM = 101


def forgedLines(cluster: LocalCluster, leader: str, follower: str) -> list[str]:
    """
    The attack of issue 9 against C{follower}, signed with the real
    leader's name: an C{AppendEntries} that appends C{set pwned yes} in a
    higher term, a C{RequestVote} in that term, and an C{InstallSnapshot}
    replacing the whole store with C{{"pwned": "snapshot"}}.
    """
    status = cluster.status(follower, PATIENCE)
    last = int(status["lastIndex"])
    entry = Entry(last + 1, FORGED_TERM, "set pwned yes")
    data = json.dumps({"pwned": "snapshot"}).encode()
    return [
        formatMessage(leader, AppendEntries(FORGED_TERM, last, 1, (entry,), last + 1)),
        formatMessage(leader, RequestVote(FORGED_TERM + 1, last + 10, FORGED_TERM + 1)),
        formatMessage(
            leader,
            InstallSnapshot(FORGED_TERM + 2, last + 100, FORGED_TERM + 2, 0, data, done=True),
        ),
    ]


class ForgedPeerLineTests(ProcessTestCase):
    """
    A stranger's forged peer lines: refused by a keyed cluster, and (the
    control that shows the lines are well formed) taken by an unkeyed one.
    """

    def attack(self, keyed: bool) -> tuple[LocalCluster, str, list[str]]:
        """
        Start a cluster, commit one write, send the forged lines to a
        follower on one plain connection, and return the cluster, its
        leader and the answers.
        """
        cluster = self.makeCluster(keyed=keyed)
        cluster.startAll()
        leader = cluster.waitForLeader(PATIENCE)
        client = cluster.client()
        self.addCleanup(client.close)
        self.assertEqual(client.request("set before 1"), "OK")
        follower = self.followerNamingLeader(cluster, leader)
        with cluster.connect(follower, PATIENCE) as connection:
            responses = connection.pipeline(forgedLines(cluster, leader, follower))
        return cluster, leader, responses

    @showingNodeOutput
    def test_keyedClusterRefusesForgedLines(self) -> None:
        """
        On a keyed cluster the forged C{AppendEntries}, C{RequestVote} and
        C{InstallSnapshot} each get C{ERROR not authenticated ...} and change
        nothing: no node takes the forged term, no log holds the forged
        entry, C{get pwned} finds nothing, the cluster still commits, and
        the follower logged the refusal.
        """
        cluster, leader, responses = self.attack(keyed=True)
        for response in responses:
            self.assertTrue(response.startswith("ERROR not authenticated"), response)
        client = cluster.client()
        self.addCleanup(client.close)
        self.assertEqual(client.request("set after 2"), "OK")
        self.assertEqual(client.request("get pwned"), answers.NOT_FOUND)
        self.assertEqual(client.request("get before"), "OK 1")
        for name, status in cluster.statuses(timeout=PATIENCE).items():
            self.assertLess(status["term"], FORGED_TERM, f"{name} took the forged term")
        for node in cluster.nodes.values():
            with open(node.logPath, encoding="utf-8") as f:
                self.assertNotIn("set pwned", f.read(), f"{node.name}'s log")
        outputs = "".join(node.output() for node in cluster.nodes.values())
        self.assertIn("rejected a peer line from unauthenticated", outputs)
        self.assertAllRunning(cluster)

    @showingNodeOutput
    def test_unkeyedClusterTakesForgedAppendEntries(self) -> None:
        """
        The control: without a key, the same forged C{AppendEntries} is
        answered as a peer's, and the follower takes the forged term, as
        issue 9 reported.  The lines above are thus a real attack.
        """
        cluster, leader, responses = self.attack(keyed=False)
        self.assertFalse(responses[0].startswith("ERROR"), responses[0])
        self.assertIn("AppendEntriesResponse", responses[0])
        self.assertIn(f'"term":{FORGED_TERM}', responses[0])
        self.assertIn("has no --cluster-key", cluster.nodes[leader].output())


class HandshakeProcessTests(ProcessTestCase):
    """The handshake against a real node, by someone without the key."""

    @showingNodeOutput
    def test_strangerCannotFinishHandshake(self) -> None:
        """
        A stranger who starts the handshake gets the node's challenge but
        cannot answer it: a made-up proof gets C{ERROR authentication
        failed} and the connection is closed; replaying a real node's
        challenge answer is impossible because the nonce is new each time.
        """
        cluster, leader = self.startedCluster()
        with cluster.connect(leader, PATIENCE) as connection:
            challenge = connection.request("s9@AUTH1 " + "00" * 32)
            self.assertTrue(challenge.startswith(f"{leader}@AUTH1 "), challenge)
            again = cluster.connect(leader, PATIENCE)
            self.addCleanup(again.close)
            self.assertNotEqual(again.request("s9@AUTH1 " + "00" * 32), challenge)
            response = connection.request("s9@AUTH2 " + "11" * 32)
            self.assertTrue(response.startswith("ERROR authentication failed"), response)
            self.assertTrue(connection.isClosedByPeer(PATIENCE))


class WrongKeyTests(ProcessTestCase):
    """A node given another cluster's key."""

    @showingNodeOutput
    def test_wrongKeyGetsNothingAndDisturbsNobody(self) -> None:
        """
        With s3 holding another key, s1 and s2 elect a leader and commit;
        s3 gets no entry, no vote and no snapshot (its log stays empty, it
        never learns a leader), and its campaigns do not move the others'
        term while it runs for several election timeouts.
        """
        cluster = self.makeCluster()
        otherKey = os.path.join(cluster.directory, "other.key")
        writeKeyFile(otherKey)
        cluster.start("s1")
        cluster.start("s2")
        cluster.start("s3", ["--cluster-key", otherKey])
        leader = self.waitFor(
            lambda: next(
                (
                    name
                    for name, s in cluster.statuses().items()
                    if s and s["role"] == "leader" and name != "s3"
                ),
                None,
            ),
            "a leader among s1 and s2",
        )
        client = cluster.client()
        self.addCleanup(client.close)
        for n in range(5):
            self.assertEqual(
                client.request(f"set k{n} {n}", deadline=time.monotonic() + PATIENCE), "OK"
            )
        term = cluster.status(leader, PATIENCE)["term"]
        # s3's election timeout is at most 800 ms; watch it through several.
        # Sampling over a period, not waiting for an event: the point is
        # that nothing happens.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for name in ("s1", "s2"):
                self.assertEqual(cluster.status(name, PATIENCE)["term"], term, name)
            outsider = cluster.status("s3", PATIENCE)
            self.assertEqual(outsider["lastIndex"], 0, outsider)
            self.assertIsNone(outsider["leader"], outsider)
            self.assertNotEqual(outsider["role"], "leader", outsider)
            time.sleep(0.2)
        self.assertEqual(cluster.status(leader, PATIENCE)["role"], "leader")
        self.assertIn("failed the cluster key handshake", cluster.nodes["s3"].output())
        self.assertAllRunning(cluster)


class RecordingConnection(LineConnection):
    """A L{LineConnection} that keeps every byte it sends, as a wiretapper would."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        """Record, then send."""
        self.sent.append(data)
        super().send(data)


class ReplayAndInjectionTests(ProcessTestCase):
    """Recorded and injected lines against a real keyed node."""

    @showingNodeOutput
    def test_recordedSessionReplayedFails(self) -> None:
        """
        A whole authenticated session (handshake and a sealed C{set}),
        recorded off the wire and replayed byte for byte on a new
        connection, fails at the handshake: the node's nonce is new, so the
        recorded proof is refused and the connection closed, and the
        replayed C{set} never runs.
        """
        cluster, leader = self.startedCluster()
        assert cluster.keyPath is not None
        host, port = cluster.address(leader)
        with RecordingConnection(host, port, PATIENCE) as recorded:
            recorded.authenticate(readKeyFile(cluster.keyPath), "admin")
            self.assertEqual(recorded.request("set replayed once"), "OK")
        client = cluster.client()
        self.addCleanup(client.close)
        self.assertEqual(client.request("set replayed original"), "OK")
        with LineConnection(host, port, PATIENCE) as replay:
            replay.send(b"".join(recorded.sent))
            self.assertTrue(replay.readLine().startswith(f"{leader}@AUTH1 "))
            self.assertTrue(replay.readLine().startswith("ERROR authentication failed"))
            self.assertTrue(replay.isClosedByPeer(PATIENCE))
        self.assertEqual(client.request("get replayed"), "OK original")

    @showingNodeOutput
    def test_lineInjectedIntoSessionFails(self) -> None:
        """
        On a connection that proved the key, a line without a valid MAC
        (injected into the stream) is refused with an C{ERROR} (itself
        sealed) and the node hangs up; the line never runs.
        """
        cluster, leader = self.startedCluster()
        assert cluster.keyPath is not None
        with cluster.connect(leader, PATIENCE) as connection:
            connection.authenticate(readKeyFile(cluster.keyPath), "admin")
            self.assertTrue(connection.request("status").startswith("OK {"))
            connection.send(b"set injected yes\n")
            self.assertTrue(connection.readLine().startswith("ERROR line without a valid MAC"))
            self.assertTrue(connection.isClosedByPeer(PATIENCE))
        client = cluster.client()
        self.addCleanup(client.close)
        self.assertEqual(client.request("get injected"), answers.NOT_FOUND)


class StrangerProcessTests(ProcessTestCase):
    """A real node's limits on what strangers' connections can take."""

    def stranger(self, cluster: LocalCluster, name: str) -> socket.socket:
        """A plain connection to node C{name} from 127.0.0.2, an address no peer has."""
        sock = socket.create_connection(
            cluster.address(name), timeout=PATIENCE, source_address=("127.0.0.2", 0)
        )
        self.addCleanup(sock.close)
        return sock

    def fill(self, cluster: LocalCluster, name: str, maxConnections: int) -> int:
        """
        Connect strangers to node C{name} until one is closed at once;
        return how many were taken (fewer than C{maxConnections}).
        """
        accepted = 0
        while True:
            sock = self.stranger(cluster, name)
            try:
                sock.sendall(b"status\n")
                answer = sock.recv(100)
            except ConnectionResetError:  # closed at once, before or after our line
                answer = b""
            if not answer:
                return accepted
            self.assertTrue(answer.startswith(b"OK {"), answer)
            accepted += 1
            self.assertLess(accepted, maxConnections, "more strangers than --max-connections")

    @showingNodeOutput
    def test_maxConnectionsSparesPeers(self) -> None:
        """
        With C{--max-connections 4} a node takes strangers (from 127.0.0.2)
        until four connections are open, its peers' included, and closes the
        next one at once; a follower (re)started while the node is full
        still links to it (peers are never refused) and catches up.
        """
        cluster = self.makeCluster(extraArgs=["--max-connections", "4"])
        cluster.startAll()
        leader = cluster.waitForLeader(PATIENCE)
        follower = self.followerNamingLeader(cluster, leader)
        cluster.kill(follower)
        self.assertGreaterEqual(self.fill(cluster, leader, 4), 1)
        cluster.start(follower)
        client = cluster.client()
        self.addCleanup(client.close)
        self.assertEqual(client.request("set after restart"), "OK")
        leaderIndex = cluster.status(leader, PATIENCE)["lastIndex"]

        def caughtUp() -> bool:
            status = cluster.statuses().get(follower)
            return status is not None and status["lastIndex"] >= leaderIndex

        self.waitFor(caughtUp, f"{follower} to catch up")

        def linkedToFullNode() -> bool:
            sinceRestart = cluster.nodes[follower].output().rsplit("--- localcluster:", 1)[-1]
            return f"connected to peer {leader}" in sinceRestart

        self.waitFor(linkedToFullNode, f"{follower}'s link to the full {leader}")

    @showingNodeOutput
    def test_clientThatDoesNotReadIsPaused(self) -> None:
        """
        A client that pipelines requests without reading a single answer
        is paused: the node stops reading from it, so the client's sending
        blocks long before 64 MiB, the node's memory stays small, and
        other clients are still served.
        """
        cluster, leader = self.startedCluster()
        sock = self.stranger(cluster, leader)
        sock.settimeout(2.0)
        chunk = b"status\n" * 10000
        sent = 0
        with self.assertRaises(TimeoutError):
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        self.assertLess(sent, 64 * 1024 * 1024)
        process = cluster.nodes[leader].process
        assert process is not None
        with open(f"/proc/{process.pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        self.assertLess(rss, 200 * 1024, f"node RSS {rss} kB")
        self.assertTrue(cluster.request(leader, "status", PATIENCE).startswith("OK {"))
