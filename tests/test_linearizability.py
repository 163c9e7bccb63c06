"""
Tests for L{txraft.testing.linearizability}: the checker accepts exactly the
histories of the key-value map that some order of their operations explains.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence

import attrs
from twisted.trial.unittest import SynchronousTestCase

from txraft.testing.linearizability import CheckResult, Operation, checkHistory


def op(
    kind: str,
    start: float,
    end: float | None,
    *,
    key: str = "k",
    value: str | None = None,
    result: str | None = None,
    found: bool | None = None,
    client: str = "c",
) -> Operation:
    """An operation with keyword arguments for what only some kinds have."""
    if kind == "delete" and end is not None and found is None:
        found = True
    return Operation(client, kind, key, value, start, end, result, found)


def setOp(value: str, start: float, end: float | None, **kw: object) -> Operation:
    """A C{set} of C{value}; C{end} L{None} for an unknown outcome."""
    return op("set", start, end, value=value, **kw)


def getOp(result: str | None, start: float, end: float | None, **kw: object) -> Operation:
    """A C{get} that returned C{result} (L{None}: C{NOT_FOUND})."""
    return op("get", start, end, result=result, **kw)


def deleteOp(found: bool | None, start: float, end: float | None, **kw: object) -> Operation:
    """A C{delete} that answered C{OK} (C{found}) or C{NOT_FOUND}."""
    return op("delete", start, end, found=found, **kw)


def simulatedHistory(
    rng: random.Random,
    count: int,
    clients: int = 4,
    keys: Sequence[str] = ("k",),
    unknownRate: float = 0.03,
) -> list[Operation]:
    """
    A random history that is linearizable by construction: each client runs
    operations one after another with random durations and gaps; each
    operation takes effect at a random instant within its interval (an
    unknown-outcome one at a random instant after its start, or never); the
    results come from applying them in the order of those instants to a
    plain dictionary.  Every C{set} writes a fresh value.
    """
    clock = [0.0] * clients
    pending = []
    for number in range(count):
        client = rng.randrange(clients)
        start = clock[client] + rng.random() * 0.3
        end = start + rng.random()
        clock[client] = end
        kind = rng.choices(["get", "set", "delete"], [5, 4, 1])[0]
        unknown = rng.random() < unknownRate
        if not unknown:
            instant = rng.uniform(start, end)
        elif rng.random() < 0.5:
            instant = start + rng.random() * 5
        else:
            instant = None
        pending.append(
            {
                "client": f"c{client}",
                "kind": kind,
                "key": rng.choice(keys),
                "value": f"v{number}" if kind == "set" else None,
                "start": start,
                "end": None if unknown else end,
                "instant": instant,
            }
        )
    data: dict[str, str] = {}
    for p in sorted((p for p in pending if p["instant"] is not None), key=lambda p: p["instant"]):
        key = p["key"]
        if p["kind"] == "set":
            data[key] = p["value"]
        else:
            p["result"] = data.get(key) if p["kind"] == "get" else None
            p["found"] = key in data
            if p["kind"] == "delete":
                data.pop(key, None)
    history = []
    for p in pending:
        known = p["end"] is not None
        history.append(
            Operation(
                p["client"],
                p["kind"],
                p["key"],
                p["value"],
                p["start"],
                p["end"],
                p.get("result") if known else None,
                p.get("found") if known and p["kind"] != "set" else None,
            )
        )
    return history


def bruteForce(history: Sequence[Operation], initial: str | None = None) -> bool:
    """
    The definition, executed: whether some subset of the unknown-outcome
    writes and some order of it and of all known-outcome operations (of one
    key) respects real time and replays correctly from C{initial}.
    """
    infinity = float("inf")
    known = [o for o in history if o.end is not None]
    unknown = [o for o in history if o.end is None and o.kind != "get"]
    for size in range(len(unknown) + 1):
        for chosen in itertools.combinations(unknown, size):
            for order in itertools.permutations(known + list(chosen)):
                if any(
                    (later.end if later.end is not None else infinity) < earlier.start
                    for i, earlier in enumerate(order)
                    for later in order[i + 1 :]
                ):
                    continue
                value, fits = initial, True
                for o in order:
                    if o.kind == "set":
                        value = o.value
                    elif o.kind == "get":
                        fits = o.end is None or o.result == value
                    else:
                        fits = o.end is None or o.found == (value is not None)
                        value = None
                    if not fits:
                        break
                if fits:
                    return True
    return False


class LinearizableHistoryTests(SynchronousTestCase):
    """Histories that some order explains are accepted."""

    def assertLinearizable(
        self, history: Sequence[Operation], initial: dict[str, str] | None = None
    ) -> CheckResult:
        """Fail with the checker's explanation unless C{history} passes."""
        result = checkHistory(history, initial or {})
        self.assertTrue(result.ok, result.explanation)
        self.assertIsNone(result.key)
        return result

    def test_empty(self) -> None:
        """An empty history is linearizable."""
        self.assertLinearizable([])

    def test_sequential(self) -> None:
        """
        Operations one after another, each seeing the effect of all before
        it: set, get, overwrite, get, delete, get NOT_FOUND, delete NOT_FOUND.
        """
        self.assertLinearizable(
            [
                getOp(None, 0, 1),
                setOp("a", 2, 3),
                getOp("a", 4, 5),
                setOp("b", 6, 7),
                getOp("b", 8, 9),
                deleteOp(True, 10, 11),
                getOp(None, 12, 13),
                deleteOp(False, 14, 15),
            ]
        )

    def test_initialValue(self) -> None:
        """Reads before any write see the initial map; deletes find its keys."""
        self.assertLinearizable(
            [getOp("x", 0, 1), deleteOp(True, 2, 3), getOp(None, 4, 5)], {"k": "x"}
        )

    def test_readsOverlappingAWriteMaySeeEitherValue(self) -> None:
        """
        Reads concurrent with a write may return the old or the new value,
        in either order, as long as each can be placed before or after the
        write consistently.
        """
        self.assertLinearizable(
            [
                setOp("old", 0, 1),
                setOp("new", 2, 10, client="w"),
                getOp("new", 3, 4, client="r1"),
                getOp("old", 3, 5, client="r2"),
                getOp("new", 6, 7, client="r2"),
            ]
        )

    def test_concurrentWritesInEitherOrder(self) -> None:
        """Two overlapping writes may take effect in the order opposite to their starts."""
        self.assertLinearizable(
            [setOp("a", 0, 5, client="w1"), setOp("b", 1, 3, client="w2"), getOp("a", 6, 7)]
        )

    def test_equalTimesAreConcurrent(self) -> None:
        """An operation that starts exactly when another ends may be placed before it."""
        self.assertLinearizable([setOp("a", 0, 1), getOp(None, 1, 2)])

    def test_unknownWriteTakesEffectLate(self) -> None:
        """
        A write with no answer may take effect long after its start, after
        later writes that completed, even after a read that missed it.
        """
        self.assertLinearizable(
            [
                setOp("lost?", 0, None, client="w1"),
                getOp(None, 1, 2),
                setOp("b", 3, 4, client="w2"),
                getOp("b", 5, 6),
                getOp("lost?", 7, 8),
                getOp("lost?", 9, 10),
            ]
        )

    def test_unknownWriteNeverTakesEffect(self) -> None:
        """A write with no answer may never take effect at all."""
        self.assertLinearizable([setOp("a", 0, None), getOp(None, 1, 2), getOp(None, 30, 31)])

    def test_unknownDelete(self) -> None:
        """
        A delete with no answer may take effect between two reads of the
        same value, or never.
        """
        self.assertLinearizable(
            [
                setOp("a", 0, 1),
                deleteOp(None, 2, None, client="d"),
                getOp("a", 3, 4),
                getOp(None, 5, 6),
            ]
        )
        self.assertLinearizable(
            [setOp("a", 0, 1), deleteOp(None, 2, None, client="d"), getOp("a", 5, 6)]
        )

    def test_unknownWriteSatisfiesDelete(self) -> None:
        """
        A delete that found the key is explained by an unknown-outcome write
        that took effect just before it.
        """
        self.assertLinearizable(
            [setOp("x", 0, None, client="w"), deleteOp(True, 1, 2), getOp(None, 3, 4)]
        )

    def test_unknownGetIsIgnored(self) -> None:
        """A read with no answer constrains nothing, whatever its recorded result."""
        self.assertLinearizable([setOp("a", 0, 1), getOp("never written", 2, None)])

    def test_concurrentDeleteAndSet(self) -> None:
        """
        A delete concurrent with a set may come before it (the key exists
        afterwards) or after it, depending on what the delete answered.
        """
        self.assertLinearizable(
            [setOp("a", 0, 4, client="w"), deleteOp(False, 1, 2, client="d"), getOp("a", 5, 6)]
        )
        self.assertLinearizable(
            [setOp("a", 0, 4, client="w"), deleteOp(True, 1, 5, client="d"), getOp(None, 6, 7)]
        )

    def test_perKeyIndependence(self) -> None:
        """
        Operations on different keys do not constrain each other: reads
        that would contradict the writes if all were of one key (NOT_FOUND
        after a write, a value after another was written) pass when each
        is of its own key.
        """
        self.assertLinearizable(
            [
                setOp("1", 0, 1, key="x"),
                getOp(None, 2, 3, key="y"),
                setOp("2", 4, 5, key="y"),
                getOp("1", 6, 7, key="x"),
                getOp("2", 8, 9, key="y"),
            ]
        )

    def test_summary(self) -> None:
        """A passing verdict counts the operations and keys it checked."""
        result = self.assertLinearizable([setOp("a", 0, 1, key="x"), getOp(None, 2, 3, key="y")])
        self.assertIn("2 operations on 2 keys", result.explanation)


