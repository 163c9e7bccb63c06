"""
Tests for the HTTP side (L{txraft.web}), its metrics (L{txraft.metrics}),
health rule (L{txraft.health}) and cluster survey (L{txraft.survey}).

The resources are rendered in memory for a node driven on a
L{MemoryReactorClock}, whose peers the tests play; the survey and the
HTTP service also run once over real loopback TCP.
"""

from __future__ import annotations

import json
import random
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import getChildForRequest
from twisted.web.server import NOT_DONE_YET, UnsupportedMethod
from twisted.web.test.requesthelper import DummyRequest

from tests.helpers import (
    ELECTION_TICKS,
    HEARTBEAT_TICKS,
    TICK_SECONDS,
    RecordingLogStore,
    advanceUntil,
    clientRequest,
    makeConfig,
)
from txraft.core import CANDIDATE, LEADER, PRECANDIDATE
from txraft.health import checkHealth, lag
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import AppendEntries, AppendEntriesResponse, RequestVoteResponse
from txraft.metrics import NodeMetrics
from txraft.node import RaftNode
from txraft.protocol import NodeFactory
from txraft.service import RaftService
from txraft.storage import MemoryLogStore, MemoryStateStore
from txraft.survey import ClusterSurvey, parseStatus, summarize
from txraft.web import HTTPService, makeSite


def fetch(url: str) -> tuple[int, bytes]:
    """GET C{url} over HTTP, blocking: its status code and body."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def get(site: object, path: bytes) -> DummyRequest:
    """GET C{path} from C{site}'s resources in memory; the request holds the answer."""
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.method = b"GET"
    resource = getChildForRequest(site.resource, request)  # type: ignore[attr-defined]
    body = resource.render(request)
    if body is not NOT_DONE_YET:
        request.write(body)
        request.finish()
    return request


def body(request: DummyRequest) -> bytes:
    """What was written in answer to C{request}."""
    return b"".join(request.written)


def contentType(request: DummyRequest) -> bytes:
    """The answer's content type."""
    return request.responseHeaders.getRawHeaders(b"content-type")[0]


