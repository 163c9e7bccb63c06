"""
The C{txraft-client} command: send key-value requests to a txraft node.

    txraft-client [--host HOST] [--timeout SECONDS] [--id ID] [--cluster-key FILE]
                  [--tls [--tls-ca FILE]] PORT [COMMAND ...]

With a COMMAND the client sends it once, prints the response line and exits
with a status that scripts can test; without one it reads commands at a
C{>> } prompt, with line editing and history.  Either way it talks to the
cluster through the client library (L{txraft.clientlib}): it follows
C{REDIRECT} responses to the leader, so any node of the cluster can be
named on the command line, and numbers its writes, so a write it sends again
after a lost connection runs once.  C{status --all} asks every member of the
cluster and prints one row for each.

The operators' commands (L{txraft.admin}) need C{--cluster-key} on a keyed
cluster.  C{members} prints a table; C{backup FILE} asks the leader for a
snapshot and writes it to FILE (see L{backup}), which C{txraft-restore}
(L{txraft.restore}) turns into a new cluster's data.  Without C{--timeout}
they wait longer than data commands (L{OPERATOR_TIMEOUTS}).

L{LineConnection}, a blocking socket, is the other way in, for test
harnesses, benchmarks and C{status --all}: the protocol is strictly one
response line per request line, in order.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TextIO

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python import usage

from txraft import answers, cli
from txraft.admin import ADMIN_WORDS, CATCH_UP_SECONDS
from txraft.auth import AuthError, Initiator, KeyFileError, Session, readKeyFile
from txraft.blocking import BlockingClient
from txraft.clientlib import ClientLibError, SessionsUnsupportedError
from txraft.messages import NAME_PATTERN
from txraft.protocol import NOT_AUTHORIZED
from txraft.snapshots import decodeSnapshot
from txraft.storage import StorageError, fsyncDirectory
from txraft.survey import Status, parseStatus, summarize

#: The command words: those a node answers, and C{help}, answered here.
COMMANDS = frozenset({"get", "set", "delete", "show", "status", "help", *ADMIN_WORDS})

#: What C{help} prints.
HELP = """\
get KEY                      the value of KEY (NOT_FOUND if it has none)
set KEY VALUE                set KEY to VALUE, which is the rest of the line
delete KEY                   remove KEY
show                         every key and value, as JSON
status                       the node's Raft status, as JSON
status --all                 one row for each member of the cluster
help                         this list
quit, exit                   end the session (as does Ctrl-D)
operators' commands (on a keyed cluster only with --cluster-key):
members                      the cluster's members: one row each, voter or learner
add NAME HOST PORT           add NAME as a learner, then make it a voter once it caught up
add-learner NAME HOST PORT   add NAME as a learner, which never votes
remove NAME                  remove NAME from the cluster (the leader too)
transfer-leader [NAME]       hand leadership to NAME, or to the most up-to-date voter
backup FILE                  save the leader's state (keys, sessions, members) to FILE"""

#: Seconds to wait for an answer, retries included, unless C{--timeout} says.
DEFAULT_TIMEOUT = 5.0

#: Without C{--timeout}, the operators' commands wait this long: C{add}
#: for the new server to catch up (at most L{CATCH_UP_SECONDS}), C{backup}
#: for the leader to serialize its whole map, the others for a commit or a
#: new leader (a node gives up on those after 5 s and says so).
OPERATOR_TIMEOUTS: Mapping[str, float] = {
    **dict.fromkeys(ADMIN_WORDS, 15.0),
    "add": CATCH_UP_SECONDS + 30.0,
    "backup": 120.0,
}

#: Writes the leader's backup to a file; the node's command is the bare word.
BACKUP = "backup"

#: The operators' commands that change the cluster: an C{UNAVAILABLE} answer
#: that may mean they ran is shown, not sent again (L{ClusterClient.request}).
CHANGES = ADMIN_WORDS - {"members", BACKUP}

#: The longest answer line this client takes: a backup is one line, the
#: base64 of the whole state (so at most about 3 GiB of snapshot).
MAX_ANSWER = 4 * 1024 * 1024 * 1024

#: Asks every member for its status instead of one node.
STATUS_ALL = "status --all"

