"""
Benchmark a real txraft cluster on this machine.

Starts a cluster of C{twistd -n txraft} processes on 127.0.0.1 (free ports,
a temporary directory) with L{txraft.testing.localcluster}, waits for a leader, then
measures, against the leader:

  - sequential C{set}: one request at a time on one connection (latency);
  - pipelined C{set}: several connections, each keeping a window of
    requests outstanding (throughput, and latency under that load);
  - sequential C{get} (linearizable reads go through the log too).

and prints one table.  The cluster is stopped on exit, on Ctrl-C and on
SIGTERM.

    python bench/bench.py [--quick] [--requests N] [--connections C] ...
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from collections.abc import Sequence
from importlib.metadata import version

from twisted.python import usage

from txraft.testing.load import Result, pipelinedConnection
from txraft.testing.localcluster import LocalCluster, stopOnSignals


class Options(usage.Options):
    """Command line of the benchmark."""

    synopsis = "Usage: python bench/bench.py [options]"
    longdesc = "Start a local txraft cluster and measure write and read latency and throughput."

    optFlags = [
        ["quick", "q", "A fast smoke run: small counts (overrides the counts below)."],
        ["keep", None, "Keep the cluster's directory (config, logs, node output)."],
        ["no-key", None, "Run the nodes without a cluster key (peers not authenticated)."],
    ]
    optParameters = [
        ["nodes", None, 3, "Cluster size.", int],
        ["requests", "n", 2000, "Sequential set requests (N).", int],
        ["connections", "c", 4, "Connections for the pipelined test (C).", int],
        ["pipelined", "m", 5000, "Pipelined set requests per connection (M).", int],
        ["window", "w", 100, "Outstanding requests per pipelined connection (W).", int],
        ["gets", "g", 1000, "Sequential get requests (0 to skip).", int],
        ["value-size", None, 16, "Bytes per value.", int],
        ["heartbeat", None, None, "Node --heartbeat (ms); default: the node's."],
        ["election-timeout", None, None, "Node --election-timeout MIN:MAX (ms)."],
    ]

    def postOptions(self) -> None:
        """Apply C{--quick} and check the counts."""
        if self["quick"]:
            self.update(requests=200, connections=2, pipelined=500, window=50, gets=100)
        for name in ("nodes", "requests", "connections", "pipelined", "window", "value-size"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["gets"] < 0:
            raise usage.UsageError("--gets must not be negative")

    def nodeArguments(self) -> list[str]:
        """The timing options to pass to every node."""
        arguments = []
        for name in ("heartbeat", "election-timeout"):
            if self[name] is not None:
                arguments += [f"--{name}", self[name]]
        return arguments


def percentile(sortedValues: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sortedValues:
        return float("nan")
    rank = max(1, round(fraction * len(sortedValues) + 0.5))
    return sortedValues[min(rank, len(sortedValues)) - 1]


def sequential(
    cluster: LocalCluster, leader: str, name: str, lines: Sequence[str], expect: str
) -> Result:
    """Send C{lines} one at a time on one connection, timing each."""
    result = Result(name)
    with cluster.connect(leader, timeout=30) as connection:
        started = time.perf_counter()
        for line in lines:
            sent = time.perf_counter()
            response = connection.request(line)
            result.latencies.append(time.perf_counter() - sent)
            if not response.startswith(expect):
                result.error(response)
        result.seconds = time.perf_counter() - started
    return result


def pipelined(
    cluster: LocalCluster,
    leader: str,
    connections: int,
    perConnection: int,
    window: int,
    value: str,
) -> Result:
    """Run L{pipelinedConnection} on C{connections} connections at once."""
    total = Result(f"pipelined set ({connections}x{perConnection}, window {window})")
    results: list[Result | BaseException] = [RuntimeError("not run")] * connections
    opened = [cluster.connect(leader, timeout=30) for _ in range(connections)]
    start = threading.Barrier(connections + 1)

    def run(i: int) -> None:
        lines = [f"set p{i}-{j} {value}" for j in range(perConnection)]
        start.wait()
        try:
            results[i] = pipelinedConnection(opened[i], lines, window)
        except BaseException as e:  # reported by the main thread
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        total.seconds = time.perf_counter() - started
    finally:
        for connection in opened:
            connection.close()
    for result in results:
        if isinstance(result, BaseException):
            raise result
        total.merge(result)
    return total


def formatTable(results: Sequence[Result]) -> str:
    """The results as an aligned text table."""
    header = ["test", "ok", "errors", "secs", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    rows = [header]
    for result in results:
        latencies = sorted(result.latencies)
        done = len(latencies) + result.errors
        rows.append(
            [
                result.name,
                str(len(latencies)),
                str(result.errors),
                f"{result.seconds:.2f}",
                f"{done / result.seconds:.0f}" if result.seconds else "-",
                *(f"{percentile(latencies, f) * 1000:.2f}" for f in (0.5, 0.9, 0.99)),
                f"{latencies[-1] * 1000:.2f}" if latencies else "-",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    for result in results:
        if result.firstError is not None:
            lines.append(f"{result.name}: first unexpected response: {result.firstError!r}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table; return the exit status."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"bench: {e}\n{options}", file=sys.stderr)
        return 2
    stopOnSignals()
    value = ("v" * options["value-size"])[: options["value-size"]]
    cluster = LocalCluster(
        [f"s{i}" for i in range(1, options["nodes"] + 1)],
        extraArgs=options.nodeArguments(),
        keyed=not options["no-key"],
    )
    try:
        started = time.monotonic()
        cluster.startAll()
        leader = cluster.waitForLeader(timeout=30)
        elected = time.monotonic() - started
        print(
            f"txraft bench: {options['nodes']} nodes on 127.0.0.1 in {cluster.directory} "
            f"({'no cluster key' if options['no-key'] else 'with a cluster key'}); "
            f"leader {leader} elected {elected:.2f}s after start"
        )
        print(
            f"python {platform.python_version()}, twisted {version('twisted')}, "
            f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}"
        )
        results = []
        n = options["requests"]
        results.append(
            sequential(
                cluster,
                leader,
                "sequential set (1 conn)",
                [f"set s-{i} {value}" for i in range(n)],
                "OK",
            )
        )
        results.append(
            pipelined(
                cluster,
                leader,
                options["connections"],
                options["pipelined"],
                options["window"],
                value,
            )
        )
        if options["gets"]:
            results.append(
                sequential(
                    cluster,
                    leader,
                    "sequential get (1 conn)",
                    [f"get s-{i % n}" for i in range(options["gets"])],
                    "OK ",
                )
            )
        print()
        print(formatTable(results))
        status = cluster.status(leader)
        print(
            f"\nleader {leader}: term {status['term']}, commitIndex {status['commitIndex']}, "
            f"{'still' if cluster.currentLeader() == leader else 'no longer'} leader"
        )
        return 1 if any(result.errors for result in results) else 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception:
        print(cluster.describe(lines=20), file=sys.stderr)
        raise
    finally:
        if options["keep"]:
            cluster.stopAll()
            print(f"kept {cluster.directory}")
        else:
            cluster.cleanup()


if __name__ == "__main__":
    sys.exit(main())
