"""
Tests for L{txraft.admin}: operators' commands carried out by real
L{RaftNode}s (the production driver) joined by an in-memory network on one
L{Clock}.  Reference: dissertation chapter 4 (membership changes) and
section 3.10 (leadership transfer).
"""

from __future__ import annotations

import json
import random

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import clientRequest, makeConfig
from txraft import answers
from txraft.admin import CATCH_UP_SECONDS, parseAdmin
from txraft.core import LEADER
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.membership import Membership
from txraft.messages import REQUESTS, Message
from txraft.node import RaftNode
from txraft.storage import MemoryLogStore, MemoryStateStore

TICK = 0.01
NAMES = ("s1", "s2", "s3", "s4", "s5")
#: Every node's address: the first three start the cluster, the others join.
CONFIG = makeConfig(NAMES)


class DriverCluster:
    """
    RaftNodes on one clock; each message arrives one millisecond after it
    is sent, and a request's reply one millisecond after that.
    """

    def __init__(self, founders: tuple[str, ...] = ("s1", "s2", "s3")) -> None:
        self.clock = Clock()
        self.nodes: dict[str, RaftNode] = {}
        self.down: set[str] = set()
        self.memberships: dict[str, list[Membership]] = {}
        self.founders = founders
        for name in NAMES:
            self.start(name)

    def start(self, name: str) -> RaftNode:
        """Start C{name}: a founder with the founders' config, any other joining."""
        founder = name in self.founders
        self.memberships[name] = []
        node = RaftNode(
            name,
            makeConfig(self.founders) if founder else CONFIG,
            LogManager(MemoryLogStore(), MemoryStateStore(), KeyValueStore()),
            self.clock,
            lambda peer, message: self._send(name, peer, message),
            electionTicks=(10, 20),
            heartbeatTicks=3,
            rng=random.Random(name),
            join=not founder,
            onMembership=self.memberships[name].append,
        )
        self.nodes[name] = node
        return node

    def _send(self, source: str, destination: str, message: Message) -> None:
        assert isinstance(message, REQUESTS)
        self.clock.callLater(0.001, self._deliver, source, destination, message)

    def _deliver(self, source: str, destination: str, message: Message) -> None:
        if {source, destination} & self.down:
            return
        reply = self.nodes[destination].peerRequest(source, message)
        if reply is not None:
            self.clock.callLater(0.001, self._reply, destination, source, reply)

    def _reply(self, source: str, destination: str, message: Message) -> None:
        if not {source, destination} & self.down:
            self.nodes[destination].peerResponse(source, message)

    def run(self, seconds: float) -> None:
        """Let C{seconds} pass, tick by tick."""
        for _ in range(round(seconds / TICK)):
            for node in self.nodes.values():
                node.ticks(1)
            self.clock.advance(TICK)

    def leader(self) -> str | None:
        """The node that leads, if one does."""
        leaders = [n for n, node in self.nodes.items() if node.core.role == LEADER]
        return max(leaders, key=lambda n: self.nodes[n].core.currentTerm) if leaders else None

    def elected(self) -> RaftNode:
        """Run until a leader has committed an entry of its term; return it."""
        for _ in range(500):
            self.run(TICK)
            name = self.leader()
            if name is not None:
                core = self.nodes[name].core
                if core.log.term(core.commitIndex) == core.currentTerm:
                    return self.nodes[name]
        raise AssertionError("no leader")

    def ask(self, node: RaftNode, text: str, seconds: float = 5.0) -> str:
        """Send C{text} to C{node}; run until it is answered (at most C{seconds})."""
        answer = clientRequest(node, None, text)
        if isinstance(answer, str):
            return answer
        results: list[str] = []
        answer.addCallback(results.append)
        for _ in range(round(seconds / TICK)):
            if results:
                return results[0]
            self.run(TICK)
        raise AssertionError(f"{text!r} not answered within {seconds} s")


def members(node: RaftNode) -> dict[str, bool]:
    """Each member's name and whether it votes, as the node sees them."""
    return {m.name: m.voter for m in node.core.membership.members}


class ParseTests(SynchronousTestCase):
    """The operators' command words and their arguments."""

    def test_words(self) -> None:
        """Each word takes its arguments; anything else is no operator's command."""
        self.assertEqual(parseAdmin("add s4 h 1").arguments, ("s4", "h", "1"))
        self.assertEqual(parseAdmin("transfer-leader").arguments, ())
        self.assertEqual(parseAdmin("  remove   s2 ").arguments, ("s2",))
        for text in ("get a", "set add 1", "", "status"):
            self.assertIsNone(parseAdmin(text))


