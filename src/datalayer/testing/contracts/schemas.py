"""Payload schemas of the contract suites, e.g. ``datalayer.testing.contracts.schemas:Item``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field


class Item(BaseModel):
    item_id: str = Field(min_length=1)
    name: str
    price: float = Field(ge=0)
    quantity: int = 0
    active: bool = True
    tier: Literal["a", "b", "c"] = "a"
    created_at: datetime
    discontinued_at: datetime | None = None
    attributes: dict[str, str] = Field(default_factory=dict)


class Ledger(BaseModel):
    account_id: str
    entry_no: int
    amount: float


class Event(BaseModel):
    event_id: str
    device: str
    seq: int
    payload: str = ""


class Note(BaseModel):
    note_id: str
    author: str
    score: int = Field(ge=0)
    tags: list[str] = Field(default_factory=list)
    meta: dict[str, object] = Field(default_factory=dict)
    created_at: datetime | None = None


class Window(BaseModel):
    incident_id: str
    hits: int = Field(ge=0)


class Amount(BaseModel):
    """Decimals three ways: with no declared precision, declared by ``Field``, and by
    ``Annotated`` metadata (what ``condecimal`` builds)."""

    amount_id: str
    value: Decimal
    price: Decimal = Field(default=Decimal("0.00"), max_digits=12, decimal_places=2)
    rate: Annotated[Decimal, Field(max_digits=30, decimal_places=20)] | None = None
