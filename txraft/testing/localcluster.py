"""
Run a cluster of real txraft node processes on this machine, for process
tests and benchmarks.

Each node is a C{twistd -n txraft} process, started exactly as the
documented command line says, on 127.0.0.1 with a free port, its data in a
directory of its own cluster's temporary directory and its output (stdout
and stderr together) in C{DIR/NAME.out}.  The cluster can then be queried,
killed (C{SIGKILL}), paused (C{SIGSTOP}/C{SIGCONT}), restarted and stopped
one node at a time or all together.  A node dies with the process that
started it (Linux's parent-death signal), however that process ends.  The
nodes run the txraft installed for this interpreter, its twistd plugin
included, just as a user's would: no source checkout is needed, and changed
code must be installed again (as C{make test} does) before the nodes run it.

This is a library for blocking callers (tests, scripts): it uses plain
C{subprocess} and C{socket}, not a reactor, so a test can drive real
processes from straight-line code.  Waiting for a condition (a leader, an
C{OK}) is done by polling up to a deadline; nothing sleeps in order to let
something happen.

    with LocalCluster(["s1", "s2", "s3"]) as cluster:
        cluster.startAll()
        leader = cluster.waitForLeader(timeout=5)
        print(cluster.client().request("set a 1"))
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from txraft import answers
from txraft.auth import writeKeyFile
from txraft.children import dieWithParent
from txraft.client import LineConnection

#: Where nodes listen.
HOST = "127.0.0.1"

#: How often conditions are polled while waiting for them, in seconds.
POLL_INTERVAL = 0.02


class ClusterError(Exception):
    """A cluster operation failed or a condition was not met in time."""


#: The one thread that starts every node.  Linux sends the parent-death
#: signal when the I{thread} that forked a child ends, not the process, so a
#: node started from a short-lived thread (one of the chaos test's nemesis
#: schedules) would be killed when that thread ends.  This worker lives as long
#: as the process (an idle executor thread never ends), so the signal still
#: comes exactly when the process that started the nodes dies.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localcluster-spawner")


def spawn(argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """
    C{subprocess.Popen(argv, **kwargs)} from L{_spawner}'s thread, the
    child set to die with this process (L{dieWithParent}).
    """
    future = _spawner.submit(subprocess.Popen, list(argv), preexec_fn=dieWithParent, **kwargs)
    return future.result()


def stopOnSignals() -> None:
    """
    Make SIGINT raise C{KeyboardInterrupt} and SIGTERM C{SystemExit}, so a
    script's C{with LocalCluster(...)} block stops its nodes on the way out.
    """

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)


def freePorts(count: int, host: str = HOST) -> list[int]:
    """
    Return C{count} distinct TCP ports on C{host} that are free now.

    They are drawn at random from below the kernel's ephemeral range: a
    port handed out by binding port 0 comes from that range, which the
    kernel also uses for outgoing connections, so while a node is down a
    peer reconnecting to it could take its port and keep it from restarting.
    """
    low = _ephemeralLow() - 1
    chosen: list[int] = []
    rng = random.Random()
    while len(chosen) < count:
        port = rng.randrange(20000, low)
        if port not in chosen and _isFree(host, port):
            chosen.append(port)
    return chosen


def _ephemeralLow() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _isFree(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def writeConfig(path: str, addresses: Mapping[str, tuple[str, int]]) -> None:
    """Write a cluster config of lines C{NAME HOST PORT} to C{path}."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("# written by txraft.testing.localcluster\n")
        for name, (host, port) in addresses.items():
            f.write(f"{name} {host} {port}\n")


def nodeCommand(name: str, config: str, dataDir: str, extraArgs: Sequence[str] = ()) -> list[str]:
    """
    Return the argv that runs node C{name} in the foreground: the documented
    C{twistd -n txraft ...} command, with no pidfile, run by this interpreter
    so that the node runs the txraft installed beside it.
    """
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "-n",
        "--pidfile=",
        "txraft",
        "--name",
        name,
        "--config",
        config,
        "--data-dir",
        dataDir,
        *extraArgs,
    ]


