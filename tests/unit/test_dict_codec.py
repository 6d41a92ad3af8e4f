"""``DictCodec`` must accept, refuse and serialize exactly as the model it stands in for."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    computed_field,
    field_serializer,
    field_validator,
    model_validator,
)

from datalayer.errors import PayloadValidationError
from datalayer.examples.alerting import Alert
from datalayer.patterns import dict_codec, loads_json, validate_payload
from datalayer.testing.contracts.schemas import Event, Item, Ledger, Note


class Nested(BaseModel):
    id: int
    at: datetime | None = None


class Configured(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, ser_json_timedelta="float", frozen=True)

    name: str = Field(min_length=2)
    wait: timedelta = timedelta(seconds=3)
    inner: Nested | None = None
    tags: list[str] = Field(default_factory=list)


def _value(rng: random.Random) -> Any:
    """A value of a random kind: right for some fields, coercible for others, wrong for most."""
    return rng.choice(
        [
            "x",
            "",
            "  padded ",
            "12",
            "1.5",
            "b",
            "2024-05-01T10:00:00Z",
            "not a date",
            7,
            -3,
            2.5,
            float("nan"),
            True,
            None,
            [],
            ["a", "b"],
            {"k": "v"},
            {"id": "4"},
            {"id": "no"},
            datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
            timedelta(minutes=2),
        ]
    )


#: One valid payload per model; the generator changes some of its fields.
VALID: dict[type[BaseModel], dict[str, Any]] = {
    Event: {"event_id": "e1", "device": "d1", "seq": 3, "payload": "p"},
    Item: {
        "item_id": "i1",
        "name": "n",
        "price": 2.5,
        "quantity": 4,
        "active": False,
        "tier": "b",
        "created_at": "2024-05-01T10:00:00Z",
        "discontinued_at": None,
        "attributes": {"k": "v"},
    },
    Ledger: {"account_id": "a", "entry_no": 1, "amount": 9.75},
    Note: {"note_id": "n1", "author": "me", "score": 2, "tags": ["t"]},
    Configured: {"name": "name", "wait": 5, "inner": {"id": 1}, "tags": []},
    Nested: {"id": 1, "at": "2024-05-01T10:00:00.5+05:30"},
}


def _payloads(model: type[BaseModel], count: int, seed: int) -> list[dict[str, Any]]:
    """The valid payload with fields dropped, replaced by random values, reordered, or an
    unknown field added: about one field in six changed."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        payload = {}
        for name, value in VALID[model].items():
            roll = rng.random()
            if roll < 0.08:
                continue
            payload[name] = _value(rng) if roll < 0.17 else value
        if rng.random() < 0.2:
            payload["unknown"] = _value(rng)
        items = list(payload.items())
        rng.shuffle(items)
        out.append(dict(items))
    return out


def _model_answer(model: type[BaseModel], payload: Any) -> tuple[str, Any]:
    try:
        instance = model.model_validate(payload)
    except ValidationError as exc:
        return "refused", [(e["loc"], e["type"]) for e in exc.errors()]
    return "accepted", instance.__pydantic_serializer__.to_json(instance)


def _codec_answer(model: type[BaseModel], payload: Any) -> tuple[str, Any]:
    codec = dict_codec(model)
    assert codec is not None
    try:
        (row,) = codec.validate_many([payload])
    except ValidationError as exc:
        return "refused", [(e["loc"][1:], e["type"]) for e in exc.errors()]
    return "accepted", codec.to_json(row)


@pytest.mark.parametrize("model", [Event, Item, Ledger, Note, Configured])
def test_codec_accepts_refuses_and_serializes_as_the_model(model: type[BaseModel]) -> None:
    answers = {"accepted": 0, "refused": 0}
    for payload in _payloads(model, 3000, seed=len(model.model_fields)):
        expected = _model_answer(model, payload)
        assert _codec_answer(model, payload) == expected, payload
        answers[expected[0]] += 1
    # The generated data must exercise both outcomes, or the comparison proves little.
    assert answers["accepted"] >= 30 and answers["refused"] >= 30, answers


