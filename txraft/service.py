"""
The Twisted shell around the pure core: timers, the Ready loop, peer links,
the listening port, and the client requests waiting for their entries to
commit.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from txraft.config import ClusterConfig
from txraft.core import FOLLOWER, LEADER, HardState, RaftCore, Ready, Snapshot
from txraft.kv import CommandError, parseCommand
from txraft.logmanager import LogManager
from txraft.messages import Entry, Message
from txraft.peers import PeerLink
from txraft.protocol import NodeFactory
from txraft.storage import StorageError

#: A client command not committed this many seconds after it was proposed
#: is answered C{UNAVAILABLE}: its outcome is unknown (an isolated leader,
#: say, cannot commit it, but a later leader might).
COMMIT_TIMEOUT = 5.0

#: Take a snapshot once this many entries were applied since the last one.
SNAPSHOT_ENTRIES = 10_000

#: Runs a slow function off the reactor thread; the Deferred fires with its
#: result in the reactor thread.
Background = Callable[[Callable[[], Any]], defer.Deferred[Any]]

#: After a write to its disk failed, a node tries this often to reload its
#: state from the disk, make it durable again, and rejoin the cluster.
DISK_RETRY_SECONDS = 1.0

#: The answer to client commands while the disk fails.
DISK_FAILED = "UNAVAILABLE node cannot write to its disk"


class RaftService(MultiService):
    """
    One txraft node: drives a L{RaftCore} with ticks, peer messages and
    client commands, and carries out every L{Ready} it returns.
    """

    log = Logger()

    def __init__(
        self,
        config: ClusterConfig,
        name: str,
        logManager: LogManager,
        reactor: IReactorTime,
        *,
        tickSeconds: float = 0.01,
        electionTicks: tuple[int, int] = (40, 80),
        heartbeatTicks: int = 10,
        rng: random.Random | None = None,
        snapshotEntries: int = SNAPSHOT_ENTRIES,
        background: Background | None = None,
    ) -> None:
        """
        @param snapshotEntries: how many applied entries trigger a snapshot.
        @param background: how to run the slow part of a snapshot (default:
            right away, in the reactor thread; a node passes a thread pool).
        """
        super().__init__()
        self.config = config
        self.name = name
        self.address = config.node(name)
        self.reactor = reactor
        self.tickSeconds = tickSeconds
        self.logManager = logManager
        logManager.setServiceParent(self)
        hardState, entries = logManager.recover()
        self._coreOptions = {
            "electionTicks": electionTicks,
            "heartbeatTicks": heartbeatTicks,
            "rng": rng,
        }
        self.core = self._newCore(hardState, entries)
        maxDelay = electionTicks[0] * tickSeconds / 2
        self._links = {
            peer.name: PeerLink(self, peer, reactor, maxDelay) for peer in config.peersOf(name)
        }
        for link in self._links.values():
            link.clientService.setServiceParent(self)
        self._ticker = LoopingCall.withCount(self._ticks)
        self._ticker.clock = reactor
        self._batch: list[tuple[str, defer.Deferred[str]]] = []
        self._flushCall = None
        # Client commands proposed and not yet applied, by log index (so in
        # proposal order): (term, deadline, Deferred of the reply).
        self._waiting: dict[int, tuple[int, float, defer.Deferred[str]]] = {}
        self._silent = False
        # Set while a write to the disk has failed: the error, and the retry.
        self._diskError: str | None = None
        self._diskRetry = None
        self.snapshotEntries = snapshotEntries
        self._background = background if background is not None else defer.maybeDeferred
        self._snapshotting = False
        self._factory = NodeFactory(self)
        self.port = None

    def _newCore(self, hardState: HardState, entries: list[Entry]) -> RaftCore:
        """A core for this node starting from a recovered term, vote and log."""
        return RaftCore(
            self.name,
            self.config.names(),
            hardState=hardState,
            snapshot=self.logManager.snapshot,
            entries=entries,
            # After a disk failure the state machine is kept: what it has
            # applied is committed, and must neither apply again nor be
            # replaced by an older snapshot from the leader.
            commitIndex=self.logManager.lastApplied,
            **self._coreOptions,  # type: ignore[arg-type]
        )

    # -- lifecycle ----------------------------------------------------------------

    def startService(self) -> None:
        """Listen, connect to peers, start the clock."""
        reactor: IReactorTCP = self.reactor  # type: ignore[assignment]
        try:
            self.port = reactor.listenTCP(
                self.address.port, self._factory, interface=self.address.host
            )
        except CannotListenError as e:
            raise SystemExit(
                f"txraft: node {self.name} cannot listen on "
                f"{self.address.host}:{self.address.port}: {e.socketError}"
            ) from None
        super().startService()
        self._ticker.start(self.tickSeconds, now=False)
        self.log.info(
            "node {name} listening on {host}:{port}",
            name=self.name,
            host=self.address.host,
            port=self.address.port,
        )

    def stopService(self) -> defer.Deferred[None] | None:
        """Fall silent, stop listening, and close every connection."""
        if self._diskRetry is not None and self._diskRetry.active():
            self._diskRetry.cancel()
        self._diskRetry = None
        self._fallSilent("UNAVAILABLE node is shutting down")
        stopped = [defer.maybeDeferred(self.port.stopListening)] if self.port else []
        stopped.append(defer.maybeDeferred(super().stopService))
        return defer.gatherResults(stopped).addCallback(lambda _: None)

    def _fallSilent(self, answer: str, disconnect: bool = True) -> None:
        """
        Stop taking part in Raft: no more ticks, no more replies to peers,
        no more messages sent; every client still waiting gets C{answer};
        then close every connection unless told not to.
        """
        self._silent = True
        if self._ticker.running:
            self._ticker.stop()
        if self._flushCall is not None and self._flushCall.active():
            self._flushCall.cancel()
        self._flushCall = None
        batch, self._batch = self._batch, []
        for _, d in batch:
            d.callback(answer)
        self._failWaiting(answer)
        if disconnect:
            self._factory.disconnectAll()

    # -- inputs ---------------------------------------------------------------------

    def _ticks(self, count: int) -> None:
        # After a stall (a paused process, a busy machine) catch up by at most
        # one heartbeat interval, so that what peers sent meanwhile is read
        # before this node decides that its leader is gone.
        for _ in range(min(count, self.core.heartbeatTicks)):
            if self._silent:
                return
            self._process(self.core.tick())
        self._expireWaiting()

    def isPeer(self, name: str) -> bool:
        """Whether C{name} is another node of this cluster."""
        return name in self._links

    def peerRequest(self, sender: str, message: Message) -> Message | None:
        """
        Step a peer's request and return the reply to send back on its
        connection, or L{None} if this node could not persist what the
        reply promises.
        """
        if self._silent:
            return None
        ready = self.core.step(sender, message)
        reply = ready.reply
        self._process(ready)
        return None if self._silent else reply

    def peerResponse(self, sender: str, message: Message) -> None:
        """Step a peer's response to one of our requests."""
        if not self._silent:
            self._process(self.core.step(sender, message))

    def clientRequest(self, clientId: str | None, text: str) -> str | defer.Deferred[str]:
        """
        Answer a client's request line: C{status} here and now, commands
        once committed and applied (on the leader), otherwise a redirect.
        """
        if text.strip() == "status":
            return "OK " + json.dumps(self.status())
        try:
            command = parseCommand(text)
        except CommandError as e:
            return f"ERROR {e}"
        if self._silent:
            if self._diskError is None:
                return "UNAVAILABLE node is not serving"
            # The last leader it heard of is only a hint, but a harmless one.
            if self.core.leaderId not in (None, self.name):
                return self._notLeader()
            return DISK_FAILED
        if self.core.role != LEADER:
            return self._notLeader()
        d: defer.Deferred[str] = defer.Deferred()
        self._batch.append((command.text, d))
        if self._flushCall is None:
            # Group commit: every command that arrives in this reactor turn
            # shares one append, one fsync and one AppendEntries per follower.
            self._flushCall = self.reactor.callLater(0, self._flush)
        return d

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
            "snapshotIndex": core.log.snapshotIndex,
        }
        if self._diskError is not None:
            status["role"] = FOLLOWER
            if core.leaderId == self.name:
                status["leader"] = None
            status["diskError"] = self._diskError
        return status

    # -- the Ready loop -----------------------------------------------------------------

    def _flush(self) -> None:
        self._flushCall = None
        batch, self._batch = self._batch, []
        if self.core.role != LEADER:
            answer = self._notLeader()
            for _, d in batch:
                d.callback(answer)
            return
        ready = self.core.propose([text for text, _ in batch])
        deadline = self.reactor.seconds() + COMMIT_TIMEOUT
        for entry, (_, d) in zip(ready.entries, batch, strict=True):
            self._waiting[entry.index] = (entry.term, deadline, d)
        self._process(ready)

    def _process(self, ready: Ready) -> None:
        """Carry out C{ready}: persist, send, apply (the reply is the caller's)."""
        if self._silent:
            return
        wasLeading = bool(self._waiting)
        if ready.needsSync:
            try:
                self.logManager.persist(ready)
            except Exception as e:
                self._storageFailed(e)
                return
        for peer, message in ready.messages:
            self._links[peer].send(message)
        if ready.snapshot is not None:
            self.logManager.installSnapshot(ready.snapshot)
        for entry, result in self.logManager.apply(ready.committed):
            waiter = self._waiting.pop(entry.index, None)
            if waiter is None:
                continue
            term, _, d = waiter
            d.callback(result if term == entry.term else "UNAVAILABLE entry was overwritten")
        if wasLeading and self.core.role != LEADER:
            self._failWaiting("UNAVAILABLE leadership lost before commit")
        self._maybeSnapshot()

    # -- snapshots ------------------------------------------------------------------

    def _maybeSnapshot(self) -> None:
        """
        Once C{snapshotEntries} entries were applied since the last
        snapshot, take one: freeze the state machine here, serialize and
        write it in the background, then compact (dissertation section 5.1).
        """
        manager = self.logManager
        base = manager.snapshot.index if manager.snapshot else 0
        if self._snapshotting or manager.lastApplied - base < self.snapshotEntries:
            return
        self._snapshotting = True
        d = self._background(manager.captureSnapshot())
        d.addCallback(lambda written: self._snapshotWritten(*written))
        d.addErrback(self._snapshotFailed)

    def _snapshotWritten(self, snapshot: Snapshot, staged: object) -> None:
        """Put a written snapshot in place and compact the log, unless overtaken."""
        self._snapshotting = False
        core = self.core
        # Meanwhile the node may have installed a later snapshot from its
        # leader, or rebuilt its core after a disk failure.
        if self._silent or not core.log.snapshotIndex < snapshot.index <= core.commitIndex:
            return
        try:
            self.logManager.commitSnapshot(snapshot, staged)
        except Exception as e:
            self._storageFailed(e)
            return
        core.compact(snapshot)
        self.log.info("snapshot up to index {index} saved; log compacted", index=snapshot.index)

    def _snapshotFailed(self, failure: Failure) -> None:
        self._snapshotting = False
        self.log.failure("could not write a snapshot; will try again", failure)

    def _notLeader(self) -> str:
        leader = self.core.leaderId
        if leader is None:
            return "UNAVAILABLE no leader known"
        address = self.config.node(leader)
        return f"REDIRECT {leader} {address.host} {address.port}"

    def _failWaiting(self, answer: str) -> None:
        waiting, self._waiting = self._waiting, {}
        for _, _, d in waiting.values():
            d.callback(answer)

    def _expireWaiting(self) -> None:
        now = self.reactor.seconds()
        while self._waiting:
            index, (_, deadline, d) = next(iter(self._waiting.items()))
            if deadline > now:
                return
            del self._waiting[index]
            d.callback("UNAVAILABLE not committed in time; the outcome is unknown")

    def _storageFailed(self, error: Exception) -> None:
        """
        A write failed: this node's memory is now ahead of its disk, so it
        must not say another word to its peers.  It falls silent (no ticks,
        no replies, no messages) but keeps its connections: clients still
        get C{status}, and other commands a redirect or L{DISK_FAILED}.
        Every L{DISK_RETRY_SECONDS} it tries to L{_rejoin}.
        """
        self.log.critical(
            "node {name} cannot persist its Raft state: {error}; it takes no part in Raft "
            "until its disk works again, retrying every {delay}s",
            name=self.name,
            error=error,
            delay=DISK_RETRY_SECONDS,
        )
        self._diskError = str(error) or type(error).__name__
        self._fallSilent(DISK_FAILED, disconnect=False)
        self._diskRetry = self.reactor.callLater(DISK_RETRY_SECONDS, self._rejoin)

    def _rejoin(self) -> None:
        """
        Rebuild the core from what the disk durably holds, once the disk
        takes writes again, and rejoin as a follower: what the old core held
        beyond the disk was never acknowledged to anyone, so this is the
        state of a node that crashed and restarted.  Stored data found
        corrupt stops the node, as it would stop a start.
        """
        self._diskRetry = None
        try:
            hardState, entries = self.logManager.recoverAfterFailure()
        except StorageError as e:
            self.log.critical("stored state unusable, stopping node: {error}", error=e)
            self.reactor.stop()  # type: ignore[attr-defined]
            return
        except Exception as e:
            self.log.warn("disk still failing: {error}", error=e)
            self._diskError = str(e) or type(e).__name__
            self._diskRetry = self.reactor.callLater(DISK_RETRY_SECONDS, self._rejoin)
            return
        self.core = self._newCore(hardState, entries)
        self._diskError = None
        self._silent = False
        self._ticker.start(self.tickSeconds, now=False)
        self.log.info(
            "node {name} can write to its disk again; rejoining in term {term} "
            "with {count} log entries",
            name=self.name,
            term=hardState.currentTerm,
            count=len(entries),
        )
