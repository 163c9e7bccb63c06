"""
Where a node does the slow part of taking a snapshot: serializing its state
machine and writing it durably, while the event loop goes on serving.

Two ways, behind one type (L{Snapshotter}):

  - L{inBackground}: freeze the state machine on the event loop (a copy of
    the map), then serialize and write the copy with a background runner
    (a thread pool).  Simple, but the copy stalls the loop for as long as
    it takes, and serializing holds the GIL: a large map stalls the node
    for seconds, long enough for its followers to elect another leader;
  - L{inChild}: fork, and let the child serialize and write the state it
    inherited, as Redis does.  The loop only pays for the fork (copying the
    page tables: tens of milliseconds for a few hundred megabytes), then
    reads the written file back in a thread, which mostly waits on the
    disk with the GIL released.  Until the child ends, Python's cyclic
    garbage collector is off: walking the objects the child shares, it
    would copy their pages.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from txraft.children import dieWithParent
from txraft.logmanager import LogManager
from txraft.messages import Snapshot
from txraft.snapshots import FileSnapshotStore

#: Takes a snapshot of a LogManager's state machine as of its last applied
#: entry; fires with the snapshot and what its store staged.
Snapshotter = Callable[[LogManager], defer.Deferred[tuple[Snapshot, object]]]

#: Runs a slow function off the event loop; fires with its result on it.
Background = Callable[[Callable[[], Any]], defer.Deferred[Any]]

#: How often the event loop looks whether a snapshot's child is done.
POLL_SECONDS = 0.01


class SnapshotChildError(Exception):
    """The child that was writing a snapshot failed."""


def inBackground(background: Background) -> Snapshotter:
    """Freeze the state on the event loop; serialize and write it with C{background}."""

    def take(manager: LogManager) -> defer.Deferred[tuple[Snapshot, object]]:
        return background(manager.captureSnapshot())

    return take


def inChild(clock: IReactorTime, inThread: Background) -> Snapshotter:
    """
    Serialize and write each snapshot in a forked child; C{inThread} reads
    the written file back (the leader sends it to followers that need it).
    Only for a L{FileSnapshotStore}: a child's memory dies with it.
    """

    def take(manager: LogManager) -> defer.Deferred[tuple[Snapshot, object]]:
        store = manager.snapshotStore
        if not isinstance(store, FileSnapshotStore):
            raise TypeError("a snapshot written in a child needs a FileSnapshotStore")
        collecting = gc.isenabled()
        # No cyclic garbage collection while the child shares the node's
        # memory: a collection writes to every object it visits, so each
        # page it touches would be copied.  The first full collection after
        # the fork of a node holding a million keys took 100 to 250 ms
        # instead of 10; the garbage waits for the child to end.
        gc.disable()
        try:
            pid = os.fork()
        except BaseException:
            if collecting:
                gc.enable()
            raise
        if pid == 0:
            _writeAndExit(manager)
        done: defer.Deferred[tuple[Snapshot, object]] = defer.Deferred()

        def poll() -> None:
            try:
                finished, status = os.waitpid(pid, os.WNOHANG)
            except OSError:
                if collecting:
                    gc.enable()
                done.errback()
                return
            if not finished:
                clock.callLater(POLL_SECONDS, poll)
                return
            if collecting:
                gc.enable()
            code = os.waitstatus_to_exitcode(status)
            if code != 0:
                done.errback(SnapshotChildError(f"snapshot child {pid} exited with {code}"))
                return
            staged = store.staging
            reading = inThread(lambda: store.readStaged(staged))
            reading.addCallback(lambda snapshot: (snapshot, staged))
            reading.chainDeferred(done)

        clock.callLater(POLL_SECONDS, poll)
        return done

    return take


def _writeAndExit(manager: LogManager) -> None:
    """In the child: write the snapshot, then leave without running the parent's handlers."""
    code = 1
    try:
        dieWithParent()
        # Let go of the parent's sockets and files at once: a connection the
        # parent closes must not stay open here while the snapshot is written.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        manager.captureSnapshot()()
        code = 0
    finally:
        os._exit(code)
