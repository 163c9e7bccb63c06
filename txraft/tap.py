"""
The twistd plugin's options and service tree: C{twistd -n txraft --name s1}.

Everything that can be wrong with a node's setup (config, name, port, data
dir, stored state) is checked before the reactor starts, so that twistd
exits non-zero with one line saying what is wrong and where.
"""

from __future__ import annotations

import ipaddress
import os
import random
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from txraft import cli
from txraft.auth import KeyFileError, readKeyFile
from txraft.config import ClusterConfig, ConfigError, loadConfig
from txraft.core import MAX_INFLIGHT_APPENDS, TRAILING_ENTRIES
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import NAME_PATTERN
from txraft.node import MAX_BACKLOG
from txraft.service import SNAPSHOT_ENTRIES, SNAPSHOT_GROWTH, RaftService
from txraft.snapshots import FileSnapshotStore
from txraft.snapshotting import inBackground, inChild
from txraft.storage import (
    FileLogStore,
    FileStateStore,
    StorageError,
    fsyncDirectory,
    lockDataDirectory,
)

if TYPE_CHECKING:
    from txraft.metrics import NodeMetrics
    from txraft.tls import TLSConfig

#: Logical time advances in ticks of this many milliseconds.
TICK_MS = 10

#: The default of --max-connections: each connection may hold a line of up
#: to 4 MiB and its pending answers, so this bounds a node's memory.
MAX_CONNECTIONS = 256

log = Logger()


class StartupError(SystemExit):
    """
    This node cannot start, for a reason outside the command line's syntax.
    Being a C{SystemExit}, it makes twistd print just this one line and exit
    with status 1, instead of the usage text a C{UsageError} brings.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"txraft: {message}")


def parseElectionTimeout(text: str) -> tuple[int, int]:
    """Parse C{MIN_MS:MAX_MS}."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError
        bounds = int(low), int(high)
    except ValueError:
        raise usage.UsageError(
            f"--election-timeout must be MIN_MS:MAX_MS, e.g. 400:800, not {text!r}"
        ) from None
    return bounds


