"""
Tests for L{txraft.clientlib}: the L{ClusterClient} against an in-memory
fake cluster that keeps the client protocol's contract (numbered requests
answered once, retries answered from the record), on a L{Clock}.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from txraft import answers
from txraft.auth import Responder, Session
from txraft.clientlib import (
    SESSION_EXPIRED,
    SESSION_WINDOW,
    ClientClosedError,
    ClientLibError,
    ClusterClient,
    RequestTimeoutError,
    SessionExpiredError,
    SessionsUnsupportedError,
    addressesFromConfig,
    isWrite,
    memberAddresses,
)
from txraft.config import parseConfig
from txraft.kv import KeyValueStore

ADDRESSES = [("10.0.0.1", 7001), ("10.0.0.2", 7002), ("10.0.0.3", 7003)]


class FakeCluster:
    """
    Three fake nodes sharing one replicated state: a key-value store and,
    per client ID, the answers of the SEQs applied (as the server's sessions
    keep them).  One node leads; the others redirect to it.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.store = KeyValueStore()
        self.sessions: dict[str, dict[int, str]] = {}
        #: Every command line the state machine applied, in order.
        self.applied: list[str] = []
        self.leader: tuple[str, int] | None = ADDRESSES[0]
        #: Nodes that refuse connections.
        self.down: set[tuple[str, int]] = set()
        #: Nodes that read requests but never answer.
        self.silent: set[tuple[str, int]] = set()
        #: Scripted answers: the next answers a node gives instead of its own.
        self.scripted: dict[tuple[str, int], list[str]] = {}
        self.connections: list[FakeConnection] = []
        self.attempts: list[tuple[str, int]] = []
        self.key: bytes | None = None

    def connector(self, host: str, port: int) -> FakeEndpoint:
        """The client's connector: an endpoint to the fake node at C{(host, port)}."""
        return FakeEndpoint(self, (host, port))

    def execute(self, address: tuple[str, int], line: str) -> str:
        """Answer one request line as node C{address} would."""
        if self.scripted.get(address):
            return self.scripted[address].pop(0)
        if address != self.leader:
            if self.leader is None:
                return answers.NO_LEADER
            return answers.redirect("s", *self.leader)
        prefix, at, command = line.partition("@")
        if not at:
            command = line
        elif "#" in prefix:
            clientId, _, seqText = prefix.partition("#")
            seq = int(seqText)
            session = self.sessions.get(clientId)
            if session is None and seq != 1:
                return SESSION_EXPIRED
            session = self.sessions.setdefault(clientId, {})
            if seq in session:
                return session[seq]
            session[seq] = self._apply(command)
            return session[seq]
        if command.split(" ")[0] in ("get", "show"):
            return self.store.read(command)
        return self._apply(command)

    def _apply(self, command: str) -> str:
        self.applied.append(command)
        return self.store.apply(command)

    def flush(self) -> None:
        """
        Let every open connection's requests reach its node and the answers
        come back, and run what the client scheduled for now, until all is
        quiet.  Nothing waits for later times: tests advance the clock.
        """
        progress = True
        while progress:
            progress = False
            for connection in list(self.connections):
                progress |= connection.deliver()
            now = self.clock.seconds()
            if any(call.getTime() <= now for call in self.clock.getDelayedCalls()):
                self.clock.advance(0)
                progress = True

    def live(self) -> list[FakeConnection]:
        """The connections still open."""
        return [c for c in self.connections if not c.closed]


