"""
Fault injection against a real cluster, with a linearizability verdict.

Several clients, each a thread with its own connection, send random C{get},
C{set} and C{delete} requests on a few keys (every C{set} writes a value no
other write uses, C{CLIENT-SEQ}) and record each operation's invocation and
response times and outcome.  Meanwhile a nemesis thread keeps hurting one
node at a time (or more, if asked): C{kill -9} and restart a random node,
freeze one with C{SIGSTOP} for under two seconds, or C{kill -9} the current
leader.  At the end every node is healed, every key is read once more, and
the whole history goes to L{txraft.testing.linearizability.checkHistory}.

How outcomes are recorded:

  - C{OK ...} and C{NOT_FOUND}: a known outcome;
  - C{REDIRECT}, C{UNAVAILABLE no leader known} (the node did not take the
    request) and a refused connection (nothing was sent): definite failures,
    retried on another node until the operation's retry time runs out, and
    then left out of the history;
  - any other C{UNAVAILABLE}, a timeout, a connection lost after sending:
    unknown outcome (the operation may take effect later, or never);
  - C{ERROR} or anything unexpected: an anomaly, reported.

This is the shared engine of C{tests/test_chaos.py} and C{bench/soak.py}.
It is for blocking callers, like L{txraft.testing.localcluster}: threads,
plain sockets and wall-clock time, no reactor.  The nemesis schedule (which
fault, which node, how long, how long between faults) comes from the seed
alone, so a seed reproduces the schedule, though not the timing of
everything else (nor, when several faults may overlap, how the schedules
interleave).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import attrs

from txraft import answers
from txraft.client import LineConnection, formatRequest
from txraft.testing.linearizability import CheckResult, Operation, checkHistory
from txraft.testing.localcluster import ClusterError, LocalCluster

#: What the workload does, by weight.
KIND_WEIGHTS = {"get": 4, "set": 4, "delete": 1}

#: The kinds of fault the nemesis injects.
FAULTS = ("kill", "pause", "kill-leader")

#: The longest a node stays frozen, in seconds: long enough for the others
#: to elect a new leader, short enough that its clients' TCP connections and
#: its peers' links survive the freeze.
MAX_PAUSE = 1.9


@attrs.frozen
class Fault:
    """One fault the nemesis injected: what, to which node, when, for how long."""

    kind: str
    node: str
    #: When it was injected, in L{time.monotonic} seconds.
    at: float
    #: How long the node was down or frozen, in seconds.
    held: float

    def describe(self, origin: float) -> str:
        """One line, with times relative to C{origin}."""
        return f"{self.at - origin:8.3f}s {self.kind} {self.node} for {self.held:.3f}s"


@attrs.define
class ChaosReport:
    """What a run did and what the checker made of it."""

    seed: int
    #: Every operation with a known or unknown outcome, final reads included.
    history: list[Operation]
    faults: list[Fault]
    #: Known outcomes during the faulty phase (the final reads excluded).
    ok: int
    #: Unknown outcomes (timeouts, lost connections, C{UNAVAILABLE}).
    unknown: int
    #: Operations dropped after definite failures only (no leader in time).
    failed: int
    #: Anything that should never happen (C{ERROR}, malformed answers,
    #: a thread that did not stop, a node that could not be healed).
    anomalies: list[str]
    #: What the final reads returned, by key (L{None}: C{NOT_FOUND}).
    finalValues: dict[str, str | None]
    verdict: CheckResult
    #: When the run started, in L{time.monotonic} seconds, and how long the
    #: faulty phase and the check took.
    started: float
    faultySeconds: float
    checkSeconds: float

    def summary(self) -> str:
        """A few lines for humans: counts, faults, verdict."""
        kinds = {kind: sum(f.kind == kind for f in self.faults) for kind in FAULTS}
        lines = [
            f"seed {self.seed}: {self.faultySeconds:.1f}s of faults, {len(self.faults)} injected "
            f"({', '.join(f'{n} {k}' for k, n in kinds.items())})",
            f"operations: {self.ok} ok, {self.unknown} unknown outcome, {self.failed} failed "
            f"(dropped), {len(self.history)} in the history",
            f"final values: {self.finalValues}",
            f"checker ({self.checkSeconds:.2f}s): "
            + ("linearizable" if self.verdict.ok else f"NOT linearizable, key {self.verdict.key}"),
        ]
        if self.anomalies:
            lines.append(f"anomalies ({len(self.anomalies)}):")
            lines.extend(f"  {a}" for a in self.anomalies[:20])
        return "\n".join(lines)


class Recorder:
    """The history and counters, shared by the client threads (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.history: list[Operation] = []
        self.ok = 0
        self.unknown = 0
        self.failed = 0
        self.anomalies: list[str] = []

    def record(self, operation: Operation) -> None:
        """Add an operation with a known or unknown outcome to the history."""
        with self.lock:
            self.history.append(operation)
            if operation.end is None:
                self.unknown += 1
            else:
                self.ok += 1

    def fail(self) -> None:
        """Count an operation dropped after definite failures only."""
        with self.lock:
            self.failed += 1

    def anomaly(self, text: str) -> None:
        """Note something that should never happen."""
        with self.lock:
            self.anomalies.append(text)


class WorkloadClient:
    """
    One client: a connection to the node it believes leads, one request at
    a time, each operation recorded once with its outcome.
    """

    def __init__(
        self,
        name: str,
        addresses: Mapping[str, tuple[str, int]],
        recorder: Recorder,
        rng: random.Random,
        requestTimeout: float,
        retryFor: float,
    ) -> None:
        """
        @param addresses: every node's C{(host, port)}, by name.
        @param requestTimeout: how long to wait for a connection or an
            answer before the outcome counts as unknown.
        @param retryFor: how long to keep retrying an operation that only
            met definite failures before dropping it.
        """
        self.name = name
        self.addresses = dict(addresses)
        self.recorder = recorder
        self.rng = rng
        self.requestTimeout = requestTimeout
        self.retryFor = retryFor
        self.target = rng.choice(list(self.addresses))
        self.connection: LineConnection | None = None
        self.sequence = 0

    def run(self, keys: Sequence[str], stop: threading.Event) -> None:
        """Send random operations until C{stop} is set."""
        kinds = list(KIND_WEIGHTS)
        weights = list(KIND_WEIGHTS.values())
        try:
            while not stop.is_set():
                kind = self.rng.choices(kinds, weights)[0]
                key = self.rng.choice(keys)
                value = None
                if kind == "set":
                    self.sequence += 1
                    value = f"{self.name}-{self.sequence}"
                self.perform(kind, key, value)
        except Exception as e:  # a crashed client is reported, not lost
            self.recorder.anomaly(f"client {self.name} crashed: {e!r}")
        finally:
            self.close()

    def perform(self, kind: str, key: str, value: str | None) -> Operation | None:
        """
        Carry out one operation and add it to the history, with a known or
        unknown outcome, and return it; or return L{None} if it is dropped:
        counted as failed if it met only definite failures until its retry
        time ran out, or reported as an anomaly if the answer was wrong.
        """
        command = f"{kind} {key}" if value is None else f"{kind} {key} {value}"
        line = formatRequest(self.name, command)
        start = time.monotonic()
        giveUp = start + self.retryFor
        while True:
            answered = self._attempt(line)
            now = time.monotonic()
            if answered is not None:
                break
            # A definite failure: the request was not taken; try again.
            if now >= giveUp:
                self.recorder.fail()
                return None
            time.sleep(0.02)
        response, node = answered
        operation = self._outcome(kind, key, value, start, now, response, node)
        if operation is not None:
            self.recorder.record(operation)
        return operation

    def _attempt(self, line: str) -> tuple[str | None, str] | None:
        """
        Send C{line} to the current target.  Return L{None} for a definite
        failure (after which the target has moved on), or the response
        (L{None} if unknown: silence or a lost connection) and the node.
        """
        node = self.target
        if self.connection is None:
            try:
                self.connection = LineConnection(*self.addresses[node], self.requestTimeout)
            except OSError:
                self._moveOn()
                return None
        try:
            response = self.connection.request(line)
        except OSError:
            self.close()
            self._moveOn()
            return None, node
        if self._redirected(node, line, response):
            return None
        if response == answers.NO_LEADER:
            self._moveOn()
            return None
        return response, node

    def _redirected(self, node: str, line: str, response: str) -> bool:
        """
        Whether C{response} is a C{REDIRECT}: if so, turn to the leader it
        names, or report it as an anomaly and move on if it is malformed or
        names no node of the cluster.
        """
        try:
            redirect = answers.parseRedirect(response)
            if redirect is None:
                return False
        except answers.AnswerError:
            redirect = None
        if redirect is None or redirect.leader not in self.addresses:
            self.recorder.anomaly(f"{node} answered {line!r} with {response!r}")
            self._moveOn()
        else:
            self.close()
            self.target = redirect.leader
        return True

    def _outcome(
        self,
        kind: str,
        key: str,
        value: str | None,
        start: float,
        end: float,
        response: str | None,
        node: str,
    ) -> Operation | None:
        """The recorded operation for C{response}, or L{None} for an anomaly."""
        who = f"{self.name}/{node}"
        if response is None or answers.isUnavailable(response):
            return Operation(who, kind, key, value, start, None, None)
        if kind == "get" and (result := answers.okValue(response)) is not None:
            return Operation(who, kind, key, value, start, end, result, True)
        if kind in ("get", "delete") and response == answers.NOT_FOUND:
            return Operation(who, kind, key, value, start, end, None, False)
        if kind in ("set", "delete") and response == answers.OK:
            return Operation(who, kind, key, value, start, end, None, True)
        self.recorder.anomaly(f"{node} answered {kind} {key} {value or ''} with {response!r}")
        return None

    def _moveOn(self) -> None:
        self.close()
        names = list(self.addresses)
        self.target = names[(names.index(self.target) + 1) % len(names)]

    def close(self) -> None:
        """Close the connection, if any."""
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class Nemesis:
    """
    Injects faults into a cluster from a seeded schedule, healing each
    before the next: one at a time, or (with C{overlap}) from several
    schedules at once, never two on one node.
    """

    def __init__(
        self,
        cluster: LocalCluster,
        rng: random.Random,
        gap: tuple[float, float] = (0.3, 1.5),
        downFor: tuple[float, float] = (0.1, 1.5),
        log: Callable[[str], None] | None = None,
        overlap: int = 1,
    ) -> None:
        """
        @param gap: the range of seconds between a heal and the next fault.
        @param downFor: the range of seconds a node stays killed or frozen
            (a freeze lasts at most L{MAX_PAUSE}).
        @param overlap: how many faults may be in force at once.  With one,
            a majority of three or more nodes is always up; with more, the
            cluster may lose its majority for a while.
        """
        self.cluster = cluster
        self.gap = gap
        self.downFor = downFor
        self.log = log
        self.rngs = [rng] + [random.Random(rng.getrandbits(64)) for _ in range(overlap - 1)]
        self.lock = threading.Lock()
        #: The nodes a fault holds down or frozen right now.
        self.busy: set[str] = set()
        self.faults: list[Fault] = []
        self.problems: list[str] = []

    def run(self, stop: threading.Event) -> None:
        """Inject faults until C{stop} is set; leave every node healed."""
        others = [
            threading.Thread(target=self._schedule, args=(rng, stop), daemon=True)
            for rng in self.rngs[1:]
        ]
        for thread in others:
            thread.start()
        try:
            self._schedule(self.rngs[0], stop)
        finally:
            for thread in others:
                thread.join()
            self.heal()

    def _schedule(self, rng: random.Random, stop: threading.Event) -> None:
        names = self.cluster.names
        try:
            while True:
                self.checkExits()
                # Draw the whole step first, so the schedule depends on the
                # seed only, whatever happens in the cluster.
                gap = rng.uniform(*self.gap)
                kind = rng.choice(FAULTS)
                node = names[rng.randrange(len(names))]
                held = rng.uniform(*self.downFor)
                if stop.wait(gap):
                    return
                self.inject(kind, node, held, stop)
        except Exception as e:  # reported, and the run fails
            with self.lock:
                self.problems.append(f"nemesis crashed: {e!r}")

    def inject(self, kind: str, node: str, held: float, stop: threading.Event) -> None:
        """
        Inject one fault and heal it after C{held} seconds (sooner if
        stopped).  If the node is already under a fault, the next free one
        in config order takes it, or none if all are.
        """
        if kind == "kill-leader":
            node = self.cluster.currentLeader() or node
        names = self.cluster.names
        with self.lock:
            start = names.index(node)
            free = [n for n in names[start:] + names[:start] if n not in self.busy]
            if not free:
                return
            node = free[0]
            self.busy.add(node)
        try:
            if not self.cluster.nodes[node].isRunning():
                self._exited(node)
                self.cluster.start(node)
                return
            at = time.monotonic()
            if kind == "pause":
                held = min(held, MAX_PAUSE)
                self.cluster.pause(node)
            else:
                self.cluster.kill(node)
            stop.wait(held)
            held = time.monotonic() - at
            if not self.cluster.nodes[node].isRunning():
                if kind == "pause":
                    self._exited(node)
                self.cluster.start(node)
            elif kind == "pause":
                self.cluster.resume(node)
        finally:
            with self.lock:
                self.busy.discard(node)
        with self.lock:
            self.faults.append(Fault(kind, node, at, held))
        if self.log is not None:
            self.log(f"nemesis: {kind} {node} for {held:.3f}s")

    def _exited(self, name: str) -> None:
        process = self.cluster.nodes[name].process
        with self.lock:
            self.problems.append(
                f"node {name} exited by itself with status {process.returncode}; "
                f"its last output:\n{self.cluster.tail(name, 30)}"
            )

    def checkExits(self) -> None:
        """
        Report every node whose process ended although no fault is holding
        it down (a crash of its own), with its exit status and last output,
        and start it again.
        """
        for name, node in self.cluster.nodes.items():
            with self.lock:
                if name in self.busy:
                    continue
                if node.process is None or node.process.poll() is None:
                    continue
                self.busy.add(name)
            try:
                self._exited(name)
                self.cluster.start(name)
            finally:
                with self.lock:
                    self.busy.discard(name)

    def heal(self) -> None:
        """Resume every frozen node and start every stopped one."""
        self.checkExits()
        for name, node in self.cluster.nodes.items():
            try:
                if node.isRunning() and node.paused:
                    self.cluster.resume(name)
                elif not node.isRunning():
                    self.cluster.start(name)
            except (OSError, ClusterError) as e:
                self.problems.append(f"could not heal {name}: {e!r}")


def runChaos(
    cluster: LocalCluster,
    *,
    duration: float,
    seed: int,
    clients: int = 4,
    keys: int = 3,
    requestTimeout: float = 1.0,
    retryFor: float = 3.0,
    settle: float = 20.0,
    budget: int | None = None,
    log: Callable[[str], None] | None = None,
    interruptible: bool = False,
    overlap: int = 1,
) -> ChaosReport:
    """
    Run the workload and the nemesis against C{cluster} (already started,
    with a leader) for C{duration} seconds, then heal it, read every key and
    check the history.

    @param seed: seeds the nemesis schedule and the clients' choices.
    @param settle: how long to wait, after healing, for a leader and for
        each final read.
    @param budget: the checker's search budget per key (default: its own).
    @param log: called with progress lines (faults, phases), if given.
    @param overlap: how many faults may be in force at once (see L{Nemesis}).
    @param interruptible: if true, C{KeyboardInterrupt} (Ctrl-C) during the
        faulty phase ends it early instead of aborting the run: the cluster
        is still healed and the history so far checked.
    """
    say = log if log is not None else (lambda line: None)
    master = random.Random(seed)
    recorder = Recorder()
    addresses = {name: cluster.address(name) for name in cluster.names}
    keyNames = [f"k{i}" for i in range(keys)]
    stop = threading.Event()
    workers = [
        WorkloadClient(
            f"c{i}",
            addresses,
            recorder,
            random.Random(master.getrandbits(64)),
            requestTimeout,
            retryFor,
        )
        for i in range(clients)
    ]
    nemesis = Nemesis(cluster, random.Random(master.getrandbits(64)), log=log, overlap=overlap)
    threads = [
        threading.Thread(target=w.run, args=(keyNames, stop), name=w.name, daemon=True)
        for w in workers
    ]
    threads.append(threading.Thread(target=nemesis.run, args=(stop,), name="nemesis", daemon=True))
    started = time.monotonic()
    say(f"chaos: seed {seed}, {clients} clients, {keys} keys, {duration:.0f}s")
    for thread in threads:
        thread.start()
    try:
        stop.wait(duration)
    except KeyboardInterrupt:
        if not interruptible:
            raise
        say("chaos: interrupted; healing and checking what was recorded")
    finally:
        stop.set()
        for thread in threads:
            thread.join(retryFor + requestTimeout * 2 + 10)
            if thread.is_alive():
                recorder.anomaly(f"thread {thread.name} did not stop")
        nemesis.heal()
    faultySeconds = time.monotonic() - started
    ok = recorder.ok
    say(f"chaos: healed after {faultySeconds:.1f}s; {ok} ok, {recorder.unknown} unknown")

    finalValues = finalReads(cluster, keyNames, recorder, settle)
    recorder.anomalies.extend(nemesis.problems)
    say("chaos: checking the history")
    checkStarted = time.monotonic()
    options = {} if budget is None else {"budget": budget}
    verdict = checkHistory(recorder.history, **options)
    return ChaosReport(
        seed=seed,
        history=recorder.history,
        faults=nemesis.faults,
        ok=ok,
        unknown=recorder.unknown,
        failed=recorder.failed,
        anomalies=recorder.anomalies,
        finalValues=finalValues,
        verdict=verdict,
        started=started,
        faultySeconds=faultySeconds,
        checkSeconds=time.monotonic() - checkStarted,
    )


def finalReads(
    cluster: LocalCluster, keys: Sequence[str], recorder: Recorder, settle: float
) -> dict[str, str | None]:
    """
    Wait for a leader, then read every key until the read has a known
    outcome; record those reads and return what they returned.
    """
    values: dict[str, str | None] = {}
    try:
        cluster.waitForLeader(settle)
    except ClusterError as e:
        recorder.anomaly(f"no leader after healing: {e}")
        return values
    addresses = {name: cluster.address(name) for name in cluster.names}
    reader = WorkloadClient("final", addresses, recorder, random.Random(0), 2.0, settle)
    try:
        for key in keys:
            deadline = time.monotonic() + settle
            while True:
                operation = reader.perform("get", key, None)
                if operation is not None and operation.end is not None:
                    values[key] = operation.result
                    break
                if time.monotonic() > deadline:
                    recorder.anomaly(f"final read of {key} had no known outcome in {settle}s")
                    break
    finally:
        reader.close()
    return values


#: A value written by the workload, as it appears in explanations and logs.
_VALUE = re.compile(r"\b(?:c\d+|final)-\d+\b")


def raftLogExcerpt(cluster: LocalCluster, key: str, explanation: str, limit: int = 60) -> str:
    """
    For a failure report: each node's Raft log lines (C{INDEX TERM COMMAND})
    for C{key} that mention a value named in C{explanation}, and every line
    for C{key} between the first and last of those, at most C{limit} lines
    per node.
    """
    values = set(_VALUE.findall(explanation))
    parts = []
    for name, node in cluster.nodes.items():
        try:
            with open(node.logPath, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as e:
            parts.append(f"--- {name} Raft log: unreadable: {e}")
            continue
        forKey = [
            line for line in lines if len(line.split(" ")) >= 4 and line.split(" ")[3] == key
        ]
        marked = [i for i, line in enumerate(forKey) if set(line.split(" ")[4:]) & values]
        if not marked:
            parts.append(
                f"--- {name} Raft log: none of its {len(forKey)} lines for {key!r} writes a value "
                "named above (compacted into a snapshot?); its last 5:"
            )
            parts.extend(forKey[-5:])
            continue
        chosen = forKey[marked[0] : marked[-1] + 1]
        parts.append(f"--- {name} Raft log, {len(chosen)} of {len(forKey)} lines for {key!r}:")
        parts.extend(chosen[:limit])
        if len(chosen) > limit:
            parts.append(f"    ... {len(chosen) - limit} more")
    return "\n".join(parts)
