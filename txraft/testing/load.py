"""
Timed load on one connection to a node, for the benchmarks.

L{pipelinedConnection} sends requests while keeping a window of them
unanswered, which is how a busy client drives a leader's group commit, and
times each from its send to its answer into a L{Result}.  C{bench/bench.py}
measures throughput with it; C{bench/compaction.py} pushes a million writes
through it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

from txraft import answers
from txraft.client import LineConnection


class Result:
    """The outcome of one measurement: latencies of the requests answered as expected."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.latencies: list[float] = []
        self.errors = 0
        self.firstError: str | None = None
        self.seconds = 0.0

    def error(self, response: str) -> None:
        """Count a response other than the expected one."""
        self.errors += 1
        if self.firstError is None:
            self.firstError = response

    def merge(self, other: Result) -> None:
        """Add another connection's latencies and errors to this result."""
        self.latencies += other.latencies
        self.errors += other.errors
        self.firstError = self.firstError or other.firstError


def pipelinedConnection(connection: LineConnection, lines: Sequence[str], window: int) -> Result:
    """
    Send C{lines} on C{connection} keeping up to C{window} unanswered, and
    time each from its send to its response (responses come in order); a
    response other than C{OK} counts as an error.
    """
    result = Result("pipelined")
    sendTimes: deque[float] = deque()
    encoded = [line.encode("utf-8") + b"\n" for line in lines]
    nextToSend = 0
    while len(result.latencies) + result.errors < len(encoded):
        room = window - len(sendTimes)
        if room > 0 and nextToSend < len(encoded):
            batch = encoded[nextToSend : nextToSend + room]
            now = time.perf_counter()
            connection.send(b"".join(batch))
            sendTimes.extend([now] * len(batch))
            nextToSend += len(batch)
        response = connection.readLine()
        received = time.perf_counter()
        result.latencies.append(received - sendTimes.popleft())
        if response != answers.OK:
            result.latencies.pop()
            result.error(response)
        # Take every other complete response already read without blocking.
        while connection.hasLine() and sendTimes:
            response = connection.readLine()
            if response == answers.OK:
                result.latencies.append(received - sendTimes.popleft())
            else:
                sendTimes.popleft()
                result.error(response)
    return result
