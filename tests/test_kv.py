"""
Tests for L{txraft.kv}: the command language and the deterministic
key-value state machine.
"""

from __future__ import annotations

import copy
import json
import random

from twisted.trial.unittest import SynchronousTestCase

import txraft.kv
from txraft.kv import (
    RESTORE_STEP_BYTES,
    Command,
    CommandError,
    KeyValueStore,
    canonicalWord,
    parseCommand,
)
from txraft.sessions import SessionTable


class ParseCommandTests(SynchronousTestCase):
    """
    Tests for L{parseCommand} on well-formed commands.
    """

    def test_get(self) -> None:
        """
        C{get KEY} parses to a C{get} of that key, stored as C{get KEY}.
        """
        command = parseCommand("get a")
        self.assertEqual(command, Command("get", "a"))
        self.assertEqual(command.text, "get a")

    def test_set(self) -> None:
        """
        C{set KEY VALUE} parses to a C{set} of that key to that value.
        """
        command = parseCommand("set b 5")
        self.assertEqual(command, Command("set", "b", "5"))
        self.assertEqual(command.text, "set b 5")

    def test_delete(self) -> None:
        """
        C{delete KEY} parses to a C{delete} of that key.
        """
        command = parseCommand("delete a")
        self.assertEqual(command, Command("delete", "a"))
        self.assertEqual(command.text, "delete a")

    def test_show(self) -> None:
        """
        C{show} takes no arguments and parses to a C{show}.
        """
        command = parseCommand("show")
        self.assertEqual(command, Command("show"))
        self.assertEqual(command.text, "show")

    def test_setValueIsRestOfLine(self) -> None:
        """
        The value of C{set} is the rest of the line: it keeps its spaces
        (inner, repeated and trailing), C{@} signs and tabs.
        """
        for value in ["hello world", "a@b", "x  y ", "tab\there", "@@ @", "k v w"]:
            command = parseCommand(f"set k {value}")
            self.assertEqual((command.key, command.value), ("k", value))
            self.assertEqual(command.text, f"set k {value}")

    def test_setValueUnicode(self) -> None:
        """
        Keys and values may be any non-control Unicode text.
        """
        command = parseCommand("set clé ünïcødé ☃ 雪")
        self.assertEqual(command, Command("set", "clé", "ünïcødé ☃ 雪"))

    def test_leadingSpaces(self) -> None:
        """
        Leading spaces and tabs before the command word are ignored, and the
        canonical text drops them.
        """
        self.assertEqual(parseCommand("   get a").text, "get a")
        self.assertEqual(parseCommand("\t show").text, "show")
        self.assertEqual(parseCommand("  set k v").text, "set k v")

    def test_extraSpacesBetweenArguments(self) -> None:
        """
        Repeated or trailing spaces around the key of C{get}/C{delete} are
        not part of it, and the canonical text is normalised.
        """
        self.assertEqual(parseCommand("get   a  ").text, "get a")
        self.assertEqual(parseCommand("delete  a").text, "delete a")
        self.assertEqual(parseCommand("show  ").text, "show")

    def test_canonicalTextParsesToItself(self) -> None:
        """
        The canonical text that the log stores parses back to the same
        command, so every node applies exactly what the leader accepted.
        """
        for text in ["get a", " set k  v  w ", "delete x", "show", "set k a@b"]:
            command = parseCommand(text)
            self.assertEqual(parseCommand(command.text), command)


