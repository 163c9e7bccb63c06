"""
The C{txraft-restore} command: a new cluster's node data from a backup.

    txraft-restore --snapshot FILE --name NAME [--config FILE] [--data-dir DIR]

A backup (C{txraft-client PORT backup FILE}) is a snapshot file
(L{txraft.snapshots}): the state machine, the client sessions and the
membership as of one committed index.  Run this for every node of the new
cluster, each from the same backup, before any of them starts; the cluster
then starts with the backup's keys and sessions, and goes on from the
index after the backup's.  NAME must be a node of the config file, which
gives the new cluster's members (other names and addresses than the old
cluster's if need be); C{--config} and C{--data-dir} mean what they mean
to C{twistd txraft}, and default alike.

For node NAME it writes, through the node's own stores:

  - C{DIR/NAME.state}: the backup's term, no vote.  A node's term must be
    at least that of its last entry: a vote request carries both, and a
    peer refuses one whose entry is of a later term than the request
    (L{txraft.messages.parseMessage});
  - C{DIR/NAME.log}: an empty log, which starts after the backup's index;
  - C{DIR/NAME.snapshot}: the backup, with its membership line empty.  An
    empty line says the cluster still runs on its config file (its
    bootstrap membership), so the new cluster takes its members from
    C{--config}, as a fresh one does, and not from the old cluster's
    membership; its first membership change then goes to its log.

It refuses a data directory that holds any of NAME's files (even empty
ones), and one where node NAME is running: it never overwrites a node's
data.  The snapshot is written last.  If restoring fails half-way, NAME's
files that it did write are left; remove them and run it again.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TextIO

import attrs
from twisted.python import usage

from txraft import cli
from txraft.config import ConfigError, loadConfig
from txraft.kv import KeyValueStore
from txraft.messages import NAME_PATTERN, HardState, Snapshot
from txraft.snapshots import FileSnapshotStore, decodeSnapshot
from txraft.storage import FileLogStore, FileStateStore, StorageError, lockDataDirectory
from txraft.tap import createDurably

PROGRAM = "txraft-restore"

#: The files of node NAME in its data directory (C{{}} is NAME), those a
#: crash may leave included: any of them means the node has data there.
NODE_FILES = (
    "{}.log",
    "{}.log.compact",
    "{}.state",
    "{}.state.tmp",
    "{}.snapshot",
    "{}.snapshot.tmp",
    "{}.snapshot.staged",
    "{}.snapshot.retired",
)


class RestoreError(Exception):
    """The backup cannot be restored here; C{str()} is one line saying why."""


class Options(cli.Options):
    """The command line of C{txraft-restore}."""

    program = PROGRAM
    synopsis = f"Usage: {PROGRAM} --snapshot FILE --name NAME [--config FILE] [--data-dir DIR]"
    longdesc = (
        "Prepare node NAME's data directory from a backup (txraft-client PORT backup "
        "FILE), so that a new cluster, whose members are those of the config file, "
        "starts with the backup's data.  Run it for every node of the new cluster, from "
        "the same backup, before starting any.  A data directory that holds any of "
        "NAME's files is refused."
    )
    optParameters = [
        ["snapshot", None, None, "The backup: a snapshot file (required)."],
        ["name", None, None, "The node's name in the cluster config (required)."],
        ["config", None, "etc/cluster.conf", "The new cluster's config: lines NAME HOST PORT."],
        ["data-dir", None, "logs", "The node's data directory (made if missing)."],
    ]

    def postOptions(self) -> None:
        """Require C{--snapshot} and a valid C{--name}."""
        if not self["snapshot"]:
            raise usage.UsageError("--snapshot is required")
        name = self["name"]
        if not name:
            raise usage.UsageError("--name is required")
        if not NAME_PATTERN.fullmatch(name):
            raise usage.UsageError(f"--name {name!r} must be letters, digits, '_' or '-'")


def readBackup(path: str) -> Snapshot:
    """
    The snapshot in the backup file C{path}, checked: its header and
    checksum, and that its data is a key-value store's state.

    @raise RestoreError: if it cannot be read or is no such snapshot.
    """
    try:
        with open(path, "rb") as f:
            contents = f.read()
    except OSError as e:
        raise RestoreError(f"{path}: cannot read the backup: {e.strerror}") from None
    try:
        snapshot = decodeSnapshot(contents, path)
        KeyValueStore().restore(snapshot.data)
    except StorageError as e:
        raise RestoreError(str(e).removesuffix("; refusing to start")) from None
    except ValueError as e:
        raise RestoreError(f"{path}: not a backup of a key-value store: {e}") from None
    return snapshot


def restore(snapshot: Snapshot, name: str, directory: str) -> None:
    """
    Write node C{name}'s term, empty log and snapshot into C{directory}
    (made if missing) from C{snapshot}: see the module docstring.

    @raise RestoreError: if the directory holds any of the node's files,
        the node runs there, or a file cannot be written.
    """
    try:
        createDurably(directory)
        lock = lockDataDirectory(directory, name)
    except OSError as e:
        raise RestoreError(f"{directory}: cannot use the data directory: {e.strerror}") from None
    except StorageError as e:
        raise RestoreError(str(e)) from None
    try:
        found = [f.format(name) for f in NODE_FILES]
        found = [f for f in found if os.path.lexists(os.path.join(directory, f))]
        if found:
            raise RestoreError(
                f"{directory} holds data of node {name} ({', '.join(found)}); "
                "not touching it: restore into a data directory without it"
            )
        path = os.path.join(directory, name)
        try:
            FileStateStore(f"{path}.state").save(HardState(snapshot.term, None))
            log = FileLogStore(f"{path}.log")
            try:
                log.load(snapshot.index)
            finally:
                log.close()
            FileSnapshotStore(f"{path}.snapshot").save(attrs.evolve(snapshot, membership=""))
        except OSError as e:
            raise RestoreError(
                f"{e.filename or directory}: {e.strerror or e}; remove node {name}'s files "
                "there before trying again"
            ) from None
    finally:
        os.close(lock)


def main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run C{txraft-restore} with C{argv} (default C{sys.argv[1:]}); return 0
    once the node's data is written, 1 if it cannot be, 2 for a usage
    error.
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else list(argv))
    except usage.UsageError as e:
        print(f"{PROGRAM}: {e}\n(see {PROGRAM} --help)", file=stderr)
        return 2
    name, directory = options["name"], options["data-dir"]
    try:
        loadConfig(options["config"]).node(name)
        snapshot = readBackup(options["snapshot"])
        restore(snapshot, name, directory)
    except (ConfigError, RestoreError) as e:
        print(f"{PROGRAM}: ERROR {e}", file=stderr)
        return 1
    print(
        f"restored index {snapshot.index} (term {snapshot.term}) of {options['snapshot']} "
        f"for node {name} in {directory}",
        file=stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