#: Where the interactive client keeps its history.
HISTORY_FILE = os.path.join("~", ".txraft_client_history")

#: The commands whose C{OK} answer carries JSON, indented at the prompt.
JSON_COMMANDS = frozenset({"show", "status"})

#: The name a client that proves the cluster key gives when it has no ID.
ADMIN_NAME = "admin"

#: Words that end an interactive session (as does end of input).
QUIT_WORDS = frozenset({"quit", "exit"})

PROMPT = ">> "


class ClientError(Exception):
    """
    A request got no answer: the node was unreachable, timed out, hung up,
    answered nonsense or kept redirecting.  C{str()} is a one-line reason.
    """


def commandLine(words: Sequence[str]) -> str | None:
    """
    Join the arguments after PORT into one command line (single spaces), or
    L{None} if there are none.

    @raise usage.UsageError: for an unknown command word, or a command
        that spans lines.
    """
    if not words:
        return None
    if words[0] not in COMMANDS:
        expected = ", ".join(sorted(COMMANDS))
        raise usage.UsageError(f"unknown command {words[0]!r}: expected one of {expected}")
    if words[0] == BACKUP and len(words) == 1:
        raise usage.UsageError("backup takes FILE, where to write the snapshot")
    command = " ".join(words)
    if "\n" in command or "\r" in command:
        raise usage.UsageError("a command must be a single line")
    return command


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


def formatResponse(command: str, response: str) -> str:
    """
    Return C{response} as shown at the interactive prompt: the JSON of a
    C{show} or C{status} answer indented, anything else unchanged.

    One-shot mode prints responses raw, so scripts get one parseable line.
    """
    words = command.split(None, 1)
    value = answers.okValue(response)
    if not (words and words[0] in JSON_COMMANDS and value is not None):
        return response
    try:
        document = json.loads(value)
    except ValueError:
        return response
    return answers.ok(json.dumps(document, indent=2, ensure_ascii=False))


