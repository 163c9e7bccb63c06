"""
A node's Prometheus metrics: an L{INodeObserver} that counts and times what
the driver does, and gauges read from the node's status when scraped.

Each node has its own C{CollectorRegistry} rather than the process-wide
default, so tests (and any process that runs several nodes) keep their
numbers apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from zope.interface import implementer

from txraft import answers
from txraft.core import LEADER
from txraft.interfaces import INodeObserver

#: Commit latency and snapshot buckets, in seconds: from a fast local
#: commit to the commit timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: Fsync buckets, in seconds: an SSD's fraction of a millisecond to a
#: struggling disk's seconds.
FSYNC_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

#: What the gauges read: the node's status, and how many peers are connected.
StatusSource = Callable[[], Mapping[str, object]]


@implementer(INodeObserver)
class NodeMetrics:
    """
    The metrics of one node, registered in L{registry}.  Give it to the
    node as its observer, then L{watch} the node's status.

    @ivar registry: the registry that C{/metrics} exposes.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Create every metric in C{registry} (default: a new one)."""
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self._term = Gauge("txraft_term", "The current Raft term.", registry=r)
        self._isLeader = Gauge("txraft_is_leader", "1 if this node is the leader.", registry=r)
        self._commitIndex = Gauge(
            "txraft_commit_index", "The highest log index known committed.", registry=r
        )
        self._appliedIndex = Gauge(
            "txraft_applied_index", "The highest log index applied.", registry=r
        )
        self._peersConnected = Gauge(
            "txraft_peers_connected", "Peers this node has a connection to.", registry=r
        )
        self._leaderChanges = Counter(
            "txraft_leader_changes_seen", "Times this node saw a new leader or term.", registry=r
        )
        self._requests = Counter(
            "txraft_client_requests",
            "Client requests answered, by command word and answer kind.",
            ["command", "result"],
            registry=r,
        )
        #: The counter of each (command, result) seen, found once.
        self._requestCounters: dict[tuple[str, str], Any] = {}
        self._commitLatency = Histogram(
            "txraft_commit_latency_seconds",
            "From a leader proposing a client command to its applying it.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._fsync = Histogram(
            "txraft_fsync_seconds",
            "Time to make a batch of Raft state durable (write and fsync).",
            buckets=FSYNC_BUCKETS,
            registry=r,
        )
        self._snapshots = Histogram(
            "txraft_snapshot_seconds",
            "Time to take, write and put in place a snapshot; its count is the snapshots taken.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._snapshotsInstalled = Counter(
            "txraft_snapshots_installed", "Snapshots received from a leader.", registry=r
        )
        self._diskFailures = Counter(
            "txraft_disk_failures", "Writes that failed, silencing the node.", registry=r
        )

    def watch(self, status: StatusSource, peersConnected: Callable[[], int]) -> None:
        """Read the gauges from C{status()} and C{peersConnected()} at each scrape."""

        def field(name: str) -> Callable[[], float]:
            return lambda: float(status().get(name) or 0)  # type: ignore[arg-type]

        self._term.set_function(field("term"))
        self._isLeader.set_function(lambda: float(status().get("role") == LEADER))
        self._commitIndex.set_function(field("commitIndex"))
        self._appliedIndex.set_function(field("lastApplied"))
        self._peersConnected.set_function(lambda: float(peersConnected()))

    def coreStarted(self, core: object) -> None:
        """Nothing to count: the gauges read the running core."""

    def persisted(self, ready: object) -> None:
        """Nothing to count: L{synced} times the writes."""

    def snapshotInstalled(self, snapshot: object) -> None:
        """Count a snapshot received from the leader."""
        self._snapshotsInstalled.inc()

    def applied(self, results: object) -> None:
        """Nothing to count: the applied index is a gauge."""

    def snapshotSaved(self, snapshot: object) -> None:
        """Nothing to count: L{snapshotTaken} times it."""

    def diskFailed(self, error: str) -> None:
        """Count a failed write."""
        self._diskFailures.inc()

    def leaderChanged(self, leader: str | None, term: int) -> None:
        """Count a new leader (not the loss of one)."""
        if leader is not None:
            self._leaderChanges.inc()

    def synced(self, seconds: float) -> None:
        """Time a write and fsync."""
        self._fsync.observe(seconds)

    def committed(self, seconds: float) -> None:
        """Time a command from proposal to commit and apply."""
        self._commitLatency.observe(seconds)

    def answered(self, command: str, answer: str, seconds: float) -> None:
        """Count an answered request by command and answer kind (L{answers.kind})."""
        kind = answers.kind(answer)
        counter = self._requestCounters.get((command, kind))
        if counter is None:
            # Looking a child up by its labels costs more than counting.
            counter = self._requests.labels(command=command, result=kind)
            self._requestCounters[command, kind] = counter
        counter.inc()

    def snapshotTaken(self, seconds: float) -> None:
        """Time a snapshot."""
        self._snapshots.observe(seconds)
