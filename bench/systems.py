"""
The systems that C{bench/compare.py} measures, each started as real
processes on 127.0.0.1 in a fresh temporary directory, and stopped again.

Every system gives the benchmark the same few things: the address and
L{loadgen.Codec} of its leader, the highest Raft term its nodes report (so
that a rise during the run counts leader elections), the process ids of its
nodes (for their peak RSS), and a note on how it is reached.  Every process
is started with L{txraft.testing.localcluster.spawn}, so it dies with the
benchmark however the benchmark ends, and L{System.stop} ends it politely
first.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from loadgen import Codec, HTTPCodec, LineCodec, httpPost

from txraft.client import LineConnection
from txraft.testing.localcluster import HOST, POLL_INTERVAL, LocalCluster, freePorts, spawn

#: How long a system may take to elect its first leader, in seconds.
START_TIMEOUT = 30.0


class StartError(Exception):
    """A system did not start, or would not say its status."""


def peakRSS(pid: int) -> int | None:
    """The peak resident set size of process C{pid} in bytes (C{VmHWM}), if known."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class System:
    """
    One system under test.  L{start} leaves it running with a leader;
    L{stop} ends every process it started and removes its directory.
    """

    #: The row's name in the table.
    name = ""
    #: How the load generator reaches it, printed under the table.
    note = ""

    def start(self) -> None:
        """Start every node and wait for a leader."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every node (C{SIGTERM}, then C{SIGKILL}) and remove the directory."""
        raise NotImplementedError

    def leader(self) -> tuple[tuple[str, int], Codec]:
        """Where the leader takes client requests, and how to speak to it."""
        raise NotImplementedError

    def term(self) -> int:
        """The highest Raft term any node reports now."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The process id of every node."""
        raise NotImplementedError


class Txraft(System):
    """
    A txraft cluster of C{twistd -n txraft} nodes (L{LocalCluster}), with a
    cluster key; its writes numbered as the client library sends them if
    C{exactlyOnce}.
    """

    note = "txraft: its line protocol, to the leader."

    def __init__(self, nodes: int, exactlyOnce: bool = False) -> None:
        self.name = "txraft" if nodes > 1 else "txraft 1 node"
        if exactlyOnce:
            self.name += " exactly-once"
            self.note = (
                "txraft exactly-once: the same, each write numbered ID#SEQ@ as the client "
                "library does, one session per connection."
            )
        self.nodes = nodes
        self.exactlyOnce = exactlyOnce
        self.cluster: LocalCluster | None = None
        self.leaderName = ""

    def start(self) -> None:
        """Start the nodes and wait for a leader."""
        self.cluster = LocalCluster([f"s{i}" for i in range(1, self.nodes + 1)])
        self.cluster.startAll()
        self.leaderName = self.cluster.waitForLeader(timeout=START_TIMEOUT)

    def stop(self) -> None:
        """Stop the nodes and remove the cluster's directory."""
        if self.cluster is not None:
            self.cluster.cleanup()

    def leader(self) -> tuple[tuple[str, int], Codec]:
        """The leader's client port; the line protocol."""
        session = f"bench{secrets.token_hex(4)}" if self.exactlyOnce else None
        return self.cluster.address(self.leaderName), LineCodec(session)

    def term(self) -> int:
        """The highest term in the nodes' C{status}."""
        return max(int(s["term"]) for s in self.cluster.statuses(timeout=5).values() if s)

    def pids(self) -> list[int]:
        """Every node's process id."""
        return [node.process.pid for node in self.cluster.nodes.values()]