class ParseCommandErrorTests(SynchronousTestCase):
    """
    Tests for L{parseCommand} on malformed commands: each raises
    L{CommandError} whose text is the reason given to the client.
    """

    def assertRejected(self, text: str, reason: str) -> None:
        """
        Assert that C{text} is rejected with a reason containing C{reason}.
        """
        error = self.assertRaises(CommandError, parseCommand, text)
        self.assertIn(reason, str(error))
        self.assertNotIn("\n", str(error))

    def test_unknownCommand(self) -> None:
        """
        A command word other than get/set/delete/show is rejected, naming it.
        """
        self.assertRejected("frobnicate a", "unknown command 'frobnicate'")
        self.assertRejected("GET a", "unknown command 'GET'")
        self.assertRejected("status", "unknown command")

    def test_unknownCommandNameTruncated(self) -> None:
        """
        A huge unknown command word is not echoed back in full.
        """
        error = self.assertRaises(CommandError, parseCommand, "x" * 10000)
        self.assertLess(len(str(error)), 100)

    def test_empty(self) -> None:
        """
        An empty or all-blank line is not a command.
        """
        self.assertRejected("", "empty command")
        self.assertRejected("   ", "empty command")

    def test_getWithoutKey(self) -> None:
        """
        C{get} and C{delete} need a key: the key cannot be empty.
        """
        self.assertRejected("get", "get takes a key")
        self.assertRejected("get ", "get takes a key")
        self.assertRejected("delete", "delete takes a key")
        self.assertRejected("delete   ", "delete takes a key")

    def test_getWithExtraArguments(self) -> None:
        """
        C{get} and C{delete} take exactly one key.
        """
        self.assertRejected("get a b", "get takes a key")
        self.assertRejected("delete a b c", "delete takes a key")

    def test_showWithArguments(self) -> None:
        """
        C{show} takes no arguments.
        """
        self.assertRejected("show a", "show takes no arguments")

    def test_setWithoutKey(self) -> None:
        """
        C{set} with nothing after it, or only spaces, has no key.
        """
        self.assertRejected("set", "set needs a key and a value")
        self.assertRejected("set   ", "set needs a key and a value")

    def test_setWithoutValue(self) -> None:
        """
        C{set k} (with or without a trailing space) has no value.
        """
        self.assertRejected("set k", "set needs a value after the key")
        self.assertRejected("set k ", "set needs a value after the key")

    def test_controlCharacters(self) -> None:
        """
        Control characters (other than tab) anywhere in the line are
        rejected: a stray CR or NUL would corrupt the line-based log.
        """
        for character in ["\x00", "\x01", "\r", "\n", "\x1b", "\x1f", "\x7f"]:
            self.assertRejected(f"set k a{character}b", "control characters")
            self.assertRejected(f"get k{character}", "control characters")


