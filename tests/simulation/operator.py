"""
The operator of a simulated cluster: membership changes and leadership
transfers during the faults, sent as the operators' commands of
L{txraft.admin} (C{add}, C{add-learner}, C{remove}, C{transfer-leader},
C{members}, C{backup}) through the path every client request takes
(L{txraft.node.RaftNode.submit}).

The operator decides what to do from what it can see of the cluster (the
membership of the node that leads, as C{members} would tell it), sends the
command to the leader or to any node, follows redirects, and sends it again
when it surely did not run.  It grows the cluster (a new node starts with
C{RaftNode(join=True)} and an empty disk, before or after the C{add}),
adds learners, promotes them (C{add} of a learner), removes a member (now
and then the leader itself) and then stops it for good or leaves it
running, adds one left running again (its old log and all), and hands
leadership over, with or without a name.  Now and then
it sends a command that must be refused, or restarts the leader's machine
as a planned restart does (the leader hands over first).

Every C{OK} it gets is checked against the committed log: an C{add}
answered C{OK} made its node a voter in a committed membership, a
C{remove} took it out of one, a C{transfer-leader} saw the new leader
elected, a C{backup} holds the replay of the committed log up to an
index past all that was committed when it was asked for.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import attrs

from tests.simulation.clients import CONNECTION_REFUSED, NOT_EXECUTED, SimClient
from txraft import answers
from txraft.admin import CATCH_UP_SECONDS, IN_PROGRESS, TRANSFER_SECONDS
from txraft.membership import Membership
from txraft.snapshots import decodeSnapshot

if TYPE_CHECKING:
    from tests.simulation.nodes import SimNode
    from tests.simulation.run import Simulation

#: The operator's actions and how often each is chosen.
OPERATOR_WEIGHTS: dict[str, int] = {
    "grow": 4,
    "addLearner": 2,
    "promote": 3,
    "shrink": 4,
    "transfer": 3,
    "members": 1,
    "backup": 1,
    "invalid": 1,
    "restart": 2,
}

#: The statistic an C{OK} to each kind of addition counts in.
ADDED_STATS = {"grow": "adminAdded", "promote": "adminPromoted", "readd": "adminReadded"}

#: How many times the operator sends a command that surely did not run.
MAX_ATTEMPTS = 8

#: Answers after which an operator's command surely did not run.
RETRY = NOT_EXECUTED | {CONNECTION_REFUSED, IN_PROGRESS}


@attrs.define
class AdminRequest:
    """
    One operator's command under way.

    @ivar kind: the action it carries out (a key of L{OPERATOR_WEIGHTS}).
    @ivar subject: the server it is about, if any.
    @ivar committedBefore: how long the committed log was when it was sent.
    """

    text: str
    kind: str
    subject: str | None
    sentAt: int
    committedBefore: int
    attempts: int = 0
    redirects: int = 0


class Operator:
    """
    Changes a simulated cluster's membership while the faults go on, one
    command at a time; see the module's docstring.

    @ivar request: the command waiting for its answer, if any.
    @ivar removed: the nodes a committed membership no longer holds
        because the operator removed them.
    @ivar keptRunning: those of them left running on their old data, which
        the operator may add again (C{readd}) under their old name.
    """

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation
        self.client = SimClient("admin", onReply=self._receive)
        self.request: AdminRequest | None = None
        self.removed: set[str] = set()
        self.keptRunning: set[str] = set()
        #: The term, and the leader, of the node that answered last, when it did.
        self.answerView: tuple[int, str | None] = (0, None)

    def start(self) -> None:
        """Plan the first command."""
        self.sim.events.after(self.sim.rng.randint(*self.sim.options.operatorEveryMs), self.act)

    def busy(self) -> bool:
        """Whether a command waits for its answer."""
        return self.request is not None

    # -- choosing a command -------------------------------------------------------------

    def act(self) -> None:
        """Take the next action, unless one is under way, and plan the one after."""
        sim = self.sim
        if sim.now >= sim.options.faultMs:
            return
        sim.events.after(sim.rng.randint(*sim.options.operatorEveryMs), self.act)
        if self.request is not None:
            return
        # What `members` would say: the leader's membership, or while no
        # node leads, that of the node most up to date.
        running = [
            node
            for node in sim.nodes.values()
            if node.up and not node.silent and node.core.membership.members
        ]
        if not running:
            return
        leader = sim.leader() or max(
            running, key=lambda n: (n.core.currentTerm, n.core.log.lastIndex)
        )
        kinds = list(OPERATOR_WEIGHTS)
        kind = sim.rng.choices(kinds, [OPERATOR_WEIGHTS[k] for k in kinds])[0]
        getattr(self, f"_act_{kind}")(leader, leader.core.membership)

    def _joiners(self, membership: Membership) -> list[str]:
        """Nodes started to join that the membership does not hold (their add failed)."""
        return [
            node.name
            for node in self.sim.nodes.values()
            if node.joined
            and not node.retired
            and node.name not in self.removed
            and membership.member(node.name) is None
        ]

    def _act_grow(self, leader: SimNode, membership: Membership, learner: bool = False) -> None:
        sim = self.sim
        options = sim.options
        waiting = self._joiners(membership)
        readdable = sorted(n for n in self.keptRunning if membership.member(n) is None)
        if readdable and not learner:
            # A removed node that kept running still holds its old log, maybe
            # with entries nobody else has: added again, it must give them up.
            address = sim.addresses[sim.rng.choice(readdable)]
            self._send(
                leader, f"add {address.name} {address.host} {address.port}", "readd", address.name
            )
            return
        if waiting:
            # Its add did not go through: the operator tries again.
            address = sim.addresses[sim.rng.choice(waiting)]
        elif (
            sum(node.joined for node in sim.nodes.values()) < options.maxJoiners
            and len(membership.members) < options.maxMembers
            and len(sim.addresses) == len(sim.nodes)
        ):
            address = sim.newAddress()
            if sim.rng.random() < 0.7:
                sim.launch(address)
            else:
                # The operator runs `add` first and starts the node after.
                sim.events.after(sim.rng.randint(20, 600), sim.launch, address)
        else:
            return
        word = "add-learner" if learner else "add"
        kind = "addLearner" if learner else "grow"
        self._send(
            leader, f"{word} {address.name} {address.host} {address.port}", kind, address.name
        )

    def _act_addLearner(self, leader: SimNode, membership: Membership) -> None:
        self._act_grow(leader, membership, learner=True)

    def _act_promote(self, leader: SimNode, membership: Membership) -> None:
        # A stale view may still hold a learner removed since: `add` would
        # add it again, and it may be stopped for good.
        learners = [m for m in membership.members if not m.voter and m.name not in self.removed]
        if not learners:
            return self._act_grow(leader, membership, learner=True)
        member = self.sim.rng.choice(learners)
        self._send(
            leader, f"add {member.name} {member.host} {member.port}", "promote", member.name
        )

    def _act_shrink(self, leader: SimNode, membership: Membership) -> None:
        sim = self.sim
        voters = membership.voters()
        enough = len(voters) > sim.options.minVoters
        candidates = [m.name for m in membership.members if enough or not m.voter]
        if not candidates:
            return
        if leader.name in candidates and sim.rng.random() < 0.3:
            name = leader.name
        else:
            name = sim.rng.choice(candidates)
        self._send(leader, f"remove {name}", "shrink", name)

    def _act_transfer(self, leader: SimNode, membership: Membership) -> None:
        sim = self.sim
        others = [m.name for m in membership.members if m.voter and m.name != leader.name]
        if others and sim.rng.random() < 0.6:
            target = sim.rng.choice(others)
            self._send(leader, f"transfer-leader {target}", "transfer", target)
        else:
            self._send(leader, "transfer-leader", "transfer", None)

    def _act_restart(self, leader: SimNode, membership: Membership) -> None:
        """
        A planned restart of the leader's machine: it hands its leadership
        over first (L{RaftNode.handOver}, as on SIGTERM), then stops, and
        starts again a little later.
        """
        sim = self.sim
        if sim.leader() is not leader:
            return
        incarnation = leader.incarnation
        sim.record("operator restarts {} gracefully", leader.name)
        sim.stats["gracefulRestarts"] += 1

        def handedOver(_: object) -> None:
            if leader.up and leader.incarnation == incarnation:
                if leader.core.leaderId not in (None, leader.name):
                    sim.stats["handOversDone"] += 1
                leader.driver.stop()
                sim.crash(leader, "stopped after handing over")

        leader.driver.handOver().addCallback(handedOver)

    def _act_backup(self, leader: SimNode, membership: Membership) -> None:
        self._send(leader, "backup", "backup", None)

    def _act_members(self, leader: SimNode, membership: Membership) -> None:
        self._send(leader, "members", "members", None)

    def _act_invalid(self, leader: SimNode, membership: Membership) -> None:
        """
        A command no cluster takes, whatever its membership (the operator's
        view may be stale, so "a name taken" is not one of them).
        """
        text = self.sim.rng.choice(
            (
                "add bad!name 127.0.0.1 10100",
                "add-learner n99 127.0.0.1 0",
                "remove nosuchnode",
                "transfer-leader nosuchnode",
                "transfer-leader n1 n2",
                "remove",
            )
        )
        self._send(leader, text, "invalid", None)

    # -- sending, answers -----------------------------------------------------------

    def _send(self, leader: SimNode, text: str, kind: str, subject: str | None) -> None:
        """Start a command: to the leader mostly, else to any node (which redirects)."""
        sim = self.sim
        self.request = AdminRequest(
            text,
            kind,
            subject,
            sim.now,
            len(sim.checker.committed),
        )
        sim.stats["adminCommands"] += 1
        target = leader.name if sim.rng.random() < 0.6 else sim.rng.choice(sim.names)
        self._sendTo(target)

    def _sendTo(self, target: str) -> None:
        sim = self.sim
        request, client = self.request, self.client
        assert request is not None
        request.attempts += 1
        client.requestId += 1
        client.target = client.waitingOn = target
        client.sentAt = sim.now
        sim.record("operator sends {!r} to {}", request.text, target)
        node = sim.node(target)
        if node is None or not node.up or target in sim.network.offline:
            # No process there, or its machine is off the network.
            sim.workload._reply(client, client.requestId, CONNECTION_REFUSED, target)
        else:
            node.inbound[client.name, client.requestId] = client
            sim.events.after(sim.network.delay(), self._arrive, node, client.requestId)
        bound = sim.options.answerTimeoutMs
        if request.kind in ("grow", "promote"):
            bound += int(CATCH_UP_SECONDS * 1000) + 2 * sim.options.commitTimeoutMs
        elif request.kind == "transfer":
            bound += int(TRANSFER_SECONDS * 1000)
        sim.events.after(bound, self._answerTimeout, client.requestId)

    def _arrive(self, node: SimNode, requestId: int) -> None:
        """The command reaches C{node}'s driver, as a client's request does."""
        client, request = self.client, self.request
        if (client.name, requestId) not in node.inbound or request is None:
            return  # the node crashed since: the operator saw its connection close
        if node.paused():
            self.sim.events.at(node.pausedUntil, self._arrive, node, requestId)
            return
        node.driver.submit(
            client.name, request.text, None, lambda text: self._answered(node, requestId, text)
        )

    def _answered(self, node: SimNode, requestId: int, text: str) -> None:
        """
        C{node} answers: note whom it follows then (a transfer's C{OK} says
        the new leader leads), and send the answer back.
        """
        if self.client.requestId == requestId:
            self.answerView = (node.core.currentTerm, node.core.leaderId)
        self.sim.workload.answer(node, self.client, requestId, text)

    def _answerTimeout(self, requestId: int) -> None:
        sim = self.sim
        if self.client.requestId != requestId or self.request is None:
            return
        node = sim.node(self.client.waitingOn or "")
        if node is not None and node.up:
            sim.fail(
                f"the operator's {self.request.text!r} to {node.name}, sent at "
                f"{self.client.sentAt} ms, got no answer though the node stayed up"
            )

    def _retry(self) -> None:
        """Send the command again later, to another node, unless it was tried enough."""
        sim = self.sim
        request = self.request
        assert request is not None
        if request.attempts >= MAX_ATTEMPTS:
            sim.stats["adminGaveUp"] += 1
            self.request = None
            return
        request.redirects = 0
        delay = sim.rng.randint(*sim.options.backoffMs) * 2
        sim.events.after(delay, self._resend, request)

    def _resend(self, request: AdminRequest) -> None:
        if self.request is request:
            self._sendTo(self.sim.rng.choice(self.sim.names))

    def _receive(self, requestId: int, text: str | None, nodeName: str) -> None:
        """An answer to the operator (L{None}: its connection closed first)."""
        sim = self.sim
        request = self.request
        if self.client.requestId != requestId or request is None:
            return
        sim.record("operator gets {!r} from {}", text, nodeName)
        if text is None:
            sim.stats["adminUnknown"] += 1
            self.request = None
            return
        redirect = answers.parseRedirect(text)
        if redirect is not None:
            request.redirects += 1
            if request.redirects <= 3:
                self._sendTo(redirect.leader)
            else:
                self._retry()
        elif text in RETRY:
            self._retry()
        elif answers.isUnavailable(text):
            # The outcome is unknown (the change may still commit): move on.
            sim.stats["adminUnknown"] += 1
            self.request = None
        elif text.startswith("ERROR"):
            sim.stats["adminRefused"] += 1
            self.request = None
        else:
            self.request = None
            self._done(request, text, nodeName)

    def _done(self, request: AdminRequest, text: str, nodeName: str) -> None:
        """A command answered C{OK}: check that what it says happened did."""
        sim = self.sim
        checker = sim.checker
        after = [m for index, m in checker.memberships if index > request.committedBefore]
        subject = request.subject
        if request.kind == "invalid":
            sim.fail(f"the operator's invalid {request.text!r} was answered {text!r}")
        elif request.kind == "backup":
            value = answers.okValue(text) or ""
            snapshot = decodeSnapshot(base64.b64decode(value, validate=True), "the backup")
            checker.observeBackup(nodeName, snapshot, request.committedBefore)
        elif request.kind == "members":
            listed = json.loads(answers.okValue(text) or "null")
            if not listed or any(item["name"] not in sim.addresses for item in listed):
                sim.fail(f"members answered {text!r}")
            sim.stats["membersListed"] += 1
        elif request.kind in ("grow", "promote", "readd"):
            if not any(m.isVoter(subject or "") for m in after):
                sim.fail(
                    f"the operator was told OK for {request.text!r}, but no membership "
                    f"committed since makes {subject} a voter"
                )
            sim.stats[ADDED_STATS[request.kind]] += 1
            self.removed.discard(subject or "")
            self.keptRunning.discard(subject or "")
        elif request.kind == "addLearner":
            if not any(
                (member := m.member(subject or "")) is not None and not member.voter for m in after
            ):
                sim.fail(
                    f"the operator was told OK for {request.text!r}, but no membership "
                    f"committed since holds {subject} as a learner"
                )
            sim.stats["adminLearnersAdded"] += 1
        elif request.kind == "shrink":
            assert subject is not None
            if not any(m.member(subject) is None for m in after):
                sim.fail(
                    f"the operator was told OK for {request.text!r}, but no membership "
                    f"committed since is without {subject}"
                )
            sim.stats["adminRemoved"] += 1
            self.removed.add(subject)
            self._afterRemoval(subject)
        elif request.kind == "transfer":
            # It answered OK once it followed the new leader.
            term, leader = self.answerView
            took = leader not in (None, nodeName) and subject in (None, leader)
            if not took or checker.leaders.get(term) != leader:
                sim.fail(
                    f"the operator was told OK for {request.text!r} by {nodeName}, which "
                    f"followed {leader} in term {term}, led by {checker.leaders.get(term)}"
                )
            sim.stats["transfersDone"] += 1

    def _afterRemoval(self, name: str) -> None:
        """A removed node is stopped for good, now or a little later, or left running."""
        sim = self.sim
        node = sim.node(name)
        if node is None:
            return
        if sim.rng.random() < 0.5:
            sim.events.after(sim.rng.randint(0, 400), sim.retire, node)
        else:
            self.keptRunning.add(name)
            sim.stats["removedNodesKeptRunning"] += 1
            sim.record("{} was removed and keeps running", name)
