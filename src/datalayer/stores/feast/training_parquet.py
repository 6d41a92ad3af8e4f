"""Point-in-time joins on Feast's file offline store (parquet sources), in numpy.

Feast's own file/DuckDB retrieval builds a training set in several passes through Ibis and
pandas; a hand-written DuckDB ASOF join is one pass, but it sorts every feature file again (and
hashes its string keys) on every call. Here each file gets an index instead: its rows sorted by
(join keys, feature time, created time), built once and kept while the file keeps its path,
mtime and size. A call is then one binary search per entity row and view, and a gather of the
feature columns, which are read from the file on every call.

The semantics are Feast's ``get_historical_features``: the latest feature row with the entity's
join keys and ``feature time <= entity time``; of rows with equal keys and time, the one with
the latest created time; its value dropped when ``feature time < entity time - ttl``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from datalayer.categories.feature import TIMESTAMP
from datalayer.errors import StoreUnavailable

Ints = npt.NDArray[np.int64]


def quoted(identifier: str) -> str:
    """A quoted DuckDB identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def parquet_sources(
    views: Mapping[str, Any], references: Sequence[str], repo: Path
) -> dict[str, str]:
    """Each view's parquet file (a relative path is the repo's, as Feast reads it, whatever
    the working directory), when every view reads one file with its columns unrenamed (the
    local profile); else nothing, and Feast's own join runs."""
    from feast import FileSource

    paths = {}
    for view_name in {ref.split(":", 1)[0] for ref in references}:
        source = views[view_name].batch_source
        if (
            not isinstance(source, FileSource)
            or not str(source.path).endswith(".parquet")
            or source.field_mapping
        ):
            return {}
        paths[view_name] = FileSource.get_uri_for_file_path(repo, str(source.path))
    return paths


def not_parquet(views: Mapping[str, Any], references: Sequence[str]) -> str:
    """Why ``parquet_sources`` finds nothing: the first view whose source the fast join cannot
    read, named with its source."""
    from feast import FileSource

    for view_name in sorted({ref.split(":", 1)[0] for ref in references}):
        source = views[view_name].batch_source
        if not isinstance(source, FileSource):
            return f"view '{view_name}' reads a {type(source).__name__}, not a parquet file"
        if not str(source.path).endswith(".parquet"):
            return f"view '{view_name}' reads '{source.path}', not a .parquet file"
        if source.field_mapping:
            return f"view '{view_name}' renames its source's columns (field_mapping)"
    return "no view reads a parquet file"


