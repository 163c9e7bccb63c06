"""
The seams between txraft's parts, as C{zope.interface} Interfaces.

Each boundary names what one side needs of the other, so the listening
protocol, the peer links, the LogManager and the test fakes depend on these
and not on each other's classes.  Tests check the real objects and every
fake with C{verifyObject}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from txraft.messages import Entry, HardState, Snapshot


class IRequestHandler(Interface):
    """
    What the listening protocol needs of a node: a name to sign its peer
    answers with, and somewhere to send each request line it parsed.
    """

    name = Attribute("This node's name in the cluster, as peers know it.")

    def isPeer(name: str) -> bool:
        """Whether C{name} is another node of this cluster."""

    def peerRequest(sender: str, message: object) -> object | None:
        """
        Handle a peer's request message and return the response message to
        send back, or L{None} if this node cannot answer (it is not serving);
        or a Deferred of either, if the answer must wait (for the disk).
        """

    def submit(
        clientId: str | None, text: str, seq: int | None, respond: Callable[[str], object]
    ) -> None:
        """
        Answer a client's request: call C{respond} once with the answer
        line, now or once the command has run.  A request numbered C{seq}
        (its client then has an ID) runs at most once however often it is
        sent (see L{txraft.sessions}).
        """

    def overloaded() -> object | None:
        """
        L{None} while the node takes more client requests; when it holds too
        many unanswered, a Deferred that fires once it has drained: until
        then the listening side reads no more requests.
        """


class IResponseHandler(Interface):
    """What a peer link needs of its node: where the peer's responses go."""

    name = Attribute("This node's name, which signs every request it sends.")

    def peerResponse(sender: str, message: object) -> None:
        """Take C{sender}'s response to one of this node's requests."""


class IStateMachine(Interface):
    """
    The replicated application the LogManager drives.  It must be
    deterministic: the same commands in the same order give the same state
    and the same answers on every node.
    """

    def apply(command: str, index: int) -> str:
        """
        Execute one committed command, the entry at log C{index}, and return
        the answer for its client.  The index is the only clock a state
        machine may use (to tell how recently a client was heard from, say).
        """

    def read(command: str) -> str:
        """
        Answer a read-only command from the current state, changing nothing
        (a leader's reads that need no log entry).
        """

    def capture() -> object:
        """
        Freeze the current state quickly and return a function of no
        arguments that serializes it to bytes; that function may run in
        another thread while commands go on being applied.
        """

    def restoring(data: bytes) -> Iterator[None]:
        """
        Replace the whole state with one serialized by C{capture}, in
        steps: each C{next()} does a few milliseconds of the work, and the
        state changes, all at once, when the last one ends.  Abandoned
        steps leave the state as it was.

        @raise ValueError: (from a step) if C{data} is not such a state.
        """


class INodeObserver(Interface):
    """
    Told what a node's driver did, in the order it did it: metrics, logs and
    the simulation's invariant checks listen here.  An observer must not
    change the node.
    """

    def coreStarted(core: object) -> None:
        """A new core runs: at start, and when rebuilt after a disk failure."""

    def persisted(ready: object) -> None:
        """A Ready's state is durable; its messages are about to be sent."""

    def snapshotInstalled(snapshot: object) -> None:
        """The state machine was reset to a snapshot from the leader."""

    def applied(results: object) -> None:
        """Committed entries ran: a list of (entry, answer) pairs, in order."""

    def snapshotSaved(snapshot: object) -> None:
        """A snapshot of this node's state machine is saved and the log compacted."""

    def diskFailed(error: str) -> None:
        """A write failed; the node takes no part in Raft until it rejoins."""

    def leaderChanged(leader: str | None, term: int) -> None:
        """
        The leader this node knows of, or its term, changed: C{leader} is the
        new leader's name, or L{None} while none is known.
        """

    def synced(seconds: float) -> None:
        """A Ready was made durable (written and fsynced) in C{seconds}."""

    def committed(seconds: float) -> None:
        """A client command this leader proposed ran, C{seconds} after it was proposed."""

    def answered(command: str, answer: str, seconds: float) -> None:
        """
        A client request was answered with the line C{answer}, C{seconds}
        after it arrived: C{command} is its command word (or C{"invalid"}).
        """

    def snapshotTaken(seconds: float) -> None:
        """A snapshot of this node was taken, written and put in place in C{seconds}."""


class ILogStore(Interface):
    """
    A node's log of entries, durable once L{sync} returns.  The log may
    start after index 1: the entries before it are in a snapshot.
    """

    def load(after: int = 0) -> list[Entry]:
        """
        Every entry after index C{after} (where the snapshot ends), in
        index order; entries up to C{after} are dropped from the store.

        @raise StorageError: if the stored log starts after C{after + 1},
            so that entries between the snapshot and the log are missing.
        """

    def compact(index: int) -> None:
        """Durably drop every entry up to C{index}, which a saved snapshot covers."""

    def truncateFrom(index: int) -> None:
        """Remove the entry at C{index} and every later one."""

    def append(entries: list[Entry]) -> None:
        """Add C{entries}, which continue the log without a gap."""

    def sync() -> None:
        """Make every earlier change durable."""

    def syncPoint() -> object:
        """What a L{syncTo} started now would make durable: every entry appended so far."""

    def syncTo(point: object) -> None:
        """
        Make the entries of C{point} durable.  Unlike every other method,
        this one may run in another thread than the one that changes the
        store, at the same time.
        """

    def markSynced(point: object) -> bool:
        """
        Record, in the thread that changes the store, that L{syncTo} of
        C{point} returned; whether its entries are still the log's (none was
        cut or compacted away since C{point} was taken).
        """

    def close() -> None:
        """Release the store's resources."""


class IStateStore(Interface):
    """Where the current term and vote live."""

    def load() -> HardState:
        """The last saved state, or the initial one."""

    def save(state: HardState) -> None:
        """Replace the saved state durably before returning."""


class ISnapshotStore(Interface):
    """
    Where a node keeps its latest snapshot.  Saving happens in two steps so
    that the slow one can run in another thread: L{stage} writes a new
    snapshot durably beside the current one, L{commit} puts it in place.
    """

    def load() -> Snapshot | None:
        """The saved snapshot, or L{None} if there is none."""

    def save(snapshot: Snapshot) -> None:
        """Replace the saved snapshot durably before returning."""

    def stage(snapshot: Snapshot) -> object:
        """
        Write C{snapshot} durably without replacing the current one; safe
        to call from another thread, one call at a time.  Returns what
        L{commit} takes.
        """

    def commit(staged: object) -> None:
        """Durably make a staged snapshot the saved one."""
