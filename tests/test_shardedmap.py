"""
Tests for L{txraft.shardedmap}: the key-value store's map, split so that no
insert rebuilds a large table.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zlib
from types import MappingProxyType

from twisted.trial.unittest import SynchronousTestCase

from txraft.shardedmap import (
    PIECE_ITEMS,
    SHARDS,
    FrozenShards,
    ShardedMap,
    frozenJSON,
    jsonPieces,
    shardOf,
)

#: Prints the JSON of a map filled in a fixed order, in a fresh interpreter.
FILL_AND_PRINT = """
from txraft.shardedmap import ShardedMap, frozenJSON
m = ShardedMap()
for i in range(2000):
    m[f"k{i * 7919 % 2000}"] = str(i)
print(b"".join(frozenJSON(m.freeze())).decode())
"""


def dictOf(shards: FrozenShards) -> dict[str, str]:
    """The map of frozen C{shards} as one dict."""
    return {key: value for shard in shards for key, value in shard.items()}


def jsonOf(m: ShardedMap) -> bytes:
    """C{m} serialized as a snapshot does."""
    return b"".join(frozenJSON(m.freeze()))


class ShardedMapTests(SynchronousTestCase):
    """A L{ShardedMap} behaves as a dict of strings does."""

    def test_likeADict(self) -> None:
        """
        Random sets, deletes, pops and reads give what a dict gives, and
        the map equals the dict after every step.
        """
        rng = random.Random(8)
        sharded, plain = ShardedMap(), {}
        keys = [f"k{i}" for i in range(300)] + ["", "é", "\u2603 x", "\udcff"]
        for _ in range(3000):
            key = rng.choice(keys)
            action = rng.randrange(5)
            if action == 0:
                sharded[key] = plain[key] = str(rng.random())
            elif action == 1:
                self.assertEqual(sharded.pop(key, None), plain.pop(key, None))
            elif action == 2 and key in plain:
                del sharded[key]
                del plain[key]
            elif action == 3:
                self.assertEqual(sharded.get(key), plain.get(key))
                self.assertEqual(key in sharded, key in plain)
            else:
                self.assertEqual(sharded.get(key, "none"), plain.get(key, "none"))
            self.assertEqual(len(sharded), len(plain))
        self.assertEqual(sharded, plain)
        self.assertEqual(plain, sharded)
        self.assertEqual(dict(sharded), plain)
        self.assertEqual(dict(sharded.items()), plain)
        self.assertEqual(sorted(sharded), sorted(plain))
        self.assertEqual(sharded.toDict(), plain)
        self.assertEqual(ShardedMap(plain), sharded)

    def test_missingKeys(self) -> None:
        """A missing key raises L{KeyError} where a dict's would."""
        m = ShardedMap({"a": "1"})
        self.assertRaises(KeyError, m.__getitem__, "b")
        self.assertRaises(KeyError, m.__delitem__, "b")
        self.assertEqual(self.assertRaises(KeyError, m.pop, "b").args, ("b",))
        self.assertEqual(m.pop("a"), "1")
        self.assertNotIn(1, m)

    def test_inequality(self) -> None:
        """Maps differ when an item does; a map is not equal to a non-mapping."""
        m = ShardedMap({"a": "1", "b": "2"})
        self.assertNotEqual(m, {"a": "1"})
        self.assertNotEqual(m, {"a": "1", "b": "3"})
        self.assertNotEqual(m, {"a": "1", "c": "2"})
        self.assertNotEqual(m, ShardedMap({"a": "1"}))
        self.assertNotEqual(m, [("a", "1"), ("b", "2")])
        self.assertEqual(m, ShardedMap({"b": "2", "a": "1"}))
        # A mapping that is no dict:
        self.assertEqual(m, MappingProxyType({"b": "2", "a": "1"}))
        self.assertNotEqual(m, MappingProxyType({"a": "1"}))

    def test_freezeKeepsTheItemsItWasTakenWith(self) -> None:
        """
        The shards a freeze hands out never change: the map copies a
        shared shard before its first change (sets, deletes and pops
        alike), and only that shard.
        """
        m = ShardedMap({f"k{i}": str(i) for i in range(50)} | {"a": "1", "b": "2", "c": "3"})
        frozen = m.freeze()
        before = [dict(shard) for shard in frozen]
        m["a"], m["new"] = "changed", "x"
        del m["b"]
        self.assertEqual(m.pop("c"), "3")
        self.assertIsNone(m.pop("absent", None))
        self.assertEqual([dict(shard) for shard in frozen], before)
        self.assertEqual(m.get("a"), "changed")
        self.assertNotIn("b", m)
        unchanged = [i for i in range(SHARDS) if m._shards[i] is frozen[i]]
        changed = {shardOf(key) for key in ("a", "new", "b", "c")}
        self.assertEqual(set(range(SHARDS)) - set(unchanged), changed)
        # Copied once: the next change writes the copy in place.
        copy = m._shards[shardOf("a")]
        m["a"] = "again"
        self.assertIs(m._shards[shardOf("a")], copy)

    def test_freezeAgain(self) -> None:
        """
        A second freeze shares the shards again: the first one's and the
        second one's both keep what they were taken with.
        """
        m = ShardedMap({"a": "1"})
        first = m.freeze()
        m["a"] = "2"
        second = m.freeze()
        m["a"] = "3"
        self.assertEqual(dictOf(first), {"a": "1"})
        self.assertEqual(dictOf(second), {"a": "2"})
        self.assertEqual(m, {"a": "3"})

    def test_growsInSmallPieces(self) -> None:
        """
        A hundred thousand keys spread over every shard, none holding more
        than twice its share: an insert that grows a table grows a small
        one (a single dict rebuilt its whole table of a million keys in one
        insert, stalling every node for 30 to 65 ms).
        """
        m = ShardedMap()
        count = 100_000
        for i in range(count):
            m[f"key{i:08d}"] = "v"
        sizes = [len(shard) for shard in m._shards]
        self.assertEqual(len(sizes), SHARDS)
        self.assertEqual(sum(sizes), count)
        self.assertLess(max(sizes), 2 * count // SHARDS)

    def test_shardIsACRC(self) -> None:
        """A key's shard is the CRC-32 of its UTF-8 bytes: the same in every process."""
        for key in ("a", "key00000001", "café", "\udcff"):
            expected = zlib.crc32(key.encode("utf-8", "surrogatepass")) % SHARDS
            self.assertEqual(shardOf(key), expected)
        self.assertEqual(shardOf("a"), 0xE8B7BE43 % SHARDS)

    def test_jsonIsOneObject(self) -> None:
        """
        L{frozenJSON} is one compact JSON object on one line, of every
        item, in UTF-8; an empty map is C{{}}.
        """
        self.assertEqual(jsonOf(ShardedMap()), b"{}")
        items = {f"k{i}": f"v{i}" for i in range(500)} | {"new\nline": "x\ny", "é": "☃"}
        text = jsonOf(ShardedMap(items))
        self.assertNotIn(b"\n", text)
        self.assertNotIn(b", ", text)
        self.assertIn('"é":"☃"'.encode(), text)
        self.assertEqual(json.loads(text), items)
        self.assertEqual(json.loads(jsonOf(ShardedMap({"only": "one"}))), {"only": "one"})

    def test_jsonShardByShard(self) -> None:
        """Each piece of the JSON is at most one shard's items (no call serializes them all)."""
        m = ShardedMap({f"k{i}": "v" for i in range(5000)})
        pieces = list(frozenJSON(m.freeze()))
        self.assertEqual(len(pieces), 2 + sum(1 for shard in m._shards if shard))
        biggest = max(len(shard) for shard in m._shards)
        self.assertLessEqual(max(piece.count(b":") for piece in pieces), biggest)

    def test_largeShardInPieces(self) -> None:
        """
        A shard of more than L{PIECE_ITEMS} items is written in pieces of
        at most that many, in its order: no piece grows with the map.
        """
        items = {f"k{i}": str(i) for i in range(2 * PIECE_ITEMS + 5)}
        shards = ({}, items, {})
        pieces = list(frozenJSON(shards))
        self.assertEqual(len(pieces), 2 + 3)
        self.assertEqual([piece.count(b":") for piece in pieces[1:-1]], [PIECE_ITEMS] * 2 + [5])
        text = b"".join(pieces)
        self.assertEqual(list(json.loads(text).items()), list(items.items()))
        self.assertEqual(
            [json.loads(piece) for piece in jsonPieces(text)],
            [dict(list(items.items())[i : i + PIECE_ITEMS]) for i in (0, 4096, 8192)],
        )

    def test_tabsBetweenPieces(self) -> None:
        """
        A comma and a tab part two pieces, and a tab appears nowhere else,
        not even where a key or value holds one (JSON escapes it): the line
        splits into the objects it was written from.
        """
        m = ShardedMap({"a\tb": "c\td", "x": "y", "é": "\t"})
        text = jsonOf(m)
        self.assertEqual(text.count(b"\t"), 2)
        self.assertEqual(text.count(b",\t"), 2)
        pieces = list(jsonPieces(text))
        self.assertEqual(
            [json.loads(piece) for piece in pieces],
            [dict(shard) for shard in m.freeze() if shard],
        )
        self.assertEqual(len(pieces), 3)

    def test_jsonPiecesOfAnUntabbedLine(self) -> None:
        """A line with no tab (a snapshot written before pieces, or an empty map) is one piece."""
        for line in (b"{}", b'{"a":"1","b":"2"}'):
            self.assertEqual(list(jsonPieces(line)), [line])

    def test_jsonPiecesLooksOnlyAtTheMapLine(self) -> None:
        """
        Only a tab before C{end} makes a line pieces: a tab after it (in the
        sessions' line) does not, and a tab at the very start does.
        """
        self.assertEqual(list(jsonPieces(b'["x"]\n[\t]', 5)), [b'["x"]'])
        self.assertRaises(ValueError, list, jsonPieces(b'\t{"a":"1"}'))
        data = b'{"a":"1",\t"b":"2"}\n[1,\t2]'
        self.assertEqual(list(jsonPieces(data, data.index(b"\n"))), [b'{"a":"1"}', b'{"b":"2"}'])

    def test_jsonPiecesRefusesWhatIsNoSplitObject(self) -> None:
        """A tabbed line that is not one object, or holds an empty piece, is refused."""
        notOne = "a map split into pieces is not one JSON object"
        empty = "a map holds an empty piece"
        for line, reason in [
            (b'["a",\t"b"]', notOne),
            (b' {"a":"1",\t"b":"2"}', notOne),
            (b'{"a":"1",\t"b":"2"} ', notOne),
            (b'{"a":"1",\t}', empty),
            (b'{,\t"a":"1"}', empty),
            (b'{"a":"1",\t \t}', empty),
        ]:
            error = self.assertRaises(ValueError, list, jsonPieces(line))
            self.assertEqual(str(error), reason)

    def test_update(self) -> None:
        """
        L{ShardedMap.update} sets each key, overwriting what was there, and
        copies a frozen shard before changing it.
        """
        m = ShardedMap({"a": "1", "b": "2"})
        frozen = m.freeze()
        m.update({"b": "3", "c": "4"})
        self.assertEqual(m, {"a": "1", "b": "3", "c": "4"})
        self.assertEqual(dictOf(frozen), {"a": "1", "b": "2"})

    def test_jsonTheSameInEveryProcess(self) -> None:
        """
        Two interpreters with different string hash salts that fill a map
        the same way write the same JSON, byte for byte: every node writes
        the same snapshot of the same commands.
        """
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        outputs = []
        for salt in ("1", "2"):
            env = dict(os.environ, PYTHONHASHSEED=salt, PYTHONPATH=root)
            done = subprocess.run(
                [sys.executable, "-c", FILL_AND_PRINT],
                env=env,
                capture_output=True,
                check=True,
                timeout=60,
            )
            outputs.append(done.stdout)
        self.assertEqual(outputs[0], outputs[1])
        self.assertEqual(len(json.loads(outputs[0])), 2000)
