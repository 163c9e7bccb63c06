"""
The C{txraft-client} command: send key-value requests to a txraft node.

    txraft-client [--host HOST] [--timeout SECONDS] PORT [ID] [COMMAND ...]

With a COMMAND the client sends it once, prints the response line and exits
with a status that scripts can test; without one it reads commands at a
C{>> } prompt.  Either way it follows C{REDIRECT} responses to the leader, so
any node of the cluster can be named on the command line.

A blocking socket is enough here: the protocol is strictly one response line
per request line, in order, and a person at a prompt waits for each answer.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple, TextIO

from twisted.python import usage

from txraft.messages import NAME_PATTERN

#: The command words.  The first argument after PORT is a client ID unless it
#: is one of these, so C{10000 get b} is anonymous and C{10000 c4 get b} is not.
COMMANDS = frozenset({"get", "set", "delete", "show", "status"})

#: The commands whose C{OK} answer carries JSON, indented at the prompt.
JSON_COMMANDS = frozenset({"show", "status"})

#: Words that end an interactive session (as does end of input).
QUIT_WORDS = frozenset({"quit", "exit"})

PROMPT = ">> "


class ClientError(Exception):
    """
    A request got no answer: the node was unreachable, timed out, hung up,
    answered nonsense or kept redirecting.  C{str()} is a one-line reason.
    """


class Redirect(NamedTuple):
    """Where a follower says the leader is: C{REDIRECT LEADER HOST PORT}."""

    leader: str
    host: str
    port: int


def parsePort(text: str) -> int:
    """
    Return C{text} as a TCP port number.

    @raise ValueError: unless it is a decimal number from 1 to 65535.
    """
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise ValueError(f"invalid port {text!r}: expected a number from 1 to 65535")
    return int(text)


def splitCommandLine(words: Sequence[str]) -> tuple[str | None, str | None]:
    """
    Split the arguments after PORT into a client ID and a command line.

    The first word is the ID unless it is a command word; the command's words
    are joined with single spaces.  Either part may be L{None}.

    @raise usage.UsageError: for an invalid ID or an unknown command word.
    """
    clientId = None
    if words and words[0] not in COMMANDS:
        clientId, words = words[0], words[1:]
        if not NAME_PATTERN.fullmatch(clientId):
            raise usage.UsageError(
                f"invalid client ID {clientId!r}: use letters, digits, '_' and '-'"
            )
    if not words:
        return clientId, None
    if words[0] not in COMMANDS:
        expected = ", ".join(sorted(COMMANDS))
        raise usage.UsageError(f"unknown command {words[0]!r}: expected one of {expected}")
    command = " ".join(words)
    if "\n" in command or "\r" in command:
        raise usage.UsageError("a command must be a single line")
    return clientId, command


def formatRequest(clientId: str | None, command: str) -> str:
    """
    Return the request line for C{command} (without its newline):
    C{ID@COMMAND}, or the bare command for an anonymous client.

    @raise ValueError: if C{command} spans lines, which would desynchronise
        the one-response-per-line protocol.
    """
    if "\n" in command or "\r" in command:
        raise ValueError("a command must be a single line")
    return command if clientId is None else f"{clientId}@{command}"


def parseRedirect(response: str) -> Redirect | None:
    """
    Return where a C{REDIRECT} response points, or L{None} for any other
    response.

    @raise ClientError: for a malformed C{REDIRECT}, which must not be
        mistaken for an answer.
    """
    words = response.split(" ")
    if words[0] != "REDIRECT":
        return None
    try:
        leader, host, port = words[1:]
        if not (leader and host):
            raise ValueError("empty leader or host")
        return Redirect(leader, host, parsePort(port))
    except ValueError:
        raise ClientError(f"malformed redirect {response!r}") from None


def isSuccess(response: str) -> bool:
    """
    Whether C{response} means the request worked: C{OK}, C{OK ...} or
    C{NOT_FOUND} (the lookup worked; the key is absent).
    """
    return response in ("OK", "NOT_FOUND") or response.startswith("OK ")


def formatResponse(command: str, response: str) -> str:
    """
    Return C{response} as shown at the interactive prompt: the JSON of a
    C{show} or C{status} answer indented, anything else unchanged.

    One-shot mode prints responses raw, so scripts get one parseable line.
    """
    words = command.split(None, 1)
    if not (words and words[0] in JSON_COMMANDS and response.startswith("OK ")):
        return response
    try:
        document = json.loads(response[3:])
    except ValueError:
        return response
    return "OK " + json.dumps(document, indent=2, ensure_ascii=False)


class LineConnection:
    """
    One TCP connection to a node, carrying UTF-8 request lines and reading
    exactly one response line for each.
    """

    #: The longest response line accepted, so a broken peer cannot exhaust memory.
    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self._socket = sock
        self._reader = sock.makefile("rb")

    @classmethod
    def open(cls, host: str, port: int, timeout: float) -> LineConnection:
        """
        Connect to C{host}:C{port}.  C{timeout} bounds the connect and every
        later send and receive, so a silent node cannot hang the client.

        @raise OSError: if the connection fails.
        """
        return cls(socket.create_connection((host, port), timeout=timeout))

    def request(self, line: str) -> str:
        """
        Send C{line} and return the response line without its line ending.

        @raise OSError: if the socket fails or times out, or (as
            L{ConnectionError}) the node hangs up or sends an overlong line.
            The connection is unusable afterwards.
        """
        self._socket.sendall(line.encode("utf-8") + b"\n")
        response = self._reader.readline(self.MAX_LENGTH + 1)
        if len(response) > self.MAX_LENGTH:
            raise ConnectionError("response line too long")
        if not response.endswith(b"\n"):
            raise ConnectionError("connection closed by the node")
        return response.decode("utf-8", "replace").rstrip("\r\n")

    def close(self) -> None:
        """Close the connection."""
        self._reader.close()
        self._socket.close()


class Client:
    """
    Sends requests to a txraft cluster as one client, following redirects.

    The connection stays open between requests; after a redirect the client
    keeps talking to the node it was sent to, so a session settles on the
    leader.  A failed connection is dropped and reopened by the next request;
    failed requests are never retried, because a C{set} or C{delete} may
    already have been applied.
    """

    #: How many redirects one request may follow before the client gives up
    #: (a cluster that is electing may point around in a circle for a while).
    MAX_REDIRECTS = 5

    def __init__(
        self,
        host: str,
        port: int,
        clientId: str | None = None,
        timeout: float = 5.0,
        stderr: TextIO | None = None,
    ) -> None:
        #: The node requests go to; a redirect changes it.
        self.host = host
        self.port = port
        #: The name put before C{@} in each request, or L{None} for anonymous.
        self.clientId = clientId
        self.timeout = timeout
        self._stderr = stderr
        self._connection: LineConnection | None = None

    def connect(self) -> None:
        """
        Open the connection unless it is open, so that an unreachable node is
        reported before the first request.

        @raise ClientError: if the node cannot be reached.
        """
        if self._connection is None:
            try:
                self._connection = LineConnection.open(self.host, self.port, self.timeout)
            except OSError as e:
                raise ClientError(self._describe(e)) from e

    def request(self, command: str) -> str:
        """
        Send C{command} and return the response line, following up to
        L{MAX_REDIRECTS} redirects.

        @raise ClientError: if no node answered, or the redirects ran out.
        """
        line = formatRequest(self.clientId, command)
        redirects = 0
        while True:
            response = self._send(line)
            redirect = parseRedirect(response)
            if redirect is None:
                return response
            if redirects == self.MAX_REDIRECTS:
                raise ClientError(f"gave up after {redirects} redirects; last: {response}")
            redirects += 1
            self._follow(redirect)

    def close(self) -> None:
        """Close the connection, if open; the next request reopens it."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _send(self, line: str) -> str:
        self.connect()
        assert self._connection is not None
        try:
            return self._connection.request(line)
        except OSError as e:
            self.close()
            raise ClientError(self._describe(e)) from e

    def _follow(self, redirect: Redirect) -> None:
        where = f"{redirect.host}:{redirect.port}"
        print(f"[*] redirected to {redirect.leader} at {where}", file=self._stderr or sys.stderr)
        self.close()
        self.host, self.port = redirect.host, redirect.port

    def _describe(self, error: OSError) -> str:
        where = f"{self.host}:{self.port}"
        if isinstance(error, TimeoutError):
            return f"no answer from {where} within {self.timeout:g}s"
        return f"connection to {where} failed: {error.strerror or error}"


