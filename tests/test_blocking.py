"""
Tests for L{txraft.blocking}: the blocking client over real sockets, against
the scripted fake nodes of L{tests.test_client} on 127.0.0.1.
"""

from __future__ import annotations

import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.test_client import FakeNode, closedPort
from txraft.blocking import BlockingClient, connect
from txraft.clientlib import ClientClosedError, ClientLibError, RequestTimeoutError


class BlockingClientTests(SynchronousTestCase):
    """L{connect} gives a client whose calls wait for their answers."""

    def test_requests(self) -> None:
        """
        Each call returns its answer line; a write is numbered, a read is
        not; the reactor thread ends when the client is closed.
        """
        node = FakeNode(self, lambda line: "OK" if "@" in line else "OK 1")
        with connect([("127.0.0.1", node.port)], clientId="c7") as client:
            self.assertEqual(client.set("a", "1"), "OK")
            self.assertEqual(client.get("a"), "OK 1")
            self.assertEqual(client.delete("a"), "OK")
            self.assertEqual(client.show(), "OK 1")
            self.assertEqual(client.discover(), [("127.0.0.1", node.port)])
        self.assertEqual(
            node.received,
            [b"c7#1@set a 1\n", b"get a\n", b"c7#2@delete a\n", b"show\n", b"status\n"],
        )
        reactors = [t for t in threading.enumerate() if t.name == "txraft client reactor"]
        self.assertEqual(reactors, [])

    def test_pipeline(self) -> None:
        """C{pipeline} sends every command and returns their answers, in order."""
        node = FakeNode(self, lambda line: f"OK {line}")
        with connect([("127.0.0.1", node.port)], clientId="c9") as client:
            self.assertEqual(
                client.pipeline(["set a 1", "get a", "show"]),
                ["OK c9#1@set a 1", "OK get a", "OK show"],
            )

    def test_redirectAndRetry(self) -> None:
        """
        The client follows a redirect to a node it did not know, and sends
        a write again with the same SEQ after the node hangs up on it.
        """
        answers = iter([None, "OK"])
        leader = FakeNode(self, lambda line: next(answers))
        follower = FakeNode(self, lambda line: leader.redirect())
        with connect([("127.0.0.1", follower.port)], clientId="c8") as client:
            self.assertEqual(client.set("a", "1"), "OK")
        self.assertEqual(leader.received, [b"c8#1@set a 1\n"] * 2)

    def test_errors(self) -> None:
        """
        The library's exceptions come through as they are: an unreachable
        cluster, a deadline, a closed client.
        """
        client = BlockingClient([("127.0.0.1", closedPort())], timeout=0.3)
        self.addCleanup(client.close)
        error = self.assertRaises(ClientLibError, client.connect)
        self.assertIn("refused", str(error).lower())
        self.assertRaises(RequestTimeoutError, client.get, "a")
        client.close()
        self.assertRaises(ClientClosedError, client.get, "a")
