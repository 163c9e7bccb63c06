"""
Tests for L{txraft.client}: argument parsing, the pure line helpers, and the
client talking to scripted fake nodes on 127.0.0.1 in background threads.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from importlib import metadata

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import temporaryDirectory
from txraft import answers
from txraft.auth import AuthError, Responder, Session, authWord, readKeyFile, writeKeyFile
from txraft.client import (
    HELP,
    TABLE_COLUMNS,
    Client,
    ClientError,
    LineConnection,
    Options,
    enableLineEditing,
    formatRequest,
    formatResponse,
    main,
)
from txraft.messages import Snapshot
from txraft.snapshots import encodeSnapshot

#: A fake node's script: the response to one request line, or None to hang up.
Answer = Callable[[str], "str | None"]


class _Handler(socketserver.StreamRequestHandler):
    """Answers each request line on one connection as the node's script says."""

    timeout = 10  # a connection a test forgot to close cannot hang cleanup for ever

    def handle(self) -> None:
        node = self.server.node
        node.connections += 1
        while line := self.rfile.readline():
            node.received.append(line)
            response = node.answer(line.decode("utf-8").rstrip("\n"))
            if response is None:
                return
            self.wfile.write(response.encode("utf-8") + b"\n")


class FakeNode:
    """
    A scripted txraft node: a threaded TCP server on 127.0.0.1 that records
    the raw request lines it receives and answers each with C{answer(line)}.
    """

    def __init__(self, testCase: SynchronousTestCase, answer: Answer) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.connections = 0
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
        server.node = self
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, args=(0.01,))
        thread.start()
        # Cleanups run last-in first-out: stop serving, join handlers, join.
        testCase.addCleanup(thread.join)
        testCase.addCleanup(server.server_close)
        testCase.addCleanup(server.shutdown)

    def redirect(self, leader: str = "s1") -> str:
        """Return the line that points a client at this node."""
        return f"REDIRECT {leader} 127.0.0.1 {self.port}"


def numbered(line: bytes, name: str | None = None) -> str:
    """
    C{line} as sent, with the random part of its session ID as C{RANDOM}:
    C{NAME-RANDOM#SEQ@COMMAND} (or C{RANDOM#SEQ@COMMAND} without a name).
    """
    prefix = "" if name is None else f"{name}-"
    pattern = re.escape(prefix) + ("[0-9a-f]{8}" if name else "c[0-9a-f]{16}")
    return re.sub("^" + pattern + "#", prefix + "RANDOM#", line.decode("utf-8"))


def closedPort() -> int:
    """Return a port on 127.0.0.1 that nothing listens on, so connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeInput:
    """Stands in for C{input}: returns scripted lines, then raises EOFError."""

    def __init__(self, *lines: str) -> None:
        self.lines = list(lines)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.lines:
            raise EOFError()
        return self.lines.pop(0)


class OptionsTests(SynchronousTestCase):
    """L{Options} takes PORT, the command words and the C{--id} option."""

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_anonymousCommand(self) -> None:
        """Without C{--id} the client is anonymous; defaults apply."""
        options = self.parse("10000", "get", "b")
        self.assertEqual(
            (options["host"], options["port"], options["id"], options["command"]),
            ("127.0.0.1", 10000, None, "get b"),
        )
        self.assertEqual(options["timeout"], None)  # DEFAULT_TIMEOUT, or an operator's

    def test_idAndCommand(self) -> None:
        """C{--id} names the client."""
        options = self.parse("--id", "client4", "10000", "set", "b", "5")
        self.assertEqual((options["id"], options["command"]), ("client4", "set b 5"))

    def test_noGuessedId(self) -> None:
        """
        A first word that is no command word is an unknown command, not a
        client ID: C{10000 frob x} names C{frob}.
        """
        error = self.assertRaises(usage.UsageError, self.parse, "10000", "frob", "x")
        self.assertIn("unknown command 'frob'", str(error))

    def test_valueWordsJoined(self) -> None:
        """The command's words are joined with single spaces, so values may hold spaces."""
        options = self.parse("10000", "set", "greeting", "hello", "big world")
        self.assertEqual(options["command"], "set greeting hello big world")

    def test_interactive(self) -> None:
        """Without command words there is no command, with or without an ID."""
        self.assertEqual(self.parse("10000")["command"], None)
        options = self.parse("--id", "client4", "10000")
        self.assertEqual((options["id"], options["command"]), ("client4", None))

    def test_hostAndTimeout(self) -> None:
        """--host and --timeout set the first node and the wait."""
        options = self.parse("--host", "10.0.0.2", "--timeout", "0.5", "10001", "show")
        self.assertEqual((options["host"], options["timeout"]), ("10.0.0.2", 0.5))

    def test_valueLikeAnOption(self) -> None:
        """Words after PORT are never options, so a value may start with a dash."""
        self.assertEqual(self.parse("10000", "set", "k", "-5")["command"], "set k -5")

    def test_badPort(self) -> None:
        """PORT must be a decimal number from 1 to 65535."""
        for port in ["abc", "0", "65536", "\uff11\uff12", "10.5"]:
            with self.subTest(port=port):
                self.assertRaises(usage.UsageError, self.parse, port, "show")

    def test_missingPort(self) -> None:
        """PORT is required."""
        self.assertRaises(usage.UsageError, self.parse)

    def test_badId(self) -> None:
        """An ID outside [A-Za-z0-9_-]+ is a usage error."""
        for clientId in ["bad!id", "a@b", "client 4", "ünï"]:
            with self.subTest(clientId=clientId):
                error = self.assertRaises(
                    usage.UsageError, self.parse, "--id", clientId, "10000", "get", "b"
                )
                self.assertIn("invalid client ID", str(error))

    def test_unknownCommand(self) -> None:
        """The first word after PORT must be a command word."""
        error = self.assertRaises(usage.UsageError, self.parse, "10000", "gte", "b")
        self.assertIn("unknown command 'gte'", str(error))

    def test_operatorsCommands(self) -> None:
        """The operators' commands are command words; C{backup} needs FILE."""
        for words in (["members"], ["add", "s4", "h", "1"], ["transfer-leader"], ["backup", "f"]):
            with self.subTest(words=words):
                self.assertEqual(self.parse("10000", *words)["command"], " ".join(words))
        error = self.assertRaises(usage.UsageError, self.parse, "10000", "backup")
        self.assertIn("backup takes FILE", str(error))

    def test_multilineCommand(self) -> None:
        """A newline in the command words would smuggle in a second request."""
        self.assertRaises(usage.UsageError, self.parse, "10000", "set", "k", "a\nshow")

    def test_badTimeout(self) -> None:
        """The timeout must be a positive number."""
        for timeout in ["0", "-1", "soon"]:
            with self.subTest(timeout=timeout):
                self.assertRaises(usage.UsageError, self.parse, "--timeout", timeout, "1")

    def test_nonNumericNamesOption(self) -> None:
        """A timeout that is not a number is reported with the option's name."""
        error = self.assertRaises(usage.UsageError, self.parse, "--timeout", "soon", "1")
        self.assertIn("--timeout must be a number, not 'soon'", str(error))


