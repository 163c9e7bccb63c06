"""
Tests for L{txraft.keygen}: the C{txraft-keygen FILE} command.
"""

from __future__ import annotations

import io
import os
import stat
from importlib import metadata

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import temporaryDirectory
from txraft import keygen
from txraft.auth import readKeyFile


class KeygenTests(SynchronousTestCase):
    """
    Tests for L{keygen.main}.
    """

    def setUp(self) -> None:
        """A temporary directory and a captured stderr."""
        self.directory = temporaryDirectory(self)
        self.path = os.path.join(self.directory, "cluster.key")
        self.stderr = io.StringIO()

    def test_writesKey(self) -> None:
        """C{txraft-keygen FILE} writes a usable key with mode 0600 and exits 0."""
        self.assertEqual(keygen.main([self.path], stderr=self.stderr), 0)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertGreaterEqual(len(readKeyFile(self.path)), 32)
        self.assertEqual(self.stderr.getvalue(), "")

    def test_refusesToOverwrite(self) -> None:
        """An existing file is kept, and the command says so and exits 1."""
        keygen.main([self.path], stderr=self.stderr)
        key = readKeyFile(self.path)
        self.assertEqual(keygen.main([self.path], stderr=self.stderr), 1)
        self.assertIn(f"{self.path} exists", self.stderr.getvalue())
        self.assertEqual(readKeyFile(self.path), key)

    def test_unwritable(self) -> None:
        """A file that cannot be created is reported, exit status 1."""
        path = os.path.join(self.directory, "missing", "cluster.key")
        self.assertEqual(keygen.main([path], stderr=self.stderr), 1)
        self.assertIn(path, self.stderr.getvalue())

    def test_usage(self) -> None:
        """No file, two files, or an option: usage on stderr, exit status 2."""
        for argv in [[], ["a", "b"], ["--force"]]:
            self.assertEqual(keygen.main(argv, stderr=self.stderr), 2)
        self.assertEqual(self.stderr.getvalue().count("Usage: txraft-keygen FILE"), 3)

    def test_help(self) -> None:
        """C{--help} prints the usage on stdout and exits 0."""
        stdout = io.StringIO()
        self.assertEqual(keygen.main(["--help"], stdout, self.stderr), 0)
        self.assertIn("Usage: txraft-keygen FILE", stdout.getvalue())

    def test_version(self) -> None:
        """C{--version} prints txraft's version, as every txraft command does, and exits 0."""
        stdout = io.StringIO()
        self.assertEqual(keygen.main(["--version"], stdout, self.stderr), 0)
        self.assertEqual(stdout.getvalue(), f"txraft-keygen {metadata.version('txraft')}\n")
