"""
Tests for L{txraft.replies}: the answer a request waits for.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from txraft.replies import AlreadyAnsweredError, Reply


class ReplyTests(SynchronousTestCase):
    """A L{Reply} hands its answer over once."""

    def test_givenOnce(self) -> None:
        """The answer goes to C{respond} in the call to L{Reply.give}."""
        given: list[str] = []
        reply = Reply(given.append)
        self.assertFalse(reply.called)
        reply.give("OK")
        self.assertEqual(given, ["OK"])
        self.assertTrue(reply.called)

    def test_answeredTwice(self) -> None:
        """A second answer is a bug: it raises, and the first stands."""
        given: list[str] = []
        reply = Reply(given.append)
        reply.give("OK")
        error = self.assertRaises(AlreadyAnsweredError, reply.give, "OK again")
        self.assertEqual(str(error), "answered twice, now with 'OK again'")
        self.assertEqual(given, ["OK"])