class LineHelperTests(SynchronousTestCase):
    """The pure functions that build requests and show responses."""

    def test_formatRequest(self) -> None:
        """A request is ID@COMMAND, or the bare command without an ID."""
        self.assertEqual(formatRequest("client4", "set b 5"), "client4@set b 5")
        self.assertEqual(formatRequest(None, "get b"), "get b")

    def test_formatRequestOneLine(self) -> None:
        """A command spanning lines is refused."""
        self.assertRaises(ValueError, formatRequest, None, "get a\r\nget b")

    def test_formatResponseIndentsJson(self) -> None:
        """show and status answers are shown as indented JSON at the prompt."""
        shown = formatResponse("status", 'OK {"role": "leader", "term": 3}')
        self.assertEqual(shown, 'OK {\n  "role": "leader",\n  "term": 3\n}')

    def test_formatResponseLeavesOthers(self) -> None:
        """A get whose value looks like JSON, errors and broken JSON stay as sent."""
        self.assertEqual(formatResponse("get k", 'OK {"a": 1}'), 'OK {"a": 1}')
        self.assertEqual(formatResponse("show", "ERROR busy"), "ERROR busy")
        self.assertEqual(formatResponse("show", "OK {broken"), "OK {broken")


class LineConnectionTests(SynchronousTestCase):
    """L{LineConnection} gives one answer per line, however the bytes arrive."""

    def connect(self, answer: bytes, hangUp: bool = False) -> tuple[LineConnection, socket.socket]:
        """
        A connection to a listening socket that has already sent C{answer}
        (and closed, with C{hangUp}), and the node's end of it.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        connection = LineConnection("127.0.0.1", listener.getsockname()[1], timeout=5.0)
        self.addCleanup(connection.close)
        node, _ = listener.accept()
        self.addCleanup(node.close)
        node.sendall(answer)
        if hangUp:
            node.shutdown(socket.SHUT_WR)
        return connection, node

    def test_readLines(self) -> None:
        """
        Lines that arrive together are returned one at a time, without
        their CRLF or LF, bad UTF-8 replaced; L{LineConnection.hasLine} says
        whether another is waiting.
        """
        connection, node = self.connect(b"OK 1\r\nNOT_FOUND\nOK \xff\n")
        self.assertEqual(connection.readLine(), "OK 1")
        self.assertTrue(connection.hasLine())
        self.assertEqual(connection.readLine(), "NOT_FOUND")
        self.assertEqual(connection.readLine(), "OK \ufffd")
        self.assertFalse(connection.hasLine())

    def test_pipeline(self) -> None:
        """C{pipeline} sends every line in one write, then reads an answer for each."""
        connection, node = self.connect(b"OK\nOK 1\n")
        self.assertEqual(connection.pipeline(["set a 1", "get a"]), ["OK", "OK 1"])
        self.assertEqual(node.recv(100), b"set a 1\nget a\n")

    def test_tooLong(self) -> None:
        """An answer longer than C{MAX_LENGTH} fails instead of filling memory."""
        connection, node = self.connect(b"x" * 20)
        connection.MAX_LENGTH = 8
        error = self.assertRaises(ConnectionError, connection.readLine)
        self.assertEqual(str(error), "response line too long")

    def test_hangUp(self) -> None:
        """A node that hangs up mid-line fails the read; whole lines before it are kept."""
        connection, node = self.connect(b"OK\npart", hangUp=True)
        self.assertEqual(connection.readLine(), "OK")
        error = self.assertRaises(ConnectionError, connection.readLine)
        self.assertEqual(str(error), "connection closed by the node")

    def test_isClosedByPeer(self) -> None:
        """C{isClosedByPeer} tells a node that hung up from one that stays silent."""
        self.assertTrue(self.connect(b"bye\n", hangUp=True)[0].isClosedByPeer(5.0))
        self.assertFalse(self.connect(b"")[0].isClosedByPeer(0.05))


class ClientTests(SynchronousTestCase):
    """L{Client} talks to fake nodes: exact bytes, connections, redirects, failures."""

    def makeClient(self, port: int, clientId: str | None = None, timeout: float = 5.0) -> Client:
        self.stderr = io.StringIO()
        client = Client("127.0.0.1", port, clientId, timeout, self.stderr)
        self.addCleanup(client.close)
        return client

    def test_requestBytes(self) -> None:
        """
        A write goes numbered, C{ID-RANDOM#SEQ@COMMAND} and a newline (a
        fresh session each client), a read bare; each returns its answer.
        """
        node = FakeNode(self, lambda line: "OK")
        client = self.makeClient(node.port, "client4")
        self.assertEqual(client.request("set b 5"), "OK")
        self.assertEqual(client.request("get b"), "OK")
        self.assertEqual(client.request("delete b"), "OK")
        self.assertEqual(
            [numbered(line, "client4") for line in node.received],
            ["client4-RANDOM#1@set b 5\n", "get b\n", "client4-RANDOM#2@delete b\n"],
        )
        self.assertTrue(node.received[0].startswith(client.sessionId.encode() + b"#"))

    def test_oneConnection(self) -> None:
        """Requests share one connection, and their answers come back in order."""
        node = FakeNode(self, lambda line: f"OK {line}")
        client = self.makeClient(node.port)
        self.assertEqual(
            [client.request("get a"), client.request("get b")], ["OK get a", "OK get b"]
        )
        self.assertEqual(node.connections, 1)

    def test_utf8(self) -> None:
        """Requests and answers are UTF-8."""
        node = FakeNode(self, lambda line: "OK ünïcode")
        self.assertEqual(self.makeClient(node.port).request("set k ünïcode"), "OK ünïcode")
        self.assertEqual(numbered(node.received[0]), "RANDOM#1@set k ünïcode\n")

    def test_redirect(self) -> None:
        """A REDIRECT sends the same request to the leader, noted on stderr."""
        leader = FakeNode(self, lambda line: "OK 5")
        follower = FakeNode(
            self, lambda line: "OK {}" if line == "status" else leader.redirect("s1")
        )
        client = self.makeClient(follower.port, "client4")
        self.assertEqual(client.request("get b"), "OK 5")
        self.assertEqual(follower.received, [b"get b\n"])
        self.assertEqual(leader.received, [b"get b\n"])
        self.assertEqual(
            self.stderr.getvalue(), f"[*] redirected to s1 at 127.0.0.1:{leader.port}\n"
        )

    def test_staysWithLeader(self) -> None:
        """After a redirect, later requests go straight to the new node."""
        leader = FakeNode(self, lambda line: "OK")
        follower = FakeNode(self, lambda line: leader.redirect())
        client = self.makeClient(follower.port)
        client.request("set a 1")
        client.request("set b 2")
        self.assertEqual(len(follower.received), 1)
        self.assertEqual(
            [numbered(line) for line in leader.received],
            ["RANDOM#1@set a 1\n", "RANDOM#2@set b 2\n"],
        )
        self.assertEqual((client.host, client.port), ("127.0.0.1", leader.port))

    def test_redirectLoop(self) -> None:
        """
        A node that keeps redirecting (to itself) is asked again, less and
        less often, until the deadline; the error names the redirect.
        """
        node = FakeNode(self, lambda line: node.redirect())
        client = self.makeClient(node.port, timeout=0.5)
        error = self.assertRaises(ClientError, client.request, "get b")
        self.assertIn("no answer within 0.5s; last: ", str(error))
        self.assertIn(node.redirect(), str(error))
        self.assertLess(len(node.received), 10)

    def test_malformedRedirect(self) -> None:
        """A REDIRECT without a usable address fails the request."""
        node = FakeNode(self, lambda line: "REDIRECT s1 nowhere")
        error = self.assertRaises(ClientError, self.makeClient(node.port).request, "show")
        self.assertIn("malformed redirect", str(error))

    def test_refused(self) -> None:
        """An unreachable node is a ClientError naming the address."""
        port = closedPort()
        error = self.assertRaises(ClientError, self.makeClient(port).connect)
        self.assertIn(f"127.0.0.1:{port}", str(error))
        self.assertIn("refused", str(error).lower())
        client = self.makeClient(port, timeout=0.2)
        error = self.assertRaises(ClientError, client.request, "show")
        self.assertIn(f"no answer within 0.2s; last: connection to 127.0.0.1:{port}", str(error))

    def test_hangUpThenReconnect(self) -> None:
        """
        A node that hangs up on a write is asked again on a new connection,
        with the same SEQ, so the write runs once.
        """
        answers = iter([None, "OK"])
        node = FakeNode(self, lambda line: next(answers))
        client = self.makeClient(node.port, "c5")
        self.assertEqual(client.request("set a 1"), "OK")
        self.assertEqual(node.connections, 2)
        self.assertEqual(len(set(node.received)), 1)
        self.assertEqual(numbered(node.received[0], "c5"), "c5-RANDOM#1@set a 1\n")

    def test_timeout(self) -> None:
        """A node that accepts but never answers fails the request after the timeout."""
        silent = socket.socket()
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes connections; nobody ever reads them
        client = self.makeClient(silent.getsockname()[1], timeout=0.05)
        error = self.assertRaises(ClientError, client.request, "show")
        self.assertIn("no answer from", str(error))
        self.assertIn("within 0.05s", str(error))


class OneShotTests(SynchronousTestCase):
    """L{main} with a COMMAND: one request, the raw answer, an exit status."""

    def runMain(self, *argv: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(list(argv), stdout=stdout, stderr=stderr, readLine=FakeInput())
        return status, stdout.getvalue(), stderr.getvalue()

    def test_get(self) -> None:
        """An anonymous get sends the bare command and prints the answer; exit 0."""
        node = FakeNode(self, lambda line: "OK 5")
        self.assertEqual(self.runMain(str(node.port), "get", "b"), (0, "OK 5\n", ""))
        self.assertEqual(node.received, [b"get b\n"])

    def test_setWithId(self) -> None:
        """A set with an ID sends ID@set KEY VALUE, value spaces intact."""
        node = FakeNode(self, lambda line: "OK")
        status, out, err = self.runMain(
            "--host", "127.0.0.1", "--id", "c4", str(node.port), "set", "b", "5 6"
        )
        self.assertEqual((status, out, err), (0, "OK\n", ""))
        self.assertEqual(numbered(node.received[0], "c4"), "c4-RANDOM#1@set b 5 6\n")

    def test_exitStatus(self) -> None:
        """OK and NOT_FOUND exit 0; ERROR and unknown answers exit 1."""
        for answer, expected in [
            ("NOT_FOUND", 0),
            ("ERROR no such thing", 1),
            ("WHAT", 1),
        ]:
            with self.subTest(answer=answer):
                node = FakeNode(self, lambda line, answer=answer: answer)
                self.assertEqual(
                    self.runMain(str(node.port), "delete", "b"), (expected, f"{answer}\n", "")
                )

    def test_unavailableRetried(self) -> None:
        """
        C{UNAVAILABLE} is never the answer printed: the client asks again
        until the deadline, then exits 1 saying what it heard last.
        """
        node = FakeNode(self, lambda line: answers.NO_LEADER)
        status, out, err = self.runMain("--timeout", "0.3", str(node.port), "delete", "b")
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"no answer within 0.3s; last: 127.0.0.1:{node.port}: UNAVAILABLE", err)

    def test_sessionsUnsupported(self) -> None:
        """
        A cluster from before exactly-once sessions refuses the numbered
        write; the client warns and sends it unnumbered.
        """

        def answer(line: str) -> str:
            if "#" in line.split("@")[0]:
                return f"ERROR unknown command {line.split(' ')[0]!r}"
            return "OK"

        node = FakeNode(self, answer)
        status, out, err = self.runMain("--id", "c4", str(node.port), "set", "b", "5")
        self.assertEqual((status, out), (0, "OK\n"))
        self.assertIn("does not take numbered requests", err)
        self.assertEqual(node.received[-1], b"set b 5\n")

    def test_showRaw(self) -> None:
        """One-shot show prints the JSON on one line, for scripts."""
        document = {"a": "1", "b": "two words"}
        node = FakeNode(self, lambda line: "OK " + json.dumps(document))
        status, out, err = self.runMain(str(node.port), "show")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(json.loads(out.removeprefix("OK ")), document)
        self.assertEqual(out.count("\n"), 1)

    def test_redirect(self) -> None:
        """The leader's answer is printed; the redirect is noted on stderr."""
        leader = FakeNode(self, lambda line: "OK 5")
        follower = FakeNode(self, lambda line: leader.redirect("s2"))
        status, out, err = self.runMain("--id", "client4", str(follower.port), "get", "b")
        self.assertEqual((status, out), (0, "OK 5\n"))
        self.assertEqual(err, f"[*] redirected to s2 at 127.0.0.1:{leader.port}\n")
        self.assertEqual(leader.received, [b"get b\n"])

    def test_redirectLoop(self) -> None:
        """Endless redirects exit 1 with an error and print nothing on stdout."""
        node = FakeNode(self, lambda line: node.redirect())
        status, out, err = self.runMain("--timeout", "0.3", str(node.port), "get", "b")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("[!] 'get b': no answer within 0.3s; last:", err)

    def test_refused(self) -> None:
        """An unreachable node exits 1 with an error on stderr."""
        port = closedPort()
        status, out, err = self.runMain(str(port), "get", "b")
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"[!] connection to 127.0.0.1:{port} failed", err)

    def test_usageErrors(self) -> None:
        """A bad port or ID exits 2 with the reason on stderr, without connecting."""
        for argv, reason in [
            (["http", "get", "b"], "invalid port 'http'"),
            (["--id", "bad!id", "10000", "get", "b"], "invalid client ID 'bad!id'"),
        ]:
            with self.subTest(argv=argv):
                status, out, err = self.runMain(*argv)
                self.assertEqual((status, out), (2, ""))
                self.assertIn(reason, err)


