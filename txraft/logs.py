"""
Log observers for C{twistd --logger}: C{twistd -n --logger
txraft.logs.jsonToStdout txraft ...} writes one JSON object per event,
which log shippers read without parsing text.  (C{twist} does the same
with C{--log-format=json}.)
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def jsonToStdout() -> ILogObserver:
    """An observer writing each event as one line of JSON to standard output."""
    return jsonFileLogObserver(sys.stdout)
