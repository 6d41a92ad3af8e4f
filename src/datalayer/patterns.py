"""What every access pattern shares: its registry entry and its payload schema."""

from __future__ import annotations

import importlib
import json
import math
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticSerializationError, SchemaSerializer, SchemaValidator, core_schema

from datalayer.errors import PayloadValidationError
from datalayer.query import decimal_problem
from datalayer.resilience import PatternResilience
from datalayer.validators import Name, is_utf8, text_problem


class Target(NamedTuple):
    """One thing a pattern occupies on its store: ``kind`` and ``name`` (a table, a topic, a
    collection, a key prefix), declared by the pattern's ``attribute``."""

    attribute: str
    kind: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.kind} '{self.name}'"

    def folded(self) -> str:
        """The name as the store may compare it: case folded (SQLite, MongoDB on some file
        systems), and a topic's ``.`` as ``_`` (Kafka's metric names do not tell them apart)."""
        folded = self.name.lower()
        return folded.replace(".", "_") if self.kind == "topic" else folded


Stage = Literal["shadow", "split", "cutover", "done"]


class RolloutConfig(BaseModel):
    """A pattern's ``rollout`` block: the store it moves to, how far it is (``datalayer.rollout``
    routes by it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: Name = Field(description="the store the pattern moves to")
    stage: Stage
    percent: float = Field(default=0.0, ge=0.0, le=100.0, description="split: reads from `to`")
    compare_sample: float = Field(
        default=0.01, ge=0.0, le=1.0, description="shadow: the share of reads compared"
    )


class PatternConfig(BaseModel):
    """Base of a pattern entry in the registry; each category adds its own fields."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    category: str
    store: Name
    schema_: str | None = Field(default=None, alias="schema")
    description: str | None = None
    resilience: PatternResilience | None = None

    #: The facade method that hands out this category's contract: ``dl.<accessor>(name)``.
    accessor: ClassVar[str]

    _name: str = PrivateAttr(default="")
    _schema_cls: type[BaseModel] | None = PrivateAttr(default=None)

    def bind(self, name: str, schema: type[BaseModel] | None = None) -> None:
        """Give the pattern its registry name and its imported schema (the loader's job)."""
        self._name = name
        self._schema_cls = schema

    @property
    def name(self) -> str:
        return self._name

    @property
    def schema_cls(self) -> type[BaseModel] | None:
        return self._schema_cls

    def referenced_fields(self) -> Iterable[tuple[str, str]]:
        """(attribute, field path) pairs naming schema fields, for the loader to check."""
        return ()

    def targets(self) -> list[Target]:
        """What the pattern occupies on its store; the loader refuses two patterns that share
        one."""
        return []

    def store_rollout(self) -> RolloutConfig | None:
        """The pattern's move to another store, if it is moving (a feature pattern's
        ``rollout`` moves a model to another feature service instead)."""
        found = getattr(self, "rollout", None)
        return found if isinstance(found, RolloutConfig) else None

    def summary(self) -> str:
        """What the pattern reads or writes on its store, in one line for ``describe``; where
        it is moving, when it is."""
        said = ", ".join(target.label for target in self.targets())
        rollout = self.store_rollout()
        if rollout is None:
            return said
        split = f" {rollout.percent:g}%" if rollout.stage == "split" else ""
        return f"{said}, moving to '{rollout.to}' ({rollout.stage}{split})"

    def validate_payload(self, payload: Any) -> dict[str, Any]:
        """Check a payload against the schema and return its JSON-ready dict."""
        return validate_payload(self.name, self._schema_cls, payload)


def validate_payload(pattern: str, schema: type[BaseModel] | None, payload: Any) -> dict[str, Any]:
    """Validate ``payload`` (a dict or model instance) and dump it to JSON-compatible values."""
    if schema is None:
        if isinstance(payload, BaseModel):
            return payload.model_dump(mode="json")
        if not isinstance(payload, Mapping):
            raise PayloadValidationError(
                pattern, [("", f"expected a mapping, got {type(payload).__name__}")]
            )
        return dict(payload)
    model = validate_model(pattern, schema, payload)
    try:
        return model.model_dump(mode="json")
    except PydanticSerializationError as exc:  # e.g. an object in a field typed Any
        raise PayloadValidationError(pattern, [("", f"not JSON-serializable: {exc}")]) from exc


def validate_model(pattern: str, schema: type[BaseModel], payload: Any) -> BaseModel:
    """Validate ``payload`` into an instance of ``schema``, naming each failing field."""
    if type(payload) is schema:
        return payload  # validated when it was built
    try:
        if isinstance(payload, BaseModel):
            payload = payload.model_dump()
        return schema.model_validate(payload)
    except PydanticValidationError as exc:
        raise PayloadValidationError(
            pattern,
            [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()],
        ) from exc


