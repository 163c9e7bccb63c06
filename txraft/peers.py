"""
This node's outgoing connections to its peers.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from txraft.config import NodeAddress
from txraft.messages import Message
from txraft.protocol import PeerClientProtocol

if TYPE_CHECKING:
    from txraft.service import RaftService

#: Requests in flight to one peer beyond which new ones are dropped; the
#: core notices the gap and resends, so a slow follower cannot make the
#: leader buffer without bound.
MAX_IN_FLIGHT = 256

#: How many of the latest messages to a disconnected peer are kept for
#: when it connects.
BACKLOG = 4


class PeerLink:
    """
    This node's outgoing connection to one peer.  It reconnects forever
    with capped exponential backoff.  The last few messages sent while it
    is down go out when it connects (a vote request sent while a peer is
    still starting is not lost for a whole election timeout); older ones
    are dropped, and the core's heartbeats retry them.
    """

    log = Logger()

    def __init__(
        self,
        service: RaftService,
        address: NodeAddress,
        reactor: IReactorTime,
        maxDelay: float,
    ) -> None:
        self.service = service
        self.address = address
        self.protocol: PeerClientProtocol | None = None
        self._backlog: deque[Message] = deque(maxlen=BACKLOG)
        endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=maxDelay + 1)
        factory = Factory.forProtocol(self._buildProtocol)
        factory.noisy = False
        jitter = random.Random()
        self.clientService = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(
                initialDelay=0.02, maxDelay=maxDelay, jitter=lambda: jitter.random() * 0.02
            ),
            clock=reactor,
        )

    def _buildProtocol(self) -> PeerClientProtocol:
        protocol = PeerClientProtocol(self.service.name, self.address.name)
        protocol.onConnectionMade = self._connected
        protocol.onConnectionLost = self._disconnected
        return protocol

    def _connected(self, protocol: PeerClientProtocol) -> None:
        self.log.info("connected to peer {peer}", peer=self.address.name)
        self.protocol = protocol
        while self._backlog:
            self.send(self._backlog.popleft())

    def _disconnected(self, protocol: PeerClientProtocol) -> None:
        if self.protocol is protocol:
            self.log.info("lost connection to peer {peer}", peer=self.address.name)
            self.protocol = None

    def send(self, message: Message) -> None:
        """Send C{message} if connected and not overloaded; step its response into the core."""
        protocol = self.protocol
        if protocol is None:
            self._backlog.append(message)
            return
        if protocol.pendingCount() >= MAX_IN_FLIGHT:
            return
        d = protocol.sendRequest(message)
        d.addCallbacks(self._responded, self._failed)

    def _responded(self, response: Message) -> None:
        self.service.peerResponse(self.address.name, response)

    def _failed(self, failure: Failure) -> None:
        self.log.debug("request to {peer} failed: {f}", peer=self.address.name, f=failure.value)
