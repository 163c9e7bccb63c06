"""
Tests for L{txraft.messages}: the RPC records and the C{SENDER@RPC JSON} wire format.
"""

import json
from unittest.mock import patch

import attrs
from twisted.trial.unittest import SynchronousTestCase

from txraft import messages
from txraft.messages import (
    RPC_NAMES,
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    MessageError,
    RequestVote,
    RequestVoteResponse,
    formatMessage,
    parseMessage,
    rpcName,
    splitSender,
)

#: One instance of every record, with non-default values everywhere.
SAMPLES = [
    RequestVote(term=7, lastLogIndex=12, lastLogTerm=6),
    RequestVoteResponse(term=7, voteGranted=True),
    RequestVoteResponse(term=0, voteGranted=False),
    AppendEntries(term=3, prevLogIndex=0, prevLogTerm=0, entries=(), leaderCommit=0),
    AppendEntries(
        term=8,
        prevLogIndex=5,
        prevLogTerm=2,
        entries=(
            Entry(6, 2, "set a 1"),
            Entry(7, 8, 'set k v with  spaces @x {"json": [1]}'),
            Entry(8, 8, "set caf\u00e9 \u2603 \\ \t"),
        ),
        leaderCommit=5,
    ),
    AppendEntriesResponse(term=4, success=True, matchIndex=9),
    AppendEntriesResponse(
        term=4, success=False, matchIndex=0, rejectedIndex=9, hintIndex=3, hintTerm=2
    ),
    InstallSnapshot(term=5, lastIncludedIndex=90, lastIncludedTerm=4, offset=0, data=b"\x00{"),
    InstallSnapshot(
        term=5, lastIncludedIndex=90, lastIncludedTerm=5, offset=2, data=b"", done=True
    ),
    InstallSnapshotResponse(term=5, lastIncludedIndex=90, nextOffset=2),
    InstallSnapshotResponse(term=5, lastIncludedIndex=90, nextOffset=2, matchIndex=90),
]


def body(name: str, **fields: object) -> str:
    """The text after C{SENDER@} of a peer line with the given JSON fields."""
    return f"{name} {json.dumps(fields)}"


def goodAppend(**overrides: object) -> str:
    """A well-formed AppendEntries body, with some fields replaced."""
    fields: dict[str, object] = {
        "term": 3,
        "prevLogIndex": 1,
        "prevLogTerm": 1,
        "entries": [[2, 1, "a"], [3, 3, "b"]],
        "leaderCommit": 1,
    }
    fields.update(overrides)
    return body("AppendEntries", **fields)


class FieldKindTests(SynchronousTestCase):
    """How L{parseMessage} checks each field, worked out once from the records."""

    def test_kinds(self) -> None:
        """
        C{entries} and C{data} by their names; a C{bool} or C{str} field by
        its type, written as the type or as its name (postponed
        annotations); anything else is a count.
        """
        sample = attrs.make_class(
            "Sample",
            {
                "entries": attrs.field(type=tuple),
                "data": attrs.field(type=bytes),
                "flag": attrs.field(type=bool),
                "named": attrs.field(type="bool"),
                "text": attrs.field(type=str),
                "label": attrs.field(type="str"),
                "number": attrs.field(type=int),
            },
        )
        kinds = {field.name: messages._fieldKind(field) for field in attrs.fields(sample)}
        self.assertEqual(
            kinds,
            {
                "entries": "entries",
                "data": "data",
                "flag": "bool",
                "named": "bool",
                "text": "str",
                "label": "str",
                "number": "count",
            },
        )


class EntryTermZeroTests(SynchronousTestCase):
    """An entry of term 0 is well formed, and refused as no leader's."""

    def test_termZeroEntryRefusedByTheLeaderCheck(self) -> None:
        """
        The parse takes any whole number as an entry's term; the check of
        what a leader can send refuses term 0 (terms start at 1).
        """
        error = self.assertRaises(
            MessageError,
            parseMessage,
            'AppendEntries {"term":1,"prevLogIndex":0,"prevLogTerm":0,'
            '"leaderCommit":0,"entries":[[1,0,"set a 1"]]}',
        )
        self.assertEqual(
            str(error), "AppendEntries: entry terms must be ordered and not after term"
        )