class InteractiveTests(SynchronousTestCase):
    """L{main} without a COMMAND: a prompt loop over C{readLine}."""

    def runMain(self, readLine: FakeInput, *argv: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(list(argv), stdout=stdout, stderr=stderr, readLine=readLine)
        return status, stdout.getvalue(), stderr.getvalue()

    def test_session(self) -> None:
        """
        The session asks the node for the members first; then each non-blank
        line is sent with the ID and its answer printed, until EOF.
        """
        node = FakeNode(self, lambda line: {"get b": "NOT_FOUND"}.get(line, "OK"))
        readLine = FakeInput("set b 5", "", "   ", "get b")
        status, out, err = self.runMain(readLine, "--id", "client4", str(node.port))
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"[*] Connecting to 127.0.0.1 port {node.port}\nOK\nNOT_FOUND\n\n")
        self.assertEqual(
            [numbered(line, "client4") for line in node.received],
            ["status\n", "client4-RANDOM#1@set b 5\n", "get b\n"],
        )
        self.assertEqual(readLine.prompts, [">> "] * 5)

    def test_quit(self) -> None:
        """quit and exit end the session; later lines are not read or sent."""
        for word in ["quit", "exit"]:
            with self.subTest(word=word):
                node = FakeNode(self, lambda line: "OK")
                readLine = FakeInput("show", word, "set never 1")
                self.assertEqual(self.runMain(readLine, str(node.port))[0], 0)
                self.assertEqual(node.received, [b"status\n", b"show\n"])
                self.assertEqual(readLine.lines, ["set never 1"])

    def test_prettyShow(self) -> None:
        """show answers are indented at the prompt."""
        node = FakeNode(self, lambda line: 'OK {"a": "1"}')
        status, out, err = self.runMain(FakeInput("show"), str(node.port))
        self.assertEqual((status, err), (0, ""))
        self.assertIn('OK {\n  "a": "1"\n}\n', out)

    def test_redirectSticks(self) -> None:
        """After a redirect the rest of the session talks to the leader."""
        leader = FakeNode(self, lambda line: "OK")
        follower = FakeNode(
            self, lambda line: "OK {}" if line == "status" else leader.redirect("s1")
        )
        status, out, err = self.runMain(
            FakeInput("set a 1", "set b 2"), "--id", "c1", str(follower.port)
        )
        self.assertEqual(status, 0)
        self.assertTrue(out.endswith("\nOK\nOK\n\n"), out)
        self.assertEqual(
            [numbered(line, "c1") for line in follower.received],
            ["status\n", "c1-RANDOM#1@set a 1\n"],
        )
        self.assertEqual(
            [numbered(line, "c1") for line in leader.received],
            ["c1-RANDOM#1@set a 1\n", "c1-RANDOM#2@set b 2\n"],
        )
        self.assertEqual(err, f"[*] redirected to s1 at 127.0.0.1:{leader.port}\n")

    def test_goesOnAtAnotherMember(self) -> None:
        """
        The first node names the cluster's members; when it then drops the
        connection, the session's next request goes to another member.
        """
        other = FakeNode(self, lambda line: "OK 1")
        members: dict[str, str] = {}

        def first(line: str) -> str | None:
            if line == "status":
                return "OK " + json.dumps({"members": members})
            return None

        node = FakeNode(self, first)
        members.update({"s1": f"127.0.0.1:{node.port}", "s2": f"127.0.0.1:{other.port}"})
        status, out, err = self.runMain(FakeInput("get k"), "--timeout", "5", str(node.port))
        self.assertEqual((status, err), (0, ""))
        self.assertIn(
            f"[*] The cluster's nodes: 127.0.0.1:{node.port}, 127.0.0.1:{other.port}\n", out
        )
        self.assertTrue(out.endswith("OK 1\n\n"), out)
        self.assertEqual(other.received, [b"get k\n"])

    def test_membersUnknown(self) -> None:
        """A first node that names no members is said so, and the session goes on."""
        node = FakeNode(self, lambda line: None if line == "status" else "OK 1")
        status, out, err = self.runMain(FakeInput("get k"), "--timeout", "0.5", str(node.port))
        self.assertEqual(status, 0)
        self.assertIn("[!] the cluster's members are unknown: ", err)
        self.assertTrue(out.endswith("OK 1\n\n"), out)

    def test_errorDoesNotEndSession(self) -> None:
        """A failed request is reported and the next line is still sent."""
        node = FakeNode(self, lambda line: None if line == "get a" else "OK 1")
        status, out, err = self.runMain(
            FakeInput("get a", "get b"), "--timeout", "0.3", str(node.port)
        )
        self.assertEqual(status, 0)
        self.assertIn("[!] 'get a': no answer within 0.3s; last: 127.0.0.1:", err)
        self.assertIn("OK 1\n", out)

    def test_refusedAtStart(self) -> None:
        """An unreachable first node ends the session at once with status 1."""
        readLine = FakeInput("show")
        status, out, err = self.runMain(readLine, str(closedPort()))
        self.assertEqual(status, 1)
        self.assertIn("[*] Connecting to 127.0.0.1 port", out)
        self.assertIn("[!] connection to", err)
        self.assertEqual(readLine.prompts, [])

    def test_interrupt(self) -> None:
        """Ctrl-C at the prompt ends the session with status 130."""

        def interrupt(prompt: str) -> str:
            raise KeyboardInterrupt()

        node = FakeNode(self, lambda line: "OK")
        self.assertEqual(self.runMain(interrupt, str(node.port))[0], 130)