class NonLinearizableHistoryTests(SynchronousTestCase):
    """Histories that no order explains are refused, with the key and the reason."""

    def assertNotLinearizable(
        self,
        history: Sequence[Operation],
        key: str = "k",
        initial: dict[str, str] | None = None,
    ) -> CheckResult:
        """Fail unless the checker refuses C{history} on C{key} with a definite verdict."""
        result = checkHistory(history, initial or {})
        self.assertFalse(result.ok, result.explanation)
        self.assertEqual(result.key, key)
        self.assertIn(f"key {key!r}: not linearizable", result.explanation)
        return result

    def test_staleReadAfterCompletedWrite(self) -> None:
        """
        A read that starts after a write of a new value completed must not
        return the old value.
        """
        result = self.assertNotLinearizable(
            [setOp("old", 0, 1), setOp("new", 2, 3), getOp("old", 4, 5, client="reader")]
        )
        self.assertIn("#2 reader: get -> 'old' [4.000000, 5.000000]", result.explanation)
        self.assertIn("needs the key 'old' while it is 'new'", result.explanation)

    def test_readOfValueNeverWritten(self) -> None:
        """A read returning a value nobody wrote is refused and the explanation names it."""
        result = self.assertNotLinearizable([setOp("a", 0, 1), getOp("b", 2, 3)])
        self.assertIn("operation #1 read 'b', which no set of this key wrote", result.explanation)

    def test_lostAcknowledgedWrite(self) -> None:
        """
        An acknowledged set must be visible to every later read until
        overwritten: NOT_FOUND afterwards means the write was lost.
        """
        self.assertNotLinearizable([setOp("a", 0, 1), getOp("a", 2, 3), getOp(None, 4, 5)])

    def test_lostAcknowledgedDelete(self) -> None:
        """A key deleted with OK must not reappear without a new write."""
        self.assertNotLinearizable([setOp("a", 0, 1), deleteOp(True, 2, 3), getOp("a", 4, 5)])

    def test_deleteAnswerContradictsState(self) -> None:
        """
        A delete answering NOT_FOUND right after a completed set, or OK on a
        key that cannot exist, is refused.
        """
        self.assertNotLinearizable([setOp("a", 0, 1), deleteOp(False, 2, 3)])
        self.assertNotLinearizable([deleteOp(True, 0, 1)])

    def test_readsSeeWritesInOppositeOrders(self) -> None:
        """
        Two concurrent writes may take effect in either order, but not in
        both: one reader seeing a then b while another sees b then a is
        refused.
        """
        self.assertNotLinearizable(
            [
                setOp("a", 0, 10, client="w1"),
                setOp("b", 0, 10, client="w2"),
                getOp("a", 1, 2, client="r1"),
                getOp("b", 3, 4, client="r1"),
                getOp("b", 1, 2, client="r2"),
                getOp("a", 3, 4, client="r2"),
            ]
        )

    def test_unknownWriteCannotTakeEffectBeforeItStarts(self) -> None:
        """A write with no answer cannot explain a read that ended before it was sent."""
        self.assertNotLinearizable([getOp("a", 0, 1), setOp("a", 2, None)])

    def test_unknownWriteTakesEffectAtMostOnce(self) -> None:
        """
        A write with no answer takes effect once: its value cannot come
        back after a completed overwrite was read.
        """
        self.assertNotLinearizable(
            [
                setOp("a", 0, None, client="w1"),
                getOp("a", 1, 2),
                setOp("b", 3, 4, client="w2"),
                getOp("b", 5, 6),
                getOp("a", 7, 8),
            ]
        )

    def test_firstFailingKeyIsReported(self) -> None:
        """
        With several keys, the verdict names a failing one (the first in
        sorted order) and its explanation lists only that key's operations.
        """
        history = [
            setOp("1", 0, 1, key="b"),
            getOp(None, 2, 3, key="b", client="lost-b"),
            setOp("1", 0, 1, key="a"),
            getOp("1", 2, 3, key="a"),
            setOp("1", 0, 1, key="c"),
            getOp(None, 2, 3, key="c", client="lost-c"),
        ]
        result = self.assertNotLinearizable(history, key="b")
        self.assertIn("lost-b", result.explanation)
        self.assertNotIn("lost-c", result.explanation)

    def test_explanationShowsTheDeadEnd(self) -> None:
        """
        The explanation lists the key's operations with their history
        indexes and times (relative to the first invocation), the longest
        order that fits, and what the operation that had to come next
        needed.
        """
        result = self.assertNotLinearizable(
            [
                setOp("a", 100.0, 100.5, client="w"),
                getOp("a", 101.0, 101.5, client="r"),
                deleteOp(True, 102.0, 102.5, client="d"),
                getOp("a", 103.0, 103.25, client="r"),
            ]
        )
        explanation = result.explanation
        self.assertIn("times in seconds after 100.000000", explanation)
        self.assertIn("#0 w: set 'a' [0.000000, 0.500000]", explanation)
        self.assertIn("#2 d: delete -> OK [2.000000, 2.500000]", explanation)
        self.assertIn("places 3 of the 4 operations", explanation)
        self.assertIn("Then the value is absent.", explanation)
        self.assertIn(
            "Next must come #3 r: get -> 'a' [3.000000, 3.250000]", explanation.replace("\n", " ")
        )

    def test_budgetExhaustedIsAFailure(self) -> None:
        """
        When the search budget runs out the verdict is a failure saying the
        history is undecided, never a pass.
        """
        rng = random.Random(4)
        history = simulatedHistory(rng, 200, clients=6)
        result = checkHistory(history, budget=10)
        self.assertFalse(result.ok)
        self.assertEqual(result.key, "k")
        self.assertIn("undecided: the search budget of 10 steps ran out", result.explanation)
        self.assertTrue(checkHistory(history).ok)


