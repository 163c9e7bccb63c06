"""
Moved to L{txraft.testing.localcluster}: import from there.

This alias stays only until C{tests/test_service.py}, which is being
rewritten, imports L{freePorts} from its new home; then it goes.
"""

from txraft.testing.localcluster import freePorts

__all__ = ["freePorts"]
