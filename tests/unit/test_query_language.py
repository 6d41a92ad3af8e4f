"""The filter and sort language shared by the transactional and document contracts, under
hostile input: every refusal is a QueryError, before any store is asked."""

from __future__ import annotations

from typing import Any

import pytest

from datalayer.errors import QueryError
from datalayer.query import parse_filter, parse_sort


@pytest.mark.parametrize("sort", ["--v", "v\n", "-v\n", ["v", "--w"]])
def test_a_sort_names_one_field_with_at_most_one_dash(sort: Any) -> None:
    with pytest.raises(QueryError):
        parse_sort(sort)


@pytest.mark.parametrize("where", [{"v\n": 1}, {"a.b\n": {"$gt": 1}}])
def test_a_field_path_is_checked_whole(where: Any) -> None:
    with pytest.raises(QueryError, match="not a valid field path"):
        parse_filter(where)