class KeyValueStoreTests(SynchronousTestCase):
    """
    Tests for L{KeyValueStore.apply}: the reply of each command.
    """

    def setUp(self) -> None:
        """
        Start with an empty store.
        """
        self.store = KeyValueStore()

    def test_getMissing(self) -> None:
        """
        C{get} of a key never set answers C{NOT_FOUND}.
        """
        self.assertEqual(self.store.apply("get a"), "NOT_FOUND")

    def test_setThenGet(self) -> None:
        """
        C{set} answers C{OK}, and a later C{get} answers C{OK VALUE}.
        """
        self.assertEqual(self.store.apply("set a hello world"), "OK")
        self.assertEqual(self.store.apply("get a"), "OK hello world")

    def test_overwrite(self) -> None:
        """
        A second C{set} of the same key replaces the value.
        """
        self.store.apply("set a 1")
        self.store.apply("set a 2")
        self.assertEqual(self.store.apply("get a"), "OK 2")

    def test_delete(self) -> None:
        """
        C{delete} of a present key answers C{OK} and removes it; of an
        absent key answers C{NOT_FOUND}.
        """
        self.store.apply("set a 1")
        self.assertEqual(self.store.apply("delete a"), "OK")
        self.assertEqual(self.store.apply("get a"), "NOT_FOUND")
        self.assertEqual(self.store.apply("delete a"), "NOT_FOUND")

    def test_showEmpty(self) -> None:
        """
        C{show} of an empty store answers C{OK {}}.
        """
        self.assertEqual(self.store.apply("show"), "OK {}")

    def test_showSortedJson(self) -> None:
        """
        C{show} answers C{OK} and a JSON object of every key, with keys in
        sorted order whatever order they were set in.
        """
        for key in ["b", "c", "a"]:
            self.store.apply(f"set {key} value of {key}")
        reply = self.store.apply("show")
        self.assertTrue(reply.startswith("OK "))
        self.assertEqual(reply[3:], '{"a": "value of a", "b": "value of b", "c": "value of c"}')
        self.assertEqual(list(json.loads(reply[3:])), ["a", "b", "c"])

    def test_showUnicode(self) -> None:
        """
        C{show} writes non-ASCII text as itself (not C{\\u} escapes), and
        the JSON round-trips values with quotes and backslashes.
        """
        self.store.apply("set snow ☃ 雪")
        self.store.apply('set q say "hi" \\o/')
        reply = self.store.apply("show")
        self.assertIn("☃ 雪", reply)
        self.assertEqual(json.loads(reply[3:]), {"snow": "☃ 雪", "q": 'say "hi" \\o/'})

    def test_unicodeValues(self) -> None:
        """
        Unicode keys and values round-trip through C{set} and C{get}.
        """
        self.store.apply("set clé ünïcødé ☃")
        self.assertEqual(self.store.apply("get clé"), "OK ünïcødé ☃")

    def test_malformedCommandChangesNothing(self) -> None:
        """
        A command that does not parse (only a forged log entry could hold
        one) answers C{ERROR} and leaves the map as it was.
        """
        self.store.apply("set a 1")
        self.assertTrue(self.store.apply("set a").startswith("ERROR "))
        self.assertTrue(self.store.apply("bogus").startswith("ERROR "))
        self.assertEqual(self.store.data, {"a": "1"})

    def test_deterministic(self) -> None:
        """
        The same commands in the same order give the same replies and the
        same map on every store (the state machine must be deterministic
        for replicas to agree; Reference: section 5.3).
        """
        rng = random.Random(1234)
        commands = []
        for _ in range(500):
            key = rng.choice("abcde")
            commands.append(
                rng.choice(
                    [f"get {key}", f"set {key} {rng.randrange(100)} x", f"delete {key}", "show"]
                )
            )
        first, second = KeyValueStore(), KeyValueStore()
        firstReplies = [first.apply(c) for c in commands]
        secondReplies = [second.apply(c) for c in commands]
        self.assertEqual(firstReplies, secondReplies)
        self.assertEqual(first.data, second.data)
        self.assertEqual(first.apply("show"), second.apply("show"))


#: Texts that start like a set, valid or not, canonical or not.
SET_TEXTS = [
    "set k v",
    "set k two words",
    "set k  leading space",
    "set  k v",
    "set \tk v",
    "set k",
    "set k ",
    "set ",
    "set k v\x01",
    "set k\x7fv w",
    "set k\tv w",
]


class SetFastPathTests(SynchronousTestCase):
    """
    L{KeyValueStore.apply} reads a canonical C{set} in place, not through
    L{parseCommand}: it must agree with it on every text that starts so.
    """

    def test_agreesWithParseCommand(self) -> None:
        """
        Each text gets the answer, and leaves the map, that applying
        L{parseCommand}'s reading of it gives (or its error).
        """
        for text in SET_TEXTS:
            store = KeyValueStore()
            answer = store.apply(text)
            try:
                command = parseCommand(text)
            except CommandError as e:
                self.assertEqual((answer, store.data.toDict()), (f"ERROR {e}", {}), text)
            else:
                self.assertEqual(
                    (answer, store.data.toDict()), ("OK", {command.key: command.value}), text
                )