class FakeConnection:
    """The node's end of one client connection, over a L{StringTransport}."""

    def __init__(self, cluster: FakeCluster, address: tuple[str, int], protocol) -> None:
        self.cluster = cluster
        self.address = address
        self.protocol = protocol
        self.transport = StringTransport()
        self.closed = False
        #: Every request line the node read on this connection.
        self.received: list[str] = []
        self.responder = Responder(cluster.key, "s1") if cluster.key else None
        self.session: Session | None = None

    def deliver(self) -> bool:
        """Answer what the client wrote; close if it hung up.  Whether anything happened."""
        if self.closed:
            return False
        data = self.transport.value()
        self.transport.clear()
        replies = []
        for raw in data.decode("utf-8").splitlines():
            reply = self._reply(raw)
            if reply is not None:
                replies.append(reply)
        if replies:
            self.protocol.dataReceived("".join(r + "\n" for r in replies).encode("utf-8"))
        if self.transport.disconnecting:
            self.drop(ConnectionLost())
            return True
        return bool(data)

    def _reply(self, raw: str) -> str | None:
        if self.responder is not None and self.session is None:
            if "@AUTH1 " in raw:
                return self.responder.challenge(raw)
            self.session = self.responder.verify(raw)
            return self.responder.confirmation()
        line = raw if self.session is None else self.session.open(raw.encode()).decode()
        self.received.append(line)
        if self.address in self.cluster.silent:
            return None
        answer = self.cluster.execute(self.address, line)
        return answer if self.session is None else self.session.seal(answer.encode()).decode()

    def drop(self, reason: Exception) -> None:
        """End the connection, as a crash or a network failure would."""
        if not self.closed:
            self.closed = True
            self.protocol.connectionLost(Failure(reason))


class FakeEndpoint:
    """Connects a client's protocol to a fake node, or refuses if the node is down."""

    def __init__(self, cluster: FakeCluster, address: tuple[str, int]) -> None:
        self.cluster = cluster
        self.address = address

    def connect(self, factory: Factory) -> defer.Deferred:
        """Build the protocol and connect it at once, unless the node is down."""
        self.cluster.attempts.append(self.address)
        if self.address in self.cluster.down:
            return defer.fail(ConnectionRefusedError())
        protocol = factory.buildProtocol(None)
        connection = FakeConnection(self.cluster, self.address, protocol)
        self.cluster.connections.append(connection)
        protocol.makeConnection(connection.transport)
        return defer.succeed(protocol)


class ClusterClientTestCase(SynchronousTestCase):
    """Builds a client of a L{FakeCluster} on a L{Clock}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.cluster = FakeCluster(self.clock)

    def makeClient(self, **kwargs: object) -> ClusterClient:
        """A client of the fake cluster, ID C{c1} unless told otherwise."""
        kwargs.setdefault("clientId", "c1")
        client = ClusterClient(self.clock, ADDRESSES, connector=self.cluster.connector, **kwargs)
        self.addCleanup(client.close)
        return client

    def advance(self, seconds: float, step: float = 0.05) -> None:
        """Let C{seconds} pass in steps, the fake cluster answering after each."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.cluster.flush()