class NodeSiteTests(SynchronousTestCase):
    """
    The site of node C{s1} of a three-node cluster, on a fake reactor; the
    tests play C{s2} and C{s3}.
    """

    def setUp(self) -> None:
        """Start C{s1} with its metrics, and build its site."""
        self.reactor = MemoryReactorClock()
        self.logStore = RecordingLogStore()
        self.metrics = NodeMetrics()
        self.service = RaftService(
            makeConfig(),
            "s1",
            LogManager(self.logStore, MemoryStateStore(), KeyValueStore()),
            self.reactor,
            tickSeconds=TICK_SECONDS,
            electionTicks=ELECTION_TICKS,
            heartbeatTicks=HEARTBEAT_TICKS,
            rng=random.Random(0),
            observer=self.metrics,
        )
        node = self.service.node
        self.metrics.watch(node.status, self.service.connectedPeers)
        addresses = {name: ("127.0.0.1", 10000 + i) for i, name in enumerate(["s1", "s2", "s3"])}
        survey = ClusterSurvey("s1", lambda: addresses, node.status, self.reactor, timeout=0.5)
        self.site = makeSite(node.status, self.metrics.registry, survey, maxLag=10)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def becomeLeader(self) -> int:
        """Win C{s1} the election with C{s2}'s votes and commit its no-op; return the term."""
        node = self.service.node
        advanceUntil(self.reactor, lambda: node.core.role == PRECANDIDATE)
        term = node.core.currentTerm + 1
        node.peerResponse("s2", RequestVoteResponse(term, True, preVote=True))
        self.assertEqual(node.core.role, CANDIDATE)
        node.peerResponse("s2", RequestVoteResponse(term, True))
        self.reactor.advance(0)  # the turn that makes its no-op durable
        node.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=1))
        self.assertEqual((node.core.role, node.core.commitIndex), (LEADER, 1))
        return term

    def health(self) -> tuple[int, dict[str, object]]:
        """The status code and JSON body of C{/health}."""
        request = get(self.site, b"/health")
        self.assertEqual(contentType(request), b"application/json")
        return request.responseCode or 200, json.loads(body(request))

    def metricValues(self) -> dict[str, float]:
        """C{/metrics} parsed by prometheus_client's own parser: each sample by name and labels."""
        request = get(self.site, b"/metrics")
        self.assertTrue(contentType(request).startswith(b"text/plain; version="))
        values = {}
        for family in text_string_to_metric_families(body(request).decode()):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return values

    def test_status(self) -> None:
        """C{/status} is the C{status} command's JSON."""
        request = get(self.site, b"/status")
        self.assertEqual(contentType(request), b"application/json")
        self.assertEqual(json.loads(body(request)), self.service.node.status())

    def test_healthWithoutLeader(self) -> None:
        """A node that knows no leader is unhealthy: C{503}, reason C{no leader}."""
        code, document = self.health()
        self.assertEqual(
            (code, document["health"], document["reason"]), (503, "unhealthy", "no leader")
        )

    def test_healthyLeaderThenMajorityLost(self) -> None:
        """
        A leader is healthy (C{200}); once it has heard from no majority for
        an election timeout it steps down (dissertation section 6.2), knows
        no leader, and turns C{503}.
        """
        self.becomeLeader()
        code, document = self.health()
        self.assertEqual((code, document["health"], document["leader"]), (200, "ok", "s1"))
        advanceUntil(self.reactor, lambda: self.service.node.core.role != LEADER)
        code, document = self.health()
        self.assertEqual((code, document["reason"]), (503, "no leader"))

    def test_healthDiskFailure(self) -> None:
        """A leader whose disk fails turns C{503} and says it is the disk."""
        self.becomeLeader()
        self.logStore.failWrites = True
        clientRequest(self.service.node, "c1", "set a 1")
        self.reactor.advance(0)
        code, document = self.health()
        self.assertEqual(code, 503)
        self.assertTrue(str(document["reason"]).startswith("disk failure: "), document)

    def test_healthLagging(self) -> None:
        """
        A follower that the leader says has committed more than the allowed
        lag beyond what it applied is C{503} C{lagging}.
        """
        self.service.node.peerRequest("s2", AppendEntries(1, 50, 1, (), 60))
        code, document = self.health()
        self.assertEqual(code, 503)
        self.assertTrue(str(document["reason"]).startswith("lagging: 60 committed"), document)

    def test_metrics(self) -> None:
        """
        C{/metrics} is Prometheus text that its own parser reads: term,
        leadership, commit and applied index, leader changes, requests by
        command and result, commit latency and fsync histograms, peers,
        snapshots.
        """
        term = self.becomeLeader()
        clientRequest(self.service.node, "c1", "set a 1")
        clientRequest(self.service.node, "c1", "frob")
        self.reactor.advance(0)
        self.service.node.peerResponse("s2", AppendEntriesResponse(term, True, matchIndex=2))
        values = self.metricValues()
        self.assertEqual(values["txraft_term"], term)
        self.assertEqual(values["txraft_is_leader"], 1)
        self.assertEqual((values["txraft_commit_index"], values["txraft_applied_index"]), (2, 2))
        self.assertEqual(values["txraft_leader_changes_seen_total"], 1)
        self.assertEqual(values["txraft_client_requests_total{command=set,result=ok}"], 1)
        self.assertEqual(values["txraft_client_requests_total{command=invalid,result=error}"], 1)
        self.assertEqual(values["txraft_commit_latency_seconds_count"], 1)
        self.assertGreaterEqual(values["txraft_fsync_seconds_count"], 3)
        self.assertEqual(values["txraft_peers_connected"], 0)
        self.assertEqual(values["txraft_snapshot_seconds_count"], 0)
        self.assertEqual(values["txraft_snapshots_installed_total"], 0)

    def test_page(self) -> None:
        """C{/} is the HTML page, and its script and style are served beside it."""
        page = get(self.site, b"/")
        self.assertEqual(contentType(page), b"text/html; charset=utf-8")
        self.assertIn(b'<script src="cluster.js">', body(page))
        self.assertEqual(contentType(get(self.site, b"/cluster.js"))[:15], b"text/javascript")
        self.assertEqual(contentType(get(self.site, b"/cluster.css"))[:8], b"text/css")
        self.assertEqual(get(self.site, b"/nothing").responseCode, 404)

    def test_readOnly(self) -> None:
        """Nothing over HTTP changes anything: a C{POST} is refused with C{405}."""
        for path in (b"/status", b"/health", b"/cluster", b"/", b"/metrics"):
            request = DummyRequest(path.lstrip(b"/").split(b"/"))
            request.method = b"POST"
            resource = getChildForRequest(self.site.resource, request)
            self.assertRaises(UnsupportedMethod, resource.render, request)
        self.assertEqual(self.service.node.logManager.stateMachine.data, {})


