"""
The C{txraft-cluster} command: run every node of a cluster config in the foreground.

Each node runs as a child C{python -m twisted txraft --name NAME ...} process (the
C{twist} runner: always in the foreground, no pidfile).  Their output is interleaved
into one stream, each line prefixed with the node's name (C{s1 | ...}), so a whole
local cluster can be watched and stopped (Ctrl-C) from one terminal.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import (
    ProcessDone,
    ProcessExitedAlready,
    ProcessTerminated,
    ReactorNotRunning,
)
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python import usage
from twisted.python.failure import Failure

from txraft import cli
from txraft.config import ClusterConfig, ConfigError, loadConfig

PROGRAM = "txraft-cluster"


class Options(cli.Options):
    """
    Command-line options of C{txraft-cluster}.
    """

    program = PROGRAM
    synopsis = f"Usage: {PROGRAM} [options]"
    longdesc = (
        "Start every node of a txraft cluster config as a child process, print their "
        "output prefixed with the node name, and stop them all on Ctrl-C."
    )
    optParameters = [
        ["config", "c", "etc/cluster.conf", "Cluster config file (lines NAME HOST PORT)."],
        ["data-dir", "d", "logs", "Data directory passed to every node."],
        ["heartbeat", None, None, "Heartbeat interval passed to every node."],
        ["election-timeout", None, None, "Election timeout passed to every node."],
        [
            "kill-after",
            None,
            10.0,
            "Seconds to wait after SIGTERM before SIGKILL.",
            cli.number("kill-after"),
        ],
        [
            "http",
            None,
            None,
            "Serve each node's HTTP side (web view, /metrics, /health, /status): the "
            "config's first node on this port, the next on the port after, and so on.",
            cli.port("http"),
        ],
        ["cluster-key", None, None, "Cluster key file passed to every node."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["only"] = []

    def opt_only(self, name: str) -> None:
        """
        Start only the node NAME (repeatable; default: every node).
        """
        self["only"].append(name)


def selectNodes(config: ClusterConfig, only: Sequence[str]) -> tuple[str, ...]:
    """
    Return the names of the nodes to start: those in C{only}, or all if it is empty.

    @raise ConfigError: if C{only} names a node that is not in C{config}.
    """
    for name in only:
        config.node(name)
    return tuple(name for name in config.names() if not only or name in only)


def httpPorts(config: ClusterConfig, first: int | None) -> dict[str, int]:
    """
    Each node's HTTP port, by name: C{first} for the config's first node,
    then one more for each next node; none if C{first} is L{None}.

    @raise ConfigError: if the ports would run past 65535.
    """
    if first is None:
        return {}
    names = config.names()
    if first + len(names) - 1 > 65535:
        raise ConfigError(f"--http {first}: {len(names)} nodes need ports up to 65535")
    return {name: first + i for i, name in enumerate(names)}


def nodeArguments(
    executable: str, name: str, options: Mapping[str, object], httpPort: int | None = None
) -> list[str]:
    """
    Return the argv that runs node C{name} in the foreground with C{options}.

    The node inherits the cluster-wide options (config, data dir and, when
    given, the timing knobs and the cluster key) so that every node agrees
    on them, and serves HTTP on C{httpPort} if given.
    """
    args = [
        executable,
        "-m",
        "twisted",
        "--log-format=text",
        "txraft",
        "--name",
        name,
        "--config",
        str(options["config"]),
        "--data-dir",
        str(options["data-dir"]),
    ]
    for option in ("heartbeat", "election-timeout", "cluster-key"):
        if options.get(option) is not None:
            args += [f"--{option}", str(options[option])]
    if httpPort is not None:
        args += ["--http", str(httpPort)]
    return args


def describeExit(reason: Failure) -> str:
    """
    Describe how a child process ended, for the log line that reports it.
    """
    value = reason.value
    if isinstance(value, ProcessTerminated) and value.signal is not None:
        try:
            signalName = signal.Signals(value.signal).name
        except ValueError:
            signalName = str(value.signal)
        return f"exited on signal {signalName}"
    if isinstance(value, (ProcessDone, ProcessTerminated)):
        return f"exited with code {value.exitCode}"
    return f"exited: {value}"


def _stoppedOnPurpose(reason: BaseException) -> bool:
    """
    Whether a process that ended with C{reason} exited cleanly or was stopped
    by SIGINT or SIGTERM (as by a Ctrl-C that reaches the whole process group).
    """
    if isinstance(reason, ProcessDone):
        return True
    return isinstance(reason, ProcessTerminated) and reason.signal in (
        signal.SIGINT,
        signal.SIGTERM,
    )


class LineSplitter:
    """
    Turn a stream of byte chunks into complete text lines.

    Children write whatever their buffering produces; only whole lines can be
    prefixed and interleaved without garbling each other.

    @cvar MAX_LENGTH: a partial line longer than this is emitted anyway, so a
        child that never writes a newline cannot grow our memory without bound.
    """

    MAX_LENGTH = 65536

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        """
        Add C{data} and return the lines it completed, without line endings.
        """
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        while len(self._buffer) > self.MAX_LENGTH:
            lines.append(self._buffer[: self.MAX_LENGTH])
            self._buffer = self._buffer[self.MAX_LENGTH :]
        return [_decode(line) for line in lines]

    def flush(self) -> list[str]:
        """
        Return the trailing partial line, if any, and forget it.
        """
        rest, self._buffer = self._buffer, b""
        return [_decode(rest)] if rest else []


def _decode(line: bytes) -> str:
    """
    Decode one line of child output, never failing on bad bytes.
    """
    return line.rstrip(b"\r").decode("utf-8", errors="replace")


class NodeProcessProtocol(ProcessProtocol):
    """
    Relay one node's stdout and stderr, line by line, prefixed with its name.

    @ivar ended: fires with the process's end reason (L{ProcessDone},
        L{ProcessTerminated}, or the error that kept it from starting).
    @ivar running: whether the process is still running.
    """

    def __init__(self, name: str, prefix: str, write: Callable[[str], None]) -> None:
        self.name = name
        self.prefix = prefix
        self.write = write
        self.running = False
        self.ended: Deferred[BaseException] = Deferred()
        self._splitters: dict[int, LineSplitter] = {}

    def connectionMade(self) -> None:
        """
        The child has started; we give it no input, so close its stdin.
        """
        self.running = True
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Print every complete line the child wrote on C{childFD}.
        """
        splitter = self._splitters.setdefault(childFD, LineSplitter())
        for line in splitter.feed(data):
            self.write(self.prefix + line)

    def childConnectionLost(self, childFD: int) -> None:
        """
        Print any unterminated last line the child wrote on C{childFD}.
        """
        splitter = self._splitters.pop(childFD, None)
        if splitter is not None:
            for line in splitter.flush():
                self.write(self.prefix + line)

    def processEnded(self, reason: Failure) -> None:
        """
        Report how the child ended, and fire L{ended}.
        """
        for childFD in list(self._splitters):
            self.childConnectionLost(childFD)
        self.running = False
        self.write(self.prefix + describeExit(reason))
        self.ended.callback(reason.value)