class RequestTests(ClusterClientTestCase):
    """Numbering, pipelining and the answers a request fires with."""

    def test_writesNumberedReadsNot(self) -> None:
        """
        C{set} and C{delete} carry C{CLIENTID#SEQ@}, SEQ from 1 up by one;
        C{get}, C{show} and C{status} go bare, so the leader answers them
        without a log entry.
        """
        client = self.makeClient()
        results = [
            client.set("a", "1 2"),
            client.get("a"),
            client.delete("a"),
            client.show(),
            client.request("status"),
        ]
        [connection] = self.cluster.connections
        self.assertEqual(
            connection.transport.value().decode().splitlines(),
            ["c1#1@set a 1 2", "get a", "c1#2@delete a", "show", "status"],
        )
        self.cluster.flush()
        self.assertEqual(
            [self.successResultOf(d) for d in results[:4]],
            ["OK", "OK 1 2", "OK", "OK {}"],
        )

    def test_pipelinedInOrder(self) -> None:
        """
        Requests made before any answer go out together on one connection,
        and each Deferred fires with its own answer, in order.
        """
        client = self.makeClient()
        sets = [client.set(f"k{i}", str(i)) for i in range(5)]
        gets = [client.get(f"k{i}") for i in range(5)]
        for d in sets + gets:
            self.assertNoResult(d)
        self.cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in sets], ["OK"] * 5)
        self.assertEqual([self.successResultOf(d) for d in gets], [f"OK {i}" for i in range(5)])
        self.assertEqual(len(self.cluster.connections), 1)

    def test_randomClientId(self) -> None:
        """Without an ID, each client numbers its writes under a fresh random one."""
        first = ClusterClient(self.clock, ADDRESSES, connector=self.cluster.connector)
        second = ClusterClient(self.clock, ADDRESSES, connector=self.cluster.connector)
        self.assertNotEqual(first.clientId, second.clientId)
        self.assertRegex(first.clientId, r"^c[0-9a-f]{16}$")

    def test_exactlyOnceOff(self) -> None:
        """With C{exactlyOnce=False} writes go bare, for clusters without sessions."""
        client = self.makeClient(exactlyOnce=False)
        d = client.set("a", "1")
        self.assertEqual(self.cluster.connections[0].transport.value(), b"set a 1\n")
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "OK")

    def test_errorIsAnAnswer(self) -> None:
        """An C{ERROR} answer (a bad command) fires the Deferred: nothing ran, nothing retried."""
        client = self.makeClient()
        d = client.request("frob x")
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "ERROR unknown command 'frob'")

    def test_multiline(self) -> None:
        """A command that spans lines is refused before anything is sent."""
        self.assertRaises(ValueError, self.makeClient().request, "get a\nshow")

    def test_helpers(self) -> None:
        """L{isWrite} knows the writes; L{addressesFromConfig} reads a cluster.conf."""
        self.assertEqual([isWrite(c) for c in ["set a 1", "delete a", "get a", ""]], [1, 1, 0, 0])
        config = parseConfig("s1 10.0.0.1 7001\ns2 10.0.0.2 7002\n")
        self.assertEqual(addressesFromConfig(config), [("10.0.0.1", 7001), ("10.0.0.2", 7002)])

    def test_discover(self) -> None:
        """
        L{ClusterClient.discover} learns every member's address from a
        node's C{status}; a status without members teaches nothing.
        """
        client = ClusterClient(self.clock, ADDRESSES[:1], connector=self.cluster.connector)
        self.addCleanup(client.close)
        members = {"s1": "10.0.0.1:7001", "s4": "10.0.0.4:7004", "s5": "[::1]:7005"}
        status = answers.ok(json.dumps({"role": "leader", "members": members}))
        self.cluster.scripted[ADDRESSES[0]] = [status, answers.ok("{}")]
        d = client.discover()
        self.cluster.flush()
        expected = [ADDRESSES[0], ("10.0.0.4", 7004), ("::1", 7005)]
        self.assertEqual(self.successResultOf(d), expected)
        self.assertEqual(memberAddresses("OK {}"), [])
        self.assertEqual(memberAddresses("ERROR x"), [])
        self.assertEqual(memberAddresses('OK {"members": {"s1": "nowhere"}}'), [])

    def test_sessionsUnsupported(self) -> None:
        """
        A cluster from before sessions refuses a numbered write as an unknown
        command: the write fails with L{SessionsUnsupportedError}.
        """
        client = self.makeClient()
        self.cluster.scripted[ADDRESSES[0]] = ["ERROR unknown command 'c1#1@set'"]
        d = client.set("a", "1")
        self.cluster.flush()
        self.failureResultOf(d, SessionsUnsupportedError)


class WindowTests(ClusterClientTestCase):
    """At most a window of requests is outstanding, never more than the server keeps."""

    def test_windowBound(self) -> None:
        """
        Of 300 writes made at once, the first L{SESSION_WINDOW} are sent;
        each answer lets one more go, so every one is answered and the
        client never has more SEQs outstanding than the node keeps answers.
        """
        client = self.makeClient()
        results = [client.set(f"k{i}", "v") for i in range(300)]
        [connection] = self.cluster.connections
        self.assertEqual(len(connection.transport.value().splitlines()), SESSION_WINDOW)
        while connection.transport.value():
            sent = connection.transport.value().splitlines()
            self.assertLessEqual(len(sent), SESSION_WINDOW)
            connection.deliver()
        self.assertEqual([self.successResultOf(d) for d in results], ["OK"] * 300)
        self.assertEqual(len(connection.received), 300)

    def test_smallerWindow(self) -> None:
        """A smaller window sends fewer at once; a larger one than the server's is refused."""
        client = self.makeClient(window=2)
        results = [client.set(f"k{i}", "v") for i in range(5)]
        self.assertEqual(self.cluster.connections[0].transport.value().count(b"\n"), 2)
        self.cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in results], ["OK"] * 5)
        self.assertRaises(ValueError, self.makeClient, window=SESSION_WINDOW + 1)


