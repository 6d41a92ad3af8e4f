"""A packed online layout of our own, for the hottest reads (a feature pattern's ``layout:
packed``).

Feast's Redis layout keeps one hash per entity with a field per feature: a read of 100 entities
x 50 features fetches and decodes 5,500 protobuf values. The packed layout keeps, next to those
hashes, one string per entity and entity key shape holding every view's event time and values,
so the same read is one MGET of 100 strings and one MessagePack parse of them all at once.

An entity's string: a byte saying whether every view has a segment with its values (1) or not
(0), each view's segment length (4 bytes, big-endian), then the segments in view order. A
segment is the view's event time as a MessagePack int64 (``0xd3`` and 8 bytes, big-endian: the
compare-and-set below reads it), then each feature's value in the view's schema order. A
segment is empty when the view was never written for the entity, and holds only the event time
when a value has no exact MessagePack form (a naive datetime, an integer past 64 bits): those
entities are read from Feast's hashes instead, so an answer never depends on which layout
served it.

The values are those of Feast's hashes, decoded as a hash read decodes them: the materializer
packs what it has just encoded for the hashes, a push packs what the hashes hold after Feast
wrote them. Segments are written by a compare-and-set script, one view at a time, with the
hashes' rule: an older or equal event time never overwrites a newer one. The key holds a
fingerprint of the views and their types, so a changed pattern starts on fresh keys (and reads
its hashes until they are written) instead of misreading old ones; the old keys stay until
their Feast key TTL, if any, or until deleted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datalayer.stores.feast.online_redis import (
    ViewPlan,
    entity_keys,
    read_online,
    read_plan,
    roundtrip,
)

log = logging.getLogger(__name__)

#: Bumped when the string's format changes: the fingerprint, and so the keys, change with it.
FORMAT = 1
KEY_PREFIX = b"dl:packed:"
#: Rows per compare-and-set call.
WRITE_ROWS = 5_000
#: The latest instant a read may ask for: reading back what a push wrote ignores the TTL.
_END_OF_TIME = (1 << 63) - 1
_STAMP = struct.Struct(">Bq")
_INT64 = 0xD3


@dataclass(frozen=True, eq=False)
class PackedView:
    name: str
    features: list[str]
    ttl: int
    #: Where the view's event time is among an entity's items; its values follow.
    offset: int


@dataclass(frozen=True, eq=False)
class PackedLayout:
    """The packed strings of the views that share one entity key shape."""

    views: list[PackedView]
    #: Items per entity: each view's event time and values.
    width: int
    prefix: bytes
    #: Feast's layout of the same views: entity keys, and the read of entities not packed.
    hashes: ViewPlan

    def view(self, name: str) -> PackedView:
        return next(v for v in self.views if v.name == name)

    def keys(self, rows: list[dict[str, Any]]) -> list[bytes]:
        return [self.prefix + key for key in entity_keys(self.hashes, rows)]


def layouts(views: Mapping[str, Any], project: str, version: int) -> list[PackedLayout]:
    """One layout per entity key shape of ``views`` (Feast feature views by name), holding
    every feature of each view."""
    references = [f"{name}:{f.name}" for name, view in views.items() for f in view.features]
    out = []
    for plan in read_plan(views, references, project, version):
        packed: list[PackedView] = []
        offset = 0
        for view in plan.views:
            features = [plan.columns[p].split("__", 1)[1] for p in view.positions]
            packed.append(PackedView(view.name, features, view.ttl, offset))
            offset += 1 + len(features)
        shape = [
            (v.name, [(f.name, f.dtype.to_value_type().name) for f in views[v.name].features])
            for v in packed
        ]
        described = repr((FORMAT, project, version, plan.keys, plan.key_types, shape))
        fingerprint = hashlib.sha256(described.encode()).hexdigest()[:16].encode()
        out.append(PackedLayout(packed, offset, KEY_PREFIX + fingerprint + b":", plan))
    return out


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PackedRead:
    """What one request shape reads from one layout: each column's item, each view's TTL."""

    layout: PackedLayout
    columns: list[tuple[str, int]]
    views: list[PackedView]
    #: The same columns from Feast's hashes, for entities whose string is not complete.
    hashes: ViewPlan


def read_request(
    layout_list: list[PackedLayout], views: Mapping[str, Any], references: Sequence[str]
) -> list[PackedRead]:
    """How to read ``references`` (``view:feature``) from the layouts that hold them."""
    reads = []
    for layout in layout_list:
        names = {v.name for v in layout.views}
        mine = [r for r in references if r.split(":", 1)[0] in names]
        if not mine:
            continue
        columns = []
        for reference in mine:
            name, feature = reference.split(":", 1)
            view = layout.view(name)
            columns.append((f"{name}__{feature}", view.offset + 1 + view.features.index(feature)))
        wanted = {r.split(":", 1)[0] for r in mine}
        (hashes,) = read_plan(
            views,
            mine,
            layout.hashes.suffix.decode(),
            layout.hashes.version,
        )
        reads.append(
            PackedRead(layout, columns, [v for v in layout.views if v.name in wanted], hashes)
        )
    return reads


def read_packed(
    client: Any,
    rows: list[dict[str, Any]],
    reads: list[PackedRead],
    order: list[str],
    at: int,
    stamps: dict[str, list[int]] | None = None,
) -> dict[str, list[Any]]:
    """Each column's values in ``order`` (``view__feature``), as ``online_redis.read_online``
    answers them: None where missing or past the view's TTL at ``at`` (nanoseconds)."""
    import msgpack

    out: dict[str, list[Any]] = {}
    if not rows:
        if stamps is not None:
            stamps.update({view.name: [] for read in reads for view in read.views})
        return {column: [] for column in order}
    keys = [read.layout.keys(rows) for read in reads]
    payload = b"".join(
        b"*%d\r\n$4\r\nMGET\r\n" % (len(rows) + 1)
        + b"".join(b"$%d\r\n%b\r\n" % (len(key), key) for key in layout_keys)
        for layout_keys in keys
    )
    for read, strings in zip(reads, roundtrip(client, payload, len(reads)), strict=True):
        layout = read.layout
        width = layout.width
        head = 1 + 4 * len(layout.views)
        packed = [i for i, s in enumerate(strings) if s and s[0] == 1]
        try:
            items = msgpack.unpackb(
                b"\xdd"
                + struct.pack(">I", len(packed) * width)
                + b"".join([strings[i][head:] for i in packed]),
                timestamp=3,
            )
            for view in read.views:  # event times where they belong, or the strings are bad
                if not set(map(type, items[view.offset :: width])) <= {int}:
                    raise ValueError(f"an event time of view '{view.name}' is not an integer")
        except ValueError as exc:  # msgpack's errors too: strings not written by datalayer
            _say_unreadable(layout, exc)
            packed, items = [], []
        columns = {name: items[item::width] for name, item in read.columns}
        view_stamps = {}
        for view in read.views:
            found = items[view.offset :: width]
            view_stamps[view.name] = found
            oldest = max(1, at - view.ttl) if view.ttl else 1
            if not found or (oldest <= min(found) and max(found) <= at):
                continue
            stale = [i for i, s in enumerate(found) if not oldest <= s <= at]
            for name, _ in read.columns:
                if name.split("__", 1)[0] == view.name:
                    column = columns[name]
                    for i in stale:
                        column[i] = None
        if len(packed) < len(rows):
            columns, view_stamps = _with_hashes(
                client, rows, read, packed, columns, view_stamps, at
            )
        out.update(columns)
        if stamps is not None:
            stamps.update(view_stamps)
    return {column: out[column] for column in order}


