"""
The simulated clients: each issues one operation at a time to some node,
follows redirects, retries, and records what it saw for the
linearizability check.  Every other client numbers its requests
(C{CLIENTID#SEQ@COMMAND}, see L{txraft.sessions}) and so may retry an
operation whose outcome it does not know as that same operation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from txraft import answers
from txraft.testing.linearizability import Operation, checkHistory

if TYPE_CHECKING:
    from tests.simulation.nodes import SimNode
    from tests.simulation.run import Simulation

#: Why a node that stayed up did not answer, when it did not read the request.
HELD = " (it stopped reading its clients: overloaded, and never drained)"

#: What the simulation answers for a node whose process is down.
CONNECTION_REFUSED = "UNAVAILABLE connection refused"

#: Answers after which a client knows its command did not execute.
NOT_EXECUTED = answers.NOT_EXECUTED | {CONNECTION_REFUSED}

#: Answers counted in the run's statistics, by the name they are counted under.
COUNTED_ANSWERS = {
    answers.LEADERSHIP_LOST: "answeredLeadershipLost",
    answers.DISK_FAILED: "answeredDiskFailed",
    answers.OVERWRITTEN: "answeredOverwritten",
    answers.COMMIT_TIMEOUT: "answeredCommitTimeout",
}


@attrs.define
class HistoryRecord:
    """One client operation as the client saw it; C{end} L{None}: outcome unknown."""

    client: str
    kind: str
    key: str
    value: str | None
    start: float
    end: float | None = None
    result: str | None = None
    found: bool | None = None


@attrs.define
class SimClient:
    """
    A client issuing one operation at a time, following redirects, retrying.

    @ivar numbered: it numbers its requests; C{seq} is its current one's SEQ.
    @ivar onReply: who takes its answers (with the request id, the answer
        line or L{None} for a closed connection, and the node's name), if
        not the workload: the operator's client (L{tests.simulation.operator}).
    @ivar home: for a local reader, the node on whose machine it runs: it
        only reads, from that node alone (through the loopback, so even
        while the machine is off the network), follows no redirect, and
        starts no operation once C{until} or the machine is back on the
        network (L{Workload.startLocalReader}).
    """

    name: str
    numbered: bool = False
    onReply: Callable[[int, str | None, str], None] | None = None
    home: str | None = None
    until: int = 0
    seq: int = 0
    generation: int = 0
    target: str | None = None
    requestId: int = 0
    op: HistoryRecord | None = None
    redirects: int = 0
    count: int = 0
    waitingOn: str | None = None
    sentAt: int = 0

    @property
    def identity(self) -> str:
        """The process name in the history: a new one after each unknown outcome."""
        return self.name if self.generation == 0 else f"{self.name}.{self.generation}"


class Workload:
    """
    The clients of a run and their history.  A request that surely did not
    execute (a redirect, no leader known, an overwritten entry, a refused
    connection) is resent as the same operation; one whose outcome is
    unknown (leadership lost, commit timeout, disk failure, lost
    connection) is retried later, possibly at another node: with the same
    SEQ as the same operation by a client that numbers its requests (it
    runs at most once), else recorded as unknown and retried as a new one.

    @ivar history: the operations every client completed or gave up on.
    @ivar localReaders: the local readers started so far (L{startLocalReader}).
    @ivar stopped: clients start no new operations (the run is ending).
    @ivar livenessClient: the client whose write must commit once the
        faults stop; C{livenessAt} is when it did.
    """

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation
        self.clients = [
            SimClient(f"c{i}", numbered=i % 2 == 1)
            for i in range(1, simulation.options.clients + 1)
        ]
        self.history: list[HistoryRecord] = []
        self.localReaders: list[SimClient] = []
        self.stopped = False
        self.livenessClient: SimClient | None = None
        self.livenessAt: int | None = None

    def start(self) -> None:
        """Each client starts thinking about its first operation."""
        sim = self.sim
        for client in self.clients:
            sim.events.after(sim.rng.randint(*sim.options.thinkMs), self._nextOperation, client)

    def startLivenessWrite(self) -> None:
        """A new client writes once; the run ends when that has committed."""
        self.livenessClient = SimClient("live")
        self._begin(self.livenessClient, "set", "live", f"seed-{self.sim.seed}")

    def busy(self) -> bool:
        """Whether some client waits for an answer."""
        return any(client.op is not None for client in self.clients + self.localReaders)

    def finish(self) -> None:
        """Record every operation still waiting as one whose outcome is unknown."""
        clients = self.clients + self.localReaders
        if self.livenessClient is not None:
            clients.append(self.livenessClient)
        for client in clients:
            if client.op is not None:
                self.history.append(client.op)
                client.op = None

    def checkLinearizable(self) -> None:
        """Check the history with L{txraft.testing.linearizability.checkHistory}."""
        operations = [
            Operation(
                record.client,
                record.kind,
                record.key,
                record.value,
                record.start / 1000,
                None if record.end is None else record.end / 1000,
                record.result,
                found=record.found,
            )
            for record in self.history
        ]
        result = checkHistory(operations, initial={})
        if not result.ok:
            ops = [r for r in self.history if r.key == result.key]
            shown = "\n".join(f"    {r}" for r in ops[:100])
            more = f"\n    ... and {len(ops) - 100} more" if len(ops) > 100 else ""
            self.sim.fail(
                f"Linearizability: the history of key {result.key!r} is not linearizable: "
                f"{result.explanation}\nIts {len(ops)} operations (times in ms):\n{shown}{more}"
            )

    # -- a node's machine off the network ------------------------------------------------

    def machineOffline(self, node: SimNode) -> None:
        """
        C{node}'s machine dropped off the network: the connections of the
        clients elsewhere close (the requests it read stay with it, their
        outcome unknown to their clients); a local reader's stays open.
        """
        for key, client in list(node.inbound.items()):
            if client.home is None:
                del node.inbound[key]
                self._reply(client, key[1], None, node.name)

    def startLocalReader(self, node: SimNode, until: int) -> None:
        """
        A process on C{node}'s machine (a health check, a cache refresher)
        reads keys from it through the loopback, one at a time, until
        C{until} or until the machine is back on the network: while the
        machine is off the network, it is the one client that node has.
        """
        if any(r.home == node.name and r.until > self.sim.now for r in self.localReaders):
            return  # one is reading there already
        name = f"{node.name}-local{len(self.localReaders) + 1}"
        reader = SimClient(name, home=node.name, until=until)
        self.localReaders.append(reader)
        self.sim.stats["localReaders"] += 1
        self.sim.record("{} starts, on {}'s machine, until {} ms", reader.name, node.name, until)
        self.sim.events.after(
            self.sim.rng.randint(*self.sim.options.thinkMs), self._nextOperation, reader
        )

    def _reachable(self, client: SimClient, node: str) -> bool:
        """Whether C{client} can connect to C{node}."""
        return client.home == node or (
            client.home is None and node not in self.sim.network.offline
        )

    # -- one operation ------------------------------------------------------------------

    def _nextOperation(self, client: SimClient) -> None:
        if self.stopped:
            return
        sim = self.sim
        rng = sim.rng
        if client.home is not None:
            if sim.now < client.until and client.home in sim.network.offline:
                self._begin(client, "get", rng.choice(sim.options.keys), None)
            else:
                client.until = 0  # done
            return
        key = rng.choice(sim.options.keys)
        kind = rng.choices(("get", "set", "delete"), (4, 5, 1))[0]
        value = None
        if kind == "set":
            client.count += 1
            value = f"{client.name}-{client.count}"
        self._begin(client, kind, key, value)

    def _begin(self, client: SimClient, kind: str, key: str, value: str | None) -> None:
        client.op = HistoryRecord(client.identity, kind, key, value, self.sim.stamp())
        client.redirects = 0
        if client.numbered:
            client.seq += 1
        self._sendRequest(client)

    def _sendRequest(self, client: SimClient) -> None:
        sim = self.sim
        op = client.op
        assert op is not None
        if client.home is not None:
            client.target = client.home
        if client.target is None:
            client.target = sim.rng.choice(sim.names)
        client.requestId += 1
        text = " ".join(p for p in (op.kind, op.key, op.value) if p is not None)
        seq = client.seq if client.numbered else None
        client.waitingOn = client.target
        client.sentAt = sim.now
        sim.record("{}#{} sends {!r} to {}", client.name, seq, text, client.target)
        node = sim.nodes[client.target]
        if not node.up:
            self._reply(client, client.requestId, CONNECTION_REFUSED, node.name)
        elif not self._reachable(client, node.name):
            # Its machine is off the network: the client cannot connect.
            sim.stats["requestsUnreachable"] += 1
            self._reply(client, client.requestId, CONNECTION_REFUSED, node.name)
        else:
            node.inbound[client.name, client.requestId] = client
            sim.events.after(
                sim.network.delay(), self.arrive, node, client, client.requestId, text, seq
            )
        sim.events.after(
            sim.options.answerTimeoutMs, self._answerTimeout, client, client.requestId
        )

    def arrive(
        self, node: SimNode, client: SimClient, requestId: int, text: str, seq: int | None
    ) -> None:
        """A client request reaches C{node}'s driver, which answers now or later."""
        if (client.name, requestId) not in node.inbound:
            return  # the node crashed since: the client saw its connection close
        if node.paused():
            self.sim.events.at(node.pausedUntil, self.arrive, node, client, requestId, text, seq)
            return
        if node.readingHeld:
            node.heldRequests.append((client, requestId, text, seq))
            return
        self._submit(node, client, requestId, text, seq)

    def _submit(
        self, node: SimNode, client: SimClient, requestId: int, text: str, seq: int | None
    ) -> None:
        """
        Hand a request to C{node}'s driver, then stop reading its clients if
        it is overloaded, as the listening protocol does
        (L{txraft.node.RaftNode.overloaded}).
        """
        node.driver.submit(
            client.name, text, seq, lambda answer: self.answer(node, client, requestId, answer)
        )
        drained = node.driver.overloaded()
        if drained is not None:
            node.readingHeld = True
            self.sim.stats["readingHeld"] += 1
            drained.addCallback(
                lambda _, incarnation=node.incarnation: self._readAgain(node, incarnation)
            )

    def _readAgain(self, node: SimNode, incarnation: int) -> None:
        """C{node} drained: take the requests that waited, until it is overloaded again."""
        if node.incarnation != incarnation or not node.up:
            return
        node.readingHeld = False
        while node.heldRequests and not node.readingHeld:
            client, requestId, text, seq = node.heldRequests.popleft()
            if (client.name, requestId) in node.inbound:
                self._submit(node, client, requestId, text, seq)

    def answer(self, node: SimNode, client: SimClient, requestId: int, text: str) -> None:
        """C{node} sends the answer line C{text} back to a client."""
        if node.disk.powerLost:
            return  # the process is dying: its connections close instead
        if node.inbound.pop((client.name, requestId), None) is None:
            return
        if not isinstance(text, str):
            self.sim.fail(f"{node.name} answered {text!r} to {client.name}, not an answer line")
        counted = COUNTED_ANSWERS.get(text)
        if counted is not None:
            self.sim.stats[counted] += 1
        self._reply(client, requestId, text, node.name)

    def connectionsLost(self, node: SimNode) -> None:
        """C{node}'s process ended: its clients see their connections close."""
        inbound, node.inbound = node.inbound, {}
        for (_, requestId), client in inbound.items():
            self._reply(client, requestId, None, node.name)

    def _reply(self, client: SimClient, requestId: int, text: str | None, nodeName: str) -> None:
        delay = self.sim.network.delay()
        if client.onReply is not None:
            self.sim.events.after(delay, client.onReply, requestId, text, nodeName)
            return
        self.sim.events.after(delay, self._receive, client, requestId, text, nodeName)

    def _answerTimeout(self, client: SimClient, requestId: int) -> None:
        sim = self.sim
        if client.requestId != requestId or client.op is None:
            return
        node = sim.nodes[client.waitingOn or ""]
        if node.up:
            sim.fail(
                f"{client.name}'s request to {node.name}, sent at {client.sentAt} ms, "
                f"got no answer in {sim.options.answerTimeoutMs} ms though the node stayed up"
                + (HELD if node.readingHeld else "")
            )

    def _receive(self, client: SimClient, requestId: int, text: str | None, nodeName: str) -> None:
        if client.requestId != requestId or client.op is None:
            return
        sim = self.sim
        op = client.op
        sim.record("{} gets {!r} from {}", client.name, text, nodeName)
        if text is None:
            self._unknown(client)
            return
        if client.home is not None:
            self._localAnswer(client, op, text)
            return
        redirect = answers.parseRedirect(text)
        if redirect is not None:
            client.target = redirect.leader
            client.redirects += 1
            sim.stats["redirects"] += 1
            if client.redirects <= 3:
                self._sendRequest(client)
            else:
                client.redirects = 0
                sim.events.after(
                    sim.rng.randint(*sim.options.backoffMs), self._sendRequest, client
                )
        elif text in NOT_EXECUTED:
            sim.stats["retriesNotExecuted"] += 1
            client.target = None
            sim.events.after(sim.rng.randint(*sim.options.backoffMs), self._sendRequest, client)
        elif answers.isUnavailable(text):
            self._unknown(client)
        else:
            self._complete(client, op, text)

    def _localAnswer(self, client: SimClient, op: HistoryRecord, text: str) -> None:
        """
        A local reader's answer: a read not executed (a redirect, no
        leader) is dropped, one of unknown outcome recorded as such; either
        way the reader goes on with its next read.
        """
        sim = self.sim
        if answers.parseRedirect(text) is not None or text in NOT_EXECUTED:
            client.op = None
            sim.events.after(sim.rng.randint(*sim.options.backoffMs), self._nextOperation, client)
        elif answers.isUnavailable(text):
            self._unknown(client)
        else:
            self._complete(client, op, text)

    def _complete(self, client: SimClient, op: HistoryRecord, text: str) -> None:
        sim = self.sim
        expected = {"get": ("OK ", "NOT_FOUND"), "set": ("OK",), "delete": ("OK", "NOT_FOUND")}
        valid = text in expected[op.kind] or (op.kind == "get" and text.startswith("OK "))
        if not valid:
            sim.fail(f"{client.name} got {text!r} for {op.kind} {op.key}")
        command = f"set {op.key} {op.value}"
        if client.numbered:
            command = f"{client.name}#{client.seq}@{command}"
        if op.kind == "set" and command not in sim.checker.committedCommands:
            # Every value is written once, so its command is in the log if it ran.
            sim.fail(f"{client.name} was told {text!r} for {command!r}, which never committed")
        op.end = sim.stamp()
        if op.kind != "set":
            op.found = text != answers.NOT_FOUND
        if op.kind == "get" and op.found:
            op.result = answers.okValue(text)
        self.history.append(op)
        client.op = None
        sim.stats["operationsOK"] += 1
        if client is self.livenessClient:
            self.livenessAt = sim.now
            self.stopped = True
            sim.record("liveness write committed {} ms after healing", sim.now - sim.healedAt)
            return
        sim.events.after(sim.rng.randint(*sim.options.thinkMs), self._nextOperation, client)

    def _unknown(self, client: SimClient) -> None:
        """
        The outcome is unknown: retry later with the same SEQ, or (unnumbered)
        record it so, and retry later as a new operation.
        """
        sim = self.sim
        op = client.op
        assert op is not None
        client.target = None
        delay = sim.rng.randint(*sim.options.backoffMs)
        if client.home is not None:
            self.history.append(op)
            client.generation += 1
            client.op = None
            sim.events.after(delay, self._nextOperation, client)
            return
        if client.numbered:
            sim.stats["retriesSameSeq"] += 1
            sim.events.after(delay, self._resend, client, op)
            return
        self.history.append(op)
        sim.stats["operationsUnknown"] += 1
        client.generation += 1
        client.op = None
        sim.events.after(delay, self._retry, client, op.kind, op.key, op.value)

    def _resend(self, client: SimClient, op: HistoryRecord) -> None:
        """Send a numbered operation again, unless the run gave up on it meanwhile."""
        if client.op is op:
            self._sendRequest(client)

    def _retry(self, client: SimClient, kind: str, key: str, value: str | None) -> None:
        if self.stopped and client is not self.livenessClient:
            return
        self.sim.stats["retriesUnknown"] += 1
        self._begin(client, kind, key, value)