class _Processes(System):
    """A system of plain processes started by this module, one per node."""

    def __init__(self) -> None:
        self.directory = ""
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawnNode(self, index: int, argv: Sequence[str]) -> None:
        """Start node C{index}, its output in C{DIR/nINDEX.out}."""
        with open(os.path.join(self.directory, f"n{index}.out"), "ab") as output:
            self.processes.append(
                spawn(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
            )

    def stop(self) -> None:
        """C{SIGTERM} every node, C{SIGKILL} any left after 5 s, remove the directory."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def pids(self) -> list[int]:
        """Every node's process id."""
        return [process.pid for process in self.processes]

    def checkRunning(self) -> None:
        """
        @raise StartError: if a node has exited, with the end of its output.
        """
        for index, process in enumerate(self.processes, 1):
            if process.poll() is not None:
                with open(os.path.join(self.directory, f"n{index}.out"), errors="replace") as f:
                    tail = f.read()[-2000:]
                raise StartError(f"{self.name} node {index} exited: {tail}")


class PySyncObj(_Processes):
    """Three PySyncObj nodes (C{bench/syncobjnode.py}), batched or not, journal on."""

    note = (
        "PySyncObj: ReplDict behind a Twisted line front end in each node process "
        "(bench/syncobjnode.py), to the leader; answers cross threads; get is a local read; "
        "its file journal is an mmap never flushed while running (no fsync); batched, a lone "
        "request waits for the next AppendEntries period (its default, 0.1 s)."
    )

    def __init__(self, batched: bool) -> None:
        super().__init__()
        self.name = f"PySyncObj {'batched' if batched else 'unbatched'}"
        self.batched = batched
        self.clientPorts: list[int] = []
        self.leaderPort = 0

    def start(self) -> None:
        """Start three nodes and wait until they agree on a leader."""
        self.directory = tempfile.mkdtemp(prefix="bench-syncobj-")
        ports = freePorts(6)
        raftAddresses = [f"{HOST}:{port}" for port in ports[:3]]
        self.clientPorts = ports[3:]
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "syncobjnode.py")
        for index, (address, clientPort) in enumerate(
            zip(raftAddresses, self.clientPorts, strict=True), 1
        ):
            dataDir = os.path.join(self.directory, f"n{index}")
            os.mkdir(dataDir)
            argv = [sys.executable, script, "--self", address, "--client-port", str(clientPort)]
            argv += ["--data-dir", dataDir] + ([] if self.batched else ["--no-batch"])
            for partner in raftAddresses:
                if partner != address:
                    argv += ["--partner", partner]
            self.spawnNode(index, argv)
        deadline = time.monotonic() + START_TIMEOUT
        while (leader := self._agreedLeader()) is None:
            self.checkRunning()
            if time.monotonic() > deadline:
                raise StartError(f"{self.name}: no leader in {START_TIMEOUT}s")
            time.sleep(POLL_INTERVAL)
        self.leaderPort = self.clientPorts[raftAddresses.index(leader)]

    def _statuses(self) -> list[dict[str, object]]:
        statuses = []
        for port in self.clientPorts:
            try:
                with LineConnection(HOST, port, timeout=2) as connection:
                    answer = connection.request("status")
            except OSError:
                continue
            if answer.startswith("OK "):
                statuses.append(json.loads(answer[3:]))
        return statuses

    def _agreedLeader(self) -> str | None:
        statuses = self._statuses()
        leaders = [s["self"] for s in statuses if s["state"] == 2]
        if len(leaders) != 1 or sum(s["leader"] == leaders[0] for s in statuses) < 2:
            return None
        return leaders[0]

    def leader(self) -> tuple[tuple[str, int], Codec]:
        """The leader's front end; the line protocol."""
        return (HOST, self.leaderPort), LineCodec()

    def term(self) -> int:
        """The highest C{raft_term} of the nodes' status."""
        return max(int(s["term"]) for s in self._statuses())


class Etcd(_Processes):
    """Three etcd members, reached through their HTTP/JSON gateway."""

    name = "etcd"

    def __init__(self, binary: str, connections: int) -> None:
        super().__init__()
        self.binary = binary
        self.note = (
            f"etcd: HTTP/1.1 JSON gateway (/v3/kv/put, /v3/kv/range, linearizable), "
            f"{connections} connections for the pipelined tests with the same total "
            f"outstanding, since etcd answers one request at a time per HTTP/1.1 connection; "
            f"a different client path (JSON over HTTP to gRPC inside etcd) from the others."
        )
        self.clientPorts: list[int] = []
        self.leaderPort = 0

    def start(self) -> None:
        """Start three members and wait until one is leader."""
        self.directory = tempfile.mkdtemp(prefix="bench-etcd-")
        ports = freePorts(6)
        peerPorts, self.clientPorts = ports[:3], ports[3:]
        cluster = ",".join(f"e{i}=http://{HOST}:{port}" for i, port in enumerate(peerPorts, 1))
        for index, (peerPort, clientPort) in enumerate(
            zip(peerPorts, self.clientPorts, strict=True), 1
        ):
            client, peer = f"http://{HOST}:{clientPort}", f"http://{HOST}:{peerPort}"
            self.spawnNode(
                index,
                [
                    self.binary,
                    f"--name=e{index}",
                    f"--data-dir={os.path.join(self.directory, f'e{index}')}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster={cluster}",
                    "--initial-cluster-state=new",
                    "--initial-cluster-token=bench",
                    "--log-level=warn",
                    "--logger=zap",
                ],
            )
        deadline = time.monotonic() + START_TIMEOUT
        while (leader := self._leaderPort()) is None:
            self.checkRunning()
            if time.monotonic() > deadline:
                raise StartError(f"etcd: no leader in {START_TIMEOUT}s")
            time.sleep(POLL_INTERVAL)
        self.leaderPort = leader

    def _status(self, port: int) -> dict[str, object] | None:
        try:
            with socket.create_connection((HOST, port), timeout=2) as connection:
                connection.sendall(httpPost(f"{HOST}:{port}", "/v3/maintenance/status", {}))
                buffer = bytearray()
                codec = HTTPCodec(HOST)
                while not (answers := codec.decode(buffer)):
                    data = connection.recv(65536)
                    if not data:
                        return None
                    buffer += data
        except OSError:
            return None
        status, _, body = answers[0].partition(" ")
        return json.loads(body) if status == "200" else None

    def _leaderPort(self) -> int | None:
        for port in self.clientPorts:
            status = self._status(port)
            if (
                status
                and status.get("leader")
                and status["leader"] == status["header"].get("member_id")
            ):
                return port
        return None

    def leader(self) -> tuple[tuple[str, int], Codec]:
        """The leader's client port; the HTTP/JSON gateway."""
        return (HOST, self.leaderPort), HTTPCodec(f"{HOST}:{self.leaderPort}")

    def term(self) -> int:
        """The highest C{raftTerm} of the members' status."""
        terms = [s.get("raftTerm", 0) for p in self.clientPorts if (s := self._status(p))]
        return max(int(term) for term in terms)


def etcdVersion(binary: str) -> str:
    """The first line of C{etcd --version}."""
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return output.stdout.splitlines()[0] if output.stdout else "unknown version"