def _say_unreadable(layout: PackedLayout, problem: Exception) -> None:
    log.warning(
        "packed strings %s* do not parse (%s): this read comes from Feast's hashes; write the "
        "entities again (materialize, push) to repack them",
        layout.prefix.decode(errors="replace"),
        problem,
    )


def _with_hashes(
    client: Any,
    rows: list[dict[str, Any]],
    read: PackedRead,
    packed: list[int],
    columns: dict[str, list[Any]],
    view_stamps: dict[str, list[int]],
    at: int,
) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
    """The packed rows' answers merged with those of the other rows, read from the hashes."""
    done = set(packed)
    others = [i for i in range(len(rows)) if i not in done]
    found: dict[str, list[int]] = {}
    read_back = read_online(client, [rows[i] for i in others], [read.hashes], at, found)
    merged_columns = {}
    for name, values in columns.items():
        merged: list[Any] = [None] * len(rows)
        for i, value in zip(packed, values, strict=True):
            merged[i] = value
        for i, value in zip(others, read_back[name], strict=True):
            merged[i] = value
        merged_columns[name] = merged
    merged_stamps = {}
    for name, values in view_stamps.items():
        times = [0] * len(rows)
        for i, stamp in zip(packed, values, strict=True):
            times[i] = stamp
        for i, stamp in zip(others, found[name], strict=True):
            times[i] = stamp
        merged_stamps[name] = times
    return merged_columns, merged_stamps


# -- writing ---------------------------------------------------------------------------------

