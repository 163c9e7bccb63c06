"""
Operators' commands: see and change a running cluster's membership, and
hand leadership over (dissertation chapter 4 and section 3.10).

    members                      the leader's membership, as JSON
    add NAME HOST PORT           add NAME as a learner, promote it once it caught up
    add-learner NAME HOST PORT   add NAME as a learner, never promoted
    remove NAME                  remove NAME (the leader too)
    transfer-leader [NAME]       hand leadership to NAME, or to the most up-to-date voter
    backup                       a snapshot of the state machine, as one line of base64

Every command but C{members} and C{backup} waits for what it asks to be
committed (or for the new leader to lead) before answering C{OK}.  The
leader runs one of them at a time; a backup may run beside them.  On a
keyed cluster only a connection that proved the cluster key may send them
(L{txraft.protocol}).

C{backup} answers C{OK BASE64}, BASE64 the bytes of a snapshot file
(L{txraft.snapshots.encodeSnapshot}): the state machine, the client
sessions and the membership as of one applied, so committed, index.  The
leader first waits as a read does (ReadIndex), so that index holds every
write acknowledged before the backup was asked for.  It freezes the state
on the event loop (a copy of the map) and serializes it with a background
runner: its reactor's thread pool.  Serializing holds the GIL, so a large
map still slows the leader down while it runs, as C{--snapshot-writer
thread} does (README, Snapshot stalls).  Backups run one at a time; the
txraft-client (L{txraft.client}) writes the file.

L{Administrator} carries them out on a node's driver: it proposes through
L{RaftNode.proposeMembership}, and the driver calls L{Administrator.check}
after each input, when a new server's catch-up or a transfer may have
moved on.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from txraft import answers
from txraft.core import (
    LEADER,
    ChangeInProgressError,
    LeaderNotReadyError,
    NotLeaderError,
    TransferringError,
)
from txraft.membership import Membership, MembershipError, parseMember
from txraft.messages import Snapshot
from txraft.snapshots import encodeSnapshot

if TYPE_CHECKING:
    from txraft.node import RaftNode

#: The first word of every operator's command.
ADMIN_WORDS = frozenset({"members", "add", "add-learner", "remove", "transfer-leader", "backup"})

#: How long C{add} waits for a new server to catch up before it gives up
#: (the server stays a learner).
CATCH_UP_SECONDS = 60.0

#: How long C{transfer-leader} waits for the new leader to take over.
TRANSFER_SECONDS = 5.0

IN_PROGRESS = answers.error("a membership change is in progress")

#: The answer to an operator's command sent with a SEQ: sessions number
#: clients' data commands, not these.
NOT_NUMBERED = answers.error("operators' commands take no SEQ")

#: Runs a slow function off the event loop; fires with its result on it.
Background = Callable[[Callable[[], Any]], defer.Deferred[Any]]


class AdminError(ValueError):
    """An operator's command with the wrong arguments; C{str()} says why."""


@attrs.frozen
class AdminCommand:
    """One parsed operator's command: its word and its arguments."""

    word: str
    arguments: tuple[str, ...] = ()


_ARGUMENTS = {
    "members": ((), "no arguments"),
    "add": ((3,), "NAME HOST PORT"),
    "add-learner": ((3,), "NAME HOST PORT"),
    "remove": ((1,), "NAME"),
    "transfer-leader": ((0, 1), "[NAME]"),
    "backup": ((), "no arguments"),
}


def parseAdmin(text: str) -> AdminCommand | None:
    """
    The operator's command C{text} is, or L{None} if it is none.

    @raise AdminError: if its arguments are not the ones it takes.
    """
    words = text.split()
    if not words or words[0] not in ADMIN_WORDS:
        return None
    word, arguments = words[0], tuple(words[1:])
    counts, usage = _ARGUMENTS[word]
    if len(arguments) not in (counts or (0,)):
        raise AdminError(f"{word} takes {usage}")
    return AdminCommand(word, arguments)


@attrs.define
class _CatchUp:
    """A new server being brought up to date in rounds (dissertation section 4.2.1)."""

    name: str
    answer: defer.Deferred[str]
    deadline: float
    #: The leader's last index when this round started, and the tick it started at.
    target: int = 0
    startTick: int = 0


@attrs.define
class _Transfer:
    """A leadership transfer waiting for the new leader."""

    target: str
    answer: defer.Deferred[str]
    deadline: float


