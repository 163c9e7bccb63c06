"""
The pure Raft core: roles, terms, elections, replication, commitment,
reads that need no log entry, membership changes and leadership transfer.

L{RaftCore} follows Figure 2 of Ongaro & Ousterhout, "In Search of an
Understandable Consensus Algorithm" (2014).  It does no I/O and reads no
clock: it is driven by four inputs,

  - L{RaftCore.tick}: one unit of logical time has passed;
  - L{RaftCore.step}: a message arrived from a peer;
  - L{RaftCore.propose}: clients asked the leader to append commands;
  - L{RaftCore.read}: clients asked the leader to read the state machine;

(and, from operators, L{RaftCore.changeMembership} and
L{RaftCore.transferLeadership}),

and each input returns a L{Ready} saying what to persist, what to send and
what became committed.  The driver must make a L{Ready}'s state durable
before sending its messages or its reply, and must do so before feeding the
core its next input: the core counts its own log as replicated as soon as
it has appended to it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

import attrs

from txraft.membership import (
    Membership,
    MembershipError,
    isMembershipCommand,
    parseMembership,
)
from txraft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    HardState,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
)
from txraft.raftlog import RaftLog


def _checkSingleChange(old: Membership, new: Membership) -> None:
    """
    Raise L{MembershipError} unless C{new} differs from C{old} in one
    server only (dissertation section 4.2): one added, one removed, or one
    whose vote changed, and every other exactly as it was.
    """
    before = {member.name: member for member in old.members}
    after = {member.name: member for member in new.members}
    changed = {
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    }
    if len(changed) != 1:
        raise MembershipError("a membership change adds, removes or changes one server")
    if not new.voters():
        raise MembershipError("a cluster needs a voter")


FOLLOWER = "follower"
PRECANDIDATE = "precandidate"
CANDIDATE = "candidate"
LEADER = "leader"

#: The command a new leader appends to commit entries of earlier terms (section 5.4.2).
NOOP = "noop"

#: The term and vote of a server that has never run.
FRESH = HardState()

#: The default election timeout's range, in ticks: each timeout is drawn from it.
ELECTION_TICKS = (40, 80)

#: The default heartbeat interval, in ticks: well below the election timeout.
HEARTBEAT_TICKS = 10

#: AppendEntries carries at most this many bytes of commands (at least one
#: entry).  A follower parses each line in one go, and reads the appends in
#: flight (L{MAX_INFLIGHT_APPENDS}) in one turn: at 512 KiB, four lines of
#: 9,000 short commands each held its event loop for 70 to 80 ms while it
#: caught up; at 128 KiB a line takes about 5 ms.
MAX_APPEND_BYTES = 128 * 1024

#: A leader has at most this many AppendEntries carrying entries out to one
#: follower, unanswered (etcd's MaxInflightMsgs).  Entries proposed while the
#: window is full wait, and go together in the append sent when an answer
#: frees a place: a slow follower is not sent megabytes it cannot yet read,
#: which would hold up the heartbeats behind them.
MAX_INFLIGHT_APPENDS = 4

#: InstallSnapshot carries at most this many bytes of snapshot.
SNAPSHOT_CHUNK_BYTES = 256 * 1024

#: When a server compacts its log after a snapshot, it keeps this many of
#: the entries the snapshot covers (etcd keeps 5,000, hashicorp/raft
#: 10,240), so that a follower a little behind is sent entries rather than
#: the whole snapshot.  A leader also keeps the entries after any snapshot
#: it is still sending: the follower that loads it goes on with entries,
#: not with the next snapshot, however long the loading took.
TRAILING_ENTRIES = 5_000


class CoreLogger(Protocol):
    """
    Where the core reports what it decides (an election, a step-down, a
    refused request): C{twisted.logger.Logger} fits, and so does anything
    with these methods.  The core itself does no I/O.
    """

    def info(self, format: str, **fields: object) -> None:
        """Something worth knowing happened."""

    def error(self, format: str, **fields: object) -> None:
        """A peer broke a rule of the protocol."""

    def critical(self, format: str, **fields: object) -> None:
        """A peer asked for something that would lose committed data."""


class SilentLogger:
    """A L{CoreLogger} that drops everything: the default of a bare core."""

    def info(self, format: str, **fields: object) -> None:
        """Drop an informational event."""

    def error(self, format: str, **fields: object) -> None:
        """Drop an error event."""

    def critical(self, format: str, **fields: object) -> None:
        """Drop a critical event."""


class NotLeaderError(Exception):
    """A proposal reached a node that is not the leader; ``leaderId`` may name one."""

    def __init__(self, leaderId: str | None) -> None:
        super().__init__(leaderId)
        self.leaderId = leaderId


class TransferringError(Exception):
    """The leader is handing its leadership over and takes no new command meanwhile."""


class ChangeInProgressError(MembershipError):
    """A membership change was asked for while another is not yet committed."""

    def __init__(self) -> None:
        super().__init__("a membership change is in progress")


class LeaderNotReadyError(MembershipError):
    """A new leader has not yet committed an entry of its term: it changes no membership."""

    def __init__(self) -> None:
        super().__init__("the leader has not yet committed an entry of its term")


@attrs.define
class Ready:
    """
    The output of one input to the core, to be handled in this order:

      1. persist: save C{hardState} if not L{None}; drop log entries from
         C{truncateFrom} on if not L{None}; if C{snapshot} is not L{None},
         save it and drop the log entries it covers; append C{entries};
         fsync, then tell the core with L{RaftCore.persisted}.  When
         C{syncAfterSend} is set (a leader's, with nothing but entries to
         persist), the fsync may wait until after step 2, or be shared with
         later Readies; any other Ready waits for every entry written
         before it to be durable.  The leader counts itself in a majority
         only for entries it was told are durable (dissertation section
         10.2.1, writing the log in parallel with sending it);
      2. send C{reply} (if any) back to the peer whose request was stepped,
         and each C{(peer, message)} in C{messages};
      3. if C{snapshot} is not L{None}, reset the state machine to it; then
         apply C{committed}, in order;
      4. answer each read of C{reads}: its leader was confirmed.
    """

    hardState: HardState | None = None
    truncateFrom: int | None = None
    entries: list[Entry] = attrs.Factory(list)
    messages: list[tuple[str, Message]] = attrs.Factory(list)
    reply: Message | None = None
    committed: list[Entry] = attrs.Factory(list)
    snapshot: Snapshot | None = None
    #: The contexts of the reads (L{RaftCore.read}) whose leader was confirmed.
    reads: list[object] = attrs.Factory(list)

    @property
    def syncAfterSend(self) -> bool:
        """
        Whether C{messages} may go out before the log is durable, C{entries}
        and those of earlier Readies: they are a leader's (a C{reply}
        acknowledges what its sender holds), and nothing else is to be
        persisted (a term, a vote, a truncation or a snapshot must be
        durable before anyone hears of it).
        """
        return not (self.hardState or self.truncateFrom is not None or self.snapshot or self.reply)

    @property
    def needsSync(self) -> bool:
        """Whether step 1 writes anything."""
        return bool(
            self.hardState or self.truncateFrom is not None or self.entries or self.snapshot
        )


@attrs.define
class Progress:
    """
    The leader's view of one follower (Figure 2's nextIndex and matchIndex).

    In probe mode the leader sends one AppendEntries and waits for its answer
    (or the next heartbeat) before sending another, because it does not yet
    know where the follower's log matches.  Once an append succeeds it
    switches to pipelining: new entries are sent as soon as they are
    proposed, and ``nextIndex`` advances optimistically, as long as fewer
    than the core's C{maxInflightAppends} appends with entries are out.
    """

    nextIndex: int
    matchIndex: int = 0
    probing: bool = True
    probeSent: bool = False
    #: While pipelining: the last index of each append with entries sent and
    #: not yet known to have landed, oldest first.
    inflight: list[int] = attrs.Factory(list)
    #: Whether the follower answered since the leader's last election timeout.
    recentActive: bool = False
    #: The snapshot being sent to a follower that needs entries the leader
    #: compacted away, and how many of its bytes the follower holds.
    snapshot: Snapshot | None = None
    snapshotOffset: int = 0
    #: Whether the chunk out was still unanswered at the last heartbeat: it
    #: is sent again at the next one.
    chunkOverdue: bool = False
    #: The latest read round the follower answered in this term.
    readRound: int = 0


@attrs.define
class _ReadRound:
    """Reads waiting for a majority to answer heartbeats of round C{number}."""

    number: int
    contexts: list[object]


@attrs.define
class _IncomingSnapshot:
    """A snapshot a follower is receiving in chunks."""

    index: int
    term: int
    data: bytearray = attrs.Factory(bytearray)


class RaftCore:
    """
    One Raft server's consensus state machine.

    @ivar currentTerm: the latest term this server has seen; only increases.
    @ivar votedFor: whom this server voted for in C{currentTerm}, or L{None}.
    @ivar log: the server's L{RaftLog}.
    @ivar commitIndex: the highest index known to be committed; only increases.
    @ivar role: L{FOLLOWER}, L{PRECANDIDATE}, L{CANDIDATE} or L{LEADER}.
    @ivar leaderId: the leader of C{currentTerm} as far as this server knows.
    @ivar membership: the newest membership in the log, committed or not
        (dissertation section 4.1), or the snapshot's, or the bootstrap one.
    @ivar membershipIndex: the index of the entry that holds C{membership}
        (the snapshot's index, or 0 for the bootstrap membership).
    @ivar peers: every other member, voter or learner: whom a leader
        replicates to.
    @ivar leadTransferee: whom this leader is handing over to, if anyone.
    """

    def __init__(
        self,
        name: str,
        peers: Sequence[str] = (),
        *,
        membership: Membership | None = None,
        hardState: HardState = FRESH,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        commitIndex: int = 0,
        electionTicks: tuple[int, int] = ELECTION_TICKS,
        heartbeatTicks: int = HEARTBEAT_TICKS,
        rng: random.Random | None = None,
        maxAppendBytes: int = MAX_APPEND_BYTES,
        maxInflightAppends: int = MAX_INFLIGHT_APPENDS,
        trailingEntries: int = TRAILING_ENTRIES,
        preVote: bool = True,
        checkQuorum: bool = True,
        logger: CoreLogger | None = None,
    ) -> None:
        """
        @param peers: the other servers' names, all voters, for a core that
            needs no addresses (tests); or give C{membership}.
        @param membership: the bootstrap membership: what the core uses
            while neither its snapshot nor its log holds one.  Empty for a
            server waiting to be added to a cluster.
        @param hardState: the recovered term and vote.
        @param snapshot: the recovered snapshot, if any; the state machine
            must already hold its state.
        @param entries: the recovered log after the snapshot.
        @param commitIndex: how far the log is known to be committed
            beyond the snapshot: what the state machine has applied
            already, when a running node rebuilds its core.  Those entries
            are not handed out again.
        @param electionTicks: the election timeout is drawn uniformly from
            C{[low, high)} ticks each time it is reset (section 5.2).
        @param heartbeatTicks: how often a leader sends AppendEntries to an
            idle follower; must be well below C{electionTicks[0]}.
        @param rng: the source of randomized timeouts (seed it in tests).
        @param maxAppendBytes: the most bytes of commands one AppendEntries
            carries (at least one entry).
        @param maxInflightAppends: the most AppendEntries with entries out
            to one follower, unanswered (L{MAX_INFLIGHT_APPENDS}).
        @param trailingEntries: how many entries a snapshot covers stay in
            the log when it compacts (L{TRAILING_ENTRIES}).
        @param preVote: run a pre-vote round before each election, so that a
            server that cannot win (one rejoining after a partition, say)
            does not bump everyone's term and depose a healthy leader
            (dissertation section 9.6).
        @param checkQuorum: a leader steps down when it has not heard from a
            majority within an election timeout, and a follower that heard
            from its leader within the minimum election timeout neither
            grants votes nor adopts the term of a vote request
            (dissertation sections 6.2 and 4.2.3).
        @param logger: where to report elections and refused requests
            (default: nowhere).
        """
        low, high = electionTicks
        if not 0 < heartbeatTicks < low < high:
            raise ValueError("need 0 < heartbeatTicks < electionTicks low < high")
        if trailingEntries < 0:
            raise ValueError("trailingEntries must be at least 0")
        self.name = name
        if membership is None:
            membership = Membership.ofVoters(list(dict.fromkeys([*peers, name])))
        self.currentTerm = hardState.currentTerm
        self.votedFor = hardState.votedFor
        self.snapshot = snapshot
        base = (snapshot.index, snapshot.term) if snapshot else (0, 0)
        self.log = RaftLog(entries, *base)
        # The membership as of the snapshot, and those of the entries after it.
        self._bootstrap = membership
        self._baseMembership = (
            parseMembership(snapshot.membership)
            if snapshot and snapshot.membership
            else membership
        )
        self._memberships = [
            (e.index, parseMembership(e.command))
            for e in entries
            if isMembershipCommand(e.command)
        ]
        # What a snapshot covers, and what was applied, is committed.
        commitIndex = max(base[0], commitIndex)
        if commitIndex > self.log.lastIndex:
            raise ValueError(f"committed up to {commitIndex} beyond the log's end")
        self.commitIndex = commitIndex
        self.role = FOLLOWER
        self.leaderId: str | None = None
        self._membershipChanged()
        self.electionTicks = electionTicks
        self.heartbeatTicks = heartbeatTicks
        self.maxAppendBytes = maxAppendBytes
        self.maxInflightAppends = maxInflightAppends
        self.trailingEntries = trailingEntries
        self.preVote = preVote
        self.checkQuorum = checkQuorum
        self._rng = rng if rng is not None else random.Random()
        self._logger: CoreLogger = logger if logger is not None else SilentLogger()
        self._electionElapsed = 0
        self._heartbeatElapsed = 0
        self._electionTimeout = 0
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self._handedOut = commitIndex  # entries up to here were returned in Ready.committed
        self._incoming: _IncomingSnapshot | None = None
        # Reads on a leader: the last round of leadership checks started,
        # the reads waiting for the next round, the round out (at most one).
        self._readRound = 0
        self._readQueue: list[object] = []
        self._readsOut: _ReadRound | None = None
        self.leadTransferee: str | None = None
        # The entries last sent in an AppendEntries, and the start, the log's
        # last index and its rewrites when they were cut (L{_entriesFrom}).
        self._lastSent: tuple[tuple[int, int, int], tuple[Entry, ...]] = ((0, 0, -1), ())
        self._transferElapsed = 0
        self._persisted = hardState
        #: The last index of this server's log known to be on its disk (the
        #: driver says so through L{persisted}); what it loaded was.
        self.durableIndex = self.log.lastIndex
        self._ready = Ready()
        self._resetElectionTimer()

    # -- inputs -------------------------------------------------------------

    def tick(self) -> Ready:
        """
        Advance logical time by one tick: maybe start an election or
        heartbeat; let go of some of the entries a compaction dropped.
        """
        self.log.release()
        self._electionElapsed += 1
        if self.role == LEADER:
            self._heartbeatElapsed += 1
            if self._heartbeatElapsed >= self.heartbeatTicks:
                self._heartbeatElapsed = 0
                for peer in self.peers:
                    self._sendAppend(peer, heartbeat=True)
            self._tickTransfer()
            if self._electionElapsed >= self.electionTicks[0]:
                self._electionElapsed = 0
                self._checkQuorum()
        elif self._electionElapsed >= self._electionTimeout:
            if not self.isVoter() and not self._stillNeeded():
                # A learner, a removed server or one waiting to join never
                # campaigns: it cannot win, and must not disturb anyone.
                self._resetElectionTimer()
            elif self.preVote:
                self._preCampaign()
            else:
                self._campaign()
        return self._takeReady()

    def step(self, peer: str, message: Message) -> Ready:
        """Handle C{message} from C{peer}; requests get their answer in C{Ready.reply}."""
        # A server takes messages from servers outside its membership too: a
        # leader that its log does not know yet, a candidate that was added
        # (dissertation section 4.1).
        if peer == self.name:
            raise ValueError(f"{peer!r} is this server")
        progress = self._progress.get(peer)
        if progress is not None:
            progress.recentActive = True
        if isinstance(message, RequestVote):
            self._handleRequestVote(peer, message)
        elif isinstance(message, RequestVoteResponse):
            self._handleVote(peer, message)
        else:
            fromLeader = isinstance(message, (AppendEntries, InstallSnapshot))
            if message.term > self.currentTerm:
                # Figure 2, all servers: a higher term means we are out of date.
                self._becomeFollower(message.term, peer if fromLeader else None)
            if message.term < self.currentTerm:
                # A stale leader: tell it our term so it steps down.  Stale
                # responses are dropped.
                if isinstance(message, AppendEntries):
                    self._ready.reply = AppendEntriesResponse(self.currentTerm, False)
                elif isinstance(message, InstallSnapshot):
                    self._ready.reply = InstallSnapshotResponse(self.currentTerm)
            elif fromLeader and not self._followLeader(peer):
                self._ready.reply = (
                    AppendEntriesResponse(self.currentTerm, False)
                    if isinstance(message, AppendEntries)
                    else InstallSnapshotResponse(self.currentTerm)
                )
            elif isinstance(message, AppendEntries):
                self._handleAppendEntries(message)
            elif isinstance(message, InstallSnapshot):
                self._handleInstallSnapshot(message)
            elif isinstance(message, AppendEntriesResponse):
                self._handleAppendResponse(peer, message)
            else:
                self._handleSnapshotResponse(peer, message)
        return self._takeReady()

    def persisted(self, index: int) -> Ready:
        """
        The driver made this server's log durable up to C{index} (its
        fsync of the entries of earlier Readies returned).  A leader may
        now count itself for them, and commit.
        """
        self.durableIndex = max(self.durableIndex, min(index, self.log.lastIndex))
        if self.role == LEADER:
            self._maybeCommit()
        return self._takeReady()

    def propose(self, commands: Sequence[str]) -> Ready:
        """
        Append C{commands} to the leader's log and start replicating them.

        The new entries are C{Ready.entries}, in order, so the caller learns
        their indexes and term.

        @raise NotLeaderError: if this server is not the leader.
        """
        if self.role != LEADER:
            raise NotLeaderError(self.leaderId)
        if self.leadTransferee is not None:
            raise TransferringError(self.leadTransferee)
        if any(isMembershipCommand(command) for command in commands):
            raise ValueError("a membership changes through changeMembership")
        self._replicate(commands)
        return self._takeReady()

    def changeMembership(self, membership: Membership) -> Ready:
        """
        Start changing the cluster to C{membership}, which must differ from
        the current one by one server: added (as a learner or a voter),
        removed, or turned from learner to voter or back (dissertation
        section 4.2).  The new membership takes effect as soon as its entry
        is in the log; the change is done once that entry commits
        (C{membershipIndex <= commitIndex}).  A leader that removes itself
        leads until then without counting itself, then steps down.

        @raise NotLeaderError: if this server is not the leader.
        @raise TransferringError: while it hands its leadership over.
        @raise ChangeInProgressError: while an earlier change is not
            committed: one change at a time keeps any two majorities of
            consecutive memberships overlapping.
        @raise LeaderNotReadyError: until this leader has committed an entry
            of its own term, so that it knows the latest committed membership
            (the fix to single-server changes, Ongaro, raft-dev, 2015).
        @raise MembershipError: if the change is not one server's.
        """
        if self.role != LEADER:
            raise NotLeaderError(self.leaderId)
        if self.leadTransferee is not None:
            raise TransferringError(self.leadTransferee)
        if self.membershipIndex > self.commitIndex:
            raise ChangeInProgressError()
        if self.log.term(self.commitIndex) != self.currentTerm:
            raise LeaderNotReadyError()
        _checkSingleChange(self.membership, membership)
        self._replicate([membership.encode()])
        return self._takeReady()

    def transferLeadership(self, target: str) -> Ready:
        """
        Hand leadership over to the voter C{target} (dissertation section
        3.10): stop taking commands, bring C{target}'s log up to date, then
        tell it to start an election at once (an AppendEntries with
        C{timeoutNow}), which it wins before anyone's timer runs out.  The
        transfer is abandoned after an election timeout without it.

        @raise NotLeaderError: if this server is not the leader.
        @raise MembershipError: if C{target} is this server or no voter.
        """
        if self.role != LEADER:
            raise NotLeaderError(self.leaderId)
        if target == self.name or not self.membership.isVoter(target):
            raise MembershipError(f"{target} is not another voter")
        self.leadTransferee = target
        self._transferElapsed = 0
        if self._progress[target].matchIndex == self.log.lastIndex:
            self._sendTimeoutNow(target)
        else:
            self._sendAppend(target)
        return self._takeReady()

    def read(self, contexts: Sequence[object]) -> Ready:
        """
        Confirm this leader for reads that need no log entry (dissertation
        section 6.4, ReadIndex): the reads come out in C{Ready.reads} once a
        majority has answered a round of heartbeats sent after they came,
        which proves that no other leader had committed anything by then.
        Every read waiting when a round starts shares it; at most one round
        is out at a time.  Reads of a leader that steps down are dropped:
        the driver answers them.

        The driver answers each read from the state machine as it is right
        after applying the read's index: the leader's last index when the
        read came, never less than its commit index then.  So a new leader
        answers no read before its no-op commits (until then it may not
        know all that its predecessors committed), and a read sees the
        writes this leader took before it and none after.

        @param contexts: one opaque object per read, handed back as is.
        @raise NotLeaderError: if this server is not the leader.
        """
        if self.role != LEADER:
            raise NotLeaderError(self.leaderId)
        self._readQueue.extend(contexts)
        self._startReadRound()
        return self._takeReady()

    def compact(self, snapshot: Snapshot) -> int:
        """
        Take C{snapshot} as this server's newest and forget log entries it
        covers.  The driver calls this once it has saved a snapshot of the
        state machine taken right after applying entry C{snapshot.index};
        the core ships it to followers that need what it replaced
        (dissertation chapter 5).  The log keeps the last
        C{trailingEntries} entries it covers, and, on a leader, every
        entry after a snapshot still being sent to a follower that
        answered since the last election timeout.

        @return: the index of the last entry forgotten, to which the driver
            compacts the log on disk.
        """
        if not self.snapshotIndex < snapshot.index <= self._handedOut:
            raise ValueError(f"cannot compact to {snapshot.index}: not applied or not new")
        if self.log.term(snapshot.index) != snapshot.term:
            raise ValueError(f"snapshot {snapshot.index} has the wrong term")
        upTo = snapshot.index - self.trailingEntries
        for progress in self._progress.values():
            # (Not for a follower silent since the last election timeout:
            # one that is down must not keep the log from being compacted.)
            if progress.snapshot is not None and progress.recentActive:
                upTo = min(upTo, progress.snapshot.index)
        upTo = max(upTo, self.log.compactedIndex)
        membership = self.membershipAt(snapshot.index)
        if membership is not self._bootstrap:
            # What a follower installs must say who the members were then.
            snapshot = attrs.evolve(snapshot, membership=membership.encode())
        self._baseMembership = self.membershipAt(upTo)
        self._memberships = [(i, m) for i, m in self._memberships if i > upTo]
        self.log.compact(upTo)
        self.snapshot = snapshot
        return upTo

    @property
    def snapshotIndex(self) -> int:
        """The index of the last entry this server's newest snapshot covers (0: none)."""
        return self.snapshot.index if self.snapshot is not None else 0

    # -- status ---------------------------------------------------------------

    def quorum(self) -> int:
        """How many voters make a majority of the newest membership."""
        return len(self._voters) // 2 + 1

    def isVoter(self) -> bool:
        """Whether this server votes in its newest membership."""
        return self.name in self._voters

    def membershipAt(self, index: int) -> Membership:
        """
        The membership as of entry C{index}, which may not be before the
        log's compaction point.
        """
        if index < self.log.compactedIndex:
            raise ValueError(f"entry {index} is compacted away")
        found = self._baseMembership
        for at, membership in self._memberships:
            if at > index:
                break
            found = membership
        return found

    def progress(self, peer: str) -> Progress:
        """The leader's L{Progress} for C{peer} (only meaningful on a leader)."""
        return self._progress[peer]

    # -- roles ------------------------------------------------------------------

    def _becomeFollower(self, term: int, leaderId: str | None) -> None:
        if term > self.currentTerm:
            self.currentTerm = term
            self.votedFor = None
        if self.role != FOLLOWER:
            self._logger.info("{name} becomes follower in term {term}", name=self.name, term=term)
            # A follower's timer keeps running: only hearing from a leader or
            # granting a vote resets it (Figure 2), so a candidate that can
            # never win cannot keep everyone else from campaigning.
            self._resetElectionTimer()
        self.role = FOLLOWER
        self.leaderId = leaderId
        self._progress = {}
        self._readQueue, self._readsOut = [], None
        self.leadTransferee = None

    def _preCampaign(self) -> None:
        """Section 9.6 of the dissertation: ask whether we could win before disturbing anyone."""
        self.role = PRECANDIDATE
        self.leaderId = None
        self._votes = {self.name: True}
        self._resetElectionTimer()
        if self._countVotes() >= self.quorum():
            self._campaign()
            return
        request = RequestVote(
            self.currentTerm + 1, self.log.lastIndex, self.log.lastTerm, preVote=True
        )
        for peer in self._voterPeers():
            self._ready.messages.append((peer, request))

    def _campaign(self, transfer: bool = False) -> None:
        """
        Section 5.2: increment the term, vote for ourselves, ask every
        other voter; with C{transfer}, at our leader's request.
        """
        self.currentTerm += 1
        self.votedFor = self.name
        self.role = CANDIDATE
        self.leaderId = None
        self._votes = {self.name: True}
        self._resetElectionTimer()
        self._logger.info(
            "{name} starts an election for term {term}", name=self.name, term=self.currentTerm
        )
        if self._countVotes() >= self.quorum():
            self._becomeLeader()
            return
        request = RequestVote(
            self.currentTerm, self.log.lastIndex, self.log.lastTerm, transfer=transfer
        )
        for peer in self._voterPeers():
            self._ready.messages.append((peer, request))

    def _becomeLeader(self) -> None:
        self.role = LEADER
        self.leaderId = self.name
        self._heartbeatElapsed = 0
        self._electionElapsed = 0
        nextIndex = self.log.lastIndex + 1
        self._progress = {peer: Progress(nextIndex) for peer in self.peers}
        self._readRound = 0
        self.leadTransferee = None
        self._logger.info(
            "{name} is leader for term {term}", name=self.name, term=self.currentTerm
        )
        # Section 5.4.2 / Figure 8: entries of earlier terms only commit once an
        # entry of the leader's own term does; a no-op gets there at once.
        self._replicate([NOOP])

    def _resetElectionTimer(self) -> None:
        self._electionElapsed = 0
        low, high = self.electionTicks
        self._electionTimeout = self._rng.randrange(low, high)

    # -- RequestVote --------------------------------------------------------------

    def _handleRequestVote(self, peer: str, request: RequestVote) -> None:
        stale = request.term < self.currentTerm
        if request.preVote:
            # A pre-vote asks about a term after ours; answering changes nothing here.
            stale = request.term <= self.currentTerm
        if stale or (self._inLease() and not request.transfer):
            # While our leader is alive we help no one depose it, and we do
            # not even adopt the term (dissertation section 4.2.3), unless
            # the leader itself asked the candidate to take over (3.10).
            self._ready.reply = RequestVoteResponse(self.currentTerm, False, request.preVote)
            return
        # Never vote for a candidate whose log is less complete than ours (5.4.1).
        upToDate = self.log.isUpToDate(request.lastLogIndex, request.lastLogTerm)
        if request.preVote:
            term = request.term if upToDate else self.currentTerm
            self._ready.reply = RequestVoteResponse(term, upToDate, preVote=True)
            return
        if request.term > self.currentTerm:
            self._becomeFollower(request.term, None)
        # One vote per term, first come first served.
        grant = upToDate and self.votedFor in (None, peer)
        if grant:
            self.votedFor = peer
            self._resetElectionTimer()
        self._ready.reply = RequestVoteResponse(self.currentTerm, grant)

    def _handleVote(self, peer: str, response: RequestVoteResponse) -> None:
        if response.term > self.currentTerm and not (response.preVote and response.voteGranted):
            self._becomeFollower(response.term, None)
            return
        if response.preVote:
            granted = response.voteGranted and response.term == self.currentTerm + 1
            if self.role == PRECANDIDATE and (granted or not response.voteGranted):
                self._votes[peer] = granted
                if self._countVotes() >= self.quorum():
                    self._campaign()
        elif self.role == CANDIDATE and response.term == self.currentTerm:
            self._votes[peer] = response.voteGranted
            if self._countVotes() >= self.quorum():
                self._becomeLeader()

    def _inLease(self) -> bool:
        """Whether, as far as this server knows, a live leader leads its term."""
        if not self.checkQuorum:
            return False
        if self.role == LEADER:
            return True
        return self.leaderId is not None and self._electionElapsed < self.electionTicks[0]

    def _checkQuorum(self) -> None:
        """
        Every election timeout a leader counts anew which followers answer.
        With CheckQuorum, one that has not heard from a majority in the
        timeout that ended steps down, so its clients are told instead of
        left waiting (dissertation section 6.2).
        """
        active = self.isVoter() + sum(
            self._progress[peer].recentActive for peer in self._voterPeers()
        )
        for progress in self._progress.values():
            progress.recentActive = False
        if self.checkQuorum and active < self.quorum():
            self._logger.info(
                "{name} lost contact with a majority; stepping down in term {term}",
                name=self.name,
                term=self.currentTerm,
            )
            self._becomeFollower(self.currentTerm, None)

    def _stillNeeded(self) -> bool:
        """
        Whether this server, no voter of its newest membership, must still
        campaign: that membership is not committed as far as it knows, and
        the one before named it a voter.  Until the change commits the
        others may need it to elect anyone, since it may hold the only copy
        of the change (dissertation section 4.2.2 and Figure 4.6: a leader
        that removed itself from two servers, and stepped down before the
        other got the change, refuses that other its vote for a shorter
        log).  Its own vote does not count (L{_countVotes}).
        """
        if self.membershipIndex <= self.commitIndex:
            return False
        before = self.membershipAt(self.membershipIndex - 1)
        return before.isVoter(self.name)

    def _countVotes(self) -> int:
        """The grants from voters of the newest membership (section 4.1)."""
        return sum(granted for name, granted in self._votes.items() if name in self._voters)

    def _voterPeers(self) -> list[str]:
        return [peer for peer in self.peers if peer in self._voters]

    # -- AppendEntries: follower side -------------------------------------------

    def _followLeader(self, peer: str) -> bool:
        """
        Recognise C{peer} as the leader of the current term (it sent
        AppendEntries or InstallSnapshot); L{False} if that cannot be.
        """
        if self.role == LEADER:
            # Election Safety says this cannot happen; refuse rather than obey.
            self._logger.error(
                "{name}: {peer} claims to lead term {term}, which we lead",
                name=self.name,
                peer=peer,
                term=self.currentTerm,
            )
            return False
        if self.role != FOLLOWER or self.leaderId != peer:
            self._becomeFollower(self.currentTerm, peer)
        self._electionElapsed = 0
        return True

    def _handleAppendEntries(self, request: AppendEntries) -> None:
        # Whatever the answer, it tells the leader that we follow it in its
        # term, and so confirms its leadership for the reads of that round.
        answer = self._appendEntries(request)
        if request.readRound:
            answer = attrs.evolve(answer, readRound=request.readRound)
        self._ready.reply = answer
        if request.timeoutNow and answer.success and self.isVoter():
            # Our leader hands over to us, and our log holds all of its (it
            # sends this with its last entry as prevLogIndex): campaign now,
            # without a pre-vote (dissertation section 3.10).
            self._logger.info(
                "{name} takes over leadership at its leader's request", name=self.name
            )
            self._campaign(transfer=True)

    def _appendEntries(self, request: AppendEntries) -> AppendEntriesResponse:
        """Figure 2, AppendEntries receiver rules 2 to 5, for the leader of our term."""
        prevIndex, prevTerm = request.prevLogIndex, request.prevLogTerm
        if prevIndex < self.log.compactedIndex:
            # We compacted away entries the leader is still probing: they
            # are committed, so they match; say where our log really starts.
            return AppendEntriesResponse(
                self.currentTerm, True, matchIndex=self.log.compactedIndex
            )
        if prevIndex > self.log.lastIndex or self.log.term(prevIndex) != prevTerm:
            # Consistency check failed: tell the leader where to resume.
            hintIndex = self.log.findConflictByTerm(prevIndex, prevTerm)
            return AppendEntriesResponse(
                self.currentTerm,
                False,
                rejectedIndex=prevIndex,
                hintIndex=hintIndex,
                hintTerm=self.log.term(hintIndex),
            )
        newEntries = self._newEntries(request.entries)
        if newEntries is None:
            return AppendEntriesResponse(self.currentTerm, False)
        if newEntries and newEntries[0].index <= self.log.lastIndex:
            self._truncateFrom(newEntries[0].index)
        self._append(newEntries)
        lastNewIndex = prevIndex + len(request.entries)
        # Only entries known to match the leader's may be committed: not
        # whatever stale suffix this log might still hold after lastNewIndex.
        self._commitTo(min(request.leaderCommit, lastNewIndex))
        return AppendEntriesResponse(self.currentTerm, True, matchIndex=lastNewIndex)

    def _handleInstallSnapshot(self, request: InstallSnapshot) -> None:
        """Dissertation Figure 5.3, InstallSnapshot receiver rules."""
        index, term = request.lastIncludedIndex, request.lastIncludedTerm
        if index <= self.commitIndex:
            # We already hold (committed, hence matching) everything it covers.
            self._incoming = None
            self._ready.reply = InstallSnapshotResponse(
                self.currentTerm, index, matchIndex=self.commitIndex
            )
            return
        incoming = self._incoming
        if request.offset == 0:
            incoming = self._incoming = _IncomingSnapshot(index, term)
        if incoming is None or (incoming.index, incoming.term) != (index, term):
            # Chunks of a snapshot we have not seen the start of: ask for it.
            self._ready.reply = InstallSnapshotResponse(self.currentTerm, index, 0)
            return
        if request.offset == len(incoming.data):
            incoming.data += request.data
        if not request.done or request.offset + len(request.data) != len(incoming.data):
            self._ready.reply = InstallSnapshotResponse(
                self.currentTerm, index, len(incoming.data)
            )
            return
        self._incoming = None
        try:
            membership = parseMembership(request.membership) if request.membership else None
        except MembershipError as e:
            self._logger.error(
                "{name}: a snapshot with an invalid membership: {error}", name=self.name, error=e
            )
            self._ready.reply = InstallSnapshotResponse(self.currentTerm, index, 0)
            return
        self._installSnapshot(
            Snapshot(index, term, bytes(incoming.data), request.membership), membership
        )
        self._ready.reply = InstallSnapshotResponse(
            self.currentTerm, index, len(incoming.data), matchIndex=index
        )

    def _installSnapshot(self, snapshot: Snapshot, membership: Membership | None) -> None:
        """
        Replace the log's prefix (or all of it) and the state machine with
        C{snapshot}, and take its C{membership} (if it has one).
        """
        lastIndex = self.log.lastIndex
        # A snapshot without a membership covers no membership entry: the
        # cluster still ran on its bootstrap membership then.
        self._baseMembership = membership if membership is not None else self._bootstrap
        self._memberships = [(i, m) for i, m in self._memberships if i > snapshot.index]
        self.log.restore(snapshot.index, snapshot.term)
        self.durableIndex = min(self.durableIndex, self.log.lastIndex)
        if self.log.lastIndex == snapshot.index:
            self._memberships = []
        self._membershipChanged()
        ready = self._ready
        if self.log.lastIndex == snapshot.index and lastIndex > snapshot.index:
            # The log did not hold the snapshot's last entry: every entry after
            # it conflicts, so it goes too.
            ready.truncateFrom = snapshot.index + 1
        ready.entries = [e for e in ready.entries if e.index > self.log.lastIndex]
        ready.snapshot = self.snapshot = snapshot
        self.commitIndex = max(self.commitIndex, snapshot.index)
        self._handedOut = max(self._handedOut, snapshot.index)

    def _newEntries(self, entries: Sequence[Entry]) -> list[Entry] | None:
        """
        The suffix of C{entries} that is not already in the log.  Entries we
        already hold are skipped, so a delayed duplicate request never
        truncates anything; L{None} if the request conflicts with a
        committed entry, which no legitimate leader can send.
        """
        for position, entry in enumerate(entries):
            if entry.index > self.log.lastIndex:
                return list(entries[position:])
            if self.log.term(entry.index) != entry.term:
                if entry.index <= self.commitIndex:
                    self._logger.critical(
                        "{name}: refusing to overwrite committed entry {index}",
                        name=self.name,
                        index=entry.index,
                    )
                    return None
                return list(entries[position:])
        return []

    # -- AppendEntries: leader side ----------------------------------------------

    def _replicate(self, commands: Sequence[str]) -> None:
        """Append C{commands} as the leader and send them to every follower not probing."""
        first = self.log.lastIndex + 1
        self._append(
            [Entry(first + i, self.currentTerm, command) for i, command in enumerate(commands)]
        )
        for peer in self.peers:
            self._sendAppend(peer)
        self._maybeCommit()

    def _sendAppend(self, peer: str, heartbeat: bool = False) -> None:
        """
        Send C{peer} the entries from its nextIndex on (possibly none), or
        the snapshot if those entries are compacted away.  A heartbeat also
        retries a probe or a snapshot chunk whose answer never came.  While
        the window of appends out is full, only a heartbeat goes, without
        entries: it keeps the follower's timer reset, and its answer says
        whether the appends out have landed.
        """
        progress = self._progress[peer]
        if progress.probing and progress.probeSent and not heartbeat:
            return
        if progress.nextIndex <= self.log.compactedIndex:
            if progress.probeSent and not progress.chunkOverdue:
                # One chunk at a time: it is sent again only if it is still
                # unanswered a whole heartbeat interval from now.
                progress.chunkOverdue = True
                return
            self._sendSnapshotChunk(peer, progress)
            return
        full = not progress.probing and len(progress.inflight) >= self.maxInflightAppends
        if full and not heartbeat:
            return
        prevIndex = progress.nextIndex - 1
        entries = () if full else self._entriesFrom(progress.nextIndex)
        message = AppendEntries(
            self.currentTerm,
            prevIndex,
            self.log.term(prevIndex),
            entries,
            self.commitIndex,
            self._readRound,
        )
        self._ready.messages.append((peer, message))
        if progress.probing:
            progress.probeSent = True
        elif entries:
            progress.nextIndex = entries[-1].index + 1
            progress.inflight.append(entries[-1].index)

    def _entriesFrom(self, start: int) -> tuple[Entry, ...]:
        """
        The entries an AppendEntries carries from C{start} on: the very
        tuple of the last one when it would hold the same, as when a leader
        sends a new batch to each follower in turn, so that the batch is
        encoded once (L{txraft.messages.formatMessage}): the log's last
        index and its rewrites the same show that it holds the same entries.
        """
        log = self.log
        if start > log.lastIndex:
            return ()
        key = (start, log.lastIndex, log.rewrites)
        sentKey, sent = self._lastSent
        if sentKey == key:
            return sent
        entries = tuple(log.slice(start, log.lastIndex + 1, self.maxAppendBytes))
        self._lastSent = (key, entries)
        return entries

    def _handleAppendResponse(self, peer: str, response: AppendEntriesResponse) -> None:
        progress = self._progress.get(peer)
        if self.role != LEADER or progress is None:
            return
        if progress.readRound < response.readRound <= self._readRound:
            progress.readRound = response.readRound
            self._confirmReads()
        if response.success:
            if response.matchIndex > self.log.lastIndex:
                return  # cannot match entries we never had: a forged answer
            if response.matchIndex > progress.matchIndex:
                progress.matchIndex = response.matchIndex
                self._maybeCommit()
                if self.role != LEADER:
                    return  # it committed its own removal and stepped down
            # The appends out up to what the follower now holds have landed.
            progress.inflight = [i for i in progress.inflight if i > progress.matchIndex]
            progress.nextIndex = max(progress.nextIndex, progress.matchIndex + 1)
            if progress.probing:
                progress.probing = progress.probeSent = False
        else:
            stale = response.rejectedIndex <= progress.matchIndex or (
                progress.probing and response.rejectedIndex != progress.nextIndex - 1
            )
            if stale:
                return
            resume = self.log.findConflictByTerm(response.hintIndex, response.hintTerm) + 1
            progress.nextIndex = max(min(resume, response.rejectedIndex), progress.matchIndex + 1)
            # The appends out after the refused one will be refused too.
            progress.inflight = []
            progress.probing = True
            progress.probeSent = False
        if progress.nextIndex <= self.log.lastIndex:
            self._sendAppend(peer)
        elif peer == self.leadTransferee and progress.matchIndex == self.log.lastIndex:
            self._sendTimeoutNow(peer)

    def _sendSnapshotChunk(self, peer: str, progress: Progress) -> None:
        """Send the next chunk of the snapshot C{peer} is receiving (or start one)."""
        if progress.snapshot is None:
            assert self.snapshot is not None, "a compacted log always has a snapshot"
            progress.snapshot, progress.snapshotOffset = self.snapshot, 0
        snapshot, offset = progress.snapshot, progress.snapshotOffset
        chunk = snapshot.data[offset : offset + SNAPSHOT_CHUNK_BYTES]
        done = offset + len(chunk) >= len(snapshot.data)
        message = InstallSnapshot(
            self.currentTerm,
            snapshot.index,
            snapshot.term,
            offset,
            chunk,
            done,
            snapshot.membership,
        )
        self._ready.messages.append((peer, message))
        progress.probing = progress.probeSent = True
        progress.inflight = []
        progress.chunkOverdue = False

    def _handleSnapshotResponse(self, peer: str, response: InstallSnapshotResponse) -> None:
        progress = self._progress.get(peer)
        if self.role != LEADER or progress is None:
            return
        sending = progress.snapshot
        if sending is None or response.lastIncludedIndex != sending.index:
            return  # an answer about a snapshot we are no longer sending
        if response.matchIndex:
            # Installed: carry on with the entries after it.
            progress.snapshot = None
            progress.matchIndex = max(progress.matchIndex, min(response.matchIndex, sending.index))
            progress.nextIndex = progress.matchIndex + 1
            progress.probing = progress.probeSent = False
            self._maybeCommit()
        else:
            size = len(sending.data)
            expected = min(progress.snapshotOffset + SNAPSHOT_CHUNK_BYTES, size)
            progress.snapshotOffset = min(response.nextOffset, size)
            if response.nextOffset != expected:
                # Not the answer to the chunk out (a late copy, or a follower
                # that lost the start): the next heartbeat resends from the
                # offset it asks for, rather than starting a second stream.
                progress.chunkOverdue = True
                return
            progress.probeSent = False
        self._sendAppend(peer)

    def _maybeCommit(self) -> None:
        """
        Figure 2, leaders: commit the highest N replicated on a majority,
        but only if log[N] is of the current term (section 5.4.2, Figure 8).
        """
        matched = [self._progress[peer].matchIndex for peer in self._voterPeers()]
        if self.isVoter():
            # Only what is on this leader's disk counts (section 10.2.1).
            matched.append(self.durableIndex)
        matched.sort(reverse=True)
        candidate = matched[self.quorum() - 1]
        if candidate > self.commitIndex and self.log.term(candidate) == self.currentTerm:
            self._commitTo(candidate)
            if not self.isVoter() and self.membershipIndex <= self.commitIndex:
                self._leaveLeadership()

    def _leaveLeadership(self) -> None:
        """
        The membership that removed this leader (or made it a learner) is
        committed: step down (dissertation section 4.2.2), and let the most
        up-to-date voter take over at once rather than after a timeout.
        """
        self._logger.info(
            "{name} is no longer a voter; it steps down in term {term}",
            name=self.name,
            term=self.currentTerm,
        )
        successor = max(self._voterPeers(), key=lambda peer: self._progress[peer].matchIndex)
        if self._progress[successor].matchIndex == self.log.lastIndex:
            self._sendTimeoutNow(successor)
        self._becomeFollower(self.currentTerm, None)

    # -- reads (dissertation section 6.4) ----------------------------------------------

    def _startReadRound(self) -> None:
        """
        Send a round of heartbeats for the reads queued, unless a round is
        already out (they wait for the next).  A follower receiving a
        snapshot is left out: its chunks have their own pace.
        """
        if not self._readQueue or self._readsOut is not None:
            return
        self._readRound += 1
        self._readsOut = _ReadRound(self._readRound, self._readQueue)
        self._readQueue = []
        for peer in self._voterPeers():
            if self._progress[peer].snapshot is None:
                self._sendAppend(peer, heartbeat=True)
        self._confirmReads()

    def _confirmReads(self) -> None:
        """Release the round out once a majority, this leader included, answered it."""
        out = self._readsOut
        if out is None:
            return
        answered = [self._progress[peer].readRound for peer in self._voterPeers()]
        if self.isVoter():
            answered.append(self._readRound)
        answered.sort(reverse=True)
        if answered[self.quorum() - 1] < out.number:
            return
        self._readsOut = None
        self._ready.reads.extend(out.contexts)
        self._startReadRound()

    # -- log changes, recorded for the driver ---------------------------------------

    def _append(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._ready.entries.extend(entries)
        changes = [(e.index, e.command) for e in entries if isMembershipCommand(e.command)]
        if changes:
            self._memberships += [(index, parseMembership(text)) for index, text in changes]
            self._membershipChanged()

    def _truncateFrom(self, index: int) -> None:
        self.log.truncateFrom(index)
        self.durableIndex = min(self.durableIndex, index - 1)
        if self._memberships and self._memberships[-1][0] >= index:
            # The newest membership is in the log, committed or not: one that
            # goes with its entry gives way to the one before (section 4.1).
            self._memberships = [(i, m) for i, m in self._memberships if i < index]
            self._membershipChanged()
        ready = self._ready
        ready.entries = [e for e in ready.entries if e.index < index]
        if ready.truncateFrom is None or index < ready.truncateFrom:
            ready.truncateFrom = index

    def _commitTo(self, index: int) -> None:
        if index > self.commitIndex:
            self.commitIndex = index

    # -- membership and leadership transfer ----------------------------------------

    def _membershipChanged(self) -> None:
        """Take the newest membership as this server's: whom it counts and replicates to."""
        if self._memberships:
            self.membershipIndex, self.membership = self._memberships[-1]
        else:
            self.membershipIndex, self.membership = self.log.compactedIndex, self._baseMembership
        self._voters = self.membership.voters()
        self.peers = tuple(name for name in self.membership.names() if name != self.name)
        if self.role != LEADER:
            return
        for peer in self.peers:
            if peer not in self._progress:
                self._progress[peer] = Progress(self.log.lastIndex + 1)
        for peer in set(self._progress) - set(self.peers):
            del self._progress[peer]

    def _sendTimeoutNow(self, peer: str) -> None:
        """
        Tell C{peer}, whose log matches ours, to start an election at once.
        Sent again with every answer from it while the transfer lasts, so a
        lost one is made good; the first it gets moves it to a later term,
        where the others are stale.
        """
        lastIndex = self.log.lastIndex
        message = AppendEntries(
            self.currentTerm,
            lastIndex,
            self.log.term(lastIndex),
            (),
            self.commitIndex,
            self._readRound,
            timeoutNow=True,
        )
        self._ready.messages.append((peer, message))

    def _tickTransfer(self) -> None:
        """Abandon a leadership transfer that has not happened within an election timeout."""
        if self.leadTransferee is None:
            return
        self._transferElapsed += 1
        if self._transferElapsed >= self.electionTicks[0]:
            self._logger.info(
                "{name} gives up handing leadership to {peer}",
                name=self.name,
                peer=self.leadTransferee,
            )
            self.leadTransferee = None

    def _takeReady(self) -> Ready:
        ready, self._ready = self._ready, Ready()
        hardState = HardState(self.currentTerm, self.votedFor)
        if hardState != self._persisted:
            ready.hardState = self._persisted = hardState
        applicable = self.commitIndex
        if self.role == LEADER:
            # A leader may commit before its own fsync of the entries has
            # returned (dissertation section 10.2.1), but it applies only
            # what it holds durably: a disk that fails meanwhile never
            # leaves its state machine ahead of its log.
            applicable = min(applicable, self.durableIndex)
        if applicable > self._handedOut:
            ready.committed = self.log.slice(self._handedOut + 1, applicable + 1)
            self._handedOut = applicable
        return ready
