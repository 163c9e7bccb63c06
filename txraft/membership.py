"""
A cluster's membership as Raft replicates it (dissertation chapter 4).

The membership is a list of members, each a name, the address it listens
on, and whether it votes.  A learner gets the log and snapshots but neither
votes nor counts for commitment.  It lives in the replicated log as one
entry whose command is the whole membership in plain words, four words
per member::

    membership voter s1 127.0.0.1 10000 voter s2 127.0.0.1 10001 learner s4 10.0.0.4 10003

and in each snapshot (the membership as of its last entry).  A node uses
the newest membership in its log, committed or not (section 4.1).  The
cluster config file (L{txraft.config}) is only the bootstrap membership, all
voters, of a node whose log and snapshot hold none.
"""

from __future__ import annotations

import json

import attrs

from txraft.answers import parsePort
from txraft.config import ClusterConfig
from txraft.messages import NAME_PATTERN

#: The first word of every membership entry's command.
MEMBERSHIP_WORD = "membership"
_MEMBERSHIP_PREFIX = MEMBERSHIP_WORD + " "

VOTER = "voter"
LEARNER = "learner"


class MembershipError(ValueError):
    """A membership that cannot be, or a change that may not be made; C{str()} says why."""


@attrs.frozen
class Member:
    """One server of the cluster: its name, where it listens, whether it votes."""

    name: str
    host: str
    port: int
    voter: bool = True

    def describe(self) -> dict[str, object]:
        """The member as the C{members} command shows it."""
        return {"name": self.name, "host": self.host, "port": self.port, "voter": self.voter}


@attrs.frozen
class Membership:
    """
    The servers of a cluster at one point of its log: unique names, unique
    addresses, in the order they joined.  Empty for a node that is waiting
    to be added to a cluster.
    """

    members: tuple[Member, ...] = ()

    def __attrs_post_init__(self) -> None:
        names = [member.name for member in self.members]
        addresses = [(member.host, member.port) for member in self.members]
        if len(set(names)) != len(names):
            raise MembershipError("two members have the same name")
        if len(set(addresses)) != len(addresses):
            raise MembershipError("two members have the same address")

    @classmethod
    def fromConfig(cls, config: ClusterConfig) -> Membership:
        """The bootstrap membership of a cluster config file: every node votes."""
        return cls(tuple(Member(node.name, node.host, node.port) for node in config.nodes))

    @classmethod
    def ofVoters(cls, names: tuple[str, ...] | list[str]) -> Membership:
        """Voters known by name only (a bare core in tests has no addresses)."""
        return cls(tuple(Member(name, name, 1) for name in names))

    def names(self) -> tuple[str, ...]:
        """Every member's name, voters and learners."""
        return tuple(member.name for member in self.members)

    def voters(self) -> frozenset[str]:
        """The names of the members that vote and count for commitment."""
        return frozenset(member.name for member in self.members if member.voter)

    def isVoter(self, name: str) -> bool:
        """Whether C{name} is a voting member."""
        return name in self.voters()

    def member(self, name: str) -> Member | None:
        """The member called C{name}, if there is one."""
        for member in self.members:
            if member.name == name:
                return member
        return None

    def adding(self, member: Member) -> Membership:
        """
        This membership with C{member} added.

        @raise MembershipError: if its name or address is taken.
        """
        for other in self.members:
            if other.name == member.name:
                raise MembershipError(f"{member.name} is already a member")
            if (other.host, other.port) == (member.host, member.port):
                raise MembershipError(
                    f"{member.host} {member.port} is already the address of {other.name}"
                )
        return Membership((*self.members, member))

    def removing(self, name: str) -> Membership:
        """
        This membership without C{name}.

        @raise MembershipError: if C{name} is not a member, or is the last voter.
        """
        if self.member(name) is None:
            raise MembershipError(f"{name} is not a member")
        if self.voters() == {name}:
            raise MembershipError(f"{name} is the last voter")
        return Membership(tuple(member for member in self.members if member.name != name))

    def promoting(self, name: str) -> Membership:
        """This membership with the learner C{name} made a voter."""
        member = self.member(name)
        if member is None:
            raise MembershipError(f"{name} is not a member")
        return Membership(
            tuple(attrs.evolve(m, voter=True) if m.name == name else m for m in self.members)
        )

    def encode(self) -> str:
        """The command of the log entry that holds this membership."""
        words = [MEMBERSHIP_WORD]
        for member in self.members:
            words += [VOTER if member.voter else LEARNER, member.name, member.host]
            words.append(str(member.port))
        return " ".join(words)

    def describe(self) -> str:
        """The JSON list the C{members} command answers with."""
        return json.dumps([member.describe() for member in self.members])


def isMembershipCommand(command: str) -> bool:
    """Whether the log entry command C{command} holds a membership."""
    return command == MEMBERSHIP_WORD or command.startswith(_MEMBERSHIP_PREFIX)


def parseMembership(command: str) -> Membership:
    """
    The membership a log entry's command holds (L{Membership.encode}).

    @raise MembershipError: if it is not a well-formed membership.
    """
    words = command.split(" ")
    if words[0] != MEMBERSHIP_WORD or (len(words) - 1) % 4:
        raise MembershipError(f"not a membership: {command[:80]!r}")
    members = []
    for start in range(1, len(words), 4):
        kind, name, host, port = words[start : start + 4]
        members.append(parseMember(name, host, port, voter=_kind(kind)))
    return Membership(tuple(members))


def parseMember(name: str, host: str, port: str, *, voter: bool = True) -> Member:
    """
    A member from the words of a command (C{add NAME HOST PORT}).

    @raise MembershipError: if the name, host or port is not valid.
    """
    if NAME_PATTERN.fullmatch(name) is None:
        raise MembershipError(f"node name {name!r} must match {NAME_PATTERN.pattern}")
    if not host or any(character.isspace() for character in host):
        raise MembershipError(f"host {host!r} is not a host name or address")
    try:
        number = parsePort(port)
    except ValueError:
        raise MembershipError(f"port {port!r} is not an integer in 1..65535") from None
    return Member(name, host, number, voter)


def _kind(word: str) -> bool:
    if word not in (VOTER, LEARNER):
        raise MembershipError(f"a member is a voter or a learner, not {word!r}")
    return word == VOTER
