"""
The answers of the client protocol: every word a node says to a client, in
one place that formats them and one that parses them.

A node answers each request line with one of

  - C{OK} or C{OK VALUE}, and C{NOT_FOUND}: the command ran;
  - C{REDIRECT LEADER HOST PORT}: this node is not the leader;
  - C{UNAVAILABLE REASON}: no leader is known, or the outcome is unknown;
  - C{ERROR REASON}: a bad request; nothing changed.

Nodes, the command-line client, the test harnesses and the simulation all
use these functions and constants, so a reply cannot drift from how it is
read.
"""

from __future__ import annotations

from typing import NamedTuple

OK = "OK"
NOT_FOUND = "NOT_FOUND"

#: No node is known to lead: the command was not taken.
NO_LEADER = "UNAVAILABLE no leader known"
#: The leader lost its leadership before the command committed: it may
#: still commit under a later leader.
LEADERSHIP_LOST = "UNAVAILABLE leadership lost before commit"
#: The command's log entry was replaced by another leader's: it never ran.
OVERWRITTEN = "UNAVAILABLE entry was overwritten"
#: The command did not commit within the commit timeout; it may still.
COMMIT_TIMEOUT = "UNAVAILABLE not committed in time; the outcome is unknown"
#: A read whose leader lost its leadership before a majority confirmed it.
READ_LEADERSHIP_LOST = "UNAVAILABLE leadership lost before the read was confirmed"
#: A read that a majority did not confirm in time (or not applied in time).
READ_TIMEOUT = "UNAVAILABLE read not confirmed in time"
#: The node cannot write to its disk, so takes no part in Raft.
DISK_FAILED = "UNAVAILABLE node cannot write to its disk"
#: The node is stopping.
SHUTTING_DOWN = "UNAVAILABLE node is shutting down"
#: The node has stopped taking part in Raft.
NOT_SERVING = "UNAVAILABLE node is not serving"
#: The leader is handing its leadership over and takes no command meanwhile.
TRANSFERRING = "UNAVAILABLE leadership is being transferred"
#: A new leader changes no membership before an entry of its term commits.
LEADER_NOT_READY = "UNAVAILABLE the leader has not yet committed an entry of its term"

#: A numbered request of a client whose session the state machine does not
#: keep (never opened, or forgotten), or whose answer it no longer keeps:
#: every such answer starts with this (see L{txraft.sessions}).
SESSION_EXPIRED = "ERROR session expired"

#: A request whose handling failed unexpectedly (a bug; the failure is logged).
INTERNAL_ERROR = "ERROR internal error"

#: C{UNAVAILABLE} answers after which the command surely did not run, so a
#: client may send it again (as after a C{REDIRECT} or an C{ERROR}); every
#: other C{UNAVAILABLE} leaves the outcome unknown.  A read changes nothing,
#: so a read that was not answered can always be sent again.
NOT_EXECUTED = frozenset(
    {NO_LEADER, OVERWRITTEN, READ_LEADERSHIP_LOST, READ_TIMEOUT, TRANSFERRING, LEADER_NOT_READY}
)

#: The TCP ports a node can listen on, and so a C{REDIRECT} can name.
MIN_PORT = 1
MAX_PORT = 65535


class Redirect(NamedTuple):
    """Where a follower says the leader is: C{REDIRECT LEADER HOST PORT}."""

    leader: str
    host: str
    port: int


class AnswerError(ValueError):
    """An answer line that claims a form it does not have (a malformed C{REDIRECT})."""


def parsePort(text: str) -> int:
    """
    Return C{text} as a TCP port number.

    @raise ValueError: unless it is a decimal number from L{MIN_PORT} to
        L{MAX_PORT}.
    """
    if not (text.isascii() and text.isdigit() and MIN_PORT <= int(text) <= MAX_PORT):
        raise ValueError(f"invalid port {text!r}: expected a number from {MIN_PORT} to {MAX_PORT}")
    return int(text)


def ok(value: str | None = None) -> str:
    """C{OK}, or C{OK VALUE} when the command returns something."""
    return OK if value is None else f"{OK} {value}"


def error(reason: str) -> str:
    """The answer to a bad request: C{ERROR REASON}."""
    return f"ERROR {reason}"


def unavailable(reason: str) -> str:
    """The answer to a request the cluster cannot carry out now: C{UNAVAILABLE REASON}."""
    return f"UNAVAILABLE {reason}"


def redirect(leader: str, host: str, port: int) -> str:
    """The answer of a node that is not the leader but knows who is."""
    return f"REDIRECT {leader} {host} {port}"


def parseRedirect(answer: str) -> Redirect | None:
    """
    Return where a C{REDIRECT} answer points, or L{None} for any other answer.

    @raise AnswerError: for a malformed C{REDIRECT}, which must not be
        mistaken for an answer.
    """
    words = answer.split(" ")
    if words[0] != "REDIRECT":
        return None
    try:
        leader, host, port = words[1:]
        if not (leader and host):
            raise ValueError("empty leader or host")
        return Redirect(leader, host, parsePort(port))
    except ValueError:
        raise AnswerError(f"malformed redirect {answer!r}") from None


def isSuccess(answer: str) -> bool:
    """
    Whether C{answer} means the command ran: C{OK}, C{OK ...} or
    C{NOT_FOUND} (the lookup worked; the key is absent).
    """
    return answer in (OK, NOT_FOUND) or answer.startswith(OK + " ")


def okValue(answer: str) -> str | None:
    """The VALUE of an C{OK VALUE} answer, or L{None} for any other answer."""
    return answer[len(OK) + 1 :] if answer.startswith(OK + " ") else None


def isUnavailable(answer: str) -> bool:
    """Whether C{answer} is an C{UNAVAILABLE} answer."""
    return answer.startswith("UNAVAILABLE")


#: What L{kind} calls each answer: bounded words, fit for a metric label.
KINDS = ("ok", "not_found", "redirect", "unavailable", "error")


def kind(answer: str) -> str:
    """
    The kind of C{answer}, one of L{KINDS}: C{ok}, C{not_found},
    C{redirect}, C{unavailable} or C{error}.
    """
    if answer == NOT_FOUND:
        return "not_found"
    if answer == OK or answer.startswith(OK + " "):
        return "ok"
    if answer.startswith("REDIRECT "):
        return "redirect"
    if isUnavailable(answer):
        return "unavailable"
    return "error"
