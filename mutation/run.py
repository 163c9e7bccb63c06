"""
Mutation testing of txraft with mutmut: plant one small bug at a time and
check that some test fails.

    python mutation/run.py               every mutant of the modules that
                                         pyproject.toml's [tool.mutmut] names,
                                         but those mutation/equivalent.txt lists
    python mutation/run.py --all         every mutant, the listed equivalents
                                         too: checks that each still survives
    python mutation/run.py --sample 60   a seeded sample of mutants of the core
                                         and the driver, against the tests that
                                         matter most for them (``make test``)
    python mutation/run.py --recheck     the last run's survivors again, against
                                         the tests written since
    python mutation/run.py --modules txraft/storage.py --scratch .mutation-storage
                                         some modules only, beside another run

mutmut works in a scratch copy of the repository (C{.mutation/}, git-ignored),
so the working tree never holds a mutant; C{cd .mutation && mutmut browse}
shows the last run.  A surviving mutant fails the run unless
mutation/equivalent.txt lists it with the reason it changes no behaviour.
The run fails if anything in C{STRICT} survives, or if another module kills
less than C{MINIMUM_SCORE} of its mutants.

A listed equivalent survives every test by definition, so it costs a whole
run of its tests: most of a full run's time went to them.  A full run
therefore first runs the first mutant of every function (which makes mutmut
write out all the mutants and map tests to functions), then every other
mutant but the listed equivalents, which it counts without running;
C{--all} runs them too, and reports any that a test now kills (its entry
is then stale: remove it).
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from difflib import unified_diff
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
#: Where mutmut works; C{--scratch} picks another, so that two runs can go side by side.
SCRATCH = ROOT / ".mutation"
EQUIVALENT = ROOT / "mutation" / "equivalent.txt"

#: Modules where every mutant that changes behaviour must be killed.
STRICT = ("txraft.core", "txraft.raftlog", "txraft.node")
#: The share of its mutants every other module must kill.
MINIMUM_SCORE = 0.90

#: Simulation seeds per batch while mutants run (the default is 600 and 200):
#: enough to kill what the simulation kills, few enough for the whole run to
#: finish in well under an hour on two cores.
MUTATION_SEEDS = 15

#: The sample that ``make test`` runs: mutants of these modules, against
#: these tests, with this many simulation seeds.
SAMPLE_MODULES = ("txraft/core.py", "txraft/node.py")
SAMPLE_TESTS = (
    "tests/test_core.py",
    "tests/test_raftlog.py",
    "tests/test_node.py",
    "tests/test_installation.py",
    "tests/test_reads.py",
    "tests/test_membership.py",
    "tests/test_admin.py",
    "tests/test_service.py",
    "tests/test_fuzz.py",
    "tests/test_simulation.py",
)
SAMPLE_SEEDS = 30

#: The mutants a full run starts with: the first of every function.  Running
#: them makes mutmut write every mutant out, so the others can be told apart.
FIRST_OF_EACH = "txraft.*__mutmut_1"

#: The status of a listed equivalent that a full run did not run.
NOT_RUN = "listed equivalent, not run"

#: mutmut's word for each outcome that counts as the mutant killed...
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
#: ...and for those that do not: an odd exit code ("suspicious") is looked at, not trusted.
NOT_KILLED = {"survived", "no tests", "suspicious", "check was interrupted by user"}


@attrs.frozen
class Mutant:
    """One mutant and what became of it."""

    name: str
    status: str

    @property
    def module(self) -> str:
        """The dotted name of the mutated module (C{txraft.core})."""
        return self.name.split(".x", 1)[0]

    @property
    def function(self) -> str:
        """mutmut's name for the mutated function, without the mutant's number."""
        return self.name.rsplit("__mutmut_", 1)[0]


@attrs.frozen
class Equivalent:
    """A mutant shown to change no behaviour, from mutation/equivalent.txt."""

    function: str
    removed: tuple[str, ...]
    added: tuple[str, ...]
    why: str


def loadEquivalents(path: Path = EQUIVALENT) -> list[Equivalent]:
    """
    Read the equivalent mutants: blocks of a C{function:} line, the changed
    lines as C{mutmut show} prints them (C{-} before, C{+} after), and a
    C{why:} line; C{#} starts a comment.
    """
    equivalents = []
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
        lines = [line for line in block.splitlines() if not line.startswith("#")]
        if not lines:
            continue
        fields = {"function": "", "why": ""}
        removed, added = [], []
        for line in lines:
            if line.startswith("-"):
                removed.append(line[1:].strip())
            elif line.startswith("+"):
                added.append(line[1:].strip())
            else:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        if not (fields["function"] and fields["why"]):
            raise SystemExit(f"{path}: a block without function: or why:\n{block}")
        equivalents.append(
            Equivalent(fields["function"], tuple(removed), tuple(added), fields["why"])
        )
    return equivalents


def changedLines(diff: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The lines a unified diff removes and adds, stripped."""
    removed, added = [], []
    for line in diff.splitlines():
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("-"):
            removed.append(line[1:].strip())
        elif line.startswith("+"):
            added.append(line[1:].strip())
    return tuple(removed), tuple(added)


def prepareScratch(modules: tuple[str, ...] | None, tests: tuple[str, ...] | None) -> None:
    """
    Copy the repository to L{SCRATCH}, overriding which modules to mutate
    and which tests to run when given.
    """
    shutil.rmtree(SCRATCH, ignore_errors=True)
    shutil.copytree(
        ROOT,
        SCRATCH,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".mutation*", "mutants", "build", "logs", "__pycache__", "_trial*"
        ),
    )
    pyproject = SCRATCH / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    for key, values in (("only_mutate", modules), ("pytest_add_cli_args_test_selection", tests)):
        if values is not None:
            setting = f"{key} = {list(values)!r}".replace("'", '"')
            text, count = re.subn(rf"^{key} = .*$", setting, text, flags=re.MULTILINE)
            assert count == 1, f"pyproject.toml's [tool.mutmut] has no one {key} line"
    pyproject.write_text(text, encoding="utf-8")


