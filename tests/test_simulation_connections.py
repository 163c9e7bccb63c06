"""
The simulation's keyed cluster (L{tests.simulation.connections}): peers
talk over connections that run the production handshake and per-line MACs
of L{txraft.auth}; what a TCP stream and an attacker can do to them breaks
connections, never the cluster, and nothing injected reaches a node.
The planted tests prove the checks notice an authentication that lets a
forgery through.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.simulation import FAULT_WEIGHTS, Simulation, SimulationError
from tests.simulation.connections import Connections
from tests.test_simulation import calmSimulation, followers
from txraft.auth import AuthError, Initiator, Responder, Session


def connectionsOf(sim: Simulation) -> Connections:
    """The simulated cluster's connections (it is keyed)."""
    connections = sim.network.connections
    assert connections is not None
    return connections


class ConnectionTests(SynchronousTestCase):
    """What a stream does under the network's faults, scripted on a calm cluster."""

    def test_eachLinkAuthenticatesOnce(self) -> None:
        """
        Without faults, the leader opens one connection to each follower,
        proves the key on it once, and every later line of the run travels
        on it; the nodes' own unauthenticated path is never used.
        """
        sim = calmSimulation()
        connections = connectionsOf(sim)
        sim.runUntil(lambda: sim.finished)
        sim.finish()
        self.assertEqual(sim.stats["handshakes"], sim.stats["connections"])
        leader = sim.leader()
        assert leader is not None
        for follower in followers(sim):
            connection = connections.current[(leader.name, follower.name)]
            self.assertTrue(connection.established())
            self.assertGreater(connection.streams[True].taken, 10)
        self.assertEqual(sim.network.past, {})

    def test_lostLineBreaksTheConnection(self) -> None:
        """
        A line lost in a stream breaks its connection: the next request
        opens a new one with a new handshake, and the cluster goes on.
        """
        sim = calmSimulation()
        before = sim.stats["handshakes"]
        sim.network.dropRate = 1.0
        sim.runUntil(lambda: sim.stats["messagesDropped"] > 0, limitMs=200)
        sim.network.dropRate = 0.0
        sim.runUntil(lambda: sim.stats["handshakes"] > before, limitMs=500)
        self.assertGreater(sim.stats["handshakes"], before)
        sim.runUntil(lambda: sim.finished)
        sim.finish()

    def test_crashClosesConnections(self) -> None:
        """
        A crashed follower's connections close at both ends; after its
        restart the leader reaches it over a new, authenticated one.
        """
        sim = calmSimulation()
        connections = connectionsOf(sim)
        follower = followers(sim)[0]
        leader = sim.leader()
        assert leader is not None
        old = connections.current[(leader.name, follower.name)]
        sim.crash(follower, "test")
        sim.runUntil(lambda: len(old.closed) == 2, limitMs=100)
        self.assertEqual(old.closed, {leader.name, follower.name})
        pair = (leader.name, follower.name)
        sim.runUntil(lambda: follower.up, limitMs=1000)

        def reconnected() -> bool:
            connection = connections.current.get(pair)
            return connection is not None and connection.established()

        sim.runUntil(reconnected, limitMs=1000)
        self.assertTrue(reconnected())
        self.assertIsNot(connections.current[pair], old)
        sim.runUntil(lambda: sim.finished)
        sim.finish()

    def test_linesOfAnOldConnectionArriveLate(self) -> None:
        """
        A follower that stalls longer than the request timeout makes the
        leader give up on its connection and open another; when it resumes
        it reads what was waiting on the old connection after the new one
        opened (stale to Raft, which must not mind), and everything holds.
        """
        sim = calmSimulation()
        connections = connectionsOf(sim)
        follower = followers(sim)[0]
        follower.pausedUntil = sim.now + 3 * connections.requestTimeoutMs
        sim.events.at(follower.pausedUntil, sim.resume, follower, follower.incarnation)
        sim.runUntil(lambda: not follower.paused(), limitMs=10_000)
        sim.runUntil(lambda: sim.stats["linesAfterReconnect"] > 0, limitMs=100)
        self.assertGreater(sim.stats["connectionsTimedOut"], 0)
        self.assertGreater(sim.stats["linesAfterReconnect"], 0)
        sim.runUntil(lambda: sim.finished)
        sim.finish()


