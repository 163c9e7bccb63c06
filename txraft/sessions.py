"""
Exactly-once client sessions (Raft dissertation, section 6.3).

A client may number its requests, C{CLIENTID#SEQ@COMMAND}, SEQ a positive
integer that grows with each request of that client.  A numbered request
goes through the log in that same form (see L{Numbered}), and the state
machine, applying it, asks its L{SessionTable} whether this SEQ ran already:
a retry of a request that ran gets the answer recorded then and changes
nothing, whichever leader it reached and however often the log was replayed.

Everything the table decides follows from the log alone (the SEQs, and the
log index of each request for recency), never from a clock, so every node
decides alike.  Its bounds are module constants for the same reason: a node
option could differ between nodes.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from txraft import answers
from txraft.messages import NAME_PATTERN, splitSender

#: At most this many sessions are kept; opening one more forgets the one
#: whose last request is oldest in the log.
MAX_SESSIONS = 10_000

#: A session keeps the answers of its last this many SEQs: so many numbered
#: requests may a client have outstanding and still retry each one.
SESSION_WINDOW = 128

#: The largest SEQ: a signed 64-bit integer, which every other tool can hold.
MAX_SEQ = 2**63 - 1

#: What a session keeps for a SEQ that was a read: a retry reads again
#: (the answer of C{show} is the whole map, too big to keep many of).
#: No real answer is empty.
READ = ""

#: The answer to a numbered C{status}, which is no command of the log:
#: each node answers it from its own state.
UNNUMBERED_ONLY = answers.error("status takes no SEQ: each node answers it outside the log")

_SEQ = re.compile(r"[1-9][0-9]{0,18}")
_NUMBERED = re.compile(rf"({NAME_PATTERN.pattern})#({_SEQ.pattern})@")
_WHITESPACE = re.compile(r"\s")


class RequestError(ValueError):
    """A malformed C{CLIENTID#SEQ@} prefix; C{str()} is the reason for the client."""


class Request(NamedTuple):
    """A client request line, split: its sender, its SEQ if numbered, its command."""

    clientId: str | None
    seq: int | None
    command: str


class Numbered(NamedTuple):
    """
    A numbered command as the log stores it: C{text} is C{CLIENTID#SEQ@COMMAND},
    COMMAND in its canonical form.  No unnumbered command looks like that:
    each starts with its command word, which holds neither C{#} nor C{@}.
    """

    clientId: str
    seq: int
    command: str

    @property
    def text(self) -> str:
        """The entry's command text, e.g. C{c4#7@set b 5}."""
        return f"{self.clientId}#{self.seq}@{self.command}"


def parseSeq(text: str) -> int:
    """
    Return C{text} as a SEQ.

    @raise RequestError: unless it is a decimal number from 1 to L{MAX_SEQ},
        without leading zeros (one SEQ, one spelling).
    """
    if _SEQ.fullmatch(text) and int(text) <= MAX_SEQ:
        return int(text)
    raise RequestError(
        f"invalid SEQ {text[:40]!r}: a whole number from 1 to {MAX_SEQ} without leading zeros"
    )


def splitRequest(line: str) -> Request:
    """
    Split a client request line, C{[CLIENTID[#SEQ]@]COMMAND}.  A line whose
    text before its first C{@} holds a C{#} and no whitespace claims a SEQ,
    and must have a valid one; otherwise the line is what L{splitSender}
    makes of it (no valid command has such a prefix).

    @raise RequestError: for a malformed C{CLIENTID#SEQ@} prefix.
    """
    numbered = _NUMBERED.match(line)
    if numbered is not None and int(numbered[2]) <= MAX_SEQ:
        # The usual numbered request, in one step.
        return Request(numbered[1], int(numbered[2]), line[numbered.end() :])
    prefix, at, rest = line.partition("@")
    if not at or "#" not in prefix or _WHITESPACE.search(prefix):
        sender, rest = splitSender(line)
        return Request(sender, None, rest)
    clientId, _, seq = prefix.partition("#")
    if not NAME_PATTERN.fullmatch(clientId):
        raise RequestError(
            f"invalid client ID {clientId[:40]!r}: a numbered request is "
            "CLIENTID#SEQ@COMMAND, CLIENTID made of A-Z a-z 0-9 _ -"
        )
    return Request(clientId, parseSeq(seq), rest)


def parseNumbered(text: str) -> Numbered | None:
    """The numbered command an entry's C{text} holds, or L{None} if it is unnumbered."""
    match = _NUMBERED.match(text)
    if match is None or int(match[2]) > MAX_SEQ:
        return None
    return Numbered(match[1], int(match[2]), text[match.end() :])


class _Session:
    """
    One client's session.

    @ivar highest: the highest SEQ applied.
    @ivar index: the log index of the client's last request.
    @ivar answers: the answers of SEQs C{highest - len(answers) + 1} to
        C{highest}, oldest first: L{None} for a SEQ skipped, L{READ} for a read.
    """

    __slots__ = ("highest", "index", "answers")

    def __init__(self, window: int, highest: int = 0, index: int = 0) -> None:
        self.highest = highest
        self.index = index
        self.answers: deque[str | None] = deque(maxlen=window)

    def record(self, seq: int, answer: str) -> None:
        """Record C{answer} as that of C{seq}, above every SEQ so far."""
        skipped = seq - self.highest - 1
        self.answers.extend([None] * min(skipped, self.answers.maxlen or 0))
        self.answers.append(answer)
        self.highest = seq

    def recorded(self, seq: int) -> str | None:
        """The answer kept for C{seq}, at most C{highest}; L{None} if none is."""
        back = self.highest - seq
        return self.answers[-1 - back] if back < len(self.answers) else None


class SessionTable:
    """
    The sessions of every client that numbers its requests: part of the
    state machine, so replicated, snapshotted and restored with it.
    """

    def __init__(self, maxSessions: int = MAX_SESSIONS, window: int = SESSION_WINDOW) -> None:
        """
        @param maxSessions: how many sessions to keep (L{MAX_SESSIONS}; tests
            pass less); every node of a cluster must keep as many.
        @param window: how many answers each session keeps (L{SESSION_WINDOW}).
        """
        self.maxSessions = maxSessions
        self.window = window
        # By recency: the session whose last request is oldest comes first.
        self._sessions: dict[str, _Session] = {}

    def __len__(self) -> int:
        """How many sessions the table keeps."""
        return len(self._sessions)

    def highest(self, clientId: str) -> int | None:
        """The highest SEQ applied for C{clientId}, or L{None} if it has no session."""
        session = self._sessions.get(clientId)
        return None if session is None else session.highest

    def lastIndex(self, clientId: str) -> int | None:
        """The log index of C{clientId}'s last request, or L{None} if it has no session."""
        session = self._sessions.get(clientId)
        return None if session is None else session.index

    def apply(
        self,
        clientId: str,
        seq: int,
        index: int,
        execute: Callable[[], str],
        read: bool = False,
    ) -> str:
        """
        Apply request C{seq} of C{clientId}, at log C{index}: run C{execute}
        unless that SEQ ran already, and return the client's answer.

        @param execute: runs the command on the state machine and returns
            its answer.
        @param read: the command changes nothing: its answer is not kept,
            and a retry runs it again.
        """
        session = self._sessions.pop(clientId, None)
        if session is None:
            if seq != 1:
                # Never opened, or forgotten: SEQ 1 may have run, or not.
                return answers.SESSION_EXPIRED
            if len(self._sessions) >= self.maxSessions:
                del self._sessions[next(iter(self._sessions))]
            session = _Session(self.window)
        self._sessions[clientId] = session
        session.index = index
        if seq > session.highest:
            answer = execute()
            session.record(seq, READ if read else answer)
            return answer
        kept = session.recorded(seq)
        if kept == READ:
            return execute()
        if kept is not None:
            return kept
        if session.highest - seq < len(session.answers):
            return answers.error(
                f"SEQ {seq} never ran and now cannot: a later one of this client, "
                f"SEQ {session.highest}, ran first"
            )
        return (
            f"{answers.SESSION_EXPIRED}: the answer to SEQ {seq} is no longer kept "
            f"(only the last {self.window})"
        )

    def capture(self) -> list[list[object]]:
        """
        A copy of the table as JSON-ready lists, least recent first: one
        C{[CLIENTID, SEQ, INDEX, [ANSWER, ...]]} per session, SEQ the highest
        applied, INDEX the log index of the last request, and the answers
        of the SEQs up to SEQ, oldest first (C{null}: skipped; C{""}: a read).
        """
        return [[c, s.highest, s.index, list(s.answers)] for c, s in self._sessions.items()]

    def restore(self, state: object) -> None:
        """
        Replace every session with those of a L{capture}.  Beyond this
        table's bounds, the least recent sessions and the oldest answers are
        dropped, as applying would have.

        @raise ValueError: if C{state} is not such a capture.
        """
        if not isinstance(state, list):
            raise ValueError("sessions are a list")
        sessions: dict[str, _Session] = {}
        # Most answers are the same few words: keep one copy of each.
        shared: dict[str, str] = {}
        for item in sorted(state, key=_sessionIndex):
            clientId, highest, index, kept = item
            if not isinstance(clientId, str) or not NAME_PATTERN.fullmatch(clientId):
                raise ValueError(f"invalid client ID {clientId!r} in the sessions")
            if clientId in sessions:
                raise ValueError(f"two sessions of client {clientId!r}")
            if not _isWhole(highest, 1, MAX_SEQ) or not isinstance(kept, list):
                raise ValueError(f"malformed session of client {clientId!r}")
            if len(kept) > highest or not all(a is None or isinstance(a, str) for a in kept):
                raise ValueError(f"malformed answers in the session of client {clientId!r}")
            session = _Session(self.window, highest, index)
            session.answers.extend(a if a is None else shared.setdefault(a, a) for a in kept)
            sessions[clientId] = session
        while len(sessions) > self.maxSessions:
            del sessions[next(iter(sessions))]
        self._sessions = sessions


def _sessionIndex(item: object) -> int:
    """The INDEX of a captured session, checking its shape."""
    if not isinstance(item, list) or len(item) != 4 or not _isWhole(item[2], 0, None):
        raise ValueError(f"a session is [CLIENTID, SEQ, INDEX, ANSWERS], not {item!r:.80}")
    return item[2]


def _isWhole(value: object, low: int, high: int | None) -> bool:
    """Whether C{value} is an C{int} (not a C{bool}) from C{low} to C{high}."""
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and value >= low
        and (high is None or value <= high)
    )
