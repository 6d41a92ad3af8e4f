"""The filter and sort language shared by the transactional and document contracts, under
hostile input: every refusal is a QueryError, before any store is asked."""

from __future__ import annotations

from typing import Any

import pytest

from datalayer.errors import MAX_MESSAGE, DataLayerError, QueryError
from datalayer.query import parse_filter, parse_sort


@pytest.mark.parametrize("sort", ["--v", "v\n", "-v\n", ["v", "--w"]])
def test_a_sort_names_one_field_with_at_most_one_dash(sort: Any) -> None:
    with pytest.raises(QueryError):
        parse_sort(sort)


@pytest.mark.parametrize("where", [{"v\n": 1}, {"a.b\n": {"$gt": 1}}])
def test_a_field_path_is_checked_whole(where: Any) -> None:
    with pytest.raises(QueryError, match="not a valid field path"):
        parse_filter(where)


@pytest.mark.parametrize(
    "call",
    [
        lambda: parse_sort("v" * 2**20 + "; DROP"),
        lambda: parse_filter({"\u00e9" * 2**19: 1}),
        lambda: parse_filter({"v": {"$in": "x" * 2**20}}),
        lambda: parse_filter({"a\ud800": 1}),
        lambda: parse_filter({"v": {"$regex" + "\udfff" * 10: 1}}),
    ],
)
def test_a_message_quoting_hostile_input_stays_short_and_printable(call: Any) -> None:
    """A 1 MiB field name made a 1 MiB message, and a lone surrogate one no terminal or log
    encoder could write."""
    with pytest.raises(QueryError) as caught:
        call()
    message = str(caught.value)
    assert len(message) < 500
    message.encode()


def test_every_error_message_is_bounded_and_printable() -> None:
    message = str(DataLayerError("head " + "x\ud800" * 2**20 + " tail"))
    assert len(message) < MAX_MESSAGE + 200
    assert message.startswith("head x\\ud800") and message.endswith("\\ud800 tail")
    assert "characters cut" in message
    message.encode()