class RoundTripTests(SynchronousTestCase):
    """
    L{formatMessage} and L{parseMessage} are inverse.
    """

    def test_everyRecordRoundTrips(self) -> None:
        """
        Every record, with entries holding spaces, ``@``, quotes, backslashes,
        tabs and non-ASCII text, comes back equal from its one-line encoding,
        and the sender is recovered by L{splitSender}.
        """
        for message in SAMPLES:
            line = formatMessage("node-1", message)
            self.assertNotIn("\n", line)
            self.assertNotIn("\r", line)
            sender, rest = splitSender(line)
            self.assertEqual(sender, "node-1")
            self.assertEqual(rpcName(rest), type(message).__name__)
            self.assertEqual(parseMessage(rest), message)

    def test_lineShape(self) -> None:
        """
        A line is C{SENDER@RPC JSON}, entries encoded as C{[index, term, command]}.
        """
        line = formatMessage(
            "s1", AppendEntries(3, 5, 2, (Entry(6, 3, "set a 1"),), leaderCommit=5)
        )
        self.assertEqual(
            line,
            's1@AppendEntries {"term":3,"prevLogIndex":5,"prevLogTerm":2,'
            '"leaderCommit":5,"entries":[[6,3,"set a 1"]]}',
        )

    def test_entriesEncodedOncePerTuple(self) -> None:
        """
        The same tuple of entries sent twice in a row (a batch to each
        follower) is encoded once; another tuple is encoded afresh, and an
        append without entries still carries an empty array.
        """
        entries = (Entry(6, 3, "set a 1"), Entry(7, 3, "set b 2"))
        first = formatMessage("s1", AppendEntries(3, 5, 2, entries, 5))
        with patch.object(messages.json, "dumps", wraps=json.dumps) as dumps:
            second = formatMessage("s1", AppendEntries(3, 5, 2, entries, leaderCommit=6))
            self.assertEqual(dumps.call_count, 1)
            third = formatMessage("s1", AppendEntries(3, 5, 2, (Entry(6, 3, "set a 9"),), 5))
            self.assertEqual(dumps.call_count, 3)
        self.assertEqual(parseMessage(first.partition("@")[2]).entries, entries)
        self.assertEqual(parseMessage(second.partition("@")[2]).entries, entries)
        self.assertEqual(parseMessage(third.partition("@")[2]).entries, (Entry(6, 3, "set a 9"),))
        self.assertTrue(
            formatMessage("s1", AppendEntries(3, 5, 2, (), 5)).endswith(',"entries":[]}')
        )

    def test_responseDefaults(self) -> None:
        """
        An AppendEntriesResponse may omit its optional fields, which then are 0.
        """
        self.assertEqual(
            parseMessage('AppendEntriesResponse {"term":2,"success":true}'),
            AppendEntriesResponse(2, True, 0, 0, 0, 0),
        )


