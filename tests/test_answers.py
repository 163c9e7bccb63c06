"""
Tests for L{txraft.answers}: every answer a node gives is formatted one way
and read back the same way by every client.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txraft import answers
from txraft.answers import (
    AnswerError,
    Redirect,
    isSuccess,
    isUnavailable,
    okValue,
    parsePort,
    parseRedirect,
)


class FormatTests(SynchronousTestCase):
    """The functions that build answer lines give the documented forms."""

    def test_ok(self) -> None:
        """C{ok()} is the bare C{OK}; with a value it is C{OK VALUE}, spaces kept."""
        self.assertEqual(answers.ok(), "OK")
        self.assertEqual(answers.ok("two words"), "OK two words")
        self.assertEqual(answers.ok(""), "OK ")

    def test_error(self) -> None:
        """A bad request is answered C{ERROR REASON}."""
        self.assertEqual(answers.error("unknown command 'x'"), "ERROR unknown command 'x'")

    def test_unavailable(self) -> None:
        """Every named reason has the form C{UNAVAILABLE REASON}."""
        for reason in [
            answers.NO_LEADER,
            answers.LEADERSHIP_LOST,
            answers.OVERWRITTEN,
            answers.COMMIT_TIMEOUT,
            answers.DISK_FAILED,
            answers.SHUTTING_DOWN,
            answers.NOT_SERVING,
        ]:
            with self.subTest(reason=reason):
                self.assertTrue(reason.startswith("UNAVAILABLE "))

    def test_redirect(self) -> None:
        """A redirect names the leader, its host and its port."""
        self.assertEqual(answers.redirect("s2", "127.0.0.1", 10001), "REDIRECT s2 127.0.0.1 10001")

    def test_redirectRoundTrip(self) -> None:
        """What L{answers.redirect} formats, L{parseRedirect} reads back unchanged."""
        self.assertEqual(
            parseRedirect(answers.redirect("s-2_b", "node.example", 65535)),
            Redirect("s-2_b", "node.example", 65535),
        )


class ParseRedirectTests(SynchronousTestCase):
    """L{parseRedirect} reads C{REDIRECT LEADER HOST PORT} and nothing else."""

    def test_valid(self) -> None:
        """A well-formed redirect gives the leader, host and port as a L{Redirect}."""
        redirect = parseRedirect("REDIRECT s1 127.0.0.1 10000")
        self.assertEqual(redirect, Redirect("s1", "127.0.0.1", 10000))
        self.assertEqual(
            (redirect.leader, redirect.host, redirect.port), ("s1", "127.0.0.1", 10000)
        )

    def test_otherAnswers(self) -> None:
        """Any answer that does not start with the word C{REDIRECT} is no redirect."""
        for answer in [
            "OK",
            "OK REDIRECT s1 127.0.0.1 10000",
            "NOT_FOUND",
            answers.NO_LEADER,
            "ERROR bad request",
            "REDIRECTED s1 127.0.0.1 10000",
            "",
        ]:
            with self.subTest(answer=answer):
                self.assertIsNone(parseRedirect(answer))

    def test_malformed(self) -> None:
        """
        A line that starts with C{REDIRECT} but lacks a usable leader, host
        or port raises L{AnswerError}: it must not pass for an answer.
        """
        for answer in [
            "REDIRECT",
            "REDIRECT ",
            "REDIRECT s1 127.0.0.1",
            "REDIRECT s1 127.0.0.1 port",
            "REDIRECT s1 127.0.0.1 0",
            "REDIRECT s1 127.0.0.1 65536",
            "REDIRECT s1 127.0.0.1 10000 extra",
            "REDIRECT s1  10000",
            "REDIRECT  127.0.0.1 10000",
        ]:
            with self.subTest(answer=answer):
                error = self.assertRaises(AnswerError, parseRedirect, answer)
                self.assertEqual(str(error), f"malformed redirect {answer!r}")

    def test_answerErrorIsValueError(self) -> None:
        """L{AnswerError} is a L{ValueError}, so callers that catch bad input catch it."""
        self.assertTrue(issubclass(AnswerError, ValueError))


class ParsePortTests(SynchronousTestCase):
    """L{parsePort} accepts exactly the decimal numbers from 1 to 65535."""

    def test_bounds(self) -> None:
        """The lowest and highest ports and one between are accepted."""
        self.assertEqual([parsePort(text) for text in ["1", "10000", "65535"]], [1, 10000, 65535])

    def test_outOfRange(self) -> None:
        """0 and 65536 are just outside the range and are rejected."""
        for text in ["0", "65536", "99999999999999999999"]:
            with self.subTest(text=text):
                error = self.assertRaises(ValueError, parsePort, text)
                self.assertEqual(
                    str(error), f"invalid port {text!r}: expected a number from 1 to 65535"
                )

    def test_notDecimal(self) -> None:
        """Signs, spaces, fractions, words and non-ASCII digits are not ports."""
        for text in ["", "+80", "-1", " 80", "80 ", "10.5", "http", "\uff11\uff12", "\u0661"]:
            with self.subTest(text=text):
                self.assertRaises(ValueError, parsePort, text)


class ClassifyTests(SynchronousTestCase):
    """The predicates that say what an answer means for the command it answers."""

    def test_isSuccess(self) -> None:
        """C{OK}, C{OK VALUE} and C{NOT_FOUND} mean the command ran."""
        for answer in ["OK", "OK 5", 'OK {"a": "1"}', "NOT_FOUND"]:
            with self.subTest(answer=answer):
                self.assertTrue(isSuccess(answer))

    def test_isNotSuccess(self) -> None:
        """Errors, unavailability, redirects and unknown lines do not."""
        for answer in [
            "ERROR bad command",
            answers.NO_LEADER,
            "REDIRECT s1 127.0.0.1 10000",
            "OKAY",
            "NOT_FOUND x",
            "",
        ]:
            with self.subTest(answer=answer):
                self.assertFalse(isSuccess(answer))

    def test_okValue(self) -> None:
        """The value of C{OK VALUE}, spaces and all; L{None} for any other answer."""
        self.assertEqual(okValue("OK 5"), "5")
        self.assertEqual(okValue("OK two  words "), "two  words ")
        self.assertEqual(okValue("OK "), "")
        for answer in ["OK", "NOT_FOUND", "OKAY 5", "ERROR OK 5", ""]:
            with self.subTest(answer=answer):
                self.assertIsNone(okValue(answer))

    def test_isUnavailable(self) -> None:
        """Every C{UNAVAILABLE} answer is unavailable; nothing else is."""
        self.assertTrue(isUnavailable(answers.COMMIT_TIMEOUT))
        self.assertTrue(isUnavailable("UNAVAILABLE anything"))
        for answer in ["OK", "OK UNAVAILABLE", "ERROR UNAVAILABLE", "NOT_FOUND"]:
            with self.subTest(answer=answer):
                self.assertFalse(isUnavailable(answer))

    def test_notExecuted(self) -> None:
        """
        Exactly the C{UNAVAILABLE} answers of a command that never ran (no
        leader took it; another leader's entry replaced it; a read that was
        not confirmed; a leader handing over, or too new to change the
        membership, refused it) are in L{answers.NOT_EXECUTED}.
        """
        self.assertEqual(
            answers.NOT_EXECUTED,
            {
                answers.NO_LEADER,
                answers.OVERWRITTEN,
                answers.READ_LEADERSHIP_LOST,
                answers.READ_TIMEOUT,
                answers.TRANSFERRING,
                answers.LEADER_NOT_READY,
            },
        )

    def test_mayHaveExecuted(self) -> None:
        """
        Success, and the C{UNAVAILABLE} answers after which the command may
        still commit, are not in L{answers.NOT_EXECUTED}: sending the
        command again could run it twice.
        """
        for answer in [
            "OK",
            "OK 5",
            "NOT_FOUND",
            answers.LEADERSHIP_LOST,
            answers.COMMIT_TIMEOUT,
            answers.DISK_FAILED,
            answers.SHUTTING_DOWN,
            answers.NOT_SERVING,
        ]:
            with self.subTest(answer=answer):
                self.assertNotIn(answer, answers.NOT_EXECUTED)


class KindTests(SynchronousTestCase):
    """L{answers.kind} sorts every answer into a few words, for metric labels."""

    def test_everyAnswer(self) -> None:
        """Each form of answer has its kind; anything unknown counts as an error."""
        cases = {
            answers.OK: "ok",
            answers.ok("5"): "ok",
            answers.NOT_FOUND: "not_found",
            answers.redirect("s2", "127.0.0.1", 10001): "redirect",
            answers.NO_LEADER: "unavailable",
            answers.COMMIT_TIMEOUT: "unavailable",
            answers.error("bad"): "error",
            "OKAY": "error",
        }
        self.assertEqual({answer: answers.kind(answer) for answer in cases}, cases)
        self.assertTrue(set(cases.values()) <= set(answers.KINDS))