@dataclass(frozen=True)
class DictCodec:
    """A model's fields as a typed dict: the same validation and the same JSON, about half the
    cost, because no model instance is built. ``validate_many`` raises pydantic's
    ``ValidationError``, which callers turn into their own error (the model path names fields).
    """

    validate_many: Callable[[list[Any]], list[dict[str, Any]]]
    to_json: Callable[[dict[str, Any]], bytes]
    #: JSON bytes to the JSON-ready dict, parsed and validated in one pydantic call; ``None``
    #: unless every field is of a type the Python path reads the same way (``_SAME_FROM_JSON``).
    #: Raises ``ValidationError``, or ``ValueError`` for text that must go the long way.
    from_json: Callable[[bytes], dict[str, Any]] | None = None
    #: ``from_json`` for many at once, in one call.
    many_from_json: Callable[[list[bytes]], list[dict[str, Any]]] | None = None


#: Keys of a model's core schema (and of its fields) that only matter for instances, or that
#: the typed dict schema reads the same way. Any other key means behaviour outside the fields.
_PLAIN_MODEL_KEYS = {"type", "cls", "config", "schema", "ref", "metadata", "frozen"}
_PLAIN_FIELD_KEYS = {"type", "schema", "metadata", "frozen"}


def dict_codec(schema: type[BaseModel]) -> DictCodec | None:
    """A ``DictCodec`` for ``schema``, or ``None`` if the model does anything beyond checking
    its fields: validators or serializers of its own, aliases, extra fields, computed fields,
    a custom ``__init__`` or ``model_post_init``. Those need the model path.
    """
    model: Any = schema.__pydantic_core_schema__
    if model.get("type") != "model" or model.get("custom_init") or model.get("root_model"):
        return None
    fields_schema = model["schema"]
    config: core_schema.CoreConfig = model.get("config") or core_schema.CoreConfig()
    if (
        set(model) - _PLAIN_MODEL_KEYS - {"custom_init", "root_model"}
        or fields_schema.get("type") != "model-fields"
        or set(fields_schema) - {"type", "fields", "model_name", "computed_fields"}
        or fields_schema.get("computed_fields")
        or config.get("extra_fields_behavior", "ignore") != "ignore"
    ):
        return None
    fields: dict[str, core_schema.TypedDictField] = {}
    for name, field in fields_schema["fields"].items():
        if set(field) - _PLAIN_FIELD_KEYS or _has_code(field["schema"]):
            return None
        inner = field["schema"]
        fields[name] = core_schema.typed_dict_field(inner, required=inner["type"] != "default")
    as_dict = core_schema.typed_dict_schema(fields, extra_behavior="ignore", config=config)
    validator = SchemaValidator(core_schema.list_schema(as_dict), config)
    serializer = SchemaSerializer(as_dict, config)
    from_json: Callable[[bytes], dict[str, Any]] | None = None
    many_from_json: Callable[[list[bytes]], list[dict[str, Any]]] | None = None
    if all(_same_from_json(field["schema"]) for field in fields.values()):
        finite = core_schema.CoreConfig(**{**config, "allow_inf_nan": False})
        parsed = core_schema.typed_dict_schema(fields, extra_behavior="ignore", config=finite)
        one = SchemaValidator(parsed, finite).validate_json
        many = SchemaValidator(
            core_schema.list_schema(core_schema.json_schema(parsed)), finite
        ).validate_python
        ready_one: Callable[[bytes], Any]
        ready_many: Callable[[list[bytes]], Any]
        if all(_json_native(field["schema"]) for field in fields.values()):
            ready_one, ready_many = one, many  # what they validate is already JSON-ready
        else:
            to_python = serializer.to_python
            to_pythons = SchemaSerializer(core_schema.list_schema(as_dict), config).to_python
            ready_one = lambda raw: to_python(one(raw), mode="json")  # noqa: E731
            ready_many = lambda raws: to_pythons(many(raws), mode="json")  # noqa: E731

        # pydantic parses NaN and Infinity even where it then ignores them (an unknown field):
        # text that may hold them goes the long way, which refuses them anywhere.
        def from_json(raw: bytes) -> dict[str, Any]:
            if b"NaN" in raw or b"Infinity" in raw:
                raise ValueError("may hold NaN or Infinity")
            return ready_one(raw)  # type: ignore[no-any-return]

        def many_from_json(raws: list[bytes]) -> list[dict[str, Any]]:
            joined = b"\x00".join(raws)
            if b"NaN" in joined or b"Infinity" in joined:
                raise ValueError("may hold NaN or Infinity")
            return ready_many(raws)  # type: ignore[no-any-return]

    return DictCodec(validator.validate_python, serializer.to_json, from_json, many_from_json)


#: Core schema types pydantic reads from JSON text exactly as from ``json.loads``'s values
#: (no ``any``: NaN would get through; no decimals: JSON numbers would not pass a float).
_SAME_FROM_JSON = {"str", "int", "float", "bool", "none", "datetime", "date", "literal"}


def _json_native(node: Any) -> bool:
    """Whether values of this schema are the same in Python and JSON (no dates)."""
    kind = node.get("type")
    if kind in ("default", "nullable"):
        return _json_native(node["schema"])
    if kind == "list":
        return _json_native(node["items_schema"])
    if kind == "dict":
        return _json_native(node["values_schema"])
    return kind in {"str", "int", "float", "bool", "none", "literal"}