#: Compare-and-set of one view's segment in each key's string, run by Redis. ARGV: the key TTL
#: in seconds (0: none), the number of views, the view's position (from 1), then one segment
#: per key. A segment is written unless the stored one has an event time as new or newer (an
#: empty one, or a zero time, never blocks); the string's first byte is recomputed: 1 when
#: every segment holds values (longer than its 9-byte event time). Returns how many keys
#: were written.
_PACK_NEWER = """
local ttl, count, index = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local head = 1 + 4 * count
local function newer(new, old)
  if #old < 9 then return true end
  local h0, l0 = struct.unpack('>I4I4', old, 2)
  if h0 == 0 and l0 == 0 then return true end
  local h1, l1 = struct.unpack('>I4I4', new, 2)
  return h1 > h0 or (h1 == h0 and l1 > l0)
end
local written = 0
for n, key in ipairs(KEYS) do
  local new = ARGV[n + 3]
  local stored = redis.call('GET', key)
  local parts = {}
  if stored and #stored >= head then
    local at = head + 1
    for i = 1, count do
      local size = struct.unpack('>I4', stored, 2 + 4 * (i - 1))
      parts[i] = string.sub(stored, at, at + size - 1)
      at = at + size
    end
  else
    for i = 1, count do parts[i] = '' end
  end
  if newer(new, parts[index]) then
    parts[index] = new
    local complete, sizes = 1, {}
    for i = 1, count do
      if #parts[i] <= 9 then complete = 0 end
      sizes[i] = struct.pack('>I4', #parts[i])
    end
    local value = string.char(complete) .. table.concat(sizes) .. table.concat(parts)
    if ttl > 0 then
      redis.call('SET', key, value, 'EX', ttl)
    else
      redis.call('SET', key, value)
    end
    written = written + 1
  end
end
return written
"""


def segment(stamp: int, values: Sequence[Any], packer: Any) -> bytes:
    """One view's segment: its event time, then its values; the event time alone when a
    value has no exact MessagePack form (the entity is then read from the hashes)."""
    head = _STAMP.pack(_INT64, stamp)
    try:
        body: bytes = packer.pack(list(values))
    except (TypeError, ValueError, OverflowError):
        return head
    # Without the array header: an entity's items are one flat sequence.
    first = body[0]
    return head + body[1 if first < 0xDC else 3 if first == 0xDC else 5 :]


class PackedWriter:
    """Writes one view's segments into one layout's strings."""

    def __init__(self, client: Any, layout: PackedLayout, view: str, key_ttl: int) -> None:
        import msgpack

        self.client = client
        self.layout = layout
        self.view = layout.view(view)
        self.script = client.register_script(_PACK_NEWER)
        index = layout.views.index(self.view) + 1
        self.head = [key_ttl, len(layout.views), index]
        # Aware datetimes (Feast's timestamps) as MessagePack timestamps, read back as such.
        self.packer = msgpack.Packer(use_bin_type=True, datetime=True, autoreset=True)

    def write(self, keys: list[bytes], stamps: list[int], columns: list[list[Any]]) -> int:
        """Feast entity keys, each one's event time (nanoseconds; 0: none, not written) and
        the view's columns in its schema order; how many strings changed."""
        written = 0
        prefix = self.layout.prefix
        pairs = [
            (prefix + key, segment(stamp, values, self.packer))
            for key, stamp, values in zip(keys, stamps, zip(*columns, strict=True), strict=True)
            if stamp > 0
        ]
        for start in range(0, len(pairs), WRITE_ROWS):
            chunk = pairs[start : start + WRITE_ROWS]
            written += int(
                self.script(keys=[k for k, _ in chunk], args=[*self.head, *(s for _, s in chunk)])
            )
        return written

    def repack(self, rows: list[dict[str, Any]], views: Mapping[str, Any]) -> int:
        """Pack what Feast's hashes hold for these entities (after Feast wrote them)."""
        unique = list({tuple(row.items()): row for row in rows}.values())
        references = [f"{self.view.name}:{feature}" for feature in self.view.features]
        (plan,) = read_plan(
            views, references, self.layout.hashes.suffix.decode(), self.layout.hashes.version
        )
        forever = dataclasses.replace(
            plan, views=[dataclasses.replace(v, ttl=0) for v in plan.views]
        )
        found: dict[str, list[int]] = {}
        values = read_online(self.client, unique, [forever], _END_OF_TIME, found)
        return self.write(
            entity_keys(plan, unique),
            found[self.view.name],
            [values[f"{self.view.name}__{feature}"] for feature in self.view.features],
        )


class Packing:
    """The packed layouts of a store's patterns (patterns with the same views share one): what
    a write of a view updates besides Feast's hashes, and what a packed pattern reads."""

    def __init__(
        self, client: Any, key_ttl: int, by_pattern: Mapping[str, list[PackedLayout]]
    ) -> None:
        self.client = client
        self.key_ttl = key_ttl
        self.by_pattern = dict(by_pattern)
        unique = {layout.prefix: layout for found in by_pattern.values() for layout in found}
        self.layouts = list(unique.values())

    def writers(self, view: str) -> list[PackedWriter]:
        """One writer per layout holding ``view``."""
        return [
            PackedWriter(self.client, layout, view, self.key_ttl)
            for layout in self.layouts
            if any(v.name == view for v in layout.views)
        ]

    def repack(self, view: str, rows: list[dict[str, Any]], views: Mapping[str, Any]) -> None:
        """After Feast wrote ``rows`` of ``view`` (join keys) to its hashes."""
        for writer in self.writers(view):
            writer.repack(rows, views)