class ExactLineTests(SynchronousTestCase):
    """The exact lines peers exchange, which other tools may read too."""

    def test_defaultsLeftOut(self) -> None:
        """A field at its default is left out of the line; one that is not is kept."""
        self.assertEqual(
            formatMessage("s2", AppendEntriesResponse(2, True, matchIndex=5)),
            's2@AppendEntriesResponse {"term":2,"success":true,"matchIndex":5}',
        )
        self.assertEqual(
            formatMessage("s2", InstallSnapshot(2, 5, 1, 0, "\u00e9".encode(), True)),
            's2@InstallSnapshot {"term":2,"lastIncludedIndex":5,"lastIncludedTerm":1,'
            '"offset":0,"data":"w6k=","done":true}',
        )

    def test_commandsAsUTF8(self) -> None:
        """A command's non-ASCII text travels as itself, not as JSON escapes."""
        entry = Entry(6, 3, "set caf\u00e9 \u2603")
        line = formatMessage("s1", AppendEntries(3, 5, 2, (entry,), 5))
        self.assertIn('[[6,3,"set caf\u00e9 \u2603"]]', line)

    def test_boundariesAccepted(self) -> None:
        """A candidate's last log term may equal its term; a snapshot may end at index 1."""
        self.assertEqual(
            parseMessage('RequestVote {"term":2,"lastLogIndex":3,"lastLogTerm":2}'),
            RequestVote(2, 3, 2),
        )
        self.assertEqual(
            parseMessage(
                'InstallSnapshot {"term":2,"lastIncludedIndex":1,"lastIncludedTerm":1,'
                '"offset":0,"data":""}'
            ),
            InstallSnapshot(2, 1, 1, 0, b""),
        )

    def test_reasons(self) -> None:
        """Each refused body gets the reason a peer reads after C{ERROR}."""
        for text, reason in [
            ("Frob {}", "unknown RPC 'Frob'"),
            ("F" * 50 + " {}", f"unknown RPC {'F' * 40!r}"),
            ("RequestVote {", "RequestVote: body is not valid JSON"),
            ("RequestVote []", "RequestVote: body is not a JSON object"),
            (
                'RequestVote {"term":1}',
                "RequestVote: missing fields ['lastLogIndex', 'lastLogTerm'] or unknown fields []",
            ),
            (
                'AppendEntries {"term":1,"prevLogIndex":0,"prevLogTerm":0,"entries":7,'
                '"leaderCommit":0}',
                "AppendEntries: entries must be a list",
            ),
            (
                'AppendEntries {"term":1,"prevLogIndex":0,"prevLogTerm":0,"entries":[[1,1]],'
                '"leaderCommit":0}',
                "AppendEntries: each entry must be [index, term, command]",
            ),
            (
                'RequestVoteResponse {"term":1,"voteGranted":1}',
                "RequestVoteResponse: voteGranted must be true or false",
            ),
            (
                'RequestVote {"term":1,"lastLogIndex":-1,"lastLogTerm":0}',
                "RequestVote: lastLogIndex must be a non-negative integer",
            ),
            (
                'RequestVote {"term":0,"lastLogIndex":0,"lastLogTerm":0}',
                "RequestVote: requests start at term 1",
            ),
            (
                'RequestVote {"term":1,"lastLogIndex":3,"lastLogTerm":2}',
                "RequestVote: lastLogTerm is after term",
            ),
            (
                'InstallSnapshot {"term":2,"lastIncludedIndex":0,"lastIncludedTerm":1,'
                '"offset":0,"data":""}',
                "InstallSnapshot: the snapshot must end at an entry of a past term",
            ),
            (
                'AppendEntries {"term":3,"prevLogIndex":0,"prevLogTerm":4,"entries":[],'
                '"leaderCommit":0}',
                "AppendEntries: prevLogTerm is after term",
            ),
            (
                'InstallSnapshot {"term":2,"lastIncludedIndex":1,"lastIncludedTerm":1,'
                '"offset":0,"data":"","membership":"voters s1\\nvoters s2"}',
                "InstallSnapshot: membership must be a string of one line",
            ),
            (
                'InstallSnapshot {"term":2,"lastIncludedIndex":1,"lastIncludedTerm":1,'
                '"offset":0,"data":"","membership":7}',
                "InstallSnapshot: membership must be a string of one line",
            ),
        ]:
            error = self.assertRaises(MessageError, parseMessage, text)
            self.assertEqual(str(error), reason)


