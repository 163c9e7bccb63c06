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

from collections.abc import Iterator

from twisted.internet import defer, task
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from txraft.messages import Entry, Snapshot


class Installation:
    """
    A snapshot being loaded, and the committed entries after it, which
    wait in L{unapplied} until it is: the state machine cannot apply them
    before it holds the state they follow.
    """

    def __init__(self, snapshot: Snapshot, steps: Iterator[None], clock: IReactorTime) -> None:
        """
        @param steps: the loading, one step per C{next()}; the state
            machine changes when the last one ends.
        @param clock: schedules each step after the first at the next turn.
        """
        self.snapshot = snapshot
        self.unapplied: list[Entry] = []
        self._steps = steps
        self._clock = clock
        self._task: task.CooperativeTask | None = None

    def start(self) -> defer.Deferred[Installation]:
        """
        Take the first step now (a small snapshot takes only that) and the
        others one per reactor turn.

        @return: fires with this installation once it is loaded, or fails
            with what a step raised; or with L{task.TaskStopped} if
            L{cancel}led.
        """
        try:
            next(self._steps)
        except StopIteration:
            return defer.succeed(self)
        except Exception:
            return defer.fail()
        cooperator = task.Cooperator(
            terminationPredicateFactory=lambda: _oneStep,
            scheduler=self._nextTurn,
        )
        self._task = cooperator.cooperate(self._steps)
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