def _writeLine(line: str) -> None:
    """
    Print one line to stdout at once, so output interleaves promptly when piped.
    """
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass


class Cluster:
    """
    A set of node processes started and stopped together.

    @ivar nodes: the protocol of each node, by name, once started.
    @ivar stopping: whether L{stop} has been called; nodes that end after
        that were asked to.
    @ivar failed: the nodes that ended uncleanly before L{stop}.
    """

    def __init__(
        self,
        reactor: IReactorProcess,
        clock: IReactorTime,
        commands: Mapping[str, Sequence[str]],
        write: Callable[[str], None] = _writeLine,
        env: Mapping[str, str] | None = None,
        killAfter: float = 10.0,
        graceDelay: float = 1.0,
    ) -> None:
        """
        @param reactor: spawns the node processes.
        @param clock: times the SIGKILL that follows an ignored SIGTERM.
        @param commands: the argv of each node, by name, in start order.
        @param write: prints one line of output.
        @param env: the children's environment (default: ours, unbuffered).
        @param killAfter: seconds between SIGTERM and SIGKILL on L{stop}.
        @param graceDelay: seconds L{stop} waits before sending SIGTERM.
        """
        self._reactor = reactor
        self._clock = clock
        self._commands = dict(commands)
        self._write = write
        self._env = dict(os.environ if env is None else env)
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._killAfter = killAfter
        self._graceDelay = graceDelay
        self._killCall: IDelayedCall | None = None
        width = max((len(name) for name in self._commands), default=0)
        self._prefixes = {name: f"{name:<{width}} | " for name in self._commands}
        self.nodes: dict[str, NodeProcessProtocol] = {}
        self.stopping = False
        self.failed: list[str] = []

    def say(self, message: str) -> None:
        """
        Print a message from the launcher itself.
        """
        self._write(f"{PROGRAM}: {message}")

    def start(self) -> Deferred[None]:
        """
        Spawn every node.

        @return: a Deferred that fires once every node has ended, whether on
            its own or because of L{stop}.
        """
        for name, argv in self._commands.items():
            protocol = NodeProcessProtocol(name, self._prefixes[name], self._write)
            self.nodes[name] = protocol
            protocol.ended.addCallback(self._nodeEnded, name)
            self.say(f"starting {name}: {' '.join(argv)}")
            try:
                self._reactor.spawnProcess(protocol, argv[0], list(argv), env=self._env, path=None)
            except OSError as e:
                protocol.write(f"{protocol.prefix}cannot start: {e}")
                protocol.ended.callback(e)
        ended = DeferredList([node.ended for node in self.nodes.values()])
        return ended.addCallback(lambda _: None)

    def _nodeEnded(self, reason: BaseException, name: str) -> BaseException:
        """
        Note that node C{name} ended: a failure if unasked and unclean; once
        none is left running, no SIGKILL is due.
        """
        if not self.stopping and not _stoppedOnPurpose(reason):
            self.failed.append(name)
        if not self.running() and self._killCall is not None and self._killCall.active():
            self._killCall.cancel()
        return reason

    def running(self) -> list[str]:
        """
        Return the names of the nodes still running.
        """
        return [name for name, node in self.nodes.items() if node.running]

    def _signalAll(self, signalName: str) -> None:
        """
        Send C{signalName} ("TERM", "KILL") to every node still running.
        """
        for name in self.running():
            try:
                self.nodes[name].transport.signalProcess(signalName)
            except ProcessExitedAlready:
                pass

    def stop(self) -> Deferred[None]:
        """
        Stop every running node: after C{graceDelay} seconds, SIGTERM those
        still running, and SIGKILL those still running C{killAfter} seconds
        later.  The grace matters for Ctrl-C: the terminal has already sent
        SIGINT to every node, and a second signal would interrupt their
        orderly shutdown.

        @return: a Deferred that fires once every node has ended.
        """
        self.stopping = True
        running = self.running()
        if running:
            self.say(f"stopping {', '.join(running)}")
            self._killCall = self._clock.callLater(self._graceDelay, self._terminate)
        ended = DeferredList([node.ended for node in self.nodes.values()])
        return ended.addCallback(lambda _: None)

    def _terminate(self) -> None:
        """
        SIGTERM the nodes that are still running after the grace delay.
        """
        self._signalAll("TERM")
        self._killCall = self._clock.callLater(self._killAfter, self._kill)

    def _kill(self) -> None:
        """
        Kill the nodes that ignored SIGTERM.
        """
        running = self.running()
        if running:
            self.say(
                f"killing {', '.join(running)}: still running {self._killAfter}s after SIGTERM"
            )
            self._signalAll("KILL")

    def exitCode(self) -> int:
        """
        Return the launcher's exit status: 1 if any node failed to start or
        ended on its own with an error, else 0.
        """
        return 1 if self.failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run C{txraft-cluster}: start the cluster, run until Ctrl-C or until every
    node has ended, then exit.
    """
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else list(argv))
    except usage.UsageError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        print(options, file=sys.stderr)
        sys.exit(2)
    try:
        config = loadConfig(options["config"])
        names = selectNodes(config, options["only"])
        http = httpPorts(config, options["http"])
    except ConfigError as e:
        print(f"{PROGRAM}: {e}", file=sys.stderr)
        sys.exit(1)
    os.makedirs(options["data-dir"], exist_ok=True)

    from twisted.internet import reactor

    commands = {
        name: nodeArguments(sys.executable, name, options, http.get(name)) for name in names
    }
    cluster = Cluster(reactor, reactor, commands, killAfter=options["kill-after"])
    for name in names:
        if name in http:
            cluster.say(f"{name} web view: http://{config.node(name).host}:{http[name]}/")

    def allEnded(_: None) -> None:
        if not cluster.stopping:
            cluster.say("every node has ended")
            try:
                reactor.stop()
            except ReactorNotRunning:
                pass  # A signal stopped the reactor as the nodes were ending.

    reactor.callWhenRunning(lambda: cluster.start().addCallback(allEnded))
    reactor.addSystemEventTrigger("before", "shutdown", cluster.stop)
    reactor.run()
    sys.exit(cluster.exitCode())