class RetryTests(ClusterClientTestCase):
    """Redirects, lost connections and C{UNAVAILABLE}: the same lines sent again."""

    def test_followsRedirect(self) -> None:
        """
        A follower's C{REDIRECT} sends every unanswered request, in order
        and with the same SEQs, to the leader it names; the follower's
        connection is closed and C{onRedirect} hears of it.
        """
        self.cluster.leader = ADDRESSES[2]
        redirects: list[answers.Redirect] = []
        client = self.makeClient(onRedirect=redirects.append)
        results = [client.set("a", "1"), client.get("a"), client.delete("b")]
        self.cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in results], ["OK", "OK 1", "NOT_FOUND"])
        follower, leader = self.cluster.connections
        self.assertTrue(follower.closed)
        self.assertEqual(leader.address, ADDRESSES[2])
        self.assertEqual(leader.received, ["c1#1@set a 1", "get a", "c1#2@delete b"])
        self.assertEqual(redirects, [answers.Redirect("s", *ADDRESSES[2])])
        self.assertEqual(client.address, ADDRESSES[2])

    def test_redirectToUnknownNode(self) -> None:
        """A redirect to an address the client did not know adds it to those it knows."""
        newcomer = ("10.0.0.9", 7009)
        self.cluster.leader = newcomer
        client = self.makeClient()
        d = client.set("a", "1")
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "OK")
        self.assertEqual(client.addresses, ADDRESSES + [newcomer])

    def test_lostConnectionSameSeq(self) -> None:
        """
        When the connection is lost after the leader applied a write but
        before its answer arrived, the client sends the same C{c1#1@} line
        again, through the next node's redirect, and gets the recorded
        answer: the write ran once.  Reference: dissertation section 6.3.
        """
        client = self.makeClient()
        d = client.delete("a")
        self.cluster.store.apply("set a 1")
        [first] = self.cluster.connections
        self.cluster.silent.add(ADDRESSES[0])
        first.deliver()  # applied, but the answer never comes
        self.cluster.silent.clear()
        first.drop(ConnectionLost())
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "OK")  # not NOT_FOUND
        self.assertEqual(self.cluster.applied, ["delete a"])
        self.assertEqual(
            [c.received for c in self.cluster.connections],
            [["c1#1@delete a"], ["c1#1@delete a"], ["c1#1@delete a"]],
        )

    def test_unavailableSameSeq(self) -> None:
        """
        An C{UNAVAILABLE} answer whose outcome is unknown (the write may
        have committed) sends the request again with the same SEQ after a
        backoff; the recorded answer comes back and nothing applies twice.
        """
        client = self.makeClient()
        self.cluster.execute(ADDRESSES[0], "c1#1@set a 1")  # it did commit
        self.cluster.scripted[ADDRESSES[0]] = [answers.LEADERSHIP_LOST]
        d = client.set("a", "1")
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "OK")
        self.assertEqual(self.cluster.applied, ["set a 1"])
        self.assertEqual(
            [c.received for c in self.cluster.connections],
            [["c1#1@set a 1"], ["c1#1@set a 1"], ["c1#1@set a 1"]],
        )

    def test_timeoutAnswerStays(self) -> None:
        """After a commit timeout the client asks the same node again, not the next."""
        client = self.makeClient()
        self.cluster.scripted[ADDRESSES[0]] = [answers.COMMIT_TIMEOUT]
        d = client.set("a", "1")
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "OK")
        self.assertEqual([c.address for c in self.cluster.connections], [ADDRESSES[0]] * 2)

    def test_resendsEveryUnansweredInOrder(self) -> None:
        """
        A lost connection with several requests in flight, some answered:
        the unanswered ones, and only those, are sent again in their order.
        """
        client = self.makeClient()
        results = [client.set(f"k{i}", str(i)) for i in range(4)]
        [first] = self.cluster.connections
        lines = first.transport.value().decode().splitlines()
        first.transport.clear()
        answered = [self.cluster.execute(ADDRESSES[0], line) for line in lines[:2]]
        first.protocol.dataReceived("".join(a + "\n" for a in answered).encode())
        first.drop(ConnectionLost())
        self.cluster.flush()
        self.assertEqual([self.successResultOf(d) for d in results], ["OK"] * 4)
        self.assertEqual(self.cluster.connections[-1].received, lines[2:])

    def test_backoffAcrossNodes(self) -> None:
        """
        With no leader, the client tries the nodes in turn, waiting longer
        after each failure in a row, and succeeds once a leader is known.
        """
        self.cluster.leader = None
        client = self.makeClient()
        d = client.set("a", "1")
        self.cluster.flush()
        self.assertEqual(self.cluster.attempts, ADDRESSES[:2])
        self.clock.advance(ClusterClient.BACKOFF)
        self.cluster.flush()
        self.assertEqual(len(self.cluster.attempts), 3)
        self.clock.advance(ClusterClient.BACKOFF)
        self.cluster.flush()
        self.assertEqual(len(self.cluster.attempts), 3)  # the wait doubled
        self.cluster.leader = ADDRESSES[1]
        self.clock.advance(ClusterClient.BACKOFF)
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "OK")

    def test_stalledNodeLeft(self) -> None:
        """
        A node that keeps its connection open but answers nothing (paused,
        or cut off) is left after C{stallTimeout}, by default half the
        request's timeout: the request goes to the next node in time.
        """
        self.cluster.silent.add(ADDRESSES[0])
        client = self.makeClient(timeout=4.0)
        d = client.set("a", "1")
        self.cluster.flush()
        self.advance(1.9)
        self.assertEqual(len(self.cluster.connections), 1)
        self.cluster.leader = ADDRESSES[1]  # elected while the old leader is away
        self.advance(0.1)
        self.assertEqual(self.successResultOf(d), "OK")
        self.assertTrue(self.cluster.connections[0].closed)
        self.assertEqual(self.cluster.connections[-1].received, ["c1#1@set a 1"])

    def test_answersKeepNodeWatched(self) -> None:
        """A node that answers, however slowly in all, is not left while it keeps answering."""
        client = self.makeClient(timeout=100.0, stallTimeout=5.0, window=1)
        results = [client.get(f"k{i}") for i in range(4)]
        [connection] = self.cluster.connections
        for _ in range(4):
            self.clock.advance(4.0)  # under stallTimeout (5s) between answers
            connection.deliver()
        self.assertEqual([self.successResultOf(d) for d in results], ["NOT_FOUND"] * 4)
        self.assertEqual(len(self.cluster.connections), 1)

    def test_downNodeSkipped(self) -> None:
        """A node that refuses connections is passed over for the next one."""
        self.cluster.down.add(ADDRESSES[0])
        self.cluster.leader = ADDRESSES[1]
        client = self.makeClient()
        d = client.get("a")
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "NOT_FOUND")
        self.assertEqual(self.cluster.attempts, ADDRESSES[:2])

    def test_readRetried(self) -> None:
        """A read whose connection is lost is sent again: a read changes nothing."""
        client = self.makeClient()
        d = client.get("a")
        self.cluster.connections[0].drop(ConnectionLost())
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "NOT_FOUND")


