"""
The node driver: one node's L{RaftCore} wired to its disk, its peers and its
clients, on any clock.

L{RaftNode} carries out every L{Ready} the core returns, in the order the
core requires: persist (through the L{LogManager}), send, apply, answer the
clients whose commands were applied.  Around that loop it keeps the
client commands waiting to commit (group commit, deadlines), the reads
waiting for their leader to be confirmed and their index applied, the
snapshot policy, and a node's life after its disk fails (fall silent, retry, rebuild
from the disk, rejoin).

It opens no socket, starts no timer of its own and imports no reactor: it
is given an C{IReactorTime}, a function that sends a message to a peer, and
a way to take snapshots off the event loop (L{txraft.snapshotting}).  The Twisted service
(L{txraft.service}) gives it the reactor, peer links and a thread pool; the
deterministic simulation of the tests gives it a simulated clock, network
and disk, and so runs this very code under faults.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import TaskStopped
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from txraft import answers
from txraft.admin import NOT_NUMBERED, AdminError, Administrator, parseAdmin
from txraft.config import ClusterConfig, ConfigError
from txraft.core import (
    ELECTION_TICKS,
    FOLLOWER,
    HEARTBEAT_TICKS,
    LEADER,
    MAX_APPEND_BYTES,
    MAX_INFLIGHT_APPENDS,
    TRAILING_ENTRIES,
    RaftCore,
    Ready,
)
from txraft.installation import Installation
from txraft.interfaces import INodeObserver, IRequestHandler, IResponseHandler
from txraft.kv import COMMAND_WORDS, READS, CommandError, canonicalWord, parseCommand
from txraft.logmanager import LogManager, SyncMark
from txraft.membership import Membership
from txraft.messages import (
    AppendEntries,
    Entry,
    HardState,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    Snapshot,
)
from txraft.reads import PendingRead, ReadQueue
from txraft.replies import AlreadyAnsweredError, Reply
from txraft.sessions import UNNUMBERED_ONLY, Numbered
from txraft.snapshotting import Background, Snapshotter, inBackground
from txraft.storage import StorageError

#: A client command not committed this many seconds after it was proposed
#: is answered C{UNAVAILABLE}: its outcome is unknown (an isolated leader,
#: say, cannot commit it, but a later leader might).
COMMIT_TIMEOUT = 5.0

#: Take a snapshot once this many entries were applied since the last one.
SNAPSHOT_ENTRIES = 10_000

#: ... and once the commands applied since the last snapshot add up to this
#: share of its size.  Writing a snapshot costs in proportion to the state
#: machine's size, so with a fixed number of entries between snapshots a
#: large map made every write pay for many of its entries being written
#: again: with 400,000 keys, a 3-node cluster under full write load wrote
#: 40% more per second without.  Growth in proportion to the
#: size bounds that to two bytes written per byte applied, as Redis's
#: C{auto-aof-rewrite-percentage} does for its log; the entries held in
#: memory meanwhile stay within half the snapshot's size in commands.
SNAPSHOT_GROWTH = 0.5

#: After a write to its disk failed, a node tries this often to reload its
#: state from the disk, make it durable again, and rejoin the cluster.
DISK_RETRY_SECONDS = 1.0

#: The read a L{RaftNode.readBarrier} waits for; its value is dropped.
BARRIER_READ = "get _"

#: A leader holding this many client requests unanswered (commands taken and
#: not yet applied, reads not yet answered) is overloaded: its clients'
#: connections stop reading (L{RaftNode.overloaded}) until it is down to half
#: as many.  A flood of requests then waits in the clients' sockets, not in
#: the node's memory, and no turn of its event loop takes so long that its
#: heartbeats starve: work per turn grows with the requests taken in it.
MAX_BACKLOG = 512

#: A Ready with nothing to do (never to be changed).
NOTHING = Ready()

#: Sends one message to the named peer; delivery is not guaranteed.
Send = Callable[[str, Message], None]

#: Told the node's newest membership whenever it changes.
MembershipListener = Callable[[Membership], None]


def _fireAll(deferreds: list[defer.Deferred[None]]) -> None:
    """Fire each of C{deferreds} with L{None}."""
    for d in deferreds:
        d.callback(None)


@implementer(INodeObserver)
class NullObserver:
    """An L{INodeObserver} that ignores everything: the default."""

    def coreStarted(self, core: object) -> None:
        """Ignore a new core."""

    def persisted(self, ready: object) -> None:
        """Ignore a persisted Ready."""

    def snapshotInstalled(self, snapshot: object) -> None:
        """Ignore an installed snapshot."""

    def applied(self, results: object) -> None:
        """Ignore applied entries."""

    def snapshotSaved(self, snapshot: object) -> None:
        """Ignore a saved snapshot."""

    def diskFailed(self, error: str) -> None:
        """Ignore a disk failure."""

    def leaderChanged(self, leader: str | None, term: int) -> None:
        """Ignore a new leader."""

    def synced(self, seconds: float) -> None:
        """Ignore how long a Ready took to make durable."""

    def committed(self, seconds: float) -> None:
        """Ignore how long a command took to commit."""

    def answered(self, command: str, answer: str, seconds: float) -> None:
        """Ignore an answered client request."""

    def snapshotTaken(self, seconds: float) -> None:
        """Ignore how long a snapshot took."""


class _ObservedReply(Reply):
    """
    A client request's L{Reply} that tells the node's observer of its
    answer, and of the time since C{arrived} (L{INodeObserver.answered}).
    """

    __slots__ = ("arrived", "node", "word")

    def __init__(self, respond: Callable[[str], object], node: RaftNode, arrived: float) -> None:
        # Reply.__init__'s two fields set here: one call less per request.
        self.respond = respond
        self.called = False
        self.node = node
        self.arrived = arrived
        #: The request's command word, once known.
        self.word = "invalid"

    def give(self, answer: str) -> None:
        """Tell the observer, then answer (once: see L{Reply.give})."""
        if self.called:
            raise AlreadyAnsweredError(f"answered twice, now with {answer!r}")
        self.called = True
        node = self.node
        node.observer.answered(self.word, answer, node.clock.seconds() - self.arrived)
        self.respond(answer)


@implementer(IRequestHandler, IResponseHandler)
class RaftNode:
    """
    One txraft node: drives a L{RaftCore} with ticks, peer messages and
    client commands, and carries out every L{Ready} it returns.

    @ivar core: the running core; replaced when the node rejoins after a
        disk failure.
    @ivar silent: whether the node takes no part in Raft (its disk failed,
        or it is stopping): it ignores ticks and peers and sends nothing.
    @ivar diskError: why the disk failed, while it does.
    @ivar leaderCommit: the highest commit index the current leader has
        told this follower of (a follower's own commit index may trail it
        while it catches up).
    @ivar tickCount: how many ticks have passed since the node started.
    @ivar admin: carries out operators' commands (L{txraft.admin}).
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        logManager: LogManager,
        clock: IReactorTime,
        send: Send,
        *,
        electionTicks: tuple[int, int] = ELECTION_TICKS,
        heartbeatTicks: int = HEARTBEAT_TICKS,
        rng: random.Random | None = None,
        maxAppendBytes: int = MAX_APPEND_BYTES,
        snapshotEntries: int | None = SNAPSHOT_ENTRIES,
        snapshotGrowth: float = SNAPSHOT_GROWTH,
        snapshotter: Snapshotter | None = None,
        commitTimeout: float = COMMIT_TIMEOUT,
        diskRetrySeconds: float = DISK_RETRY_SECONDS,
        onFatal: Callable[[str], None] | None = None,
        observer: INodeObserver | None = None,
        join: bool = False,
        onMembership: MembershipListener | None = None,
        maxBacklog: int = MAX_BACKLOG,
        maxInflightAppends: int = MAX_INFLIGHT_APPENDS,
        trailingEntries: int = TRAILING_ENTRIES,
        saveInBackground: Background | None = None,
        syncInBackground: Background | None = None,
    ) -> None:
        """
        Recover the node's state through C{logManager} and start a core.

        @param config: the cluster: its members, and where each listens
            (for redirects).
        @param clock: schedules group commits and disk retries, and tells
            the time of commit deadlines.
        @param send: how to send a message to a peer.
        @param electionTicks: see L{RaftCore}; so are C{heartbeatTicks},
            C{rng}, C{maxAppendBytes}, C{maxInflightAppends} and
            C{trailingEntries}.
        @param snapshotEntries: how many applied entries trigger a snapshot
            (L{None}: never).
        @param snapshotGrowth: how many bytes of commands applied since
            the last snapshot, per byte of it, trigger a snapshot too (both
            must; L{SNAPSHOT_GROWTH}).
        @param snapshotter: how to serialize and write a snapshot (default:
            right away, on the caller's thread; a node forks a child).
        @param commitTimeout: seconds after which an uncommitted command is
            answered L{answers.COMMIT_TIMEOUT}.
        @param diskRetrySeconds: how often a node whose disk failed tries
            to rejoin.
        @param onFatal: called with the reason when the stored data turns
            out corrupt and the node must stop (default: raise).
        @param observer: told what the node does (metrics, tests).
        @param join: start with no membership if the data directory holds
            none, rather than with C{config}'s: a node waiting to be added
            to a running cluster, which never campaigns.
        @param onMembership: told the newest membership whenever it changes
            after the node started, which has C{core.membership} (the
            service keeps a link to every member).
        @param maxBacklog: how many client requests the node holds
            unanswered before it is L{overloaded}.
        @param saveInBackground: runs the saving of a leader's snapshot off
            the event loop (a thread pool), its Deferred firing on the loop
            once the snapshot is durable (default: save it on the loop).
        @param syncInBackground: runs the fsync of a leader's own entries off
            the event loop (a thread pool), its Deferred firing on the loop
            once they are durable (default: fsync on the loop).  The loop
            meanwhile goes on (dissertation section 10.2.1): a leader counts
            itself for its entries only once they are durable.
        """
        self.name = name
        self.config = config
        self.logManager = logManager
        self.clock = clock
        self._send = send
        self._coreOptions: dict[str, Any] = {
            "electionTicks": electionTicks,
            "heartbeatTicks": heartbeatTicks,
            "rng": rng,
            "maxAppendBytes": maxAppendBytes,
            "maxInflightAppends": maxInflightAppends,
            "trailingEntries": trailingEntries,
        }
        self.snapshotEntries = snapshotEntries
        self.snapshotGrowth = snapshotGrowth
        self._snapshotter = snapshotter or inBackground(defer.maybeDeferred)
        self.commitTimeout = commitTimeout
        self.diskRetrySeconds = diskRetrySeconds
        self._onFatal = onFatal if onFatal is not None else self._raiseFatal
        self.observer: INodeObserver = observer if observer is not None else NullObserver()
        self._bootstrap = Membership() if join else Membership.fromConfig(config)
        self._onMembership = onMembership
        self.tickCount = 0
        self.admin = Administrator(self)
        self.silent = False
        self.diskError: str | None = None
        self._diskRetry: IDelayedCall | None = None
        # Client commands that arrived in this reactor turn, not yet proposed.
        self._batch: list[tuple[str, Reply]] = []
        self._flushCall: IDelayedCall | None = None
        # The fsync of a leader's own entries, written and sent but not yet
        # durable: to come, then running in the background.
        self._syncCall: IDelayedCall | None = None
        self._syncInBackground = syncInBackground
        self._syncing: defer.Deferred[None] | None = None
        # Client commands proposed and not yet applied, by log index (so in
        # proposal order): (term, time proposed, the answer's L{Reply}).
        self._waiting: dict[int, tuple[int, float, Reply]] = {}
        # Reads that arrived in this reactor turn, each with how many of
        # this turn's commands came before it; then those given to the core.
        self._readBatch: list[tuple[int, PendingRead]] = []
        self._reads = ReadQueue()
        # A leader's snapshot being loaded into the state machine.
        self._installation: Installation | None = None
        self._saveInBackground = saveInBackground
        # A leader's snapshot being saved by _saveInBackground, and what
        # waits for it: each function steps a held request or response.
        self._saving: defer.Deferred[None] | None = None
        self._held: list[Callable[[], None]] = []
        self._snapshotting = False
        # Set when a snapshot was put in place (or failed) and cleared by the
        # next tick: the turn that spent its time on one snapshot never also
        # starts the next, however fast the entries come.
        self._snapshotResting = False
        # The bytes of the commands applied after the last snapshot's (a
        # restarted node applies its log again from its snapshot).
        self._bytesSinceSnapshot = 0
        self.maxBacklog = maxBacklog
        # Fired once an overloaded node has drained to half its maxBacklog.
        self._drained: list[defer.Deferred[None]] | None = None
        self.leaderCommit = 0
        hardState, entries = logManager.recover()
        self.core = self._newCore(hardState, entries)
        self._leaderSeen: tuple[str | None, int] = (None, self.core.currentTerm)
        self._membershipSeen = self.core.membership
        self.observer.coreStarted(self.core)

    def _newCore(self, hardState: HardState, entries: list[Entry]) -> RaftCore:
        """A core for this node starting from a recovered term, vote and log."""
        return RaftCore(
            self.name,
            membership=self._bootstrap,
            hardState=hardState,
            snapshot=self.logManager.snapshot,
            entries=entries,
            # After a disk failure the state machine is kept: what it has
            # applied is committed, and must neither apply again nor be
            # replaced by an older snapshot from the leader.
            commitIndex=self.logManager.lastApplied,
            logger=self.log,
            **self._coreOptions,
        )

    @staticmethod
    def _raiseFatal(reason: str) -> None:
        raise StorageError(reason)

    # -- inputs ---------------------------------------------------------------------

    def ticks(self, count: int) -> None:
        """
        C{count} ticks of the clock have passed.  After a stall (a paused
        process, a busy machine) the core catches up by at most one
        heartbeat interval, so that what peers sent meanwhile is read before
        this node decides that its leader is gone.
        """
        self.tickCount += count
        self._snapshotResting = False
        for _ in range(min(count, self.core.heartbeatTicks)):
            if self.silent or self._saving is not None:
                # While a snapshot is saved, time stands still for the core:
                # its leader just spoke, and anything else it might send
                # would wait for the disk anyway.
                return
            self._process(self.core.tick())
        self._expireWaiting()
        self.admin.check()

    def isPeer(self, name: str) -> bool:
        """
        Whether C{name} may send peer lines: any node but this one.  The
        membership changes (a leader this node's log does not know yet may
        contact it), so a node does not judge peers by it: on a keyed
        cluster a peer proved the cluster key before its lines get here.
        """
        return name != self.name

    def peerRequest(self, sender: str, message: Message) -> Message | None:
        """
        Step a peer's request and return the reply to send back on its
        connection, or L{None} if this node could not persist what the
        reply promises.
        """
        if self.silent:
            return None
        if self._saving is not None:
            return self._holdRequest(sender, message)
        ready = self.core.step(sender, message)
        reply = ready.reply
        if isinstance(message, AppendEntries) and self.core.leaderId == sender:
            self.leaderCommit = message.leaderCommit
        elif isinstance(message, InstallSnapshot):
            self.log.debug(
                "InstallSnapshot from {peer}: up to index {index}, bytes {offset}+{size}",
                peer=sender,
                index=message.lastIncludedIndex,
                offset=message.offset,
                size=len(message.data),
            )
        elif isinstance(message, RequestVote) and isinstance(reply, RequestVoteResponse):
            self._logVote(sender, message, reply)
        self._process(ready)
        if self._saving is not None:
            # The reply promises what the disk does not hold yet: it goes
            # first once it does, before the replies to what came after.
            replied: defer.Deferred[Message | None] = defer.Deferred()
            self._held.insert(0, lambda: replied.callback(None if self.silent else reply))
            return replied
        return None if self.silent else reply

    @property
    def savingSnapshot(self) -> bool:
        """
        Whether a snapshot from the leader is being saved off the event
        loop: until it is durable, the core is ahead of the disk, and the
        node holds its peers' requests (L{saveInBackground}).
        """
        return self._saving is not None

    @property
    def installingSnapshot(self) -> bool:
        """
        Whether a snapshot from the leader is being saved or loaded: until
        it is loaded, the node applies no entry (its C{lastApplied} stays
        behind its commit index).
        """
        return self._saving is not None or self._installation is not None

    def _holdRequest(self, sender: str, message: Message) -> defer.Deferred[Message | None]:
        """
        Step C{message} once the snapshot being saved is durable, after the
        requests held before it, and fire with its reply.
        """
        answer: defer.Deferred[Message | None] = defer.Deferred()

        def step() -> None:
            reply = self.peerRequest(sender, message)
            if isinstance(reply, defer.Deferred):
                reply.chainDeferred(answer)
            else:
                answer.callback(reply)

        self._held.append(step)
        return answer

    def _logVote(self, candidate: str, request: RequestVote, reply: RequestVoteResponse) -> None:
        """Say which vote was granted or refused; pre-votes only at debug level."""
        kind = "pre-vote" if request.preVote else "vote"
        log = self.log.debug if request.preVote else self.log.info
        log(
            "{name} {verdict} its {kind} to {candidate} for term {term}",
            name=self.name,
            verdict="grants" if reply.voteGranted else "refuses",
            kind=kind,
            candidate=candidate,
            term=request.term,
        )

    def peerResponse(self, sender: str, message: Message) -> None:
        """Step a peer's response to one of our requests."""
        if self.silent:
            return
        if self._saving is not None:
            self._held.append(lambda: self.peerResponse(sender, message))
        else:
            self._process(self.core.step(sender, message))

    def submit(
        self,
        clientId: str | None,
        text: str,
        seq: int | None,
        respond: Callable[[str], object],
    ) -> None:
        """
        Answer a client's request line through C{respond}, called once:
        C{status} here and now, commands once committed and applied (on the
        leader), otherwise a redirect.  A numbered command goes to the log
        as C{CLIENTID#SEQ@COMMAND}, reads too, so that the client's session
        records it (see L{txraft.sessions}).  The observer hears of every
        answer.
        """
        reply = _ObservedReply(respond, self, self.clock.seconds())
        reply.word, answer = self._dispatch(clientId, text, seq, reply)
        if isinstance(answer, str):
            reply.give(answer)
        elif answer is not None:
            answer.addCallback(reply.give).addErrback(self._internalError, reply)

    def _internalError(self, failure: Failure, reply: Reply) -> None:
        """An administrative command failed unexpectedly: log it, and say so."""
        self.log.failure("request failed", failure)
        if not reply.called:
            reply.give(answers.INTERNAL_ERROR)

    def _dispatch(
        self, clientId: str | None, text: str, seq: int | None, reply: Reply
    ) -> tuple[str, str | defer.Deferred[str] | None]:
        """
        The command word of a request (C{invalid} if none), and its answer
        now, or a Deferred of it, or L{None} once C{reply} waits for it.
        """
        word = canonicalWord(text)
        if word is not None:
            if seq is None:
                answer = self._execute(text, reply) if word == "set" else self._read(text, reply)
                return word, answer
            if clientId is not None:
                # Numbered reads too go to the log, where the session records their SEQ.
                return word, self._execute(Numbered(clientId, seq, text).text, reply)
        try:
            if text.partition(" ")[0] in COMMAND_WORDS:
                # The usual request: no status or administrative word can be it.
                admin, command = None, parseCommand(text)
            elif text.strip() == "status":
                if seq is not None:
                    return "status", UNNUMBERED_ONLY
                return "status", answers.ok(json.dumps(self.status()))
            else:
                admin = parseAdmin(text)
                command = parseCommand(text) if admin is None else None
        except (AdminError, CommandError) as e:
            return "invalid", answers.error(str(e))
        if admin is not None:
            return admin.word, self.admin.execute(admin) if seq is None else NOT_NUMBERED
        assert command is not None
        if seq is not None and clientId is not None:
            # Numbered reads too go to the log, where the session records their SEQ.
            return command.name, self._execute(Numbered(clientId, seq, command.text).text, reply)
        if command.name in READS:
            return command.name, self._read(command.text, reply)
        return command.name, self._execute(command.text, reply)

    def _execute(self, command: str, reply: Reply) -> str | None:
        """
        Take a valid command to the log, C{reply} to wait for its answer,
        if this node leads; else say who does.
        """
        refusal = self.refusal()
        if refusal is not None:
            return refusal
        if self.core.leadTransferee is not None:
            return answers.TRANSFERRING
        self._batch.append((command, reply))
        self._flushSoon()
        return None

    def _read(self, command: str, reply: Reply) -> str | None:
        """
        Answer a read without a log entry, through C{reply}, if this node
        leads (the core's L{RaftCore.read}); else say who does.
        """
        refusal = self.refusal()
        if refusal is not None:
            return refusal
        read = PendingRead(command, self.clock.seconds(), reply)
        self._readBatch.append((len(self._batch), read))
        self._flushSoon()
        return None

    def backlog(self) -> int:
        """How many client requests this node holds unanswered."""
        return len(self._batch) + len(self._waiting) + len(self._readBatch) + len(self._reads)

    def overloaded(self) -> defer.Deferred[None] | None:
        """
        L{None} while this node takes more client requests; once it holds
        C{maxBacklog} of them unanswered, a Deferred that fires when it is
        down to half as many.  Meanwhile the listening side reads no more
        requests (flow control, as for a client that reads no answers).
        """
        if self._drained is None and self.backlog() < self.maxBacklog:
            return None
        if self._drained is None:
            self._drained = []
        d: defer.Deferred[None] = defer.Deferred()
        self._drained.append(d)
        return d

    def _checkDrained(self) -> None:
        """
        Tell the connections that wait for it that an overloaded node has
        drained, at the next turn of the reactor: the turn that answered
        the requests does not also read as many new ones.
        """
        if self._drained is None or 2 * self.backlog() > self.maxBacklog:
            return
        drained, self._drained = self._drained, None
        self.clock.callLater(0, _fireAll, drained)

    def refusal(self) -> str | None:
        """Why this node cannot take a client's command now, if it cannot."""
        if self.silent:
            if self.diskError is None:
                return answers.NOT_SERVING
            # The last leader it heard of is only a hint, but a harmless one.
            if self.core.leaderId not in (None, self.name):
                return self.notLeader()
            return answers.DISK_FAILED
        if self.core.role != LEADER:
            return self.notLeader()
        return None

    def _flushSoon(self) -> None:
        """
        Group commit: every command that arrives in this reactor turn shares
        one append, one fsync and one AppendEntries per follower, and every
        read one round of heartbeats.
        """
        if self._flushCall is None:
            self._flushCall = self.clock.callLater(0, self._flush)

    def status(self) -> dict[str, object]:
        """
        What C{status} reports.  While its disk fails a node says so in
        C{diskError}, and calls itself a follower without a leader of its
        own: it leads nothing and campaigns for nothing.
        """
        core = self.core
        status = {
            "name": self.name,
            "role": core.role,
            "term": core.currentTerm,
            "leader": core.leaderId,
            "votedFor": core.votedFor,
            "commitIndex": core.commitIndex,
            "lastApplied": self.logManager.lastApplied,
            "lastIndex": core.log.lastIndex,
            "snapshotIndex": core.snapshotIndex,
            "leaderCommit": self.leaderCommitIndex(),
            "members": {
                member.name: f"{member.host}:{member.port}" for member in core.membership.members
            },
            "learners": sorted(set(core.membership.names()) - core.membership.voters()),
        }
        if self.diskError is not None:
            status["role"] = FOLLOWER
            if core.leaderId == self.name:
                status["leader"] = None
            status["diskError"] = self.diskError
        return status

    def leaderCommitIndex(self) -> int | None:
        """
        The leader's commit index as far as this node knows: its own on a
        leader, the last one the leader sent on a follower, L{None} while
        no leader is known.
        """
        core = self.core
        if core.leaderId is None:
            return None
        if core.leaderId == self.name:
            return core.commitIndex
        return max(self.leaderCommit, core.commitIndex)

    def readBarrier(self) -> str | defer.Deferred[str]:
        """
        Wait, as a read does (ReadIndex, L{RaftCore.read}), until this
        leader is confirmed and has applied all that was committed when
        this was called, so that its state machine holds every write
        acknowledged before, by any leader (a backup waits for this).  The
        answer is a read's: a success (L{answers.isSuccess}) once that
        holds, else why not (a redirect, C{UNAVAILABLE}).
        """
        d: defer.Deferred[str] = defer.Deferred()
        refusal = self._read(BARRIER_READ, Reply(d.callback))
        return d if refusal is None else refusal

    def handOver(self) -> defer.Deferred[None]:
        """
        Before a planned stop: a leader hands its leadership to the most
        up-to-date voter and waits for it to lead (L{Administrator.handOver}).
        """
        return self.admin.handOver()

    def proposeMembership(self, membership: Membership) -> defer.Deferred[str | None]:
        """
        Propose C{membership} (L{RaftCore.changeMembership}, whose errors
        it raises); the Deferred fires as for a client's command: with
        L{None} once the entry commits, or with an C{UNAVAILABLE} answer.
        """
        ready = self.core.changeMembership(membership)
        (entry,) = ready.entries
        d: defer.Deferred[str | None] = defer.Deferred()
        self._waiting[entry.index] = (entry.term, self.clock.seconds(), Reply(d.callback))
        self._process(ready)
        return d

    def transferLeadership(self, target: str) -> None:
        """Start handing leadership to C{target} (L{RaftCore.transferLeadership})."""
        self._process(self.core.transferLeadership(target))

    def stop(self) -> None:
        """Stop for good: fall silent and tell every waiting client."""
        self.log.info(
            "node {name} shutting down in term {term}, applied up to {applied}",
            name=self.name,
            term=self.core.currentTerm,
            applied=self.logManager.lastApplied,
        )
        if self._diskRetry is not None and self._diskRetry.active():
            self._diskRetry.cancel()
        self._diskRetry = None
        self._fallSilent(answers.SHUTTING_DOWN)

    # -- the Ready loop -----------------------------------------------------------------

    def _flush(self) -> None:
        self._flushCall = None
        batch, self._batch = self._batch, []
        reads, self._readBatch = self._readBatch, []
        if self.core.role != LEADER:
            answer = self.notLeader()
            for _, reply in batch:
                reply.give(answer)
            for _, read in reads:
                read.answer.give(answer)
            return
        if batch and self.core.leadTransferee is not None:
            for _, reply in batch:
                reply.give(answers.TRANSFERRING)
            batch, reads = [], [(0, read) for _, read in reads]
        # Each read reads the state right after the commands that came
        # before it, at least the commit index (the core's L{RaftCore.read}).
        lastIndex = self.core.log.lastIndex
        for before, read in reads:
            self._reads.add(read, lastIndex + before)
        self._reads.take(self.logManager.lastApplied, self.logManager.read)
        if batch:
            ready = self.core.propose([text for text, _ in batch])
            now = self.clock.seconds()
            for entry, (_, reply) in zip(ready.entries, batch, strict=True):
                self._waiting[entry.index] = (entry.term, now, reply)
            self._process(ready)
        if reads and not self.silent:
            self._process(self.core.read([read for _, read in reads]))

    def _process(self, ready: Ready) -> None:
        """Carry out C{ready}: persist, send, apply (the reply is the caller's)."""
        if self.silent:
            return
        if ready.snapshot is not None and self._saveInBackground is not None:
            self._saveSnapshot(ready)
            return
        durable = None
        later = ready.syncAfterSend
        if ready.needsSync or (self.logManager.unsynced and not later):
            started = self.clock.seconds()
            try:
                self.logManager.persist(ready, sync=not later)
            except Exception as e:
                self._storageFailed(e)
                return
            if self.logManager.unsynced:
                self._syncSoon()
            else:
                self.observer.synced(self.clock.seconds() - started)
                durable = self.core.log.lastIndex
        self._persisted(ready, durable)

    def _persisted(self, ready: Ready, durable: int | None) -> None:
        """
        Carry out the rest of C{ready} once its changes are written (and
        durable up to log index C{durable}, if not L{None}): send, apply.
        """
        wasLeading = bool(self._waiting)
        self.observer.persisted(ready)
        self._noticeLeader()
        for peer, message in ready.messages:
            self._send(peer, message)
        if ready.snapshot is not None:
            self._reads.failUntaken(answers.READ_LEADERSHIP_LOST)
            self._install(ready.snapshot)
        if self._installation is not None:
            self._installation.unapplied += ready.committed
        else:
            self._applyCommitted(ready.committed)
        if wasLeading and self.core.role != LEADER:
            self._failWaiting(answers.LEADERSHIP_LOST)
        self._reads.confirm(ready.reads)
        if self._reads and self.core.role != LEADER:
            self._reads.fail(answers.READ_LEADERSHIP_LOST, unconfirmedOnly=True)
        self._noticeMembership()
        self._maybeSnapshot()
        self.admin.check()
        self._checkDrained()
        if durable is not None and durable > self.core.durableIndex:
            after = self.core.persisted(durable)
            # A follower's is empty: skip the rounds of an empty Ready.
            if after != NOTHING:
                self._process(after)

    def _applyCommitted(self, entries: list[Entry]) -> None:
        """Apply committed C{entries} and answer the clients that wait for them."""
        results = self._apply(entries)
        self._bytesSinceSnapshot += sum([len(entry.command) for entry in entries])
        self.observer.applied(results)
        now = self.clock.seconds()
        for entry, result in results:
            waiter = self._waiting.pop(entry.index, None)
            if waiter is None:
                continue
            term, proposed, reply = waiter
            if term == entry.term:
                self.observer.committed(now - proposed)
                reply.give(result)
            else:
                # Another leader's entry took this index: the command never ran.
                reply.give(answers.OVERWRITTEN)

    def _install(self, snapshot: Snapshot) -> None:
        """
        Load the leader's C{snapshot}, which the core took and the disk
        holds, into the state machine: a step per reactor turn if it is
        large (L{Installation}), meanwhile applying nothing.
        """
        if self._installation is not None:
            # The newer snapshot covers the older one and every entry waiting on it.
            self._installation.cancel()
            self._installation = None
        installation = Installation(
            self.logManager.installing(snapshot),
            self.clock,
            loaded=lambda: self._loaded(snapshot),
            apply=self._applyCommitted,
        )
        done = installation.start()
        if not done.called:
            self._installation = installation
        done.addCallbacks(self._installed, self._installFailed)

    def _loaded(self, snapshot: Snapshot) -> None:
        """The state machine holds the leader's C{snapshot}."""
        self._bytesSinceSnapshot = 0
        self.observer.snapshotInstalled(snapshot)
        self.log.info(
            "node {name} installed the leader's snapshot up to index {index}",
            name=self.name,
            index=snapshot.index,
        )

    def _installed(self, installation: Installation) -> None:
        """
        The snapshot is loaded and what waited for it applied.  If that
        took more than the turn that began it, see what that changed.
        """
        if self._installation is installation:
            self._installation = None
            self._applyCommitted([])  # reads of the snapshot's index
            self._maybeSnapshot()
            self._checkDrained()

    def _installFailed(self, failure: Failure) -> None:
        """Loading a snapshot failed: it was cancelled, or it is unusable and the node stops."""
        if failure.check(TaskStopped):
            return
        self._installation = None
        error = failure.value
        self.log.critical("the leader's snapshot is unusable, stopping node: {error}", error=error)
        self._fallSilent(answers.SHUTTING_DOWN)
        self._onFatal(str(error))

    def _saveSnapshot(self, ready: Ready) -> None:
        """
        Persist C{ready}, which holds a snapshot from the leader, off the
        event loop (a million keys take about 100 ms to checksum, write and
        fsync), then carry it out.  Until then the core takes nothing: the
        peers' requests and responses wait in order (L{_held}), and ticks
        are dropped.
        """
        if self._installation is not None:
            # The snapshot being saved covers the one being loaded.
            self._installation.cancel()
            self._installation = None
        started = self.clock.seconds()
        manager = self.logManager
        saving = self._saveInBackground(lambda: manager.persist(ready))
        self._saving = saving
        saving.addCallbacks(
            lambda _: self._snapshotPersisted(saving, ready, started),
            lambda failure: self._snapshotNotPersisted(saving, failure),
        )

    def _snapshotPersisted(
        self, saving: defer.Deferred[None], ready: Ready, started: float
    ) -> None:
        """The leader's snapshot is durable: carry out its Ready, then step what waited."""
        if self._saving is not saving:
            return
        self._saving = None
        if not self.silent:
            self.observer.synced(self.clock.seconds() - started)
            self._persisted(ready, self.core.log.lastIndex)
        self._stepHeld()

    def _snapshotNotPersisted(self, saving: defer.Deferred[None], failure: Failure) -> None:
        """The leader's snapshot could not be saved: the disk failed."""
        if self._saving is not saving:
            return
        self._saving = None
        if self.silent:
            self._stepHeld()
        else:
            self._storageFailed(failure.value)

    def _stepHeld(self) -> None:
        """Step what waited for a snapshot's save, in order, until another save begins."""
        while self._held and self._saving is None:
            self._held.pop(0)()

    def _syncSoon(self) -> None:
        """
        Make a leader's new entries durable at the next turn of the
        reactor: the AppendEntries carrying them go out first, so the
        followers write them while this node does (dissertation section
        10.2.1), and every batch proposed meanwhile shares the fsync.
        """
        if self._syncCall is None:
            self._syncCall = self.clock.callLater(0, self._syncLog)

    def _syncLog(self) -> None:
        """
        fsync the log (off the event loop, with L{syncInBackground}), then
        let the core count this node for the entries it held at the start.
        """
        self._syncCall = None
        if not self.logManager.unsynced or self._saving is not None or self._syncing is not None:
            # A Ready since made everything durable, or a snapshot's save
            # will, or the sync running looks again once done (falling
            # silent cancels this call).
            return
        mark = self.logManager.syncMark()
        upTo = self.core.log.lastIndex
        started = self.clock.seconds()
        if self._syncInBackground is None:
            try:
                self.logManager.syncTo(mark)
            except Exception as e:
                self._storageFailed(e)
                return
            self._logSynced(mark, upTo, started)
            return
        manager = self.logManager
        syncing = self._syncInBackground(lambda: manager.syncTo(mark))
        self._syncing = syncing
        syncing.addCallbacks(
            lambda _: self._backgroundSynced(syncing, mark, upTo, started),
            lambda failure: self._backgroundSyncFailed(syncing, failure),
        )

    def _backgroundSynced(
        self, syncing: defer.Deferred[None], mark: SyncMark, upTo: int, started: float
    ) -> None:
        """A sync in the background returned, unless the node fell silent since."""
        if self._syncing is not syncing:
            return
        self._syncing = None
        self._logSynced(mark, upTo, started)

    def _backgroundSyncFailed(self, syncing: defer.Deferred[None], failure: Failure) -> None:
        """A sync in the background failed: the disk did."""
        if self._syncing is not syncing:
            return
        # Falling silent forgets the sync (_fallSilent).
        self._storageFailed(failure.value)

    def _logSynced(self, mark: SyncMark, upTo: int, started: float) -> None:
        """
        The log is durable up to C{mark}, which held the entries up to
        C{upTo}: unless one was cut since (they are not the log's any
        more), the core may count this node for them.  Entries written
        meanwhile get a sync of their own.
        """
        if self.logManager.synced(mark):
            self.observer.synced(self.clock.seconds() - started)
            self._process(self.core.persisted(upTo))
        if self.logManager.unsynced:
            self._syncSoon()

    def _noticeMembership(self) -> None:
        """Tell the listener when the newest membership changed."""
        membership = self.core.membership
        if membership == self._membershipSeen:
            return
        self._membershipSeen = membership
        self.log.info(
            "node {name} runs with members {members}",
            name=self.name,
            members=membership.encode().partition(" ")[2] or "(none yet)",
        )
        if self._onMembership is not None:
            self._onMembership(membership)

    def _apply(self, entries: list[Entry]) -> list[tuple[Entry, str | None]]:
        """
        Apply committed C{entries}, stopping at each index a read waits for
        to take its value there (L{ReadQueue.take}).
        """
        manager = self.logManager
        results = []
        while entries and (index := self._reads.nextIndex()) is not None:
            if index >= entries[-1].index:
                break
            # Every read of an index already applied was taken, so the cut
            # keeps at least the first entry.
            cut = index - entries[0].index + 1
            results += manager.apply(entries[:cut])
            entries = entries[cut:]
            self._reads.take(manager.lastApplied, manager.read)
        results += manager.apply(entries)
        self._reads.take(manager.lastApplied, manager.read)
        return results

    def _noticeLeader(self) -> None:
        """
        Tell the observer when the leader or term changed, and let a
        follower's log say whom it now follows.
        """
        core = self.core
        seen = (core.leaderId, core.currentTerm)
        if seen == self._leaderSeen:
            return
        self._leaderSeen = seen
        if core.leaderId not in (None, self.name):
            self.log.info(
                "node {name} follows leader {leader} in term {term}",
                name=self.name,
                leader=core.leaderId,
                term=core.currentTerm,
            )
        self.observer.leaderChanged(core.leaderId, core.currentTerm)

    # -- snapshots ------------------------------------------------------------------

    def _maybeSnapshot(self) -> None:
        """
        Once C{snapshotEntries} entries were applied since the last
        snapshot, their commands C{snapshotGrowth} times its size, take
        one: freeze the state machine here, serialize and write it in the
        background, then compact (dissertation section 5.1).
        Not before the tick after the last one was put in place: under full
        load the next would otherwise start in the same turn, and the two
        together make the longest turn a snapshot costs.
        """
        manager = self.logManager
        last = manager.snapshot
        if (
            self.snapshotEntries is None
            or self._snapshotting
            or self._snapshotResting
            or manager.lastApplied - (last.index if last else 0) < self.snapshotEntries
            or last is not None
            and self._bytesSinceSnapshot < self.snapshotGrowth * len(last.data)
        ):
            return
        self._snapshotting = True
        self._bytesSinceSnapshot = 0
        started = self.clock.seconds()
        d = defer.maybeDeferred(self._snapshotter, manager)
        d.addCallback(lambda written: self._snapshotWritten(*written, started=started))
        d.addErrback(self._snapshotFailed)

    def _snapshotWritten(self, snapshot: Snapshot, staged: object, started: float) -> None:
        """
        Put a written snapshot in place and compact the log (but for the
        entries the core keeps), unless overtaken.
        """
        self._snapshotting = False
        self._snapshotResting = True
        core = self.core
        # Meanwhile the node may have installed a later snapshot from its
        # leader, or rebuilt its core after a disk failure.
        if self.silent or not core.snapshotIndex < snapshot.index <= core.commitIndex:
            return
        # Should the disk fail, the core is rebuilt from what it holds.
        upTo = core.compact(snapshot)
        try:
            self.logManager.commitSnapshot(snapshot, staged, upTo)
        except Exception as e:
            self._storageFailed(e)
            return
        self.observer.snapshotSaved(snapshot)
        self.observer.snapshotTaken(self.clock.seconds() - started)
        self.log.info(
            "snapshot up to index {index} saved; log compacted up to {upTo}",
            index=snapshot.index,
            upTo=upTo,
        )

    def _snapshotFailed(self, failure: Failure) -> None:
        self._snapshotting = False
        self._snapshotResting = True
        self.log.failure("could not write a snapshot; will try again", failure)

    # -- answering clients ----------------------------------------------------------

    def notLeader(self) -> str:
        """The answer of a node that does not lead: who does, if it knows."""
        leader = self.core.leaderId
        if leader is None:
            return answers.NO_LEADER
        member = self.core.membership.member(leader)
        if member is not None:
            return answers.redirect(leader, member.host, member.port)
        try:
            address = self.config.node(leader)
        except ConfigError:
            return answers.NO_LEADER
        return answers.redirect(leader, address.host, address.port)

    def _fallSilent(self, answer: str) -> None:
        """
        Stop taking part in Raft: no more ticks, no more replies to peers,
        no more messages sent; every client still waiting gets C{answer}.
        """
        self.silent = True
        if self._installation is not None:
            self._installation.cancel()
            self._installation = None
        for call in (self._flushCall, self._syncCall):
            if call is not None and call.active():
                call.cancel()
        self._flushCall = self._syncCall = None
        # A sync running in the background is left to finish, unheeded.
        self._syncing = None
        batch, self._batch = self._batch, []
        for _, reply in batch:
            reply.give(answer)
        self._failWaiting(answer)
        reads, self._readBatch = self._readBatch, []
        for _, read in reads:
            read.answer.give(answer)
        self._reads.fail(answer)
        # Held peer requests are now refused (L{peerRequest} of a silent node).
        held, self._held = self._held, []
        for step in held:
            step()
        self._checkDrained()

    def _failWaiting(self, answer: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for _, _, reply in waiting.values():
            reply.give(answer)

    def _expireWaiting(self) -> None:
        now = self.clock.seconds()
        self._reads.expire(now - self.commitTimeout, answers.READ_TIMEOUT)
        while self._waiting:
            index, (_, proposed, reply) = next(iter(self._waiting.items()))
            if proposed + self.commitTimeout > now:
                return
            del self._waiting[index]
            self.log.warn(
                "node {name}: the command at index {index} did not commit within {timeout}s",
                name=self.name,
                index=index,
                timeout=self.commitTimeout,
            )
            reply.give(answers.COMMIT_TIMEOUT)

    # -- a failing disk ------------------------------------------------------------------

    def _storageFailed(self, error: Exception) -> None:
        """
        A write failed: this node's memory is now ahead of its disk, so it
        must not say another word to its peers.  It falls silent (no ticks,
        no replies, no messages) but keeps its connections: clients still
        get C{status}, and other commands a redirect or
        L{answers.DISK_FAILED}.  Every C{diskRetrySeconds} it tries to
        L{_rejoin}.
        """
        self.log.critical(
            "node {name} cannot persist its Raft state: {error}; it takes no part in Raft "
            "until its disk works again, retrying every {delay}s",
            name=self.name,
            error=error,
            delay=self.diskRetrySeconds,
        )
        self.diskError = str(error) or type(error).__name__
        self._fallSilent(answers.DISK_FAILED)
        self.observer.diskFailed(self.diskError)
        self._diskRetry = self.clock.callLater(self.diskRetrySeconds, self._rejoin)

    def _rejoin(self) -> None:
        """
        Rebuild the core from what the disk durably holds, once the disk
        takes writes again, and rejoin as a follower: what the old core held
        beyond the disk was never acknowledged to anyone, so this is the
        state of a node that crashed and restarted.  Stored data found
        corrupt stops the node, as it would stop a start.
        """
        self._diskRetry = None
        if self._saving is not None:
            # A snapshot is still being written: read the disk after it.
            self._diskRetry = self.clock.callLater(self.diskRetrySeconds, self._rejoin)
            return
        try:
            hardState, entries = self.logManager.recoverAfterFailure()
        except StorageError as e:
            self.log.critical("stored state unusable, stopping node: {error}", error=e)
            self._onFatal(str(e))
            return
        except Exception as e:
            self.log.warn("disk still failing: {error}", error=e)
            self.diskError = str(e) or type(e).__name__
            self._diskRetry = self.clock.callLater(self.diskRetrySeconds, self._rejoin)
            return
        self.core = self._newCore(hardState, entries)
        self.diskError = None
        self.silent = False
        self._leaderSeen = (None, self.core.currentTerm)
        self.observer.coreStarted(self.core)
        self._noticeMembership()
        self.log.info(
            "node {name} can write to its disk again; rejoining in term {term} "
            "with {count} log entries",
            name=self.name,
            term=hardState.currentTerm,
            count=len(entries),
        )
