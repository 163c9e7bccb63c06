"""
Operators' commands: see and change a running cluster's membership, and
hand leadership over (dissertation chapter 4 and section 3.10).

    members                      the leader's membership, as JSON
    add NAME HOST PORT           add NAME as a learner, promote it once it caught up
    add-learner NAME HOST PORT   add NAME as a learner, never promoted
    remove NAME                  remove NAME (the leader too)
    transfer-leader [NAME]       hand leadership to NAME, or to the most up-to-date voter

Every command but C{members} waits for what it asks to be committed (or
for the new leader to lead) before answering C{OK}.  The leader runs one of
them at a time.  On a keyed cluster only a connection that proved the
cluster key may send them (L{txraft.protocol}).

L{Administrator} carries them out on a node's driver: it proposes through
L{RaftNode.proposeMembership}, and the driver calls L{Administrator.check}
after each input, when a new server's catch-up or a transfer may have
moved on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from twisted.internet import defer

from txraft import answers
from txraft.core import (
    LEADER,
    ChangeInProgressError,
    LeaderNotReadyError,
    NotLeaderError,
    TransferringError,
)
from txraft.membership import Membership, MembershipError, parseMember

if TYPE_CHECKING:
    from txraft.node import RaftNode

#: The first word of every operator's command.
ADMIN_WORDS = frozenset({"members", "add", "add-learner", "remove", "transfer-leader"})

#: How long C{add} waits for a new server to catch up before it gives up
#: (the server stays a learner).
CATCH_UP_SECONDS = 60.0

#: How long C{transfer-leader} waits for the new leader to take over.
TRANSFER_SECONDS = 5.0

IN_PROGRESS = answers.error("a membership change is in progress")


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


class Administrator:
    """
    Carries out operators' commands on one node, one at a time.

    @ivar busy: whether a command is under way.
    """

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self.busy = False
        self._catchUp: _CatchUp | None = None
        self._transfer: _Transfer | None = None

    def execute(self, command: AdminCommand) -> str | defer.Deferred[str]:
        """Start C{command}; its answer, or a Deferred of it."""
        refusal = self.node.refusal()
        if refusal is not None:
            return refusal
        if command.word == "members":
            return answers.ok(self.node.core.membership.describe())
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
