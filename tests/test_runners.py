"""
Both test runners see the whole suite: C{pytest} (what C{make test} runs)
and C{python -m twisted.trial tests}, since the tests are trial test cases.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

#: The checkout this test file lives in, where both runners start.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*argv: str) -> str:
    """Run the test interpreter with C{argv} in the checkout; its output."""
    result = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return result.stdout


class RunnerTests(SynchronousTestCase):
    """trial finds every test that pytest collects."""

    def test_trialFindsWhatPytestFinds(self) -> None:
        """
        C{trial --dry-run tests} lists as many tests as C{pytest
        --collect-only}, and not zero: C{tests} is a package whose modules
        trial can import.
        """
        collected = run("-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider")
        pytestCount = int(re.search(r"(\d+) tests? collected", collected).group(1))
        listed = run("-m", "twisted.trial", "--dry-run", "tests")
        trialCount = int(re.search(r"Ran (\d+) tests?", listed).group(1))
        self.assertGreater(trialCount, 500)
        self.assertEqual(trialCount, pytestCount)
