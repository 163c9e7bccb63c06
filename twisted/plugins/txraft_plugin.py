"""
The twistd plugin for txraft: C{twistd txraft --name s1 ...} runs one node.

This lives in C{twisted/plugins/} (with no C{__init__.py} there or in
C{twisted/}) so Twisted's plugin system finds it; the real work is imported
lazily from L{txraft.tap}.
"""

from twisted.application.service import ServiceMaker

txraftServiceMaker = ServiceMaker(
    "txraft", "txraft.tap", "A Raft-replicated key-value store", "txraft"
)