class LineConnection:
    """
    A blocking TCP connection to one node, carrying UTF-8 request lines and
    reading one response line for each: one request at a time, or many sent
    at once (pipelined) and their responses read in order.

    The command-line client, the test harnesses and the benchmarks all talk
    to nodes through this one class.
    """

    #: The longest response line accepted, so a broken node cannot exhaust memory.
    MAX_LENGTH = 16 * 1024 * 1024

    def __init__(
        self, host: str, port: int, timeout: float = 5.0, tls: ssl.SSLContext | None = None
    ) -> None:
        """
        Connect to C{host}:C{port}.  C{timeout} bounds the connect and every
        later send and receive, so a silent node cannot hang the caller.

        @param tls: speak TLS, checking the node's certificate for C{host}
            as this context says, or L{None} for plain TCP.
        @raise OSError: if the node cannot be reached (L{ssl.SSLError} if
            its certificate does not verify).
        """
        self._socket = socket.create_connection((host, port), timeout=timeout)
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                self._socket = tls.wrap_socket(self._socket, server_hostname=host)
            except OSError:
                self._socket.close()
                raise
        self._buffer = bytearray()
        self._session: Session | None = None

    def authenticate(self, clusterKey: bytes, name: str) -> None:
        """
        Prove the cluster key to the node, and check that it holds it too,
        before any request: the node then takes administrative commands on
        this connection, and every later line both ways carries a MAC.

        @raise AuthError: if the node does not prove the key, or refuses ours.
        @raise OSError: as L{readLine} does.
        """
        initiator = Initiator(clusterKey, name)
        proof = initiator.answerChallenge(self.request(initiator.hello()))
        self._session = initiator.confirm(self.request(proof))

    def setTimeout(self, timeout: float) -> None:
        """Bound every later send and receive by C{timeout} seconds instead."""
        self._socket.settimeout(timeout)

    def send(self, data: bytes) -> None:
        """Send raw bytes, which may hold any number of lines (or none)."""
        self._socket.sendall(data)

    def sendLines(self, lines: Iterable[str]) -> None:
        """Send text lines in one write, without waiting for answers."""
        self.send(b"".join(self._seal(line.encode("utf-8")) + b"\n" for line in lines))

    def _seal(self, line: bytes) -> bytes:
        return line if self._session is None else self._session.seal(line)

    def hasLine(self) -> bool:
        """Whether a whole response line has arrived, so L{readLine} returns at once."""
        return b"\n" in self._buffer

    def readLine(self) -> str:
        """
        Return the next response line without its line ending, decoded (bad
        UTF-8 replaced).

        @raise OSError: if the socket fails, or L{TimeoutError} if no line
            arrives within the timeout, or L{ConnectionError} if the node
            hangs up first, sends a line longer than L{MAX_LENGTH}, or one
            whose MAC fails on an authenticated connection.  The connection
            is unusable afterwards.
        """
        end = self._buffer.find(b"\n")
        while end < 0:
            if len(self._buffer) > self.MAX_LENGTH:
                raise ConnectionError("response line too long")
            data = self._socket.recv(65536)
            if not data:
                raise ConnectionError("connection closed by the node")
            scanned = len(self._buffer)
            self._buffer += data
            end = self._buffer.find(b"\n", scanned)
        line = bytes(self._buffer[:end]).removesuffix(b"\r")
        del self._buffer[: end + 1]
        if self._session is not None:
            try:
                line = self._session.open(line)
            except AuthError as e:
                raise ConnectionError(f"answer failed its MAC: {e}") from None
        return line.decode("utf-8", "replace")

    def request(self, line: str) -> str:
        """
        Send one request line and return its response line.

        @raise OSError: as L{readLine} does.
        """
        self.sendLines([line])
        return self.readLine()

    def pipeline(self, lines: Sequence[str]) -> list[str]:
        """Send every line at once, then read and return one response for each."""
        self.sendLines(lines)
        return [self.readLine() for _ in lines]

    def isClosedByPeer(self, timeout: float = 2.0) -> bool:
        """
        Whether the node closes the connection (end of file) within
        C{timeout} seconds, discarding anything it still sends.
        """
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._socket.settimeout(remaining)
            try:
                data = self._socket.recv(65536)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
        return False

    def close(self) -> None:
        """Close the connection."""
        self._socket.close()

    def __enter__(self) -> LineConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client:
    """
    Sends requests to a txraft cluster as one client, through the client
    library (L{txraft.blocking}, L{txraft.clientlib}).

    It starts from one node and follows redirects, so a session settles on
    the leader.  Writes are numbered under a session ID of its own, so a
    write sent again after a lost connection or an unknown outcome runs
    once; reads are sent again freely.  A request that gets no answer
    within C{timeout} seconds, retries included, fails.
    """

    def __init__(
        self,
        host: str,
        port: int,
        clientId: str | None = None,
        timeout: float = 5.0,
        stderr: TextIO | None = None,
        clusterKey: bytes | None = None,
        tls: ssl.SSLContext | None = None,
        tlsOptions: Callable[[str], IOpenSSLClientConnectionCreator] | None = None,
        timeouts: Mapping[str, float] | None = None,
    ) -> None:
        """
        @param clientId: this client's name: the key handshake's, and the
            start of its session ID (L{sessionId}); L{None} for anonymous.
        @param timeout: seconds to wait for an answer, retries included.
        @param timeouts: seconds to wait instead, by command word, for slow
            commands (L{OPERATOR_TIMEOUTS}): the node may stay silent that
            long before the client asks another (and so starts it over).
        @param clusterKey: the cluster's key, to prove on every connection
            (as administrative commands need), or L{None}.
        @param tls: the TLS context that C{status --all} asks members with,
            or L{None} for plain TCP.
        @param tlsOptions: how the library speaks TLS to a node's host, or
            L{None} for plain TCP.
        """
        self._first = (host, port)
        #: The members' addresses, once a node named them (L{discover}).
        self._known: list[tuple[str, int]] = []
        self.clientId = clientId
        self.timeout = timeout
        self.timeouts = dict(timeouts or {})
        self._stderr = stderr
        #: The cluster key proved on every connection, if any.
        self.clusterKey = clusterKey
        #: The TLS context every connection (to any member) is made with.
        self.tls = tls
        self._tlsOptions = tlsOptions
        self._exactlyOnce = True
        self._library: BlockingClient | None = None

    @property
    def host(self) -> str:
        """The host of the node requests go to; a redirect changes it."""
        return self._address[0]

    @property
    def port(self) -> int:
        """The port of the node requests go to."""
        return self._address[1]

    @property
    def _address(self) -> tuple[str, int]:
        return self._first if self._library is None else self._library.client.address

    def connect(self) -> None:
        """
        Connect unless connected, so that an unreachable node is reported
        before the first request.

        @raise ClientError: if the node cannot be reached.
        """
        try:
            self._connected().connect()
        except ClientLibError as e:
            raise ClientError(str(e)) from e

    def request(self, command: str) -> str:
        """
        Send C{command} and return the answer line: C{OK ...},
        C{NOT_FOUND} or C{ERROR ...}; or C{UNAVAILABLE ...} for an
        operator's change that may have run (L{CHANGES}), which is not sent
        again.

        A cluster from before exactly-once sessions refuses numbered
        writes; then this client warns, and sends writes unnumbered from
        then on (a retried one may then run twice).

        @raise ClientError: if no node answered in time.
        """
        word = command.split(None, 1)[0] if command.strip() else ""
        try:
            return self._connected().request(command, self.timeouts.get(word), word in CHANGES)
        except SessionsUnsupportedError as e:
            print(f"[!] {e}: writes sent unnumbered from now on", file=self._stream)
            self.close()
            self._exactlyOnce = False
            return self.request(command)
        except ClientLibError as e:
            raise ClientError(str(e)) from e

    def discover(self) -> list[tuple[str, int]]:
        """
        Learn every member's address from the node (its C{status}), so that
        the client goes on at another when that one goes down; return
        every address known.

        @raise ClientError: if no node answered in time.
        """
        try:
            known = self._connected().discover()
        except ClientLibError as e:
            raise ClientError(str(e)) from e
        self._known = known
        return known

    def close(self) -> None:
        """Hang up, if connected; the next request connects again."""
        if self._library is not None:
            self._first = self._library.client.address
            self._library.close()
            self._library = None

    @property
    def sessionId(self) -> str:
        """
        The ID numbered writes carry: the client's name and a fresh random
        part (a one-shot command starts a new session each time, and a new
        session starts at SEQ 1).
        """
        return self._connected().client.clientId

    @property
    def _stream(self) -> TextIO:
        return self._stderr or sys.stderr

    def _connected(self) -> BlockingClient:
        if self._library is None:
            name = self.clientId or ADMIN_NAME
            self._library = BlockingClient(
                [self._first, *(a for a in self._known if a != self._first)],
                clientId=f"{name}-{secrets.token_hex(4)}" if self.clientId else None,
                authName=name,
                timeout=self.timeout,
                exactlyOnce=self._exactlyOnce,
                clusterKey=self.clusterKey,
                tls=self._tlsOptions,
                onRedirect=self._redirected,
                maxAnswerLength=MAX_ANSWER,
            )
        return self._library

    def _redirected(self, redirect: answers.Redirect) -> None:
        where = f"{redirect.host}:{redirect.port}"
        print(f"[*] redirected to {redirect.leader} at {where}", file=self._stream)


