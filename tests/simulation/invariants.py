"""
The global truth about a simulated run, and the checks of Raft's safety
properties against it (Figure 3 of the paper, and more; see
L{InvariantChecker}).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from txraft.core import CANDIDATE, LEADER, NOOP, PRECANDIDATE, RaftCore, Ready
from txraft.kv import KeyValueStore
from txraft.membership import Membership, isMembershipCommand, parseMembership
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
)
from txraft.sessions import MAX_SESSIONS, SESSION_WINDOW

if TYPE_CHECKING:
    from tests.simulation.nodes import SimNode


def isPreVote(message: Message) -> bool:
    """Whether C{message} belongs to a pre-vote round (which grants no real vote)."""
    return bool(getattr(message, "preVote", False))


def describeMembership(membership: Membership) -> str:
    """A membership in a few characters: its names, learners marked C{~}."""
    names = [("" if m.voter else "~") + m.name for m in membership.members]
    return "{" + " ".join(names) + "}"


def describeCommand(command: str) -> str:
    """A log entry's command for a trace line; a membership as its names."""
    if isMembershipCommand(command):
        return "membership " + describeMembership(parseMembership(command))
    return repr(command)


def describe(value: object) -> str:
    """A compact text for a trace line."""
    if isinstance(value, AppendEntries):
        shown = ", ".join(
            f"{e.index}/{e.term} {describeCommand(e.command)}" for e in value.entries[:3]
        )
        more = f", +{len(value.entries) - 3}" if len(value.entries) > 3 else ""
        return (
            f"AppendEntries(t{value.term} prev {value.prevLogIndex}/{value.prevLogTerm} "
            f"[{shown}{more}] commit {value.leaderCommit}"
            f"{' timeoutNow' if value.timeoutNow else ''})"
        )
    if isinstance(value, AppendEntriesResponse):
        if value.success:
            return f"AppendOK(t{value.term} match {value.matchIndex})"
        return (
            f"AppendRejected(t{value.term} at {value.rejectedIndex} "
            f"hint {value.hintIndex}/{value.hintTerm})"
        )
    if isinstance(value, RequestVote):
        kind = "PreVote" if isPreVote(value) else "RequestVote"
        transfer = " transfer" if value.transfer else ""
        return f"{kind}(t{value.term} last {value.lastLogIndex}/{value.lastLogTerm}{transfer})"
    if isinstance(value, RequestVoteResponse):
        kind = "PreVoteAnswer" if isPreVote(value) else "Vote"
        return f"{kind}(t{value.term} {'granted' if value.voteGranted else 'refused'})"
    if isinstance(value, InstallSnapshot):
        return (
            f"InstallSnapshot(t{value.term} up to {value.lastIncludedIndex}/"
            f"{value.lastIncludedTerm} bytes {value.offset}+{len(value.data)}"
            f"{' done' if value.done else ''})"
        )
    if isinstance(value, InstallSnapshotResponse):
        return (
            f"SnapshotAnswer(t{value.term} up to {value.lastIncludedIndex} "
            f"next {value.nextOffset} match {value.matchIndex})"
        )
    if isinstance(value, Entry):
        return f"{value.index}/{value.term} {describeCommand(value.command)}"
    if isinstance(value, Membership):
        return describeMembership(value)
    return str(value)


def referenceApply(state: dict[str, str], command: str) -> tuple[dict[str, str], str | None]:
    """
    The key-value semantics, written independently of L{KeyValueStore}:
    the state after C{command} and its reply (L{None} for a no-op).
    """
    if command == NOOP or isMembershipCommand(command):
        return state, None
    name, _, rest = command.partition(" ")
    if name == "set":
        key, _, value = rest.partition(" ")
        return {**state, key: value}, "OK"
    if name == "get":
        return state, f"OK {state[rest]}" if rest in state else "NOT_FOUND"
    if name == "delete":
        if rest not in state:
            return state, "NOT_FOUND"
        return {k: v for k, v in state.items() if k != rest}, "OK"
    if name == "show":
        return state, "OK " + json.dumps(state, ensure_ascii=False, sort_keys=True)
    raise AssertionError(f"the simulation never sends {command!r}")


