"""
The whole cluster as one node sees it: ask every member for its C{status}
and sum the answers up, one row per member, as C{etcdctl endpoint status
--cluster} does.

L{summarize} is pure and shared by the web view (which asks the members
through L{ClusterSurvey}, on the reactor) and by C{txraft-client status
--all} (which asks them with a blocking socket).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from txraft import answers
from txraft.core import LEADER
from txraft.health import checkHealth, lag
from txraft.protocol import CONNECTION_DONE

if TYPE_CHECKING:
    from txraft.tls import TLSConfig

#: A status as the C{status} command returns it, decoded.
Status = dict[str, Any]


def parseStatus(answer: str) -> Status:
    """
    The status in a C{status} answer.

    @raise ValueError: if C{answer} is not C{OK} and a JSON object.
    """
    value = answers.okValue(answer)
    document = json.loads(value) if value is not None else None
    if not isinstance(document, dict):
        raise ValueError(f"not a status answer: {answer[:80]!r}")
    return document


def summarize(
    addresses: Mapping[str, str],
    statuses: Mapping[str, Status | None],
    lastContact: Mapping[str, float],
    now: float,
) -> dict[str, Any]:
    """
    Sum up the members' statuses: which is the leader, and for each member
    (in C{addresses}' order) its address, whether it answered, its role,
    term, commit and applied index, its lag behind the leader's commit
    index, its health, and how many seconds ago it last answered.

    @param addresses: every member's C{HOST:PORT}, by name.
    @param statuses: each member's status, or L{None} if it did not answer.
    @param lastContact: when each member last answered, on the clock of C{now}.
    """
    answered = {name: s for name, s in statuses.items() if s is not None}
    leaders = [s for s in answered.values() if s.get("role") == LEADER]
    # Two nodes may both think they lead for a moment; the later term wins.
    leaderStatus = max(leaders, key=lambda s: s.get("term", 0), default=None)
    if leaderStatus is not None:
        leader, leaderCommit = leaderStatus.get("name"), leaderStatus.get("commitIndex")
    else:
        known = [s["leaderCommit"] for s in answered.values() if s.get("leaderCommit")]
        leader, leaderCommit = _mostNamedLeader(answered.values()), max(known, default=None)
    rows = []
    for name, address in addresses.items():
        status = statuses.get(name)
        row: dict[str, Any] = {"name": name, "address": address, "reachable": status is not None}
        contact = lastContact.get(name)
        row["lastContact"] = None if contact is None else round(now - contact, 3)
        if status is None:
            row.update(healthy=False, reason="unreachable")
        else:
            reason = checkHealth(status)
            behind = (
                max(0, leaderCommit - status.get("lastApplied", 0))
                if isinstance(leaderCommit, int)
                else lag(status)
            )
            row.update(
                role=status.get("role"),
                term=status.get("term"),
                leader=status.get("leader"),
                commitIndex=status.get("commitIndex"),
                lastApplied=status.get("lastApplied"),
                lag=behind,
                healthy=reason is None,
                reason=reason,
            )
        rows.append(row)
    return {"leader": leader, "leaderCommit": leaderCommit, "members": rows}


def _mostNamedLeader(statuses: Any) -> str | None:
    """The leader most members name, when none of those that answered leads."""
    named = [s.get("leader") for s in statuses if s.get("leader") is not None]
    return max(set(named), key=named.count) if named else None


class _StatusQuery(LineReceiver):
    """Sends C{status} once and fires L{answer} with the answer line."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.answer: defer.Deferred[str] = defer.Deferred(lambda _: self._abort())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self) -> None:
        """Ask."""
        self.sendLine(b"status")

    def lineReceived(self, line: bytes) -> None:
        """Take the answer and hang up."""
        if not self.answer.called:
            self.answer.callback(line.decode("utf-8", "replace"))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        """Fail the answer if none came."""
        if not self.answer.called:
            self.answer.errback(reason)


def fetchStatus(
    reactor: Any, host: str, port: int, timeout: float, tls: TLSConfig | None = None
) -> defer.Deferred[Status]:
    """
    Ask the node at C{host}:C{port} for its status, giving up after
    C{timeout} seconds.  C{status} needs no cluster key; on a TLS cluster
    (C{tls}) the member is asked over TLS, and its certificate checked, as
    a peer link does.
    """
    query = _StatusQuery()
    factory = Factory.forProtocol(lambda: query)
    factory.noisy = False  # one survey a second must not fill the log
    endpoint: IStreamClientEndpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if tls is not None:
        endpoint = wrapClientTLS(tls.clientOptions(host), endpoint)
    d = endpoint.connect(factory).addCallback(lambda _: query.answer)
    d.addCallback(parseStatus)
    return d.addTimeout(timeout, reactor)


class ClusterSurvey:
    """
    Asks every other member for its status over the client protocol, on
    the reactor, and sums up the cluster with this node's own status.
    """

    def __init__(
        self,
        name: str,
        addresses: Callable[[], Mapping[str, tuple[str, int]]],
        ownStatus: Callable[[], Status],
        reactor: IReactorTime,
        timeout: float = 1.0,
        tls: TLSConfig | None = None,
    ) -> None:
        """
        @param name: this node, whose status is C{ownStatus()}.
        @param addresses: returns every member's host and port, by name
            (this node's included): asked at each survey, as the membership
            changes.
        @param timeout: how long to wait for each member's answer.
        @param tls: ask the members over TLS, as this node's peer links do,
            or L{None} for plain TCP.
        """
        self._tls = tls
        self.name = name
        self._addresses = addresses
        self._ownStatus = ownStatus
        self._reactor = reactor
        self._timeout = timeout
        self._lastContact: dict[str, float] = {}

    def survey(self) -> defer.Deferred[dict[str, Any]]:
        """
        Fire with L{summarize}'s picture of the cluster; a member that does
        not answer is unreachable, not a failure.
        """
        addresses = dict(self._addresses())
        names = list(addresses)
        asked = [self._ask(name, addresses[name]) for name in names]
        d = defer.gatherResults(asked, consumeErrors=True)
        return d.addCallback(
            lambda found: self._summarize(addresses, dict(zip(names, found, strict=True)))
        )

    def _ask(self, name: str, address: tuple[str, int]) -> defer.Deferred[Status | None]:
        if name == self.name:
            return defer.maybeDeferred(self._ownStatus)
        host, port = address
        d = fetchStatus(self._reactor, host, port, self._timeout, self._tls)
        return d.addErrback(lambda _: None)

    def _summarize(
        self, members: Mapping[str, tuple[str, int]], statuses: dict[str, Status | None]
    ) -> dict[str, Any]:
        now = self._reactor.seconds()
        for name, status in statuses.items():
            if status is not None:
                self._lastContact[name] = now
        addresses = {name: f"{host}:{port}" for name, (host, port) in members.items()}
        picture = summarize(addresses, statuses, self._lastContact, now)
        picture["self"] = self.name
        return picture