def refreshTests() -> None:
    """
    Put the current tests and unmutated modules in the scratch copy, and
    make mutmut map the tests to the functions they run afresh.

    @raise SystemExit: if a mutated module changed since the run.
    """
    for source in sorted((ROOT / "txraft").rglob("*")):
        if not source.is_file() or "__pycache__" in source.parts:
            continue
        relative = source.relative_to(ROOT)
        if (SCRATCH / "mutants" / f"{relative}.meta").exists():
            if source.read_bytes() != (SCRATCH / relative).read_bytes():
                raise SystemExit(f"{relative} changed since the run: run all mutants again")
            continue
        for tree in (SCRATCH, SCRATCH / "mutants"):
            (tree / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tree / relative)
    for path in ("tests", "mutants/tests"):
        shutil.rmtree(SCRATCH / path, ignore_errors=True)
        shutil.copytree(ROOT / "tests", SCRATCH / path)
    (SCRATCH / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)


def mutmut(*arguments: str, seeds: int, capture: bool = True) -> str:
    """Run mutmut in the scratch copy; return what it printed."""
    environment = dict(os.environ, TXRAFT_SEEDS=str(seeds))
    command = [sys.executable, "-m", "mutmut", *arguments]
    result = subprocess.run(
        command, cwd=SCRATCH, env=environment, capture_output=capture, text=True, check=False
    )
    if result.returncode != 0:
        output = (result.stdout or "")[-3000:] + (result.stderr or "")[-3000:]
        raise SystemExit(f"mutmut {' '.join(arguments[:1])} failed:\n{output}")
    return result.stdout or ""


def results(seeds: int) -> list[Mutant]:
    """Every mutant mutmut checked in the scratch copy, with its outcome."""
    mutants = []
    for line in mutmut("results", "--all", "true", seeds=seeds).splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name and status not in ("not checked", "skipped"):
            mutants.append(Mutant(name, status))
    return mutants


