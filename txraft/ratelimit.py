"""
A limit on how often one kind of warning is logged, so that a stranger
sending a flood of bad lines cannot flood the log (or the disk under it).
"""

from __future__ import annotations

import time

from twisted.internet.interfaces import IReactorTime


class LogLimiter:
    """
    Lets through at most C{burst} events in each C{interval} seconds and
    counts the others, so the next event let through can say how many were
    left out.
    """

    def __init__(
        self, clock: IReactorTime | None = None, burst: int = 5, interval: float = 60.0
    ) -> None:
        """
        @param clock: what tells the time; by default the system's monotonic clock.
        """
        self._seconds = time.monotonic if clock is None else clock.seconds
        self._burst = burst
        self._interval = interval
        self._windowStart: float | None = None
        self._inWindow = 0
        self._suppressed = 0

    def allow(self) -> int | None:
        """
        Count one event: return L{None} if it must not be logged, else how
        many events were suppressed since the last one logged.
        """
        now = self._seconds()
        if self._windowStart is None or now - self._windowStart >= self._interval:
            self._windowStart, self._inWindow = now, 0
        if self._inWindow >= self._burst:
            self._suppressed += 1
            return None
        self._inWindow += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