def _micros(column: Any) -> tuple[Ints, npt.NDArray[np.bool_]]:
    """An Arrow timestamp column as int64 microseconds since the epoch, and which rows have a
    time at all. Microseconds, naive times read as UTC: what Feast's DuckDB compares."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.timestamp("us"))
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    values = pc.cast(column, pa.timestamp("us", column.type.tz), safe=False).cast(pa.int64())
    return values.fill_null(np.iinfo(np.int64).min).to_numpy(zero_copy_only=False), valid


@dataclass(frozen=True)
class ParquetIndex:
    """One parquet file's rows, sorted by (join keys, feature time, created time).

    Each row is one int64: its keys' code times ``len(times) + 1`` plus the rank of its time
    among the file's distinct times (1-based). The last row at or before ``(code, rank of the
    entity time)`` is then the ASOF match, and of rows with equal keys and time, the latest
    created (sorted last). Rows without keys or time can match nothing and are left out.
    """

    stamp: tuple[int, int]  # mtime in ns and size of the file when it was read
    rows: int  # rows in the file
    #: Each key column's distinct values (their position is the column's code), then for each
    #: further key the distinct combined codes of the keys so far.
    dictionaries: tuple[Any, ...]
    combined: tuple[Any, ...]
    times: Ints  # distinct feature times, sorted
    composite: Ints  # sorted
    order: Ints  # the file row at each sorted position

    @classmethod
    def build(
        cls, path: str, stamp: tuple[int, int], keys: Sequence[str], time: str, created: str
    ) -> ParquetIndex:
        import pandas as pd
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=[*keys, time, *([created] if created else [])])
        stamps, valid = _micros(table[time])
        dictionaries, combined = [], []
        codes: Ints | None = None
        for key in keys:
            encoded = pc.dictionary_encode(table[key].combine_chunks())
            valid = valid & encoded.indices.is_valid().to_numpy(zero_copy_only=False)
            key_codes = encoded.indices.fill_null(0).to_numpy().astype(np.int64)
            dictionaries.append(pd.Index(encoded.dictionary.to_pandas()))
            if codes is None:
                codes = key_codes
            else:
                codes, distinct = pd.factorize(codes * len(dictionaries[-1]) + key_codes)
                combined.append(pd.Index(distinct))
        assert codes is not None
        kept = None if valid.all() else np.flatnonzero(valid)
        if kept is not None:
            codes, stamps = codes[kept], stamps[kept]
        times = np.unique(stamps)
        composite = codes * (len(times) + 1) + np.searchsorted(times, stamps) + 1
        order = np.argsort(composite, kind="stable")
        ordered = composite[order]
        if created and np.any(ordered[1:] == ordered[:-1]):
            made, _ = _micros(table[created])  # a missing created time sorts first (loses)
            order = np.lexsort((made if kept is None else made[kept], composite))
            ordered = composite[order]
        for lookup in (*dictionaries, *combined):
            # pandas builds an Index's hash table lazily, on first lookup, and two threads
            # doing that at once can see it half built: build it here, before it is shared.
            _ = lookup.is_unique
        return cls(
            stamp=stamp,
            rows=table.num_rows,
            dictionaries=tuple(dictionaries),
            combined=tuple(combined),
            times=times,
            composite=ordered,
            order=(order if kept is None else kept[order]).astype(np.int64),
        )

    def codes(self, keys: Sequence[tuple[Ints, Any]]) -> Ints:
        """The code of each entity row's keys in this file (-1: a key the file lacks), from
        each key column factorized (codes, distinct values)."""
        out: Ints | None = None
        for j, (codes, distinct) in enumerate(keys):
            mapped = np.append(self.dictionaries[j].get_indexer(distinct), -1)[codes]
            if out is None:
                out = mapped.astype(np.int64)
            else:
                both = (out >= 0) & (mapped >= 0)
                joined = np.where(both, out * len(self.dictionaries[j]) + mapped, -1)
                out = self.combined[j - 1].get_indexer(joined).astype(np.int64)
        assert out is not None
        return out

    def lookup(self, codes: Ints, stamps: Ints, by_time: npt.NDArray[np.intp], ttl: int) -> Ints:
        """The file row each entity row reads: -1 for none, or for a value older than ``ttl``
        (times in microseconds; ``by_time`` orders the entity rows by time)."""
        if not len(self.composite):
            return np.full(len(codes), -1, dtype=np.int64)
        width = len(self.times) + 1
        wanted = codes * width + _search(self.times, stamps, by_time)
        at = _search(self.composite, wanted, np.argsort(wanted)) - 1
        hit = (codes >= 0) & (at >= 0)
        at = np.where(hit, at, 0)
        found = self.composite[at]
        hit &= found // width == codes
        if ttl:
            hit &= self.times[found % width - 1] >= stamps - ttl
        return np.where(hit, self.order[at], -1)


def _search(ordered: Ints, values: Ints, order: npt.NDArray[np.intp]) -> Ints:
    """``np.searchsorted(ordered, values, side="right")``, the values visited in ``order``
    (sorted): a sorted search walks the array once instead of jumping at random, 4x faster
    at a million rows even with the sort."""
    found = np.empty(len(values), dtype=np.int64)
    found[order] = np.searchsorted(ordered, values[order], side="right")
    return found


class ParquetIndexes:
    """The indexes of a store's parquet files, each rebuilt when its file changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._indexes: dict[tuple[str, tuple[str, ...], str, str], ParquetIndex] = {}

    def get(self, path: str, keys: Sequence[str], time: str, created: str) -> ParquetIndex:
        stat = os.stat(path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        name = (path, tuple(keys), time, created)
        with self._lock:
            index = self._indexes.get(name)
            if index is None or index.stamp != stamp:
                index = ParquetIndex.build(path, stamp, keys, time, created)
                self._indexes[name] = index
            return index

    def clear(self) -> None:
        with self._lock:
            self._indexes.clear()


def _gather(column: Any, rows: Ints, missing: npt.NDArray[np.bool_]) -> Any:
    """Values of one feature column at the given file rows, missing where ``missing``: floats
    as numpy with NaN, ints and booleans as pandas' masked arrays, anything else via Arrow."""
    import pandas as pd
    import pyarrow as pa

    kind = column.type
    if len(column) and pa.types.is_floating(kind):
        values = column.to_numpy().take(rows)
        values[missing] = np.nan
        return values
    if len(column) and (pa.types.is_integer(kind) or pa.types.is_boolean(kind)):
        filled = column.fill_null(False if pa.types.is_boolean(kind) else 0)
        values = filled.to_numpy(zero_copy_only=False).take(rows)
        if column.null_count:
            missing = missing | column.is_null().to_numpy(zero_copy_only=False).take(rows)
        array = pd.arrays.BooleanArray if pa.types.is_boolean(kind) else pd.arrays.IntegerArray
        return array(values, missing)
    taken = column.take(pa.array(rows, mask=missing)) if len(column) else pa.nulls(len(rows), kind)
    return taken.to_pandas()


def historical_parquet(
    entity_df: Any,
    views: Mapping[str, Any],
    references: Sequence[str],
    indexes: ParquetIndexes,
    repo: Path,
) -> Any:
    """Feast's point-in-time join over parquet sources: the entity DataFrame's columns (event
    times as UTC), then ``view__feature`` per reference, one row per entity row in its order.
    The entity DataFrame is left as it was."""
    import pandas as pd
    import pyarrow.parquet as pq

    paths = parquet_sources(views, references, repo)
    wanted: dict[str, list[str]] = {}
    for reference in references:
        view, feature = reference.split(":", 1)
        wanted.setdefault(view, []).append(feature)
    result = entity_df.copy()
    result.index = pd.RangeIndex(len(result))
    result[TIMESTAMP] = pd.to_datetime(result[TIMESTAMP], utc=True, cache=False)
    stamps = result[TIMESTAMP].array.as_unit("us").asi8
    by_time = np.argsort(stamps)
    factorized: dict[str, tuple[Ints, Any]] = {}
    columns: dict[str, Any] = {}
    for view_name, features in wanted.items():
        view = views[view_name]
        source = view.batch_source
        keys = list(view.join_keys)
        for key in keys:
            if key not in factorized:
                factorized[key] = pd.factorize(result[key])
        path = paths[view_name]
        for _ in range(3):  # the file may be rewritten while it is read: read it again
            index = indexes.get(path, keys, source.timestamp_field, source.created_timestamp_column)
            table = pq.read_table(path, columns=features)
            stat = os.stat(path)
            if (stat.st_mtime_ns, stat.st_size) == index.stamp and table.num_rows == index.rows:
                break
        else:
            raise StoreUnavailable(f"{path} changed on each of three reads; try again")
        ttl = view.ttl // timedelta(microseconds=1) if view.ttl else 0
        rows = index.lookup(index.codes([factorized[k] for k in keys]), stamps, by_time, ttl)
        missing = rows < 0
        rows[missing] = 0
        for feature in features:
            columns[f"{view_name}__{feature}"] = _gather(table[feature], rows, missing)
    features_df = pd.DataFrame(columns, index=result.index, copy=False)
    return pd.concat([result, features_df], axis=1, copy=False)
