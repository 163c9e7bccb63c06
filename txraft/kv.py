"""
The deterministic key-value state machine and its command language.

Commands are the essay's ``get``, ``set``, ``delete`` and ``show``.  The log
stores each command in the canonical text that L{parseCommand} returns,
numbered ones as C{CLIENTID#SEQ@COMMAND} (see L{txraft.sessions}), and
applying the same commands in the same order gives the same replies, the
same map and the same client sessions on every node.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import NamedTuple

from zope.interface import implementer

from txraft.interfaces import IStateMachine
from txraft.sessions import SessionTable, parseNumbered
from txraft.shardedmap import ShardedMap, frozenJSON, jsonPieces

#: Control characters other than tab cannot appear in commands: the log and
#: the wire are line-based, and a stray carriage return would corrupt both.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

_ARITY = {"get": 1, "delete": 1, "show": 0}

#: The commands that only read the map: a leader answers them without a log
#: entry (L{KeyValueStore.read}), unless they are numbered.
READS = frozenset({"get", "show"})

#: Every command word of the map: C{set} and those of C{_ARITY}.
COMMAND_WORDS = frozenset({"set", *_ARITY})

#: A step of L{KeyValueStore.restoring} loads whole pieces of a snapshot's
#: map until it has loaded this many bytes: one piece of a large map (at
#: most 4,096 keys), or many small ones; a few milliseconds.
RESTORE_STEP_BYTES = 64 * 1024


class CommandError(ValueError):
    """A request that is not a valid command; ``str()`` is the reason for the client."""


class Command(NamedTuple):
    """
    A parsed command; C{text} is its canonical form, as stored in the log.
    (A named tuple: a leader parses one per request.)
    """

    name: str
    key: str | None = None
    value: str | None = None

    @property
    def text(self) -> str:
        """The canonical one-line form, e.g. C{set b 5}."""
        if self.value is not None:
            return f"{self.name} {self.key} {self.value}"
        if self.key is not None:
            return f"{self.name} {self.key}"
        return self.name


def canonicalWord(text: str) -> str | None:
    """
    C{"set"} or C{"get"} if C{text} is a valid command of that word written
    exactly as its L{Command.text} (one space after the word and after a
    set's key, no control character): most requests, which then need no
    full L{parseCommand}.  L{None} for anything else, valid or not.
    """
    word = text[:4]
    if word == "set ":
        key, _, value = text[4:].partition(" ")
        if key and value and not _CONTROL.search(text):
            return "set"
    elif word == "get ":
        key = text[4:]
        if key and key.isprintable() and " " not in key:
            return "get"
    return None


def parseCommand(text: str) -> Command:
    """
    Parse a client command.  C{set KEY VALUE} takes the rest of the line as
    VALUE (spaces included); the other commands take whitespace-separated
    arguments.

    @raise CommandError: on an unknown command or wrong arguments.
    """
    if _CONTROL.search(text):
        raise CommandError("control characters are not allowed")
    name, _, rest = text.lstrip(" \t").partition(" ")
    if not name:
        raise CommandError("empty command")
    if name == "set":
        key, _, value = rest.lstrip(" ").partition(" ")
        if not key:
            raise CommandError("set needs a key and a value")
        if not value:
            raise CommandError("set needs a value after the key")
        return Command("set", key, value)
    if name not in _ARITY:
        raise CommandError(f"unknown command {name[:40]!r}")
    arguments = rest.split()
    if len(arguments) != _ARITY[name]:
        expected = "a key" if _ARITY[name] else "no arguments"
        raise CommandError(f"{name} takes {expected}")
    return Command(name, *arguments)


@implementer(IStateMachine)
class KeyValueStore:
    """
    The replicated map (a L{ShardedMap}) and its client sessions; L{apply}
    and L{restoring} (or L{restore}) are their only ways to change.
    """

    def __init__(
        self, sessions: SessionTable | None = None, restoreStepBytes: int = RESTORE_STEP_BYTES
    ) -> None:
        """
        @param sessions: the session table to start with (default: an empty
            one with the default bounds).
        @param restoreStepBytes: how much of a snapshot's map one step of
            L{restoring} loads, at least (tests make it small).
        """
        self.data = ShardedMap()
        self.sessions = sessions if sessions is not None else SessionTable()
        self.restoreStepBytes = restoreStepBytes

    def capture(self) -> Callable[[], bytes]:
        """
        Freeze the current state and return a function that serializes it.
        The freezing takes no time (L{ShardedMap.freeze}; the sessions are
        copied, a bounded table); the serializing, the slow part, can run
        in another thread while this store goes on applying commands, and
        holds the GIL a piece (at most 4,096 keys) at a time.

        The bytes are the map as one line of JSON, then, if any client has
        a session, a newline and the sessions as another (see
        L{SessionTable.capture}): a snapshot without sessions is the same
        as before they existed.
        """
        frozen = self.data.freeze()
        sessions = self.sessions.capture()

        def serialize() -> bytes:
            parts = list(frozenJSON(frozen))
            if sessions:
                parts.append(b"\n" + _dumps(sessions).encode())
            return b"".join(parts)

        return serialize

    def restore(self, data: bytes) -> None:
        """
        Replace the whole state with a snapshot made by L{capture}, or by a
        txraft before sessions (the map alone), all at once.

        @raise ValueError: if C{data} is not such a snapshot.
        """
        for _ in self.restoring(data):
            pass

    def restoring(self, data: bytes) -> Iterator[None]:
        """
        L{restore} in steps, for an event loop to take one per turn: each
        parses and loads whole pieces of the map until it has loaded
        C{restoreStepBytes}.  The state is replaced, all at once, when the
        last step ends; until then this store stays as it was, and stays
        so if the steps are abandoned.

        @raise ValueError: (from a step) if C{data} is not a snapshot.
        """
        newline = data.find(b"\n")
        mapEnd = len(data) if newline < 0 else newline
        restored = ShardedMap()
        loaded = 0
        for piece in jsonPieces(data, mapEnd):
            state = json.loads(piece)
            valid = isinstance(state, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in state.items()
            )
            if not valid:
                raise ValueError("a key-value snapshot is a JSON object of strings")
            restored.update(state)
            loaded += len(piece)
            if loaded >= self.restoreStepBytes:
                loaded = 0
                yield
        sessions = SessionTable(self.sessions.maxSessions, self.sessions.window)
        if newline >= 0:
            sessions.restore(json.loads(data[newline + 1 :]))
        self.data, self.sessions = restored, sessions

    def apply(self, commandText: str, index: int = 0) -> str:
        """
        Execute one committed command, the entry at log C{index}, and return
        the reply line for the client that proposed it.  A numbered command
        runs only if its SEQ did not run before (else the reply is the one
        recorded then).  A command that does not parse (which only a forged
        log entry could hold) changes nothing and replies C{ERROR}.

        @param index: the entry's log index, by which the sessions know how
            recently each client was heard from (0 outside a log).
        """
        if commandText.startswith("set ") and not _CONTROL.search(commandText):
            # The canonical set a leader logs, most entries: parsed in place.
            # (No numbered command starts with a command word.)
            key, _, value = commandText[4:].partition(" ")
            if key and value:
                self.data[key] = value
                return "OK"
        numbered = parseNumbered(commandText)
        if numbered is not None and canonicalWord(numbered.command) == "set":
            # The canonical set of a numbered request, as a leader logs it.
            key, _, value = numbered.command[4:].partition(" ")
            return self.sessions.apply(
                numbered.clientId, numbered.seq, index, partial(self._set, key, value)
            )
        try:
            command = parseCommand(commandText if numbered is None else numbered.command)
        except CommandError as e:
            return f"ERROR {e}"
        if numbered is None:
            return self._execute(command)
        return self.sessions.apply(
            numbered.clientId,
            numbered.seq,
            index,
            lambda: self._execute(command),
            read=command.name in READS,
        )

    def _set(self, key: str, value: str) -> str:
        """Set C{key} to C{value}; the reply is C{OK}."""
        self.data[key] = value
        return "OK"

    def _execute(self, command: Command) -> str:
        """Run C{command} on the map and return its reply."""
        if command.name == "set":
            return self._set(command.key, command.value)
        if command.name == "delete":
            return "NOT_FOUND" if self.data.pop(command.key, None) is None else "OK"
        return self._answerRead(command)

    def read(self, commandText: str) -> str:
        """
        Answer a command of L{READS} from the current state, changing
        nothing; the same answer L{apply} would give it.

        @raise CommandError: if it is no valid read.
        """
        name, _, key = commandText.partition(" ")
        if name == "get" and key.isprintable() and key and " " not in key:
            # The canonical form the driver passes: no second full parse.
            return self._answerRead(Command("get", key))
        command = parseCommand(commandText)
        if command.name not in READS:
            raise CommandError(f"{command.name} is not a read")
        return self._answerRead(command)

    def _answerRead(self, command: Command) -> str:
        if command.name == "get":
            value = self.data.get(command.key)
            return "NOT_FOUND" if value is None else f"OK {value}"
        return "OK " + json.dumps(self.data.toDict(), ensure_ascii=False, sort_keys=True)


def _dumps(value: object) -> str:
    """C{value} as compact JSON on one line (JSON escapes every newline in a string)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
