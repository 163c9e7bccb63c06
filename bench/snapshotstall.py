"""
Measure how long taking snapshots stalls a node's event loop (issue 8: a
leader that holds under full load), with each way of writing snapshots,
in one run.

For each C{--writers} entry (fork, thread, and none: snapshots off, the
baseline of what the load alone costs), starts one C{twistd -n txraft}
node on 127.0.0.1 with C{--snapshot-entries} (the node's default unless
given), fills its map with C{--keys} distinct keys (pipelined C{set}s, so
snapshots are taken all along as the map grows), and keeps going for
C{--linger} seconds, while another connection asks C{status} back to back.
C{status} is answered on the event loop without touching the log, so the
longest wait for one is the longest stall.  It prints, per writer, the
longest and the 99th-percentile wait and the snapshots taken, with what
else shared the machine: the load average at the end of each run, and how
long the node waited for a core while it was runnable (Linux's
C{/proc/PID/schedstat}): on a busy machine, part of each stall.

    python bench/snapshotstall.py [--keys N] [--writers fork,thread,none]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

from twisted.python import usage

from txraft import answers
from txraft.client import LineConnection
from txraft.testing.load import pipelinedConnection
from txraft.testing.localcluster import LocalCluster, stopOnSignals

#: --snapshot-entries for the baseline without snapshots.
NEVER = 10**12


class Options(usage.Options):
    """Command line of the snapshot stall benchmark."""

    synopsis = "Usage: python bench/snapshotstall.py [options]"
    longdesc = "Measure the longest event-loop stall a snapshot causes, per snapshot writer."
    optParameters = [
        ["keys", None, 1_000_000, "Distinct keys the map ends with.", int],
        ["writers", None, "fork,thread,none", "Snapshot writers to compare, in order."],
        ["snapshot-entries", None, None, "The nodes' --snapshot-entries (default: theirs).", int],
        ["linger", None, 15.0, "Seconds to keep asking after the map is full.", float],
        ["connections", None, 4, "Connections that fill the map.", int],
        ["window", None, 1000, "Unanswered requests per filling connection.", int],
    ]


def fill(
    cluster: LocalCluster, keys: int, connections: int, window: int, node: str = "s1"
) -> None:
    """Set C{keys} distinct keys through C{node}, pipelined over a few connections."""
    lines = [f"set key{i:08d} value-{i:08d}" for i in range(keys)]
    share = -(-len(lines) // connections)
    errors: list[str] = []

    def push(part: Sequence[str]) -> None:
        with cluster.connect(node, timeout=60) as connection:
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


def ask(
    address: tuple[str, int],
    stopping: Event,
    applied: Synchronized[int],
    snapshotIndex: Synchronized[int],
    results: Connection,
) -> None:
    """
    The probe's process: ask C{status} back to back until C{stopping} is set,
    keeping C{applied} and C{snapshotIndex} up to date; then send the
    longest and 99th-percentile waits (ms) and the count over C{results}.
    """
    waits: list[float] = []
    with LineConnection(*address, timeout=60) as connection:
        while not stopping.is_set():
            sent = time.perf_counter()
            answer = connection.request("status")
            waits.append(time.perf_counter() - sent)
            value = answers.okValue(answer)
            if value is not None:
                status = json.loads(value)
                snapshotIndex.value = status["snapshotIndex"]
                applied.value = status["lastApplied"]
    results.send(
        {"max": max(waits) * 1000, "p99": percentile(waits, 0.99) * 1000, "probes": len(waits)}
    )


class Probe:
    """
    Asks a node for C{status} back to back, timing each answer, until
    finished.  It asks from a process of its own: in this one, the threads
    that generate the load and the garbage collector would delay the
    probe's own reading of an answer, and it would count that as the node's.
    """

    def __init__(self, cluster: LocalCluster, node: str = "s1") -> None:
        """
        @raise OSError: (C{ConnectionRefusedError}, say) if the node does
            not take connections yet.
        """
        if cluster.tls is not None:
            raise ValueError("the probe speaks plain TCP")
        address = cluster.address(node)
        cluster.connect(node, timeout=60).close()
        context = multiprocessing.get_context("spawn")
        self._stopping = context.Event()
        self._applied = context.Value("q", 0)
        self._snapshotIndex = context.Value("q", 0)
        self._results, self._sending = context.Pipe(duplex=False)
        self._process = context.Process(
            target=ask,
            args=(address, self._stopping, self._applied, self._snapshotIndex, self._sending),
            daemon=True,
        )

    @property
    def applied(self) -> int:
        """The node's C{lastApplied} in its latest answer."""
        return int(self._applied.value)

    def start(self) -> None:
        """Start asking."""
        self._process.start()
        # The child holds the only sending end now: should it die without
        # sending, finish() reads EOF rather than waiting forever.
        self._sending.close()

    def is_alive(self) -> bool:
        """Whether the probe is still asking."""
        return self._process.is_alive()

    def finish(self) -> dict[str, float]:
        """Stop asking; the longest and 99th-percentile waits (ms), and the rest seen."""
        self._stopping.set()
        try:
            seen = self._results.recv()
        except EOFError:
            self._process.join()
            raise SystemExit(
                f"the probe ended without its results (exit code {self._process.exitcode})"
            ) from None
        self._process.join()
        return {**seen, "snapshotIndex": self._snapshotIndex.value, "load": os.getloadavg()[0]}


def percentile(values: Sequence[float], fraction: float) -> float:
    """The C{fraction} quantile of C{values} (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def waitedForACore(pid: int) -> float:
    """
    Seconds process C{pid}'s main thread has waited, runnable, for a core
    (0 where Linux's schedstat is not there to say).
    """
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def run(writer: str, options: Options) -> dict[str, float]:
    """Measure one snapshot writer on a fresh node."""
    args = ["--snapshot-writer", "fork" if writer == "none" else writer]
    if writer == "none":
        args += ["--snapshot-entries", str(NEVER)]
    elif options["snapshot-entries"] is not None:
        args += ["--snapshot-entries", str(options["snapshot-entries"])]
    with LocalCluster(names=("s1",), extraArgs=args) as cluster:
        cluster.startAll()
        cluster.waitForLeader(30)
        process = cluster.nodes["s1"].process
        assert process is not None
        probe = Probe(cluster)
        probe.start()
        waited = waitedForACore(process.pid)
        filling = time.perf_counter()
        fill(cluster, options["keys"], options["connections"], options["window"])
        seconds = time.perf_counter() - filling
        print(f"{writer}: {options['keys']:,} keys in {seconds:.1f} s")
        time.sleep(options["linger"])
        seen = probe.finish()
        waited = waitedForACore(process.pid) - waited
    return {**seen, "fill": seconds, "waited": waited}


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
    print(
        f"{'writer':<8}{'longest ms':>12}{'p99 ms':>10}{'probes':>9}{'last snapshot':>15}"
        f"{'fill s':>8}{'waited s':>10}{'load':>6}"
    )
    for writer, r in results.items():
        print(
            f"{writer:<8}{r['max']:>12.1f}{r['p99']:>10.1f}{r['probes']:>9}"
            f"{r['snapshotIndex']:>15,}{r['fill']:>8.1f}{r['waited']:>10.1f}{r['load']:>6.1f}"
        )
    print("waited: seconds the node was runnable but waited for a core; load: 1-minute average")


if __name__ == "__main__":
    main(sys.argv[1:])
