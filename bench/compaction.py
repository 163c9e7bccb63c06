"""
Show that a txraft cluster's disk use, memory and restart time stay flat
however many writes go through it (issue 4: snapshots and log compaction).

Starts a three-node cluster of C{twistd -n txraft} processes on 127.0.0.1
with L{txraft.testing.localcluster} (C{--snapshot-entries} as given, else the
node's default), then pushes C{--writes} C{set}s to the leader, pipelined
over a few connections, overwriting a fixed set of C{--keys} keys (so the
state machine stays the same size and only the log could grow).  Every
C{--sample-every} writes it records each node's disk use (log, snapshot,
term/vote and any temporary file: everything in the data directory but the
node's output and lock), log file size and resident memory (C{VmRSS}).  At
each checkpoint (C{--checkpoints}, and the last write) it measures restart
time: C{SIGKILL} all three nodes, start them again, and time until a leader
answers a C{get} of the last key written with its last value, and until
every node has applied everything; it then checks every key against what
was acknowledged.

It prints one table and exits non-zero if a write was not acknowledged, a
key came back wrong, or disk use, memory or restart time grew by more than
C{--factor} (plus a small allowance for noise) from one checkpoint to the
next.

    python bench/compaction.py [--writes N] [--snapshot-entries E] ...
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from collections.abc import Sequence

from twisted.python import usage

from txraft import answers
from txraft.client import LineConnection
from txraft.testing.load import Result, pipelinedConnection
from txraft.testing.localcluster import LocalCluster, stopOnSignals

MB = 1024 * 1024

#: Allowances on top of C{--factor} for noise in the flatness check.
DISK_SLACK = 1 * MB
RSS_SLACK = 20.0  # MB
RESTART_SLACK = 1.0  # seconds

#: How long a restarted cluster has to answer.
RESTART_DEADLINE = 120.0


class Options(usage.Options):
    """Command line of the compaction benchmark."""

    synopsis = "Usage: python bench/compaction.py [options]"
    longdesc = (
        "Push many writes through a local 3-node txraft cluster and show that disk use, "
        "memory and restart time stay flat."
    )

    optFlags = [["keep", None, "Keep the cluster's directory (config, data, node output)."]]
    optParameters = [
        ["writes", "n", 1_000_000, "Total set requests.", int],
        [
            "snapshot-entries",
            None,
            None,
            "Node --snapshot-entries (default: the node's own default).",
            int,
        ],
        [
            "checkpoints",
            None,
            "100000,1000000",
            "Write counts at which to measure restart time (the last write is one too).",
        ],
        ["sample-every", None, 100_000, "Record disk use and memory every this many writes.", int],
        ["keys", "k", 10_000, "Distinct keys, overwritten in turn.", int],
        ["connections", "c", 4, "Client connections writing at once.", int],
        ["window", "w", 200, "Outstanding requests per connection.", int],
        ["value-size", None, 16, "Bytes of padding in each value.", int],
        ["factor", None, 3.0, "Largest growth between checkpoints that counts as flat.", float],
    ]

    def postOptions(self) -> None:
        """Check the numbers; parse the checkpoints."""
        for name in ("writes", "sample-every", "keys", "connections", "window"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["snapshot-entries"] is not None and self["snapshot-entries"] < 1:
            raise usage.UsageError("--snapshot-entries must be at least 1")
        if self["factor"] <= 1:
            raise usage.UsageError("--factor must be more than 1")
        try:
            checkpoints = {int(c) for c in self["checkpoints"].split(",") if c.strip()}
        except ValueError:
            raise usage.UsageError("--checkpoints takes write counts, comma-separated") from None
        if any(c < 1 for c in checkpoints):
            raise usage.UsageError("--checkpoints must be positive")
        self["checkpoints"] = sorted({c for c in checkpoints if c < self["writes"]}) + [
            self["writes"]
        ]
        # Each key is always written on the same connection, so its last
        # value is that of its last write in the order they were sent.
        connections = self["connections"]
        self["keys"] = -(-self["keys"] // connections) * connections

    def nodeArguments(self) -> list[str]:
        """The options to give every node."""
        if self["snapshot-entries"] is None:
            return []
        return ["--snapshot-entries", str(self["snapshot-entries"])]


class Workload:
    """Which key and value write number I sets, and what the map is after N writes."""

    def __init__(self, keys: int, valueSize: int) -> None:
        self.keys = keys
        self.padding = "v" * valueSize

    def key(self, i: int) -> str:
        """The key of write C{i}."""
        return f"k{i % self.keys}"

    def value(self, i: int) -> str:
        """The value of write C{i}."""
        return f"{i}-{self.padding}"

    def line(self, i: int) -> str:
        """The request of write C{i}."""
        return f"set {self.key(i)} {self.value(i)}"

    def expected(self, writes: int) -> dict[str, str]:
        """The map once writes 0 to C{writes - 1} are applied."""
        result = {}
        for k in range(min(self.keys, writes)):
            last = k + self.keys * ((writes - 1 - k) // self.keys)
            result[self.key(last)] = self.value(last)
        return result


class Sample:
    """One row of the table: the cluster after some number of writes."""

    def __init__(self, writes: int, seconds: float) -> None:
        self.writes = writes
        self.seconds = seconds
        self.disk: dict[str, int] = {}
        self.log: dict[str, int] = {}
        self.snapshot: dict[str, int] = {}
        self.rss: dict[str, float | None] = {}
        #: Seconds from starting the killed nodes to the last write read
        #: back, and to every node having applied everything.
        self.restartGet: float | None = None
        self.restartAll: float | None = None


def nodeFiles(cluster: LocalCluster, name: str) -> dict[str, int]:
    """
    The size of each data file of node C{name}: its log, snapshot, term and
    vote and any temporary file (not its output or its lock file).
    """
    sizes = {}
    prefix = f"{name}."
    with os.scandir(cluster.directory) as entries:
        for entry in entries:
            suffix = entry.name[len(prefix) :]
            if entry.name.startswith(prefix) and suffix not in ("out", "lock"):
                try:
                    sizes[suffix] = entry.stat().st_size
                except FileNotFoundError:
                    pass  # a temporary file renamed meanwhile
    return sizes


def residentMB(cluster: LocalCluster, name: str) -> float | None:
    """Node C{name}'s resident memory in MB, or L{None} if it is not running."""
    process = cluster.nodes[name].process
    if process is None or process.poll() is not None:
        return None
    try:
        with open(f"/proc/{process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(cluster: LocalCluster, sample: Sample) -> Sample:
    """Fill in C{sample}'s disk, log, snapshot and memory figures for every node."""
    for name in cluster.names:
        files = nodeFiles(cluster, name)
        sample.disk[name] = sum(files.values())
        sample.log[name] = files.get("log", 0)
        sample.snapshot[name] = files.get("snapshot", 0)
        sample.rss[name] = residentMB(cluster, name)
    return sample


class Writer:
    """
    Pushes writes to the leader over C{connections} connections, each
    keeping a window of requests outstanding (L{txraft.testing.load.pipelinedConnection}).
    """

    def __init__(self, cluster: LocalCluster, workload: Workload, options: Options) -> None:
        self.cluster = cluster
        self.workload = workload
        self.count = options["connections"]
        self.window = options["window"]
        self.opened: list[LineConnection] = []
        self.errors = 0
        self.firstError: str | None = None

    def connect(self, leader: str) -> None:
        """(Re)open every connection to C{leader}."""
        self.close()
        self.opened = [self.cluster.connect(leader, timeout=60) for _ in range(self.count)]

    def close(self) -> None:
        """Close every connection."""
        for connection in self.opened:
            connection.close()
        self.opened = []

    def write(self, start: int, stop: int) -> None:
        """Send writes C{start} to C{stop - 1}; write I goes on connection I mod count."""
        results: list[Result | BaseException] = [RuntimeError("not run")] * self.count

        def run(c: int) -> None:
            first = start + (c - start) % self.count
            lines = [self.workload.line(i) for i in range(first, stop, self.count)]
            try:
                results[c] = pipelinedConnection(self.opened[c], lines, self.window)
            except BaseException as e:  # reported by the caller's thread
                results[c] = e

        threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in range(self.count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for result in results:
            if isinstance(result, BaseException):
                raise result
            self.errors += result.errors
            self.firstError = self.firstError or result.firstError


def restart(cluster: LocalCluster, workload: Workload, writes: int, sample: Sample) -> list[str]:
    """
    Kill every node with C{SIGKILL}, start them again and time the
    recovery into C{sample}; return the problems found (keys read back
    wrong).
    """
    cluster.killAll()
    lastKey, lastValue = workload.key(writes - 1), workload.value(writes - 1)
    started = time.monotonic()
    cluster.startAll()
    deadline = started + RESTART_DEADLINE
    with cluster.client(timeout=5.0) as client:
        response = client.request(f"get {lastKey}", deadline=deadline)
        if response != f"OK {lastValue}":
            return [f"get {lastKey} answered {response!r} after the restart"]
        sample.restartGet = time.monotonic() - started
        leader = cluster.waitForLeader(RESTART_DEADLINE)
        target = cluster.status(leader)["commitIndex"]
        while True:
            statuses = cluster.statuses(timeout=2.0)
            applied = [s["lastApplied"] if s else -1 for s in statuses.values()]
            if len(applied) == len(cluster.names) and min(applied) >= target:
                break
            if time.monotonic() > deadline:
                return [f"not every node applied up to {target}: {statuses}"]
            time.sleep(0.01)
        sample.restartAll = time.monotonic() - started
        response = client.request("show", deadline=time.monotonic() + RESTART_DEADLINE)
    shown = answers.okValue(response)
    if shown is None:
        return [f"show answered {response[:80]!r}"]
    stored = json.loads(shown)
    expected = workload.expected(writes)
    wrong = [k for k in expected if stored.get(k) != expected[k]]
    extra = [k for k in stored if k not in expected]
    if wrong or extra:
        return [f"{len(wrong)} keys read back wrong (e.g. {wrong[:3]}), {len(extra)} unexpected"]
    return []


def formatTable(names: Sequence[str], samples: Sequence[Sample]) -> str:
    """The samples as an aligned text table."""

    def each(values: dict[str, float | int | None], scale: float, digits: int) -> str:
        return " / ".join(
            "-" if values.get(n) is None else f"{values[n] / scale:.{digits}f}" for n in names
        )

    who = "/".join(names)
    header = [
        "writes",
        "secs",
        f"disk MB {who}",
        f"log MB {who}",
        f"snapshot MB {who}",
        f"RSS MB {who}",
        "restart s (get / all)",
    ]
    rows = [header]
    for s in samples:
        restart = "" if s.restartGet is None else f"{s.restartGet:.2f} / {s.restartAll:.2f}"
        rows.append(
            [
                f"{s.writes:,}",
                f"{s.seconds:.1f}",
                each(s.disk, MB, 2),  # type: ignore[arg-type]
                each(s.log, MB, 2),  # type: ignore[arg-type]
                each(s.snapshot, MB, 2),  # type: ignore[arg-type]
                each(s.rss, 1, 1),
                restart,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def flatness(checkpoints: Sequence[Sample], factor: float) -> list[str]:
    """
    The ways the figures grew by more than C{factor} (plus an allowance)
    from one checkpoint to the next.
    """
    problems = []
    for before, after in zip(checkpoints, checkpoints[1:], strict=False):
        span = f"{before.writes:,} -> {after.writes:,} writes"
        figures = [
            ("disk", max(before.disk.values()), max(after.disk.values()), DISK_SLACK, MB, "MB"),
            (
                "restart",
                before.restartGet or 0.0,
                after.restartGet or 0.0,
                RESTART_SLACK,
                1,
                "s",
            ),
            (
                "RSS",
                max(r or 0.0 for r in before.rss.values()),
                max(r or 0.0 for r in after.rss.values()),
                RSS_SLACK,
                1,
                "MB",
            ),
        ]
        for what, old, new, slack, scale, unit in figures:
            if new > factor * old + slack:
                problems.append(
                    f"{what} grew from {old / scale:.2f} {unit} to {new / scale:.2f} {unit} "
                    f"({span}): more than {factor}x"
                )
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table; return the exit status."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"compaction: {e}\n{options}", file=sys.stderr)
        return 2
    stopOnSignals()
    workload = Workload(options["keys"], options["value-size"])
    cluster = LocalCluster(["s1", "s2", "s3"], extraArgs=options.nodeArguments())
    writer = Writer(cluster, workload, options)
    samples: list[Sample] = []
    checkpoints: list[Sample] = []
    problems: list[str] = []
    try:
        cluster.startAll()
        leader = cluster.waitForLeader(timeout=30)
        entries = options["snapshot-entries"] or "the node default (10000)"
        print(
            f"txraft compaction bench: 3 nodes in {cluster.directory}, --snapshot-entries "
            f"{entries}; {options['writes']:,} writes over {options['keys']:,} keys, "
            f"{options['connections']} connections, window {options['window']}"
        )
        print(
            f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"{platform.system()} {platform.release()}",
            flush=True,
        )
        writer.connect(leader)
        started = time.monotonic()
        done = 0
        stops = sorted(
            set(range(options["sample-every"], options["writes"], options["sample-every"]))
            | set(options["checkpoints"])
        )
        for stop in stops:
            writer.write(done, stop)
            done = stop
            sample = measure(cluster, Sample(done, time.monotonic() - started))
            if done in options["checkpoints"]:
                writer.close()
                problems += restart(cluster, workload, done, sample)
                checkpoints.append(sample)
                if done < options["writes"]:
                    writer.connect(cluster.waitForLeader(timeout=30))
            samples.append(sample)
            restartText = (
                ""
                if sample.restartGet is None
                else f", restart {sample.restartGet:.2f}s / {sample.restartAll:.2f}s"
            )
            print(
                f"  {done:>10,} writes, {sample.seconds:6.1f}s: disk MB "
                + " ".join(f"{sample.disk[n] / MB:.2f}" for n in cluster.names)
                + ", RSS MB "
                + " ".join(f"{sample.rss[n] or 0:.0f}" for n in cluster.names)
                + restartText,
                flush=True,
            )
        print()
        print(formatTable(cluster.names, samples))
        if writer.errors:
            problems.append(
                f"{writer.errors} writes not acknowledged; first: {writer.firstError!r}"
            )
        problems += flatness(checkpoints, options["factor"])
        elapsed = time.monotonic() - started
        print(f"\n{done:,} writes in {elapsed:.1f}s ({done / elapsed:,.0f}/s with restarts)")
        for problem in problems:
            print(f"FAIL: {problem}")
        if not problems:
            print(
                f"flat: disk, memory and restart time within {options['factor']}x between "
                f"checkpoints at {', '.join(f'{c.writes:,}' for c in checkpoints)} writes"
            )
        return 1 if problems else 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception:
        print(cluster.describe(lines=20), file=sys.stderr)
        raise
    finally:
        writer.close()
        if options["keep"]:
            cluster.stopAll()
            print(f"kept {cluster.directory}")
        else:
            cluster.cleanup()


if __name__ == "__main__":
    sys.exit(main())