class Options(cli.Options):
    """The command line of C{txraft-client}."""

    program = "txraft-client"
    synopsis = (
        "Usage: txraft-client [--host HOST] [--timeout SECONDS] [--id ID] "
        "[--cluster-key FILE] [--tls [--tls-ca FILE]] PORT [COMMAND ...]"
    )
    longdesc = (
        "Send COMMAND (get KEY, set KEY VALUE, delete KEY, show, status, status --all, "
        "help; and the operators' members, add NAME HOST PORT, add-learner NAME HOST "
        "PORT, remove NAME, transfer-leader [NAME], backup FILE) to the txraft node at "
        "HOST:PORT and print the response, or read commands at a prompt when no COMMAND "
        "is given."
    )
    optFlags = [
        ["tls", None, "Connect with TLS, verifying the node's certificate."],
    ]
    optParameters = [
        ["host", None, "127.0.0.1", "The node to contact first."],
        [
            "timeout",
            None,
            None,
            f"Seconds to wait for each answer, retries included (default "
            f"{DEFAULT_TIMEOUT:g}; for add {OPERATOR_TIMEOUTS['add']:g}, for backup "
            f"{OPERATOR_TIMEOUTS['backup']:g}, for the other operators' commands "
            f"{OPERATOR_TIMEOUTS['remove']:g})",
            cli.number("timeout"),
        ],
        [
            "id",
            None,
            None,
            "Name this client (letters, digits, '_', '-'): writes carry ID-RANDOM#SEQ@.",
        ],
        [
            "cluster-key",
            None,
            None,
            "Prove the cluster's key (needed for administrative commands).",
        ],
        [
            "tls-ca",
            None,
            None,
            "With --tls: the CA certificate that signed the nodes' (default: the system's).",
        ],
    ]

    def parseArgs(self, port: str, *words: str) -> None:
        """Store PORT as C{port}, and the optional C{command}."""
        try:
            self["port"] = answers.parsePort(port)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        self["command"] = commandLine(words)

    def postOptions(self) -> None:
        """
        Reject a timeout that is not positive, an invalid ID, and a key or
        CA file that cannot be used.
        """
        if self["timeout"] is not None and not self["timeout"] > 0:
            raise usage.UsageError("--timeout must be a positive number of seconds")
        clientId = self["id"]
        if clientId is not None and not NAME_PATTERN.fullmatch(clientId):
            raise usage.UsageError(
                f"invalid client ID {clientId!r}: use letters, digits, '_' and '-'"
            )
        self.clusterKey = None
        if self["cluster-key"] is not None:
            try:
                self.clusterKey = readKeyFile(self["cluster-key"])
            except KeyFileError as e:
                raise usage.UsageError(str(e)) from None
        self.tls = None
        self.tlsOptions = None
        if self["tls-ca"] is not None and not self["tls"]:
            raise usage.UsageError("--tls-ca goes with --tls")
        if self["tls"]:
            try:
                self.tls = ssl.create_default_context(cafile=self["tls-ca"])
            except (OSError, ssl.SSLError) as e:
                raise usage.UsageError(f"--tls-ca {self['tls-ca']}: {e}") from None
            from txraft.tls import clientTLS  # loads OpenSSL: only with --tls

            self.tlsOptions = clientTLS(self["tls-ca"])