class TickCountTests(SynchronousTestCase):
    """The driver counts ticks: a new server's catch-up rounds are measured in them."""

    def test_counted(self) -> None:
        """Every tick the node is told of counts, however they come."""
        node = DriverCluster().nodes["s1"]
        node.ticks(3)
        node.ticks(2)
        self.assertEqual(node.tickCount, 5)


class MembersTests(SynchronousTestCase):
    """C{members}: the leader's newest membership, as JSON."""

    def test_leaderAnswersFollowerRedirects(self) -> None:
        """The leader lists every member; a follower names the leader."""
        cluster = DriverCluster()
        leader = cluster.elected()
        answer = cluster.ask(leader, "members")
        self.assertEqual(
            json.loads(answers.okValue(answer)),
            [
                {"name": name, "host": "127.0.0.1", "port": 10000 + i, "voter": True}
                for i, name in enumerate(("s1", "s2", "s3"))
            ],
        )
        follower = next(n for n in ("s1", "s2", "s3") if cluster.nodes[n] is not leader)
        self.assertTrue(cluster.ask(cluster.nodes[follower], "members").startswith("REDIRECT "))

    def test_numberedRefused(self) -> None:
        """An operator's command is never numbered: sessions are for data."""
        cluster = DriverCluster()
        leader = cluster.elected()
        self.assertEqual(
            clientRequest(leader, "c1", "members", seq=1), "ERROR operators' commands take no SEQ"
        )


class AddTests(SynchronousTestCase):
    """C{add} and C{add-learner}.  Reference: dissertation sections 4.2.1 and 4.2."""

    def test_addCatchesUpThenPromotes(self) -> None:
        """
        C{add} makes the new node a learner, catches it up, makes it a
        voter, and answers C{OK} once that is committed; every node then
        runs with it, and the service's listener heard of each step.
        """
        cluster = DriverCluster()
        leader = cluster.elected()
        for i in range(30):
            cluster.ask(leader, f"set k{i} {i}")
        self.assertEqual(cluster.ask(leader, "add s4 127.0.0.1 10003"), answers.OK)
        cluster.run(0.2)
        for name in ("s1", "s2", "s3", "s4"):
            self.assertEqual(members(cluster.nodes[name])["s4"], True, name)
        self.assertEqual(cluster.nodes["s4"].logManager.read("get k29"), "OK 29")
        heard = cluster.memberships[leader.name]
        self.assertEqual([m.isVoter("s4") for m in heard], [False, True])
        self.assertEqual(heard[-1], leader.core.membership)

    def test_addLearnerNeverPromoted(self) -> None:
        """C{add-learner} answers once the learner is committed, and it stays one."""
        cluster = DriverCluster()
        leader = cluster.elected()
        self.assertEqual(cluster.ask(leader, "add-learner s4 127.0.0.1 10003"), answers.OK)
        cluster.run(2)
        self.assertEqual(members(leader), {"s1": True, "s2": True, "s3": True, "s4": False})
        self.assertEqual(leader.core.quorum(), 2)

    def test_unreachableStaysLearner(self) -> None:
        """
        A node that never catches up stays a learner, and the answer says
        so after the bound; once it is up, C{add} again promotes it.
        """
        cluster = DriverCluster()
        cluster.down.add("s4")
        leader = cluster.elected()
        answer = cluster.ask(leader, "add s4 127.0.0.1 10003", seconds=CATCH_UP_SECONDS + 1)
        self.assertEqual(answer, "UNAVAILABLE s4 has not caught up; it stays a learner")
        self.assertEqual(members(leader)["s4"], False)
        cluster.down.clear()
        leader = cluster.elected()
        self.assertEqual(cluster.ask(leader, "add s4 127.0.0.1 10003"), answers.OK)
        self.assertEqual(members(leader)["s4"], True)

    def test_oneCommandAtATime(self) -> None:
        """While one change is under way, another is refused and changes nothing."""
        cluster = DriverCluster()
        leader = cluster.elected()
        first = clientRequest(leader, None, "add-learner s4 127.0.0.1 10003")
        self.assertIsInstance(first, defer.Deferred)
        lastIndex = leader.core.log.lastIndex
        for text in ("remove s3", "add s5 127.0.0.1 10004", "transfer-leader s2"):
            self.assertEqual(cluster.ask(leader, text), "ERROR a membership change is in progress")
        self.assertEqual(leader.core.log.lastIndex, lastIndex)
        cluster.run(0.5)
        self.assertEqual(self.successResultOf(first), answers.OK)


