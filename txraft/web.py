"""
A node's read-only HTTP side, on C{twisted.web}: C{/metrics} for
Prometheus, C{/health} for load balancers and probes, C{/status} (the
C{status} command's JSON), C{/cluster} (every member as this node sees
them) and C{/}, a live page of the cluster built on C{/cluster}.

Every resource answers C{GET} (and C{HEAD}) only: nothing over HTTP
changes data or membership, and other methods get C{405}.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.pages import notFound
from twisted.web.resource import Resource

from txraft.health import checkHealth
from txraft.survey import ClusterSurvey, Status

JSON_TYPE = b"application/json"

#: The live page's files, shipped in C{txraft/static/}, by URL path segment.
PAGE_FILES = {
    b"": ("index.html", "text/html; charset=utf-8"),
    b"cluster.js": ("cluster.js", "text/javascript; charset=utf-8"),
    b"cluster.css": ("cluster.css", "text/css; charset=utf-8"),
}


def _writeJSON(request: server.Request, document: object, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, indent=1).encode("utf-8") + b"\n"


class StatusResource(Resource):
    """C{/status}: the node's status, the same JSON as the C{status} command."""

    isLeaf = True

    def __init__(self, status: Callable[[], Status]) -> None:
        super().__init__()
        self._status = status

    def render_GET(self, request: server.Request) -> bytes:
        """Answer with the status."""
        return _writeJSON(request, self._status())


class HealthResource(Resource):
    """
    C{/health}: C{200} and C{{"health": "ok", ...}} when the node is healthy
    (see L{txraft.health}), C{503} with C{"health": "unhealthy"} and the
    reason otherwise.
    """

    isLeaf = True

    def __init__(self, status: Callable[[], Status], maxLag: int) -> None:
        super().__init__()
        self._status = status
        self._maxLag = maxLag

    def render_GET(self, request: server.Request) -> bytes:
        """Judge the node's status now."""
        status = self._status()
        reason = checkHealth(status, self._maxLag)
        document = {
            "health": "ok" if reason is None else "unhealthy",
            "reason": reason,
            "name": status["name"],
            "leader": status["leader"],
            "term": status["term"],
            "leaderCommit": status["leaderCommit"],
            "lastApplied": status["lastApplied"],
        }
        return _writeJSON(request, document, 200 if reason is None else 503)


class ClusterResource(Resource):
    """C{/cluster}: every member's status and health as this node sees it."""

    isLeaf = True
    log = Logger()

    def __init__(self, survey: ClusterSurvey) -> None:
        super().__init__()
        self._survey = survey

    def render_GET(self, request: server.Request) -> object:
        """Ask the members, then answer; a client that hangs up stops nothing."""
        d = self._survey.survey()
        finished = request.notifyFinish()
        gone: list[Failure] = []
        finished.addErrback(gone.append)

        def answer(picture: dict[str, Any]) -> None:
            if not gone:
                request.write(_writeJSON(request, picture))
                request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("cannot sum up the cluster", failure)
            if not gone:
                request.write(_writeJSON(request, {"error": "internal error"}, 500))
                request.finish()

        d.addCallbacks(answer, failed)
        return server.NOT_DONE_YET


class MetricsResource(Resource):
    """
    C{/metrics}: the registry in Prometheus text format.  Rendered in the
    reactor thread (prometheus_client's own Twisted resource renders in a
    thread pool), because its gauges read the node's state.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: server.Request) -> bytes:
        """Answer with every metric's current value."""
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self._registry)


class PageFile(Resource):
    """One file of the live page, read once from the installed package."""

    isLeaf = True

    def __init__(self, name: str, contentType: str) -> None:
        super().__init__()
        self._data = (resources.files("txraft") / "static" / name).read_bytes()
        self._type = contentType.encode("ascii")

    def render_GET(self, request: server.Request) -> bytes:
        """Answer with the file."""
        request.setHeader(b"content-type", self._type)
        return self._data


class Root(Resource):
    """The site's root: its children, and C{404} for any other path."""

    def getChild(self, path: bytes, request: server.Request) -> Resource:
        """No such page."""
        return notFound()


def pageResource() -> Resource:
    """The live page: its HTML at C{/}, its script and style beside it."""
    page = Root()
    for segment, (name, contentType) in PAGE_FILES.items():
        page.putChild(segment, PageFile(name, contentType))
    return page


def makeSite(
    status: Callable[[], Status],
    registry: CollectorRegistry,
    survey: ClusterSurvey,
    maxLag: int,
) -> server.Site:
    """The node's HTTP site: the page, and the endpoints beside it."""
    root = pageResource()
    root.putChild(b"metrics", MetricsResource(registry))
    root.putChild(b"health", HealthResource(status, maxLag))
    root.putChild(b"status", StatusResource(status))
    root.putChild(b"cluster", ClusterResource(survey))
    site = QuietSite(root)
    site.displayTracebacks = False
    site.noisy = False
    return site


class QuietSite(server.Site):
    """
    A site that keeps no access log: the web view polls every second, and
    read-only requests tell nothing about the node's story.
    """

    def log(self, request: server.Request) -> None:
        """Log nothing."""


class HTTPService(Service):
    """Listens for HTTP on one host and port while running."""

    log = Logger()

    def __init__(self, reactor: IReactorTCP, host: str, port: int, site: server.Site) -> None:
        self._reactor = reactor
        self.host = host
        self.portNumber = port
        self._site = site
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        """Listen, or stop the node with one line saying why it cannot."""
        try:
            self.port = self._reactor.listenTCP(self.portNumber, self._site, interface=self.host)
        except CannotListenError as e:
            raise SystemExit(
                f"txraft: cannot serve HTTP on {self.host}:{self.portNumber}: {e.socketError}"
            ) from None
        super().startService()
        self.log.info(
            "web view, /metrics, /health and /status at http://{host}:{port}/",
            host=self.host,
            port=self.port.getHost().port,
        )

    def stopService(self) -> defer.Deferred[None] | None:
        """Stop listening."""
        super().stopService()
        port, self.port = self.port, None
        return defer.maybeDeferred(port.stopListening) if port is not None else None