def runOnce(client: Client, command: str, stdout: TextIO, stderr: TextIO) -> int:
    """
    Carry out one command and print its raw response; return 0 for C{OK}
    or C{NOT_FOUND} and 1 for anything else or a failure.  C{help} and
    C{status --all} are answered by L{local}.
    """
    handled = local(client, command, stdout, stderr)
    if handled is not None:
        return handled
    try:
        client.connect()
        response = client.request(command)
    except ClientError as e:
        print(f"[!] {e}", file=stderr)
        return 1
    print(response, file=stdout)
    hintAtKey(client, response, stderr)
    return 0 if answers.isSuccess(response) else 1


def local(client: Client, command: str, stdout: TextIO, stderr: TextIO) -> int | None:
    """
    Carry out C{command} here if it is not a single request whose answer
    is printed as it came: C{help} prints L{HELP}, C{status --all} and
    C{members} tables, C{backup FILE} writes a file.  Return the exit
    status, or L{None} for a command to send.
    """
    if command == "help":
        print(HELP, file=stdout)
        return 0
    if " ".join(command.split()) == STATUS_ALL:
        return clusterStatus(client, stdout, stderr)
    word, _, rest = command.strip().partition(" ")
    if word == "members" and not rest.strip():
        return members(client, stdout, stderr)
    if word == BACKUP:
        if not rest.strip():
            print("[!] backup takes FILE, where to write the snapshot", file=stderr)
            return 1
        return backup(client, rest.strip(), stdout, stderr)
    return None


def _ask(client: Client, command: str, stderr: TextIO) -> str | None:
    """C{command}'s answer, or L{None} once a failure to get one is reported."""
    try:
        client.connect()
        answer = client.request(command)
    except ClientError as e:
        print(f"[!] {e}", file=stderr)
        return None
    hintAtKey(client, answer, stderr)
    return answer


def hintAtKey(client: Client, answer: str, stderr: TextIO) -> None:
    """Say what a keyed node's refusal of an operator's command wants, if it is that."""
    if answer == NOT_AUTHORIZED and client.clusterKey is None:
        print("[!] this cluster takes operators' commands only with --cluster-key", file=stderr)