def inThreads(clock: IReactorTime) -> Background:
    """
    Run slow functions in C{clock}'s thread pool, if it is a reactor that
    has one (a node's is); at once on any other clock (tests, the
    simulation), where there is no other thread to run them in.
    """
    if IReactorThreads.providedBy(clock):
        reactor: Any = clock
        return lambda function: threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), function
        )
    return defer.maybeDeferred


def encodeBackup(snapshot: Snapshot, membership: Membership) -> str:
    """
    The answer to C{backup}: C{OK} and the base64 of C{snapshot}'s file.
    A snapshot taken while the cluster still ran on its config file has
    no membership line (L{txraft.snapshots}); the backup names
    C{membership}, the one as of its index, instead.
    """
    if not snapshot.membership:
        snapshot = attrs.evolve(snapshot, membership=membership.encode())
    return answers.ok(base64.b64encode(encodeSnapshot(snapshot)).decode("ascii"))


class Administrator:
    """
    Carries out operators' commands on one node, one at a time (backups
    aside).

    @ivar busy: whether a command is under way.
    @ivar background: serializes backups off the event loop.
    """

    log = Logger()

    def __init__(self, node: RaftNode, background: Background | None = None) -> None:
        """
        @param background: how to serialize a backup off the event loop
            (default: L{inThreads} of the node's clock).
        """
        self.node = node
        self.busy = False
        self.background = background if background is not None else inThreads(node.clock)
        self._catchUp: _CatchUp | None = None
        self._transfer: _Transfer | None = None
        self._backups = defer.DeferredLock()

    def execute(self, command: AdminCommand) -> str | defer.Deferred[str]:
        """Start C{command}; its answer, or a Deferred of it."""
        refusal = self.node.refusal()
        if refusal is not None:
            return refusal
        if command.word == "members":
            return answers.ok(self.node.core.membership.describe())
        if command.word == "backup":
            return self._backups.run(self._backup)
        if self.busy:
            return IN_PROGRESS
        try:
            result = self._start(command)
        except MembershipError as e:
            return answers.error(str(e))
        return self._track(result) if isinstance(result, defer.Deferred) else result

    def check(self) -> None:
        """See whether a new server caught up or a transfer ended; called after each input."""
        if self._catchUp is not None:
            self._checkCatchUp(self._catchUp)
        if self._transfer is not None:
            self._checkTransfer(self._transfer)

    def handOver(self) -> defer.Deferred[None]:
        """
        Before this node stops: if it leads and another voter exists, hand
        leadership to the most up-to-date one and wait (at most
        L{TRANSFER_SECONDS}) until it leads, so that clients do not wait an
        election timeout for a new leader.
        """
        core = self.node.core
        if core.role != LEADER or self.busy or self._successor() is None:
            return defer.succeed(None)
        answer = self._startTransfer(None)
        if isinstance(answer, str):
            return defer.succeed(None)
        return self._track(answer).addCallback(lambda _: None)

    def _start(self, command: AdminCommand) -> str | defer.Deferred[str]:
        """Start a command that changes something."""
        membership = self.node.core.membership
        if command.word == "transfer-leader":
            return self._startTransfer(command.arguments[0] if command.arguments else None)
        if command.word == "remove":
            return self._change(membership.removing(command.arguments[0]))
        member = parseMember(*command.arguments, voter=False)
        if command.word == "add" and membership.member(member.name) == member:
            # Added before but never promoted: go on to its promotion.
            return self._promote(member.name, defer.succeed(answers.OK))
        added = self._change(membership.adding(member))
        if command.word == "add-learner" or isinstance(added, str):
            return added
        return self._promote(member.name, added)

    def _track(self, answer: defer.Deferred[str]) -> defer.Deferred[str]:
        """Hold off other commands until C{answer} fires."""
        self.busy = True

        def done(result: str) -> str:
            self.busy = False
            return result

        return answer.addBoth(done)

    # -- backup ---------------------------------------------------------------------

    def _backup(self) -> str | defer.Deferred[str]:
        """Once every write acknowledged so far is applied, take a backup."""
        barrier = self.node.readBarrier()
        if isinstance(barrier, str):
            return barrier
        return barrier.addCallback(self._takeBackup)

    def _takeBackup(self, barrier: str) -> str | defer.Deferred[str]:
        """
        Freeze the state machine as of its last applied entry, which is
        committed, and serialize it in the background.
        """
        if not answers.isSuccess(barrier):
            return barrier
        manager = self.node.logManager
        index = manager.lastApplied
        membership = self.node.core.membershipAt(index)
        serialize = manager.captureState()
        d = self.background(lambda: encodeBackup(serialize(), membership))
        return d.addCallbacks(self._backupTaken, self._backupFailed, callbackArgs=(index,))

    def _backupTaken(self, answer: str, index: int) -> str:
        self.log.info(
            "node {name} took a backup up to index {index}", name=self.node.name, index=index
        )
        return answer

    def _backupFailed(self, failure: Failure) -> str:
        self.log.failure("could not take a backup", failure)
        return answers.error(f"backup failed: {failure.getErrorMessage()}")

    # -- membership -------------------------------------------------------------

    def _change(self, membership: Membership) -> str | defer.Deferred[str]:
        """Propose C{membership}; C{OK} once it commits."""
        try:
            committed = self.node.proposeMembership(membership)
        except ChangeInProgressError:
            return IN_PROGRESS
        except LeaderNotReadyError:
            return answers.LEADER_NOT_READY
        except TransferringError:
            return answers.TRANSFERRING
        except NotLeaderError:
            return self.node.notLeader()
        return committed.addCallback(_okIfCommitted)

    def _promote(self, name: str, added: defer.Deferred[str]) -> defer.Deferred[str]:
        """Once C{added} says OK, catch C{name} up in rounds, then make it a voter."""
        answer: defer.Deferred[str] = defer.Deferred()

        def learnerCommitted(result: str) -> None:
            if result != answers.OK:
                answer.callback(result)
                return
            node = self.node
            self._catchUp = _CatchUp(
                name,
                answer,
                deadline=node.clock.seconds() + CATCH_UP_SECONDS,
                target=node.core.log.lastIndex,
                startTick=node.tickCount,
            )
            self._checkCatchUp(self._catchUp)

        added.addCallback(learnerCommitted)
        return answer

    def _checkCatchUp(self, catchUp: _CatchUp) -> None:
        """
        End a round once the new server holds everything the leader had
        when it began: promote it if the round took less than an election
        timeout, else start another (dissertation section 4.2.1).
        """
        node, core = self.node, self.node.core
        if core.role != LEADER:
            self._catchUp = None
            catchUp.answer.callback(answers.LEADERSHIP_LOST)
            return
        if core.progress(catchUp.name).matchIndex >= catchUp.target:
            if node.tickCount - catchUp.startTick <= core.electionTicks[0]:
                self._catchUp = None
                promoted = self._change(core.membership.promoting(catchUp.name))
                if isinstance(promoted, str):
                    catchUp.answer.callback(promoted)
                else:
                    promoted.chainDeferred(catchUp.answer)
                return
            catchUp.target, catchUp.startTick = core.log.lastIndex, node.tickCount
        if node.clock.seconds() >= catchUp.deadline:
            self._catchUp = None
            catchUp.answer.callback(
                answers.unavailable(f"{catchUp.name} has not caught up; it stays a learner")
            )

    # -- leadership transfer ---------------------------------------------------------

    def _successor(self) -> str | None:
        """The most up-to-date other voter, if there is one."""
        core = self.node.core
        voters = [peer for peer in core.peers if core.membership.isVoter(peer)]
        if not voters:
            return None
        return max(voters, key=lambda peer: core.progress(peer).matchIndex)

    def _startTransfer(self, target: str | None) -> str | defer.Deferred[str]:
        """
        Hand leadership to C{target} (or the most up-to-date voter); OK once
        it leads.

        @raise MembershipError: if C{target} is not another voter.
        """
        if target is None:
            target = self._successor()
            if target is None:
                return answers.error("there is no other voter to hand leadership to")
        self.node.transferLeadership(target)
        answer: defer.Deferred[str] = defer.Deferred()
        self._transfer = _Transfer(target, answer, self.node.clock.seconds() + TRANSFER_SECONDS)
        self._checkTransfer(self._transfer)
        return answer

    def _checkTransfer(self, transfer: _Transfer) -> None:
        """Answer a transfer once the target leads, or once it surely will not."""
        core = self.node.core
        failed = None
        if core.leaderId == transfer.target:
            result = answers.OK
        elif core.role == LEADER and core.leadTransferee is None:
            failed = f"{transfer.target} did not take over in time; this node still leads"
        elif core.leaderId not in (None, self.node.name):
            failed = f"{core.leaderId} took over instead of {transfer.target}"
        elif self.node.clock.seconds() >= transfer.deadline:
            failed = f"{transfer.target} did not take over in time"
        else:
            return
        self._transfer = None
        transfer.answer.callback(answers.unavailable(failed) if failed else result)


def _okIfCommitted(result: str | None) -> str:
    """A membership entry applies to L{None}: committed means OK."""
    return answers.OK if result is None else result
