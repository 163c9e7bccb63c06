"""
Fuzz tests of a node's listening side: thousands of random and mutated
peer lines, on connections that have not proved the cluster key and on ones
that have, against a real L{RaftNode} (in-memory stores, a fake clock).

Every line gets exactly one answer or the connection is dropped; nothing
is logged as a failure (a crash in a handler would be); on unauthenticated
connections the node's Raft state does not change at all; on
authenticated ones (a peer holding the key may say anything, however
wrong) the node's own invariants still hold.
"""

from __future__ import annotations

import base64
import json
import random
import re

from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import buildService, makeConfig
from txraft.auth import Initiator
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    RequestVote,
    RequestVoteResponse,
    formatMessage,
)
from txraft.protocol import NodeFactory, NodeProtocol
from txraft.service import RaftService

KEY = b"fuzz-test-cluster-key-0123456789abcdef"

#: Lines per run: thousands, as the issue asks, in well under a second each.
LINES = 3000

SEEDS = [
    formatMessage("s2", AppendEntries(5, 0, 0, (Entry(1, 5, "set a 1"),), 1)),
    formatMessage("s2", AppendEntries(7, 3, 2, (Entry(4, 7, "set b 2"), Entry(5, 7, "del")), 5)),
    formatMessage("s3", RequestVote(9, 4, 3)),
    formatMessage("s3", RequestVote(2, 0, 0, preVote=True)),
    formatMessage("s2", InstallSnapshot(6, 10, 6, 0, json.dumps({"k": "v"}).encode(), done=True)),
    formatMessage("s2", AppendEntriesResponse(3, True, 2)),
    formatMessage("s3", RequestVoteResponse(4, False)),
    "s2@AUTH1 " + "ab" * 32,
    "s2@AUTH2 " + "cd" * 32,
    "intruder@AppendEntries {}",
    "set k v",
    "get k",
    "status",
]


def mutate(line: str, rng: random.Random) -> bytes:
    """One random mutation of C{line}, or random bytes."""
    data = bytearray(line.encode("utf-8"))
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 200)).replace(b"\n", b" ")
    if choice == 1 and data:
        for _ in range(rng.randrange(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 2:
        del data[rng.randrange(len(data) + 1) :]
    elif choice == 3:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.choice(
            [b"-1", b"1e308", b"99999999999999999999", b"null", b'"x"', b"[]"]
        )
    elif choice == 4:
        number = str(rng.choice([-1, 0, 2**63, 10**30, rng.randrange(100)]))
        return re.sub(r"\d+", lambda m: number if rng.random() < 0.3 else m[0], line).encode()
    elif choice == 5:
        data += b" " + base64.b64encode(rng.randbytes(30))
    elif choice == 6:
        data = bytearray(bytes(data).replace(b"s2@", rng.choice([b"s1@", b"s3@", b"@", b"s9@"])))
    return bytes(data).replace(b"\n", b" ").replace(b"\r", b" ")


class FuzzTests(SynchronousTestCase):
    """
    Random and mutated lines against node C{s1}'s listening protocol, with
    the cluster key in force.
    """

    def setUp(self) -> None:
        """Node C{s1} of three on a fake reactor; capture failures logged."""
        self.reactor = MemoryReactorClock()
        self.service: RaftService = buildService(makeConfig(), "s1", self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.factory = NodeFactory(self.service.node, KEY, self.reactor)
        self.failures: list[dict[str, object]] = []

        def observe(event: dict[str, object]) -> None:
            if "log_failure" in event:
                self.failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def connect(self) -> tuple[NodeProtocol, StringTransport]:
        """A new connection to the node."""
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def raftState(self) -> tuple[object, ...]:
        """Everything a peer line could change about the node."""
        core = self.service.node.core
        return (
            core.currentTerm,
            core.votedFor,
            core.log.lastIndex,
            core.log.lastTerm,
            core.commitIndex,
            core.log.compactedIndex,
        )

    def assertOneAnswerOrDropped(self, sent: int, transport: StringTransport) -> None:
        """C{sent} lines got C{sent} answers, or the connection is being dropped."""
        answered = transport.value().count(b"\n")
        if not transport.disconnecting:
            self.assertEqual(answered, sent)
        else:
            self.assertLessEqual(answered, sent)

    def test_unauthenticated(self) -> None:
        """
        On connections that never proved the key, thousands of random and
        mutated lines each get one answer (or the connection is dropped),
        and the node's Raft state is exactly as before.
        """
        rng = random.Random(9)
        before = self.raftState()
        protocol, transport = self.connect()
        sent = 0
        for _ in range(LINES):
            line = mutate(rng.choice(SEEDS), rng)
            if line.split(b" ", 1)[0].split(b"@", 1)[-1] in (b"set", b"delete", b"get"):
                continue  # a client command would (rightly) change the log
            protocol.dataReceived(line + b"\n")
            sent += 1
            self.assertOneAnswerOrDropped(sent, transport)
            if transport.disconnecting:
                protocol.connectionLost()
                protocol, transport = self.connect()
                sent = 0
            self.reactor.advance(0.01)
        self.assertEqual(self.raftState(), before)
        self.assertEqual(self.failures, [])

    def test_authenticated(self) -> None:
        """
        On connections that proved the key (as a peer gone mad might),
        thousands of random and mutated sealed lines each get one answer
        or the connection is dropped, nothing is logged as a failure, and
        the node's invariants hold after every line: its term never goes
        down, its commit index never goes down and never passes its log,
        and its log's terms never decrease nor pass its term.
        """
        rng = random.Random(10)
        protocol, transport, session = self.authenticated()
        sent = 0
        term, commit = 0, 0
        for _ in range(LINES):
            protocol.dataReceived(session.seal(mutate(rng.choice(SEEDS[:7]), rng)) + b"\n")
            sent += 1
            self.assertOneAnswerOrDropped(sent, transport)
            if transport.disconnecting:
                protocol.connectionLost()
                protocol, transport, session = self.authenticated()
                sent = 0
            self.reactor.advance(0.01)
            core = self.service.node.core
            self.assertGreaterEqual(core.currentTerm, term)
            self.assertGreaterEqual(core.commitIndex, commit)
            self.assertLessEqual(core.commitIndex, core.log.lastIndex)
            term, commit = core.currentTerm, core.commitIndex
            terms = [core.log.term(i) for i in range(core.log.firstIndex, core.log.lastIndex + 1)]
            self.assertEqual(terms, sorted(terms))
            self.assertLessEqual(core.log.lastTerm, core.currentTerm)
        self.assertEqual(self.failures, [])
        # The lines reached the core: it took terms and entries from them.
        self.assertGreater(term, 0)
        self.assertGreater(self.service.node.core.log.lastIndex, 0)

    def authenticated(self) -> tuple[NodeProtocol, StringTransport, object]:
        """A new connection on which C{s2} proved the key, and its session."""
        protocol, transport = self.connect()
        initiator = Initiator(KEY, "s2", "s1")
        protocol.dataReceived(initiator.hello().encode() + b"\n")
        proof = initiator.answerChallenge(transport.value().decode().rstrip("\n"))
        transport.clear()
        protocol.dataReceived(proof.encode() + b"\n")
        session = initiator.confirm(transport.value().decode().rstrip("\n"))
        transport.clear()
        return protocol, transport, session
