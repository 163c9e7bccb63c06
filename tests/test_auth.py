"""
Tests for L{txraft.auth}: cluster key files, the key handshake, and the
per-line MACs of an authenticated connection, without sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import stat

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import temporaryDirectory
from txraft.auth import (
    MIN_KEY_BYTES,
    NONCE_BYTES,
    AuthError,
    Initiator,
    KeyFileError,
    Responder,
    Session,
    authWord,
    readKeyFile,
    writeKeyFile,
)
from txraft.ratelimit import LogLimiter

KEY = b"k" * MIN_KEY_BYTES
OTHER_KEY = b"o" * MIN_KEY_BYTES


def handshake(
    initiatorKey: bytes = KEY, responderKey: bytes = KEY
) -> tuple[Session, Session, list[str]]:
    """
    Run a handshake between C{s1} (initiator) and C{s2} (responder); return
    both sessions and the four lines exchanged.
    """
    initiator = Initiator(initiatorKey, "s1", "s2")
    responder = Responder(responderKey, "s2")
    hello = initiator.hello()
    challenge = responder.challenge(hello)
    proof = initiator.answerChallenge(challenge)
    theirs = responder.verify(proof)
    confirmation = responder.confirmation()
    ours = initiator.confirm(confirmation)
    return ours, theirs, [hello, challenge, proof, confirmation]


class KeyFileTests(SynchronousTestCase):
    """
    Tests for L{readKeyFile} and L{writeKeyFile}: a node starts only with a
    key file that is present, long enough and private, as ssh insists of
    private keys.
    """

    def setUp(self) -> None:
        """A temporary directory for key files."""
        self.directory = temporaryDirectory(self)
        self.path = os.path.join(self.directory, "cluster.key")

    def writeKey(self, data: bytes, mode: int = 0o600) -> None:
        """Write C{data} to the key file with C{mode}."""
        with open(self.path, "wb") as f:
            f.write(data)
        os.chmod(self.path, mode)

    def assertKeyFileError(self, *fragments: str) -> None:
        """Reading the key file fails with one line naming it and every fragment."""
        error = self.assertRaises(KeyFileError, readKeyFile, self.path)
        self.assertNotIn("\n", str(error))
        for fragment in (self.path, *fragments):
            self.assertIn(fragment, str(error))

    def test_writtenKeyIsRandomAndPrivate(self) -> None:
        """
        A written key file has mode 0600, holds at least 32 random bytes
        (hex-encoded), reads back, and two keys differ.
        """
        writeKeyFile(self.path)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        key = readKeyFile(self.path)
        self.assertGreaterEqual(len(bytes.fromhex(key.decode("ascii"))), 32)
        other = os.path.join(self.directory, "other.key")
        writeKeyFile(other)
        self.assertNotEqual(readKeyFile(other), key)

    def test_writeNeverOverwrites(self) -> None:
        """An existing file is left as it was: a cluster's key is never replaced by accident."""
        self.writeKey(b"x" * 40)
        self.assertRaises(FileExistsError, writeKeyFile, self.path)
        self.assertEqual(readKeyFile(self.path), b"x" * 40)

    def test_writePrivateDespiteUmask(self) -> None:
        """The key file is 0600 even under a permissive umask."""
        old = os.umask(0)
        self.addCleanup(os.umask, old)
        writeKeyFile(self.path)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_missing(self) -> None:
        """A missing key file is refused, naming it."""
        self.assertKeyFileError("cannot read it")

    def test_empty(self) -> None:
        """An empty (or blank) key file is refused."""
        self.writeKey(b" \n")
        self.assertKeyFileError("empty")

    def test_tooShort(self) -> None:
        """A key shorter than 32 bytes is refused."""
        self.writeKey(b"x" * (MIN_KEY_BYTES - 1))
        self.assertKeyFileError("31 bytes", "at least 32")

    def test_groupReadable(self) -> None:
        """A key file readable by its group is refused."""
        self.writeKey(KEY, 0o640)
        self.assertKeyFileError("group or others", "chmod 600")

    def test_otherReadable(self) -> None:
        """A key file readable by others is refused."""
        self.writeKey(KEY, 0o604)
        self.assertKeyFileError("group or others")

    def test_directory(self) -> None:
        """A directory is not a key file."""
        os.mkdir(self.path, 0o700)
        self.assertRaises(KeyFileError, readKeyFile, self.path)

    def test_whitespaceStripped(self) -> None:
        """The trailing newline an editor adds is not part of the key."""
        self.writeKey(KEY + b"\n")
        self.assertEqual(readKeyFile(self.path), KEY)


