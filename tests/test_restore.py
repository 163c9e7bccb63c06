"""
Tests for L{txraft.restore}, the C{txraft-restore} command: it makes a new
node's data directory from a backup, and refuses one that holds the
node's data; a node started on what it wrote (the production driver on the
real file stores) serves the backup's keys and sessions.
"""

from __future__ import annotations

import io
import os
import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import clientRequest, temporaryDirectory
from txraft import answers
from txraft.config import loadConfig
from txraft.core import LEADER
from txraft.kv import KeyValueStore
from txraft.logmanager import LogManager
from txraft.messages import (
    HardState,
    Message,
    RequestVote,
    Snapshot,
    formatMessage,
    parseMessage,
)
from txraft.node import RaftNode
from txraft.restore import NODE_FILES, main
from txraft.snapshots import FileSnapshotStore, encodeSnapshot
from txraft.storage import FileLogStore, FileStateStore, lockDataDirectory
from txraft.testing.localcluster import writeConfig

#: The backed-up cluster's membership: other names and ports than the new one's.
OLD_MEMBERSHIP = "membership voter old1 10.0.0.1 9000 voter old2 10.0.0.2 9000"


def backedUpState() -> bytes:
    """
    A key-value state as a backup holds it: two keys, and client c1's
    session, whose SEQ 1 (C{set a 1}) ran before C{a} was set again.
    """
    store = KeyValueStore()
    store.apply("c1#1@set a 1", 1)
    store.apply("set a 2", 2)
    store.apply("set greeting hello world", 3)
    return store.capture()()


#: The backup: its last entry is index 40 of term 6.
BACKUP = Snapshot(40, 6, backedUpState(), OLD_MEMBERSHIP)


class RestoreTestCase(SynchronousTestCase):
    """A backup file and a new cluster's config in a temporary directory."""

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)
        self.backupPath = os.path.join(self.directory, "backup.snapshot")
        with open(self.backupPath, "wb") as f:
            f.write(encodeSnapshot(BACKUP))
        self.configPath = os.path.join(self.directory, "new.conf")
        writeConfig(self.configPath, {"s1": ("127.0.0.1", 20000), "s2": ("127.0.0.1", 20001)})
        self.dataDir = os.path.join(self.directory, "data")

    def restore(self, *extra: str, name: str = "s1") -> tuple[int, str, str]:
        """Run C{txraft-restore} for C{name}; its exit status, stdout and stderr."""
        stdout, stderr = io.StringIO(), io.StringIO()
        argv = ["--snapshot", self.backupPath, "--name", name, "--config", self.configPath]
        status = main([*argv, "--data-dir", self.dataDir, *extra], stdout, stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    def nodeFiles(self, name: str = "s1") -> dict[str, bytes]:
        """The files of node C{name} in the data directory, by name, and what they hold."""
        found = {}
        for pattern in NODE_FILES:
            path = os.path.join(self.dataDir, pattern.format(name))
            if os.path.exists(path):
                with open(path, "rb") as f:
                    found[pattern.format(name)] = f.read()
        return found


class RestoreTests(RestoreTestCase):
    """What C{txraft-restore} writes."""

    def test_restores(self) -> None:
        """
        The data directory is made; the node's term is the backup's, with
        no vote; its log is empty; its snapshot is the backup, but with no
        membership, so the new cluster runs on its config file.
        """
        status, out, err = self.restore()
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(
            out, f"restored index 40 (term 6) of {self.backupPath} for node s1 in {self.dataDir}\n"
        )
        self.assertEqual(sorted(self.nodeFiles()), ["s1.log", "s1.snapshot", "s1.state"])
        path = os.path.join(self.dataDir, "s1")
        self.assertEqual(FileStateStore(f"{path}.state").load(), HardState(6, None))
        self.assertEqual(self.nodeFiles()["s1.log"], b"")
        log = FileLogStore(f"{path}.log")
        self.addCleanup(log.close)
        self.assertEqual((log.load(40), log.lastIndex), ([], 40))
        snapshot = FileSnapshotStore(f"{path}.snapshot").load()
        self.assertEqual(snapshot, Snapshot(40, 6, BACKUP.data, ""))

    def test_everyNodeBesideTheOthers(self) -> None:
        """Nodes may share a data directory: each is restored beside the others' files."""
        self.assertEqual(self.restore()[0], 0)
        self.assertEqual(self.restore(name="s2")[0], 0)
        self.assertEqual(self.nodeFiles("s1")["s1.snapshot"], self.nodeFiles("s2")["s2.snapshot"])


class RefusalTests(RestoreTestCase):
    """What C{txraft-restore} refuses, saying why in one line, exit status 1."""

    def assertRefused(self, expected: str, *extra: str, name: str = "s1") -> None:
        """Restoring C{name} exits 1, saying C{expected} in its one line of error."""
        status, out, err = self.restore(*extra, name=name)
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("txraft-restore: ERROR "), err)
        self.assertIn(expected, err)
        self.assertEqual(err.count("\n"), 1, err)

    def test_nodeHasData(self) -> None:
        """
        A data directory that holds any file of the node, even an empty one
        or one a crash left, is left as it was.
        """
        for pattern in NODE_FILES:
            with self.subTest(file=pattern):
                self.dataDir = os.path.join(temporaryDirectory(self), "data")
                os.mkdir(self.dataDir)
                name = pattern.format("s1")
                with open(os.path.join(self.dataDir, name), "wb") as f:
                    f.write(b"" if name == "s1.log" else b"the node's own data")
                before = self.nodeFiles()
                self.assertRefused(f"holds data of node s1 ({name}); not touching it")
                self.assertEqual(self.nodeFiles(), before)

    def test_restoredTwice(self) -> None:
        """So is a node restored already."""
        self.assertEqual(self.restore()[0], 0)
        before = self.nodeFiles()
        self.assertRefused("holds data of node s1 (s1.log, s1.state, s1.snapshot)")
        self.assertEqual(self.nodeFiles(), before)

    def test_nodeRunning(self) -> None:
        """And a directory where the node runs (holds its lock)."""
        os.mkdir(self.dataDir)
        lock = lockDataDirectory(self.dataDir, "s1")
        self.addCleanup(os.close, lock)
        self.assertRefused("node s1 is already running on this data dir")
        self.assertEqual(self.nodeFiles(), {})

    def test_badBackup(self) -> None:
        """
        A backup that is missing, no snapshot, damaged, or of no key-value
        store writes nothing.
        """
        good = encodeSnapshot(BACKUP)
        for contents, expected in [
            (None, "cannot read the backup: No such file or directory"),
            (b"hello\n", "not a txraft snapshot"),
            (good[:-1] + b"X", "snapshot checksum does not match"),
            (encodeSnapshot(Snapshot(3, 1, b"[1, 2]")), "not a backup of a key-value store"),
        ]:
            with self.subTest(expected=expected):
                if os.path.exists(self.backupPath):
                    os.remove(self.backupPath)
                if contents is not None:
                    with open(self.backupPath, "wb") as f:
                        f.write(contents)
                self.assertRefused(expected)
                self.assertEqual(self.nodeFiles(), {})
                self.assertNotIn("refusing to start", self.restore()[2])

    def test_notInConfig(self) -> None:
        """A name the new cluster's config does not have."""
        self.assertRefused("unknown node name 's3'", name="s3")
        self.assertFalse(os.path.exists(self.dataDir))

    def test_usage(self) -> None:
        """Without C{--snapshot} or C{--name}, or with a bad name: exit 2, the reason."""
        for argv, reason in [
            (["--name", "s1"], "--snapshot is required"),
            (["--snapshot", self.backupPath], "--name is required"),
            (["--snapshot", self.backupPath, "--name", "a b"], "must be letters"),
        ]:
            with self.subTest(argv=argv):
                stderr = io.StringIO()
                self.assertEqual(main(argv, io.StringIO(), stderr), 2)
                self.assertIn(reason, stderr.getvalue())


