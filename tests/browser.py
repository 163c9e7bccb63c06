"""
A headless Chromium driven through its DevTools protocol, for the tests
of the web view: the page runs its own JavaScript in a real browser, and
the test reads what it rendered.

Chromium is started with C{--remote-debugging-pipe}: it reads commands
from file descriptor 3 and writes answers on 4, each a JSON object ended
by a NUL byte, so no WebSocket library is needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

from txraft.testing.localcluster import dieWithParent

#: Where Debian's chromium package puts the browser (.ci/run installs it).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
)


class BrowserError(Exception):
    """Chromium answered a command with an error, or died."""


class Chromium:
    """One headless Chromium process, and one page in it."""

    def __init__(self, executable: str, width: int = 1100, height: int = 560) -> None:
        """Start the browser with an empty profile of its own and open a blank page."""
        self._profile = tempfile.mkdtemp(prefix="txraft-chromium-")
        toBrowser, self._commands = os.pipe()
        self._answers, fromBrowser = os.pipe()

        def onFds3And4() -> None:
            # The browser dies with the test runner, however it ends.
            dieWithParent()
            # The browser reads fd 3 and writes fd 4; either may be taken by
            # one of our pipe ends, so move both out of the way first.
            reading = fcntl.fcntl(toBrowser, fcntl.F_DUPFD, 10)
            writing = fcntl.fcntl(fromBrowser, fcntl.F_DUPFD, 10)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        argv = [executable, *FLAGS, f"--user-data-dir={self._profile}"]
        self._process = subprocess.Popen(
            [*argv, f"--window-size={width},{height}"],
            pass_fds=(3, 4),
            preexec_fn=onFds3And4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(toBrowser)
        os.close(fromBrowser)
        self._buffer = b""
        self._nextId = 0
        target = self.command("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.command("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]

    def command(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result, skipping events."""
        self._nextId += 1
        message: dict[str, Any] = {"id": self._nextId, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._nextId:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer["result"]

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            data = os.read(self._answers, 65536)
            if not data:
                raise BrowserError("chromium closed its DevTools pipe")
            self._buffer += data
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def navigate(self, url: str) -> None:
        """Load C{url} in the page."""
        self.command("Page.navigate", self._session, url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.command(
            "Runtime.evaluate", self._session, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def waitFor(self, expression: str, timeout: float, check: Callable[[Any], bool] = bool) -> Any:
        """
        Poll C{expression} until C{check} accepts its value; return it.

        @raise BrowserError: if C{timeout} seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression} still {value!r} after {timeout}s")
            time.sleep(0.2)

    def screenshot(self, path: str) -> None:
        """Save the page as a PNG."""
        data = self.command("Page.captureScreenshot", self._session, format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        """Stop the browser and remove its profile."""
        try:
            self.command("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._commands)
        os.close(self._answers)
        shutil.rmtree(self._profile, ignore_errors=True)
