"""The feature contract: low-latency features for models and point-in-time training sets.

Guarantees every implementation keeps:
- ``online`` and ``historical`` return the same value for the same entity, feature and instant:
  a value older than its feature view's TTL is missing in both.
- ``historical`` is point-in-time correct: for each entity row it uses the latest feature row
  at or before the row's event timestamp and within the TTL, never a later one.
- ``materialize`` copies offline values into the online store in bounded memory.
- A pattern with a ``rollout`` to another feature service serves each entity from one
  variant: the other service for ``percent``% of entities (a stable hash of the join keys,
  the same in every process), its own otherwise; a read's ``variant`` column says which.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from datalayer.categories.feature_log import FeatureLog, FeatureLogConfig, LogSinks
from datalayer.errors import DataLayerError, NotFound, QueryError
from datalayer.patterns import PatternConfig
from datalayer.resilience import GuardedOperations


class FeatureRolloutConfig(BaseModel):
    """A feature pattern's ``rollout`` block: a model's next feature service, served to a
    stable share of entities."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to_feature_service: str = Field(min_length=1, description="the variant's feature service")
    percent: float = Field(ge=0.0, le=100.0, description="the entities it serves")


class FeaturePattern(PatternConfig):
    """A Feast feature service, or an explicit list of ``view:feature`` references."""

    accessor: ClassVar[str] = "features"

    category: Literal["feature"]
    feature_service: str | None = None
    features: list[str] = Field(default_factory=list)
    log: FeatureLogConfig | None = None
    #: ``packed``: online reads from one string per entity that datalayer writes beside
    #: Feast's hashes (Redis online store, views materialized and pushed through datalayer).
    layout: Literal["feast", "packed"] = "feast"
    rollout: FeatureRolloutConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FeaturePattern:
        if bool(self.feature_service) == bool(self.features):
            raise ValueError("set exactly one of feature_service or features")
        if self.rollout is not None and self.rollout.to_feature_service == self.feature_service:
            raise ValueError(
                f"rollout.to_feature_service is the pattern's own '{self.feature_service}': "
                "name the feature service its next model reads"
            )
        return self

    @property
    def variant(self) -> str:
        """What a read names this pattern's own features as: its feature service, or the
        pattern's name for a list of features."""
        return self.feature_service or self.name

    def referenced_fields(self) -> Iterator[tuple[str, str]]:
        return iter(())

    def summary(self) -> str:
        packed = ", packed layout" if self.layout == "packed" else ""
        rollout = ""
        if self.rollout is not None:
            rollout = (
                f", {self.rollout.percent:g}% of entities to feature service "
                f"'{self.rollout.to_feature_service}'"
            )
        if self.feature_service:
            return f"feature service '{self.feature_service}'{packed}{rollout}"
        return f"features {', '.join(self.features)}{packed}{rollout}"


#: Event times (``online_stamped``, the feature logs) are integer nanoseconds since this.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_nanos(at: datetime) -> int:
    """Nanoseconds since the epoch, exact (no float rounding)."""
    return (at - EPOCH) // timedelta(microseconds=1) * 1000


#: The entity DataFrame's time column: each row's features are read as of that instant.
TIMESTAMP = "event_timestamp"