class Options(usage.Options):
    """The command line of C{txraft-client}."""

    synopsis = "Usage: txraft-client [--host HOST] [--timeout SECONDS] PORT [ID] [COMMAND ...]"
    longdesc = (
        "Send COMMAND (get KEY, set KEY VALUE, delete KEY, show, status) to the txraft "
        "node at HOST:PORT and print the response, or read commands at a prompt when no "
        "COMMAND is given.  ID, if given, names the client in each request."
    )
    optParameters = [
        ["host", None, "127.0.0.1", "The node to contact first."],
        ["timeout", None, 5.0, "Seconds to wait to connect and for each answer.", float],
    ]

    def parseArgs(self, port: str, *words: str) -> None:
        """Store PORT as C{port}, then the optional C{id} and C{command}."""
        try:
            self["port"] = parsePort(port)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["id"], self["command"] = splitCommandLine(words)

    def postOptions(self) -> None:
        """Reject a timeout that is not positive."""
        if not self["timeout"] > 0:
            raise usage.UsageError("--timeout must be a positive number of seconds")


def runOnce(client: Client, command: str, stdout: TextIO, stderr: TextIO) -> int:
    """
    Send one command and print its raw response; return 0 for C{OK} or
    C{NOT_FOUND} and 1 for anything else or a failure.
    """
    try:
        response = client.request(command)
    except ClientError as e:
        print(f"[!] {e}", file=stderr)
        return 1
    print(response, file=stdout)
    return 0 if isSuccess(response) else 1