class SnapshotMetricsTests(SynchronousTestCase):
    """The snapshot metrics of a node that takes one."""

    def test_snapshotCountedAndTimed(self) -> None:
        """
        A one-node cluster that snapshots every 3 entries counts and times
        its snapshot in C{txraft_snapshot_seconds}.
        """
        clock = Clock()
        metrics = NodeMetrics()
        node = RaftNode(
            "s1",
            makeConfig(("s1",)),
            LogManager(MemoryLogStore(), MemoryStateStore(), KeyValueStore()),
            clock,
            lambda peer, message: None,
            electionTicks=(10, 20),
            heartbeatTicks=3,
            rng=random.Random(7),
            snapshotEntries=3,
            observer=metrics,
        )
        for _ in range(21):
            node.ticks(1)
        for i in range(3):
            clientRequest(node, "c1", f"set k{i} v")
        clock.advance(0)
        self.assertEqual(node.core.snapshotIndex, 4)
        self.assertEqual(metrics.registry.get_sample_value("txraft_snapshot_seconds_count"), 1)
        self.assertEqual(metrics.registry.get_sample_value("txraft_leader_changes_seen_total"), 1)


class ClusterErrorTests(SynchronousTestCase):
    """C{/cluster} answers even when summing up the cluster fails."""

    def test_internalError(self) -> None:
        """A status that cannot be read gives a logged C{500}, not a hung request."""

        def broken() -> dict[str, object]:
            raise RuntimeError("broken status")

        survey = ClusterSurvey(
            "s1", lambda: {"s1": ("127.0.0.1", 1)}, broken, MemoryReactorClock()
        )
        site = makeSite(broken, NodeMetrics().registry, survey, maxLag=10)
        request = get(site, b"/cluster")
        self.assertEqual((request.responseCode, request.finished), (500, 1))
        self.assertEqual(json.loads(body(request)), {"error": "internal error"})
        self.assertEqual(len(self.flushLoggedErrors(defer.FirstError)), 1)


class SurveyMembershipTests(SynchronousTestCase):
    """The survey asks the members of the day, not those of the config file."""

    def test_followsMembership(self) -> None:
        """A member added between two surveys is in the second one's picture."""
        members = {"s1": ("127.0.0.1", 1)}
        own = {"name": "s1", "role": "leader", "leader": "s1", "term": 1}
        reactor = MemoryReactorClock()
        survey = ClusterSurvey("s1", lambda: members, lambda: own, reactor, timeout=1.0)
        first = self.successResultOf(survey.survey())
        self.assertEqual([row["name"] for row in first["members"]], ["s1"])
        members["s4"] = ("127.0.0.1", 4)
        second = survey.survey()
        self.assertEqual(reactor.tcpClients[-1][:2], ("127.0.0.1", 4))
        reactor.advance(1.0)
        names = [row["name"] for row in self.successResultOf(second)["members"]]
        self.assertEqual(names, ["s1", "s4"])


