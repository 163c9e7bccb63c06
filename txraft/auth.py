"""
Proving the cluster key: the handshake that opens a keyed connection, and
the per-line MACs that bind every later line to it.

Pure: no sockets, no reactor, no clock.  The protocols in
L{txraft.protocol} (listening side) and L{txraft.peers} (connecting side)
feed lines in and write the lines these objects return.

The handshake, on a fresh connection, initiator I (the side that connected)
to responder R, each line answered in order as every other line is::

    I -> R   I@AUTH1 NONCE_I
    R -> I   R@AUTH1 NONCE_R MAC(K, "responder" | I | R | NONCE_I | NONCE_R)
    I -> R   I@AUTH2 MAC(K, "initiator" | I | R | NONCE_I | NONCE_R)
    R -> I   R@AUTH2 OK

Each side checks the other's MAC over both fresh nonces, so both prove they
hold K (and the key never crosses the wire); a recorded handshake replayed
on a new connection meets a new nonce and fails; the role labels stop a
side's own MAC being reflected back to it; the names stop a handshake
meant for one node being relayed to another.

Afterwards every line, both ways, travels as C{MAC SP LINE}, the MAC keyed
with a session key for its direction (derived from K and the handshake)
over the line and its sequence number on the connection.  An injected,
altered, dropped, reordered or replayed line fails to verify.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable

from txraft.messages import NAME_PATTERN

#: The fewest bytes a cluster key may have.
MIN_KEY_BYTES = 32

#: The random bytes C{txraft-keygen} writes (hex-encoded).
KEY_BYTES = 32

#: Random bytes in each side's handshake nonce.
NONCE_BYTES = 32

#: The words of the handshake's two lines.
AUTH1 = "AUTH1"
AUTH2 = "AUTH2"
AUTH_WORDS = frozenset({AUTH1, AUTH2})

#: What the responder answers a good C{AUTH2} with.
CONFIRMED = "OK"

_VERSION = b"txraft-auth-v1"
_MAC_HEX = hashlib.sha256().digest_size * 2


class AuthError(ValueError):
    """A handshake or MAC that does not verify; C{str()} is a one-line reason."""


class KeyFileError(ValueError):
    """A cluster key file that cannot be used; C{str()} is a one-line reason naming it."""


def readKeyFile(path: str) -> bytes:
    """
    Return the cluster key in file C{path}: its bytes, surrounding
    whitespace stripped.

    @raise KeyFileError: if the file is missing, unreadable, readable (or
        writable) by group or others, empty, or shorter than
        L{MIN_KEY_BYTES}.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read(1024 * 1024)
    except OSError as e:
        raise KeyFileError(f"--cluster-key {path}: cannot read it: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"--cluster-key {path}: not a regular file")
    if mode & 0o077:
        raise KeyFileError(
            f"--cluster-key {path}: accessible by group or others "
            f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}"
        )
    key = data.strip()
    if not key:
        raise KeyFileError(f"--cluster-key {path}: the file is empty")
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(
            f"--cluster-key {path}: the key is {len(key)} bytes, "
            f"at least {MIN_KEY_BYTES} are needed (make one with txraft-keygen)"
        )
    return key


def writeKeyFile(path: str) -> None:
    """
    Write a new random key to C{path}, readable by its owner only.

    @raise FileExistsError: if C{path} exists: a cluster's key is never
        overwritten by accident.
    @raise OSError: if it cannot be written.
    """
    text = secrets.token_hex(KEY_BYTES) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _mac(key: bytes, *parts: bytes) -> bytes:
    return hmac.new(key, b"\n".join(parts), hashlib.sha256).digest()


#: A source of nonces: called with a count, returns that many random bytes.
RandomBytes = Callable[[int], bytes]


def _newNonce(randomBytes: RandomBytes) -> str:
    nonce = randomBytes(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"a nonce needs {NONCE_BYTES} random bytes, got {len(nonce)}")
    return nonce.hex()


def _checkNonce(text: str) -> bytes:
    if len(text) != NONCE_BYTES * 2:
        raise AuthError("malformed nonce")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise AuthError("malformed nonce") from None


