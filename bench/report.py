"""
The figures of C{bench/compare.py} and their table: absolute figures per
system, then txraft's ratio to each other system.  Pure functions of the
measurements, so that the table can be tested without running anything.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: The system every other one is compared with.
REFERENCE = "txraft"

MIB = 1024 * 1024


@dataclass
class Measurement:
    """What one run of one system gave; a skipped system has only C{skipped}."""

    name: str
    #: Successful pipelined writes (and reads) per second.
    writes: float | None = None
    reads: float | None = None
    #: Latencies of the successful sequential writes, in seconds.
    sequential: list[float] = field(default_factory=list)
    #: Peak resident set size of each node, in bytes.
    rss: list[int] = field(default_factory=list)
    errors: int = 0
    firstError: str | None = None
    #: How much the highest Raft term rose during the run (each rise is an election).
    leaderChanges: int | None = None
    #: Why the system was not measured, if it was not.
    skipped: str | None = None

    def p50(self) -> float | None:
        """Sequential write latency, median, in milliseconds."""
        return statistics.median(self.sequential) * 1000 if self.sequential else None

    def p99(self) -> float | None:
        """Sequential write latency, 99th percentile, in milliseconds."""
        if len(self.sequential) < 2:
            return None
        return statistics.quantiles(self.sequential, n=100)[98] * 1000

    def peakRSS(self) -> int | None:
        """The largest node's peak RSS, in bytes."""
        return max(self.rss) if self.rss else None


def ratio(ours: float | None, theirs: float | None) -> str:
    """C{ours / theirs} as C{"1.23x"}, or C{"-"} when either is unknown or theirs is 0."""
    if ours is None or theirs is None or theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}x"


def _number(value: float | None, format: str) -> str:
    return "-" if value is None else format.format(value)


def _rss(measurement: Measurement) -> str:
    if not measurement.rss:
        return "-"
    low, high = min(measurement.rss) / MIB, max(measurement.rss) / MIB
    return f"{low:.0f} MiB" if round(low) == round(high) else f"{low:.0f}-{high:.0f} MiB"


#: The table's rows: label, the cell of a measurement, the figure its ratio divides
#: (L{None} for a count, where txraft's and the other's are shown side by side).
ROWS: list[
    tuple[str, Callable[[Measurement], str], Callable[[Measurement], float | None] | None]
] = [
    ("pipelined writes/s", lambda m: _number(m.writes, "{:,.0f}"), lambda m: m.writes),
    ("sequential set p50 ms", lambda m: _number(m.p50(), "{:.2f}"), Measurement.p50),
    ("sequential set p99 ms", lambda m: _number(m.p99(), "{:.2f}"), Measurement.p99),
    ("pipelined reads/s", lambda m: _number(m.reads, "{:,.0f}"), lambda m: m.reads),
    ("peak RSS per node", _rss, Measurement.peakRSS),
    ("errors", lambda m: str(m.errors), None),
    ("leader changes", lambda m: _number(m.leaderChanges, "{}"), None),
]


def _compared(
    reference: Measurement,
    other: Measurement,
    cell: Callable[[Measurement], str],
    figure: Callable[[Measurement], float | None] | None,
) -> str:
    if figure is None:
        return f"{cell(reference)} vs {cell(other)}"
    return ratio(figure(reference), figure(other))


def formatTable(rows: Sequence[Sequence[str]]) -> str:
    """Rows of cells as a Markdown table, the first row the header, columns aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: Sequence[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    separator = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(rows[0]), separator, *(line(row) for row in rows[1:])])


def formatReport(measurements: Sequence[Measurement]) -> str:
    """
    The absolute figures of every measured system, then the ratio of
    L{REFERENCE}'s figure to each other system's (above 1 means txraft's
    figure is the larger: better for writes/s and reads/s, worse for latency
    and RSS; errors and leader changes are counts, shown side by side), then
    the first error of each system and why any system was skipped.
    """
    measured = [m for m in measurements if m.skipped is None]
    parts = []
    if measured:
        rows = [["", *(m.name for m in measured)]]
        rows += [[label, *(cell(m) for m in measured)] for label, cell, _ in ROWS]
        parts.append(formatTable(rows))
    reference = next((m for m in measured if m.name == REFERENCE), None)
    others = [m for m in measured if m is not reference]
    if reference is not None and others:
        rows = [[f"{REFERENCE} / ...", *(m.name for m in others)]]
        rows += [
            [label, *(_compared(reference, m, cell, figure) for m in others)]
            for label, cell, figure in ROWS
        ]
        parts.append(formatTable(rows))
    for m in measured:
        if m.firstError is not None:
            parts.append(f"{m.name}: first error: {m.firstError!r}")
    for m in measurements:
        if m.skipped is not None:
            parts.append(f"{m.name}: NOT MEASURED: {m.skipped}")
    return "\n\n".join(parts)
