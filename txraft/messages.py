"""
Raft RPC records and the pure parse/format of peer lines.

A peer line is ``SENDER@RPC JSON``, for example::

    s1@AppendEntries {"term":3,"prevLogIndex":5,"prevLogTerm":2,"leaderCommit":5,
                      "entries":[[6,3,"set a 1"]]}

(on one line).  The sender's name travels in the envelope, so the records
below carry neither ``candidateId`` nor ``leaderId`` of the paper's Figure 2:
the core receives them as the ``peer`` argument of ``step``.

Parsing is strict: a line that does not describe a well-formed RPC raises
L{MessageError}, whose text is what the node answers with ``ERROR``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import NamedTuple

import attrs

#: Characters no command can hold: CR and LF would break the log file's
#: lines of text, and NUL is how a torn write shows in it.
UNSTORABLE = re.compile(r"[\r\n\x00]")

#: A node or client name, the text before the first ``@`` of a line; the
#: whole name must match (use C{fullmatch}).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")


class MessageError(ValueError):
    """A peer line that does not parse; ``str()`` is a one-line reason."""


class Entry(NamedTuple):
    """
    One log entry: the client command stored at ``index``, created in
    ``term``.  (A named tuple: a leader makes one per request and a
    follower one per entry it receives, and a frozen attrs class took
    five times as long to build.)
    """

    index: int
    term: int
    command: str


@attrs.frozen
class HardState:
    """The state Figure 2 requires on stable storage besides the log."""

    currentTerm: int = 0
    votedFor: str | None = None


@attrs.frozen
class Snapshot:
    """
    The state machine as of log entry C{index} (of C{term}), serialized by
    the application; the core only stores and ships the bytes.
    """

    index: int
    term: int
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    #: The cluster's membership as of entry C{index}, as its log entry's
    #: command (L{txraft.membership}); empty if the log had none by then.
    membership: str = ""


@attrs.frozen
class RequestVote:
    """
    Sent by a candidate to gather votes (Figure 2, RequestVote RPC).

    With ``preVote`` set it only asks whether the receiver would vote for
    it in ``term`` (the sender's term plus one), and neither side changes
    its term or vote (dissertation section 9.6).
    """

    term: int
    lastLogIndex: int
    lastLogTerm: int
    preVote: bool = False
    #: The leader asked this candidate to take over (dissertation section
    #: 3.10): voters grant it even while they hear from that leader.
    transfer: bool = False


@attrs.frozen
class RequestVoteResponse:
    """
    A voter's answer; ``term`` lets a stale candidate step down.  A granted
    pre-vote carries the term it was asked about.
    """

    term: int
    voteGranted: bool
    preVote: bool = False


@attrs.frozen
class AppendEntries:
    """Sent by the leader to replicate entries and as a heartbeat (empty ``entries``)."""

    term: int
    prevLogIndex: int
    prevLogTerm: int
    entries: tuple[Entry, ...]
    leaderCommit: int
    #: The leader's latest round of leadership checks for reads (dissertation
    #: section 6.4); the follower's answer carries it back.
    readRound: int = 0
    #: The leader hands over its leadership: a voting follower whose log
    #: then holds everything up to the last entry of this request starts
    #: an election at once (TimeoutNow, dissertation section 3.10).
    timeoutNow: bool = False


@attrs.frozen
class AppendEntriesResponse:
    """
    A follower's answer to L{AppendEntries}.

    On success, ``matchIndex`` is the last index the follower now knows to
    match the leader's log.  On failure, ``rejectedIndex`` is the request's
    ``prevLogIndex`` (so the leader can recognise stale rejections) and
    ``hintIndex``/``hintTerm`` say where the follower's log could still
    agree with the leader's: the largest index not after ``prevLogIndex``
    whose term is not after ``prevLogTerm``, and that entry's term.  This is
    the essay's ``GiveEntriesAfterIndex``: the leader resumes right there
    instead of walking back one entry per round trip.
    """

    term: int
    success: bool
    matchIndex: int = 0
    rejectedIndex: int = 0
    hintIndex: int = 0
    hintTerm: int = 0
    #: The C{readRound} of the request this answers.
    readRound: int = 0


@attrs.frozen
class InstallSnapshot:
    """
    Sent by the leader to a follower whose next entry it has compacted away:
    one chunk of the snapshot ending at (C{lastIncludedIndex},
    C{lastIncludedTerm}), at byte C{offset}; C{done} marks the last chunk
    (dissertation Figure 5.3).  On the wire C{data} is base64.
    """

    term: int
    lastIncludedIndex: int
    lastIncludedTerm: int
    offset: int
    data: bytes
    done: bool = False
    #: The membership as of the snapshot's last entry (L{Snapshot.membership}).
    membership: str = ""


@attrs.frozen
class InstallSnapshotResponse:
    """
    A follower's answer to L{InstallSnapshot}: it holds the first
    C{nextOffset} bytes of the snapshot ending at C{lastIncludedIndex}, and
    once it has installed it, C{matchIndex} is the last index it knows to
    match the leader's log.
    """

    term: int
    lastIncludedIndex: int = 0
    nextOffset: int = 0
    matchIndex: int = 0


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | InstallSnapshot
    | InstallSnapshotResponse
)

#: Request types: each one gets exactly one response line on its connection.
REQUESTS = (RequestVote, AppendEntries, InstallSnapshot)

_RECORDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        RequestVote,
        RequestVoteResponse,
        AppendEntries,
        AppendEntriesResponse,
        InstallSnapshot,
        InstallSnapshotResponse,
    )
}

#: The RPC names that mark a line as a peer line rather than a client command.
RPC_NAMES = frozenset(_RECORDS)

#: Each record's fields with their defaults, in order, for L{formatMessage}
#: (which writes an AppendEntries' entries last, on their own).
_FIELDS: dict[type, tuple[tuple[str, object], ...]] = {
    cls: tuple(
        (field.name, field.default) for field in attrs.fields(cls) if field.name != "entries"
    )
    for cls in _RECORDS.values()
}


def _fieldKind(field: attrs.Attribute) -> str:
    """How L{parseMessage} checks one field's value."""
    if field.name in ("entries", "data"):
        return field.name
    if field.type in (bool, "bool"):
        return "bool"
    if field.type in (str, "str"):
        return "str"
    return "count"


class _Schema(NamedTuple):
    """What L{parseMessage} checks of one record's JSON body, worked out once."""

    #: The field names the body may hold, with how each is checked.
    kinds: dict[str, str]
    #: The field names it must hold (those without a default).
    required: frozenset[str]


_SCHEMAS: dict[str, _Schema] = {
    name: _Schema(
        {field.name: _fieldKind(field) for field in attrs.fields(cls)},
        frozenset(field.name for field in attrs.fields(cls) if field.default is attrs.NOTHING),
    )
    for name, cls in _RECORDS.items()
}


def splitSender(line: str) -> tuple[str | None, str]:
    """
    Split C{SENDER@REST}; the sender is L{None} when the text before the
    first ``@`` is not a valid name (so ``set k a@b`` is a bare command).
    """
    sender, sep, rest = line.partition("@")
    if sep and NAME_PATTERN.fullmatch(sender):
        return sender, rest
    return None, line


def rpcName(text: str) -> str | None:
    """Return the RPC name that C{text} starts with, or L{None} if it is no RPC."""
    name = text.split(" ", 1)[0]
    return name if name in RPC_NAMES else None


def formatMessage(sender: str, message: Message) -> str:
    """
    Encode C{message} from C{sender} as one peer line (without the newline).
    Fields at their default value are left out, to keep lines short.
    """
    # Not attrs.asdict with a filter: that took a tenth of a follower's time per append.
    fields = {}
    for name, default in _FIELDS[type(message)]:
        value = getattr(message, name)
        if value != default:
            fields[name] = value
    if isinstance(message, InstallSnapshot):
        fields["data"] = base64.b64encode(message.data).decode("ascii")
    body = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if isinstance(message, AppendEntries):
        # Its other fields have no defaults: the object is never empty.
        body = f'{body[:-1]},"entries":{_encodeEntries(message.entries)}}}'
    return f"{sender}@{type(message).__name__} {body}"


#: The entries L{_encodeEntries} encoded last, and their JSON.
_lastEncoded: tuple[tuple[Entry, ...], str] = ((), "[]")


def _encodeEntries(entries: tuple[Entry, ...]) -> str:
    """
    C{entries} as a JSON array of C{[index, term, command]} arrays; the
    same tuple twice in a row is encoded once (a leader sends each batch to
    every follower: the core hands them the very same tuple).  The tuple
    and the entries in it never change, so it is safe to tell by identity.
    """
    global _lastEncoded
    if _lastEncoded[0] is not entries:
        _lastEncoded = (entries, json.dumps(entries, ensure_ascii=False, separators=(",", ":")))
    return _lastEncoded[1]


def parseMessage(text: str) -> Message:
    """
    Decode the part of a peer line after C{SENDER@}.

    @raise MessageError: if it is not a well-formed RPC.
    """
    name, _, body = text.partition(" ")
    cls = _RECORDS.get(name)
    if cls is None:
        raise MessageError(f"unknown RPC {name[:40]!r}")
    try:
        fields = json.loads(body)
    except ValueError:
        raise MessageError(f"{name}: body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise MessageError(f"{name}: body is not a JSON object")
    kinds, required = _SCHEMAS[name]
    if not required.issubset(fields) or not kinds.keys() >= fields.keys():
        missing = [n for n in kinds if n in required and n not in fields]
        unknown = sorted(set(fields) - set(kinds))
        raise MessageError(f"{name}: missing fields {missing} or unknown fields {unknown}")
    for fieldName, value in fields.items():
        kind = kinds[fieldName]
        if kind == "count":
            if not _isCount(value):
                raise MessageError(f"{name}: {fieldName} must be a non-negative integer")
        elif kind == "entries":
            fields[fieldName] = _parseEntries(name, value)
        elif kind == "data":
            fields[fieldName] = _parseData(name, value)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise MessageError(f"{name}: {fieldName} must be true or false")
        elif not isinstance(value, str) or UNSTORABLE.search(value):
            raise MessageError(f"{name}: {fieldName} must be a string of one line")
    message = cls(**fields)
    if isinstance(message, REQUESTS) and message.term == 0:
        raise MessageError(f"{name}: requests start at term 1")
    if isinstance(message, RequestVote) and message.lastLogTerm > message.term:
        raise MessageError("RequestVote: lastLogTerm is after term")
    if isinstance(message, AppendEntries):
        _checkEntries(message)
    if isinstance(message, InstallSnapshot) and not (
        1 <= message.lastIncludedTerm <= message.term and message.lastIncludedIndex >= 1
    ):
        raise MessageError("InstallSnapshot: the snapshot must end at an entry of a past term")
    return message


def _isCount(value: object) -> bool:
    # A decoded JSON value: an int is exactly an int (a bool is not one).
    return type(value) is int and value >= 0


def _parseData(name: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise MessageError(f"{name}: data must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise MessageError(f"{name}: data is not valid base64") from None


def _parseEntries(name: str, value: object) -> tuple[Entry, ...]:
    if not isinstance(value, list):
        raise MessageError(f"{name}: entries must be a list")
    # Decoded JSON values: each type check is exact (a bool is no int).
    entries = tuple([Entry._make(item) for item in value if type(item) is list and len(item) == 3])
    if len(entries) != len(value) or not all(
        type(index) is int
        and type(term) is int
        and type(command) is str
        and index >= 0
        and term >= 0
        for index, term, command in entries
    ):
        raise MessageError(f"{name}: each entry must be [index, term, command]")
    return entries


def _checkEntries(message: AppendEntries) -> None:
    """
    Reject entries that no correct leader could send.  Each check runs
    over the whole batch at once (a follower checks every entry it is sent).
    """
    entries = message.entries
    first = message.prevLogIndex + 1
    if [entry.index for entry in entries] != list(range(first, first + len(entries))):
        raise MessageError("AppendEntries: entry indexes must follow prevLogIndex")
    terms = [entry.term for entry in entries]
    if terms and (
        terms[0] < max(message.prevLogTerm, 1)
        or terms[-1] > message.term
        or terms != sorted(terms)
    ):
        raise MessageError("AppendEntries: entry terms must be ordered and not after term")
    commands = " ".join(entry.command for entry in entries)
    if UNSTORABLE.search(commands):
        raise MessageError("AppendEntries: commands must be single lines without NUL")
    try:
        commands.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError("AppendEntries: commands must be valid Unicode") from None
    if message.prevLogTerm > message.term:
        raise MessageError("AppendEntries: prevLogTerm is after term")
