"""
Tests for L{txraft.logs}: the observer behind C{twistd --logger
txraft.logs.jsonToStdout}.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout

from twisted.logger import Logger, eventsFromJSONLogFile, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from txraft.logs import jsonToStdout


class JSONToStdoutTests(SynchronousTestCase):
    """C{jsonToStdout} writes events as JSON that Twisted reads back."""

    def test_roundTrip(self) -> None:
        """An event logged to it is one JSON record on stdout, with its fields."""
        stdout = io.StringIO()
        with redirect_stdout(stdout):
            observer = jsonToStdout()
        Logger(observer=observer).info("node {name} follows {leader}", name="s1", leader="s2")
        events = list(eventsFromJSONLogFile(io.StringIO(stdout.getvalue())))
        self.assertEqual([formatEvent(e) for e in events], ["node s1 follows s2"])
        self.assertEqual(events[0]["leader"], "s2")
