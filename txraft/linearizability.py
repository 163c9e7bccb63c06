"""
Moved to L{txraft.testing.linearizability}: import from there.

This alias stays only until C{tests/simulation.py}, which is being
rewritten, imports L{Operation} and L{checkHistory} from their new home;
then it goes.
"""

from txraft.testing.linearizability import Operation, checkHistory

__all__ = ["Operation", "checkHistory"]