#: A numbered command in the log, parsed apart from L{txraft.sessions}.
_NUMBERED = re.compile(r"([A-Za-z0-9_-]+)#([1-9][0-9]*)@(.*)")

#: What L{ReferenceSessions} keeps of each client: its highest SEQ and the
#: log index of its last request.
SessionView = dict[str, tuple[int, int]]


class ReferenceSessions:
    """
    The exactly-once rules (dissertation section 6.3, as README's
    "Exactly-once requests" states them), written independently of
    L{txraft.sessions.SessionTable}: plain dicts, every answer kept, the
    window and the eviction checked by arithmetic.

    @ivar view: each client's highest SEQ and last index, after the last
        entry applied; replaced, never changed, so older views stay valid.
    """

    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self.view: SessionView = {}
        self.answers: dict[str, dict[int, str | None]] = {}

    def apply(
        self, state: dict[str, str], command: str, index: int
    ) -> tuple[dict[str, str], str | None]:
        """The state after the entry C{command} at C{index}, and its reply."""
        match = _NUMBERED.fullmatch(command)
        if match is None:
            return referenceApply(state, command)
        client, seq, inner = match[1], int(match[2]), match[3]
        read = inner.split(" ")[0] in ("get", "show")
        view = dict(self.view)
        if client not in view:
            if seq != 1:
                return state, "ERROR session expired"
            if len(view) == MAX_SESSIONS:
                oldest = min(view, key=lambda c: view[c][1])
                del view[oldest], self.answers[oldest]
            view[client] = (0, index)
            self.answers[client] = {}
        highest = view[client][0]
        view[client] = (max(seq, highest), index)
        self.view = view
        if seq > highest:
            state, reply = referenceApply(state, inner)
            self.answers[client][seq] = None if read else reply
            return state, reply
        if highest - seq >= SESSION_WINDOW:
            return state, (
                f"ERROR session expired: the answer to SEQ {seq} is no longer kept "
                f"(only the last {SESSION_WINDOW})"
            )
        if seq not in self.answers[client]:
            return state, (
                f"ERROR SEQ {seq} never ran and now cannot: a later one of this client, "
                f"SEQ {highest}, ran first"
            )
        kept = self.answers[client][seq]
        if kept is None:
            return referenceApply(state, inner)
        self.stats["duplicatesCommitted"] += 1
        return state, kept


def sessionView(store: KeyValueStore) -> SessionView:
    """A node's sessions as L{ReferenceSessions} keeps them."""
    return {c: (seq, index) for c, seq, index, _ in store.sessions.capture()}


def majority(membership: Membership) -> int:
    """How many voters of C{membership} make a majority of them."""
    return len(membership.voters()) // 2 + 1


def holdsDurably(node: SimNode, index: int, term: int) -> bool:
    """Whether C{node}'s disk holds the entry C{index}/C{term}, or a snapshot past it."""
    saved = node.snapshotStore.snapshot
    if saved is not None and saved.index >= index:
        return saved.index > index or saved.term == term
    durable = node.logStore.durable
    if not durable or not durable[0].index <= index <= durable[-1].index:
        return False
    return durable[index - durable[0].index].term == term


class CoreView(Protocol):
    """
    What the checks need of a node: its name, whether it runs, and its
    core.  A simulated node is one; so is each node of L{tests.raftnet}.
    """

    name: str
    up: bool
    core: RaftCore