class RemoveTests(SynchronousTestCase):
    """C{remove}.  Reference: dissertation section 4.2.2."""

    def test_removeFollower(self) -> None:
        """The removed node leaves every membership and never campaigns."""
        cluster = DriverCluster()
        leader = cluster.elected()
        removed = next(n for n in ("s1", "s2", "s3") if cluster.nodes[n] is not leader)
        self.assertEqual(cluster.ask(leader, f"remove {removed}"), answers.OK)
        cluster.run(0.5)
        self.assertNotIn(removed, members(leader))
        cluster.down.add(leader.name)
        term = cluster.nodes[removed].core.currentTerm
        cluster.run(5)
        self.assertEqual(cluster.nodes[removed].core.currentTerm, term)

    def test_removeLeader(self) -> None:
        """
        A leader that removes itself answers C{OK}, steps down, and another
        voter leads within an election timeout's lower bound.
        """
        cluster = DriverCluster()
        leader = cluster.elected()
        self.assertEqual(cluster.ask(leader, f"remove {leader.name}"), answers.OK)
        self.assertNotEqual(leader.core.role, LEADER)
        ticks = 0
        while cluster.leader() in (None, leader.name):
            cluster.run(TICK)
            ticks += 1
        self.assertLess(ticks, 10)


class TransferTests(SynchronousTestCase):
    """C{transfer-leader} and a leader's hand-over before it stops.  Reference: section 3.10."""

    def test_transferToNamed(self) -> None:
        """C{OK} once the named voter leads; commands meanwhile are refused, not lost."""
        cluster = DriverCluster()
        leader = cluster.elected()
        target = next(n for n in ("s1", "s2", "s3") if cluster.nodes[n] is not leader)
        pending = clientRequest(leader, None, f"transfer-leader {target}")
        self.assertEqual(cluster.ask(leader, "set a 1"), answers.TRANSFERRING)
        cluster.run(0.2)
        self.assertEqual(self.successResultOf(pending), answers.OK)
        self.assertEqual(cluster.leader(), target)

    def test_transferToMostUpToDate(self) -> None:
        """Without a name, the most up-to-date voter takes over."""
        cluster = DriverCluster()
        leader = cluster.elected()
        behind, ahead = [n for n in ("s1", "s2", "s3") if cluster.nodes[n] is not leader]
        cluster.down.add(behind)
        cluster.ask(leader, "set a 1")
        cluster.down.clear()
        self.assertEqual(cluster.ask(leader, "transfer-leader"), answers.OK)
        self.assertEqual(cluster.leader(), ahead)

    def test_handOver(self) -> None:
        """
        A leader about to stop hands over and its Deferred fires once the
        new leader leads; a follower's fires at once.
        """
        cluster = DriverCluster()
        leader = cluster.elected()
        follower = next(n for n in ("s1", "s2", "s3") if cluster.nodes[n] is not leader)
        self.successResultOf(cluster.nodes[follower].handOver())
        handedOver = leader.handOver()
        self.assertNoResult(handedOver)
        cluster.run(0.2)
        self.successResultOf(handedOver)
        self.assertNotIn(cluster.leader(), (None, leader.name))


class RefusalTests(SynchronousTestCase):
    """Bad operators' commands get C{ERROR ...} and change nothing."""

    def test_errors(self) -> None:
        """Each mistake is named; the log does not grow."""
        cluster = DriverCluster()
        leader = cluster.elected()
        lastIndex = leader.core.log.lastIndex
        for text, error in [
            ("add s2 127.0.0.1 10009", "ERROR s2 is already a member"),
            ("add s9 127.0.0.1 10001", "ERROR 127.0.0.1 10001 is already the address of s2"),
            ("add s9 127.0.0.1 99999", "ERROR port '99999' is not an integer in 1..65535"),
            ("add s9 127.0.0.1", "ERROR add takes NAME HOST PORT"),
            ("add s! 127.0.0.1 10009", "ERROR node name 's!' must match [A-Za-z0-9_-]+"),
            ("remove s9", "ERROR s9 is not a member"),
            ("remove", "ERROR remove takes NAME"),
            ("transfer-leader s9", "ERROR s9 is not another voter"),
            (f"transfer-leader {leader.name}", f"ERROR {leader.name} is not another voter"),
            ("members all", "ERROR members takes no arguments"),
        ]:
            self.assertEqual(cluster.ask(leader, text), error)
        self.assertEqual(leader.core.log.lastIndex, lastIndex)

    def test_lastVoter(self) -> None:
        """The last voter cannot be removed."""
        cluster = DriverCluster(founders=("s1",))
        leader = cluster.elected()
        self.assertEqual(cluster.ask(leader, "remove s1"), "ERROR s1 is the last voter")