class FeatureBackend(GuardedOperations, ABC):
    """What a feature store implements for one pattern. It receives checked input: known
    ``view:feature`` references, entity rows that carry exactly their join keys, an entity
    DataFrame with its time and join-key columns, an aware instant."""

    operations: ClassVar[Mapping[str, bool]] = {
        "online": True,
        "online_stamped": True,
        "historical": True,
        "push": True,  # rows are upserted by entity and time
        "materialize": False,
        "materialize_incremental": False,
    }

    @abstractmethod
    def references(self) -> list[str]:
        """``view:feature`` of every feature of the pattern, in the pattern's order."""

    @abstractmethod
    def join_keys(self, references: Sequence[str]) -> list[str]:
        """The join keys of the views behind ``references``."""

    @abstractmethod
    def online(
        self, rows: list[dict[str, Any]], references: list[str], at: datetime
    ) -> dict[str, list[Any]]:
        """Each reference's column (``view__feature``), one value per row: the latest value,
        None where it is missing or older than its view's TTL at ``at``."""

    def log_tables(self) -> LogSinks | None:
        """Where landed feature logs and predictions go when the store's offline store keeps
        tables; None: parquet files."""
        return None

    def online_stamped(
        self, rows: list[dict[str, Any]], references: list[str], at: datetime
    ) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
        """``online``, and each view's event time per row in nanoseconds since the epoch (0:
        no value); a store that cannot tell gives no times."""
        return self.online(rows, references, at), {}

    @abstractmethod
    def historical(self, entity_df: Any, references: list[str]) -> Any:
        """The point-in-time join: the entity DataFrame's columns, then one column per
        reference, one row per entity row in its order."""

    def request_fields(self, references: Sequence[str]) -> list[str]:
        """Fields each entity row (or entity DataFrame) must also carry for ``references``:
        request data that on-demand features are computed from."""
        return []

    def input_types(self, references: Sequence[str]) -> dict[str, type]:
        """The Python type of each join key and request field ``references`` need, where the
        store declares one (for callers that hold text: the CLI, a server)."""
        return {}

    def dtypes(self, references: Sequence[str]) -> dict[str, str]:
        """The pandas dtype of each column whose values alone would not give it (an integer
        feature with nulls would read as floats): ``online_df`` and ``historical`` use it, so
        serving and training see one dtype per feature."""
        return {}

    def ttls(self, references: Sequence[str]) -> dict[str, int]:
        """Each view's TTL in nanoseconds (0: none), for the views behind ``references``
        where the store declares one."""
        return {}

    def push_sources(self) -> dict[str, str]:
        """The view each push source of the pattern feeds, by the source's name."""
        return {}

    @abstractmethod
    def materialize(self, start: datetime, end: datetime, on_view: Progress | None) -> None:
        """Copy the latest offline values in [start, end] to the online store."""

    @abstractmethod
    def materialize_incremental(self, end: datetime, on_view: Progress | None) -> None:
        """Materialize what is new since the last run, up to ``end``."""

    @abstractmethod
    def push(self, rows: Any, view: str | None, to: PushTo | None = None) -> None:
        """Write fresh rows of a streaming view where ``to`` says (default: the store's
        setting, online and offline)."""


