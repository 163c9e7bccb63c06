"""
A linearizability checker for histories of the replicated key-value map.

A history is what clients saw: each operation's invocation and response
times and what it returned.  It is linearizable if there is one total order
of (some of) its operations that (a) respects real time: an operation that
ended before another started comes first; (b) contains every operation whose
outcome is known; and (c) replays correctly on a plain dictionary, each
operation returning what it did return.  That is what the contract promises
for C{get}, C{set} and C{delete}.

Every operation touches one key, so a history is linearizable if and only if
each key's sub-history is (Herlihy and Wing's locality); L{checkHistory}
checks the keys one at a time.

For one key it searches for an order the way Wing and Gong's algorithm does,
with Lowe's refinements ("Testing for linearizability", 2017): operations
are taken "just in time" (only one invoked before the earliest pending
response can come next), and each configuration reached, the set of
operations already placed plus the value of the key, is remembered so that
no configuration is explored twice.  Operations whose outcome is unknown
(the client got no answer, C{UNAVAILABLE}, a timeout, a lost connection)
may take effect at any time after their invocation, or never.  The search
handles them with reductions that are all exact:

  - such an operation only matters if the next operation placed after it
    observes the key (a C{get}, or a C{delete} whose answer says whether the
    key existed); so one is only ever placed immediately before such an
    observer, and otherwise left out (which is the same as placing it after
    everything else);
  - once invoked early enough to be placed, unknown-outcome operations with
    the same effect are interchangeable, so only the earliest unused one is
    tried, and a configuration that used more of them than one already
    explored (same operations placed, same value) is not explored again;
  - every value that no C{get} with a known outcome returned is the same to
    every observer, and is tracked as one value;
  - an unknown-outcome C{set} of a value that only it writes and that some
    C{get} returned must have taken effect before that C{get} answered: it
    is searched as an operation with that deadline.

The search is bounded by C{budget} steps per key.  When that runs out, the
checker tries to refute a window of the history ending where the search
got stuck, with the value at the window's start left free (a relaxation:
if the window has no order, the history has none).  If that fails too, the
verdict is a failure saying the history is undecided, never a pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import attrs

#: Search steps allowed per key before the verdict is "undecided".
DEFAULT_BUDGET = 2_000_000

#: How many operations an explanation lists at most.
EXPLANATION_OPS = 60

KINDS = ("get", "set", "delete")


@attrs.frozen
class Operation:
    """
    One client operation on one key, as the client saw it.

    Operations that definitely failed (C{ERROR}, C{REDIRECT}, a connection
    refused before the request was sent) are not operations: leave them out.

    @ivar client: which client issued it; only used in explanations.
    @ivar kind: C{"get"}, C{"set"} or C{"delete"}.
    @ivar key: the key it reads or writes.
    @ivar value: for C{set}, the value written; L{None} otherwise.
    @ivar start: when the client sent it (any clock, the same for every
        operation of a history, such as L{time.monotonic}).
    @ivar end: when the client got the answer; L{None} if the outcome is
        unknown (no answer, C{UNAVAILABLE}, a timeout, a lost connection).
        An operation precedes another when its C{end} is strictly less
        than the other's C{start}; equal times count as concurrent.
    @ivar result: for a C{get} with a known outcome, the value read, or
        L{None} for C{NOT_FOUND}.  Ignored for other operations.
    @ivar found: for a C{get} or C{delete} with a known outcome, whether
        the key existed: C{True} for C{OK}, C{False} for C{NOT_FOUND}.
        Required for such a C{delete}; optional for a C{get}, where it
        must agree with C{result}.  Ignored for other operations.
    """

    client: str
    kind: str
    key: str
    value: str | None
    start: float
    end: float | None
    result: str | None
    found: bool | None = None


@attrs.frozen
class CheckResult:
    """
    The checker's verdict.

    @ivar ok: whether the history is linearizable.  C{False} also when the
        search budget ran out before a verdict (the explanation says so).
    @ivar key: the first key, in sorted order, whose history is not shown
        to be linearizable; L{None} when C{ok}.
    @ivar explanation: for a failure, the operations of that key with their
        times and why no order fits them; for a pass, a one-line summary.
    """

    ok: bool
    key: str | None
    explanation: str


def checkHistory(
    operations: Iterable[Operation],
    initial: Mapping[str, str] = MappingProxyType({}),
    *,
    budget: int = DEFAULT_BUDGET,
) -> CheckResult:
    """
    Check that a history of operations on the key-value map is linearizable.

    @param operations: the history, in any order.
    @param initial: the map's contents before any of them (absent keys do
        not exist).
    @param budget: the most search steps to spend on any one key (and, if
        they run out, as many again on refuting a window of its history).
    @raise ValueError: for a malformed operation (unknown kind, a C{set}
        without a value, an end before its start, a C{get} whose C{found}
        contradicts its C{result}, a known C{delete} without C{found}).
    """
    byKey: dict[str, list[tuple[int, Operation]]] = {}
    for index, operation in enumerate(operations):
        _validate(index, operation)
        byKey.setdefault(operation.key, []).append((index, operation))
    total = 0
    for key in sorted(byKey):
        checker = _KeyChecker(key, byKey[key], initial.get(key), budget)
        verdict = checker.check()
        total += checker.steps
        if verdict is not None:
            return CheckResult(False, key, verdict)
    count = sum(len(ops) for ops in byKey.values())
    return CheckResult(
        True,
        None,
        f"linearizable: {count} operations on {len(byKey)} keys ({total} search steps)",
    )


def _validate(index: int, op: Operation) -> None:
    where = f"operation #{index} ({op!r})"
    if op.kind not in KINDS:
        raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}")
    if op.kind == "set" and not isinstance(op.value, str):
        raise ValueError(f"{where}: a set needs a value")
    if op.kind != "set" and op.value is not None:
        raise ValueError(f"{where}: only a set has a value")
    if op.end is not None and op.end < op.start:
        raise ValueError(f"{where}: it ends before it starts")
    if op.end is None:
        return
    if op.kind == "get" and op.found is not None and op.found != (op.result is not None):
        raise ValueError(f"{where}: found contradicts result")
    if op.kind == "delete" and op.found is None:
        raise ValueError(f"{where}: a delete with a known outcome needs found")


class _Unread:
    """The one value that stands for every value no known C{get} returned."""

    def __repr__(self) -> str:
        return "<a value no get returned>"


#: The state of a key holding a value that no get with a known outcome read.
UNREAD = _Unread()


class _Entry:
    """A call or return event in the doubly linked list of Lowe's algorithm."""

    __slots__ = ("op", "isCall", "time", "match", "prev", "next")

    def __init__(self, op: _Op | None, isCall: bool, time: float) -> None:
        self.op = op
        self.isCall = isCall
        self.time = time
        self.match: _Entry | None = None
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


