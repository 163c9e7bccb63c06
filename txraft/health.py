"""
Whether a node is healthy, judged from its C{status}: the rule behind
C{/health}, the web view's health column and C{txraft-client status --all}.

A node is healthy when it takes part in Raft (its disk works), knows a
leader, and has applied entries to within L{MAX_LAG} of the leader's
commit index, so that a load balancer or a probe sends clients only to
nodes that can serve them.
"""

from __future__ import annotations

from collections.abc import Mapping

#: How many committed entries a healthy node may not have applied yet.
MAX_LAG = 1000


def lag(status: Mapping[str, object]) -> int | None:
    """
    How many entries the leader has committed that this node has not
    applied, or L{None} while it knows no leader.
    """
    leaderCommit, applied = status.get("leaderCommit"), status.get("lastApplied")
    if not isinstance(leaderCommit, int) or not isinstance(applied, int):
        return None
    return max(0, leaderCommit - applied)


def checkHealth(status: Mapping[str, object], maxLag: int = MAX_LAG) -> str | None:
    """
    Return L{None} if the node whose C{status} this is is healthy, else
    the reason it is not: its disk failed, it knows no leader, or it lags.
    """
    if status.get("diskError"):
        return f"disk failure: {status['diskError']}"
    if status.get("leader") is None:
        return "no leader"
    behind = lag(status)
    if behind is not None and behind > maxLag:
        return f"lagging: {behind} committed entries not applied (at most {maxLag})"
    return None
