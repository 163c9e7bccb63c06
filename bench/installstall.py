"""
Measure how long a node's event loop stalls while it installs its leader's
snapshot of a large map (issue 8: no stall over 50 ms from a snapshot,
whatever the map's size).

Founds a cluster of three C{twistd -n txraft} nodes on 127.0.0.1 (s1 to
s3, without a cluster key, so that the harness may send operators'
commands), fills the map with C{--keys} distinct keys through the leader
(pipelined C{set}s), then starts a fourth node with C{--join} and asks the
leader to C{add} it, as an operator grows a cluster (a node must never come
back under its old name with an empty data directory).  Its log is empty
and the leader's is compacted, so the leader sends it the snapshot in
C{InstallSnapshot} chunks, then the log after it.  Meanwhile another
connection asks the new node C{status} back to back, as L{snapshotstall}
does: C{status} is answered on the event loop, so the longest wait for one
is the longest stall.  It stops once the new node has applied everything
the leader had when the fill ended.

    python bench/installstall.py [--keys N]
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence

from snapshotstall import Probe, fill
from twisted.python import usage

from txraft import answers
from txraft.testing.localcluster import LocalCluster, stopOnSignals, writeConfig

#: The nodes that found the cluster, and the one added once the map is full.
FOUNDERS = ("s1", "s2", "s3")
NEWCOMER = "s4"
#: What a node logs for each leader's snapshot it has loaded.
INSTALLED = "installed the leader's snapshot"


class Options(usage.Options):
    """Command line of the install stall benchmark."""

    synopsis = "Usage: python bench/installstall.py [options]"
    longdesc = "Measure the longest event-loop stall of a follower installing a snapshot."
    optParameters = [
        ["keys", None, 1_000_000, "Distinct keys the map holds.", int],
        ["connections", None, 4, "Connections that fill the map.", int],
        ["window", None, 1000, "Unanswered requests per filling connection.", int],
        ["timeout", None, 300.0, "Seconds the follower has to catch up.", float],
    ]


def listeningProbe(cluster: LocalCluster, name: str, deadline: float) -> Probe:
    """A L{Probe} of node C{name}, once the restarted node listens (by C{deadline})."""
    while True:
        try:
            return Probe(cluster, name)
        except ConnectionRefusedError:
            if time.perf_counter() > deadline:
                raise
            time.sleep(0.05)


def addInBackground(cluster: LocalCluster, name: str) -> threading.Thread:
    """Ask the leader to add node C{name} (it answers once the node has caught up)."""
    host, port = cluster.address(name)
    answered: list[str] = []

    def add() -> None:
        with cluster.client(timeout=600) as client:
            answered.append(client.request(f"add {name} {host} {port}", retry=False))
        if answered != [answers.OK]:
            raise SystemExit(f"adding {name}: {answered}")

    thread = threading.Thread(target=add, daemon=True)
    thread.start()
    return thread


def run(options: Options) -> dict[str, float]:
    """Fill, add a new node, and time its stalls until it has caught up."""
    with LocalCluster(names=(*FOUNDERS, NEWCOMER), keyed=False) as cluster:
        founders = os.path.join(cluster.directory, "founders.conf")
        writeConfig(founders, {name: cluster.address(name) for name in FOUNDERS})
        for name in FOUNDERS:
            cluster.start(name, ["--config", founders])
        leader = cluster.waitForLeader(30)
        filling = time.perf_counter()
        fill(cluster, options["keys"], options["connections"], options["window"], leader)
        filled = time.perf_counter() - filling
        target = int(cluster.status(leader)["lastApplied"])  # type: ignore[call-overload]
        cluster.start(NEWCOMER, ["--join"])
        started = time.perf_counter()
        probe = listeningProbe(cluster, NEWCOMER, started + 30)
        probe.start()
        adding = addInBackground(cluster, NEWCOMER)
        while probe.applied < target:
            if time.perf_counter() - started > options["timeout"] or not probe.is_alive():
                raise SystemExit(
                    f"{NEWCOMER} applied {probe.applied:,} of {target:,}:\n"
                    + cluster.tail(NEWCOMER)
                )
            time.sleep(0.1)
        caughtUp = time.perf_counter() - started
        seen = probe.finish()
        adding.join(options["timeout"])
        installed = cluster.nodes[NEWCOMER].output().count(INSTALLED)
    return {**seen, "fill": filled, "caughtUp": caughtUp, "installed": installed}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print one line of results."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        raise SystemExit(f"{e}\n{options}") from None
    stopOnSignals()
    r = run(options)
    print(f"\n{options['keys']:,} keys, {time.strftime('%Y-%m-%d %H:%M')}, one run")
    print(
        f"{'longest ms':>10}{'p99 ms':>9}{'probes':>8}{'snapshot':>11}"
        f"{'fill s':>8}{'caught up s':>13}{'installed':>11}{'load':>6}"
    )
    print(
        f"{r['max']:>10.1f}{r['p99']:>9.1f}{r['probes']:>8}{r['snapshotIndex']:>11,}"
        f"{r['fill']:>8.1f}{r['caughtUp']:>13.1f}{r['installed']:>11}{r['load']:>6.1f}"
    )
    print("caught up: from the new node's start until it applied what the leader had")
    print("installed: snapshots the new node loaded on the way (its log says each)")


if __name__ == "__main__":
    main(sys.argv[1:])