def test_codec_batch_keeps_order_and_fills_defaults() -> None:
    codec = dict_codec(Item)
    assert codec is not None
    rows = [
        {"created_at": "2024-05-01T10:00:00Z", "price": "2", "name": "b", "item_id": "i2"},
        {"item_id": "i1", "name": "a", "price": 1, "created_at": 0, "attributes": {"c": "d"}},
    ]
    assert [codec.to_json(r) for r in codec.validate_many(rows)] == [
        Item.model_validate(r).model_dump_json().encode() for r in rows
    ]


class WithValidator(BaseModel):
    x: int

    @field_validator("x")
    @classmethod
    def positive(cls, value: int) -> int:
        return abs(value)


class WithModelValidator(BaseModel):
    x: int

    @model_validator(mode="after")
    def check(self) -> WithModelValidator:
        return self


class WithSerializer(BaseModel):
    x: int

    @field_serializer("x")
    def doubled(self, value: int) -> int:
        return value * 2


class WithComputed(BaseModel):
    x: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def y(self) -> int:
        return self.x + 1


class WithAlias(BaseModel):
    x: int = Field(alias="X")


class WithExtra(BaseModel):
    model_config = ConfigDict(extra="allow")
    x: int


class WithPostInit(BaseModel):
    x: int

    def model_post_init(self, context: Any) -> None:
        pass


class WithInit(BaseModel):
    x: int

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)


class WithNestedValidator(BaseModel):
    inner: WithValidator


@pytest.mark.parametrize(
    "model",
    [
        WithValidator,
        WithModelValidator,
        WithSerializer,
        WithComputed,
        WithAlias,
        WithExtra,
        WithPostInit,
        WithInit,
        WithNestedValidator,
    ],
)
def test_models_with_behaviour_beyond_their_fields_get_no_codec(model: type[BaseModel]) -> None:
    assert dict_codec(model) is None


def _json_text(payload: dict[str, Any]) -> bytes:
    """A payload as another program might write it: NaN as JSON's missing ``NaN``."""
    return json.dumps(
        payload, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)
    ).encode()


@pytest.mark.parametrize("model", [Event, Ledger, Nested, Item])
def test_decoding_json_in_one_call_reads_what_the_long_way_reads(model: type[BaseModel]) -> None:
    """``from_json`` (one message) and ``many_from_json`` (a poll's messages) parse and check
    in one pydantic call; what they accept must read exactly as ``loads_json`` and the model
    read it (what they refuse goes the long way, which names the problem)."""
    codec = dict_codec(model)
    assert codec is not None and codec.from_json is not None and codec.many_from_json is not None
    fast_accepted = refused_both = 0
    texts = [_json_text(p) for p in _payloads(model, 3000, seed=11)]
    for text in texts:
        try:
            slow: Any = validate_payload("p", model, loads_json(text))
        except (PayloadValidationError, ValueError):
            slow = None
        try:
            fast = codec.from_json(text)
        except ValueError:  # ValidationError too: the long way decides
            refused_both += slow is None
            continue
        assert fast == slow, text
        fast_accepted += 1
    assert fast_accepted >= 30 and refused_both >= 30, (fast_accepted, refused_both)
    good = [t for t in texts if _accepts(codec.from_json, t)]
    assert codec.many_from_json(good) == [codec.from_json(t) for t in good]
    with pytest.raises(ValidationError):
        codec.many_from_json([*good[:3], b'{"not": "it"}'])
    with pytest.raises(ValueError, match="NaN"):
        codec.many_from_json([*good[:3], b'{"unknown": NaN}'])


def _accepts(decode: Any, text: bytes) -> bool:
    try:
        decode(text)
    except ValueError:
        return False
    return True


def test_schemas_whose_json_reads_differently_get_no_one_call_decoder() -> None:
    """Fields outside a short list of types keep the long way: ``object`` (NaN would get
    through as a float), timedeltas, decimals (a JSON number is read otherwise)."""
    assert dict_codec(Alert).from_json is not None  # type: ignore[union-attr]
    for model in (Note, Configured):  # meta: dict[str, object]; wait: timedelta
        codec = dict_codec(model)
        assert codec is not None and codec.from_json is None, model
