"""Generated Feast repos for tests and benchmarks: definitions plus one yaml per profile.

The yaml uses the variables the feast store type sets before it loads a repo
(``DATALAYER_FEAST_PROJECT``, ``DATALAYER_FEAST_REDIS``, ``DATALAYER_FEAST_PG_*``), so one
repo serves any project name and server.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

ONLINE_STORES = {
    "redis": """\
        type: redis
        connection_string: "${DATALAYER_FEAST_REDIS}"
        """,
    "sqlite": """\
        type: sqlite
        path: data/online.db
        """,
}
OFFLINE_STORES = {
    "duckdb": """\
        type: duckdb
        """,
    "postgres": """\
        type: postgres
        host: ${DATALAYER_FEAST_PG_HOST}
        port: ${DATALAYER_FEAST_PG_PORT}
        database: ${DATALAYER_FEAST_PG_DATABASE}
        db_schema: public
        user: ${DATALAYER_FEAST_PG_USER}
        password: "${DATALAYER_FEAST_PG_PASSWORD}"
        sslmode: disable
        """,
}


def feature_store_yaml(
    online: Literal["redis", "sqlite"], offline: Literal["duckdb", "postgres"]
) -> str:
    """A feature_store.yaml with a file registry under ``data/`` and these two stores."""

    def block(text: str) -> str:
        return textwrap.indent(textwrap.dedent(text), "  ")

    return (
        "project: ${DATALAYER_FEAST_PROJECT}\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        f"online_store:\n{block(ONLINE_STORES[online])}"
        f"offline_store:\n{block(OFFLINE_STORES[offline])}"
        "entity_key_serialization_version: 3\n"
    )


def write_feast_repo(
    repo: Path, profiles: Mapping[str, str], definitions: str | None = None
) -> Path:
    """Create ``repo/data``, write ``feature_store.<profile>.yaml`` for each profile and, if
    given, ``definitions.py``; returns ``repo``."""
    (repo / "data").mkdir(parents=True, exist_ok=True)
    if definitions is not None:
        (repo / "definitions.py").write_text(definitions)
    for profile, text in profiles.items():
        (repo / f"feature_store.{profile}.yaml").write_text(text)
    return repo