class SummarizeTests(SynchronousTestCase):
    """L{summarize} makes one row per member from whatever answered."""

    ADDRESSES = {"s1": "h:1", "s2": "h:2", "s3": "h:3"}

    def status(self, name: str, role: str, applied: int, **more: object) -> dict[str, object]:
        """A status of C{name} in term 2 under leader C{s2}."""
        return {
            "name": name,
            "role": role,
            "term": 2,
            "leader": "s2",
            "commitIndex": applied,
            "lastApplied": applied,
            "leaderCommit": 10,
            **more,
        }

    def test_rows(self) -> None:
        """
        Each member gets a row in config order, the leader is named, lag is
        counted from the leader's commit index, and an unreachable member
        is a row too, unhealthy, with when it last answered.
        """
        statuses = {
            "s1": self.status("s1", "follower", 4),
            "s2": self.status("s2", "leader", 10),
            "s3": None,
        }
        picture = summarize(self.ADDRESSES, statuses, {"s1": 99.0, "s2": 99.0, "s3": 90.0}, 100.0)
        self.assertEqual((picture["leader"], picture["leaderCommit"]), ("s2", 10))
        rows = {row["name"]: row for row in picture["members"]}
        self.assertEqual(list(rows), ["s1", "s2", "s3"])
        self.assertEqual((rows["s1"]["lag"], rows["s1"]["healthy"]), (6, True))
        self.assertEqual((rows["s2"]["role"], rows["s2"]["lag"]), ("leader", 0))
        self.assertEqual(
            (rows["s3"]["reachable"], rows["s3"]["healthy"], rows["s3"]["reason"]),
            (False, False, "unreachable"),
        )
        self.assertEqual(rows["s3"]["lastContact"], 10.0)

    def test_leaderUnreachable(self) -> None:
        """With the leader silent, the leader is the one the others name."""
        statuses = {"s1": self.status("s1", "follower", 10), "s2": None, "s3": None}
        picture = summarize(self.ADDRESSES, statuses, {}, 0.0)
        self.assertEqual((picture["leader"], picture["leaderCommit"]), ("s2", 10))
        self.assertIsNone(picture["members"][1]["lastContact"])


class HealthRuleTests(SynchronousTestCase):
    """L{checkHealth}, the rule behind C{/health}."""

    def test_reasons(self) -> None:
        """Disk failure comes first, then no leader, then lag beyond the bound."""
        base = {"leader": "s1", "leaderCommit": 20, "lastApplied": 10}
        self.assertIsNone(checkHealth(base, maxLag=10))
        self.assertEqual(lag(base), 10)
        self.assertIn("lagging: 10", checkHealth(base, maxLag=9) or "")
        self.assertEqual(checkHealth({**base, "leader": None}), "no leader")
        self.assertEqual(
            checkHealth({**base, "leader": None, "diskError": "EIO"}), "disk failure: EIO"
        )

    def test_parseStatus(self) -> None:
        """A C{status} answer gives its JSON; anything else is a C{ValueError}."""
        self.assertEqual(parseStatus('OK {"name": "s1"}'), {"name": "s1"})
        for answer in ("OK [1]", "UNAVAILABLE no leader known", "OK {"):
            self.assertRaises(ValueError, parseStatus, answer)


class LoopbackTests(TestCase):
    """The HTTP service and the survey over real loopback TCP."""

    @defer.inlineCallbacks
    def test_surveyAndServe(self):  # type: ignore[no-untyped-def]
        """
        A node serving HTTP on a free port answers C{/cluster} with every
        member: the one that listens answers its status over the client
        protocol, the one whose port is closed is unreachable.
        """
        from tests.test_node import buildNode

        peer, _, _ = buildNode(("s1", "s2", "s3"))
        listening = reactor.listenTCP(0, NodeFactory(peer), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        closed = reactor.listenTCP(0, NodeFactory(peer), interface="127.0.0.1")
        closedPort = closed.getHost().port
        yield closed.stopListening()
        addresses = {
            "me": ("127.0.0.1", 1),
            "s1": ("127.0.0.1", listening.getHost().port),
            "s3": ("127.0.0.1", closedPort),
        }
        own = {"name": "me", "role": "follower", "leader": None, "term": 0}
        survey = ClusterSurvey("me", lambda: addresses, lambda: own, reactor, timeout=2.0)
        site = makeSite(lambda: own, NodeMetrics().registry, survey, maxLag=10)
        http = HTTPService(reactor, "127.0.0.1", 0, site)
        http.startService()
        self.addCleanup(http.stopService)
        url = f"http://127.0.0.1:{http.port.getHost().port}/cluster"
        # A plain HTTP client, in a thread, while the reactor serves the request.
        code, text = yield threads.deferToThread(fetch, url)
        picture = json.loads(text)
        self.assertEqual(code, 200)
        rows = {row["name"]: row for row in picture["members"]}
        self.assertEqual(picture["self"], "me")
        self.assertEqual((rows["s1"]["reachable"], rows["s1"]["role"]), (True, "follower"))
        self.assertEqual((rows["s3"]["reachable"], rows["s3"]["reason"]), (False, "unreachable"))
