"""
The Twisted plumbing of one node: its listening port, its peer links (one to
every other member of its newest membership), and the ticker that drives
its L{RaftNode}.
"""

from __future__ import annotations

import gc
import random
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorCore, IReactorSSL, IReactorTCP, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from txraft.config import ClusterConfig, NodeAddress
from txraft.core import ELECTION_TICKS, HEARTBEAT_TICKS, MAX_INFLIGHT_APPENDS, TRAILING_ENTRIES
from txraft.interfaces import INodeObserver
from txraft.logmanager import LogManager
from txraft.membership import Membership
from txraft.messages import Message
from txraft.node import MAX_BACKLOG, SNAPSHOT_ENTRIES, SNAPSHOT_GROWTH, RaftNode
from txraft.peers import PeerLink
from txraft.protocol import NodeFactory
from txraft.snapshotting import Background, Snapshotter

if TYPE_CHECKING:
    from txraft.tls import TLSConfig


def peerAddresses(peers: Iterable[NodeAddress]) -> frozenset[str]:
    """
    The IP addresses C{peers} connect from (as far as their configured
    hosts tell), resolved once at startup.
    """
    addresses = set()
    for peer in peers:
        try:
            infos = socket.getaddrinfo(peer.host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        addresses.update(str(info[4][0]) for info in infos)
    return frozenset(addresses)


class RaftService(MultiService):
    """
    One txraft node as a Twisted service: it listens for clients and peers,
    keeps a link to every other member, ticks its L{RaftNode}, and stops it
    cleanly: a leader hands its leadership over first.

    @ivar node: the driver, which holds all of the node's state.
    """

    log = Logger()

    def __init__(
        self,
        config: ClusterConfig,
        name: str,
        logManager: LogManager,
        reactor: IReactorTime,
        *,
        tickSeconds: float = 0.01,
        electionTicks: tuple[int, int] = ELECTION_TICKS,
        heartbeatTicks: int = HEARTBEAT_TICKS,
        rng: random.Random | None = None,
        snapshotEntries: int = SNAPSHOT_ENTRIES,
        snapshotGrowth: float = SNAPSHOT_GROWTH,
        snapshotter: Snapshotter | None = None,
        clusterKey: bytes | None = None,
        maxConnections: int | None = None,
        tls: TLSConfig | None = None,
        observer: INodeObserver | None = None,
        join: bool = False,
        maxBacklog: int = MAX_BACKLOG,
        maxInflightAppends: int = MAX_INFLIGHT_APPENDS,
        trailingEntries: int = TRAILING_ENTRIES,
        saveInBackground: Background | None = None,
        syncInBackground: Background | None = None,
    ) -> None:
        """
        @param reactor: the reactor to listen, connect and keep time on.
        @param tickSeconds: the length of one tick of the core's clock.
        @param snapshotEntries: how many applied entries trigger a snapshot
            (with C{snapshotGrowth}: see L{RaftNode}).
        @param snapshotter: how to serialize and write a snapshot (default:
            right away, in the reactor thread; a node forks a child).
        @param clusterKey: the key every peer connection proves (both
            ways), or L{None} to trust any peer line (insecure mode).
        @param maxConnections: how many connections the port keeps open at
            most, peers' aside; L{None} for no limit.
        @param tls: the port and the peer links speak TLS with this, or
            L{None} for plain TCP.
        @param observer: told what the node does (its metrics).
        @param join: without a membership in the data directory, wait to be
            added to a running cluster instead of starting one from
            C{config} (L{RaftNode}'s C{join}).
        @param maxBacklog: see L{RaftNode}; so are C{maxInflightAppends},
            C{trailingEntries}, C{saveInBackground} and C{syncInBackground}.
        """
        super().__init__()
        self.name = name
        self.address = config.node(name)
        self.reactor = reactor
        self.tickSeconds = tickSeconds
        self.logManager = logManager
        logManager.setServiceParent(self)
        self._clusterKey = clusterKey
        self._maxDelay = electionTicks[0] * tickSeconds / 2
        self._requestTimeout = electionTicks[0] * tickSeconds
        self.tls = tls
        self._links: dict[str, PeerLink] = {}
        self.node = RaftNode(
            name,
            config,
            logManager,
            reactor,
            self._sendToPeer,
            electionTicks=electionTicks,
            heartbeatTicks=heartbeatTicks,
            rng=rng,
            snapshotEntries=snapshotEntries,
            snapshotGrowth=snapshotGrowth,
            snapshotter=snapshotter,
            onFatal=self._fatal,
            observer=observer,
            join=join,
            onMembership=self._followMembership,
            maxBacklog=maxBacklog,
            maxInflightAppends=maxInflightAppends,
            trailingEntries=trailingEntries,
            saveInBackground=saveInBackground,
            syncInBackground=syncInBackground,
        )
        self._ticker = LoopingCall.withCount(self.node.ticks)
        self._ticker.clock = reactor
        self._factory = NodeFactory(
            self.node,
            clusterKey,
            reactor,
            maxConnections,
            requirePeerCertificate=tls is not None and tls.authority is not None,
        )
        self._followMembership(self.node.core.membership)
        self.port = None

    def linkedPeers(self) -> dict[str, NodeAddress]:
        """The members this node keeps a link to, and their addresses."""
        return {name: link.address for name, link in self._links.items()}

    def connectedPeers(self) -> int:
        """How many peers this node has a connection to now."""
        return sum(link.protocol is not None for link in self._links.values())

    def _sendToPeer(self, peer: str, message: Message) -> None:
        link = self._links.get(peer)
        if link is not None:
            link.send(message)

    def _followMembership(self, membership: Membership) -> None:
        """
        Keep one link to each other member of C{membership}, at its address:
        new members get one, departed ones lose theirs.
        """
        wanted = {
            member.name: NodeAddress(member.name, member.host, member.port)
            for member in membership.members
            if member.name != self.name
        }
        for name, link in list(self._links.items()):
            if wanted.get(name) != link.address:
                del self._links[name]
                link.clientService.disownServiceParent()
        for name, address in wanted.items():
            if name not in self._links:
                link = PeerLink(
                    self.node,
                    address,
                    self.reactor,
                    self._maxDelay,
                    self._clusterKey,
                    requestTimeout=self._requestTimeout,
                    tls=self.tls,
                )
                self._links[name] = link
                link.clientService.setServiceParent(self)
        self._factory.peerHosts = peerAddresses(wanted.values())

    def _fatal(self, reason: str) -> None:
        """The node's stored data is unusable: stop the process."""
        reactor: IReactorCore = self.reactor  # type: ignore[assignment]
        reactor.stop()

    def startService(self) -> None:
        """
        Listen, connect to peers, start the clock; and exempt every object
        that exists by then (modules, classes, functions, the recovered
        state: tens of thousands, none of them garbage) from Python's
        cyclic garbage collector.  Each full collection otherwise walks them
        all, which under load stalled the event loop for hundreds of
        milliseconds, long enough for followers to elect another leader: it
        writes to every object it visits, so while a snapshot's forked child
        shares the node's memory, each page it touches is copied.
        """
        try:
            if self.tls is None:
                tcp: IReactorTCP = self.reactor  # type: ignore[assignment]
                self.port = tcp.listenTCP(
                    self.address.port, self._factory, interface=self.address.host
                )
            else:
                tls: IReactorSSL = self.reactor  # type: ignore[assignment]
                self.port = tls.listenSSL(
                    self.address.port,
                    self._factory,
                    self.tls.serverOptions(),
                    interface=self.address.host,
                )
        except CannotListenError as e:
            raise SystemExit(
                f"txraft: node {self.name} cannot listen on "
                f"{self.address.host}:{self.address.port}: {e.socketError}"
            ) from None
        super().startService()
        self._ticker.start(self.tickSeconds, now=False)
        gc.freeze()
        self.log.info(
            "node {name} listening on {host}:{port}",
            name=self.name,
            host=self.address.host,
            port=self.address.port,
        )

    def stopService(self) -> defer.Deferred[None]:
        """
        Hand leadership over if this node leads (L{RaftNode.handOver}), so
        that clients need not wait an election timeout for the next leader;
        then stop the node, stop listening, and close every connection.
        """
        return self.node.handOver().addCallback(lambda _: self._stopNow())

    def _stopNow(self) -> defer.Deferred[None]:
        if self._ticker.running:
            self._ticker.stop()
        self.node.stop()
        self._factory.disconnectAll()
        stopped = [defer.maybeDeferred(self.port.stopListening)] if self.port else []
        stopped.append(defer.maybeDeferred(super().stopService))
        return defer.gatherResults(stopped).addCallback(lambda _: None)
