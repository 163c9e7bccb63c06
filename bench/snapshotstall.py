"""
Measure how long taking a snapshot stalls a node's event loop (issue 8: a
leader that holds under full load), with each way of writing snapshots,
in one run.

For each C{--snapshot-writer} (fork, then thread), starts one C{twistd -n
txraft} node on 127.0.0.1 with C{--snapshot-entries} just above C{--keys},
fills its map with C{--keys} distinct keys (pipelined C{set}s), then sends
the few writes that make it take a snapshot while another connection asks
C{status} back to back.  C{status} is answered on the event loop without
touching the log, so the longest wait for one is the longest stall.  It
prints, per writer, the longest and the 99th-percentile wait during the
snapshot, how long the snapshot took, and the ratio between the writers.

    python bench/snapshotstall.py [--keys N] [--writers fork,thread]
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence

from twisted.python import usage

from txraft import answers
from txraft.testing.load import pipelinedConnection
from txraft.testing.localcluster import LocalCluster, stopOnSignals

#: Writes sent after the map is full, to cross the snapshot threshold.
TRIGGER_WRITES = 100

#: How long to wait for a snapshot to be taken.
SNAPSHOT_DEADLINE = 600.0


class Options(usage.Options):
    """Command line of the snapshot stall benchmark."""

    synopsis = "Usage: python bench/snapshotstall.py [options]"
    longdesc = "Measure the longest event-loop stall a snapshot causes, per snapshot writer."
    optParameters = [
        ["keys", None, 1_000_000, "Distinct keys in the map when the snapshot is taken.", int],
        ["writers", None, "fork,thread", "Snapshot writers to compare, in order."],
        ["connections", None, 4, "Connections that fill the map.", int],
        ["window", None, 1000, "Unanswered requests per filling connection.", int],
    ]


def fill(cluster: LocalCluster, keys: int, connections: int, window: int) -> None:
    """Set C{keys} distinct keys on the node, pipelined over a few connections."""
    lines = [f"set key{i:08d} value-{i:08d}" for i in range(keys)]
    share = -(-len(lines) // connections)
    errors: list[str] = []

    def push(part: Sequence[str]) -> None:
        with cluster.connect("s1", timeout=60) as connection:
            result = pipelinedConnection(connection, part, window)
        if result.errors:
            errors.append(f"{result.errors} errors, the first {result.firstError!r}")

    threads = [
        threading.Thread(target=push, args=(lines[i * share : (i + 1) * share],))
        for i in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"filling the map failed: {errors[:3]}")


def measureStall(cluster: LocalCluster) -> tuple[list[float], float]:
    """
    Trigger a snapshot and ask C{status} back to back until it is saved;
    return each wait and how long the snapshot took.
    """
    waits: list[float] = []
    with cluster.connect("s1", timeout=60) as probe, cluster.connect("s1", timeout=60) as writer:
        started = time.perf_counter()
        writer.sendLines([f"set trigger{i} x" for i in range(TRIGGER_WRITES)])
        deadline = started + SNAPSHOT_DEADLINE
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            answer = probe.request("status")
            waits.append(time.perf_counter() - sent)
            value = answers.okValue(answer)
            if value is not None and json.loads(value)["snapshotIndex"] > 0:
                took = time.perf_counter() - started
                for _ in range(TRIGGER_WRITES):
                    writer.readLine()
                return waits, took
    raise SystemExit("no snapshot was taken in time")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The C{fraction} quantile of C{values} (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(writer: str, options: Options) -> dict[str, float]:
    """Measure one snapshot writer on a fresh node."""
    args = ["--snapshot-writer", writer, "--snapshot-entries", str(options["keys"] + 50)]
    with LocalCluster(names=("s1",), extraArgs=args) as cluster:
        cluster.startAll()
        cluster.waitForLeader(30)
        filling = time.perf_counter()
        fill(cluster, options["keys"], options["connections"], options["window"])
        print(f"{writer}: {options['keys']:,} keys in {time.perf_counter() - filling:.1f} s")
        waits, took = measureStall(cluster)
    return {
        "max": max(waits) * 1000,
        "p99": percentile(waits, 0.99) * 1000,
        "probes": len(waits),
        "snapshot": took,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print one table."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        raise SystemExit(f"{e}\n{options}") from None
    stopOnSignals()
    writers = [w for w in options["writers"].split(",") if w]
    results = {writer: run(writer, options) for writer in writers}
    print(f"\n{options['keys']:,} keys, {time.strftime('%Y-%m-%d %H:%M')}, one run")
    print(f"{'writer':<8}{'longest ms':>12}{'p99 ms':>10}{'probes':>8}{'snapshot s':>12}")
    for writer, r in results.items():
        print(
            f"{writer:<8}{r['max']:>12.1f}{r['p99']:>10.1f}{r['probes']:>8}{r['snapshot']:>12.1f}"
        )
    if len(results) == 2:
        first, second = results.values()
        print(f"longest stall, {writers[1]} / {writers[0]}: {second['max'] / first['max']:.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
