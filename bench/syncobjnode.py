"""
One PySyncObj node for C{bench/compare.py}: a C{ReplDict} replicated by
PySyncObj, behind a thin front end that speaks txraft's line protocol.

PySyncObj is a library with no client protocol of its own, so the benchmark's
one load generator reaches it through this front end: a Twisted line server
in the same process.  C{set KEY VALUE} calls C{ReplDict.set} with a callback
(no C{sync=True}, which would block the front end's one thread), and the
answer, C{OK} or C{UNAVAILABLE REASON}, is written once PySyncObj has
committed and applied the entry, in the order the requests came.  C{get KEY}
reads the node's own dictionary, as PySyncObj's API does (no leadership
check: cheaper than a linearizable read).  C{status} answers
C{OK {json}} with the node's Raft term, state and leader.

The cost of the front end: PySyncObj runs its Raft loop in its own thread
(C{autoTick}), so every answer crosses from that thread to the reactor's
(L{HandOver}: one C{callFromThread} for all the answers ready at a time),
and both threads share the GIL.  The file journal is
on; PySyncObj keeps it in an C{mmap} that it does not flush while running.

    python bench/syncobjnode.py --self 127.0.0.1:P1 --partner 127.0.0.1:P2 \\
        --partner 127.0.0.1:P3 --client-port C1 --data-dir DIR [--no-batch]
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Sequence

from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.python import usage

#: PySyncObj's failure reasons (its C{FAIL_REASON}), as the front end names them.
FAIL_REASONS = {
    1: "queue full",
    2: "missing leader",
    3: "discarded",
    4: "not leader",
    5: "leader changed",
    6: "request denied",
    7: "unknown outcome",
}


class Options(usage.Options):
    """Command line of one PySyncObj node."""

    optFlags = [["no-batch", None, "Turn PySyncObj's AppendEntries batching off."]]
    optParameters = [
        ["self", None, None, "This node's Raft address, HOST:PORT."],
        ["client-port", None, None, "The front end's port on 127.0.0.1.", int],
        ["data-dir", None, None, "Where the journal and the full dump go."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["partners"] = []

    def opt_partner(self, address: str) -> None:
        """Another node's Raft address, HOST:PORT (repeat for each)."""
        self["partners"].append(address)

    def postOptions(self) -> None:
        """Every address, the port and the directory are required."""
        for name in ("self", "client-port", "data-dir"):
            if self[name] is None:
                raise usage.UsageError(f"--{name} is required")


class HandOver:
    """
    Carries answers from PySyncObj's thread to the reactor's: one wake-up
    of the reactor takes every answer ready by then, rather than one
    C{callFromThread} per answer.
    """

    def __init__(self, reactor: IReactorFromThreads) -> None:
        self.reactor = reactor
        self.ready: deque[tuple[FrontEnd, list[str | None], str]] = deque()
        self.wakeScheduled = False

    def put(self, frontEnd: FrontEnd, slot: list[str | None], answer: str) -> None:
        """From any thread: have C{frontEnd} answer C{answer} in C{slot}."""
        # Appended before the flag is read: a drain that already cleared the flag
        # will take it, and otherwise this schedules one.
        self.ready.append((frontEnd, slot, answer))
        if not self.wakeScheduled:
            self.wakeScheduled = True
            self.reactor.callFromThread(self.drain)

    def drain(self) -> None:
        """In the reactor thread: give every ready answer to its front end."""
        self.wakeScheduled = False
        while self.ready:
            frontEnd, slot, answer = self.ready.popleft()
            frontEnd.answer(slot, answer)


class FrontEnd(LineReceiver):
    """
    One client connection: request lines in, answers out in request order.
    Each request holds a slot in L{pending}; a slot is filled when its
    answer is known, and answers leave from the head as soon as they can.
    """

    delimiter = b"\n"
    MAX_LENGTH = 65536

    def connectionMade(self) -> None:
        """Start with no request pending."""
        self.pending: deque[list[str | None]] = deque()

    def lineReceived(self, line: bytes) -> None:
        """Answer one request line."""
        verb, _, rest = line.decode("utf-8", "replace").rstrip("\r").partition(" ")
        slot: list[str | None] = [None]
        self.pending.append(slot)
        handler = getattr(self, f"cmd_{verb}", None)
        if handler is None:
            self.answer(slot, f"ERROR unknown command {verb!r}")
        else:
            handler(slot, rest)

    def cmd_set(self, slot: list[str | None], rest: str) -> None:
        """Replicate C{KEY VALUE}; answer when PySyncObj has applied it."""
        key, _, value = rest.partition(" ")
        handOver = self.factory.handOver

        def done(result: object, error: int) -> None:
            answer = "OK" if error == 0 else f"UNAVAILABLE {FAIL_REASONS.get(error, error)}"
            handOver.put(self, slot, answer)

        self.factory.store.set(key, value, callback=done)

    def cmd_get(self, slot: list[str | None], rest: str) -> None:
        """This node's value of C{KEY} (a local read)."""
        value = self.factory.store.get(rest)
        self.answer(slot, "NOT_FOUND" if value is None else f"OK {value}")

    def cmd_status(self, slot: list[str | None], rest: str) -> None:
        """The node's Raft term, state (0 follower, 1 candidate, 2 leader) and leader."""
        status = self.factory.syncObj.getStatus()
        document = {
            "term": status["raft_term"],
            "state": status["state"],
            "leader": None if status["leader"] is None else str(status["leader"]),
            "self": str(status["self"]),
        }
        self.answer(slot, "OK " + json.dumps(document))

    def answer(self, slot: list[str | None], text: str) -> None:
        """Fill C{slot} and write every answer now ready at the head."""
        slot[0] = text
        while self.pending and self.pending[0][0] is not None:
            self.sendLine(self.pending.popleft()[0].encode())


def makeFactory(options: Options, reactor: IReactorFromThreads) -> Factory:
    """Start the PySyncObj node the options describe; return its front end's factory."""
    # Imported here so that the front end can be tested where PySyncObj is not installed.
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    store = ReplDict()
    conf = SyncObjConf(
        journalFile=os.path.join(options["data-dir"], "journal"),
        fullDumpFile=os.path.join(options["data-dir"], "dump"),
        appendEntriesUseBatch=not options["no-batch"],
    )
    factory = Factory.forProtocol(FrontEnd)
    factory.store = store
    factory.syncObj = SyncObj(options["self"], options["partners"], conf=conf, consumers=[store])
    factory.handOver = HandOver(reactor)
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """Run one node until it is stopped."""
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"syncobjnode: {e}\n{options}", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    factory = makeFactory(options, reactor)
    reactor.listenTCP(options["client-port"], factory, interface="127.0.0.1")
    reactor.addSystemEventTrigger("before", "shutdown", factory.syncObj.destroy)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