class CanonicalWordTests(SynchronousTestCase):
    """
    L{canonicalWord} names the command of a text that is already its own
    L{Command.text}, for the node to pass on unparsed; it must never name
    one that L{parseCommand} would refuse or write differently.
    """

    TEXTS = [
        *SET_TEXTS,
        "set k two  words",
        "get k",
        "get k ",
        "get  k",
        "get k\tv",
        "get k\u3000v",
        "get k\xa0",
        "get \x00",
        "get ",
        "get",
        "getk",
        "delete k",
        "show",
        " set k v",
        "SET k v",
        "set k \u00e9t\u00e9",
        "get \u00e9t\u00e9",
    ]

    def test_agreesWithParseCommand(self) -> None:
        """
        Wherever it names a word, L{parseCommand} reads the text as that
        command and writes it back unchanged.
        """
        named = []
        for text in self.TEXTS:
            word = canonicalWord(text)
            if word is None:
                continue
            named.append(text)
            command = parseCommand(text)
            self.assertEqual((command.name, command.text), (word, text), repr(text))
        self.assertEqual(
            named,
            [
                "set k v",
                "set k two words",
                "set k  leading space",
                "set \tk v",
                "set k\tv w",
                "set k two  words",
                "get k",
                "set k \u00e9t\u00e9",
                "get \u00e9t\u00e9",
            ],
        )

    def test_randomTexts(self) -> None:
        """The same, over random texts made of the characters that matter."""
        rng = random.Random(4)
        alphabet = ["s", "e", "t", "g", " ", " ", "k", "v", "\t", "\x01", "\u3000", "\x7f"]
        for _ in range(20_000):
            word = rng.choice(["set ", "get ", "", "delete "])
            text = word + "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))
            named = canonicalWord(text)
            if named is not None:
                command = parseCommand(text)
                self.assertEqual((command.name, command.text), (named, text), repr(text))


class SnapshotTests(SynchronousTestCase):
    """Capturing and restoring the whole map, for snapshots."""

    def test_roundTrip(self) -> None:
        """A store restored from a capture holds the same map, unicode and spaces included."""
        store = KeyValueStore()
        for command in ["set a 1", "set caf\u00e9 \u2603 snow man", 'set q "x"']:
            store.apply(command)
        other = KeyValueStore()
        other.restore(store.capture()())
        self.assertEqual(other.data, store.data)

    def test_captureIsFrozen(self) -> None:
        """
        Commands applied after the capture do not change what it
        serializes: the snapshot is the state at the capture.
        """
        store = KeyValueStore()
        store.apply("set a 1")
        serialize = store.capture()
        store.apply("set a 2")
        store.apply("set b 3")
        other = KeyValueStore()
        other.restore(serialize())
        self.assertEqual(other.data, {"a": "1"})

    def test_numberedOutsideALog(self) -> None:
        """
        A numbered command applied outside a log (no index given) is
        recorded at index 0, which the snapshot carries.
        """
        store = KeyValueStore()
        self.assertEqual(store.apply("c1#1@set a 1"), "OK")
        self.assertEqual(store.sessions.lastIndex("c1"), 0)
        self.assertEqual(store.capture()(), b'{"a":"1"}\n[["c1",1,0,["OK"]]]')

    def test_restoreKeepsTheWindow(self) -> None:
        """
        A store restored from a snapshot keeps its own bound on the answers
        kept per client: once a later request pushes an answer out of the
        window, a retry of it is told its answer is no longer kept.
        """
        store = KeyValueStore(SessionTable(maxSessions=3, window=3))
        for seq in range(1, 6):
            store.apply(f"c1#{seq}@set k{seq} {seq}", seq)
        restored = KeyValueStore(SessionTable(maxSessions=3, window=3))
        restored.restore(store.capture()())
        self.assertEqual(restored.apply("c1#5@set k5 5", 6), "OK")
        for seq in range(6, 8):
            restored.apply(f"c1#{seq}@set k{seq} {seq}", seq + 1)
        self.assertEqual(
            restored.apply("c1#4@set k4 4", 9),
            "ERROR session expired: the answer to SEQ 4 is no longer kept (only the last 3)",
        )

    def test_restoreRejectsOtherData(self) -> None:
        """Data that is not a JSON object of strings is refused and changes nothing."""
        store = KeyValueStore()
        store.apply("set a 1")
        for data in [b"[]", b'{"a": 1}', b"not json", b'{"a": null}']:
            self.assertRaises(ValueError, store.restore, data)
        self.assertEqual(store.data, {"a": "1"})