def _same_from_json(node: Any) -> bool:
    kind = node.get("type")
    if kind in ("default", "nullable"):
        return _same_from_json(node["schema"])
    if kind == "list":
        return "items_schema" in node and _same_from_json(node["items_schema"])
    if kind == "dict":  # JSON object keys are text
        keys, values = node.get("keys_schema"), node.get("values_schema")
        return keys == {"type": "str"} and values is not None and _same_from_json(values)
    return kind in _SAME_FROM_JSON


def _has_code(node: Any) -> bool:
    """Whether a core schema calls user code (validator or serializer functions) anywhere, or
    refers to definitions held outside it, which a typed dict built from it would not carry."""
    if isinstance(node, dict):
        kind = node.get("type")
        if isinstance(kind, str) and (kind.startswith("function") or kind == "definition-ref"):
            return True
        return "serialization" in node or any(_has_code(v) for v in node.values())
    if isinstance(node, list | tuple):
        return any(_has_code(v) for v in node)
    return False


#: The integers every store holds exactly (64-bit signed).
def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


_STRICT_JSON = json.JSONDecoder(parse_constant=_not_json)


def loads_json(raw: bytes | str) -> Any:
    """Parse what another program may have written, as ``json.loads`` does but refusing
    ``NaN`` and ``Infinity``: they are not JSON, and no contract lets them in through a write.
    Raises ``ValueError`` (bad UTF-8 too)."""
    if isinstance(raw, bytes):
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    return _STRICT_JSON.decode(raw)


_INT64 = range(-(2**63), 2**63)


def check_storable(pattern: str, value: Any, path: str = "") -> None:
    """Refuse what some store would change or fail on: integers past 64 bits, NaN and
    infinities (JSON has no such number; SQLite reads NaN back as NULL), decimals past
    PostgreSQL's NUMERIC, text with NUL or a lone surrogate (in values and in mapping keys),
    aware datetimes whose UTC instant is out of Python's range."""
    if isinstance(value, str):
        if problem := text_problem(value):
            raise PayloadValidationError(pattern, [(path, problem)])
        return
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if value not in _INT64:
            raise PayloadValidationError(pattern, [(path, "integer outside the 64-bit range")])
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PayloadValidationError(pattern, [(path, f"{value} cannot be stored")])
    elif isinstance(value, Decimal):
        if problem := decimal_problem(value):
            raise PayloadValidationError(pattern, [(path, problem)])
    elif isinstance(value, datetime) and value.tzinfo is not None:
        try:  # stores keep the UTC instant: year 1 at +05:30 has none Python can hold
            value.astimezone(UTC)
        except OverflowError as exc:
            raise PayloadValidationError(
                pattern, [(path, f"{value.isoformat()} has no UTC instant Python can hold")]
            ) from exc
    elif isinstance(value, Mapping | BaseModel):
        items = value.items() if isinstance(value, Mapping) else iter(value)
        for key, child in items:
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (problem := text_problem(key)):
                shown = key if is_utf8(key) else repr(key)
                where = f"{path}.{shown}" if path else shown
                raise PayloadValidationError(pattern, [(where, f"field name: {problem}")])
            check_storable(pattern, child, here)
    elif isinstance(value, list | tuple):
        for i, child in enumerate(value):
            check_storable(pattern, child, f"{path}.{i}" if path else str(i))


def import_schema(ref: str, search_dir: Path | None) -> type[BaseModel]:
    """Import ``package.module:ClassName``; ``search_dir`` (the registry's folder) is tried too."""
    obj = import_object(ref, search_dir, "ClassName")
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ValueError(f"'{ref}' is not a pydantic model class")
    return obj


def import_object(ref: str, search_dir: Path | None, kind: str = "name") -> Any:
    """Import ``package.module:name`` (``kind`` names what ``name`` should be, for the
    error); ``search_dir`` (the registry's folder) is tried too."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"'{ref}' is not of the form 'package.module:{kind}'")
    if search_dir is not None and str(search_dir) not in sys.path:
        sys.path.append(str(search_dir))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{module_name}' for '{ref}': {exc}") from exc
    except SyntaxError as exc:
        raise ValueError(
            f"module '{module_name}' has a syntax error at {exc.filename}:{exc.lineno}: {exc.msg}"
        ) from exc
    except Exception as exc:  # the module's own code raised while it was imported
        raise ValueError(
            f"module '{module_name}' raised {type(exc).__name__} while importing"
            f"{_where(exc)}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            members = sorted(n for n in dir(module) if not n.startswith("_"))
            from datalayer.errors import did_you_mean

            raise ValueError(
                f"module '{module_name}' has no attribute '{attr}'{did_you_mean(attr, members)}"
            )
        obj = getattr(obj, part)
    return obj


def _where(exc: BaseException) -> str:
    """' at file:line' of the innermost frame of a traceback, or ''."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def schema_has_field(schema: type[BaseModel], path: str) -> bool:
    """Whether a dotted field path exists in a pydantic model (nested models followed)."""
    current: Any = schema
    for part in path.split("."):
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return True  # a free-form dict below this point: cannot check deeper
        field = current.model_fields.get(part)
        if field is None:
            return False
        current = field.annotation
    return True