class DeterminismTests(SynchronousTestCase):
    """A keyed run replays from its seed, down to the bytes of every handshake."""

    def test_sameNonces(self) -> None:
        """
        Two runs of one seed open their connections with the same nonces
        (drawn from the run's seeded generator, not from C{secrets}), so a
        failing seed replays exactly; another seed draws other nonces.
        """
        hello = Initiator.hello
        lines: list[str] = []

        def recorded(initiator: Initiator) -> str:
            lines.append(hello(initiator))
            return lines[-1]

        self.patch(Initiator, "hello", recorded)
        runs = []
        for seed in (5, 5, 6):
            del lines[:]
            Simulation(seed).run()
            runs.append(list(lines))
        self.assertTrue(runs[0])
        self.assertEqual(runs[0], runs[1])
        self.assertNotEqual(runs[0], runs[2])


class AttackTests(SynchronousTestCase):
    """An attacker's copies and an impostor's lines are refused, and counted."""

    def test_injectedCopiesRefused(self) -> None:
        """
        Sealed lines the attacker recorded, injected into live connections
        or opening new ones, are all refused (each drops its connection);
        none reaches a node, and the cluster converges.
        """
        sim = calmSimulation()
        for _ in range(5):
            sim.network.replay(6)
            sim.runUntil(lambda: False, limitMs=100)
        self.assertEqual(sim.stats["messagesReplayed"], 30)
        self.assertGreater(sim.stats["injectionsRejected"], 0)
        sim.runUntil(lambda: sim.finished)
        sim.finish()

    def test_impostorNeverGetsIn(self) -> None:
        """
        An impostor with another key, claiming a member's name, is refused
        whatever it answers the challenge with (a proof made with its own
        key over the real nonces, a made-up MAC, or the forged
        AppendEntries of issue 9), and no node takes its term.
        """
        sim = calmSimulation()
        connections = connectionsOf(sim)
        for _ in range(12):
            connections.impostor()
            sim.runUntil(lambda: False, limitMs=50)
        self.assertEqual(sim.stats["impostors"], 12)
        self.assertEqual(sim.stats["impostorsRejected"], 12)
        self.assertTrue(all(node.core.currentTerm < 10**6 for node in sim.nodes.values()))
        sim.runUntil(lambda: sim.finished)
        sim.finish()

    def test_unkeyedRunsHaveNoConnections(self) -> None:
        """
        Without a key, messages travel alone as before (duplicated and
        replayed as they are), and no impostor is scheduled.
        """
        sim = Simulation(3, authenticate=False)
        stats = sim.run()
        self.assertIsNone(sim.network.connections)
        self.assertEqual(stats["connections"] + stats["impostors"], 0)
        self.assertTrue(sim.network.past)


class PlantedAuthenticationTests(SynchronousTestCase):
    """The checks catch an authentication that lets a forgery through."""

    def assertCaught(self, seeds: range, words: str) -> None:
        """Some seed of C{seeds} fails about C{words}; no seed fails about anything else."""
        caught = []
        for seed in seeds:
            try:
                Simulation(seed, faultWeights=dict(FAULT_WEIGHTS)).run()
            except SimulationError as failure:
                self.assertIn(words, failure.problem)
                caught.append(seed)
        self.assertTrue(caught, f"no seed of {seeds} caught the planted bug")

    def test_macNotChecked(self) -> None:
        """
        Sessions that open any line without checking its MAC let injected
        copies through; the run fails as soon as one opens.
        """
        self.patch(Session, "open", lambda self, sealed: sealed.partition(b" ")[2])
        self.assertCaught(range(5), "Authentication: a line injected")

    def test_proofNotChecked(self) -> None:
        """
        A responder that takes any proof lets an impostor with another key
        in (or an injected copy of a line of the handshake); the run fails
        as soon as it does.
        """
        verify = Responder.verify

        def trusting(responder: Responder, line: str) -> Session:
            try:
                return verify(responder, line)
            except AuthError:
                return Session(line.partition("@")[0], b"s" * 32, b"r" * 32)

        self.patch(Responder, "verify", trusting)
        self.assertCaught(range(5), "Authentication: ")
