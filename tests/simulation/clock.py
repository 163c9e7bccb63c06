"""
Simulated time: one queue of events in integer milliseconds, and a clock
per node process that the production driver schedules its work on.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer


class EventQueue:
    """
    Everything that will happen, in time order (ties in the order they were
    scheduled, so a run is deterministic).

    @ivar now: the simulated time, in milliseconds.
    @ivar steps: how many events have run.
    """

    def __init__(self) -> None:
        self.now = 0
        self.steps = 0
        self._queue: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._sequence = 0

    def at(self, time: int, function: Callable[..., None], *args: Any) -> None:
        """Call C{function(*args)} at simulated C{time}."""
        self._sequence += 1
        heapq.heappush(self._queue, (time, self._sequence, function, args))

    def after(self, delay: int, function: Callable[..., None], *args: Any) -> None:
        """Call C{function(*args)} C{delay} milliseconds from now."""
        self.at(self.now + delay, function, *args)

    def nextTime(self) -> int:
        """When the next event happens."""
        return self._queue[0][0]

    def runNext(self) -> None:
        """Advance the time to the next event and run it."""
        time, _, function, args = heapq.heappop(self._queue)
        self.now = time
        self.steps += 1
        function(*args)


class Process(Protocol):
    """What a L{NodeClock} needs to know of the node process it serves."""

    #: How many times the process has started.
    incarnation: int
    #: Whether it runs (it has not crashed).
    up: bool
    #: Until when the process is stalled (0, or a past time: it runs).
    pausedUntil: int


@implementer(IDelayedCall)
@attrs.define(eq=False)
class SimDelayedCall:
    """A call scheduled on a L{NodeClock}."""

    clock: NodeClock
    time: int
    function: Callable[..., object]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    cancelled: bool = False
    called: bool = False

    def getTime(self) -> float:
        """When it runs, in seconds of its clock (L{NodeClock.seconds})."""
        return self.time / 1000

    def cancel(self) -> None:
        """Do not run it."""
        self.cancelled = True

    def delay(self, secondsLater: float) -> None:
        """Run it later (never needed by the driver)."""
        raise NotImplementedError("the simulation does not move calls")

    def reset(self, secondsFromNow: float) -> None:
        """Run it at another time (never needed by the driver)."""
        raise NotImplementedError("the simulation does not move calls")

    def active(self) -> bool:
        """Whether it is still to run."""
        return not (self.cancelled or self.called)


@implementer(IReactorTime)
class NodeClock:
    """
    The C{IReactorTime} of one incarnation of a node's process: its calls
    run on the simulation's L{EventQueue}, wait while the process is
    paused, and die with the process.

    Its time is the machine's wall clock, as Twisted's reactor reads
    C{time.time()}: the simulation's time less L{behindMs}, which grows each
    time the clock steps back (L{stepBack}, an NTP step).  A call is due at
    a time of this clock: those scheduled before a step back of X ms run X
    ms late, those scheduled after it run on time.

    @ivar behindMs: how far this clock is behind the simulation's time.
    """

    def __init__(self, events: EventQueue, process: Process) -> None:
        self.events = events
        self.process = process
        self.incarnation = process.incarnation
        self.behindMs = 0
        self._calls: list[SimDelayedCall] = []

    def nowMs(self) -> int:
        """This clock's time, in milliseconds."""
        return self.events.now - self.behindMs

    def seconds(self) -> float:
        """This clock's time, in seconds: the simulated time, less the steps back."""
        return self.nowMs() / 1000

    def stepBack(self, ms: int) -> None:
        """
        The wall clock steps back C{ms} milliseconds: it reads what it read
        C{ms} ago, and every call already scheduled runs that much later.
        """
        self.behindMs += ms

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: Any, **kw: Any
    ) -> SimDelayedCall:
        """Run C{callable(*args, **kw)} C{delay} seconds from now (to the millisecond)."""
        delayMs = round(delay * 1000)
        call = SimDelayedCall(self, self.nowMs() + delayMs, callable, args, kw)
        self._calls = [c for c in self._calls if c.active()]
        self._calls.append(call)
        self.events.after(delayMs, self._fire, call)
        return call

    def getDelayedCalls(self) -> list[SimDelayedCall]:
        """The calls still to run."""
        return [c for c in self._calls if c.active()]

    def _fire(self, call: SimDelayedCall) -> None:
        process = self.process
        if not call.active() or process.incarnation != self.incarnation or not process.up:
            return
        if call.time > self.nowMs():
            # The clock stepped back since the call was scheduled.
            self.events.at(call.time + self.behindMs, self._fire, call)
            return
        resume = process.pausedUntil
        if resume > self.events.now:
            self.events.at(resume, self._fire, call)
            return
        call.called = True
        call.function(*call.args, **call.kwargs)