class LocalCommandTests(SynchronousTestCase):
    """C{help}, C{status --all} and C{--version}, which no single request answers."""

    def runMain(self, *argv: str, readLine: FakeInput | None = None) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(list(argv), stdout=stdout, stderr=stderr, readLine=readLine or FakeInput())
        return status, stdout.getvalue(), stderr.getvalue()

    def test_help(self) -> None:
        """
        C{help}, one-shot or at the prompt, lists the commands and sends
        nothing (the prompt asked for the members when it began).
        """
        node = FakeNode(self, lambda line: "OK")
        status, out, _ = self.runMain(str(node.port), "help")
        self.assertEqual((status, out), (0, HELP + "\n"))
        status, out, _ = self.runMain(str(node.port), readLine=FakeInput("help"))
        self.assertIn("status --all", out)
        self.assertEqual(node.received, [b"status\n"])

    def test_version(self) -> None:
        """C{--version} prints txraft's version from its package metadata, not Twisted's."""
        stdout = io.StringIO()
        options = Options()
        with redirect_stdout(stdout):
            self.assertRaises(SystemExit, options.parseOptions, ["--version"])
        self.assertEqual(stdout.getvalue(), f"txraft-client {metadata.version('txraft')}\n")

    def test_statusAll(self) -> None:
        """
        C{status --all} asks the named node for the members, then each of
        them, and prints one row per member: the leader marked, lag counted,
        an unreachable member still listed; one unhealthy member exits 1.
        """
        down = closedPort()

        def status(name: str, role: str, applied: int) -> str:
            return answers.ok(
                json.dumps(
                    {
                        "name": name,
                        "role": role,
                        "term": 3,
                        "leader": "s2",
                        "commitIndex": applied,
                        "lastApplied": applied,
                        "leaderCommit": 9,
                        "members": members,
                    }
                )
            )

        s1 = FakeNode(self, lambda line: status("s1", "follower", 7))
        s2 = FakeNode(self, lambda line: status("s2", "leader", 9))
        members = {
            "s1": f"127.0.0.1:{s1.port}",
            "s2": f"127.0.0.1:{s2.port}",
            "s3": f"127.0.0.1:{down}",
        }
        code, out, err = self.runMain(str(s1.port), "status", "--all")
        self.assertEqual((code, err), (1, ""))
        rows = [line.split() for line in out.splitlines()]
        self.assertEqual(rows[0], list(heading for heading, _ in TABLE_COLUMNS))
        self.assertEqual(
            rows[1:],
            [
                ["s1", members["s1"], "follower", "3", "7", "7", "2", "healthy"],
                ["s2", members["s2"], "leader", "3", "*", "9", "9", "0", "healthy"],
                ["s3", members["s3"], "unreachable", "-", "-", "-", "-", "unreachable"],
            ],
        )