class DriverMembershipTests(SynchronousTestCase):
    """What the driver takes from the membership: redirects, status, refusals."""

    def test_commandBatchedBeforeTransferRefused(self) -> None:
        """
        A command that arrived before a transfer began, but was not yet
        proposed, is refused as the transfer's are: not proposed, and safe
        to send again.
        """
        cluster = DriverCluster()
        leader = cluster.elected()
        batched = clientRequest(leader, None, "set a 1")
        target = next(n for n in ("s1", "s2", "s3") if cluster.nodes[n] is not leader)
        leader.transferLeadership(target)
        lastIndex = leader.core.log.lastIndex
        cluster.clock.advance(0)
        self.assertEqual(self.successResultOf(batched), answers.TRANSFERRING)
        self.assertEqual(leader.core.log.lastIndex, lastIndex)

    def test_readBatchedWithRefusedCommandsReadsNow(self) -> None:
        """
        A read that came after commands the transfer refused waits for no
        entry of theirs: none was proposed.  It is answered once a majority
        confirms the leader, with the state as it was.
        """
        cluster = DriverCluster()
        leader = cluster.elected()
        self.assertEqual(cluster.ask(leader, "set a 1"), answers.OK)
        target = next(n for n in ("s1", "s2", "s3") if cluster.nodes[n] is not leader)
        cluster.down.add(target)
        refused = clientRequest(leader, None, "set a 2")
        read = clientRequest(leader, None, "get a")
        leader.transferLeadership(target)
        cluster.run(0.05)
        self.assertEqual(self.successResultOf(refused), answers.TRANSFERRING)
        self.assertEqual(leader.core.leadTransferee, target)
        self.assertEqual(self.successResultOf(read), "OK 1")

    def test_redirectToAMemberNotInTheConfig(self) -> None:
        """
        A follower redirects to its leader's address from the membership,
        also for a leader its config file does not name.
        """
        cluster = DriverCluster()
        leader = cluster.elected()
        self.assertEqual(cluster.ask(leader, "add s4 127.0.0.1 10003"), answers.OK)
        self.assertEqual(cluster.ask(leader, "transfer-leader s4"), answers.OK)
        follower = cluster.nodes["s2" if leader.name != "s2" else "s3"]
        cluster.run(0.1)
        self.assertNotIn("s4", follower.config.names())
        self.assertEqual(
            cluster.ask(follower, "get a"), answers.redirect("s4", "127.0.0.1", 10003)
        )

    def test_unknownLeaderIsNoLeader(self) -> None:
        """
        A joining node that hears from a leader before it holds the entry
        that names it cannot send clients there (its config file names only
        itself): no leader known.  Once it holds it, it redirects.
        """
        cluster = DriverCluster()
        joining = cluster.nodes["s4"]
        joining.config = makeConfig(("s4",), (10003,))
        leader = cluster.elected()
        self.assertEqual(cluster.ask(leader, "add-learner s4 127.0.0.1 10003"), answers.OK)
        self.assertEqual(joining.core.leaderId, leader.name)
        self.assertEqual(joining.core.membership, Membership())
        self.assertEqual(cluster.ask(joining, "get a"), answers.NO_LEADER)
        cluster.run(0.1)
        address = leader.core.membership.member(leader.name)
        self.assertEqual(
            cluster.ask(joining, "get a"),
            answers.redirect(leader.name, address.host, address.port),
        )

    def test_redirectFromTheConfigBeforeTheMembership(self) -> None:
        """
        A joining node that hears from a leader before it holds the entry
        naming it redirects to the leader's line of its own config file.
        """
        cluster = DriverCluster()
        joining = cluster.nodes["s4"]
        leader = cluster.elected()
        self.assertEqual(cluster.ask(leader, "add-learner s4 127.0.0.1 10003"), answers.OK)
        self.assertEqual(joining.core.membership, Membership())
        address = CONFIG.node(leader.name)
        self.assertEqual(
            cluster.ask(joining, "get a"),
            answers.redirect(leader.name, address.host, address.port),
        )

    def test_statusNamesLearners(self) -> None:
        """C{status} lists every member's address and which of them are learners."""
        cluster = DriverCluster()
        leader = cluster.elected()
        cluster.ask(leader, "add-learner s4 127.0.0.1 10003")
        status = leader.status()
        self.assertEqual(status["learners"], ["s4"])
        self.assertEqual(status["members"]["s4"], "127.0.0.1:10003")