class HandshakeTests(SynchronousTestCase):
    """
    Tests for L{Initiator} and L{Responder}: both sides prove the key on
    fresh nonces, and nothing recorded or reflected passes.
    """

    def test_sameKey(self) -> None:
        """
        Two sides with the same key complete the handshake, each learning
        who the other is, and the key itself is in none of the lines.
        """
        ours, theirs, lines = handshake()
        self.assertEqual((ours.peerName, theirs.peerName), ("s2", "s1"))
        for line in lines:
            self.assertNotIn(KEY.decode(), line)
            self.assertNotIn(KEY.hex(), line)

    def test_noncesFromTheGivenSource(self) -> None:
        """
        Nonces come from C{secrets} unless a source is given: two handshakes
        then differ; two handshakes given one seeded source's same bytes
        (as a simulation replaying a seed does) are the same, line for line.
        """
        self.assertNotEqual(Initiator(KEY, "s1").hello(), Initiator(KEY, "s1").hello())
        lines = []
        for _ in range(2):
            rng = random.Random(7)
            initiator = Initiator(KEY, "s1", "s2", randomBytes=rng.randbytes)
            responder = Responder(KEY, "s2", randomBytes=rng.randbytes)
            hello = initiator.hello()
            lines.append((hello, responder.challenge(hello)))
        self.assertEqual(lines[0], lines[1])
        self.assertEqual(len(lines[0][0].split(" ")[1]), 2 * NONCE_BYTES)

    def test_shortNonceSourceRefused(self) -> None:
        """A nonce source that gives fewer bytes than asked for is refused, not trusted."""
        self.assertRaises(ValueError, Initiator, KEY, "s1", randomBytes=lambda n: b"x")
        self.assertRaises(ValueError, Responder, KEY, "s1", randomBytes=lambda n: b"x")

    def test_responderWithWrongKey(self) -> None:
        """An initiator refuses a responder that does not hold its key."""
        initiator = Initiator(KEY, "s1", "s2")
        challenge = Responder(OTHER_KEY, "s2").challenge(initiator.hello())
        self.assertRaises(AuthError, initiator.answerChallenge, challenge)

    def test_initiatorWithWrongKey(self) -> None:
        """
        A responder refuses the proof of an initiator that holds another
        key, made over the very nonces of this handshake.
        """
        initiator = Initiator(OTHER_KEY, "s1", "s2")
        responder = Responder(KEY, "s2")
        hello = initiator.hello()
        responder.challenge(hello)
        sameNonces = Responder(OTHER_KEY, "s2")
        sameNonces._nonce = responder._nonce
        proof = initiator.answerChallenge(sameNonces.challenge(hello))
        self.assertRaises(AuthError, responder.verify, proof)

    def test_replayedProofFails(self) -> None:
        """
        A recorded initiator's lines, replayed to a responder on a new
        connection, fail: the responder's nonce is new.
        """
        _, _, (hello, _, proof, _) = handshake()
        responder = Responder(KEY, "s2")
        responder.challenge(hello)
        self.assertRaises(AuthError, responder.verify, proof)

    def test_replayedChallengeFails(self) -> None:
        """
        A recorded responder's answer, replayed to an initiator on a new
        connection, fails: the initiator's nonce is new.
        """
        _, _, (_, challenge, _, _) = handshake()
        initiator = Initiator(KEY, "s1", "s2")
        initiator.hello()
        self.assertRaises(AuthError, initiator.answerChallenge, challenge)

    def test_reflectedProofFails(self) -> None:
        """
        The responder's own proof sent back to it as the initiator's fails:
        the two proofs carry different role labels.
        """
        responder = Responder(KEY, "s2")
        challenge = responder.challenge(Initiator(KEY, "s1", "s2").hello())
        reflected = "s1@AUTH2 " + challenge.split(" ")[2]
        self.assertRaises(AuthError, responder.verify, reflected)

    def test_relayedToAnotherNodeFails(self) -> None:
        """
        An initiator connecting to C{s2} refuses an answer from C{s3}, even
        one holding the key: a connection cannot be redirected.
        """
        initiator = Initiator(KEY, "s1", "s2")
        challenge = Responder(KEY, "s3").challenge(initiator.hello())
        error = self.assertRaises(AuthError, initiator.answerChallenge, challenge)
        self.assertIn("expected 's2'", str(error))

    def test_otherSenderCannotFinish(self) -> None:
        """A proof sent under another name than the hello's fails."""
        initiator = Initiator(KEY, "s1", "s2")
        responder = Responder(KEY, "s2")
        proof = initiator.answerChallenge(responder.challenge(initiator.hello()))
        self.assertRaises(AuthError, responder.verify, proof.replace("s1@", "s3@", 1))

    def test_outOfOrder(self) -> None:
        """C{AUTH2} before C{AUTH1}, or a second C{AUTH1}, is refused."""
        responder = Responder(KEY, "s2")
        self.assertRaises(AuthError, responder.verify, "s1@AUTH2 " + "00" * 32)
        hello = Initiator(KEY, "s1").hello()
        responder.challenge(hello)
        self.assertRaises(AuthError, responder.challenge, hello)
        self.assertRaises(AuthError, Initiator(KEY, "s1").confirm, "s2@AUTH2 OK")

    def test_malformed(self) -> None:
        """Malformed handshake lines raise L{AuthError}, never anything else."""
        for line in [
            "s1@AUTH1",
            "s1@AUTH1 zz",
            "s1@AUTH1 " + "zz" * 32,
            "s1@AUTH1 " + "00" * 32 + " extra",
            "AUTH1 " + "00" * 32,
            "s 1@AUTH1 " + "00" * 32,
            "s1@AUTH2 " + "00" * 32,
        ]:
            self.assertRaises(AuthError, Responder(KEY, "s2").challenge, line)
        initiator = Initiator(KEY, "s1")
        for line in ["s2@AUTH1", "s2@AUTH1 00 11", "s2@AUTH1 " + "00" * 32 + " xyz", "x"]:
            self.assertRaises(AuthError, initiator.answerChallenge, line)

    def test_confirmationChecked(self) -> None:
        """Only C{R@AUTH2 OK} from the responder completes the handshake."""
        initiator = Initiator(KEY, "s1", "s2")
        initiator.answerChallenge(Responder(KEY, "s2").challenge(initiator.hello()))
        for line in ["s2@AUTH2 NO", "s3@AUTH2 OK", "ERROR authentication failed"]:
            self.assertRaises(AuthError, initiator.confirm, line)

    def test_authWord(self) -> None:
        """L{authWord} spots handshake lines and nothing else."""
        self.assertEqual(authWord("s1@AUTH1 abc"), "AUTH1")
        self.assertEqual(authWord("s1@AUTH2 abc"), "AUTH2")
        self.assertIsNone(authWord("AUTH1 abc"))
        self.assertIsNone(authWord("s1@AppendEntries {}"))
        self.assertIsNone(authWord("set AUTH1 x"))