def mutatedModules() -> list[str]:
    """The paths of the modules the scratch copy's pyproject.toml has mutmut mutate."""
    text = (SCRATCH / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r"^only_mutate = (\[.*\])$", text, flags=re.MULTILINE)
    assert match, "pyproject.toml's [tool.mutmut] has no only_mutate line"
    return list(ast.literal_eval(match.group(1)))


def mutantChanges() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """
    The lines each mutant mutmut wrote out removes and adds, by mutant name,
    as C{mutmut show} prints them: each mutant is a copy of its function
    (C{NAME__mutmut_N} beside C{NAME__mutmut_orig}) in the scratch copy's
    C{mutants/} tree, compared here without their first lines (the names).
    """
    changes = {}
    for path in mutatedModules():
        module = path.removesuffix(".py").replace("/", ".")
        text = (SCRATCH / "mutants" / path).read_text(encoding="utf-8")
        lines = text.splitlines()
        bodies = {
            node.name: lines[node.lineno : node.end_lineno]
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef) and "__mutmut_" in node.name
        }
        for name, body in bodies.items():
            function, _, number = name.rpartition("__mutmut_")
            if number != "orig":
                original = bodies[f"{function}__mutmut_orig"]
                diff = "\n".join(unified_diff(original, body, lineterm=""))
                changes[f"{module}.{name}"] = changedLines(diff)
    return changes


def isListed(
    name: str, change: tuple[tuple[str, ...], tuple[str, ...]], equivalent: Equivalent
) -> bool:
    """Whether the mutant C{name}, which makes C{change}, is C{equivalent}."""
    return (equivalent.function, equivalent.removed, equivalent.added) == (
        name.rsplit("__mutmut_", 1)[0],
        *change,
    )


def classify(
    mutants: list[Mutant], equivalents: list[Equivalent]
) -> tuple[list[Mutant], dict[str, Equivalent]]:
    """Split the mutants not killed into real survivors and known equivalents."""
    changes = mutantChanges()
    survivors, matched = [], {}
    for mutant in mutants:
        if mutant.status not in NOT_KILLED and mutant.status != NOT_RUN:
            continue
        change = changes[mutant.name]
        for equivalent in equivalents:
            if isListed(mutant.name, change, equivalent):
                matched[mutant.name] = equivalent
                break
        else:
            survivors.append(mutant)
    return survivors, matched


def report(
    mutants: list[Mutant], survivors: list[Mutant], equivalent: dict[str, Equivalent]
) -> bool:
    """Print the score of each module and every survivor; whether the run passes."""
    total, killed, same = Counter(), Counter(), Counter()
    for mutant in mutants:
        total[mutant.module] += 1
        killed[mutant.module] += mutant.status in KILLED
        same[mutant.module] += mutant.name in equivalent
    passed = True
    columns = ("mutants", "killed", "equivalent", "survived", "score")
    print("\n" + f"{'module':<16}" + "".join(f"{column:>11}" for column in columns))
    for module in sorted(total):
        survived = total[module] - killed[module] - same[module]
        counted = total[module] - same[module]
        score = killed[module] / counted if counted else 1.0
        counts = (total[module], killed[module], same[module], survived)
        print(f"{module:<16}" + "".join(f"{n:>11}" for n in counts) + f"{score:>11.1%}")
        if survived and (module in STRICT or score < MINIMUM_SCORE):
            passed = False
    for mutant in survivors:
        print(f"\nSURVIVED ({mutant.status}): {mutant.name}")
        print(mutmut("show", mutant.name, seeds=0).rstrip())
    return passed


