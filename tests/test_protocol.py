"""
Tests for L{txraft.protocol}: the node's listening line protocol for clients
and peers (L{NodeProtocol}).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.helpers import buildService, makeConfig, temporaryDirectory
from txraft import protocol
from txraft.interfaces import IRequestHandler
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Message,
    RequestVote,
    RequestVoteResponse,
    formatMessage,
)
from txraft.peers import PeerClientProtocol
from txraft.protocol import MAX_PENDING, NodeFactory, NodeProtocol
from txraft.service import RaftService
from txraft.storage import FileLogStore, FileStateStore

VOTE_REQUEST = formatMessage("s2", RequestVote(3, 0, 0))

KEY = b"protocol-test-cluster-key-0123456789"
OTHER_KEY = b"another-cluster-key-9876543210-xyz"


@implementer(IRequestHandler)
class FakeNode:
    """
    Stands in for a L{txraft.node.RaftNode}: records what the protocol asks of it and
    answers client requests from C{answers} (a string or a Deferred) or,
    by default, with C{OK <the request>}.
    """

    name = "s1"

    def __init__(self) -> None:
        self.clientRequests: list[tuple[str | None, str]] = []
        #: The SEQ of each client request, L{None} for an unnumbered one.
        self.seqs: list[int | None] = []
        self.peerRequests: list[tuple[str, Message]] = []
        self.answers: list[str | defer.Deferred[str] | Exception] = []
        #: What L{overloaded} gives: L{None}, or a Deferred that fires once drained.
        self.drained: defer.Deferred[None] | None = None
        #: What the next peer requests get, before the default grant.
        self.peerReplies: list[Message | defer.Deferred[Message | None] | None] = []

    def isPeer(self, name: str) -> bool:
        """s2 and s3 are peers."""
        return name in ("s2", "s3")

    def submit(
        self,
        clientId: str | None,
        text: str,
        seq: int | None,
        respond: Callable[[str], object],
    ) -> None:
        """
        Record and answer a client request: at once, or when the Deferred
        of C{answers} fires; an exception of C{answers} is raised.
        """
        self.clientRequests.append((clientId, text))
        self.seqs.append(seq)
        answer = self.answers.pop(0) if self.answers else f"OK {text}"
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, defer.Deferred):
            answer.addCallback(respond)
        else:
            respond(answer)

    def overloaded(self) -> defer.Deferred[None] | None:
        """L{drained}: overloaded while it is set."""
        return self.drained

    def peerRequest(
        self, sender: str, message: Message
    ) -> Message | defer.Deferred[Message | None] | None:
        """Record a peer request; reply from C{peerReplies}, else grant it."""
        self.peerRequests.append((sender, message))
        if self.peerReplies:
            return self.peerReplies.pop(0)
        return RequestVoteResponse(message.term, True)


class NodeProtocolTests(SynchronousTestCase):
    """
    Tests for L{NodeProtocol} with a fake node.
    """

    def test_fakeNodeIsARequestHandler(self) -> None:
        """
        The fake node these tests use provides L{IRequestHandler}, the
        interface the protocol is written against, so it cannot drift from
        the real node.
        """
        self.assertTrue(verifyObject(IRequestHandler, FakeNode()))

    def setUp(self) -> None:
        """
        Connect a L{NodeProtocol} to a L{StringTransport}.
        """
        self.service = FakeNode()
        self.protocol = NodeFactory(self.service).buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def responses(self) -> list[str]:
        """
        The response lines written so far (each must end with a newline).
        """
        data = self.transport.value()
        self.assertTrue(data == b"" or data.endswith(b"\n"), data)
        return [line.decode("utf-8") for line in data.split(b"\n")[:-1]]

    def test_oneResponsePerRequest(self) -> None:
        """
        Each request line gets exactly one response line.
        """
        self.protocol.dataReceived(b"get a\n")
        self.assertEqual(self.responses(), ["OK get a"])
        self.assertEqual(self.service.clientRequests, [(None, "get a")])

    def test_numberedRequest(self) -> None:
        """
        A numbered line, C{CLIENTID#SEQ@COMMAND}, reaches the node as its
        client ID, command and SEQ; an unnumbered one with no SEQ, as before.
        """
        self.protocol.dataReceived(b"c4#7@set b 5\nc4@set b 6\nget b\n")
        self.assertEqual(self.responses(), ["OK set b 5", "OK set b 6", "OK get b"])
        self.assertEqual(
            self.service.clientRequests, [("c4", "set b 5"), ("c4", "set b 6"), (None, "get b")]
        )
        self.assertEqual(self.service.seqs, [7, None, None])

    def test_malformedNumberedRequest(self) -> None:
        """
        A malformed C{CLIENTID#SEQ@} prefix gets one C{ERROR} line in its
        turn, never reaches the node, and the connection goes on.
        """
        self.protocol.dataReceived(b"c#0@set a 1\nc#x@set a 1\nc#@get a\nc#01@get a\nget a\n")
        responses = self.responses()
        self.assertEqual(len(responses), 5)
        for response in responses[:4]:
            self.assertTrue(response.startswith("ERROR invalid SEQ "), response)
        self.assertEqual(responses[4], "OK get a")
        self.assertEqual(self.service.clientRequests, [(None, "get a")])

    def test_pipelinedInOrder(self) -> None:
        """
        Pipelined requests are answered in request order even when a later
        one is answered by the service before an earlier one.
        """
        first: defer.Deferred[str] = defer.Deferred()
        second: defer.Deferred[str] = defer.Deferred()
        self.service.answers = [first, second, "OK third"]
        self.protocol.dataReceived(b"set a 1\nset b 2\nget c\n")
        self.assertEqual(self.responses(), [])
        second.callback("OK second")
        self.assertEqual(self.responses(), [])
        first.callback("OK first")
        self.assertEqual(self.responses(), ["OK first", "OK second", "OK third"])

    def test_laterRequestsAfterAnEarlyOneCompletes(self) -> None:
        """
        Responses flow as soon as every earlier one is known: a slow request
        holds back only the ones after it.
        """
        slow: defer.Deferred[str] = defer.Deferred()
        self.service.answers = ["OK 1", slow, "OK 3"]
        self.protocol.dataReceived(b"a\nb\nc\n")
        self.assertEqual(self.responses(), ["OK 1"])
        slow.callback("OK 2")
        self.assertEqual(self.responses(), ["OK 1", "OK 2", "OK 3"])

    def test_stopsReadingWhileTooManyAnswersWait(self) -> None:
        """
        A client that pipelines more than L{MAX_PENDING} requests the node
        has not answered yet is read no further (its transport is paused
        and the lines already received wait unparsed) until half of them
        are answered; then the rest are read and every request is answered
        in order.
        """
        waiting = [defer.Deferred() for _ in range(MAX_PENDING)]
        self.service.answers = list(waiting)
        lines = b"".join(b"set k%d v\n" % i for i in range(MAX_PENDING + 10))
        self.protocol.dataReceived(lines)
        self.assertEqual(len(self.service.clientRequests), MAX_PENDING)
        self.assertEqual(self.transport.producerState, "paused")
        for d in waiting[: MAX_PENDING // 2 - 1]:
            d.callback("OK")
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(len(self.service.clientRequests), MAX_PENDING)
        waiting[MAX_PENDING // 2 - 1].callback("OK")
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(len(self.service.clientRequests), MAX_PENDING + 10)
        for d in waiting[MAX_PENDING // 2 :]:
            d.callback("OK")
        responses = self.responses()
        self.assertEqual(responses[:MAX_PENDING], ["OK"] * MAX_PENDING)
        self.assertEqual(
            responses[MAX_PENDING:],
            [f"OK set k{i} v" for i in range(MAX_PENDING, MAX_PENDING + 10)],
        )

    def test_failedRequest(self) -> None:
        """
        A request the node fails on still gets one C{ERROR} line, in its
        place, and the failure is logged; the connection goes on.
        """
        later: defer.Deferred[str] = defer.Deferred()
        self.service.answers = [later, RuntimeError("boom"), "OK after"]
        self.protocol.dataReceived(b"a\nb\nc\n")
        later.callback("OK first")
        self.assertEqual(self.responses(), ["OK first", "ERROR internal error", "OK after"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_crlf(self) -> None:
        """
        Lines may end with C{\\r\\n}; the C{\\r} is not part of the request.
        """
        self.protocol.dataReceived(b"get a\r\nc1@set k v\r\n")
        self.assertEqual(self.service.clientRequests, [(None, "get a"), ("c1", "set k v")])
        self.assertEqual(self.responses(), ["OK get a", "OK set k v"])

    def test_partialLines(self) -> None:
        """
        A request split over several reads is answered once it is whole.
        """
        self.protocol.dataReceived(b"ge")
        self.protocol.dataReceived(b"t ")
        self.assertEqual(self.responses(), [])
        self.protocol.dataReceived(b"a\nget")
        self.assertEqual(self.responses(), ["OK get a"])
        self.protocol.dataReceived(b" b\n")
        self.assertEqual(self.responses(), ["OK get a", "OK get b"])

    def test_badUtf8(self) -> None:
        """
        A line that is not UTF-8 gets C{ERROR ...}, reaches no service, and
        the connection stays usable.
        """
        self.protocol.dataReceived(b"set a \xff\xfe\nget a\n")
        responses = self.responses()
        self.assertEqual(len(responses), 2)
        self.assertTrue(responses[0].startswith("ERROR "), responses[0])
        self.assertEqual(responses[1], "OK get a")
        self.assertEqual(self.service.clientRequests, [(None, "get a")])
        self.assertFalse(self.transport.disconnecting)

    def test_unicodeRequest(self) -> None:
        """
        UTF-8 text is decoded for the service and responses are encoded back.
        """
        self.protocol.dataReceived("set clé ☃\n".encode())
        self.assertEqual(self.service.clientRequests, [(None, "set clé ☃")])
        self.assertEqual(self.transport.value(), "OK set clé ☃\n".encode())

    def test_lineTooLong(self) -> None:
        """
        A client line over L{protocol.MAX_REQUEST} bytes gets C{ERROR line
        too long}, is not passed on, and the connection is closed.
        """
        self.protocol.dataReceived(b"set k " + b"x" * protocol.MAX_REQUEST + b"\nget a\n")
        self.assertEqual(self.responses(), ["ERROR line too long"])
        self.assertEqual(self.service.clientRequests, [])
        self.assertTrue(self.transport.disconnecting)

    def test_lineAtLimit(self) -> None:
        """
        A client line of exactly L{protocol.MAX_REQUEST} bytes is accepted.
        """
        line = b"set k " + b"x" * (protocol.MAX_REQUEST - 6)
        self.protocol.dataReceived(line + b"\n")
        self.assertEqual(len(self.service.clientRequests), 1)
        self.assertFalse(self.transport.disconnecting)

    def test_lineTooLongAfterPendingRequest(self) -> None:
        """
        Requests before an over-long line are still answered, in order,
        before C{ERROR line too long}; the connection closes after that.
        """
        pending: defer.Deferred[str] = defer.Deferred()
        self.service.answers = [pending]
        self.protocol.dataReceived(b"get a\n" + b"x" * (protocol.MAX_REQUEST + 1) + b"\n")
        self.assertEqual(self.responses(), [])
        self.assertFalse(self.transport.disconnecting)
        pending.callback("OK first")
        self.assertEqual(self.responses(), ["OK first", "ERROR line too long"])
        self.assertTrue(self.transport.disconnecting)

    def test_unterminatedLineTooLong(self) -> None:
        """
        Bytes beyond the protocol's hard limit without a newline also get
        C{ERROR line too long} and the connection is closed, so a client
        cannot make the node buffer without bound.
        """
        self.protocol.dataReceived(b"x" * (protocol.MAX_LINE + 2))
        self.assertEqual(self.responses(), ["ERROR line too long"])
        self.assertTrue(self.transport.disconnecting)

    def test_longPeerLineAccepted(self) -> None:
        """
        A peer line may be longer than a client request (AppendEntries
        carries batches of entries), up to the protocol's hard limit.
        """
        command = "set k " + "x" * protocol.MAX_REQUEST
        line = formatMessage("s2", AppendEntries(1, 0, 0, (Entry(1, 1, command),), 0))
        self.protocol.dataReceived(line.encode() + b"\n")
        self.assertEqual(len(self.service.peerRequests), 1)
        self.assertFalse(self.transport.disconnecting)

    def test_peerRequest(self) -> None:
        """
        A line C{NAME@RPC JSON} from a configured peer is parsed and stepped
        into the service, and the reply goes back as a peer line from this
        node.
        """
        self.protocol.dataReceived(VOTE_REQUEST.encode() + b"\n")
        self.assertEqual(self.service.peerRequests, [("s2", RequestVote(3, 0, 0))])
        self.assertEqual(
            self.responses(), ['s1@RequestVoteResponse {"term":3,"voteGranted":true}']
        )
        self.assertEqual(self.service.clientRequests, [])

    def test_peerReplyLater(self) -> None:
        """
        A reply the node gives later (once its disk holds what it promises)
        goes back when it comes, and the replies to the requests after it
        wait for it: a peer reads its replies in the order it asked.  A
        later L{None} is the answer of a node that stopped serving.
        """
        later: defer.Deferred[Message | None] = defer.Deferred()
        never: defer.Deferred[Message | None] = defer.Deferred()
        self.service.peerReplies = [later, never]
        self.protocol.dataReceived(VOTE_REQUEST.encode() + b"\n")
        self.protocol.dataReceived(VOTE_REQUEST.encode() + b"\n")
        self.protocol.dataReceived(VOTE_REQUEST.encode() + b"\n")
        self.assertEqual(self.responses(), [])
        later.callback(RequestVoteResponse(3, False))
        self.assertEqual(
            self.responses(), ['s1@RequestVoteResponse {"term":3,"voteGranted":false}']
        )
        never.callback(None)
        self.assertEqual(
            self.responses()[1:],
            [
                "ERROR this node is not serving",
                's1@RequestVoteResponse {"term":3,"voteGranted":true}',
            ],
        )

    def test_peerLineFromUnknownName(self) -> None:
        """
        A peer line naming no configured node is answered C{ERROR} naming
        it, logged, and reaches neither the core nor the client path.
        """
        self.protocol.dataReceived(formatMessage("zz", RequestVote(3, 0, 0)).encode() + b"\n")
        responses = self.responses()
        self.assertEqual(len(responses), 1)
        self.assertTrue(responses[0].startswith("ERROR "), responses[0])
        self.assertIn("zz", responses[0])
        self.assertEqual(self.service.peerRequests, [])
        self.assertEqual(self.service.clientRequests, [])

    def test_malformedPeerLine(self) -> None:
        """
        A peer line from a configured node that does not parse is answered
        C{ERROR} and not passed to the service.
        """
        lines = [
            b"s2@RequestVote",
            b"s2@RequestVote not json",
            b"s2@RequestVote []",
            b's2@RequestVote {"term":1}',
            b's2@RequestVote {"term":-1,"lastLogIndex":0,"lastLogTerm":0}',
            b's2@RequestVote {"term":1,"lastLogIndex":0,"lastLogTerm":0,"extra":1}',
            b's2@AppendEntries {"term":1,"prevLogIndex":0,"prevLogTerm":0,'
            b'"entries":[[2,1,"x"]],"leaderCommit":0}',
        ]
        self.protocol.dataReceived(b"\n".join(lines) + b"\n")
        responses = self.responses()
        self.assertEqual(len(responses), len(lines))
        for response in responses:
            self.assertTrue(response.startswith("ERROR "), response)
        self.assertEqual(self.service.peerRequests, [])
        self.assertEqual(self.service.clientRequests, [])
        self.assertFalse(self.transport.disconnecting)

    def test_responseSentAsRequest(self) -> None:
        """
        A response-type RPC arriving as a request is answered C{ERROR}: the
        server side only handles requests, and each gets its own reply.
        """
        for message in [RequestVoteResponse(3, True), AppendEntriesResponse(3, True, 4)]:
            self.protocol.dataReceived(formatMessage("s2", message).encode() + b"\n")
        responses = self.responses()
        self.assertEqual(len(responses), 2)
        self.assertTrue(responses[0].startswith("ERROR RequestVoteResponse"), responses[0])
        self.assertTrue(responses[1].startswith("ERROR AppendEntriesResponse"), responses[1])
        self.assertEqual(self.service.peerRequests, [])

    def test_atSignInValue(self) -> None:
        """
        A line whose text before its first C{@} is not an ID is a bare
        command: C{set k a@b} comes from an anonymous client.
        """
        self.protocol.dataReceived(b"set k a@b\n")
        self.assertEqual(self.service.clientRequests, [(None, "set k a@b")])

    def test_clientId(self) -> None:
        """
        C{c-4@get a} is the request C{get a} from client C{c-4}, and an ID
        that happens to be a peer's name is still a client when no RPC
        follows.
        """
        self.protocol.dataReceived(b"c-4@get a\ns2@set x y@z\n")
        self.assertEqual(self.service.clientRequests, [("c-4", "get a"), ("s2", "set x y@z")])

    def test_connectionLostWithPending(self) -> None:
        """
        Answers that complete after the connection is gone are dropped
        without error.
        """
        pending: defer.Deferred[str] = defer.Deferred()
        self.service.answers = [pending]
        self.protocol.dataReceived(b"get a\n")
        self.protocol.connectionLost(protocol.CONNECTION_DONE)
        pending.callback("OK late")
        self.assertEqual(self.transport.value(), b"")

    def test_halfCloseAnswersPending(self) -> None:
        """
        A client that closes its sending side after its last request (as
        C{nc -N} does) still gets every answer, in order; then the node
        closes the connection.
        """
        pending: defer.Deferred[str] = defer.Deferred()
        self.service.answers = [pending, "OK second"]
        self.protocol.dataReceived(b"set a 1\nget a\n")
        self.protocol.readConnectionLost()
        self.assertFalse(self.transport.disconnecting)
        pending.callback("OK first")
        self.assertEqual(self.responses(), ["OK first", "OK second"])
        self.assertTrue(self.transport.disconnecting)

    def test_halfCloseIdle(self) -> None:
        """
        A client that half-closes with nothing pending is disconnected at once.
        """
        self.protocol.dataReceived(b"get a\n")
        self.protocol.readConnectionLost()
        self.assertEqual(self.responses(), ["OK get a"])
        self.assertTrue(self.transport.disconnecting)

    def test_linesAfterCloseIgnored(self) -> None:
        """
        Once a connection is closing, later lines are not served.
        """
        self.protocol.connectionLost(protocol.CONNECTION_DONE)
        self.protocol.lineReceived(b"get a")
        self.assertEqual(self.service.clientRequests, [])

    def test_randomBytes(self) -> None:
        """
        Random bytes fed in random chunks never raise, and every complete
        line gets exactly one response, in order.
        """
        rng = random.Random(20240601)
        alphabet = [b"a", b"@", b" ", b"\r", b"\xff", b"\xe2\x98\x83", b"s2", b"c1", b"get"]
        alphabet += [b"RequestVote", b"AppendEntriesResponse", b"{", b'"term":1', b"}"]
        for _ in range(200):
            service = FakeNode()
            node = NodeProtocol(service)
            transport = StringTransport()
            node.makeConnection(transport)
            data = b"".join(
                rng.choice(alphabet + [b"\n"] * 2) for _ in range(rng.randrange(0, 200))
            )
            position = 0
            while position < len(data):
                size = rng.randrange(1, 20)
                node.dataReceived(data[position : position + size])
                position += size
            completeLines = data.count(b"\n")
            output = transport.value()
            self.assertEqual(output.count(b"\n"), completeLines, data)
            answered = len(service.clientRequests) + len(service.peerRequests)
            errors = [line for line in output.split(b"\n") if line.startswith(b"ERROR ")]
            self.assertEqual(answered + len(errors), completeLines, data)


class NodeProtocolWithServiceTests(SynchronousTestCase):
    """
    Tests for L{NodeProtocol} in front of a real L{RaftService} on a
    L{MemoryReactorClock}.
    """

    def setUp(self) -> None:
        """
        A follower C{s1} of a three-node cluster, started on a fake reactor.
        """
        self.reactor = MemoryReactorClock()
        self.service = buildService(makeConfig(), "s1", self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def connect(self, service: RaftService | None = None) -> tuple[NodeProtocol, StringTransport]:
        """
        A new connection to C{service} (default: C{s1}).
        """
        node = NodeFactory((service or self.service).node).buildProtocol(None)
        transport = StringTransport()
        node.makeConnection(transport)
        return node, transport

    def test_peerLineStepsCore(self) -> None:
        """
        A RequestVote from a peer with a newer term is granted, and the
        node's term follows it (Reference: Figure 2, RequestVote RPC).
        """
        node, transport = self.connect()
        node.dataReceived(VOTE_REQUEST.encode() + b"\n")
        self.assertEqual(
            transport.value(), b's1@RequestVoteResponse {"term":3,"voteGranted":true}\n'
        )
        self.assertEqual(self.service.node.core.currentTerm, 3)

    def test_rejectedPeerLinesChangeNoState(self) -> None:
        """
        Peer lines that are rejected (malformed, a response sent as a
        request, this node's own name) change neither the term nor the vote
        nor the log.  (A sender outside the membership is heard: the
        membership changes, and a new leader may not be in this node's log
        yet; only the cluster key keeps strangers out.)
        """
        node, transport = self.connect()
        lines = [
            formatMessage("s1", RequestVote(9, 5, 5)),
            "s2@RequestVote {bad",
            formatMessage("s2", RequestVoteResponse(9, True)),
            formatMessage("s2", AppendEntriesResponse(9, True, 3)),
        ]
        node.dataReceived("".join(line + "\n" for line in lines).encode())
        responses = transport.value().split(b"\n")[:-1]
        self.assertEqual(len(responses), len(lines))
        for response in responses:
            self.assertTrue(response.startswith(b"ERROR "), response)
        self.assertEqual(self.service.node.core.currentTerm, 0)
        self.assertEqual(self.service.node.core.votedFor, None)
        self.assertEqual(self.service.node.core.log.lastIndex, 0)

    def test_randomLines(self) -> None:
        """
        Random client commands, mangled peer messages and random bytes fed
        in random chunks to a real node never raise, and every complete
        line gets exactly one response.
        """
        rng = random.Random(7)
        node, transport = self.connect()
        templates = [
            "get a",
            "set a {n}",
            "c{n}@delete a",
            "show",
            "status",
            's2@RequestVote {{"term":{n},"lastLogIndex":{n},"lastLogTerm":{n}}}',
            's3@AppendEntries {{"term":{n},"prevLogIndex":0,"prevLogTerm":0,'
            '"entries":[[1,{n},"set b {n}"]],"leaderCommit":{n}}}',
            's2@AppendEntries {{"term":{n},"prevLogIndex":{n},"prevLogTerm":{n},'
            '"entries":[],"leaderCommit":{n}}}',
        ]
        lines = 0
        for _ in range(500):
            if rng.random() < 0.2:
                line = bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
                line = line.replace(b"\n", b"")
            else:
                text = rng.choice(templates).format(n=rng.randrange(1, 4))
                if rng.random() < 0.3:
                    cut = rng.randrange(len(text))
                    text = text[:cut] + rng.choice(["", "x", "@", "}", " "]) + text[cut + 1 :]
                line = text.encode()
            data = line + b"\n"
            lines += 1
            while data:
                size = rng.randrange(1, 40)
                node.dataReceived(data[:size])
                data = data[size:]
            self.reactor.advance(rng.choice([0, 0.01]))
        self.reactor.advance(1)
        self.assertEqual(transport.value().count(b"\n"), lines)

    def test_lonePeerSurrogatePersisted(self) -> None:
        """
        A peer AppendEntries whose command holds a lone surrogate (valid
        JSON, not encodable text) is answered C{ERROR} and changes no state;
        in particular no retry of it may be acknowledged as stored, since it
        never reached the disk (Reference: Figure 2, "persistent state ...
        updated on stable storage before responding to RPCs").
        """
        directory = temporaryDirectory(self)
        logManager = LogManager(
            FileLogStore(os.path.join(directory, "s1.log")),
            FileStateStore(os.path.join(directory, "s1.state")),
            KeyValueStore(),
        )
        service = RaftService(makeConfig(), "s1", logManager, MemoryReactorClock())
        self.addCleanup(logManager.logStore.close)
        line = (
            b's2@AppendEntries {"term":1,"prevLogIndex":0,"prevLogTerm":0,'
            b'"entries":[[1,1,"set a \\udc80"]],"leaderCommit":0}\n'
        )
        answers = []
        for _ in range(2):
            node, transport = self.connect(service)
            try:
                node.dataReceived(line)
            except UnicodeError:
                pass
            answers.append(transport.value())
        self.assertFalse(any(b'"success":true' in answer for answer in answers), answers)
        self.assertTrue(all(answer.startswith(b"ERROR ") for answer in answers), answers)
        self.assertEqual(service.node.core.log.lastIndex, 0)


class KeyedConnectionTests(SynchronousTestCase):
    """
    A node with a cluster key (L{NodeProtocol}) and a peer link's protocol
    (L{PeerClientProtocol}) talking in memory: peer lines are taken only
    after both sides proved the key, and only with a MAC.
    """

    def connect(
        self, serverKey: bytes | None = KEY, clientKey: bytes | None = KEY
    ) -> tuple[PeerClientProtocol, NodeProtocol, iosim.IOPump]:
        """
        Connect C{s2}'s peer protocol (keyed with C{clientKey}) to C{s1}'s
        node (keyed with C{serverKey}) and run the conversation to rest.
        """
        self.node = FakeNode()
        self.linked: list[PeerClientProtocol] = []
        self.authFailures: list[str] = []

        def client() -> PeerClientProtocol:
            protocol = PeerClientProtocol("s2", "s1", clientKey)
            protocol.onConnectionMade = self.linked.append
            protocol.onAuthFailed = self.authFailures.append
            return protocol

        peer, server, pump = iosim.connectedServerAndClient(
            lambda: NodeFactory(self.node, serverKey).buildProtocol(None), client
        )
        pump.flush()
        return peer, server, pump

    def test_handshakeThenRequests(self) -> None:
        """
        With the same key the link is up once the handshake is done, and
        requests and answers flow, with a MAC on each line both ways.
        """
        peer, server, pump = self.connect()
        self.assertEqual(self.linked, [peer])
        self.assertEqual(server.session.peerName, "s2")
        d = peer.sendRequest(RequestVote(3, 0, 0))
        pump.flush()
        self.assertEqual(self.successResultOf(d), RequestVoteResponse(3, True))
        self.assertEqual(self.node.peerRequests, [("s2", RequestVote(3, 0, 0))])

    def test_wrongKeyGetsNothing(self) -> None:
        """
        A peer with another key never counts as connected, and the node
        takes none of its lines.
        """
        peer, server, pump = self.connect(clientKey=OTHER_KEY)
        self.assertEqual(self.linked, [])
        self.assertEqual(len(self.authFailures), 1)
        self.assertIsNone(server.session)
        self.assertEqual(self.node.peerRequests, [])

    def test_unkeyedPeerRefused(self) -> None:
        """
        A peer without a key sends plain peer lines: each is answered with
        C{ERROR not authenticated} and changes nothing.
        """
        peer, server, pump = self.connect(clientKey=None)
        d = peer.sendRequest(AppendEntries(101, 6, 1, (Entry(7, 101, "set pwned yes"),), 7))
        pump.flush()
        self.assertIn("not authenticated", str(self.failureResultOf(d).value))
        self.assertEqual(self.node.peerRequests, [])

    def test_keyedPeerAndUnkeyedNode(self) -> None:
        """
        A node without a key answers a handshake with an C{ERROR}: a keyed
        peer never links to it.
        """
        peer, server, pump = self.connect(serverKey=None)
        self.assertEqual(self.linked, [])
        self.assertEqual(len(self.authFailures), 1)

    def test_injectedLineDropsConnection(self) -> None:
        """
        A line injected into an authenticated stream (no valid MAC) is not
        taken, and the node hangs up.
        """
        peer, server, pump = self.connect()
        forged = formatMessage("s2", AppendEntries(101, 6, 1, (Entry(7, 101, "set x"),), 7))
        server.dataReceived(forged.encode() + b"\n")
        pump.flush()
        self.assertEqual(self.node.peerRequests, [])
        self.assertTrue(server.transport.disconnecting)

    def test_alteredLineDropsConnection(self) -> None:
        """
        A sealed line altered in transit is not taken, and the node hangs up.
        """
        peer, server, pump = self.connect()
        d = peer.sendRequest(RequestVote(3, 0, 0))
        sealed = pump.clientIO.stream  # what the peer wrote, not yet delivered
        data = b"".join(sealed).replace(b'"term":3', b'"term":9')
        del sealed[:]
        server.dataReceived(data)
        pump.flush()
        self.assertIn("MAC does not verify", str(self.failureResultOf(d).value))
        self.assertEqual(self.node.peerRequests, [])
        self.assertTrue(server.transport.disconnecting)

    def test_answerInjectedToPeerDropsIt(self) -> None:
        """
        On the link's side too: an answer without a valid MAC is not taken,
        and the link hangs up.
        """
        peer, server, pump = self.connect()
        d = peer.sendRequest(RequestVote(3, 0, 0))
        peer.dataReceived(formatMessage("s1", RequestVoteResponse(3, True)).encode() + b"\n")
        self.assertNoResult(d)
        self.assertTrue(peer.transport.disconnecting)

    def test_handshakeOutOfOrder(self) -> None:
        """
        C{AUTH2} first, or anything but C{AUTH2} between C{AUTH1} and it,
        gets an C{ERROR} and the connection is dropped.
        """
        for lines in [
            [b"s2@AUTH2 " + b"00" * 32],
            [b"s2@AUTH1 " + b"00" * 32, b"get a"],
        ]:
            node = FakeNode()
            protocol = NodeFactory(node, KEY).buildProtocol(None)
            transport = StringTransport()
            protocol.makeConnection(transport)
            protocol.dataReceived(b"".join(line + b"\n" for line in lines))
            self.assertTrue(transport.value().split(b"\n")[-2].startswith(b"ERROR "))
            self.assertTrue(transport.disconnecting)
            self.assertEqual(node.clientRequests, [])

    def test_adminCommandsNeedTheKey(self) -> None:
        """
        Every operator's command (L{txraft.admin}) gets C{ERROR not
        authorized} on a keyed node unless the connection proved the key;
        data commands need no key.
        """
        node = FakeNode()
        plain = NodeFactory(node, KEY).buildProtocol(None)
        transport = StringTransport()
        plain.makeConnection(transport)
        commands = [
            b"members",
            b"add s4 127.0.0.1 10003",
            b"add-learner s4 127.0.0.1 10003",
            b"remove s2",
            b"transfer-leader",
            b"transfer-leader s2",
            b"backup",
        ]
        plain.dataReceived(b"".join(command + b"\n" for command in commands) + b"get a\n")
        self.assertEqual(
            transport.value(), b"ERROR not authorized\n" * len(commands) + b"OK get a\n"
        )
        self.assertEqual(node.clientRequests, [(None, "get a")])

        peer, server, pump = self.connect()
        server.lineReceived(peer._session.seal(b"admin@transfer-leader s2"))
        self.assertEqual(self.node.clientRequests, [("admin", "transfer-leader s2")])

    def test_unauthenticatedWarningsLimited(self) -> None:
        """
        A flood of unauthenticated peer lines is each answered, but only a
        few warnings are logged.
        """
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        protocol = NodeFactory(FakeNode(), KEY, Clock()).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived((VOTE_REQUEST + "\n").encode() * 1000)
        self.assertEqual(transport.value().count(b"ERROR not authenticated"), 1000)
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertLessEqual(len(warnings), 5)
        self.assertGreater(len(warnings), 0)


class AnswerWriteTests(SynchronousTestCase):
    """
    How answers reach the transport: a lone request's at once, a pipelined
    batch's in one write at the end of the reactor turn.
    """

    def connect(self) -> tuple[FakeNode, NodeProtocol, list[bytes], Clock]:
        """A protocol over a fake node with a clock; the list of its transport's writes."""
        node, clock = FakeNode(), Clock()
        protocol_ = NodeFactory(node, None, clock).buildProtocol(None)
        transport = StringTransport()
        writes: list[bytes] = []
        write = transport.write

        def recording(data: bytes) -> None:
            writes.append(data)
            write(data)

        transport.write = recording  # type: ignore[method-assign]
        protocol_.makeConnection(transport)
        return node, protocol_, writes, clock

    def test_loneAnswerAtOnce(self) -> None:
        """The answer to the only request waiting is written when it comes."""
        node, protocol_, writes, _ = self.connect()
        answer: defer.Deferred[str] = defer.Deferred()
        node.answers = [answer]
        protocol_.dataReceived(b"get a\n")
        self.assertEqual(writes, [])
        answer.callback("OK 1")
        self.assertEqual(writes, [b"OK 1\n"])

    def test_batchInOneWriteAtTheTurnsEnd(self) -> None:
        """
        Answers that come while later requests of the connection still wait
        are written together when the reactor turn ends, in order; once the
        last request waiting is answered, everything goes at once.
        """
        node, protocol_, writes, clock = self.connect()
        answers: list[defer.Deferred[str]] = [defer.Deferred() for _ in range(4)]
        node.answers = list(answers)
        protocol_.dataReceived(b"get a\nget b\nget c\nget d\n")
        answers[1].callback("OK 2")
        answers[0].callback("OK 1")
        self.assertEqual(writes, [])
        clock.advance(0)
        self.assertEqual(writes, [b"OK 1\nOK 2\n"])
        answers[2].callback("OK 3")
        answers[3].callback("OK 4")
        self.assertEqual(writes, [b"OK 1\nOK 2\n", b"OK 3\nOK 4\n"])
        clock.advance(0)
        self.assertEqual(len(writes), 2)

    def test_lostConnectionDropsTheTurnsAnswers(self) -> None:
        """A connection lost before the turn's end writes nothing more."""
        node, protocol_, writes, clock = self.connect()
        answers: list[defer.Deferred[str]] = [defer.Deferred(), defer.Deferred()]
        node.answers = list(answers)
        protocol_.dataReceived(b"get a\nget b\n")
        answers[0].callback("OK 1")
        protocol_.connectionLost()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(0)
        self.assertEqual(writes, [])

    def test_ownLinesAfterTheTurnsAnswers(self) -> None:
        """A line the protocol sends of its own goes after the answers taken before it."""
        node, protocol_, writes, _ = self.connect()
        answers: list[defer.Deferred[str]] = [defer.Deferred(), defer.Deferred()]
        node.answers = list(answers)
        protocol_.dataReceived(b"get a\nget b\n")
        answers[0].callback("OK 1")
        protocol_.sendLine(b"AUTH challenge")
        self.assertEqual(b"".join(writes), b"OK 1\nAUTH challenge\n")


class StrangerLimitTests(SynchronousTestCase):
    """
    What one connection can make a node hold, and when the node stops
    reading it: pending answers, an overloaded node (admission control), a
    client that reads no answers, a partial line, and how many connections
    are open at once.
    """

    def connect(
        self, clock: Clock | None = None, clusterKey: bytes | None = None
    ) -> tuple[FakeNode, NodeProtocol, StringTransport]:
        """A L{NodeProtocol} over a fake node, connected to a L{StringTransport}."""
        node = FakeNode()
        protocol = NodeFactory(node, clusterKey, clock).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return node, protocol, transport

    def test_pausedWhileAnswersPending(self) -> None:
        """
        A client that pipelines more requests than L{MAX_PENDING}
        whose answers are not ready is not read from past that many; once
        half are answered the node reads again.
        """
        node, protocol_, transport = self.connect()
        pending = [defer.Deferred() for _ in range(protocol.MAX_PENDING + 10)]
        node.answers = list(pending)
        protocol_.dataReceived(b"get k\n" * len(pending))
        self.assertEqual(len(node.clientRequests), protocol.MAX_PENDING)
        self.assertEqual(transport.producerState, "paused")
        for d in pending[: protocol.MAX_PENDING // 2]:
            d.callback("OK")
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(node.clientRequests), len(pending))

    def test_pausedWhileNodeOverloaded(self) -> None:
        """
        A client request that leaves the node overloaded is the last one the
        connection reads: the lines already received wait unparsed until
        the node has drained, then they are read and answered in order.
        """
        node, protocol_, transport = self.connect()
        node.answers = ["OK a"]
        node.drained = drained = defer.Deferred()
        protocol_.dataReceived(b"get a\nget b\nget c\n")
        self.assertEqual(node.clientRequests, [(None, "get a")])
        self.assertEqual(transport.producerState, "paused")
        node.drained = None
        drained.callback(None)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual([text for _, text in node.clientRequests], ["get a", "get b", "get c"])
        self.assertEqual(transport.value(), b"OK a\nOK get b\nOK get c\n")

    def test_peerLinesReadWhileNodeOverloaded(self) -> None:
        """
        Peer lines do not wait for an overloaded node to drain: its
        heartbeats, their answers and votes must get through.
        """
        node, protocol_, transport = self.connect()
        node.drained = defer.Deferred()
        protocol_.dataReceived(VOTE_REQUEST.encode() + b"\n" + VOTE_REQUEST.encode() + b"\n")
        self.assertEqual(len(node.peerRequests), 2)
        self.assertEqual(transport.producerState, "producing")

    def test_pausedWhileClientDoesNotRead(self) -> None:
        """
        The protocol is its transport's producer: when the transport's write
        buffer fills (the client reads no answers) it stops reading
        requests, and reads them again when the buffer drains.
        """
        node, protocol_, transport = self.connect()
        self.assertIs(transport.producer, protocol_)
        self.assertTrue(transport.streaming)
        protocol_.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol_.dataReceived(b"get a\nget b\n")
        self.assertEqual(node.clientRequests, [])
        protocol_.resumeProducing()
        self.assertEqual(node.clientRequests, [(None, "get a"), (None, "get b")])
        self.assertEqual(transport.producerState, "producing")

    def test_endOfInputWhilePaused(self) -> None:
        """
        A client that sends all its requests and closes its side while the
        node is paused still gets every answer, then the node closes.
        """
        node, protocol_, transport = self.connect()
        count = protocol.MAX_PENDING * 2
        pending = [defer.Deferred() for _ in range(count)]
        node.answers = list(pending)
        protocol_.dataReceived(b"get k\n" * count)
        protocol_.readConnectionLost()
        self.assertFalse(transport.disconnecting)
        for d in pending:
            d.callback("OK")
        self.assertEqual(transport.value(), b"OK\n" * count)
        self.assertTrue(transport.disconnecting)

    def test_partialLineTimesOut(self) -> None:
        """
        A connection that sends part of a line and then nothing is closed
        after the idle timeout, even if it trickles more of the line.
        """
        clock = Clock()
        node, protocol_, transport = self.connect(clock)
        protocol_.dataReceived(b"get a\nset k ")
        clock.advance(protocol.IDLE_TIMEOUT - 1)
        protocol_.dataReceived(b"v")
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(node.clientRequests, [(None, "get a")])

    def test_idleBetweenLinesIsFine(self) -> None:
        """A client idle between whole lines is never timed out."""
        clock = Clock()
        node, protocol_, transport = self.connect(clock)
        protocol_.dataReceived(b"set k ")
        protocol_.dataReceived(b"v\n")
        clock.advance(protocol.IDLE_TIMEOUT * 10)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unfinishedHandshakeTimesOut(self) -> None:
        """A handshake begun and never finished is closed after the idle timeout."""
        clock = Clock()
        node, protocol_, transport = self.connect(clock, KEY)
        protocol_.dataReceived(b"s2@AUTH1 " + b"00" * 32 + b"\n")
        self.assertTrue(transport.value().startswith(b"s1@AUTH1 "))
        clock.advance(protocol.IDLE_TIMEOUT)
        self.assertTrue(transport.disconnected)

    def test_maxConnections(self) -> None:
        """
        Beyond C{maxConnections} a stranger's connection is refused at once
        (no protocol is built, so Twisted closes it), a peer's never is, and
        a slot freed by a closed connection can be taken again.
        """
        factory = NodeFactory(FakeNode(), maxConnections=2, peerHosts=frozenset({"10.0.0.2"}))

        def accept(host: str) -> NodeProtocol | None:
            protocol_ = factory.buildProtocol(IPv4Address("TCP", host, 40000))
            if protocol_ is not None:
                protocol_.makeConnection(StringTransport())
            return protocol_

        first, second = accept("10.0.0.9"), accept("10.0.0.9")
        self.assertIsNone(accept("10.0.0.9"))
        self.assertIsNotNone(accept("10.0.0.2"))
        first.connectionLost()
        second.connectionLost()
        self.assertIsNotNone(accept("10.0.0.9"))