class Options(cli.Options):
    """Command-line options of one txraft node."""

    program = "txraft (twistd plugin)"
    optFlags = [
        [
            "insecure",
            None,
            "Run without --cluster-key even though the cluster has addresses beyond "
            "loopback: anyone who can reach a node's port can then rewrite its data.",
        ],
        [
            "join",
            None,
            "Join a running cluster: with an empty data dir, wait for the leader to add "
            "this node (the operator runs 'add NAME HOST PORT' on the cluster) instead of "
            "starting a cluster of the config's nodes. Only this node's own line of "
            "--config is read then.",
        ],
    ]
    optParameters = [
        [
            "cluster-key",
            None,
            None,
            "File holding the cluster's secret key (make one with txraft-keygen); "
            "peers prove they hold it.",
        ],
        ["name", None, None, "This node's name in the cluster config (required)."],
        ["port", None, None, "Port to listen on; defaults to, and must match, the config's."],
        [
            "config",
            None,
            "etc/cluster.conf",
            "Cluster config: lines NAME HOST PORT. This node listens at its own line; the "
            "others are the bootstrap membership, used until the log holds one.",
        ],
        ["data-dir", None, "logs", "Directory for NAME.log and the node's other files."],
        [
            "heartbeat",
            None,
            100,
            "Leader heartbeat interval in milliseconds.",
            cli.wholeNumber("heartbeat"),
        ],
        [
            "snapshot-entries",
            None,
            SNAPSHOT_ENTRIES,
            "Snapshot the state machine and compact the log every this many entries at least.",
            cli.wholeNumber("snapshot-entries"),
        ],
        [
            "snapshot-growth",
            None,
            SNAPSHOT_GROWTH,
            "... and once the commands since the last snapshot add up to this share of "
            "its size (0: entries alone): a large map is not written again every few "
            "entries.",
            cli.number("snapshot-growth"),
        ],
        [
            "trailing-entries",
            None,
            TRAILING_ENTRIES,
            "Keep this many of the entries a snapshot covers when compacting, so a "
            "follower a little behind is sent entries, not the snapshot.",
            cli.wholeNumber("trailing-entries"),
        ],
        [
            "snapshot-writer",
            None,
            "fork" if hasattr(os, "fork") else "thread",
            "Where snapshots are serialized and written: fork (a child process; the "
            "node's event loop only pays for the fork) or thread (a copy of the map on "
            "the event loop, then a thread, which holds the GIL while it serializes).",
        ],
        [
            "election-timeout",
            None,
            "400:800",
            "Election timeout range MIN_MS:MAX_MS, drawn at random each time.",
        ],
        [
            "tls-cert",
            None,
            None,
            "Speak TLS on the port and to peers with this certificate (PEM).",
        ],
        ["tls-key", None, None, "The private key (PEM) of --tls-cert."],
        [
            "tls-ca",
            None,
            None,
            "CA certificate (PEM) that signs every peer's --tls-cert; peers must present one.",
        ],
        [
            "max-connections",
            None,
            MAX_CONNECTIONS,
            "Refuse connections beyond this many at once (peers are never refused).",
            cli.wholeNumber("max-connections"),
        ],
        [
            "max-backlog",
            None,
            MAX_BACKLOG,
            "Stop reading clients while this many of their requests are unanswered, "
            "until half are.",
            cli.wholeNumber("max-backlog"),
        ],
        [
            "max-inflight",
            None,
            MAX_INFLIGHT_APPENDS,
            "The most AppendEntries with entries a leader has unanswered per follower.",
            cli.wholeNumber("max-inflight"),
        ],
        [
            "http",
            None,
            None,
            "Serve /metrics, /health, /status and the cluster's web view on this port, "
            "on the node's host (off unless given).",
            cli.port("http"),
        ],
    ]

    def postOptions(self) -> None:
        """
        Check that this node can start: L{usage.UsageError} for malformed
        options, L{StartupError} for a config, name, port or data dir that
        cannot work.
        """
        name = self["name"]
        if not name:
            raise usage.UsageError("--name is required")
        if not NAME_PATTERN.fullmatch(name):
            raise usage.UsageError(f"--name {name!r} must be letters, digits, '_' or '-'")
        try:
            self.config = loadConfig(self["config"])
            self.address = self.config.node(name)
        except ConfigError as e:
            raise StartupError(str(e)) from None
        if self["port"] is not None and self["port"] != str(self.address.port):
            raise StartupError(
                f"--port {self['port']} differs from node {name}'s port "
                f"{self.address.port} in {self['config']}"
            )
        low, high = self["election-timeout"] = parseElectionTimeout(self["election-timeout"])
        if not 0 < self["heartbeat"] < low < high:
            raise usage.UsageError(
                "need 0 < --heartbeat < election timeout MIN < MAX, got "
                f"{self['heartbeat']} and {low}:{high}"
            )
        if self["snapshot-entries"] < 1:
            raise usage.UsageError("--snapshot-entries must be at least 1")
        if self["snapshot-growth"] < 0:
            raise usage.UsageError("--snapshot-growth must be at least 0")
        if self["trailing-entries"] < 0:
            raise usage.UsageError("--trailing-entries must be at least 0")
        for option in ("max-connections", "max-backlog", "max-inflight"):
            if self[option] < 1:
                raise usage.UsageError(f"--{option} must be at least 1")
        if self["snapshot-writer"] not in ("fork", "thread"):
            raise usage.UsageError(
                f"--snapshot-writer must be fork or thread, not {self['snapshot-writer']!r}"
            )
        self.clusterKey = self._loadClusterKey()
        self.tls = self._loadTLS()
        self._checkDataDirectory(self["data-dir"])

    def _loadClusterKey(self) -> bytes | None:
        """
        Read the cluster key, or, without one, refuse a cluster that reaches
        beyond this machine unless --insecure says so (protected mode).
        """
        if self["cluster-key"] is not None:
            try:
                return readKeyFile(self["cluster-key"])
            except KeyFileError as e:
                raise StartupError(str(e)) from None
        exposed = exposedAddresses(self.config)
        if exposed and not self["insecure"]:
            raise StartupError(
                f"{self['config']} has addresses beyond loopback ({', '.join(exposed)}): "
                "give every node the same --cluster-key FILE (txraft-keygen FILE makes one), "
                "or --insecure to let anyone who reaches a port write to the cluster"
            )
        return None

    def _loadTLS(self) -> TLSConfig | None:
        """Read the TLS certificate, key and CA, if TLS is asked for."""
        cert, key, ca = self["tls-cert"], self["tls-key"], self["tls-ca"]
        if cert is None and key is None:
            if ca is not None:
                raise usage.UsageError("--tls-ca needs --tls-cert and --tls-key")
            return None
        if cert is None or key is None:
            raise usage.UsageError("--tls-cert and --tls-key go together")
        from txraft.tls import TLSFileError, loadTLS  # OpenSSL loads only if TLS is used

        try:
            return loadTLS(cert, key, ca)
        except TLSFileError as e:
            raise StartupError(str(e)) from None

    @staticmethod
    def _checkDataDirectory(path: str) -> None:
        try:
            createDurably(path)
        except OSError as e:
            raise StartupError(f"--data-dir {path}: cannot create it: {e.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise StartupError(f"--data-dir {path}: not writable")


def isLoopback(host: str) -> bool:
    """Whether C{host} is this machine only: C{localhost}, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposedAddresses(config: ClusterConfig) -> list[str]:
    """The hosts of C{config} that other machines may reach, in file order."""
    hosts = dict.fromkeys(node.host for node in config.nodes)
    return [host for host in hosts if not isLoopback(host)]


def createDurably(path: str) -> None:
    """
    Create directory C{path} and any missing parents, fsyncing the parent of
    each one created so that a power failure cannot make it vanish, log and
    all, after the node has acknowledged writes.
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    createDurably(os.path.dirname(path))
    os.mkdir(path)
    fsyncDirectory(os.path.dirname(path))


def _ticks(milliseconds: int) -> int:
    return max(1, round(milliseconds / TICK_MS))


def makeService(options: Options) -> IService:
    """Recover the node's state from its data dir and build its service tree."""
    from twisted.internet import reactor, threads

    name, directory = options["name"], options["data-dir"]
    _keepPidfileApart(options, directory, name)
    try:
        lock = lockDataDirectory(directory, name)
        logManager = LogManager(
            FileLogStore(os.path.join(directory, f"{name}.log")),
            FileStateStore(os.path.join(directory, f"{name}.state")),
            KeyValueStore(),
            FileSnapshotStore(os.path.join(directory, f"{name}.snapshot")),
            dataDirectoryLock=lock,
        )
        low, high = options["election-timeout"]
        metrics = None
        if options["http"] is not None:
            # Only a node with an HTTP side loads twisted.web and prometheus_client:
            # the others start sooner (the election bound counts process start-up).
            from txraft.metrics import NodeMetrics

            metrics = NodeMetrics()
        service = RaftService(
            options.config,
            name,
            logManager,
            reactor,
            tickSeconds=TICK_MS / 1000,
            electionTicks=(_ticks(low), _ticks(high)),
            heartbeatTicks=_ticks(options["heartbeat"]),
            rng=random.SystemRandom(),
            snapshotEntries=options["snapshot-entries"],
            snapshotGrowth=options["snapshot-growth"],
            snapshotter=(
                inChild(reactor, threads.deferToThread)
                if options["snapshot-writer"] == "fork"
                else inBackground(threads.deferToThread)
            ),
            clusterKey=options.clusterKey,
            maxConnections=options["max-connections"],
            maxBacklog=options["max-backlog"],
            maxInflightAppends=options["max-inflight"],
            trailingEntries=options["trailing-entries"],
            saveInBackground=threads.deferToThread,
            syncInBackground=threads.deferToThread,
            tls=options.tls,
            observer=metrics,
            join=options["join"],
        )
    except (StorageError, OSError) as e:
        raise StartupError(str(e)) from None
    if options.clusterKey is None:
        log.warn(
            "node {name} has no --cluster-key: peers are not authenticated, so anyone "
            "who can reach port {port} can rewrite this cluster's data",
            name=name,
            port=options.address.port,
        )
    if metrics is not None:
        _addHTTP(service, metrics, options, reactor)
    return service


def _addHTTP(service: RaftService, metrics: NodeMetrics, options: Options, reactor: Any) -> None:
    """Serve the node's HTTP side, on its host and the C{--http} port."""
    from txraft.health import MAX_LAG
    from txraft.survey import ClusterSurvey
    from txraft.web import HTTPService, makeSite

    node, own = service.node, options.address
    metrics.watch(node.status, service.connectedPeers)

    def addresses() -> dict[str, tuple[str, int]]:
        members = {m.name: (m.host, m.port) for m in node.core.membership.members}
        members.setdefault(own.name, (own.host, own.port))
        return members

    survey = ClusterSurvey(node.name, addresses, node.status, reactor, tls=options.tls)
    site = makeSite(node.status, metrics.registry, survey, MAX_LAG)
    HTTPService(reactor, options.address.host, options["http"], site).setServiceParent(service)


def _keepPidfileApart(options: Options, directory: str, name: str) -> None:
    """
    twistd writes C{twistd.pid} in the working directory by default, so a
    second node started from the same directory would refuse to run.  Unless
    the user chose a pidfile (other than that default), each node writes
    C{DIR/NAME.pid} instead.
    """
    parent = getattr(options, "parent", None)
    if parent is not None and parent.get("pidfile") == os.path.abspath("twistd.pid"):
        parent["pidfile"] = os.path.abspath(os.path.join(directory, f"{name}.pid"))