class SessionTests(SynchronousTestCase):
    """
    Tests for L{Session}: after the handshake every line is bound to the
    connection, its direction and its place in the stream.
    """

    def setUp(self) -> None:
        """A completed handshake: C{ours} is s1's side, C{theirs} s2's."""
        self.ours, self.theirs, _ = handshake()

    def test_roundTrip(self) -> None:
        """Sealed lines open, in order, both ways."""
        for n in range(3):
            line = f's1@RequestVote {{"term":{n}}}'.encode()
            self.assertEqual(self.theirs.open(self.ours.seal(line)), line)
            self.assertEqual(self.ours.open(self.theirs.seal(b"answer")), b"answer")

    def test_macIsTheDocumentedOne(self) -> None:
        """
        A sealed line's MAC is HMAC-SHA256 under the direction's session key
        of the 8-byte big-endian sequence number, a newline and the line, in
        lowercase hex: what nodes of earlier versions send and check, so
        keying each direction once changed nothing on the wire.
        """
        session = Session("s2", b"send" * 8, b"receive" * 4)
        for sequence, line in enumerate([b"first", b"second"]):
            expected = hmac.new(
                b"send" * 8, sequence.to_bytes(8, "big") + b"\n" + line, hashlib.sha256
            )
            self.assertEqual(session.seal(line), expected.hexdigest().encode() + b" " + line)

    def test_macOfAnotherSpellingFails(self) -> None:
        """The right MAC in uppercase hex, or cut short, does not open a line."""
        sealed = self.ours.seal(b"line")
        mac, _, line = sealed.partition(b" ")
        self.assertRaises(AuthError, self.theirs.open, mac.upper() + b" " + line)
        self.assertRaises(AuthError, self.theirs.open, mac[:-2] + b" " + line)
        self.assertEqual(self.theirs.open(sealed), b"line")

    def test_altered(self) -> None:
        """A line changed in transit fails."""
        sealed = self.ours.seal(b's1@RequestVote {"term":2}')
        self.assertRaises(AuthError, self.theirs.open, sealed.replace(b"2", b"9"))

    def test_injected(self) -> None:
        """A line with no MAC, or a made-up one, fails."""
        self.assertRaises(AuthError, self.theirs.open, b's1@RequestVote {"term":2}')
        self.assertRaises(AuthError, self.theirs.open, b"00" * 32 + b" s1@RequestVote {}")
        self.assertRaises(AuthError, self.theirs.open, b"")

    def test_replayed(self) -> None:
        """A line sent twice fails the second time: its sequence number has passed."""
        sealed = self.ours.seal(b"line")
        self.theirs.open(sealed)
        self.assertRaises(AuthError, self.theirs.open, sealed)

    def test_reordered(self) -> None:
        """Lines delivered out of order fail (a dropped line shows the same way)."""
        self.ours.seal(b"first")
        second = self.ours.seal(b"second")
        self.assertRaises(AuthError, self.theirs.open, second)

    def test_reflected(self) -> None:
        """A line sent one way cannot be played back the other way."""
        sealed = self.ours.seal(b"line")
        self.assertRaises(AuthError, self.ours.open, sealed)

    def test_otherConnection(self) -> None:
        """A line sealed on one connection fails on another between the same nodes."""
        other, _, _ = handshake()
        self.assertRaises(AuthError, self.theirs.open, other.seal(b"line"))


class LogLimiterTests(SynchronousTestCase):
    """
    Tests for L{LogLimiter}: a flood of bad lines cannot flood the log.
    """

    def test_burstThenQuiet(self) -> None:
        """
        Only C{burst} events a window are let through; the first one let
        through in the next window reports how many were left out.
        """
        clock = Clock()
        limiter = LogLimiter(clock, burst=2, interval=10)
        results = [limiter.allow() for _ in range(1000)]
        self.assertEqual(results[:2], [0, 0])
        self.assertEqual(set(results[2:]), {None})
        clock.advance(10)
        self.assertEqual(limiter.allow(), 998)
        self.assertEqual(limiter.allow(), 0)
        self.assertIsNone(limiter.allow())