class LineEditingTests(SynchronousTestCase):
    """The interactive prompt's history, through C{readline}."""

    def test_history(self) -> None:
        """
        L{enableLineEditing} loads the history file, so earlier sessions'
        commands come back with the arrow keys, and the function it returns
        saves this session's commands after them.
        """
        readline = __import__("readline")
        path = os.path.join(temporaryDirectory(self), "history")
        with open(path, "w") as f:
            f.write("set a 1\nget a\n")
        readline.clear_history()
        self.addCleanup(readline.clear_history)
        save = enableLineEditing(path)
        self.assertEqual([readline.get_history_item(i) for i in (1, 2)], ["set a 1", "get a"])
        readline.add_history("show")
        save()
        with open(path) as f:
            self.assertEqual(f.read().split("\n")[-2:], ["show", ""])


KEY = b"client-test-cluster-key-0123456789ab"


class KeyedNodeScript:
    """
    A fake node's script for one connection on a keyed node: it answers the
    handshake, then opens each request's MAC and seals each answer.
    """

    def __init__(self, key: bytes, answer: Callable[[str], str]) -> None:
        self.responder = Responder(key, "s1")
        self.session: Session | None = None
        self.answer = answer
        self.requests: list[str] = []

    def __call__(self, line: str) -> str | None:
        """Answer one raw request line."""
        if self.session is None:
            if authWord(line) == "AUTH1":
                return self.responder.challenge(line)
            try:
                self.session = self.responder.verify(line)
            except AuthError:
                return None
            return self.responder.confirmation()
        text = self.session.open(line.encode()).decode()
        self.requests.append(text)
        return self.session.seal(self.answer(text).encode()).decode()


