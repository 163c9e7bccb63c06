"""
The key-value store's map, split over many small dicts so that no insert
stalls the event loop however large the map grows.

A Python dict grows all at once: the insert that fills two thirds of its
table builds a new one twice the size.  Measured on the development
machine, that one insert took 32 ms at 699,000 keys and 65 ms at 1.4
million, and every node takes it at the same log entry; ten times the
keys would stall each node for longer than an election timeout.  Split
over L{SHARDS} dicts, each insert grows at most one of them, a
L{SHARDS}th of the map.

The shard of a key is a CRC-32 of its UTF-8 bytes, the same in every
process (Python's own string hash is salted per process).  So iterating
the map, as a snapshot does, gives the same order on every node that
applied the same commands: shard by shard, each in insertion order.

Shards also make a snapshot cheap to take.  L{ShardedMap.freeze} hands out
the shards as they are, in no time, and marks them shared; the map copies
a shared shard before its first change (copy on write, a shard at a time),
so the frozen ones never change.  A forked child or another thread
serializes them a piece at a time (L{frozenJSON}), no call holding the
GIL for long, while the event loop goes on applying commands.  And a node
that installs a snapshot loads it a piece per turn (L{jsonPieces}).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain, islice
from typing import overload

#: How many dicts a map is split over (a power of two).  A million keys make
#: about 4,000 per shard: each grows or is copied on write in a tenth of a
#: millisecond, and is serialized in one or two.  (More shards cost every
#: small map: its comparisons and copies visit every shard.)
SHARDS = 256
_MASK = SHARDS - 1

#: The most items L{frozenJSON} writes in one piece: a reader parses and
#: loads one in a few milliseconds (L{jsonPieces}), however large the map.
PIECE_ITEMS = 4096

#: The shards of a map as L{ShardedMap.freeze} hands them out: never changed.
FrozenShards = Sequence[Mapping[str, str]]


def shardOf(key: str) -> int:
    """Which of the L{SHARDS} dicts holds C{key}."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) & _MASK


class ShardedMap:
    """
    A map of strings to strings with a dict's operations (those the store
    uses), whose inserts each grow one small dict.  It equals any mapping
    of the same items.
    """

    __slots__ = ("_shards", "_shared")

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._shards: list[dict[str, str]] = [{} for _ in range(SHARDS)]
        #: Which shards a L{freeze} handed out: copied before they change.
        self._shared = bytearray(SHARDS)
        if items:
            self.update(items)

    def _writable(self, number: int) -> dict[str, str]:
        """Shard C{number}, copied first if a freeze handed it out."""
        if self._shared[number]:
            self._shards[number] = self._shards[number].copy()
            self._shared[number] = 0
        return self._shards[number]

    def __getitem__(self, key: str) -> str:
        return self._shards[shardOf(key)][key]

    def __setitem__(self, key: str, value: str) -> None:
        self._writable(shardOf(key))[key] = value

    def __delitem__(self, key: str) -> None:
        del self._writable(shardOf(key))[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._shards[shardOf(key)]

    def __len__(self) -> int:
        return sum(map(len, self._shards))

    def __iter__(self) -> Iterator[str]:
        return chain.from_iterable(self._shards)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ShardedMap):
            return self._shards == other._shards
        if isinstance(other, dict):
            return self.toDict() == other
        if isinstance(other, Mapping):
            return self.toDict() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ShardedMap({self.toDict()!r})"

    def get(self, key: str, default: str | None = None) -> str | None:
        """The value of C{key}, or C{default}."""
        return self._shards[shardOf(key)].get(key, default)

    @overload
    def pop(self, key: str) -> str: ...

    @overload
    def pop(self, key: str, default: str | None) -> str | None: ...

    def pop(self, key: str, *default: str | None) -> str | None:
        """Remove C{key} and return its value (or C{default}, if given and it is absent)."""
        number = shardOf(key)
        if key not in self._shards[number]:
            return self._shards[number].pop(key, *default)
        return self._writable(number).pop(key)

    def update(self, items: Mapping[str, str]) -> None:
        """Set every key of C{items} to its value, in C{items}' order."""
        shards, shared = self._shards, self._shared
        for key, value in items.items():
            number = shardOf(key)
            if shared[number]:
                self._writable(number)
            shards[number][key] = value

    def keys(self) -> Iterator[str]:
        """Every key, shard by shard (so C{dict(m)} copies the map)."""
        return iter(self)

    def items(self) -> Iterator[tuple[str, str]]:
        """Every key and value, shard by shard."""
        return chain.from_iterable(shard.items() for shard in self._shards)

    def freeze(self) -> FrozenShards:
        """
        The map as it is now, in no time: its shards themselves, which
        this map copies before it next changes them (so no change to the
        map reaches them), to read in any thread.
        """
        self._shared[:] = b"\x01" * SHARDS
        return tuple(self._shards)

    def toDict(self) -> dict[str, str]:
        """The map as one dict."""
        merged: dict[str, str] = {}
        for shard in self._shards:
            if shard:
                merged.update(shard)
        return merged


def frozenJSON(shards: FrozenShards) -> Iterator[bytes]:
    """
    The map of frozen C{shards} as one compact JSON object on one line
    (JSON escapes every newline in a string), UTF-8, in pieces of at most
    L{PIECE_ITEMS} items each: the same bytes on every node that applied
    the same commands.  Each piece is one short call that holds the GIL.

    A tab follows the comma between two pieces.  JSON allows it there,
    and never holds one unescaped in a string, so a reader can split the
    line at them and parse it a piece at a time (L{jsonPieces}).
    """
    yield b"{"
    separator = b""
    for shard in shards:
        for piece in _split(shard):
            text = json.dumps(piece, ensure_ascii=False, separators=(",", ":"))
            yield separator + text[1:-1].encode()
            separator = b",\t"
    yield b"}"


def _split(shard: Mapping[str, str]) -> Iterator[Mapping[str, str]]:
    """C{shard}'s items, in order, as mappings of at most L{PIECE_ITEMS} (none if it is empty)."""
    if len(shard) <= PIECE_ITEMS:
        if shard:
            yield shard
        return
    items = iter(shard.items())
    while piece := dict(islice(items, PIECE_ITEMS)):
        yield piece


def jsonPieces(data: bytes, end: int | None = None) -> Iterator[bytes]:
    """
    The map line that L{frozenJSON} wrote, C{data} up to C{end} (default:
    all of it), as JSON objects that together hold its items in order: one
    per piece it wrote, or the whole line if it holds no tab (a snapshot
    from before pieces).  Each is cut out as it is needed, never the whole
    line at once (tens of megabytes for a million keys); each is only cut,
    not checked: parsing it does that.

    @raise ValueError: if the line has tabs but is no object split at them.
    """
    end = len(data) if end is None else end
    if data.find(b"\t", 0, end) < 0:
        yield data[:end]
        return
    if not (data.startswith(b"{") and data[end - 1 : end] == b"}"):
        raise ValueError("a map split into pieces is not one JSON object")
    start, last = 1, end - 1
    while True:
        cut = data.find(b",\t", start, last)
        stop = last if cut < 0 else cut
        if not data[start:stop].strip():
            raise ValueError("a map holds an empty piece")
        yield b"{" + data[start:stop] + b"}"
        if cut < 0:
            return
        start = cut + 2