class InvariantChecker:
    """
    The global truth about a run, and the checks of Raft's safety
    properties (Figure 3 of the paper) against it.  The checks of Election
    Safety (L{observeRole}), Log Matching (L{checkEntries}), Leader
    Completeness and the safety of commits (L{observeCommitted}) need only
    a L{CoreView}, and are shared with the core tests' L{tests.raftnet};
    the others check a simulated node's disk and state machine too.  With
    membership changes (dissertation chapter 4), votes count against the
    candidate's own membership, and L{checkMembership},
    L{checkLeaderCommit}, L{checkProposals} and L{checkRole} check the
    configurations.

    @ivar leaders: the leader of each term that had one.
    @ivar votes: whom each node granted its vote in each term.
    @ivar registry: for every (index, term) any log ever held, the command
        and the term of the entry before it.
    @ivar committed: the committed log: the entry at each committed index.
    @ivar committedCommands: every command in it.
    @ivar commitTerms: the term in which each committed index was first
        committed (the current term of the node that first committed it).
    @ivar states: the reference state machine after each committed index.
    @ivar sessions: the reference client sessions, and C{sessionViews} what
        they were after each committed index.
    @ivar replies: the reference reply of each committed entry.
    @ivar memberships: each committed membership entry's index and
        membership, in log order (L{txraft.membership}).
    @ivar bootstrap: the membership the cluster starts with, if known: the
        one before the first committed membership entry.
    """

    def __init__(
        self, fail: Callable[[str], None], stats: Counter[str], replay: bool = True
    ) -> None:
        """
        @param fail: raises the failure it is given.
        @param replay: commands are key-value commands: keep the reference
            state and reply after each committed entry.
        """
        self.fail = fail
        self.stats = stats
        self.replay = replay
        self.leaders: dict[int, str] = {}
        self.votes: dict[tuple[str, int], str] = {}
        self.registry: dict[tuple[int, int], tuple[str, int]] = {}
        self.committed: list[Entry] = []
        self.committedCommands: set[str] = set()
        self.commitTerms: list[int] = []
        self.states: list[dict[str, str]] = [{}]
        self.sessions = ReferenceSessions(stats)
        self.sessionViews: list[SessionView] = [{}]
        self.replies: list[str | None] = [None]
        self.memberships: list[tuple[int, Membership]] = []
        self.bootstrap: Membership | None = None
        self.nodes: list[Any] = []

    # -- per-event checks ---------------------------------------------------------

    def observeVote(self, voter: str, term: int, candidate: str) -> None:
        """A node granted its vote: one candidate per term, even across restarts."""
        holder = self.votes.setdefault((voter, term), candidate)
        if holder != candidate:
            self.fail(
                f"Vote durability: {voter} granted its term {term} vote "
                f"to {holder} and then to {candidate}"
            )

    def observeRole(self, node: CoreView) -> None:
        """Election Safety, and Leader Completeness for a leader first seen."""
        core = node.core
        if core.role == LEADER:
            holder = self.leaders.get(core.currentTerm)
            if holder is None:
                self.leaders[core.currentTerm] = node.name
                self.stats["leadersElected"] += 1
                self.checkElected(node)
                self.checkLeaderCompleteness(node)
            elif holder != node.name:
                self.fail(
                    f"Election Safety: {holder} and {node.name} both lead term {core.currentTerm}"
                )

    def checkElected(self, node: CoreView) -> None:
        """
        A leader may campaign (L{checkMayCampaign}: a learner, a removed server
        or one waiting to join never leads, but a voter being removed may
        until its removal commits), and holds the votes of a majority of
        the voters of its membership (the newest in its log) for its term,
        its own only if it is one of them (sections 5.2, 4.1 and 4.2.2):
        grants counted from another term, twice, or from servers that are
        not its voters, do not make it one.
        """
        core = node.core
        voters = core.membership.voters()
        if node.name not in voters:
            self.checkMayCampaign(node, f"leads term {core.currentTerm}")
            self.stats["leadersBeingRemoved"] += 1
        grants = [
            voter
            for (voter, term), candidate in self.votes.items()
            if term == core.currentTerm
            and candidate == node.name
            and voter != node.name
            and voter in voters
        ]
        own = [node.name] if node.name in voters else []
        if len(own) + len(grants) < majority(core.membership):
            self.fail(
                f"Election: {node.name} leads term {core.currentTerm} with the votes of "
                f"{sorted([*own, *grants])} only, not of a majority of "
                f"{describeMembership(core.membership)}"
            )

    def checkMayCampaign(self, node: CoreView, doing: str) -> None:
        """
        Only a voter of its own membership campaigns, or one whose removal
        (or demotion) is not committed as far as it knows: the membership
        before named it a voter, and the cluster may still need it until
        the change commits (dissertation section 4.2.2, Figure 4.6).
        """
        core = node.core
        if node.name in core.membership.voters():
            return
        if core.membershipIndex > core.commitIndex:
            before = core.membershipAt(core.membershipIndex - 1)
            if node.name in before.voters():
                return
        self.fail(
            f"{node.name} {doing} but is no voter of its membership "
            f"{describeMembership(core.membership)}, which is committed or did not "
            "remove it"
        )

    def observeCampaign(self, node: CoreView, request: RequestVote) -> None:
        """A server asks for votes (or pre-votes) only if it may campaign."""
        self.checkMayCampaign(node, f"sends {describe(request)}")

    def observeReady(self, node: SimNode, ready: Ready) -> None:
        """Check what C{node} just made durable, its role and its commits."""
        core = node.core
        self.observeRole(node)
        if core.commitIndex < node.commitSeen:
            self.fail(
                f"commitIndex of {node.name} (incarnation {node.incarnation}) went back "
                f"from {node.commitSeen} to {core.commitIndex}"
            )
        # A leader's own commit (also the one after which a removed leader
        # steps down, in the same step).  A server elected in this step
        # commits nothing of its own in it (it counts itself only once its
        # no-op is durable, in a later step); a commit index it learned as a
        # follower first (a TimeoutNow's, say) is its predecessor's.
        led = node.role == LEADER and node.term == core.currentTerm
        advanced = core.commitIndex > node.commitSeen
        node.commitSeen = core.commitIndex
        logChanged = (
            ready.truncateFrom is not None or bool(ready.entries) or ready.snapshot is not None
        )
        if logChanged:
            first = [e.index for e in ready.entries[:1]]
            if ready.truncateFrom is not None:
                first.append(ready.truncateFrom)
            if ready.snapshot is not None:
                first.append(ready.snapshot.index + 1)
            self.checkEntries(node, min(first))
            self.checkDurable(node, full=False)
        for entry in ready.committed:
            self.observeCommitted(node, entry)
        if core.role == LEADER and core.commitIndex > len(self.committed):
            # A leader's commit of entries its own fsync has yet to make
            # durable: it applies them (hands them out) only then.
            for entry in core.log.slice(len(self.committed) + 1, core.commitIndex + 1):
                self.observeCommitted(node, entry)
        if advanced and led:
            self.checkLeaderCommit(node)
        if core.role == LEADER and ready.entries:
            self.checkProposals(node, ready.entries)
        self.checkRole(node)
        if (
            ready.truncateFrom is not None
            or ready.snapshot is not None
            or any(isMembershipCommand(e.command) for e in ready.entries)
        ):
            self.checkMembership(node)

    def checkRole(self, node: SimNode) -> None:
        """
        Only a server that may campaign (L{checkMayCampaign}) campaigns, and
        a leader whose removal (or demotion) is committed has stepped down
        (section 4.2.2).
        """
        core = node.core
        voter = node.name in core.membership.voters()
        if core.role in (PRECANDIDATE, CANDIDATE) and not voter:
            self.checkMayCampaign(node, f"is {core.role} in term {core.currentTerm}")
        if core.role == LEADER and not voter and core.membershipIndex <= core.commitIndex:
            self.fail(
                f"{node.name} still leads term {core.currentTerm} after the membership that "
                f"removed it, {describeMembership(core.membership)} at index "
                f"{core.membershipIndex}, committed"
            )

    def checkProposals(self, node: SimNode, entries: list[Entry]) -> None:
        """
        A leader proposes a membership change only once it has committed an
        entry of its own term (so it knows the newest committed membership:
        Ongaro, raft-dev, 2015), and only once the change before it, in its
        log, is committed (dissertation section 4.2).
        """
        core = node.core
        log = core.log
        for entry in entries:
            if entry.term != core.currentTerm or not isMembershipCommand(entry.command):
                continue
            if log.term(core.commitIndex) != core.currentTerm:
                self.fail(
                    f"{node.name}, leader of term {core.currentTerm}, proposes "
                    f"{describe(entry)} before it committed an entry of its term "
                    f"(its commit index {core.commitIndex} is of an earlier term)"
                )
            before = next(
                (
                    index
                    for index in range(entry.index - 1, log.compactedIndex, -1)
                    if isMembershipCommand(log.entry(index).command)
                ),
                0,
            )
            if before > core.commitIndex:
                self.fail(
                    f"{node.name}, leader of term {core.currentTerm}, proposes "
                    f"{describe(entry)} while the change at {before} is not committed "
                    f"(its commit index is {core.commitIndex})"
                )

    def checkLeaderCommit(self, node: SimNode) -> None:
        """
        A leader just advanced its commit index: the entry there is of its
        term (section 5.4.2), and the voters of its membership that hold it
        on disk (in their log, or under their snapshot) are a majority of
        them.  A learner's copy, or the leader's own when it removed
        itself, does not count (sections 4.2.1 and 4.2.2).
        """
        core = node.core
        index = core.commitIndex
        term = core.log.term(index)
        if term != core.currentTerm:
            self.fail(
                f"{node.name}, leader of term {core.currentTerm}, commits up to {index}, "
                f"an entry of term {term}"
            )
        nodes = {other.name: other for other in self.nodes}
        voters = sorted(core.membership.voters())
        holders = [
            name for name in voters if name in nodes and holdsDurably(nodes[name], index, term)
        ]
        if len(holders) < majority(core.membership):
            self.fail(
                f"{node.name}, leader of term {core.currentTerm}, commits up to {index}/{term}, "
                f"which only {holders} of the voters {voters} hold on disk"
            )

    def checkMembership(self, node: SimNode) -> None:
        """
        A node's membership is the newest one its log holds, committed or
        not, else its snapshot's, else its bootstrap one (section 4.1); and
        no log holds more than one membership entry after the committed
        log: a leader proposes a change only once the one before it
        committed, and a log is a prefix of some leader's log.
        """
        core = node.core
        log = core.log
        found: tuple[int, Membership] | None = None
        pending = []
        for index in range(log.compactedIndex + 1, log.lastIndex + 1):
            command = log.entry(index).command
            if isMembershipCommand(command):
                found = (index, parseMembership(command))
                if index > len(self.committed):
                    pending.append(index)
        if found is None:
            saved = node.snapshotStore.snapshot
            if node.driver is not None and node.driver.savingSnapshot:
                saved = core.snapshot  # on its way to the disk
            if saved is not None and saved.membership:
                found = (log.compactedIndex, parseMembership(saved.membership))
            else:
                found = (log.compactedIndex, node.bootstrap)
        # A membership from the snapshot or the bootstrap has no entry in
        # the log: its index is at most the snapshot's.
        index = core.membershipIndex
        if found[0] == log.compactedIndex and index <= log.compactedIndex:
            index = found[0]
        if (index, core.membership) != found:
            self.fail(
                f"{node.name} runs with the membership {describeMembership(core.membership)} "
                f"of index {core.membershipIndex}, but the newest in its log, snapshot or "
                f"bootstrap is {describeMembership(found[1])} of index {found[0]}"
            )
        if len(pending) > 1:
            self.fail(
                f"{node.name}'s log holds membership entries at {pending}, more than one "
                f"after the committed log's end {len(self.committed)}"
            )

    def observeCommitted(self, node: CoreView, entry: Entry) -> None:
        """C{node} committed C{entry}: it must agree with every earlier commit."""
        index = entry.index
        if index <= len(self.committed):
            if self.committed[index - 1] != entry:
                self.fail(
                    f"State Machine Safety: {node.name} commits {describe(entry)} at index "
                    f"{index}, where {describe(self.committed[index - 1])} was committed"
                )
            return
        if index != len(self.committed) + 1:
            self.fail(f"{node.name} commits index {index} after {len(self.committed)}")
        term = node.core.currentTerm
        self.committed.append(entry)
        self.committedCommands.add(entry.command)
        self.commitTerms.append(term)
        if isMembershipCommand(entry.command):
            self._membershipCommitted(entry)
        if self.replay:
            state, reply = self.sessions.apply(self.states[-1], entry.command, index)
            self.states.append(state)
            self.sessionViews.append(self.sessions.view)
            self.replies.append(reply)
        # An entry committed late by a stale leader must already be in the
        # log of every leader of a later term (section 5.4.3).
        for other in self.nodes:
            core = other.core
            if other.up and core.role == LEADER and core.currentTerm > term:
                if not self._holds(core, index, entry):
                    self.fail(
                        f"Leader Completeness: {describe(entry)} committed in term {term} "
                        f"is missing from {other.name}, leader of term {core.currentTerm}"
                    )

    def _membershipCommitted(self, entry: Entry) -> None:
        """Record a committed membership, and count what changed."""
        membership = parseMembership(entry.command)
        before = self.memberships[-1][1] if self.memberships else self.bootstrap
        self.memberships.append((entry.index, membership))
        if before is None:
            return
        old = {m.name: m for m in before.members}
        new = {m.name: m for m in membership.members}
        for name in new.keys() - old.keys():
            self.stats["membersAdded"] += 1
            self.stats["votersAdded" if new[name].voter else "learnersAdded"] += 1
        for name in old.keys() - new.keys():
            self.stats["membersRemoved"] += 1
            if self.leaders.get(entry.term) == name:
                self.stats["leadersRemoved"] += 1
        for name in old.keys() & new.keys():
            if new[name].voter and not old[name].voter:
                self.stats["learnersPromoted"] += 1
            elif old[name].voter and not new[name].voter:
                self.stats["votersDemoted"] += 1

    def membershipAt(self, index: int) -> Membership | None:
        """The newest committed membership at or before C{index} (L{None}: the bootstrap one)."""
        found = None
        for at, membership in self.memberships:
            if at > index:
                break
            found = membership
        return found

    def observeApplied(self, node: SimNode, results: list[tuple[Entry, str | None]]) -> None:
        """C{node} executed C{results}: same entries, replies and state as the replay."""
        for entry, reply in results:
            index = entry.index
            if index > len(self.committed) or self.committed[index - 1] != entry:
                known = "nothing"
                if index <= len(self.committed):
                    known = describe(self.committed[index - 1])
                self.fail(
                    f"State Machine Safety: {node.name} applies {describe(entry)} at index "
                    f"{index}, where {known} was committed"
                )
            if reply != self.replies[index]:
                self.fail(
                    f"{node.name} applied {describe(entry)} with reply {reply!r}; "
                    f"the replay of the committed log gives {self.replies[index]!r}"
                )
        self.checkApplied(node)

    def observeSnapshot(self, node: SimNode, snapshot: Snapshot) -> None:
        """A snapshot taken or installed is the committed log's replay up to its index."""
        self._checkReplayed(f"{node.name}'s snapshot", snapshot)
        index = snapshot.index
        membership = parseMembership(snapshot.membership) if snapshot.membership else None
        if membership != self.membershipAt(index):
            expected = self.membershipAt(index)
            self.fail(
                f"{node.name}'s snapshot up to {index} records the membership "
                f"{snapshot.membership!r}; the committed log's is "
                f"{describeMembership(expected) if expected else 'the bootstrap one'}"
            )

    def observeBackup(self, node: str, snapshot: Snapshot, committedBefore: int) -> None:
        """
        A backup C{node} answered holds the committed log's replay up to its
        index, which is past every entry committed before it was asked for,
        and names the membership as of that index (the bootstrap one too).
        """
        if snapshot.index < committedBefore:
            self.fail(
                f"{node}'s backup ends at {snapshot.index}, before entry {committedBefore}, "
                "committed before the backup was asked for"
            )
        self._checkReplayed(f"{node}'s backup", snapshot)
        expected = self.membershipAt(snapshot.index) or self.bootstrap
        if parseMembership(snapshot.membership) != expected:
            self.fail(
                f"{node}'s backup up to {snapshot.index} names the membership "
                f"{snapshot.membership!r}; the committed log's is "
                f"{describeMembership(expected) if expected else None}"
            )
        self.stats["backupsChecked"] += 1

    def _checkReplayed(self, what: str, snapshot: Snapshot) -> None:
        """C{snapshot}'s map and sessions are the replay of the committed log up to its index."""
        index = snapshot.index
        if index > len(self.committed) or self.committed[index - 1].term != snapshot.term:
            self.fail(
                f"State Machine Safety: {what} up to {index}/{snapshot.term} "
                "is not of a committed entry"
            )
        mapLine, _, sessionsLine = snapshot.data.partition(b"\n")
        if json.loads(mapLine) != self.states[index]:
            self.fail(
                f"{what} up to {index} holds {snapshot.data!r}; the replay "
                f"of the committed log gives {self.states[index]}"
            )
        sessions = json.loads(sessionsLine) if sessionsLine else []
        if {c: (seq, last) for c, seq, last, _ in sessions} != self.sessionViews[index]:
            self.fail(
                f"Exactly once: {what} up to {index} holds the sessions "
                f"{sessions}; the replay of the committed log gives {self.sessionViews[index]}"
            )

    # -- the checks ---------------------------------------------------------------

    @staticmethod
    def _holds(core: RaftCore, index: int, entry: Entry) -> bool:
        """Whether C{core}'s log (or snapshot) holds C{entry} at C{index}."""
        log = core.log
        if index <= log.compactedIndex:
            return index < log.compactedIndex or log.compactedTerm == entry.term
        return index <= log.lastIndex and log.entry(index) == entry

    def checkEntries(self, node: CoreView, first: int) -> None:
        """
        Log Matching, checked inductively: an entry with a given index and
        term always has the same command and follows an entry of the same
        term, in every log at every time.  (A leader creates at most one
        entry per index in its term and never changes its log before it;
        followers copy both.)  Two logs that agree at (index, term) then
        agree on every entry before it.  A log that starts after a
        snapshot must start after a committed entry.
        """
        log = node.core.log
        base = log.compactedIndex
        if base and first <= base + 1:
            if base > len(self.committed) or self.committed[base - 1].term != log.compactedTerm:
                self.fail(
                    f"Log Matching: {node.name}'s log starts after {base}/{log.compactedTerm}, "
                    "which is not a committed entry"
                )
        registry = self.registry
        for index in range(max(first, base + 1), log.lastIndex + 1):
            entry = log.entry(index)
            seen = (entry.command, log.term(index - 1))
            known = registry.setdefault((index, entry.term), seen)
            if known != seen:
                self.fail(
                    f"Log Matching: {node.name} holds {describe(entry)} after an entry of "
                    f"term {seen[1]}, but a log held {known[0]!r} at index {index} term "
                    f"{entry.term} after an entry of term {known[1]}"
                )

    def checkDurable(self, node: SimNode, full: bool) -> None:
        """
        The log written (and the snapshot) is the core's: the node wrote
        every Ready.  What is durable of it reaches at least what the core
        counts as durable; only a leader's newest entries may wait for the
        fsync of its next turn (dissertation section 10.2.1).
        """
        core = node.core
        log = core.log
        base = log.compactedIndex
        written, durable = node.logStore.entries, node.logStore.durable
        same = len(written) == log.lastIndex - base and (
            not written or written[-1] == log.entry(log.lastIndex)
        )
        if same and full:
            saved = node.snapshotStore.snapshot
            # The log may keep entries its snapshot covers, never lack one after it.
            same = (
                written == log.slice(base + 1, log.lastIndex + 1)
                and base <= (saved.index if saved else 0) == core.snapshotIndex
            )
        if not same:
            self.fail(f"{node.name}: the log written differs from the core's log")
        kept = len(durable)
        if kept < core.durableIndex - base or (kept and durable[-1] != written[kept - 1]):
            self.fail(
                f"{node.name}: counts its log durable up to {core.durableIndex}, "
                f"but its disk holds {kept} entries after {base} ({describe(durable[-1:])})"
            )

    def checkApplied(self, node: SimNode) -> None:
        """
        lastApplied never decreases; it is commitIndex, a core rebuilt
        after a disk failure included (Figure 2: lastApplied never passes
        commitIndex, and the driver applies what commits at once), except
        while the node installs its leader's snapshot (it applies nothing
        until that is loaded), and on a leader, which applies only what its
        own disk holds (durableIndex, as the core counts it: checked against
        the disk by checkDurable); the state machine is the replay up to it,
        its client sessions included (so no node ran a write of a (client,
        SEQ) twice, or skipped one).
        """
        applied = node.logManager.lastApplied
        if applied < node.appliedSeen:
            self.fail(f"lastApplied of {node.name} went back from {node.appliedSeen} to {applied}")
        node.appliedSeen = applied
        installing = node.driver is not None and node.driver.installingSnapshot
        core = node.core
        applicable = core.commitIndex
        if core.role == LEADER:
            applicable = min(applicable, core.durableIndex)
        if applied > applicable or (applied < applicable and not installing):
            self.fail(
                f"{node.name} applied up to {applied} but commitIndex is {core.commitIndex}"
                + (f" and durableIndex {core.durableIndex}" if core.role == LEADER else "")
            )
        if node.stateMachine.data != self.states[applied]:
            self.fail(
                f"{node.name}'s state machine is {node.stateMachine.data} after applying "
                f"{applied} entries; the replay of the committed log gives {self.states[applied]}"
            )
        if len(node.stateMachine.sessions) != len(self.sessionViews[applied]) or any(
            node.stateMachine.sessions.highest(c) != seq
            or node.stateMachine.sessions.lastIndex(c) != last
            for c, (seq, last) in self.sessionViews[applied].items()
        ):
            self.fail(
                f"Exactly once: {node.name}'s sessions are {sessionView(node.stateMachine)} "
                f"after applying {applied} entries; the replay gives {self.sessionViews[applied]}"
            )

    def checkLeaderCompleteness(self, node: CoreView) -> None:
        """
        Leader Completeness: the leader of term T holds every entry
        committed in a term before T.
        """
        core = node.core
        for index, (entry, term) in enumerate(
            zip(self.committed, self.commitTerms, strict=True), 1
        ):
            if term < core.currentTerm and not self._holds(core, index, entry):
                self.fail(
                    f"Leader Completeness: {node.name}, leader of term {core.currentTerm}, "
                    f"lacks {describe(entry)} committed in term {term}"
                )

    def checkNode(self, node: SimNode) -> None:
        """Check the whole state of one running node."""
        core = node.core
        log = core.log
        self.checkEntries(node, 1)
        if node.driver is None or not node.driver.savingSnapshot:
            # (A node saving its leader's snapshot is ahead of its disk
            # until the save ends, and says nothing meanwhile.)
            self.checkDurable(node, full=True)
        base = log.compactedIndex
        if log.slice(base + 1, core.commitIndex + 1) != self.committed[base : core.commitIndex]:
            self.fail(f"{node.name}'s log up to commitIndex is not the committed log")
        if core.snapshot is not None:
            self.observeSnapshot(node, core.snapshot)
        self.checkApplied(node)
        self.checkRole(node)
        self.checkMembership(node)
        if core.role == LEADER:
            if self.leaders.get(core.currentTerm) != node.name:
                self.fail(
                    f"Election Safety: {node.name} leads term {core.currentTerm}, "
                    f"led by {self.leaders.get(core.currentTerm)}"
                )
            self.checkLeaderCompleteness(node)

    def checkAll(self) -> None:
        """Check the whole state of every running node."""
        for node in self.nodes:
            if node.up and not node.silent:
                if node.core.commitIndex < node.commitSeen:
                    self.fail(f"commitIndex of {node.name} went back to {node.core.commitIndex}")
                self.checkNode(node)