class KeyedClientTests(SynchronousTestCase):
    """L{Client} with a cluster key proves it on each connection before any request."""

    def makeClient(self, port: int, key: bytes = KEY, timeout: float = 5.0) -> Client:
        """A client of the node at C{port} holding C{key}."""
        client = Client("127.0.0.1", port, None, timeout, io.StringIO(), key)
        self.addCleanup(client.close)
        return client

    def test_provesKey(self) -> None:
        """
        After the handshake requests and answers carry MACs the node checks,
        and the key itself never crosses the wire.
        """
        script = KeyedNodeScript(KEY, lambda line: f"OK {line}")
        node = FakeNode(self, script)
        self.assertEqual(self.makeClient(node.port).request("status"), "OK status")
        self.assertEqual(script.requests, ["status"])
        self.assertTrue(node.received[0].startswith(b"admin@AUTH1 "))
        self.assertNotIn(KEY, b"".join(node.received))

    def test_wrongKey(self) -> None:
        """A node that does not prove our key is refused before any request."""
        script = KeyedNodeScript(b"x" * 40, lambda line: "OK")
        node = FakeNode(self, script)
        error = self.assertRaises(ClientError, self.makeClient(node.port).connect)
        self.assertIn("cluster key handshake", str(error))
        self.assertEqual(script.requests, [])

    def test_forgedAnswer(self) -> None:
        """An answer whose MAC fails is an error, not an answer."""
        script = KeyedNodeScript(KEY, lambda line: "OK")
        node = FakeNode(self, script)
        client = self.makeClient(node.port, timeout=0.3)
        client.connect()
        assert script.session is not None
        script.session.seal(b"skipped")  # the next answer's sequence number is off
        error = self.assertRaises(ClientError, client.request, "status")
        self.assertIn("no answer within 0.3s", str(error))

    def test_option(self) -> None:
        """--cluster-key reads the key file; a bad one is a usage error naming it."""
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "cluster.key")
        options = Options()
        self.assertRaises(usage.UsageError, options.parseOptions, ["--cluster-key", path, "1"])
        writeKeyFile(path)
        options.parseOptions(["--cluster-key", path, "10000", "status"])
        self.assertEqual(options.clusterKey, readKeyFile(path))