class _Op:
    """One operation of a key's history, prepared for the search."""

    __slots__ = ("index", "op", "bit", "position", "effect", "end", "expects", "groups")

    def __init__(
        self, index: int, op: Operation, bit: int, effect: object, end: float | None
    ) -> None:
        #: Its position in the history given to L{checkHistory}.
        self.index = index
        self.op = op
        #: When it must have taken effect by: its response time, if known.
        self.end = end
        #: For an unknown-outcome write: its bit in the set of those placed.
        self.bit = bit
        #: For a known operation: its place in the order of invocations.
        self.position = 0
        #: The state after it, for a write: a value, L{UNREAD} or L{None}.
        self.effect = effect
        #: For an observer: what the state must be (a value or L{None}), or
        #: C{True} for "any value" (a delete that found the key).
        self.expects: object = None
        #: For an observer: the unknown-outcome groups that could satisfy it.
        self.groups: list[_Group] = []


class _Group:
    """Unknown-outcome writes with one effect, by invocation time."""

    __slots__ = ("effect", "members", "used")

    def __init__(self, effect: object) -> None:
        self.effect = effect
        #: The writes, by invocation time.
        self.members: list[_Op] = []
        #: How many of C{members}, the earliest ones, are placed.  Writes of
        #: one group invoked before the earliest pending response are
        #: interchangeable from then on, so only the next one is ever tried.
        self.used = 0


