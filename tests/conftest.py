"""
pytest options for the txraft tests.

C{--seeds N} runs N seeds in each batch of the deterministic simulation
(tests/test_simulation.py); it is the same as setting C{TXRAFT_SEEDS=N}.
C{TXRAFT_SEED=S} runs seed S alone, which is how a failing seed is replayed.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add C{--seeds}."""
    parser.addoption(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="run N seeds per simulation batch (like TXRAFT_SEEDS=N)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Hand C{--seeds} to the simulation tests through the environment."""
    seeds = config.getoption("seeds")
    if seeds is not None:
        os.environ["TXRAFT_SEEDS"] = str(seeds)