class RestoringTests(SynchronousTestCase):
    """Restoring a large snapshot in steps, for an event loop to take one per turn."""

    def bigStore(self, keys: int = 20_000) -> KeyValueStore:
        """A store of C{keys} keys, and one client session."""
        store = KeyValueStore()
        for i in range(keys):
            store.apply(f"set key{i:06} value{i:06}")
        store.apply("c1#1@set last 1", keys + 1)
        return store

    def test_stepsOfBoundedSize(self) -> None:
        """
        Each step loads whole pieces until it has loaded at least
        L{RESTORE_STEP_BYTES}, and no more than it needs: a map of 20,000
        keys takes one step per 64 KiB of it.
        """
        data = self.bigStore().capture()()
        mapLine = data.partition(b"\n")[0]
        pieces = mapLine.count(b",\t") + 1
        steps = sum(1 for _ in KeyValueStore().restoring(data))
        self.assertGreater(pieces, steps)
        self.assertEqual(steps, len(mapLine) // RESTORE_STEP_BYTES)

    def test_stepEndsAtTheBound(self) -> None:
        """
        A step ends as soon as it has loaded C{restoreStepBytes} or more
        (each piece counted as the object it is parsed as), not before.
        """
        data = b'{"a":"1",\t"b":"2",\t"c":"3"}'  # three pieces of 9 bytes
        for bound, steps in [(9, 3), (10, 1), (27, 1), (28, 0)]:
            store = KeyValueStore(restoreStepBytes=bound)
            self.assertEqual(sum(1 for _ in store.restoring(data)), steps, bound)
            self.assertEqual(store.data, {"a": "1", "b": "2", "c": "3"})

    def test_trailingNewline(self) -> None:
        """A newline after the sessions' line is whitespace, as it was to a whole parse."""
        store = KeyValueStore()
        store.restore(b'{"a":"1"}\n[["c1",1,3,["OK"]]]\n')
        self.assertEqual((store.data, store.sessions.lastIndex("c1")), ({"a": "1"}, 3))

    def test_emptyMapLine(self) -> None:
        """A snapshot whose map line is empty is refused as JSON that does not parse."""
        error = self.assertRaises(ValueError, KeyValueStore().restore, b'\n[["c1",1,3,["OK"]]]')
        self.assertIn("Expecting value", str(error))

    def test_unchangedUntilTheLastStep(self) -> None:
        """
        The store keeps its old map and sessions through every step; the
        end of the last step puts the snapshot's in place, all at once.
        """
        source = self.bigStore()
        store = KeyValueStore()
        store.apply("c2#1@set old 1", 1)
        steps = store.restoring(source.capture()())
        for _ in steps:
            self.assertEqual(store.data, {"old": "1"})
            self.assertEqual(store.sessions.lastIndex("c2"), 1)
        self.assertEqual(store.data, source.data)
        self.assertEqual(store.capture()(), source.capture()())
        self.assertEqual(store.apply("c1#1@set last 1", 9), "OK")

    def test_abandonedStepsChangeNothing(self) -> None:
        """Steps abandoned half way leave the store as it was."""
        store = KeyValueStore()
        store.apply("set old 1")
        steps = store.restoring(self.bigStore().capture()())
        next(steps)
        next(steps)
        steps.close()
        self.assertEqual(store.data, {"old": "1"})

    def test_badPieceFailsItsStep(self) -> None:
        """
        A piece that is not an object of strings fails the step that loads
        it, with the same reason as a whole snapshot, and changes nothing.
        """
        data = self.bigStore().capture()()
        bad = data.replace(b'"key019999":"value019999"', b'"key019999":19999')
        store = KeyValueStore()
        steps = store.restoring(bad)
        error = self.assertRaises(ValueError, list, steps)
        self.assertEqual(str(error), "a key-value snapshot is a JSON object of strings")
        self.assertEqual(store.data, {})

    def test_untabbedSnapshot(self) -> None:
        """A snapshot written before pieces (one untabbed object) restores in one step."""
        store = KeyValueStore()
        old = json.dumps({f"k{i}": "v" * 40 for i in range(5000)}, separators=(",", ":"))
        self.assertEqual(len(list(store.restoring(old.encode()))), 1)
        self.assertEqual(len(store.data), 5000)


class ExactAnswerTests(SynchronousTestCase):
    """The exact reasons a client reads, and the snapshot's exact bytes."""

    def test_commandErrors(self) -> None:
        """Each refused command line gets its own reason."""
        longName = "x" * 50
        for text, reason in [
            ("get a\x01", "control characters are not allowed"),
            ("   ", "empty command"),
            ("set", "set needs a key and a value"),
            ("set a", "set needs a value after the key"),
            (f"{longName} a", f"unknown command {'x' * 40!r}"),
            ("\u2003get a", "unknown command '\\u2003get'"),
            ("get", "get takes a key"),
            ("show a", "show takes no arguments"),
        ]:
            error = self.assertRaises(CommandError, parseCommand, text)
            self.assertEqual(str(error), reason)

    def test_onlySpacesBeforeAKey(self) -> None:
        """Between C{set} and its key only spaces are skipped, as between words elsewhere."""
        self.assertEqual(parseCommand(" \tset  a 1"), Command("set", "a", "1"))
        self.assertEqual(parseCommand("set \u2003a 1"), Command("set", "\u2003a", "1"))
        self.assertEqual(parseCommand("set XaX 1"), Command("set", "XaX", "1"))

    def test_onlyBlanksBeforeTheCommand(self) -> None:
        """
        Only spaces and tabs are skipped before the command word: any other
        character is part of it, so C{Xset} is no C{set}.
        """
        error = self.assertRaises(CommandError, parseCommand, " \tXset a 1")
        self.assertEqual(str(error), "unknown command 'Xset'")

    def test_notARead(self) -> None:
        """
        A command that changes the map is no read, and L{KeyValueStore.read}
        says so, naming it; the map is not changed.
        """
        store = KeyValueStore()
        error = self.assertRaises(CommandError, store.read, "set a 1")
        self.assertEqual(str(error), "set is not a read")
        self.assertEqual(store.data, {})

    def test_readAnswersAsApply(self) -> None:
        """
        L{KeyValueStore.read} answers every text as L{KeyValueStore.apply}
        would, the canonical C{get KEY} it takes without a second full
        parse and the forms that are not: whitespace other than one space,
        control characters, extra or missing arguments.
        """
        store = KeyValueStore()
        for command in ("set a 1", "set \tb 2", "set c\u2003 3", "set dé 4"):
            store.apply(command)
        texts = [
            "get a",
            "get dé",
            "get  a",
            "get \ta",
            "get a\t",
            "get c\u2003",
            "get a b",
            "get",
            "get ",
            "get a\x01",
            "show",
            " get a",
        ]
        for text in texts:
            try:
                expected = KeyValueStore.apply(copy.deepcopy(store), text)
            except CommandError as e:
                expected = f"ERROR {e}"
            try:
                answer = store.read(text)
            except CommandError as e:
                answer = f"ERROR {e}"
            self.assertEqual(answer, expected, text)

    def test_canonicalGetNotParsedAgain(self) -> None:
        """
        The driver validated a C{get} and passes its canonical form: that
        one is answered without the full parser, which a leader would
        otherwise run twice for every read.  A write is still no read.
        """
        store = KeyValueStore()
        store.apply("set a 1")

        def unused(text: str) -> None:
            raise AssertionError(f"parsed {text!r} again")

        self.patch(txraft.kv, "parseCommand", unused)
        self.assertEqual(store.read("get a"), "OK 1")
        self.assertEqual(store.read("get b"), "NOT_FOUND")
        self.patch(txraft.kv, "parseCommand", parseCommand)
        error = self.assertRaises(CommandError, store.read, "delete a")
        self.assertEqual(str(error), "delete is not a read")
        self.assertEqual(store.data, {"a": "1"})

    def test_snapshotIsUTF8(self) -> None:
        """A snapshot holds non-ASCII text as UTF-8, not as JSON escapes."""
        store = KeyValueStore()
        store.apply("set caf\u00e9 \u2603")
        self.assertEqual(store.capture()(), '{"caf\u00e9":"\u2603"}'.encode())

    def test_badSnapshotReason(self) -> None:
        """A snapshot that is not an object of strings is refused, saying what it must be."""
        error = self.assertRaises(ValueError, KeyValueStore().restore, b'{"a":1}')
        self.assertEqual(str(error), "a key-value snapshot is a JSON object of strings")
