"""
The planted bugs that once survived the whole suite (issue 12), and those
of safety rules added since, kept as a check that they still die: each is
planted in a scratch copy of the repository, then its named test and the
simulation (its batches at their default seed counts, in order) must both
fail, and the first seed that catches it is printed, with its batch.

    python mutation/named.py

One of them cannot happen in a run of this implementation, so no seed can
catch it; its named test sends the message that would expose it, and
C{unreachable} says why no legitimate cluster sends it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
#: The simulation's batches at their default seed counts, stopping at the first
#: failing seed (C{TXRAFT_FIRST_FAILURE}) of the first batch that has one.
SIMULATION = ("-x", "tests/test_simulation.py", "-k", "ClusterSimulationTests")


@attrs.frozen
class PlantedBug:
    """A one-place change to a module, and the tests that must notice it."""

    name: str
    path: str
    original: str
    planted: str
    test: str
    #: Why no run of the simulation can meet this bug, if none can.
    unreachable: str = ""


BUGS = (
    PlantedBug(
        "a candidate counts grants from earlier terms",
        "txraft/core.py",
        "elif self.role == CANDIDATE and response.term == self.currentTerm:",
        "elif self.role == CANDIDATE:",
        "tests/test_core.py::VotingTests::test_grantFromEarlierTermNotCounted",
    ),
    PlantedBug(
        "a core rebuilt after a disk failure forgets what was applied",
        "txraft/node.py",
        "            commitIndex=self.logManager.lastApplied,\n",
        "",
        "tests/test_node.py::DiskFailureTests::test_rebuiltCoreCountsAppliedAsCommitted",
    ),
    PlantedBug(
        "the driver answers OK before the entry commits",
        "txraft/node.py",
        "            self._waiting[entry.index] = (entry.term, now, reply)",
        "            reply.give(answers.OK)",
        "tests/test_service.py",
    ),
    PlantedBug(
        "a client is answered with the result of the entry that overwrote its own",
        "txraft/node.py",
        "if term == entry.term:",
        "if True:",
        "tests/test_node.py::AnswerTests::test_overwrittenEntryIsNotAnswered",
    ),
    PlantedBug(
        "a leader counts its own entries before they are durable (section 10.2.1)",
        "txraft/core.py",
        "matched.append(self.durableIndex)",
        "matched.append(self.log.lastIndex)",
        "tests/test_core.py::DurableLeaderTests::test_leaderCountsItselfOnlyOnceDurable",
    ),
    PlantedBug(
        "a follower commits up to its last index, not the last new entry",
        "txraft/core.py",
        "self._commitTo(min(request.leaderCommit, lastNewIndex))",
        "self._commitTo(min(request.leaderCommit, self.log.lastIndex))",
        "tests/test_core.py::FollowerAppendTests::test_followerCommitIndex",
        unreachable=(
            "the leader and the follower find the last index where their logs agree with the "
            "same rule (the largest index whose term is not after the other's), so the first "
            "probe the follower accepts starts right after it; the first entry sent then "
            "conflicts with any entry the follower kept from an older leader and truncates "
            "it, and what the follower holds past the last new entry of a later append came "
            "from this leader"
        ),
    ),
)


def pytest(tree: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on C{tree} with its own copy of txraft first on the path."""
    environment = dict(os.environ, PYTHONPATH=str(tree), TXRAFT_FIRST_FAILURE="1")
    environment.pop("TXRAFT_SEEDS", None)
    environment.pop("TXRAFT_SEED", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *arguments],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )


def plant(bug: PlantedBug, tree: Path) -> None:
    """Copy the repository to C{tree} and plant C{bug} in it."""
    shutil.copytree(
        ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv", ".mutation*", "build")
    )
    source = tree / bug.path
    text = source.read_text(encoding="utf-8")
    if text.count(bug.original) != 1:
        raise SystemExit(f"{bug.name}: {bug.original!r} is not once in {bug.path}")
    source.write_text(text.replace(bug.original, bug.planted), encoding="utf-8")


def check(bug: PlantedBug) -> bool:
    """Plant C{bug}, run its test and the simulation, print what caught it."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "txraft"
        plant(bug, tree)
        test = pytest(tree, bug.test)
        print(f"{bug.name}:")
        print(f"    {bug.test}: {'fails' if test.returncode else 'PASSES'}")
        if bug.unreachable:
            print(f"    simulation: cannot meet it: {bug.unreachable}")
            return bool(test.returncode)
        simulation = pytest(tree, *SIMULATION)
    # pytest shows a failing batch's message twice; keep it once.
    batches = {
        (ran or total, total, seeds)
        for ran, total, seeds in re.findall(
            r"\d+ of (?:the first (\d+) of )?(\d+) seeds failed: \[([^\]]*)", simulation.stdout
        )
    }
    batch = re.search(r"FAILED \S+::(test_\w+)", simulation.stdout)
    caught = "; ".join(
        f"seed {seeds} of {batch.group(1) if batch else '?'}, the first to fail "
        f"({ran} of its {total} seeds run)"
        for ran, total, seeds in sorted(batches)
    )
    print(f"    simulation: {caught or 'PASSES'}")
    return bool(test.returncode) and simulation.returncode != 0


def main() -> None:
    """Check every planted bug; exit 1 if one went unnoticed."""
    results = [check(bug) for bug in BUGS]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