def sampleNames(count: int, seed: int) -> list[str]:
    """
    Up to C{count} mutant names of L{SAMPLE_MODULES}, drawn with C{seed}:
    a function at random, and one of its first five mutants (a short
    function has fewer: a name that does not exist is not run).
    """
    functions = []
    for path in SAMPLE_MODULES:
        module = path.removesuffix(".py").replace("/", ".")
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                functions.append(f"{module}.x_{node.name}")
            elif isinstance(node, ast.ClassDef):
                functions.extend(
                    f"{module}.x\u01c1{node.name}\u01c1{item.name}"
                    for item in node.body
                    if isinstance(item, ast.FunctionDef)
                )
    rng = random.Random(seed)
    return sorted({f"{rng.choice(functions)}__mutmut_{rng.randint(1, 5)}" for _ in range(count)})


def runMutmut(names: list[str], seeds: int) -> list[Mutant]:
    """
    Run mutmut on C{names} (all when empty, showing its progress) and
    return the outcomes.
    """
    started = time.monotonic()
    workers = str(os.cpu_count() or 2)
    mutmut("run", "--max-children", workers, *names, seeds=seeds, capture=bool(names))
    print(f"mutmut ran for {time.monotonic() - started:.0f} s")
    return results(seeds)


def runAllButEquivalents(equivalents: list[Equivalent], seeds: int) -> list[Mutant]:
    """
    Run every mutant but the listed equivalents (see the module's
    docstring); return the outcomes, the equivalents with L{NOT_RUN}.
    """
    started = time.monotonic()
    workers = str(os.cpu_count() or 2)
    mutmut("run", "--max-children", workers, FIRST_OF_EACH, seeds=seeds, capture=False)
    done = {mutant.name for mutant in results(seeds)}
    listed = {
        name
        for name, change in mutantChanges().items()
        if any(isListed(name, change, equivalent) for equivalent in equivalents)
    }
    rest = sorted(set(mutantChanges()) - done - listed)
    print(
        f"\n{len(done)} first mutants run, {len(rest)} more to run; "
        f"{len(listed)} listed as equivalent"
    )
    if rest:
        mutmut("run", "--max-children", workers, *rest, seeds=seeds, capture=False)
    print(f"mutmut ran for {time.monotonic() - started:.0f} s")
    ran = results(seeds)
    checked = {mutant.name for mutant in ran}
    return ran + [Mutant(name, NOT_RUN) for name in sorted(listed - checked)]


def main() -> None:
    """Parse the command line and run the mutants it asks for."""
    global SCRATCH
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, metavar="N", help="run N sampled mutants")
    parser.add_argument("--seed", type=int, default=1, help="the sample's seed (default 1)")
    parser.add_argument("--scratch", metavar="DIR", help=f"work in DIR instead of {SCRATCH.name}/")
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="run the last run's survivors again against the current tests",
    )
    parser.add_argument(
        "--all",
        action="store_true",
        help="run the listed equivalents too, to check that each still survives",
    )
    parser.add_argument(
        "--modules",
        metavar="PATHS",
        help="mutate only these of pyproject's modules, comma-separated (txraft/core.py,...)",
    )
    options = parser.parse_args()
    if options.scratch:
        SCRATCH = Path(options.scratch).resolve()
    equivalents = loadEquivalents()
    seeds = MUTATION_SEEDS
    if options.recheck:
        survivors, _ = classify(results(seeds), equivalents)
        refreshTests()
        names = [mutant.name for mutant in survivors]
        print(f"rechecking {len(names)} survivors against the current tests")
        mutants = runMutmut(names, seeds) if names else results(seeds)
    elif options.sample:
        prepareScratch(SAMPLE_MODULES, SAMPLE_TESTS)
        names = sampleNames(options.sample, options.seed)
        print(f"mutation sample: {len(names)} names drawn with seed {options.seed}")
        mutants = runMutmut(names, SAMPLE_SEEDS)
    else:
        modules = tuple(options.modules.split(",")) if options.modules else None
        prepareScratch(modules, None)
        if options.all:
            mutants = runMutmut([], seeds)
        else:
            mutants = runAllButEquivalents(equivalents, seeds)
    survivors, equivalent = classify(mutants, equivalents)
    sys.exit(0 if report(mutants, survivors, equivalent) else 1)


if __name__ == "__main__":
    main()