#: The columns of C{members}.
MEMBER_HEADINGS = ("NAME", "HOST", "PORT", "KIND")


def members(client: Client, stdout: TextIO, stderr: TextIO) -> int:
    """
    Ask for the cluster's members and print one row for each, voter or
    learner; any answer but a membership is printed as it came.  Return
    0 for a membership, else 1.
    """
    answer = _ask(client, "members", stderr)
    if answer is None:
        return 1
    try:
        rows: list[list[str]] = []
        for member in json.loads(answers.okValue(answer) or "null"):
            kind = "voter" if member["voter"] else "learner"
            rows.append([str(member["name"]), str(member["host"]), str(member["port"]), kind])
    except (ValueError, TypeError, KeyError):
        print(answer, file=stdout)
        return 1
    print(alignRows([list(MEMBER_HEADINGS), *rows]), file=stdout)
    return 0


def backup(client: Client, path: str, stdout: TextIO, stderr: TextIO) -> int:
    """
    Ask the leader for a backup and write it to C{path} (L{writeFileAtomically}),
    once it checks as a snapshot file; say which index it holds.  Any
    answer but a backup is printed as it came.  Return 0 once it is
    written, else 1.
    """
    answer = _ask(client, BACKUP, stderr)
    if answer is None:
        return 1
    value = answers.okValue(answer)
    if value is None:
        print(answer, file=stdout)
        return 1
    try:
        contents = base64.b64decode(value, validate=True)
        snapshot = decodeSnapshot(contents, "the node's backup")
    except (binascii.Error, StorageError) as e:
        reason = str(e).removesuffix("; refusing to start")
        print(f"[!] the answer to backup is no snapshot: {reason}", file=stderr)
        return 1
    try:
        writeFileAtomically(path, contents)
    except OSError as e:
        print(f"[!] {path}: cannot write the backup: {e.strerror or e}", file=stderr)
        return 1
    print(
        f"backup of index {snapshot.index} (term {snapshot.term}, {len(contents)} bytes) "
        f"written to {path}",
        file=stdout,
    )
    return 0


def writeFileAtomically(path: str, data: bytes) -> None:
    """
    Write C{data} to C{path} so that a crash leaves the old file or the
    new one, never a part: a temporary file beside it, fsynced, renamed over
    it, the directory fsynced.  The file is its owner's only (mode 0600),
    since a backup holds all the data.

    @raise OSError: if it cannot be written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise
    fsyncDirectory(directory)


def clusterStatus(client: Client, stdout: TextIO, stderr: TextIO) -> int:
    """
    Ask the node for the cluster's members, then every member for its
    status, and print one row per member (reachable or not).  Return 0 if
    every member is healthy, else 1.
    """
    try:
        members = parseStatus(client.request("status")).get("members")
    except (ClientError, ValueError) as e:
        print(f"[!] {e}", file=stderr)
        return 1
    if not isinstance(members, dict):
        print("[!] this node's status names no members (an older txraft?)", file=stderr)
        return 1
    statuses: dict[str, Status | None] = {}
    now = time.monotonic()
    for name, address in members.items():
        statuses[name] = askStatus(address, client.timeout, client.tls)
    picture = summarize(members, statuses, {n: now for n, s in statuses.items() if s}, now)
    print(formatTable(picture), file=stdout)
    return 0 if all(row["healthy"] for row in picture["members"]) else 1


def askStatus(address: str, timeout: float, tls: ssl.SSLContext | None = None) -> Status | None:
    """
    The status of the node at C{HOST:PORT}, or L{None} if it gives none.
    C{status} needs no cluster key, even on a keyed node; on a TLS cluster
    the member is asked over TLS (C{tls}), as the first node was.
    """
    host, _, port = address.rpartition(":")
    try:
        with LineConnection(host, int(port), timeout, tls) as connection:
            return parseStatus(connection.request("status"))
    except (OSError, ValueError):
        return None


#: The columns of C{status --all}: heading, and the row field shown under it.
TABLE_COLUMNS = (
    ("NAME", "name"),
    ("ADDRESS", "address"),
    ("ROLE", "role"),
    ("TERM", "term"),
    ("LEADER", "isLeader"),
    ("COMMIT", "commitIndex"),
    ("APPLIED", "lastApplied"),
    ("LAG", "lag"),
    ("HEALTH", "health"),
)


def formatTable(picture: dict[str, object]) -> str:
    """The rows of L{summarize}'s C{picture} as an aligned text table."""
    lines = [[heading for heading, _ in TABLE_COLUMNS]]
    for row in picture["members"]:  # type: ignore[attr-defined]
        fields = dict(row)
        if not row["reachable"]:
            fields["role"] = "unreachable"
        fields["isLeader"] = (
            "*" if row["name"] == picture["leader"] and row.get("role") == "leader" else ""
        )
        fields["health"] = "healthy" if row["healthy"] else row["reason"]
        lines.append(
            ["-" if fields.get(key) is None else str(fields[key]) for _, key in TABLE_COLUMNS]
        )
    return alignRows(lines)


