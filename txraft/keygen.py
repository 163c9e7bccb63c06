"""
The C{txraft-keygen FILE} command: write a new cluster key.

    txraft-keygen FILE
    txraft-keygen --version

Every node of a cluster is then started with C{--cluster-key FILE} (a copy
of the same file).  The key is 32 random bytes from L{secrets}, hex-encoded;
the file is created with mode 0600, and an existing file is never
overwritten, since that would lock a running cluster's nodes out of each
other.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from txraft import cli
from txraft.auth import writeKeyFile

PROGRAM = "txraft-keygen"


USAGE = f"Usage: {PROGRAM} FILE  (writes a new random cluster key to FILE, mode 0600)"


def main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run C{txraft-keygen} with C{argv} (default C{sys.argv[1:]}); return 0
    once the key is written (or for C{--help} and C{--version}), 1 if it
    cannot be, 2 for a usage error.
    """
    stderr = stderr or sys.stderr
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--help"], ["-h"]):
        print(USAGE, file=stdout or sys.stdout)
        return 0
    if args == ["--version"]:
        print(f"{PROGRAM} {cli.version()}", file=stdout or sys.stdout)
        return 0
    if len(args) != 1 or args[0].startswith("-"):
        print(USAGE, file=stderr)
        return 2
    path = args[0]
    try:
        writeKeyFile(path)
    except FileExistsError:
        print(f"{PROGRAM}: {path} exists; not overwriting a cluster key", file=stderr)
        return 1
    except OSError as e:
        print(f"{PROGRAM}: {path}: {e.strerror}", file=stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
