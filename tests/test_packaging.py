"""
The installed package: what C{pip install .} gives a user.

These tests run the interpreter that runs the tests, outside the source
tree, so they see the installed copy of txraft (C{make test} installs it
into C{.venv} first) and not the checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase


def runInstalled(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run C{argv} from an empty directory with no PYTHONPATH pointing at the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as empty:
        return subprocess.run(
            argv, cwd=empty, env=env, capture_output=True, text=True, timeout=60, check=False
        )


def installedScript(name: str) -> str:
    """The console script C{name} installed beside the test interpreter."""
    return os.path.join(os.path.dirname(sys.executable), name)


class InstalledPackageTests(SynchronousTestCase):
    """C{pip install .} installs the plugin and the commands."""

    def test_twistdListsTxraft(self) -> None:
        """
        The installed C{twistd --help} lists the txraft plugin: the plugin
        module landed in Twisted's C{twisted/plugins} and is found there.
        """
        result = runInstalled(installedScript("twistd"), "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"(?m)^\s+txraft\s+A Raft-replicated key-value store")

    def test_pluginOptions(self) -> None:
        """C{twistd txraft --help} shows the node's documented options."""
        result = runInstalled(installedScript("twistd"), "txraft", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in ("--name", "--port", "--config", "--data-dir", "--heartbeat"):
            self.assertIn(option, result.stdout)
        self.assertIn("--election-timeout", result.stdout)

    def test_consoleScripts(self) -> None:
        """The console scripts are installed and answer C{--help}."""
        for script in ("txraft-client", "txraft-cluster", "txraft-keygen", "txraft-restore"):
            result = runInstalled(installedScript(script), "--help")
            self.assertEqual(result.returncode, 0, f"{script}: {result.stderr}")
            self.assertIn("Usage", result.stdout + result.stderr)

    def test_versionEverywhere(self) -> None:
        """
        Every txraft command, the twistd plugin included, prints txraft's
        version from the installed package's metadata for C{--version}.
        """
        version = runInstalled(
            sys.executable,
            "-c",
            "from importlib.metadata import version; print(version('txraft'))",
        ).stdout.strip()
        for argv, program in [
            ([installedScript("txraft-client"), "--version"], "txraft-client"),
            ([installedScript("txraft-cluster"), "--version"], "txraft-cluster"),
            ([installedScript("txraft-keygen"), "--version"], "txraft-keygen"),
            ([installedScript("txraft-restore"), "--version"], "txraft-restore"),
            ([installedScript("twistd"), "txraft", "--version"], "txraft (twistd plugin)"),
        ]:
            with self.subTest(program=program):
                result = runInstalled(*argv)
                self.assertEqual((result.returncode, result.stdout), (0, f"{program} {version}\n"))

    def test_webPageInstalled(self) -> None:
        """The web view's HTML, CSS and JavaScript are installed with the package."""
        script = (
            "from importlib import resources\n"
            "static = resources.files('txraft') / 'static'\n"
            "print(sorted(p.name for p in static.iterdir()))\n"
        )
        result = runInstalled(sys.executable, "-c", script)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "['cluster.css', 'cluster.js', 'index.html']")

    def test_testingStartsInstalledNodes(self) -> None:
        """
        C{txraft.testing} is installed with the package, and the node command
        it builds runs the installed node outside any source checkout: here
        the node starts, finds its config missing and says so in one line.
        """
        script = (
            "import subprocess\n"
            "from txraft.testing.localcluster import nodeCommand, nodeEnvironment\n"
            "node = subprocess.run(nodeCommand('s1', 'missing.conf', 'data'), "
            "env=nodeEnvironment(), capture_output=True, text=True, timeout=30)\n"
            "print(node.returncode)\n"
            "print(node.stdout + node.stderr)\n"
        )
        result = runInstalled(sys.executable, "-c", script)
        self.assertEqual(result.returncode, 0, result.stderr)
        status, output = result.stdout.split("\n", 1)
        self.assertEqual(status, "1", output)
        self.assertIn("txraft: missing.conf: cannot read cluster config", output)
