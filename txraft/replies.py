"""
The answer a request will get, handed to whoever waits for it.

A leader under load holds thousands of requests at once, and each is
answered exactly once: a plain callback does that for much less than a
Deferred with its chain (the driver's hot path, dissertation section 10.2:
nothing per request that need not be).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class AlreadyAnsweredError(RuntimeError):
    """A request was answered twice: a bug in whoever answered it."""


class Reply:
    """
    One request's answer to come: L{give} passes it to C{respond}, once.

    @ivar called: whether the answer was given.
    """

    __slots__ = ("called", "respond")

    def __init__(self, respond: Callable[[Any], object]) -> None:
        """
        @param respond: called with the answer (a line for a client's
            request), in the call to L{give}.
        """
        self.respond = respond
        self.called = False

    def give(self, answer: Any) -> None:
        """
        Answer the request.

        @raise AlreadyAnsweredError: if it was answered already.
        """
        if self.called:
            raise AlreadyAnsweredError(f"answered twice, now with {answer!r}")
        self.called = True
        self.respond(answer)