class FailureTests(ClusterClientTestCase):
    """Deadlines, expired sessions, a closed client, an unreachable cluster."""

    def test_timeoutSilentNode(self) -> None:
        """A node that never answers fails the request at its deadline, naming the node."""
        self.cluster.silent.add(ADDRESSES[0])
        client = self.makeClient(timeout=2.0, stallTimeout=5.0)
        d = client.get("a")
        self.cluster.flush()
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        error = self.failureResultOf(d, RequestTimeoutError).value
        self.assertEqual(str(error), "'get a': no answer from 10.0.0.1:7001 within 2s")

    def test_timeoutUnreachable(self) -> None:
        """With every node down the deadline's error says what went wrong last."""
        self.cluster.down.update(ADDRESSES)
        client = self.makeClient(timeout=3.0)
        d = client.set("a", "1")
        self.advance(3.05)
        error = str(self.failureResultOf(d, RequestTimeoutError).value)
        self.assertIn("no answer within 3s; last: connection to 10.0.0.", error)
        self.assertIn("refused", error)

    def test_lateAnswerKeepsOrder(self) -> None:
        """
        A request past its deadline keeps its place on the connection, so
        the answer that comes late is not mistaken for the next request's.
        """
        self.cluster.silent.add(ADDRESSES[0])
        client = self.makeClient(timeout=1.0, stallTimeout=5.0)
        first = client.get("a")
        self.cluster.flush()
        self.clock.advance(0.5)
        second = client.get("b")
        self.clock.advance(0.5)
        self.failureResultOf(first, RequestTimeoutError)
        self.cluster.silent.clear()
        self.cluster.store.apply("set b 2")
        [connection] = self.cluster.connections
        connection.protocol.dataReceived(b"NOT_FOUND\n")  # the late answer to get a
        self.cluster.flush()
        self.assertEqual(self.successResultOf(second), "OK 2")

    def test_sessionExpired(self) -> None:
        """
        C{ERROR session expired} fails the write with L{SessionExpiredError}
        (the cluster cannot say whether it ran), and later writes open a new
        session: a fresh client ID, SEQ 1.
        """
        client = self.makeClient()
        self.cluster.scripted[ADDRESSES[0]] = [SESSION_EXPIRED + ": gone"]
        d = client.set("a", "1")
        self.cluster.flush()
        self.assertIn("session expired", str(self.failureResultOf(d, SessionExpiredError).value))
        self.assertNotEqual(client.clientId, "c1")
        d = client.set("a", "2")
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "OK")
        self.assertEqual(self.cluster.connections[0].received[-1], f"{client.clientId}#1@set a 2")

    def test_close(self) -> None:
        """Closing fails every unanswered request, hangs up, and refuses new ones."""
        client = self.makeClient()
        d = client.get("a")
        client.close()
        self.failureResultOf(d, ClientClosedError)
        self.failureResultOf(client.get("a"), ClientClosedError)
        self.cluster.flush()
        self.assertTrue(self.cluster.connections[0].closed)

    def test_connect(self) -> None:
        """
        L{ClusterClient.connect} fires once some node accepts; it fails
        once every known node has refused.
        """
        self.cluster.down.add(ADDRESSES[0])
        d = self.makeClient().connect()
        self.cluster.flush()
        self.assertIsNone(self.successResultOf(d))
        self.cluster.down.update(ADDRESSES)
        d = self.makeClient().connect()
        self.advance(0.5)
        self.assertIn("refused", str(self.failureResultOf(d, ClientLibError).value))

    def test_malformedRedirect(self) -> None:
        """A C{REDIRECT} without a usable address fails the request, not retried."""
        client = self.makeClient()
        self.cluster.scripted[ADDRESSES[0]] = ["REDIRECT s1 nowhere"]
        d = client.get("a")
        self.cluster.flush()
        self.assertIn("malformed redirect", str(self.failureResultOf(d, ClientLibError).value))


