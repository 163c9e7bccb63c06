"""
The web view in a real browser: Debian's headless Chromium, driven over
its DevTools protocol (L{tests.browser}), shows a real three-node cluster
of C{twistd -n txraft --http PORT} processes, and follows it live.

Chromium must be installed (C{.ci/run} installs it).  Where it is not, the
tests are skipped with a loud reason, except under CI (C{CI} set), where
a missing browser is a failure: the page must be tested there.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from tests.browser import CHROMIUM, Chromium
from tests.test_process import PATIENCE, ProcessTestCase, showingNodeOutput
from txraft.testing.localcluster import LocalCluster

#: The rows the page drew: [name, role, whether highlighted as the leader].
ROWS = """
Array.from(document.querySelectorAll("#members tbody tr")).map(
    row => [row.dataset.name, row.dataset.role, row.classList.contains("leader")])
"""


#: How many members the page shows as healthy.
HEALTHY = 'document.querySelectorAll("#members .badge.healthy").length'

#: The heights of the commits-per-second chart's bars.
BARS = """
Array.from(document.querySelectorAll("#chart rect")).map(bar => Number(bar.getAttribute("height")))
"""


class WebViewTests(ProcessTestCase):
    """The live page of a real cluster, in a real browser."""

    def setUp(self) -> None:
        """Find Chromium, or skip (fail under CI) saying it is missing."""
        super().setUp()
        if CHROMIUM is None:
            reason = "chromium is not installed (apt-get install -y chromium): page untested"
            if os.environ.get("CI"):
                self.fail(reason)
            self.skipTest(reason)

    def httpCluster(self) -> LocalCluster:
        """A three-node cluster serving HTTP, removed when the test ends."""
        directory = tempfile.mkdtemp(prefix="txraft-test-")
        self.addCleanup(shutil.rmtree, directory, True)
        cluster = LocalCluster(directory=directory, http=True)
        self.addCleanup(cluster.stopAll)
        self.clusters.append(cluster)
        return cluster

    def browser(self) -> Chromium:
        """A headless Chromium, closed when the test ends."""
        assert CHROMIUM is not None
        browser = Chromium(CHROMIUM)
        self.addCleanup(browser.close)
        return browser

    @showingNodeOutput
    def test_showsClusterAndFollowsNewLeader(self) -> None:
        """
        A follower's page shows the three members, healthy, with the leader
        highlighted, and charts the commits of writes; after the leader is
        killed, the same page, never reloaded, shows the new leader
        highlighted and the old one unreachable.
        """
        cluster = self.httpCluster()
        cluster.startAll()
        leader = cluster.waitForLeader(PATIENCE)
        watcher = cluster.followers(leader)[0]
        browser = self.browser()
        browser.navigate(cluster.httpURL(watcher))
        rows = browser.waitFor(ROWS, PATIENCE, lambda rows: any(r[2] for r in rows or []))
        self.assertEqual(sorted(r[0] for r in rows), ["s1", "s2", "s3"])
        self.assertEqual([r[0] for r in rows if r[2]], [leader])
        self.assertEqual(sorted(r[1] for r in rows), ["follower", "follower", "leader"])
        browser.waitFor(HEALTHY, PATIENCE, lambda count: count == 3)
        client = cluster.client()
        self.addCleanup(client.close)
        for i in range(50):
            self.assertEqual(client.request(f"set k{i} {i}"), "OK")
        browser.waitFor(BARS, PATIENCE, lambda heights: any(h > 0 for h in heights or []))
        browser.evaluate("window.notReloaded = true")

        cluster.kill(leader)
        newLeader = cluster.waitForLeader(PATIENCE)

        def showsNewLeader(rows: list[list[object]] | None) -> bool:
            return [r[0] for r in rows or [] if r[2]] == [newLeader]

        rows = browser.waitFor(ROWS, PATIENCE, showsNewLeader)
        self.assertIn([leader, "unreachable", False], rows)
        self.assertIs(browser.evaluate("window.notReloaded"), True)
        summary = browser.evaluate('document.getElementById("summary").textContent')
        self.assertEqual(summary, f"Leader: {newLeader}, seen from {watcher}")