def _checkMac(text: str) -> bytes:
    if len(text) != _MAC_HEX:
        raise AuthError("malformed MAC")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise AuthError("malformed MAC") from None


class _Transcript:
    """Both names and both nonces: what every handshake MAC and session key covers."""

    def __init__(self, initiator: str, responder: str, nonceI: bytes, nonceR: bytes) -> None:
        self.parts = (
            initiator.encode("utf-8"),
            responder.encode("utf-8"),
            nonceI,
            nonceR,
        )

    def mac(self, key: bytes, label: bytes) -> bytes:
        return _mac(key, _VERSION, label, *self.parts)

    def session(self, key: bytes, initiatorSide: bool) -> Session:
        toResponder = self.mac(key, b"session initiator-to-responder")
        toInitiator = self.mac(key, b"session responder-to-initiator")
        if initiatorSide:
            return Session(self.parts[1].decode("utf-8"), toResponder, toInitiator)
        return Session(self.parts[0].decode("utf-8"), toInitiator, toResponder)


class Session:
    """
    An authenticated connection's MACs: L{seal} each line sent and L{open}
    each line received, in order.

    Each direction's HMAC is keyed once, here; a line's MAC continues a
    copy of it, which saves hashing the key's two pads for every line.

    @ivar peerName: the name the other side authenticated as.
    """

    def __init__(self, peerName: str, sendKey: bytes, receiveKey: bytes) -> None:
        self.peerName = peerName
        self._sendMac = hmac.new(sendKey, digestmod=hashlib.sha256)
        self._receiveMac = hmac.new(receiveKey, digestmod=hashlib.sha256)
        self._sent = 0
        self._received = 0

    @staticmethod
    def _lineMac(keyed: hmac.HMAC, sequence: int, line: bytes) -> bytes:
        """The hex MAC of C{line} at C{sequence}: HMAC(key, 8-byte sequence | LF | line)."""
        mac = keyed.copy()
        mac.update(sequence.to_bytes(8, "big") + b"\n")
        mac.update(line)
        return mac.hexdigest().encode("ascii")

    def seal(self, line: bytes) -> bytes:
        """Return C{line} as sent: C{MAC SP LINE}, the MAC over it and its sequence number."""
        mac = self._lineMac(self._sendMac, self._sent, line)
        self._sent += 1
        return mac + b" " + line

    def open(self, sealed: bytes) -> bytes:
        """
        Return the line inside C{sealed}, if its MAC is the next one expected.

        @raise AuthError: if it is not; the connection cannot be trusted
            any more and must be dropped.
        """
        mac, sep, line = sealed.partition(b" ")
        if not sep or len(mac) != _MAC_HEX:
            raise AuthError("line without a valid MAC")
        if not hmac.compare_digest(mac, self._lineMac(self._receiveMac, self._received, line)):
            raise AuthError("line MAC does not verify")
        self._received += 1
        return line


class Initiator:
    """
    The connecting side of a handshake.  Send L{hello}; feed the
    responder's C{AUTH1} answer to L{answerChallenge} and send what it
    returns; feed the C{AUTH2} answer to L{confirm}, which returns the
    L{Session}.
    """

    def __init__(
        self,
        key: bytes,
        localName: str,
        peerName: str | None = None,
        randomBytes: RandomBytes = secrets.token_bytes,
    ) -> None:
        """
        @param peerName: the responder's expected name, or L{None} to take
            whichever name it proves (a client does not know node names).
        @param randomBytes: returns that many random bytes, for the nonce;
            only a simulation replaying a seed passes anything but
            C{secrets.token_bytes}.
        """
        self._key = key
        self._localName = localName
        self._peerName = peerName
        self._nonce = _newNonce(randomBytes)
        self._transcript: _Transcript | None = None

    def hello(self) -> str:
        """The first handshake line."""
        return f"{self._localName}@{AUTH1} {self._nonce}"

    def answerChallenge(self, line: str) -> str:
        """
        Check the responder's C{R@AUTH1 NONCE MAC} line and return the
        C{AUTH2} line proving this side's key.

        @raise AuthError: if the line is malformed or proves another key.
        """
        sender, words = _split(line, AUTH1, 2)
        if self._peerName is not None and sender != self._peerName:
            raise AuthError(f"answer from {sender!r}, expected {self._peerName!r}")
        transcript = _Transcript(
            self._localName, sender, bytes.fromhex(self._nonce), _checkNonce(words[0])
        )
        if not hmac.compare_digest(_checkMac(words[1]), transcript.mac(self._key, b"responder")):
            raise AuthError(f"{sender} does not hold this cluster's key")
        self._transcript = transcript
        return f"{self._localName}@{AUTH2} {transcript.mac(self._key, b'initiator').hex()}"

    def confirm(self, line: str) -> Session:
        """
        Check the responder's C{R@AUTH2 OK} line and return the session.

        @raise AuthError: if it is anything else.
        """
        if self._transcript is None:
            raise AuthError("handshake confirmed before it was answered")
        sender, words = _split(line, AUTH2, 1)
        if sender != self._transcript.parts[1].decode("utf-8") or words != [CONFIRMED]:
            raise AuthError(f"handshake not confirmed: {line[:80]!r}")
        return self._transcript.session(self._key, initiatorSide=True)


