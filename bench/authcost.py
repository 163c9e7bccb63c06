"""
What authenticating a peer line costs, in one process, with no sockets:
microseconds per L{Session.seal} and L{Session.open} beside the wire
format's C{formatMessage} and C{parseMessage} of the same lines, and the
share of a node's CPU the MACs take.

    python bench/authcost.py                    # this tree's txraft/auth.py
    python bench/authcost.py --baseline REV     # and REV's txraft/auth.py, in the same run
    python bench/authcost.py --profile          # and the MACs' share of a node's CPU

The lines are what a leader's replication is made of: an empty
AppendEntries (a heartbeat), one carrying a C{set} entry, and the answer.
Each figure is the best of C{--repeat} timings of C{--number} calls.

C{--profile} runs fault-free keyed simulated clusters (the production
driver, core, log and state machine on in-memory stores; every peer line
formatted, sealed, opened and parsed) and splits the nodes' CPU time, by
timing each call exclusively, into the MACs, the wire format and the rest
of the node's work (the driver's entry points, less the simulated network
under them and the simulation's own checks and clients).  cProfile was
tried first: it charges a few microseconds to every call, which inflates
the many small calls of the wire format and the MACs five times over, so
the shares it gave were wrong; this costs about a microsecond a call.
There is no fsync and no socket here, which a real node's request also
pays for, so the MACs' share is an upper bound.  What timing a call
charges to it is measured and taken off.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from types import ModuleType

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from txraft import auth  # noqa: E402
from txraft.messages import (  # noqa: E402
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    Message,
    formatMessage,
    parseMessage,
    splitSender,
)

KEY = b"k" * auth.MIN_KEY_BYTES

#: The peer messages timed, by name.
MESSAGES: dict[str, Message] = {
    "heartbeat": AppendEntries(7, 1041, 7, [], 1041),
    "append 1 set": AppendEntries(7, 1041, 7, [Entry(1042, 7, "set key-0042 " + "v" * 100)], 1041),
    "append answer": AppendEntriesResponse(7, True, 1042),
}


def loadRevision(revision: str) -> ModuleType:
    """Import C{txraft/auth.py} as it was at git C{revision}, under another name."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(
        ["git", "show", f"{revision}:txraft/auth.py"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    directory = tempfile.mkdtemp(prefix="authcost-")
    path = os.path.join(directory, "auth_baseline.py")
    with open(path, "wb") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("auth_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sessions(module: ModuleType) -> tuple[auth.Session, auth.Session]:
    """Both sides of a connection that ran C{module}'s handshake."""
    initiator = module.Initiator(KEY, "s1", "s2")
    responder = module.Responder(KEY, "s2")
    proof = initiator.answerChallenge(responder.challenge(initiator.hello()))
    theirs = responder.verify(proof)
    return initiator.confirm(responder.confirmation()), theirs


def microseconds(function: Callable[[], object], number: int, repeat: int) -> float:
    """The best time of one call of C{function}, in microseconds."""
    return min(timeit.repeat(function, number=number, repeat=repeat)) / number * 1e6


def timeSession(module: ModuleType, line: bytes, number: int, repeat: int) -> tuple[float, float]:
    """Microseconds to seal C{line}, and to open it, with C{module}'s L{Session}."""
    sender, receiver = sessions(module)
    seal = microseconds(lambda: sender.seal(line), number, repeat)
    sender, receiver = sessions(module)
    sealed = [sender.seal(line) for _ in range(number * repeat)]
    feed = iter(sealed)
    opened = microseconds(lambda: receiver.open(next(feed)), number, repeat)
    return seal, opened


def timeWire(message: Message, number: int, repeat: int) -> tuple[float, float, bytes]:
    """Microseconds to format C{message} as a line and to parse it back, and the line."""
    text = formatMessage("s1", message)

    def parse() -> Message:
        _, rest = splitSender(text)
        return parseMessage(rest)

    return (
        microseconds(lambda: formatMessage("s1", message), number, repeat),
        microseconds(parse, number, repeat),
        text.encode("utf-8"),
    )


class Ledger:
    """
    Exclusive CPU time by category: each timed call charges its own time
    to its category, and the calls it makes to theirs.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack = ["simulation"]
        self._since = time.perf_counter()

    def _switch(self, category: str | None) -> None:
        now = time.perf_counter()
        top = self._stack[-1]
        self.seconds[top] = self.seconds.get(top, 0.0) + now - self._since
        self._since = now
        if category is None:
            self._stack.pop()
        else:
            self._stack.append(category)

    def wrap(self, owner: object, name: str, category: str) -> None:
        """Charge every call of C{owner.name} to C{category} while the ledger runs."""
        function = getattr(owner, name)
        counted = f"{category}: {name}"

        def timed(*args: object, **kwargs: object) -> object:
            self.calls[counted] = self.calls.get(counted, 0) + 1
            self._switch(category)
            try:
                return function(*args, **kwargs)
            finally:
                self._switch(None)

        setattr(owner, name, timed)

    def close(self) -> None:
        """Charge the time since the last timed call began or ended, and stop."""
        self._switch(None)

    def overhead(self) -> float:
        """The seconds a timed call of nothing charges its category (its own timing)."""
        probe = Ledger()

        class Nothing:
            def call(self) -> None:
                pass

        probe.wrap(Nothing, "call", "probe")
        nothing = Nothing()
        for _ in range(100_000):
            nothing.call()
        probe.close()
        return probe.seconds["probe"] / 100_000

    def net(self, category: str) -> float:
        """The seconds of C{category}, less what timing its calls charged to it."""
        calls = sum(n for name, n in self.calls.items() if name.startswith(category + ":"))
        return self.seconds[category] - calls * self.overhead()


def account(seeds: int) -> None:
    """Print how the nodes' CPU time splits between MACs, wire format and the rest."""
    from tests.simulation import Simulation, clients, connections, network, nodes
    from txraft.node import RaftNode

    ledger = Ledger()
    for name in ("peerRequest", "peerResponse", "clientRequest", "ticks"):
        ledger.wrap(RaftNode, name, "node")
    for name in ("seal", "open"):
        ledger.wrap(auth.Session, name, "mac")
    for name in ("formatMessage", "parseMessage", "splitSender"):
        ledger.wrap(connections, name, "wire")
    # What runs inside the driver's calls but is not the node's work.
    ledger.wrap(network.Network, "send", "simulation")
    ledger.wrap(clients.Workload, "answer", "simulation")
    for name in ("persisted", "applied", "snapshotSaved", "snapshotInstalled", "coreStarted"):
        ledger.wrap(nodes.NodeObserver, name, "simulation")
    operations = 0
    for seed in range(seeds):
        sim = Simulation(seed, faultWeights={}, snapshotEntries=0)
        sim.run()
        operations += len(sim.history)
    ledger.close()
    calls = ledger.calls
    seconds = {category: ledger.net(category) for category in ("node", "mac", "wire")}
    total = sum(seconds.values())
    print(
        f"\n{seeds} fault-free keyed 3-node runs: {operations} client operations, "
        f"{calls['mac: seal']} lines sealed, {calls['mac: open']} opened; node CPU time:"
    )
    for label, category in (
        ("MACs (seal + open)", "mac"),
        ("wire format (format + parse)", "wire"),
        ("the rest of the nodes' work", "node"),
    ):
        print(f"  {label:<30} {seconds[category]:6.2f} s {seconds[category] / total:6.1%}")
    perLine = seconds["mac"] / (calls["mac: seal"] + calls["mac: open"]) * 1e6
    print(f"  {'per MAC (seal or open)':<30} {perLine:6.2f} µs")
    print(f"  {'per client operation':<30} {total / operations * 1e6:6.0f} µs of node CPU")


def main(argv: list[str] | None = None) -> None:
    """Print one row per line: its size, format and parse, then seal and open per version."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", metavar="REV", help="also time REV's txraft/auth.py")
    parser.add_argument("--number", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--profile", type=int, nargs="?", const=10, metavar="SEEDS", help="also profile"
    )
    options = parser.parse_args(argv)
    versions = {"this tree": auth}
    if options.baseline:
        versions = {options.baseline: loadRevision(options.baseline), **versions}
    print(f"Python {sys.version.split()[0]}; best of {options.repeat} x {options.number} calls")
    header = f"{'line':<14} {'bytes':>5} {'format':>7} {'parse':>7}"
    for name in versions:
        header += f" | {name[:16] + ' seal':>21} {'open':>6} {'share':>6}"
    print(header + "\n" + "-" * len(header))
    for label, message in MESSAGES.items():
        format_, parse, line = timeWire(message, options.number, options.repeat)
        row = f"{label:<14} {len(line):>5} {format_:>7.2f} {parse:>7.2f}"
        for module in versions.values():
            seal, opened = timeSession(module, line, options.number, options.repeat)
            share = (seal + opened) / (seal + opened + format_ + parse)
            row += f" | {seal:>21.2f} {opened:>6.2f} {share:>6.0%}"
        print(row)
    print(
        "µs per line; share: seal + open as a part of seal + open + format + parse "
        "(one line sent and received)"
    )
    if options.profile:
        account(options.profile)


if __name__ == "__main__":
    main()