class MalformedTests(SynchronousTestCase):
    """
    Every malformed peer body raises L{MessageError} (so the node answers
    C{ERROR} and changes no state).
    """

    def assertRejected(self, text: str, reason: str | None = None) -> None:
        """
        C{parseMessage(text)} raises L{MessageError} with a one-line reason:
        C{reason}, if given (it is what the peer reads after C{ERROR}).
        """
        error = self.assertRaises(MessageError, parseMessage, text)
        self.assertTrue(str(error))
        self.assertNotIn("\n", str(error))
        if reason is not None:
            self.assertEqual(str(error), reason)

    def test_unknownRPC(self) -> None:
        """
        A name that is no RPC, in any case variant or empty, is rejected.
        """
        for text in [
            'Entry {"index":1,"term":1,"command":"a"}',
            'requestvote {"term":1,"lastLogIndex":0,"lastLogTerm":0}',
            "",
            " {}",
            "get a",
        ]:
            self.assertRejected(text)

    def test_badJSON(self) -> None:
        """
        A body that is not a JSON object is rejected: missing, truncated,
        trailing garbage, or a JSON value of another type.
        """
        for rest in ["", "{", '{"term":1', '{"term":1}}', "[1,2]", "3", '"x"', "null", "{'a':1}"]:
            self.assertRejected(f"RequestVoteResponse {rest}")
        self.assertRejected("RequestVoteResponse")

    def test_missingFields(self) -> None:
        """
        Each required field of each record is required (those with a
        default, like C{preVote}, may be left out).
        """
        for message in SAMPLES:
            name = type(message).__name__
            fields = json.loads(formatMessage("s", message).split(" ", 1)[1])
            required = [a.name for a in attrs.fields(type(message)) if a.default is attrs.NOTHING]
            for field in required:
                partial = {k: v for k, v in fields.items() if k != field}
                self.assertRejected(f"{name} {json.dumps(partial)}")

    def test_unknownField(self) -> None:
        """
        A field the record does not have is rejected, even next to all the
        right ones (for example the paper's C{candidateId}, which the
        envelope carries instead).
        """
        self.assertRejected(
            body("RequestVote", term=1, lastLogIndex=0, lastLogTerm=0, candidateId="s1")
        )
        self.assertRejected(goodAppend(leaderId="s1"))

    def test_wrongTypes(self) -> None:
        """
        Numbers must be JSON integers (not strings, floats or null) and flags
        must be JSON booleans (not 0/1 or strings).
        """
        for value in ["1", 1.0, 1.5, None, [1], {"a": 1}, 1e3]:
            self.assertRejected(body("RequestVote", term=value, lastLogIndex=0, lastLogTerm=0))
            self.assertRejected(goodAppend(leaderCommit=value))
        for value in [1, 0, "true", None]:
            self.assertRejected(body("RequestVoteResponse", term=1, voteGranted=value))
            self.assertRejected(body("AppendEntriesResponse", term=1, success=value))

    def test_boolsWhereIntsExpected(self) -> None:
        """
        JSON C{true}/C{false} are not integers, although Python's bool is an int.
        """
        self.assertRejected(body("RequestVote", term=True, lastLogIndex=0, lastLogTerm=0))
        self.assertRejected(body("AppendEntriesResponse", term=1, success=False, hintIndex=True))
        self.assertRejected(goodAppend(entries=[[True, 1, "a"]], prevLogIndex=0, prevLogTerm=0))
        self.assertRejected(goodAppend(entries=[[2, True, "a"]]))

    def test_negatives(self) -> None:
        """
        Terms and indexes are never negative.
        """
        self.assertRejected(body("RequestVote", term=-1, lastLogIndex=0, lastLogTerm=0))
        self.assertRejected(body("RequestVote", term=1, lastLogIndex=-1, lastLogTerm=0))
        self.assertRejected(body("AppendEntriesResponse", term=1, success=True, matchIndex=-3))
        self.assertRejected(goodAppend(prevLogIndex=-1))
        self.assertRejected(goodAppend(prevLogIndex=-1, entries=[[0, 1, "a"]]))
        self.assertRejected(goodAppend(entries=[[2, -1, "a"]]))

    def test_badEntries(self) -> None:
        """
        C{entries} must be a list of C{[index, term, command]} triples with a
        string command.
        """
        for entries in [
            {"2": [1, "a"]},
            '[[2,1,"a"]]',
            None,
            [[2, 1]],
            [[2, 1, "a", "extra"]],
            [[2, 1, 5]],
            [[2, 1, None]],
            [{"index": 2, "term": 1, "command": "a"}],
            [[2.0, 1, "a"]],
        ]:
            self.assertRejected(goodAppend(entries=entries))

    def test_nonContiguousIndexes(self) -> None:
        """
        Entry indexes must be C{prevLogIndex+1, prevLogIndex+2, ...}: no gap,
        no repeat, no reordering, no start elsewhere.
        """
        for entries in [
            [[3, 1, "a"]],
            [[2, 1, "a"], [4, 1, "b"]],
            [[2, 1, "a"], [2, 1, "b"]],
            [[3, 1, "a"], [2, 1, "b"]],
            [[1, 1, "a"]],
        ]:
            reason = "AppendEntries: entry indexes must follow prevLogIndex"
            self.assertRejected(goodAppend(entries=entries), reason)

    def test_entryTermAfterMessageTerm(self) -> None:
        """
        A leader only sends entries of its term or earlier.
        """
        reason = "AppendEntries: entry terms must be ordered and not after term"
        self.assertRejected(goodAppend(term=3, entries=[[2, 4, "a"]]), reason)

    def test_entryTermsOutOfOrder(self) -> None:
        """
        Entry terms never decrease along a log, never precede C{prevLogTerm},
        and are at least 1.
        """
        self.assertRejected(goodAppend(entries=[[2, 3, "a"], [3, 2, "b"]]))
        self.assertRejected(goodAppend(prevLogTerm=2, entries=[[2, 1, "a"]]))
        self.assertRejected(goodAppend(prevLogIndex=0, prevLogTerm=0, entries=[[1, 0, "a"]]))

    def test_loneSurrogateCommand(self) -> None:
        """
        JSON can spell a lone surrogate (C{"\\ud800"}) that no UTF-8 line
        can hold; such a command could not be written to the log file.
        """
        self.assertRejected(
            'AppendEntries {"term":1,"prevLogIndex":0,"prevLogTerm":0,'
            '"entries":[[1,1,"set a \\ud800"]],"leaderCommit":0}',
            "AppendEntries: commands must be valid Unicode",
        )

    def test_snapshotDataIsBase64(self) -> None:
        """
        Snapshot chunks travel as base64, and anything that is not valid
        base64 is refused.
        """
        line = formatMessage("s1", InstallSnapshot(2, 5, 1, 0, b"\xff\x00", done=True))
        self.assertIn('"data":"/wA="', line)
        for data, reason in [
            ('"/wA"', "data is not valid base64"),
            ('"not base64!"', "data is not valid base64"),
            ('"/w A="', "data is not valid base64"),
            ("7", "data must be a base64 string"),
            ("null", "data must be a base64 string"),
        ]:
            self.assertRejected(
                "InstallSnapshot "
                f'{{"term":2,"lastIncludedIndex":5,"lastIncludedTerm":1,"offset":0,"data":{data}}}',
                f"InstallSnapshot: {reason}",
            )

    def test_snapshotMustEndInPastTerm(self) -> None:
        """A snapshot ends at a real entry (index and term at least 1) of a term not after ours."""
        for index, term in [(0, 1), (5, 0), (5, 3)]:
            self.assertRejected(
                "InstallSnapshot "
                f'{{"term":2,"lastIncludedIndex":{index},"lastIncludedTerm":{term},'
                '"offset":0,"data":""}'
            )

    def test_requestsStartAtTermOne(self) -> None:
        """
        Every candidate and leader has a term of at least 1 (terms start at
        0 and a campaign increments it), so a request of term 0 is forged.
        """
        self.assertRejected(goodAppend(term=0, prevLogTerm=0, entries=[]))
        self.assertRejected('RequestVote {"term":0,"lastLogIndex":0,"lastLogTerm":0}')

    def test_lastLogTermAfterTerm(self) -> None:
        """
        A candidate's last log term cannot be after the term it campaigns in.
        """
        self.assertRejected('RequestVote {"term":2,"lastLogIndex":4,"lastLogTerm":3}')

    def test_prevLogTermAfterTerm(self) -> None:
        """
        C{prevLogTerm} cannot be after the leader's own term.
        """
        self.assertRejected(goodAppend(term=3, prevLogTerm=4, entries=[]))

    def test_multiLineCommand(self) -> None:
        """
        A command holding a line break could never have come from a client
        line, and would break the log file's one-entry-per-line format.
        """
        reason = "AppendEntries: commands must be single lines without NUL"
        self.assertRejected(goodAppend(entries=[[2, 1, "set a 1\nset b 2"]]), reason)
        self.assertRejected(goodAppend(entries=[[2, 1, "set a\r"]]), reason)

    def test_wellFormedControl(self) -> None:
        """
        The body the malformed cases start from is itself accepted, so each
        rejection above is due to the one thing changed.
        """
        self.assertEqual(
            parseMessage(goodAppend()),
            AppendEntries(3, 1, 1, (Entry(2, 1, "a"), Entry(3, 3, "b")), 1),
        )