class Responder:
    """
    The listening side of a handshake: L{challenge} answers the initiator's
    C{AUTH1} line, L{verify} checks its C{AUTH2} line and returns the
    L{Session} (the caller answers C{R@AUTH2 OK}).
    """

    def __init__(
        self, key: bytes, localName: str, randomBytes: RandomBytes = secrets.token_bytes
    ) -> None:
        """
        @param randomBytes: returns that many random bytes, for the nonce
            (as for L{Initiator}).
        """
        self._key = key
        self._localName = localName
        self._nonce = _newNonce(randomBytes)
        self._transcript: _Transcript | None = None

    def challenge(self, line: str) -> str:
        """
        Answer the initiator's C{I@AUTH1 NONCE} line with this side's
        nonce and its proof of the key.

        @raise AuthError: if the line is malformed or comes twice.
        """
        if self._transcript is not None:
            raise AuthError("handshake already begun")
        sender, words = _split(line, AUTH1, 1)
        self._transcript = _Transcript(
            sender, self._localName, _checkNonce(words[0]), bytes.fromhex(self._nonce)
        )
        proof = self._transcript.mac(self._key, b"responder").hex()
        return f"{self._localName}@{AUTH1} {self._nonce} {proof}"

    def verify(self, line: str) -> Session:
        """
        Check the initiator's C{I@AUTH2 MAC} line.

        @raise AuthError: unless it proves the key for this handshake.
        """
        if self._transcript is None:
            raise AuthError(f"{AUTH2} before {AUTH1}")
        sender, words = _split(line, AUTH2, 1)
        mac = _checkMac(words[0])
        if sender != self._transcript.parts[0].decode("utf-8") or not hmac.compare_digest(
            mac, self._transcript.mac(self._key, b"initiator")
        ):
            raise AuthError("authentication failed")
        return self._transcript.session(self._key, initiatorSide=False)

    def confirmation(self) -> str:
        """The line that tells the initiator its proof was accepted."""
        return f"{self._localName}@{AUTH2} {CONFIRMED}"


def authWord(line: str) -> str | None:
    """The handshake word (C{AUTH1}, C{AUTH2}) of a C{NAME@WORD ...} line, else L{None}."""
    sender, sep, rest = line.partition("@")
    word = rest.split(" ", 1)[0]
    if sep and NAME_PATTERN.fullmatch(sender) and word in AUTH_WORDS:
        return word
    return None


def _split(line: str, word: str, count: int) -> tuple[str, list[str]]:
    """Split C{SENDER@WORD ARG...} with exactly C{count} arguments."""
    sender, sep, rest = line.partition("@")
    words = rest.split(" ")
    if not (sep and NAME_PATTERN.fullmatch(sender) and words[0] == word):
        raise AuthError(f"expected {word}, got {line[:80]!r}")
    if len(words) != count + 1:
        raise AuthError(f"malformed {word} line")
    return sender, words[1:]