class ValidationTests(SynchronousTestCase):
    """Malformed operations are refused with ValueError rather than misjudged."""

    def test_malformed(self) -> None:
        """
        Unknown kinds, sets without values, values on other kinds, ends
        before starts, a get whose found contradicts its result and a known
        delete without found are each refused.
        """
        bad = [
            Operation("c", "show", "k", None, 0, 1, None),
            Operation("c", "set", "k", None, 0, 1, None),
            Operation("c", "get", "k", "v", 0, 1, None),
            Operation("c", "get", "k", None, 2, 1, None),
            Operation("c", "get", "k", None, 0, 1, "v", False),
            Operation("c", "get", "k", None, 0, 1, None, True),
            Operation("c", "delete", "k", None, 0, 1, None, None),
        ]
        for operation in bad:
            self.assertRaises(ValueError, checkHistory, [operation])

    def test_getFoundMayBeGiven(self) -> None:
        """A get's found, when given consistently with its result, is accepted."""
        history = [
            Operation("c", "get", "k", None, 0, 1, None, False),
            Operation("c", "set", "k", "v", 2, 3, None),
            Operation("c", "get", "k", None, 4, 5, "v", True),
        ]
        self.assertTrue(checkHistory(history).ok)


class RandomizedTests(SynchronousTestCase):
    """The checker agrees with simulated executions and with the definition itself."""

    def test_simulatedHistoriesPassAndCorruptedReadsFail(self) -> None:
        """
        Random histories of a simulated map (several keys, overlapping
        operations, some unknown outcomes) pass; changing one read to a
        stale value (one overwritten by a write that completed before the
        read began, its own write having completed before that) makes the
        key's history fail, as does changing a read to a value never written.
        """
        for seed in range(6):
            rng = random.Random(seed)
            history = simulatedHistory(rng, 600, clients=4, keys=("x", "y", "z"))
            result = checkHistory(history)
            self.assertTrue(result.ok, f"seed {seed}: {result.explanation}")

            index, stale = self.staleRead(rng, history)
            corrupted = list(history)
            corrupted[index] = attrs.evolve(history[index], result=stale, found=True)
            result = checkHistory(corrupted)
            self.assertFalse(result.ok, f"seed {seed}: read #{index} made stale passes")
            self.assertEqual(result.key, history[index].key)
            self.assertIn("not linearizable", result.explanation)

            corrupted[index] = attrs.evolve(history[index], result="bogus", found=True)
            self.assertFalse(checkHistory(corrupted).ok)

    def staleRead(self, rng: random.Random, history: list[Operation]) -> tuple[int, str]:
        """
        Pick a known-outcome read and a value that it cannot legally return:
        one written by a completed set that was followed, strictly in real
        time, by another completed set, itself completed before the read.
        """
        candidates = []
        for key in sorted({o.key for o in history}):
            sets = sorted(
                (o for o in history if o.kind == "set" and o.end is not None and o.key == key),
                key=lambda o: o.end,
            )
            ends = [o.end for o in sets]
            for index, read in enumerate(history):
                if read.kind != "get" or read.end is None or read.key != key:
                    continue
                # The last set to end before the read began, and the last
                # to end before that one began.
                before = bisect.bisect_left(ends, read.start)
                if before:
                    earlier = bisect.bisect_left(ends, sets[before - 1].start)
                    if earlier:
                        candidates.append((index, sets[earlier - 1].value))
        return rng.choice(candidates)

    def test_longHistoryRefutedNearTheFault(self) -> None:
        """
        When a long history with many unknown outcomes is too costly to
        refute as a whole within the budget, the checker still gives a
        definite verdict by refuting a window that ends at the bad read,
        with the value at the window's start left free; the uncorrupted
        history passes within the same budget.
        """
        rng = random.Random(0)
        history = simulatedHistory(rng, 2000, clients=4, unknownRate=0.1)
        self.assertTrue(checkHistory(history, budget=50_000).ok)
        index, stale = self.staleRead(rng, history)
        corrupted = list(history)
        corrupted[index] = attrs.evolve(history[index], result=stale, found=True)
        result = checkHistory(corrupted, budget=50_000)
        self.assertFalse(result.ok)
        self.assertIn("not linearizable.  The whole history is too long", result.explanation)
        self.assertIn(f"up to the response of #{index} at", result.explanation)
        self.assertIn(f"#{index} c", result.explanation)

    def test_agreesWithBruteForce(self) -> None:
        """
        On a thousand small random histories of one key (random kinds,
        intervals, results and unknown outcomes, values drawn from a small
        set so that they repeat), the checker's verdict equals that of
        trying every order, and both verdicts occur often.
        """
        rng = random.Random(1234)
        verdicts = {True: 0, False: 0}
        for trial in range(1000):
            history = []
            for number in range(rng.randint(1, 6)):
                kind = rng.choice(["get", "set", "delete"])
                start = rng.randint(0, 10)
                end = None if rng.random() < 0.25 else start + rng.randint(0, 5)
                history.append(
                    op(
                        kind,
                        start,
                        end,
                        value=rng.choice("ab") if kind == "set" else None,
                        result=rng.choice(["a", "b", None]) if kind == "get" else None,
                        found=rng.random() < 0.5 if kind == "delete" and end is not None else None,
                        client=f"c{number}",
                    )
                )
            initial = rng.choice([None, "a"])
            expected = bruteForce(history, initial)
            verdicts[expected] += 1
            result = checkHistory(history, {"k": initial} if initial else {})
            self.assertEqual(result.ok, expected, f"trial {trial}: {history}")
        self.assertGreater(min(verdicts.values()), 300, verdicts)