def alignRows(rows: Sequence[Sequence[str]]) -> str:
    """C{rows} of as many fields each as an aligned text table, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def interact(
    client: Client, readLine: Callable[[str], str], stdout: TextIO, stderr: TextIO
) -> int:
    """
    Read commands with C{readLine} until end of input, C{quit} or C{exit},
    printing each response for a person.  Return 1 if the first node cannot
    be reached; later failures are reported and the session goes on.  The
    first node names the cluster's members (L{Client.discover}), so that
    the session goes on at another node when that one goes down.
    """
    print(f"[*] Connecting to {client.host} port {client.port}", file=stdout)
    try:
        client.connect()
    except ClientError as e:
        print(f"[!] {e}", file=stderr)
        return 1
    try:
        known = client.discover()
    except ClientError as e:
        print(f"[!] the cluster's members are unknown: {e}", file=stderr)
        known = []
    if len(known) > 1:
        where = ", ".join(f"{host}:{port}" for host, port in known)
        print(f"[*] The cluster's nodes: {where}", file=stdout)
    for command in _readCommands(readLine, stdout):
        if local(client, command, stdout, stderr) is not None:
            continue
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


def enableLineEditing(historyPath: str) -> Callable[[], None]:
    """
    Give C{input()} line editing and the history kept in C{historyPath}
    (through C{readline}, where Python has it); return the function that
    saves the history there, for the end of the session.
    """
    try:
        import readline
    except ImportError:  # not on every platform; the prompt still works
        return lambda: None
    try:
        readline.read_history_file(historyPath)
    except OSError:
        pass  # no history yet
    readline.set_history_length(1000)

    def save() -> None:
        try:
            readline.write_history_file(historyPath)
        except OSError:
            pass  # a read-only home loses the history, not the session

    return save


def main(
    argv: Sequence[str] | None = None,
    *,
    readLine: Callable[[str], str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run C{txraft-client} with C{argv} (default C{sys.argv[1:]}) and return its
    exit status: 0 for success, 1 for a failed request or unreachable node,
    2 for a usage error, 130 when interrupted.  The keyword arguments replace
    the console, for tests; by default the prompt reads with C{input()},
    with line editing and history.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    options = Options()
    try:
        options.parseOptions(None if argv is None else list(argv))
    except usage.UsageError as e:
        print(f"txraft-client: {e}\n(see txraft-client --help)", file=stderr)
        return 2
    timeout, timeouts = options["timeout"], OPERATOR_TIMEOUTS
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    else:
        # The operators' commands wait no longer than said, but as patiently.
        timeouts = dict.fromkeys(ADMIN_WORDS, timeout)
    client = Client(
        options["host"],
        options["port"],
        options["id"],
        timeout,
        stderr,
        options.clusterKey,
        options.tls,
        options.tlsOptions,
        timeouts,
    )
    try:
        if options["command"] is None:
            if readLine is not None:
                return interact(client, readLine, stdout, stderr)
            saveHistory = enableLineEditing(os.path.expanduser(HISTORY_FILE))
            try:
                return interact(client, input, stdout, stderr)
            finally:
                saveHistory()
        return runOnce(client, options["command"], stdout, stderr)
    except KeyboardInterrupt:
        print(file=stderr)
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