class FeatureView:
    """One feature pattern bound to its feature store.

    Columns are named ``view__feature``; ``features`` narrows a read to some ``view:feature``
    references of the pattern. Input is checked here (entity rows carry their join keys, the
    entity DataFrame its time and join-key columns, ``features`` are the pattern's); the
    backend reads.
    """

    def __init__(self, pattern: FeaturePattern, backend: FeatureBackend) -> None:
        self.pattern = pattern
        self.backend = backend
        self.log: FeatureLog | None = None  # set by the facade when the pattern has ``log``
        #: The other feature service's view, when the pattern has a ``rollout`` (the facade).
        self.next: FeatureView | None = None

    def variants(self) -> dict[str, FeatureView]:
        """The views a read may be served by, by variant name: the pattern's own, and the
        feature service it rolls out to."""
        found = {self.pattern.variant: self}
        if self.next is not None:
            found[self.next.pattern.variant] = self.next
        return found

    def variant(self, name: str) -> FeatureView:
        """The view of one variant; an error listing them."""
        found = self.variants()
        if name not in found:
            raise NotFound(
                f"pattern '{self.pattern.name}' has no variant {name!r}; "
                f"its variants: {', '.join(found)}"
            )
        return found[name]

    def routed(self, rows: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Which entity rows the rollout's feature service serves: those whose join keys'
        stable bucket is below ``percent`` (rows lacking a join key are refused first)."""
        return self._route(self.entity_rows(rows, self.references()))

    def _route(self, checked: list[dict[str, Any]]) -> list[bool]:
        from datalayer.rollout import BUCKETS, bucket, key_text

        assert self.pattern.rollout is not None
        keys = self.join_keys()
        threshold = round(self.pattern.rollout.percent * BUCKETS / 100)
        return [bucket(key_text({k: row[k] for k in keys})) < threshold for row in checked]

    def references(self) -> list[str]:
        """``view:feature`` of every feature of the pattern."""
        return self.backend.references()

    def join_keys(self, references: Sequence[str] | None = None) -> list[str]:
        """Join keys of the views behind ``references`` (default: all of the pattern's)."""
        return self.backend.join_keys(references or self.references())

    @staticmethod
    def columns(references: Sequence[str]) -> list[str]:
        """Output column names: ``view__feature``, as Feast's full feature names."""
        return [ref.replace(":", "__") for ref in references]

    def selected(self, features: Sequence[str] | None) -> list[str]:
        """The pattern's references, or the given subset of them."""
        references = self.references()
        if features is None:
            return references
        repeated = sorted({f for f in features if list(features).count(f) > 1})
        if repeated:
            raise QueryError(f"pattern '{self.pattern.name}': features lists {repeated} twice")
        unknown = [f for f in features if f not in references]
        if unknown:
            raise NotFound(
                f"pattern '{self.pattern.name}': no feature {unknown}; "
                f"its features: {', '.join(references)}"
            )
        return list(features)

    def input_types(self, features: Sequence[str] | None = None) -> dict[str, type]:
        """The Python type of each join key and request field the features need (all of the
        pattern's by default), where the store declares one."""
        return self.backend.input_types(self.selected(features))

    def entity_rows(
        self, entity_rows: Sequence[Mapping[str, Any]], references: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Each entity row reduced to the join keys (and request fields) ``references`` need;
        each must be set."""
        keys = self.join_keys(references)
        fields = [f for f in self.backend.request_fields(references) if f not in keys]
        wanted = [*keys, *fields]
        rows = []
        for i, row in enumerate(entity_rows):
            missing = [k for k in keys if row.get(k) is None]
            if missing:
                raise QueryError(
                    f"pattern '{self.pattern.name}': entity row {i} lacks join key(s) {missing}; "
                    f"every row needs {keys}"
                )
            lacking = [f for f in fields if f not in row]
            if lacking:
                raise QueryError(
                    f"pattern '{self.pattern.name}': entity row {i} lacks request field(s) "
                    f"{lacking}; the on-demand features read need {fields} in every row"
                )
            rows.append({k: row[k] for k in wanted})
        return rows

    def online(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        *,
        as_of: datetime | None = None,
        features: Sequence[str] | None = None,
        request_id: str | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> dict[str, list[Any]]:
        """Latest values per entity, a value older than its view's TTL (at ``as_of``, default
        now) reads as None, exactly as a training set built at that instant would have it:
        the join-key columns, then one column per feature.

        Where the pattern has a ``log``, a sampled read is also logged (in the background)
        with ``request_id`` (a new one if not given) and the ``model`` and ``version`` that
        asked."""
        who = (request_id, model, version)
        return self._read(entity_rows, as_of, features, stamped=False, who=who)[0]

    def online_stamped(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        *,
        as_of: datetime | None = None,
        features: Sequence[str] | None = None,
        request_id: str | None = None,
        model: str | None = None,
        version: str | None = None,
    ) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
        """``online``, and each view's event time per row in nanoseconds since the epoch (0:
        no value; no entry where the store cannot tell): what a feature server reports next
        to each value."""
        who = (request_id, model, version)
        return self._read(entity_rows, as_of, features, stamped=True, who=who)

    def log_sinks(
        self,
        base_dir: Path,
        output: Path | None = None,
        shown: Callable[[Path], str] = str,
    ) -> LogSinks:
        """Where this pattern's log lands: parquet files in ``output`` when given, else the
        store's tables when it has some, else parquet in ``base_dir``/.datalayer/feature_logs
        (``shown`` names a folder for people)."""
        tables = None if output is not None else self.backend.log_tables()
        if tables is not None:
            return tables
        folder = output or base_dir / ".datalayer" / "feature_logs" / self.pattern.name
        return LogSinks.folder(folder, shown(folder))

    def log_prediction(
        self,
        request_id: str,
        prediction: Any,
        *,
        model: str | None = None,
        version: str | None = None,
    ) -> None:
        """Log what a model predicted from the read ``request_id`` (give the read that id):
        one prediction, or a list of one per entity row, in the read's order. Queued like
        the read's log record, never sampled out; ``datalayer evaluate`` joins it with the
        read and its label."""
        if self.log is None:
            raise DataLayerError(
                f"pattern '{self.pattern.name}' has no log to record predictions in: add "
                "'log: {to: <streaming pattern>}' to it"
            )
        if not isinstance(request_id, str) or not request_id or "\x00" in request_id:
            raise QueryError(
                f"pattern '{self.pattern.name}': log_prediction needs the read's request id "
                f"(non-empty text without NUL), not {request_id!r}"
            )
        if hasattr(prediction, "tolist"):  # numpy arrays and scalars, pandas series
            prediction = prediction.tolist()
        predictions = list(prediction) if isinstance(prediction, list | tuple) else [prediction]
        for i, value in enumerate(predictions):
            if value is not None and not isinstance(value, bool | int | float | str):
                raise QueryError(
                    f"pattern '{self.pattern.name}': prediction {i} is a "
                    f"{type(value).__name__}; a prediction is a number, a bool or text"
                )
        self.log.record_prediction(request_id, predictions, model=model, version=version)

    def _read(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        as_of: datetime | None,
        features: Sequence[str] | None,
        *,
        stamped: bool,
        who: tuple[str | None, str | None, str | None],
    ) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
        if self.next is not None:
            return self._read_split(entity_rows, as_of, features, stamped=stamped, who=who)
        feature_log = self.log if self.log is not None and self.log.sampled() else None
        return self._read_one(entity_rows, as_of, features, stamped, feature_log, who)

    def _read_one(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        as_of: datetime | None,
        features: Sequence[str] | None,
        stamped: bool,
        feature_log: FeatureLog | None,
        who: tuple[str | None, str | None, str | None],
        positions: list[int] | None = None,
        logged_entities: dict[str, list[Any]] | None = None,
    ) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
        """An online read of this view, logged to ``feature_log`` when given (``positions``:
        the rows' places in the caller's read, which the log keeps; ``logged_entities``: the
        entity columns to log, by default the rows' own)."""
        references, rows, at, out = self._online_request(entity_rows, as_of, features)
        if stamped or feature_log is not None:
            values, stamps = self.backend.online_stamped(rows, references, at)
        else:
            values, stamps = self.backend.online(rows, references, at), {}
        out.update(values)
        if feature_log is not None:
            if logged_entities is None:
                logged_entities = {k: [row[k] for row in rows] for k in (rows[0] if rows else {})}
            entities = logged_entities
            request_id, model, version = who
            feature_log.record(
                entities,
                values,
                stamps,
                at,
                request_id=request_id,
                model=model,
                version=version,
                variant=self.pattern.variant if positions is not None else None,
                positions=positions,
            )
        return out, stamps

    def _read_split(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        as_of: datetime | None,
        features: Sequence[str] | None,
        *,
        stamped: bool,
        who: tuple[str | None, str | None, str | None],
    ) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
        """A read of a pattern rolling out to another feature service: each variant reads
        its entities, in one call each; the columns are both variants' (None where the
        other variant served the row), with ``variant`` after the join keys. Logged as one
        record per variant under one request id, each row at its place in this read."""
        import uuid

        assert self.next is not None
        if features is not None:
            raise QueryError(
                f"pattern '{self.pattern.name}' serves each entity from one of two feature "
                "services (its rollout): read all of its features, without features="
            )
        as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
        checked = self.entity_rows(entity_rows, self.references())
        to_next = self._route(checked)
        feature_log = self.log if self.log is not None and self.log.sampled() else None
        if feature_log is not None and who[0] is None:
            who = (uuid.uuid4().hex, who[1], who[2])  # one id for both variants' records
        # the caller's join keys for every row, whichever variant read it
        out: dict[str, list[Any]] = {k: [row[k] for row in checked] for k in self.join_keys()}
        out["variant"] = [(self.next if n else self).pattern.variant for n in to_next]
        total = len(to_next)
        parts = []
        for view, served in ((self, False), (self.next, True)):
            for feature in view.columns(view.references()):  # every column, read or not
                out.setdefault(feature, [None] * total)
            positions = [i for i, n in enumerate(to_next) if n == served]
            if positions:  # a variant no entity of this read meets is not read
                rows = [entity_rows[i] for i in positions]
                # logged with the keys the routing hashed, whatever this variant reads
                keys = {k: [checked[i][k] for i in positions] for k in checked[0]}
                read = view._read_one(rows, as_of, None, stamped, feature_log, who, positions, keys)
                parts.append((positions, read))
        merged: dict[str, list[Any]] = {}
        for positions, (values, stamps) in parts:
            for target, columns, empty in ((out, values, None), (merged, stamps, 0)):
                for name, column in columns.items():
                    # a column of one variant's only: the other's rows keep ``empty``
                    whole = target.setdefault(name, [])
                    whole.extend([empty] * (total - len(whole)))
                    for i, value in zip(positions, column, strict=True):
                        whole[i] = value
        return out, merged

    def _online_request(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        as_of: datetime | None,
        features: Sequence[str] | None,
    ) -> tuple[list[str], list[dict[str, Any]], datetime, dict[str, list[Any]]]:
        """The references, checked rows and instant of an online read, and its join-key
        columns."""
        references = self.selected(features)
        rows = self.entity_rows(entity_rows, references)
        at = (as_of or datetime.now(UTC)).astimezone(UTC)
        keys = {k: [row[k] for row in rows] for k in self.join_keys(references)}
        return references, rows, at, keys

    def online_df(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        *,
        as_of: datetime | None = None,
        features: Sequence[str] | None = None,
    ) -> Any:
        """``online`` as a pandas DataFrame, each feature of the dtype ``historical`` gives it."""
        import pandas as pd

        frame = pd.DataFrame(self.online(entity_rows, as_of=as_of, features=features))
        for column, dtype in self.backend.dtypes(self.selected(features)).items():
            frame[column] = frame[column].astype(dtype)
        return frame

    def historical(self, entity_df: Any, *, features: Sequence[str] | None = None) -> Any:
        """A point-in-time-correct training set: one row per entity row, in the same order."""
        import pandas as pd

        if not isinstance(entity_df, pd.DataFrame):
            raise QueryError(f"pattern '{self.pattern.name}': entity_df must be a pandas DataFrame")
        if TIMESTAMP not in entity_df.columns:
            raise QueryError(
                f"pattern '{self.pattern.name}': the entity DataFrame has no '{TIMESTAMP}' column "
                f"(columns: {', '.join(map(str, entity_df.columns))})"
            )
        references = self.selected(features)
        keys = self.join_keys(references)
        missing = [k for k in keys if k not in entity_df.columns]
        if missing:
            raise QueryError(
                f"pattern '{self.pattern.name}': the entity DataFrame lacks join key column(s) "
                f"{missing}; it needs {keys} and '{TIMESTAMP}'"
            )
        fields = self.backend.request_fields(references)
        lacking = [f for f in fields if f not in entity_df.columns]
        if lacking:
            raise QueryError(
                f"pattern '{self.pattern.name}': the entity DataFrame lacks request data "
                f"column(s) {lacking}; the on-demand features read need {fields}"
            )
        self._check_precision(entity_df[TIMESTAMP])
        return self.backend.historical(entity_df, references)

    def _check_precision(self, times: Any) -> None:
        """Refuse event times finer than a microsecond: the stores keep microseconds, so such
        a time would be compared shifted, and answer differently at a TTL's edge."""
        import pandas as pd

        try:
            parsed = pd.to_datetime(times, utc=True)
        except (ValueError, TypeError) as exc:
            raise QueryError(
                f"pattern '{self.pattern.name}': '{TIMESTAMP}' holds a value that is not a "
                f"time: {exc}"
            ) from None
        finer = parsed.notna() & (parsed.dt.nanosecond != 0)
        if finer.any():
            row = int(finer.to_numpy().nonzero()[0][0])
            raise QueryError(
                f"pattern '{self.pattern.name}': '{TIMESTAMP}' of entity row {row} "
                f"({parsed.iloc[row].isoformat()}) is finer than a microsecond; round the "
                "entity times to microseconds (e.g. .dt.floor('us'))"
            )

    def materialize(self, start: datetime, end: datetime, on_view: Progress | None = None) -> None:
        """Copy the latest offline values in [start, end] to the online store, view by view,
        in bounded memory."""
        self.backend.materialize(start, end, on_view)

    def materialize_incremental(self, end: datetime, on_view: Progress | None = None) -> None:
        """Materialize what is new since the last run, up to ``end``."""
        self.backend.materialize_incremental(end, on_view)

    def push(self, rows: Any, *, view: str | None = None, to: PushTo | None = None) -> None:
        """Write fresh rows of a streaming view: online and offline (the store's
        ``push_mode``), or only where ``to`` says."""
        if to is None:
            self.backend.push(rows, view)
        else:
            self.backend.push(rows, view, to)

    def ttls(self, features: Sequence[str] | None = None) -> dict[str, int]:
        """Each view's TTL in nanoseconds (0: none), where the store declares one (those of
        the rollout's feature service too, when ``features`` is not given)."""
        found = self.backend.ttls(self.selected(features))
        if self.next is not None and features is None:
            found = self.next.ttls() | found
        return found

    def push_sources(self) -> dict[str, str]:
        """The view each push source of the pattern feeds, by the source's name."""
        return self.backend.push_sources()


#: Where pushed rows go, as Feast's push modes say it.
PushTo = Literal["online", "offline", "online_and_offline"]
#: Called as (view being materialized, views done, views in all).
Progress = Callable[[str, int, int], None]
