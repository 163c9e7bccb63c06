"""
A blocking face for the client library, for scripts that run no reactor::

    from txraft.blocking import connect

    with connect([("127.0.0.1", 7001), ("127.0.0.1", 7002)]) as client:
        client.set("greeting", "hello")
        print(client.get("greeting"))  # OK hello

Each L{BlockingClient} runs a private reactor in a daemon thread of its own,
never the global one (a script may use that for something else, or not at
all), and each call waits for its answer there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

from twisted.internet import defer
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.threads import blockingCallFromThread

from txraft.clientlib import Address, ClientClosedError, ClusterClient

T = TypeVar("T")

#: How long L{BlockingClient.close} waits for its reactor thread to end.
STOP_TIMEOUT = 5.0


class BlockingClient:
    """
    A L{ClusterClient} whose methods wait for their answers: the same
    answers, the same exceptions (L{txraft.clientlib.ClientLibError} and
    its kinds), from a thread that runs no reactor.
    """

    def __init__(self, addresses: Sequence[Address], **options: object) -> None:
        """
        Start the reactor thread and a client of the nodes at C{addresses};
        C{options} are those of L{ClusterClient} (C{clientId}, C{timeout},
        C{clusterKey}, C{tls}, ...).
        """
        self._reactor = SelectReactor()
        self._thread = threading.Thread(
            target=self._reactor.run,
            kwargs={"installSignalHandlers": False},
            name="txraft client reactor",
            daemon=True,
        )
        self._thread.start()
        self._closed = False
        self.client: ClusterClient = self._call(
            ClusterClient,
            self._reactor,
            addresses,
            **options,  # type: ignore[arg-type]
        )

    def _call(
        self, function: Callable[..., T | defer.Deferred[T]], *args: object, **kw: object
    ) -> T:
        """Call C{function} in the reactor thread and wait for its result."""
        if self._closed:
            raise ClientClosedError("the client is closed")
        return blockingCallFromThread(self._reactor, function, *args, **kw)

    def request(self, command: str, timeout: float | None = None, once: bool = False) -> str:
        """
        Send C{command} and return its answer line (see L{ClusterClient.request},
        which takes C{timeout} and C{once} too).
        """
        return self._call(self.client.request, command, timeout, once)

    def pipeline(self, commands: Sequence[str]) -> list[str]:
        """
        Send every command at once (pipelined, within the window) and
        return their answer lines in order.

        @raise txraft.clientlib.ClientLibError: the first failure, once
            every command has its answer or its failure.
        """

        def requestAll() -> defer.Deferred[list[str]]:
            results = [self.client.request(command) for command in commands]
            gathered = defer.gatherResults(results, consumeErrors=True)
            return gathered.addErrback(lambda f: f.value.subFailure)

        return self._call(requestAll)

    def get(self, key: str) -> str:
        """C{get KEY}: C{OK VALUE} or C{NOT_FOUND}."""
        return self._call(self.client.get, key)

    def set(self, key: str, value: str) -> str:
        """C{set KEY VALUE}, once: C{OK}."""
        return self._call(self.client.set, key, value)

    def delete(self, key: str) -> str:
        """C{delete KEY}, once: C{OK}, or C{NOT_FOUND} if it had no value."""
        return self._call(self.client.delete, key)

    def show(self) -> str:
        """C{show}: C{OK} and the whole map as JSON."""
        return self._call(self.client.show)

    def discover(self) -> list[Address]:
        """Learn every member's address from a node (see L{ClusterClient.discover})."""
        return self._call(self.client.discover)

    def connect(self) -> None:
        """Wait until some node accepts a connection (see L{ClusterClient.connect})."""
        self._call(self.client.connect)

    def close(self) -> None:
        """Close the client and stop its reactor thread; later calls fail."""
        if self._closed:
            return
        self._call(self.client.close)
        self._closed = True
        self._reactor.callFromThread(self._reactor.stop)
        self._thread.join(STOP_TIMEOUT)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        excType: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def connect(addresses: Sequence[Address], **options: object) -> BlockingClient:
    """
    A L{BlockingClient} of the cluster whose nodes listen at C{addresses}
    (a list of C{(host, port)}; see L{txraft.clientlib.addressesFromConfig}
    to read them from a cluster config); C{options} as for L{ClusterClient}.
    Use it as a context manager, or call its C{close}.
    """
    return BlockingClient(addresses, **options)