def interact(
    client: Client, readLine: Callable[[str], str], stdout: TextIO, stderr: TextIO
) -> int:
    """
    Read commands with C{readLine} until end of input, C{quit} or C{exit},
    printing each response for a person.  Return 1 if the first node cannot
    be reached; later failures are reported and the session goes on.
    """
    print(f"[*] Connecting to {client.host} port {client.port}", file=stdout)
    try:
        client.connect()
    except ClientError as e:
        print(f"[!] {e}", file=stderr)
        return 1
    for command in _readCommands(readLine, stdout):
        try:
            response = client.request(command)
        except ClientError as e:
            print(f"[!] {e}", file=stderr)
            continue
        print(formatResponse(command, response), file=stdout)
    return 0


def _readCommands(readLine: Callable[[str], str], stdout: TextIO) -> Iterator[str]:
    while True:
        try:
            command = readLine(PROMPT).strip()
        except EOFError:
            print(file=stdout)  # end the prompt's line
            return
        if command in QUIT_WORDS:
            return
        if command:
            yield command


def main(
    argv: Sequence[str] | None = None,
    *,
    readLine: Callable[[str], str] = input,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run C{txraft-client} with C{argv} (default C{sys.argv[1:]}) and return its
    exit status: 0 for success, 1 for a failed request or unreachable node,
    2 for a usage error, 130 when interrupted.  The keyword arguments replace
    the console, for tests.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    options = Options()
    try:
        options.parseOptions(None if argv is None else list(argv))
    except usage.UsageError as e:
        print(f"txraft-client: {e}\n(see txraft-client --help)", file=stderr)
        return 2
    client = Client(options["host"], options["port"], options["id"], options["timeout"], stderr)
    try:
        if options["command"] is None:
            return interact(client, readLine, stdout, stderr)
        return runOnce(client, options["command"], stdout, stderr)
    except KeyboardInterrupt:
        print(file=stderr)
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