class SplitSenderTests(SynchronousTestCase):
    """
    L{splitSender} and L{rpcName}: telling peer lines from client lines.
    """

    def test_senderBeforeFirstAt(self) -> None:
        """
        A valid ID before the first ``@`` is the sender; the rest is the
        command, which may contain more ``@``.
        """
        self.assertEqual(splitSender("c-4@get a"), ("c-4", "get a"))
        self.assertEqual(splitSender("s_1@set k a@b"), ("s_1", "set k a@b"))
        self.assertEqual(splitSender("A9@"), ("A9", ""))

    def test_bareCommands(self) -> None:
        """
        A line whose text before its first ``@`` is not an ID is a bare
        command from an anonymous client: C{set k a@b}, an empty ID, a dot,
        or no ``@`` at all.
        """
        for line in ["set k a@b", "@get a", "a.b@get a", "get a", "caf\u00e9@get a", ""]:
            self.assertEqual(splitSender(line), (None, line))

    def test_rpcName(self) -> None:
        """
        L{rpcName} recognises exactly the RPC names, as the first word.
        """
        self.assertEqual(RPC_NAMES, {cls.__name__ for cls in (type(m) for m in SAMPLES)})
        for name in RPC_NAMES:
            self.assertEqual(rpcName(f"{name} {{}}"), name)
            self.assertEqual(rpcName(name), name)
        for text in ["get a", "RequestVote{}", "requestvote {}", "set RequestVote 1", ""]:
            self.assertIsNone(rpcName(text))