MEMBERS = [
    {"name": "s1", "host": "127.0.0.1", "port": 10000, "voter": True},
    {"name": "s2", "host": "127.0.0.1", "port": 10001, "voter": True},
    {"name": "s4", "host": "10.0.0.4", "port": 10003, "voter": False},
]

#: How C{members} shows L{MEMBERS}.
MEMBERS_TABLE = """\
NAME  HOST       PORT   KIND
s1    127.0.0.1  10000  voter
s2    127.0.0.1  10001  voter
s4    10.0.0.4   10003  learner
"""


def backupAnswer(snapshot: Snapshot) -> str:
    """What a leader answers to C{backup}: OK and the base64 of the snapshot's file."""
    return "OK " + base64.b64encode(encodeSnapshot(snapshot)).decode()


class OperatorCommandTests(SynchronousTestCase):
    """The operators' commands: C{members} as a table, C{backup FILE}, the others raw."""

    def runMain(self, *argv: str, readLine: FakeInput | None = None) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(list(argv), stdout=stdout, stderr=stderr, readLine=readLine or FakeInput())
        return status, stdout.getvalue(), stderr.getvalue()

    def test_membersTable(self) -> None:
        """C{members} prints one aligned row per member, voter or learner; exit 0."""
        node = FakeNode(self, lambda line: "OK " + json.dumps(MEMBERS))
        self.assertEqual(self.runMain(str(node.port), "members"), (0, MEMBERS_TABLE, ""))
        self.assertEqual(node.received, [b"members\n"])

    def test_membersAtThePrompt(self) -> None:
        """At the prompt too."""
        node = FakeNode(self, lambda line: "OK " + json.dumps(MEMBERS))
        status, out, _ = self.runMain(str(node.port), readLine=FakeInput("members"))
        self.assertEqual(status, 0)
        self.assertIn(MEMBERS_TABLE, out)

    def test_membersRefused(self) -> None:
        """
        Any other answer is printed as it came, exit 1; a keyed node's
        refusal of a client without the key says what it wants.
        """
        node = FakeNode(self, lambda line: "ERROR not authorized")
        status, out, err = self.runMain(str(node.port), "members")
        self.assertEqual((status, out), (1, "ERROR not authorized\n"))
        self.assertIn("only with --cluster-key", err)

    def test_othersRaw(self) -> None:
        """
        C{add}, C{remove} and the rest go unnumbered, even with an ID (they
        are no commands of the state machine), and their answers print raw.
        """
        node = FakeNode(self, lambda line: "OK" if "add" in line else "ERROR s9 is not a member")
        status, out, _ = self.runMain("--id", "op", str(node.port), "add", "s4", "10.0.0.4", "1")
        self.assertEqual((status, out), (0, "OK\n"))
        status, out, _ = self.runMain(str(node.port), "remove", "s9")
        self.assertEqual((status, out), (1, "ERROR s9 is not a member\n"))
        self.assertEqual(node.received, [b"add s4 10.0.0.4 1\n", b"remove s9\n"])

    def test_changeNotSentAgain(self) -> None:
        """
        An operator's change answered C{UNAVAILABLE} that may have run is
        printed, exit 1, and not sent again (to run twice); the others are
        retried as ever.
        """
        answer = "UNAVAILABLE s4 has not caught up; it stays a learner"
        node = FakeNode(self, lambda line: answer)
        status, out, _ = self.runMain(str(node.port), "add", "s4", "10.0.0.4", "1")
        self.assertEqual((status, out), (1, answer + "\n"))
        self.assertEqual(node.received, [b"add s4 10.0.0.4 1\n"])

    def test_operatorsCommandsPatient(self) -> None:
        """
        An operator's command waits for its answer as long as the timeout,
        on one node: it is not sent again after half of it, which would
        start it over.
        """
        node = FakeNode(self, lambda line: time.sleep(1.6) or "OK")  # a slow transfer
        status, out, err = self.runMain("--timeout", "3", str(node.port), "transfer-leader")
        self.assertEqual((status, out, err), (0, "OK\n", ""))
        self.assertEqual(node.received, [b"transfer-leader\n"])

    def test_backupWritten(self) -> None:
        """
        C{backup FILE} writes the leader's snapshot file as it came, mode
        0600, in place of any older one, and says which index it holds.
        """
        snapshot = Snapshot(7, 2, b'{"a":"1"}', "membership voter s1 127.0.0.1 10000")
        node = FakeNode(self, lambda line: backupAnswer(snapshot))
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "backup.snapshot")
        with open(path, "w") as f:
            f.write("an older backup")
        status, out, err = self.runMain(str(node.port), "backup", path)
        size = len(encodeSnapshot(snapshot))
        self.assertEqual(
            (status, out, err),
            (0, f"backup of index 7 (term 2, {size} bytes) written to {path}\n", ""),
        )
        with open(path, "rb") as f:
            self.assertEqual(f.read(), encodeSnapshot(snapshot))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(os.listdir(directory), ["backup.snapshot"])
        self.assertEqual(node.received, [b"backup\n"])

    def test_backupNotWritten(self) -> None:
        """
        No file is written, and any older one is kept, for an answer that
        is a refusal (printed), or no snapshot (a damaged one fails its
        checksum), or where the file cannot be: each exits 1.
        """
        snapshot = Snapshot(7, 2, b'{"a":"1"}')
        damaged = backupAnswer(snapshot).replace("eyJhIjoiMSJ9", "eyJhIjoiMiJ9")
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "backup.snapshot")
        with open(path, "w") as f:
            f.write("an older backup")
        for answer, target, expected in [
            # Which of the client's two deadlines speaks first depends on load.
            ("UNAVAILABLE", path, "no answer "),
            ("ERROR not authorized", path, "only with --cluster-key"),
            ("OK not base64!", path, "the answer to backup is no snapshot"),
            (damaged, path, "snapshot checksum does not match"),
            (backupAnswer(snapshot), os.path.join(directory, "none", "b"), "cannot write"),
        ]:
            with self.subTest(answer=answer[:20], target=target):
                node = FakeNode(self, lambda line, answer=answer: answer)
                status, out, err = self.runMain(
                    "--timeout", "0.2", str(node.port), "backup", target
                )
                self.assertEqual(status, 1)
                self.assertIn(expected, out + err)
                with open(path) as f:
                    self.assertEqual(f.read(), "an older backup")
                self.assertEqual(os.listdir(directory), ["backup.snapshot"])

    def test_backupAtThePrompt(self) -> None:
        """At the prompt C{backup FILE} writes FILE; C{backup} alone says what it takes."""
        snapshot = Snapshot(3, 1, b"{}")
        node = FakeNode(self, lambda line: backupAnswer(snapshot))
        path = os.path.join(temporaryDirectory(self), "b")
        status, out, err = self.runMain(
            str(node.port), readLine=FakeInput("backup", f"backup {path}")
        )
        self.assertEqual(status, 0)
        self.assertIn("backup takes FILE", err)
        self.assertIn("backup of index 3 (term 1, ", out)
        self.assertTrue(os.path.exists(path))

    def test_keyed(self) -> None:
        """With C{--cluster-key} the client proves the key before C{members}."""
        directory = temporaryDirectory(self)
        keyPath = os.path.join(directory, "cluster.key")
        writeKeyFile(keyPath)
        script = KeyedNodeScript(readKeyFile(keyPath), lambda line: "OK " + json.dumps(MEMBERS))
        node = FakeNode(self, script)
        status, out, _ = self.runMain("--cluster-key", keyPath, str(node.port), "members")
        self.assertEqual((status, out), (0, MEMBERS_TABLE))
        self.assertTrue(node.received[0].startswith(b"admin@AUTH1 "))
        self.assertEqual(script.requests, ["members"])
