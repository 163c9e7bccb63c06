"""
Cluster configuration: which nodes exist and where they listen.

A cluster config is a text file of lines ``NAME HOST PORT``.  A ``#`` starts a
comment, whole-line or trailing, and blank lines are ignored.  Every node of a
cluster reads the same file, so parsing is strict: a mistake should stop a node
at startup with one line naming the file and line, not surface later as a
partitioned or misaddressed cluster.
"""

from __future__ import annotations

import attrs

from txraft.answers import MAX_PORT, MIN_PORT, parsePort
from txraft.messages import NAME_PATTERN


class ConfigError(Exception):
    """
    A cluster config is missing, unreadable or invalid.

    ``str(error)`` is one line saying what is wrong and where (``file:line``),
    fit to print as-is to a user.
    """


@attrs.frozen
class NodeAddress:
    """
    One member of the cluster: its unique name and the address it listens on.
    """

    name: str
    host: str
    port: int


@attrs.frozen
class ClusterConfig:
    """
    The validated membership of a cluster.

    @ivar nodes: every node, in file order, with unique names and unique
        host:port pairs; never empty.
    @ivar source: where the config came from, for error messages.
    """

    nodes: tuple[NodeAddress, ...]
    source: str = "<config>"

    def node(self, name: str) -> NodeAddress:
        """
        Return the node called C{name}.

        @raise ConfigError: if no node has that name, so a mistyped
            C{--name} fails at startup with a clear message.
        """
        for node in self.nodes:
            if node.name == name:
                return node
        raise ConfigError(f"unknown node name {name!r}: not in {self.source}")

    def names(self) -> tuple[str, ...]:
        """
        Return the names of all nodes, in file order.
        """
        return tuple(node.name for node in self.nodes)

    def peersOf(self, name: str) -> tuple[NodeAddress, ...]:
        """
        Return every node except C{name}: the peers it must talk to.

        @raise ConfigError: if C{name} is not a node of this cluster.
        """
        self.node(name)
        return tuple(node for node in self.nodes if node.name != name)


def parseConfig(text: str, source: str = "<config>") -> ClusterConfig:
    """
    Parse and validate the text of a cluster config.

    @param text: the whole config, lines of C{NAME HOST PORT}.
    @param source: the name used in error messages, usually the file path.
    @raise ConfigError: on the first invalid line, or if there are no nodes.
    """
    nodes: list[NodeAddress] = []
    seenNames: dict[str, int] = {}
    seenAddresses: dict[tuple[str, int], int] = {}
    for lineNumber, line in enumerate(text.splitlines(), start=1):
        where = f"{source}:{lineNumber}"
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 3:
            raise ConfigError(
                f"{where}: expected 3 fields 'NAME HOST PORT', got {len(fields)}: {line.strip()!r}"
            )
        name, host, portText = fields
        if NAME_PATTERN.fullmatch(name) is None:
            raise ConfigError(f"{where}: node name {name!r} must match {NAME_PATTERN.pattern}")
        try:
            port = parsePort(portText)
        except ValueError:
            raise ConfigError(
                f"{where}: port {portText!r} is not an integer in {MIN_PORT}..{MAX_PORT}"
            ) from None
        if name in seenNames:
            raise ConfigError(
                f"{where}: duplicate node name {name!r} (first on line {seenNames[name]})"
            )
        address = (host, port)
        if address in seenAddresses:
            raise ConfigError(
                f"{where}: duplicate address {host}:{port}"
                f" (first on line {seenAddresses[address]})"
            )
        seenNames[name] = lineNumber
        seenAddresses[address] = lineNumber
        nodes.append(NodeAddress(name=name, host=host, port=port))
    if not nodes:
        raise ConfigError(f"{source}: no nodes configured (expected lines 'NAME HOST PORT')")
    return ClusterConfig(nodes=tuple(nodes), source=source)


def loadConfig(path: str) -> ClusterConfig:
    """
    Read and parse the cluster config file at C{path}.

    @raise ConfigError: if the file cannot be read or is invalid.
    """
    try:
        with open(path, encoding="utf-8") as configFile:
            text = configFile.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{path}: cannot read cluster config: {reason}") from e
    return parseConfig(text, source=path)
