"""
The simulated disk of one node: in-memory stores whose durable writes may
lose power or fail, as a real disk's would.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from txraft.messages import HardState, Snapshot
from txraft.snapshots import MemorySnapshotStore
from txraft.storage import MemoryLogStore, MemoryStateStore, SyncPoint


class SimulatedCrashError(OSError):
    """
    The power failed just before a durable write.  To the node it is a
    failed write (an C{OSError}); the simulation then ends its process
    before anything else it does can leave it.
    """


class Disk:
    """
    The faults of one node's disk, shared by its three stores: every
    durable write first asks L{write}, which may lose power or fail.

    @ivar crashAfter: if not 0, the power fails just before the
        C{crashAfter}-th durable write from now.
    @ivar powerLost: the power failed; the node's process is dying and
        every write fails until the simulation restarts it.
    @ivar failingUntil: until this simulated time, durable writes fail.
    @ivar quiet: no faults at all (while a node starts).
    """

    def __init__(self, clock: Callable[[], int]) -> None:
        self.clock = clock
        self.crashAfter = 0
        self.powerLost = False
        self.failingUntil = 0
        self.quiet = False

    def powerBack(self) -> None:
        """The power is back (the node's process starts again): no crash is armed."""
        self.crashAfter = 0
        self.powerLost = False

    def write(self, what: str) -> None:
        """Called before each durable write of C{what}."""
        if self.quiet:
            return
        if self.crashAfter:
            self.crashAfter -= 1
            if self.crashAfter == 0:
                self.powerLost = True
        if self.powerLost:
            raise SimulatedCrashError(errno.EIO, f"power lost before {what}")
        if self.clock() < self.failingUntil:
            raise OSError(errno.EIO, f"I/O error while {what}")


class SimLogStore(MemoryLogStore):
    """A L{MemoryLogStore} on a L{Disk}: its sync and compaction can crash or fail."""

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self.disk = disk

    def sync(self) -> None:
        """Make the entries durable (unless the disk says otherwise)."""
        self.disk.write("syncing the log")
        super().sync()

    def syncTo(self, point: SyncPoint) -> None:
        """Make the entries of C{point} durable (unless the disk says otherwise)."""
        self.disk.write("syncing the log")
        super().syncTo(point)

    def compact(self, index: int) -> None:
        """Drop entries up to C{index} durably (unless the disk says otherwise)."""
        self.disk.write("compacting the log")
        super().compact(index)


class SimStateStore(MemoryStateStore):
    """A L{MemoryStateStore} on a L{Disk}."""

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self.disk = disk

    def save(self, state: HardState) -> None:
        """Save C{state} (unless the disk says otherwise)."""
        self.disk.write("saving the term and vote")
        super().save(state)


class SimSnapshotStore(MemorySnapshotStore):
    """A L{MemorySnapshotStore} on a L{Disk}."""

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self.disk = disk

    def save(self, snapshot: Snapshot) -> None:
        """Save C{snapshot} (unless the disk says otherwise)."""
        self.disk.write("saving a snapshot")
        super().save(snapshot)

    def commit(self, staged: object) -> None:
        """Put a staged snapshot in place (unless the disk says otherwise)."""
        self.disk.write("putting a snapshot in place")
        super().commit(staged)