class RestoredNodeTests(RestoreTestCase):
    """A node started on a restored data directory, with the real file stores."""

    def startNode(
        self, config: str, sent: list[tuple[str, Message]] | None = None
    ) -> tuple[RaftNode, Clock]:
        """Node s1 of the cluster of C{config}, on the data directory's files."""
        clock = Clock()
        path = os.path.join(self.dataDir, "s1")
        manager = LogManager(
            FileLogStore(f"{path}.log"),
            FileStateStore(f"{path}.state"),
            KeyValueStore(),
            FileSnapshotStore(f"{path}.snapshot"),
        )
        self.addCleanup(manager.logStore.close)
        node = RaftNode(
            "s1",
            loadConfig(config),
            manager,
            clock,
            lambda peer, message: (sent if sent is not None else []).append((peer, message)),
            electionTicks=(10, 20),
            heartbeatTicks=3,
            rng=random.Random(3),
        )
        return node, clock

    def test_servesTheBackup(self) -> None:
        """
        A one-node cluster restored from the backup leads in a later term,
        reads the backup's keys, answers a retry of a numbered request that
        ran before the backup from its session (it does not run again),
        runs on the new config's members, and logs after the backup's index.
        """
        writeConfig(self.configPath, {"s1": ("127.0.0.1", 20000)})
        self.assertEqual(self.restore()[0], 0)
        node, clock = self.startNode(self.configPath)
        for _ in range(21):
            node.ticks(1)
        self.assertEqual((node.core.role, node.core.currentTerm), (LEADER, 7))
        self.assertEqual(node.core.membership.encode(), "membership voter s1 127.0.0.1 20000")
        greeting = clientRequest(node, None, "get greeting")
        retry = clientRequest(node, "c1", "set a 1", seq=1)
        clock.advance(0)
        self.assertEqual(self.successResultOf(greeting), "OK hello world")
        self.assertEqual(self.successResultOf(retry), answers.OK)
        self.assertEqual(node.logManager.stateMachine.data["a"], "2")
        with open(os.path.join(self.dataDir, "s1.log")) as f:
            self.assertEqual(f.read().split("\n")[0].split(" ")[:2], ["41", "7"])

    def test_voteRequestsValid(self) -> None:
        """
        The restored node's vote requests carry its term, above its last
        entry's (the backup's), so that its peers' parser takes them.
        """
        self.assertEqual(self.restore()[0], 0)
        sent: list[tuple[str, Message]] = []
        node, _ = self.startNode(self.configPath, sent)
        for _ in range(21):
            node.ticks(1)
        requests = [m for _, m in sent if isinstance(m, RequestVote)]
        self.assertTrue(requests)
        for request in requests:
            self.assertEqual((request.lastLogIndex, request.lastLogTerm), (40, 6))
            line = formatMessage("s1", request).partition("@")[2]
            self.assertEqual(parseMessage(line), request)