class _KeyChecker:
    """The search for one key's history."""

    def __init__(
        self,
        key: str,
        operations: Sequence[tuple[int, Operation]],
        initial: str | None,
        budget: int,
        refute: bool = True,
        origin: float | None = None,
    ) -> None:
        """
        @param refute: whether to try L{_refuteNear} when the budget runs out.
        @param origin: the time that explanations count from (default: the
            first invocation).
        """
        self.key = key
        self.budget = budget
        self.refute = refute
        self.steps = 0
        self.operations = operations
        if origin is None:
            origin = min((op.start for _, op in operations), default=0.0)
        self.origin = origin
        read = {
            op.result
            for _, op in operations
            if op.kind == "get" and op.end is not None and op.result is not None
        }
        self.read = read
        self.initialValue = initial
        self.initial = self._canonical(initial)
        # An unknown-outcome set of a value that only it writes and that a
        # get with a known outcome returned must have taken effect before
        # the first such get ended: it is an operation with that deadline.
        writers: dict[str | None, int] = {}
        firstRead: dict[str | None, float] = {}
        for _, op in operations:
            if op.kind == "set":
                writers[op.value] = writers.get(op.value, 0) + 1
            elif op.kind == "get" and op.end is not None and op.result is not None:
                firstRead[op.result] = min(op.end, firstRead.get(op.result, op.end))
        known: list[_Op] = []
        groups: dict[object, _Group] = {}
        for index, op in operations:
            effect = self._canonical(op.value) if op.kind == "set" else None
            end = op.end
            if end is None and op.value in firstRead and op.value != initial:
                if writers[op.value] == 1:
                    end = firstRead[op.value]
            if end is not None:
                prepared = _Op(index, op, 0, effect, end)
                if op.kind == "get":
                    prepared.expects = op.result
                elif op.kind == "delete":
                    prepared.expects = True if op.found else None
                known.append(prepared)
            elif op.kind != "get":
                # An unknown-outcome get changes nothing and constrains
                # nothing, so it is left out altogether.
                group = groups.get(effect)
                if group is None:
                    group = groups[effect] = _Group(effect)
                group.members.append(_Op(index, op, 0, effect, None))
        self.known = known
        for position, prepared in enumerate(sorted(known, key=lambda o: (o.op.start, o.index))):
            prepared.position = position
        self.groups = list(groups.values())
        #: Each unknown-outcome write's group, by its bit.
        self.groupOf: dict[int, _Group] = {}
        for group in self.groups:
            group.members.sort(key=lambda o: o.op.start)
            for member in group.members:
                member.bit = 1 << len(self.groupOf)
                self.groupOf[member.bit] = group
        # The groups that can put the key in the state an observer needs;
        # for a delete that found the key, prefer values nobody reads.
        present = sorted(
            (g for g in groups.values() if g.effect is not None),
            key=lambda g: g.effect is not UNREAD,
        )
        for op in known:
            if op.op.kind == "set":
                continue
            if op.expects is True:
                op.groups = present
            elif op.expects in groups:
                op.groups = [groups[op.expects]]
        self.head = self._buildList()
        #: The deepest dead end of the search: how many operations were
        #: placed, which (see L{_Path}), and the value then and the return
        #: event that no option got past.
        self._bestDepth = -1
        self._bestPath: _Path | None = None
        self._bestRest: tuple[object, _Entry | None] = (None, None)

    def _canonical(self, value: str | None) -> object:
        if value is None or value in self.read:
            return value
        return UNREAD

    def _buildList(self) -> _Entry:
        events: list[tuple[float, int, int, _Entry]] = []
        for position, op in enumerate(self.known):
            call = _Entry(op, True, op.op.start)
            ret = _Entry(op, False, op.end)
            call.match = ret
            # Calls sort before returns at equal times: equal is concurrent.
            events.append((op.op.start, 0, position, call))
            events.append((op.end, 1, position, ret))
        events.sort(key=lambda e: e[:3])
        head = _Entry(None, False, float("-inf"))
        previous = head
        for *_, entry in events:
            previous.next = entry
            entry.prev = previous
            previous = entry
        return head

    # -- the search ---------------------------------------------------------------------

    def check(self) -> str | None:
        """Return L{None} if the key's history is linearizable, else why not."""
        phantom = self._neverWritten()
        if phantom is not None:
            lines = [
                f"key {self.key!r}: not linearizable: operation #{phantom.index} read "
                f"{phantom.expects!r}, which no set of this key wrote and which was not its "
                "initial value.",
                self._listing([phantom]),
            ]
            return "\n".join(lines)
        head = self.head
        state = self.initial
        # The known operations placed: all of those with a position below
        # C{base}, and those whose bit is set in C{window} (bit 0 stands for
        # C{base}).  Only operations invoked before the earliest pending
        # response are placed, so C{window} stays small.
        base = 0
        window = 0
        unknownBits = 0
        # Configurations explored, all of them dead ends (or the search would
        # have ended): for each set of placed known operations and value, the
        # sets of unknown-outcome writes placed with them.  Having placed
        # fewer of those is never worse (each group's are placed earliest
        # first, so fewer means a subset), so a configuration is skipped if
        # one with the same known operations and value and a subset of its
        # unknown-outcome writes was explored.
        seen: dict[tuple[int, int, object], list[int]] = {}
        configurations = 0
        # Placed operations, in order: (call entry, option tried, state
        # before it, the unknown-outcome write placed just before it or None,
        # base and window before it).
        stack: list[tuple[_Entry, int, object, _Op | None, int, int, _Path | None]] = []
        # The same placed operations as a linked list, newest first, so that
        # the deepest dead end can be kept without copying.
        path: _Path | None = None
        steps = 0
        budget = self.budget
        apply = self._apply
        entry = head.next
        firstOption = 0
        while entry is not None:
            steps += 1
            if steps > budget:
                self.steps = steps
                return self._undecided(configurations, stack)
            if entry.isCall:
                op = entry.op
                placed = None
                # The placed set with this operation added.
                newWindow = window | (1 << (op.position - base))
                ones = (~newWindow & (newWindow + 1)).bit_length() - 1
                newBase = base + ones
                newWindow >>= ones
                for option in range(firstOption, 1 + len(op.groups)):
                    unknown = None
                    before = state
                    if option:
                        group = op.groups[option - 1]
                        if group.effect == state or group.used == len(group.members):
                            continue
                        unknown = group.members[group.used]
                        if unknown.op.start > self._frontier():
                            continue
                        before = group.effect
                    after = apply(op, before)
                    if after is _MISMATCH:
                        continue
                    newUnknown = unknownBits if unknown is None else unknownBits | unknown.bit
                    explored = seen.setdefault((newBase, newWindow, after), [])
                    if any(not (other & ~newUnknown) for other in explored):
                        continue
                    explored.append(newUnknown)
                    configurations += 1
                    placed = (option, unknown, after, newUnknown)
                    break
                firstOption = 0
                if placed is None:
                    entry = entry.next
                    continue
                option, unknown, after, unknownBits = placed
                stack.append((entry, option, state, unknown, base, window, path))
                path = (op, unknown, path)
                if unknown is not None:
                    self.groupOf[unknown.bit].used += 1
                state = after
                base = newBase
                window = newWindow
                _lift(entry)
                entry = head.next
            else:
                # The earliest pending response: its operation must be placed
                # before anything invoked later, and no option placed it.
                if len(stack) > self._bestDepth:
                    self._bestDepth = len(stack)
                    self._bestPath = path
                    self._bestRest = (state, entry)
                if not stack:
                    self.steps = steps
                    return self._explain(
                        f"key {self.key!r}: not linearizable "
                        f"({configurations} configurations searched)."
                    )
                entry, firstOption, state, unknown, base, window, path = stack.pop()
                firstOption += 1
                if unknown is not None:
                    self.groupOf[unknown.bit].used -= 1
                    unknownBits &= ~unknown.bit
                _unlift(entry)
        self.steps = steps
        return None

    def _frontier(self) -> float:
        """The earliest response time among the known operations not yet placed."""
        entry = self.head.next
        while entry.isCall:
            entry = entry.next
        return entry.time

    @staticmethod
    def _apply(op: _Op, state: object) -> object:
        kind = op.op.kind
        if kind == "set":
            return op.effect
        if kind == "get":
            return state if state == op.expects else _MISMATCH
        if (state is not None) != (op.expects is True):
            return _MISMATCH
        return None

    # -- explanations -------------------------------------------------------------------

    def _undecided(self, configurations: int, stack: list[tuple[_Entry, ...]]) -> str:
        while stack:
            _unlift(stack.pop()[0])
        verdict = (
            f"key {self.key!r}: undecided: the search budget of {self.budget} steps ran out "
            f"after {configurations} configurations, so the history is neither shown "
            "linearizable nor refuted (counted as a failure)."
        )
        if self._bestDepth < 0:
            return verdict + "\n" + self._listing(None)
        if self.refute:
            refuted = self._refuteNear(self._bestRest[1].op)
            if refuted is not None:
                return refuted
        return self._explain(verdict + "  The deepest dead end found so far:")

    def _refuteNear(self, stuck: _Op) -> str | None:
        """
        Try to prove the history wrong from a window of it that ends with
        C{stuck}, where the full search got stuck: if even a relaxed window
        has no order, neither has the whole history.  Return why, or
        L{None} if the windows tried (of growing size, within the budget)
        prove nothing.

        The window from time C{T} holds the known-outcome operations invoked
        from C{T} on, with the key's value at C{T} free: it may be any value
        written by a set invoked before C{T}, the initial value, or absent
        (in any order of the whole history, the last operation to end
        before C{T} comes after only operations invoked before C{T}).
        Operations in flight at C{T}, and operations invoked after C{stuck}
        ended, count as having unknown outcomes, so the window only loses
        constraints.
        """
        byStart = sorted(self.known, key=lambda o: o.position)
        spent = 0
        back = 16
        while back < stuck.position * 2:
            cut = byStart[max(0, stuck.position - back)].op.start
            back *= 4
            window = self._window(cut, stuck.end)
            read = {
                op.result
                for _, op in window
                if op.kind == "get" and op.end is not None and op.result is not None
            }
            # The values the key may hold at the cut, one for each value no
            # known get in the window returns (they are all alike to it).
            candidates: dict[object, str | None] = {None: None}
            writes = [op.value for _, op in self.operations if op.kind == "set" and op.start < cut]
            for value in [self.initialValue, *writes]:
                if value is not None:
                    candidates.setdefault(value if value in read else UNREAD, value)
            reasons = []
            for value in candidates.values():
                checker = _KeyChecker(
                    self.key, window, value, self.budget - spent, refute=False, origin=self.origin
                )
                reason = checker.check()
                spent += checker.steps
                if reason is None or checker.steps > checker.budget:
                    break
                # Without its first line, which repeats the verdict.
                reasons.append((checker._bestDepth, value, reason.partition("\n")[2]))
            else:
                origin = self.origin
                _, value, reason = max(reasons, key=lambda r: r[0])
                tried = ", ".join(
                    "any value no get there returned" if c is UNREAD else _showState(c)
                    for c in candidates
                )
                return (
                    f"key {self.key!r}: not linearizable.  The whole history is too long to "
                    "search, but its operations invoked from "
                    f"{cut - origin:.6f}s (seconds after {origin:.6f}) up to the response of "
                    f"#{stuck.index} at {stuck.end - origin:.6f}s admit no order, whatever the "
                    f"value at {cut - origin:.6f}s ({tried}; operations in flight then and "
                    "invoked later count as unknown outcomes).  With the initial value "
                    f"{_showState(value)}:\n{reason}"
                )
            if spent >= self.budget or back > 4 * len(byStart):
                return None
        return None

    def _window(self, cut: float, until: float) -> list[tuple[int, Operation]]:
        """
        The relaxed sub-history of L{_refuteNear}: operations invoked from
        C{cut} on, known ones only if invoked by C{until}, and in flight
        at C{cut} or unknown in outcome or invoked after C{until}: as
        writes of unknown outcome.
        """
        window = []
        for index, op in self.operations:
            ended = op.end is not None and op.end < cut
            if ended or (op.start > until and op.kind == "get"):
                continue
            if op.end is not None and (op.start < cut or op.start > until):
                if op.kind == "get":
                    continue
                op = attrs.evolve(op, end=None, result=None, found=None)
            window.append((index, op))
        return window

    def _explain(self, verdict: str) -> str:
        placed = []
        path = self._bestPath
        while path is not None:
            op, unknown, path = path
            placed.append((op, unknown))
        placed.reverse()
        state, blocker = self._bestRest
        stuck = blocker.op
        origin = self.origin
        lines = [verdict, f"Initial value: {_showState(self.initialValue)}."]
        recent = [op for op, _ in placed[-12:]] + [stuck]
        lines.append(self._listing(recent))
        lines.append(
            f"The longest consistent order found places {len(placed)} of the "
            f"{len(self.known)} operations with a known outcome" + (":" if placed else ".")
        )
        shown = placed[-12:]
        if len(placed) > len(shown):
            lines.append(f"  ... {len(placed) - len(shown)} earlier ones")
        for op, unknown in shown:
            if unknown is not None:
                lines.append(f"  {self._describe(unknown, origin)} (outcome unknown)")
            lines.append(f"  {self._describe(op, origin)}")
        actual = self._replay(placed)
        lines.append(f"Then the value is {_showState(actual)}.")
        why = self._why(stuck, state, actual)
        lines.append(
            f"Next must come {self._describe(stuck, origin)}, or an operation concurrent "
            f"with it, since all others started after it ended; but {why}."
        )
        placedOps = {id(op) for op, _ in placed}
        others = []
        entry = self.head.next
        while entry is not None and entry is not blocker:
            if entry.isCall and entry.op is not stuck and id(entry.op) not in placedOps:
                others.append(entry.op)
            entry = entry.next
        if others:
            lines.append("Nor can an operation concurrent with it go first:")
            for op in others[:10]:
                lines.append(f"  {self._describe(op, origin)}: {self._why(op, state, actual)}")
            if len(others) > 10:
                lines.append(f"  ... and {len(others) - 10} more")
        return "\n".join(lines)

    def _replay(self, placed: Sequence[tuple[_Op, _Op | None]]) -> str | None:
        """The actual value after C{placed} (the search only tracks L{UNREAD})."""
        value = self.initialValue
        for op, unknown in placed:
            for o in (unknown, op):
                if o is not None and o.op.kind != "get":
                    value = o.op.value
        return value

    def _why(self, op: _Op, state: object, actual: str | None) -> str:
        """Why C{op} cannot come next in state C{state} (really C{actual})."""
        if self._apply(op, state) is not _MISMATCH:
            return "every order placing it next was explored and fails later"
        if op.op.kind == "get":
            wanted = _showState(op.expects)
        else:
            wanted = "present" if op.expects is True else "absent"
        reason = f"it needs the key {wanted} while it is {_showState(actual)}"
        if op.groups:
            reason += ", and no unknown-outcome write that would make it so can go just before it"
        return reason

    def _neverWritten(self) -> _Op | None:
        """A get with a known outcome that read a value nothing wrote, if any."""
        written = {op.value for _, op in self.operations if op.kind == "set"}
        for op in self.known:
            if op.op.kind == "get" and op.expects is not None:
                if op.expects not in written and op.expects != self.initialValue:
                    return op
        return None

    def _listing(self, recent: Sequence[_Op] | None) -> str:
        """
        List the key's operations; if there are many, only those that
        overlap the span of the C{recent} ones (for one with an unknown
        outcome: invoked within it).
        """
        origin = self.origin
        ops = sorted(self._allOps(), key=lambda o: (o.op.start, o.index))
        if recent and len(ops) > EXPLANATION_OPS:
            low = min(o.op.start for o in recent)
            high = max(o.op.start if o.op.end is None else o.op.end for o in recent)
            ops = [
                o
                for o in ops
                if o.op.start <= high and (o.op.start if o.op.end is None else o.op.end) >= low
            ]
        lines = [
            f"Operations on {self.key!r} (#index in the history; times in seconds after "
            f"{origin:.6f}; 'unknown' means no response):"
        ]
        lines.extend(f"  {self._describe(o, origin)}" for o in ops[:EXPLANATION_OPS])
        omitted = len(self.operations) - min(len(ops), EXPLANATION_OPS)
        if omitted > 0:
            lines.append(f"  ({omitted} other operations of this key not shown)")
        return "\n".join(lines)

    def _allOps(self) -> list[_Op]:
        known = {o.index for o in self.known}
        return [
            *self.known,
            *(_Op(i, op, 0, None, None) for i, op in self.operations if i not in known),
        ]

    @staticmethod
    def _describe(op: _Op, origin: float) -> str:
        o = op.op
        end = "unknown" if o.end is None else f"{o.end - origin:.6f}"
        if o.kind == "set":
            what = f"set {o.value!r}"
        elif o.end is None:
            what = f"{o.kind} -> unknown"
        elif o.kind == "get":
            what = "get -> NOT_FOUND" if o.result is None else f"get -> {o.result!r}"
        else:
            what = "delete -> OK" if o.found else "delete -> NOT_FOUND"
        return f"#{op.index} {o.client}: {what} [{o.start - origin:.6f}, {end}]"


_MISMATCH = object()

#: Placed operations as a linked list: (operation, unknown-outcome write
#: placed just before it or None, the operations placed before).
_Path = tuple


def _showState(state: object) -> str:
    return "absent" if state is None else repr(state)


def _lift(entry: _Entry) -> None:
    """Take a placed operation's call and return events out of the list."""
    entry.prev.next = entry.next
    entry.next.prev = entry.prev
    match = entry.match
    match.prev.next = match.next
    if match.next is not None:
        match.next.prev = match.prev


def _unlift(entry: _Entry) -> None:
    """Put a call and return back where they were (the inverse of L{_lift})."""
    match = entry.match
    match.prev.next = match
    if match.next is not None:
        match.next.prev = match
    entry.prev.next = entry
    entry.next.prev = entry
