"""
txraft side by side with PySyncObj and etcd, on this machine, in one run.

Each system is started as three processes on 127.0.0.1 in a fresh temporary
directory, measured, and stopped, one after the other: txraft, txraft with
its writes numbered as the client library sends them (exactly once), one
txraft node alone (the ceiling of the code itself, with no replication), PySyncObj
with its default batching and with batching off, and etcd where its binary
is installed.  One load generator (C{loadgen.py}, one thread) drives the
leader of each in the same shape:

  - sequential C{set}: one request at a time on one connection (latency);
  - pipelined C{set}s on several connections for some seconds, cycling over
    C{--keys} keys, so that every system ends it holding the same map (with
    a new key per write a faster system would hold more, and its memory
    would say so rather than what it spends per key);
  - pipelined C{get}s of the keys the sequential phase wrote, as long;

and the table gives writes/s, sequential p50/p99, reads/s, each node's peak
RSS, the failed requests and the leader elections during the run, then
txraft's ratio to each other system.  Every process is stopped on exit,
Ctrl-C and SIGTERM, and dies with this one if it is killed.

    python bench/compare.py [--seconds N] [--quick] [--systems a,b] ...
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version

from loadgen import drive
from report import Measurement, formatReport
from systems import Etcd, PySyncObj, StartError, System, Txraft, etcdVersion, peakRSS
from twisted.python import usage

from txraft.testing.localcluster import ClusterError, stopOnSignals

#: Every system, by the name --systems takes, in the order they run.
SYSTEMS = [
    "txraft",
    "txraft-once",
    "txraft-1",
    "pysyncobj-batched",
    "pysyncobj-unbatched",
    "etcd",
]


class Options(usage.Options):
    """Command line of the comparison."""

    synopsis = "Usage: python bench/compare.py [options]"
    longdesc = "Run txraft, PySyncObj and etcd one after the other and print one table."

    optFlags = [["quick", "q", "A smoke run: 1 s per phase, 200 sequential sets."]]
    optParameters = [
        ["seconds", "s", 10.0, "Seconds of pipelined writes, and of reads, per system.", float],
        ["sequential", "n", 2000, "Sequential set requests per system.", int],
        ["connections", "c", 4, "Connections for the pipelined phases.", int],
        ["window", "w", 2000, "Outstanding requests per pipelined connection.", int],
        [
            "etcd-connections",
            None,
            32,
            "Connections for etcd's pipelined phases (sharing the same outstanding total).",
            int,
        ],
        ["value-size", None, 16, "Bytes per value.", int],
        [
            "keys",
            "k",
            100_000,
            "Distinct keys the pipelined writes cycle over (0: a new key for each).",
            int,
        ],
        ["systems", None, ",".join(SYSTEMS), "Comma-separated systems to run."],
        ["etcd", None, "etcd", "The etcd binary (apt-get install -y etcd-server)."],
    ]

    def postOptions(self) -> None:
        """Apply C{--quick}, check the counts and the system names."""
        if self["quick"]:
            self.update(seconds=1.0, sequential=200)
        for name in ("sequential", "connections", "window", "etcd-connections", "value-size"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["keys"] < 0:
            raise usage.UsageError("--keys must be at least 0")
        if self["seconds"] <= 0:
            raise usage.UsageError("--seconds must be positive")
        self["systems"] = [name for name in self["systems"].split(",") if name]
        unknown = sorted(set(self["systems"]) - set(SYSTEMS))
        if unknown or not self["systems"]:
            raise usage.UsageError(f"--systems takes some of {','.join(SYSTEMS)}")


def makeSystem(name: str, options: Options) -> System | str:
    """The system called C{name}, or why it cannot run here."""
    if name.startswith("txraft"):
        return Txraft(1 if name == "txraft-1" else 3, exactlyOnce=name == "txraft-once")
    if name.startswith("pysyncobj"):
        if importlib.util.find_spec("pysyncobj") is None:
            return "pysyncobj is not installed for this Python (pip install pysyncobj)"
        return PySyncObj(batched=name == "pysyncobj-batched")
    binary = shutil.which(options["etcd"])
    if binary is None:
        return f"no {options['etcd']!r} binary (apt-get install -y etcd-server)"
    return Etcd(binary, options["etcd-connections"])


def pipelinedKey(connection: int, number: int, connections: int, keys: int) -> str:
    """
    The key of write C{number} on C{connection} of C{connections}: the
    next of C{keys} keys in turn over all connections, or a new key if
    C{keys} is 0.
    """
    if keys:
        return f"p{(number * connections + connection) % keys}"
    return f"p{connection}-{number}"


def measure(system: System, options: Options) -> Measurement:
    """
    Start C{system}, run the three phases against its leader, stop it.  The
    sequential phase also ends after C{--seconds}, since a system that waits
    for a timer before replicating (PySyncObj batched) would take minutes.
    """
    value = ("v" * options["value-size"])[: options["value-size"]]
    count = options["sequential"]
    connections, window = options["connections"], options["window"]
    if isinstance(system, Etcd):
        # As many requests outstanding as the others get, over more connections.
        connections = options["etcd-connections"]
        window = max(1, options["connections"] * options["window"] // connections)
    measurement = Measurement(system.name)
    try:
        system.start()
        before = system.term()
        address, codec = system.leader()
        pipelined = {"connections": connections, "window": window}
        sequential = drive(
            address,
            codec,
            lambda i, j: ("set", f"s{j}", value),
            count=count,
            seconds=options["seconds"],
        )
        keys = options["keys"]
        writes = drive(
            address,
            codec,
            lambda i, j: ("set", pipelinedKey(i, j, connections, keys), value),
            seconds=options["seconds"],
            **pipelined,
        )
        # Read the keys the sequential phase wrote (it may have stopped early).
        written = max(1, len(sequential.latencies) + sequential.errors)
        reads = drive(
            address,
            codec,
            lambda i, j: ("get", f"s{(j * connections + i) % written}", ""),
            seconds=options["seconds"],
            **pipelined,
        )
        measurement.leaderChanges = system.term() - before
        measurement.rss = [rss for pid in system.pids() if (rss := peakRSS(pid)) is not None]
    finally:
        system.stop()
    phases = [sequential, writes, reads]
    measurement.sequential = sequential.latencies
    measurement.writes = len(writes.latencies) / writes.seconds if writes.seconds else 0.0
    measurement.reads = len(reads.latencies) / reads.seconds if reads.seconds else 0.0
    measurement.errors = sum(phase.errors for phase in phases)
    measurement.firstError = next((p.firstError for p in phases if p.firstError), None)
    return measurement


def header(options: Options, systems: Sequence[System | str]) -> str:
    """When, which tree, which versions, what load: the lines above the table."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    git = ["git", "-C", root]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    versions = [f"python {platform.python_version()}", f"twisted {version('twisted')}"]
    if importlib.util.find_spec("pysyncobj") is not None:
        versions.append(f"pysyncobj {version('pysyncobj')}")
    versions += [etcdVersion(s.binary) for s in systems if isinstance(s, Etcd)]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"txraft compare: {now}, commit {commit.stdout.strip() or 'unknown'}"
            f"{' (with uncommitted changes)' if dirty.stdout.strip() else ''}; "
            f"every figure below comes from this one run, one system after the other.",
            f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            + ", ".join(versions),
            f"load: {options['sequential']} sequential sets on 1 connection (at most "
            f"{options['seconds']:g} s); pipelined "
            f"{options['value-size']}-byte sets, then gets, for {options['seconds']:g} s each "
            f"on {options['connections']} connections x window {options['window']}; "
            f"one load generator thread.",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run every system asked for, print the table; 1 if a system failed to run."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"compare: {e}\n{options}", file=sys.stderr)
        return 2
    stopOnSignals()
    systems = [makeSystem(name, options) for name in options["systems"]]
    print(header(options, systems), flush=True)
    measurements = []
    failed = False
    for name, system in zip(options["systems"], systems, strict=True):
        if isinstance(system, str):
            print(f"{name}: skipped: {system}", flush=True)
            measurements.append(Measurement(name, skipped=system))
            continue
        print(f"{system.name}: running", end="", flush=True)
        started = time.monotonic()
        try:
            measurements.append(measure(system, options))
            print(f", done in {time.monotonic() - started:.1f} s", flush=True)
        except KeyboardInterrupt:
            print(f"\n{system.name}: interrupted; every process it started is stopped")
            return 130
        except (StartError, ClusterError, OSError, ValueError) as e:
            print(f"\n{system.name}: FAILED: {e}", flush=True)
            measurements.append(Measurement(system.name, skipped=f"failed: {e}"))
            failed = True
    print()
    print(formatReport(measurements))
    notes = {s.note for s in systems if not isinstance(s, str)}
    print("\n" + "\n".join(f"- {note}" for note in sorted(notes)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
