"""
Child processes that die with their parent: snapshot writers (forked by a
node) and the nodes a test harness starts.
"""

from __future__ import annotations

import signal
import sys
from ctypes import CDLL, get_errno

#: prctl(2)'s option that sets the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def dieWithParent() -> None:
    """
    In a child, after fork (and before exec, if any): have Linux kill this
    process when the thread that forked it ends, so that no child outlives
    a killed node or a test runner killed by a timeout.  Elsewhere, nothing.
    """
    if sys.platform.startswith("linux"):
        libc = CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError(get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