def nodeEnvironment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    Return the environment for a node or client process: C{base} (default:
    ours) with unbuffered output, so a log shows everything up to the moment
    a process was killed.
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Node:
    """
    One node of a L{LocalCluster}: its address, its data directory, and its
    process while it runs.

    @ivar process: the running (or paused, or ended but not yet reaped)
        process, or L{None} before the first start and after a stop.
    """

    def __init__(
        self, name: str, host: str, port: int, dataDir: str, httpPort: int | None = None
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        #: The port of the node's HTTP side, or L{None} if it has none.
        self.httpPort = httpPort
        self.dataDir = dataDir
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        #: Where the node's stdout and stderr go (appended across restarts).
        self.outputPath = os.path.join(dataDir, f"{name}.out")
        #: The node's Raft log, C{INDEX TERM COMMAND} lines.
        self.logPath = os.path.join(dataDir, f"{name}.log")

    def isRunning(self) -> bool:
        """Whether the process has been started and has not ended."""
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """Everything the node's processes wrote so far, decoded leniently."""
        try:
            with open(self.outputPath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


class LocalCluster:
    """
    A cluster of C{twistd -n txraft} processes on 127.0.0.1.

    Construction only chooses ports and writes the config; L{startAll} (or
    L{start}) runs the nodes.  Always call L{stopAll} when done (or use the
    cluster as a context manager): it leaves no process behind.
    """

    def __init__(
        self,
        names: Sequence[str] = ("s1", "s2", "s3"),
        directory: str | None = None,
        extraArgs: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        keyed: bool = True,
        tls: ssl.SSLContext | None = None,
        http: bool = False,
    ) -> None:
        """
        @param names: the node names, in config order.
        @param directory: where the config, the data and the output go; by
            default a new temporary directory, removed by L{cleanup}.
        @param extraArgs: more node options (C{--heartbeat}, ...), given to
            every node.
        @param env: the nodes' base environment (default: ours).
        @param keyed: give every node the cluster key in C{DIR/cluster.key}
            (made if missing), as C{make cluster} does; without it peers
            are not authenticated.
        @param tls: how this harness's own connections speak TLS to the
            nodes (when C{extraArgs} make them listen with it).
        @param http: whether each node serves HTTP (C{--http}) on a free port
            of its own.
        """
        self._ownsDirectory = directory is None
        self.directory = tempfile.mkdtemp(prefix="txraft-") if directory is None else directory
        os.makedirs(self.directory, exist_ok=True)
        self.tls = tls
        #: The cluster key file every node is given, or L{None}.
        self.keyPath: str | None = None
        if keyed:
            self.keyPath = os.path.join(self.directory, "cluster.key")
            if not os.path.exists(self.keyPath):
                writeKeyFile(self.keyPath)
            extraArgs = ["--cluster-key", self.keyPath, *extraArgs]
        self.extraArgs = list(extraArgs)
        self.env = nodeEnvironment(env)
        ports = freePorts(len(names) * (2 if http else 1))
        ports, httpPorts = ports[: len(names)], ports[len(names) :] or [None] * len(names)
        self.nodes = {
            name: Node(name, HOST, port, self.directory, httpPort)
            for name, port, httpPort in zip(names, ports, httpPorts, strict=True)
        }
        self.configPath = os.path.join(self.directory, "cluster.conf")
        writeConfig(self.configPath, {n.name: (n.host, n.port) for n in self.nodes.values()})

    # -- processes ------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Every node's name, in config order."""
        return list(self.nodes)

    def command(self, name: str, extraArgs: Sequence[str] = ()) -> list[str]:
        """The argv that starts node C{name}."""
        httpPort = self.nodes[name].httpPort
        http = [] if httpPort is None else ["--http", str(httpPort)]
        args = [*self.extraArgs, *http, *extraArgs]
        return nodeCommand(name, self.configPath, self.directory, args)

    def start(self, name: str, extraArgs: Sequence[str] = ()) -> None:
        """
        Start node C{name}, appending its output to C{DIR/NAME.out}.

        @raise ClusterError: if it is already running.
        """
        node = self.nodes[name]
        if node.isRunning():
            raise ClusterError(f"node {name} is already running")
        self._reap(node)
        with open(node.outputPath, "ab") as output:
            output.write(f"--- localcluster: starting {name} at {time.time():.3f}\n".encode())
            output.flush()
            node.process = spawn(
                self.command(name, extraArgs),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.directory,
            )
        node.paused = False

    def startAll(self) -> None:
        """Start every node that is not running."""
        for name, node in self.nodes.items():
            if not node.isRunning():
                self.start(name)

    def running(self) -> list[str]:
        """The names of the nodes whose processes are running (paused included)."""
        return [name for name, node in self.nodes.items() if node.isRunning()]

    def live(self) -> list[str]:
        """The names of the nodes that are running and not paused."""
        return [name for name in self.running() if not self.nodes[name].paused]

    def kill(self, name: str) -> None:
        """Kill node C{name} with C{SIGKILL}, as a crash would, and reap it."""
        node = self.nodes[name]
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
        self._reap(node)

    def killAll(self) -> None:
        """Kill every node with C{SIGKILL} at once, then reap them."""
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
        for node in self.nodes.values():
            self._reap(node)

    def pause(self, name: str) -> None:
        """Freeze node C{name} with C{SIGSTOP}: it keeps its sockets but answers nothing."""
        node = self._running(name)
        node.process.send_signal(signal.SIGSTOP)
        node.paused = True

    def resume(self, name: str) -> None:
        """Let a paused node C{name} go on with C{SIGCONT}."""
        node = self._running(name)
        node.process.send_signal(signal.SIGCONT)
        node.paused = False

    def restart(self, name: str, extraArgs: Sequence[str] = ()) -> None:
        """Kill node C{name} (if running) and start it again on the same data."""
        self.kill(name)
        self.start(name, extraArgs)

    def stop(self, name: str, timeout: float = 5.0) -> int | None:
        """
        Stop node C{name} politely: C{SIGTERM}, then C{SIGKILL} if it is
        still running after C{timeout} seconds.

        @return: its exit status (negative for a signal), or L{None} if it
            was never started.
        """
        self._terminate([self.nodes[name]], timeout)
        process = self.nodes[name].process
        return None if process is None else process.returncode

    def stopAll(self, timeout: float = 5.0) -> None:
        """
        Stop every node: C{SIGTERM} to all, then C{SIGKILL} to those still
        running after C{timeout} seconds.  Safe to call more than once.
        """
        self._terminate(list(self.nodes.values()), timeout)

    def cleanup(self) -> None:
        """Stop every node and remove the directory if this cluster made it."""
        self.stopAll()
        if self._ownsDirectory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def waitForExit(self, name: str, timeout: float) -> int:
        """
        Wait up to C{timeout} seconds for node C{name} to end on its own.

        @return: its exit status.
        @raise ClusterError: if it is still running then.
        """
        process = self.nodes[name].process
        if process is None:
            raise ClusterError(f"node {name} was never started")
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"node {name} still running after {timeout}s") from None

    def _terminate(self, nodes: list[Node], timeout: float) -> None:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                if node.paused:
                    node.process.send_signal(signal.SIGCONT)
                    node.paused = False
                node.process.terminate()
        deadline = time.monotonic() + timeout
        for node in nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()

    def _reap(self, node: Node) -> None:
        if node.process is not None and node.process.returncode is None:
            node.process.wait()
        node.paused = False

    def _running(self, name: str) -> Node:
        node = self.nodes[name]
        if not node.isRunning():
            raise ClusterError(f"node {name} is not running")
        return node

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    # -- talking to nodes ---------------------------------------------------------------

    def address(self, name: str) -> tuple[str, int]:
        """Where node C{name} listens."""
        node = self.nodes[name]
        return node.host, node.port

    def connect(self, name: str, timeout: float = 5.0) -> LineConnection:
        """Open a connection to node C{name}."""
        return LineConnection(*self.address(name), timeout=timeout, tls=self.tls)

    def request(self, name: str, line: str, timeout: float = 5.0) -> str:
        """
        Send one request line to node C{name} over a fresh connection and
        return its response line.

        @raise OSError: if the node cannot be reached, hangs up or is silent
            for C{timeout} seconds.
        """
        with self.connect(name, timeout) as connection:
            return connection.request(line)

    def status(self, name: str, timeout: float = 2.0) -> dict[str, object]:
        """
        Return node C{name}'s C{status} document.

        @raise ClusterError: if it answers something other than C{OK {json}}.
        @raise OSError: if it cannot be reached.
        """
        response = self.request(name, "status", timeout)
        value = answers.okValue(response)
        if value is None:
            raise ClusterError(f"node {name} answered status with {response!r}")
        document = json.loads(value)
        if not isinstance(document, dict):
            raise ClusterError(f"node {name} answered status with {response!r}")
        return document

    def statuses(self, timeout: float = 0.5) -> dict[str, dict[str, object] | None]:
        """The status of every live node, or L{None} for one that did not answer."""
        result: dict[str, dict[str, object] | None] = {}
        for name in self.live():
            try:
                result[name] = self.status(name, timeout)
            except (OSError, ClusterError, ValueError):
                result[name] = None
        return result

    def currentLeader(self) -> str | None:
        """
        Return the leader if, right now, exactly one live node says it is
        leader and a majority of the voters of its membership (it included)
        name it as leader in its term; otherwise L{None}.
        """
        statuses = {n: s for n, s in self.statuses().items() if s is not None}
        leaders = [n for n, s in statuses.items() if s.get("role") == "leader"]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        term = statuses[leader].get("term")
        voters = set(statuses[leader].get("members") or ())  # type: ignore[call-overload]
        voters -= set(statuses[leader].get("learners") or ())  # type: ignore[call-overload]
        agreeing = [
            n
            for n, s in statuses.items()
            if n in voters and s.get("leader") == leader and s.get("term") == term
        ]
        if len(agreeing) <= len(voters) // 2:
            return None
        return leader

    def waitForLeader(self, timeout: float = 10.0) -> str:
        """
        Poll the live nodes until L{currentLeader} names a leader, and return it.

        @raise ClusterError: if there is none within C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            leader = self.currentLeader()
            if leader is not None:
                return leader
            if time.monotonic() >= deadline:
                raise ClusterError(f"no leader within {timeout}s; statuses: {self.statuses()}")
            time.sleep(POLL_INTERVAL)

    def followers(self, leader: str) -> list[str]:
        """The live nodes other than C{leader}."""
        return [name for name in self.live() if name != leader]

    def client(self, timeout: float = 5.0) -> ClusterClient:
        """A client of this cluster that follows redirects and rides out elections."""
        addresses = {n.name: (n.host, n.port) for n in self.nodes.values()}
        return ClusterClient(addresses, timeout, self.tls)

    def httpURL(self, name: str, path: str = "/") -> str:
        """The URL of C{path} on node C{name}'s HTTP side (the cluster must have C{http})."""
        node = self.nodes[name]
        if node.httpPort is None:
            raise ClusterError(f"node {name} serves no HTTP: make the cluster with http=True")
        return f"http://{node.host}:{node.httpPort}{path}"

    # -- diagnostics --------------------------------------------------------------------

    def tail(self, name: str, lines: int = 40) -> str:
        """The last C{lines} lines node C{name}'s processes wrote."""
        return "\n".join(self.nodes[name].output().splitlines()[-lines:])

    def describe(self, lines: int = 40) -> str:
        """
        A report for a failed test: each node's process state and the last
        C{lines} lines of its output.
        """
        parts = [f"=== localcluster {self.directory} (config {self.configPath})"]
        for name, node in self.nodes.items():
            if node.process is None:
                state = "never started"
            elif node.process.poll() is None:
                state = f"running, pid {node.process.pid}" + (", paused" if node.paused else "")
            else:
                state = f"exited with {node.process.returncode}"
            parts.append(f"--- {name} {node.host}:{node.port}: {state}; last {lines} lines:")
            parts.append(self.tail(name, lines))
        return "\n".join(parts)


class ClusterClient:
    """
    A blocking client of a whole cluster: it keeps one connection open to the
    node it believes leads, follows C{REDIRECT}, and when a node is down,
    knows no leader or cannot say how a request ended, tries again (on the
    next node if needed) until a deadline.

    Retrying means a request may take effect more than once, which is
    harmless for the idempotent C{set}/C{get} that tests and benchmarks send.
    """

    def __init__(
        self,
        addresses: Mapping[str, tuple[str, int]],
        timeout: float = 5.0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """
        @param addresses: every node's C{(host, port)}, by name.
        @param timeout: bounds each connect and each wait for a response.
        @param tls: how to speak TLS to the nodes, or L{None} for plain TCP.
        """
        self.addresses = dict(addresses)
        self.timeout = timeout
        self.tls = tls
        self.target = next(iter(self.addresses))
        self._connection: LineConnection | None = None
        #: How many redirects were followed, for tests that care.
        self.redirects = 0

    def request(self, line: str, deadline: float | None = None, retry: bool = True) -> str:
        """
        Send C{line} and return the first response that is not C{REDIRECT}
        or (with C{retry}) C{UNAVAILABLE}.

        @param deadline: a L{time.monotonic} time after which to give up;
            by default C{timeout} seconds from now.
        @raise ClusterError: if no answer came by the deadline.
        """
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        lastProblem = "no attempt"
        redirects = 0
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                connection = self._connected(min(self.timeout, remaining))
                connection.setTimeout(min(self.timeout, remaining))
                response = connection.request(line)
            except OSError as e:
                lastProblem = f"{self.target}: {e!r}"
                self._moveOn()
                time.sleep(POLL_INTERVAL)
                continue
            redirect = self._redirect(response)
            if redirect is not None:
                lastProblem = response
                self._follow(redirect)
                redirects += 1
                if redirects > 1:
                    # Nodes that still point at each other (or at a leader
                    # that is gone) need a moment to learn of the new one.
                    time.sleep(POLL_INTERVAL)
                continue
            if retry and answers.isUnavailable(response):
                lastProblem = f"{self.target}: {response}"
                if response == answers.NO_LEADER:
                    self._moveOn()
                time.sleep(POLL_INTERVAL)
                continue
            return response
        raise ClusterError(f"no answer to {line!r} by the deadline; last: {lastProblem}")

    def close(self) -> None:
        """Close the open connection, if any."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connected(self, timeout: float) -> LineConnection:
        if self._connection is None:
            host, port = self.addresses[self.target]
            self._connection = LineConnection(host, port, timeout, self.tls)
        return self._connection

    def _redirect(self, response: str) -> answers.Redirect | None:
        """
        Where C{response} redirects to, or L{None} if it is no redirect.

        @raise ClusterError: if it is a malformed redirect or one to an
            address that is not in the cluster config.
        """
        try:
            redirect = answers.parseRedirect(response)
        except answers.AnswerError as e:
            raise ClusterError(str(e)) from None
        if redirect is not None:
            if self.addresses.get(redirect.leader) != (redirect.host, redirect.port):
                raise ClusterError(f"redirect {response!r} does not match the cluster config")
        return redirect

    def _follow(self, redirect: answers.Redirect) -> None:
        self.redirects += 1
        self.close()
        self.target = redirect.leader

    def _moveOn(self) -> None:
        """Try the next node in config order."""
        self.close()
        names = list(self.addresses)
        self.target = names[(names.index(self.target) + 1) % len(names)]

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
