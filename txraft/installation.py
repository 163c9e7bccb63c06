"""
Loading a leader's snapshot into the state machine a step per reactor turn.

Loading a map of a million keys at once took 1.8 s on the development
machine: a node that did so answered no heartbeat for longer than an
election timeout, and meanwhile its leader compacted past it and sent it
the next snapshot.  In steps of a few milliseconds
(L{txraft.logmanager.LogManager.installing}) the node goes on taking
entries and answering its leader while it loads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from txraft.messages import Entry

#: How many committed entries that waited for a snapshot one step applies:
#: tens of thousands can pile up while a large one loads.
APPLY_STEP_ENTRIES = 1000


class Installation:
    """
    A snapshot being loaded, and the committed entries after it, which
    wait in L{unapplied} until it is, then are applied a step at a time:
    the state machine cannot apply them before it holds the state they
    follow.
    """

    def __init__(
        self,
        steps: Iterator[None],
        clock: IReactorTime,
        loaded: Callable[[], None],
        apply: Callable[[list[Entry]], None],
    ) -> None:
        """
        @param steps: the loading, one step per C{next()}; the state
            machine changes when the last one ends.
        @param clock: schedules each step after the first at the next turn.
        @param loaded: called once the snapshot is loaded.
        @param apply: applies committed entries, after C{loaded}.
        """
        self.unapplied: list[Entry] = []
        self._steps = steps
        self._clock = clock
        self._loaded = loaded
        self._apply = apply
        self._task: task.CooperativeTask | None = None

    def _work(self) -> Iterator[None]:
        """Load the snapshot, then apply what waited for it, a step at a time."""
        yield from self._steps
        self._loaded()
        while self.unapplied:
            batch = self.unapplied[:APPLY_STEP_ENTRIES]
            del self.unapplied[:APPLY_STEP_ENTRIES]
            self._apply(batch)
            yield None

    def start(self) -> defer.Deferred[Installation]:
        """
        Take the first step now (a small snapshot takes only that) and the
        others one per reactor turn.

        @return: fires with this installation once it is loaded and no
            entry waits, or fails with what a step raised; or with
            L{task.TaskStopped} if L{cancel}led.
        """
        work = self._work()
        try:
            next(work)
        except StopIteration:
            return defer.succeed(self)
        except Exception:
            return defer.fail()
        cooperator = task.Cooperator(
            terminationPredicateFactory=lambda: _oneStep,
            scheduler=self._nextTurn,
        )
        self._task = cooperator.cooperate(work)
        return self._task.whenDone().addCallback(lambda _: self)

    def _nextTurn(self, work: object) -> IDelayedCall:
        return self._clock.callLater(0, work)

    def cancel(self) -> None:
        """Abandon the loading (if not done): the state machine stays as it was."""
        if self._task is not None:
            try:
                self._task.stop()
            except task.TaskFinished:
                pass


def _oneStep() -> bool:
    """A L{task.Cooperator}'s termination predicate: end each turn after one step."""
    return True
