"""
The reads a leader answers without a log entry (dissertation section 6.4,
ReadIndex), from the time they come until they are answered.

A read waits for two things, in either order: the core's word that its
node still led after the read came (L{txraft.core.RaftCore.read}), and the
state machine reaching the read's index.  Its answer is taken from the
state machine right when it has applied that index, before the entry after
it, so a read sees exactly the writes its leader took before it; it is
sent once both are done.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

import attrs

from txraft.replies import Reply


@attrs.define(eq=False)
class PendingRead:
    """One client's read: a read-only command and the answer it will get."""

    command: str
    #: When it came (the node's clock), for its deadline.
    arrived: float
    #: Where its answer goes.
    answer: Reply
    #: The log index whose state it reads; set when it joins a L{ReadQueue}.
    index: int = 0
    #: The state machine's answer at C{index}, once taken.
    value: str | None = None
    #: Whether the core confirmed its leader.
    confirmed: bool = False


class ReadQueue:
    """
    The reads of one node not yet answered.  They come in order of their
    index, and the core confirms them in the order they came, so both
    queues below stay in index order.
    """

    def __init__(self) -> None:
        #: Every read not answered, in the order they came.
        self._reads: deque[PendingRead] = deque()
        #: The reads whose value is not taken yet, by index.
        self._unread: deque[PendingRead] = deque()

    def __bool__(self) -> bool:
        """Whether any read waits for its answer."""
        return bool(self._reads)

    def __len__(self) -> int:
        """How many reads wait for their answer."""
        return len(self._reads)

    def add(self, read: PendingRead, index: int) -> None:
        """Queue C{read} to be answered with the state at C{index}."""
        read.index = index
        self._reads.append(read)
        self._unread.append(read)

    def nextIndex(self) -> int | None:
        """The index the first read still to be taken needs, if any."""
        while self._unread and self._unread[0].answer.called:
            self._unread.popleft()
        return self._unread[0].index if self._unread else None

    def take(self, applied: int, answerRead: Callable[[str], str]) -> None:
        """
        The state machine has applied up to C{applied} and no further: take
        the value of every read of that index (and of any before it), with
        C{answerRead}, and answer those already confirmed.
        """
        while (index := self.nextIndex()) is not None and index <= applied:
            read = self._unread.popleft()
            read.value = answerRead(read.command)
        self._answer()

    def confirm(self, reads: Iterable[object]) -> None:
        """The core confirmed the leader of C{reads}; answer those already taken."""
        for read in reads:
            assert isinstance(read, PendingRead)
            read.confirmed = True
        self._answer()

    def fail(self, answer: str, *, unconfirmedOnly: bool = False) -> None:
        """
        Answer C{answer} to every read waiting, or only to those the core has
        not confirmed (those of a leader that stepped down: the others can
        still be answered).
        """
        kept: deque[PendingRead] = deque()
        for read in self._reads:
            if unconfirmedOnly and read.confirmed:
                kept.append(read)
            else:
                read.answer.give(answer)
        self._reads = kept
        self._answer()

    def failUntaken(self, answer: str) -> None:
        """
        Answer C{answer} to every read whose value is not taken yet: the
        state machine jumped past their index (a snapshot was installed).
        """
        for read in self._unread:
            if not read.answer.called:
                read.answer.give(answer)
        self._unread.clear()
        self._reads = deque(read for read in self._reads if not read.answer.called)
        self._answer()

    def expire(self, deadline: float, answer: str) -> None:
        """Answer C{answer} to every read that came at or before C{deadline}."""
        while self._reads and self._reads[0].arrived <= deadline:
            self._reads.popleft().answer.give(answer)
        self._answer()

    def _answer(self) -> None:
        """Send every answer that is ready, in order."""
        reads = self._reads
        while reads and (reads[0].answer.called or reads[0].confirmed):
            read = reads[0]
            if not read.answer.called:
                if read.value is None:
                    return
                read.answer.give(read.value)
            reads.popleft()