class KeyedTests(ClusterClientTestCase):
    """On a keyed cluster the client proves the key before any request."""

    KEY = b"clientlib-test-cluster-key-0123456789ab"

    def test_provesKey(self) -> None:
        """The handshake comes first; then requests and answers carry MACs and work."""
        self.cluster.key = self.KEY
        client = self.makeClient(clusterKey=self.KEY)
        d = client.set("a", "1")
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "OK")
        self.assertEqual(self.cluster.connections[0].received, ["c1#1@set a 1"])

    def test_wrongKey(self) -> None:
        """A node that does not prove our key is dropped, and the deadline says why."""
        self.cluster.key = b"x" * 40
        client = self.makeClient(clusterKey=self.KEY, timeout=1.0)
        d = client.get("a")
        self.advance(1.05)
        self.assertIn("cluster key handshake", str(self.failureResultOf(d).value))


class LongAndSlowTests(ClusterClientTestCase):
    """
    Answers of any length (a backup's is one line of hundreds of MiB) and
    requests that take long (operators' commands, backups).
    """

    def test_longAnswerInPieces(self) -> None:
        """
        An answer line that arrives in many pieces, one split across two
        reads and two in one read, ends CRLF or LF, each reaches its
        request whole.
        """
        self.cluster.silent.add(ADDRESSES[0])
        client = self.makeClient()
        first, second, third = client.show(), client.get("a"), client.get("b")
        self.cluster.flush()
        [connection] = self.cluster.connections
        long = b"OK " + b"x" * 300_000
        data = long + b"\r\nOK 1\nOK 2\n"
        for start in range(0, len(data), 65536):
            connection.protocol.dataReceived(data[start : start + 65536])
        self.assertEqual(self.successResultOf(first), long.decode())
        self.assertEqual(self.successResultOf(second), "OK 1")
        self.assertEqual(self.successResultOf(third), "OK 2")

    def assertDroppedFor(self, pieces: list[bytes]) -> None:
        """
        A node that sends C{pieces} of an answer line to a client that takes
        at most 32 bytes is dropped on the last piece, not before, and the
        request goes to the next node.
        """
        self.cluster.silent.add(ADDRESSES[0])
        client = self.makeClient(maxAnswerLength=32)
        d = client.get("a")
        self.cluster.flush()
        first = self.cluster.connections[0]
        for piece in pieces[:-1]:
            first.protocol.dataReceived(piece)
        self.assertFalse(first.transport.disconnecting)
        first.protocol.dataReceived(pieces[-1])
        self.assertTrue(first.transport.disconnecting)
        self.cluster.silent.clear()
        self.advance(1.0)
        self.assertEqual(self.successResultOf(d), "NOT_FOUND")
        self.assertTrue(first.closed)

    def test_unendedAnswerTooLong(self) -> None:
        """An answer line that grows past C{maxAnswerLength} drops its node."""
        self.assertDroppedFor([b"OK " + b"y" * 20, b"y" * 9, b"z"])

    def test_endedAnswerTooLong(self) -> None:
        """So does one that arrives whole, newline and all, in one read."""
        self.assertDroppedFor([b"OK " + b"y" * 29, b"z\n"])

    def test_slowRequestOwnDeadline(self) -> None:
        """
        A request given its own timeout fails only then, and its node may
        stay silent that long: it is not sent elsewhere after the client's
        C{stallTimeout}, which would start it over.
        """
        self.cluster.silent.add(ADDRESSES[0])
        client = self.makeClient(timeout=4.0)
        d = client.request("backup", timeout=30.0)
        self.cluster.flush()
        self.advance(29.9, step=0.1)
        self.assertNoResult(d)
        self.assertFalse(self.cluster.connections[0].transport.disconnecting)
        self.assertEqual(len(self.cluster.connections), 1)
        self.advance(0.1, step=0.1)
        error = self.failureResultOf(d, RequestTimeoutError).value
        self.assertEqual(str(error), "'backup': no answer from 10.0.0.1:7001 within 30s")

    def test_slowRequestStretchesSilence(self) -> None:
        """
        A slow request sent while a quick one waits stretches how long the
        node may stay silent, counted from the start of the silence; once
        both wait past that, the node is left.
        """
        self.cluster.silent.add(ADDRESSES[0])
        client = self.makeClient(timeout=100.0, stallTimeout=2.0)
        quick = client.get("a")
        self.cluster.flush()
        self.clock.advance(1.0)
        slow = client.request("backup", timeout=10.0)
        self.cluster.flush()
        self.clock.advance(8.9)
        self.assertFalse(self.cluster.connections[0].transport.disconnecting)
        self.cluster.silent.clear()  # too late for what it read
        self.clock.advance(0.1)
        self.cluster.flush()
        self.assertTrue(self.cluster.connections[0].closed)
        self.assertEqual(self.successResultOf(quick), "NOT_FOUND")
        self.assertEqual(self.cluster.connections[-1].received, ["get a", "backup"])
        slow.addErrback(lambda _: None)  # the fake node knows no backup


class OnceTests(ClusterClientTestCase):
    """A request sent C{once}: an operator's change, which no session numbers."""

    def test_outcomeUnknownIsTheAnswer(self) -> None:
        """
        An C{UNAVAILABLE} answer that may mean it ran is its answer: it is
        not sent again, to run twice.
        """
        client = self.makeClient()
        self.cluster.scripted[ADDRESSES[0]] = ["UNAVAILABLE s4 has not caught up"]
        d = client.request("add s4 10.0.0.4 1", once=True)
        self.cluster.flush()
        self.assertEqual(self.successResultOf(d), "UNAVAILABLE s4 has not caught up")
        self.assertEqual(self.cluster.connections[0].received, ["add s4 10.0.0.4 1"])

    def test_notRunSentAgain(self) -> None:
        """One that says it did not run is sent again, as any request is."""
        client = self.makeClient()
        self.cluster.scripted[ADDRESSES[0]] = [answers.LEADER_NOT_READY, "OK"]
        d = client.request("remove s3", once=True)
        self.advance(1.0)
        self.assertEqual(self.successResultOf(d), "OK")
        self.assertEqual(
            [c.received for c in self.cluster.connections],
            [["remove s3"], ["remove s3"], ["remove s3"]],  # the second one redirects
        )
