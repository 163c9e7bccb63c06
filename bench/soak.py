"""
Soak a real txraft cluster under faults and check that it stays linearizable.

Starts a cluster of C{twistd -n txraft} processes on 127.0.0.1 with
L{txraft.testing.localcluster}, then runs L{txraft.testing.chaos} (the engine of
C{tests/test_chaos.py}) for C{--duration} seconds: concurrent clients doing
random C{get}/C{set}/C{delete} on a few keys while a nemesis kills, freezes
and restarts nodes one at a time and kills leaders.  At the end it heals the
cluster, reads every key, checks the whole history with
L{txraft.testing.linearizability.checkHistory} and prints a summary.

    python bench/soak.py [--duration SECONDS] [--clients N] [--keys N] [--seed N]

The exit status is 0 only if the history is linearizable and nothing
anomalous happened (a node exiting by itself, a malformed answer); on a
failure the cluster's directory (config, Raft logs, node output) is kept
and the checker's explanation, the Raft log lines of the failing key and
the tail of every node's output are printed.  Ctrl-C ends the faulty phase
early and still checks what was recorded.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence

from twisted.python import usage

from txraft.testing.chaos import ChaosReport, raftLogExcerpt, runChaos
from txraft.testing.linearizability import DEFAULT_BUDGET
from txraft.testing.localcluster import LocalCluster, stopOnSignals


class Options(usage.Options):
    """Command line of the soak test."""

    synopsis = "Usage: python bench/soak.py [options]"
    longdesc = (
        "Run clients and a fault-injecting nemesis against a local txraft cluster, "
        "then check that everything the clients saw is linearizable."
    )

    optFlags = [
        ["keep", None, "Keep the cluster's directory even if the run passes."],
        ["quiet", "q", "Do not print each fault as it is injected."],
    ]
    optParameters = [
        ["duration", "d", 300.0, "Seconds of faults.", float],
        ["clients", "c", 4, "Concurrent clients.", int],
        ["keys", "k", 3, "Keys the clients share.", int],
        ["seed", "s", None, "Seed of the nemesis schedule and clients (default: random).", int],
        ["nodes", "n", 3, "Cluster size.", int],
        ["overlap", None, 2, "Fault schedules at once (2+ can cost the majority).", int],
        ["request-timeout", None, 1.0, "Seconds before a request's outcome is unknown.", float],
        ["budget", None, DEFAULT_BUDGET, "Checker search steps per key.", int],
        ["history", None, None, "Write the history to this file, one JSON object a line."],
    ]

    def postOptions(self) -> None:
        """Check the numbers."""
        for name in ("clients", "keys", "budget", "overlap"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        if self["nodes"] < 3:
            raise usage.UsageError("--nodes must be at least 3 (one node may be down)")
        if self["duration"] <= 0 or self["request-timeout"] <= 0:
            raise usage.UsageError("--duration and --request-timeout must be positive")
        if self["seed"] is None:
            self["seed"] = random.SystemRandom().randrange(2**32)


def writeHistory(path: str, report: ChaosReport) -> None:
    """Write the history, one operation a line, times relative to the start."""
    with open(path, "w", encoding="utf-8") as f:
        for op in report.history:
            record = {
                "client": op.client,
                "kind": op.kind,
                "key": op.key,
                "value": op.value,
                "start": round(op.start - report.started, 6),
                "end": None if op.end is None else round(op.end - report.started, 6),
                "result": op.result,
                "found": op.found,
            }
            f.write(json.dumps(record) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak test; return the exit status."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"soak: {e}\n{options}", file=sys.stderr)
        return 2
    stopOnSignals()
    cluster = LocalCluster([f"s{i}" for i in range(1, options["nodes"] + 1)])
    keep = options["keep"]
    started = time.monotonic()

    def log(line: str) -> None:
        if not (options["quiet"] and line.startswith("nemesis:")):
            print(f"{time.monotonic() - started:8.2f}s {line}", flush=True)

    try:
        cluster.startAll()
        leader = cluster.waitForLeader(timeout=30)
        log(f"{options['nodes']} nodes in {cluster.directory}; leader {leader}")
        report = runChaos(
            cluster,
            duration=options["duration"],
            seed=options["seed"],
            clients=options["clients"],
            keys=options["keys"],
            requestTimeout=options["request-timeout"],
            budget=options["budget"],
            overlap=options["overlap"],
            log=log,
            interruptible=True,
        )
        if options["history"]:
            writeHistory(options["history"], report)
        print()
        print(report.summary())
        passed = report.verdict.ok and not report.anomalies
        if not report.verdict.ok:
            print()
            print(report.verdict.explanation)
            print(raftLogExcerpt(cluster, report.verdict.key, report.verdict.explanation))
        if not passed:
            print()
            print("faults:")
            for fault in report.faults:
                print(f"  {fault.describe(report.started)}")
            print(cluster.describe(lines=40))
            print(f"\nFAILED; replay the schedule with --seed {report.seed}")
            keep = True
        return 0 if passed else 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception:
        print(cluster.describe(lines=20), file=sys.stderr)
        raise
    finally:
        if keep:
            cluster.stopAll()
            print(f"kept {cluster.directory}")
        else:
            cluster.cleanup()


if __name__ == "__main__":
    sys.exit(main())
