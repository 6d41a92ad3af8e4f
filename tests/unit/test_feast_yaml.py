"""A feast store on any repo: which yaml it reads, and the connections it takes from it.

``validate`` (the registry loader) reads the Feast yaml as Feast does, without importing Feast,
and refuses a datalayer setting that contradicts it, naming the registry key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from datalayer.config import load
from datalayer.errors import ConfigError
from datalayer.stores.feast.repo_yaml import FeastYaml, parse_connection_string
from datalayer.stores.feast.store import FeastConfig


def repo(tmp_path: Path, yaml_text: str, name: str = "feature_store.yaml") -> Path:
    folder = tmp_path / "repo"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(textwrap.dedent(yaml_text), encoding="utf-8")
    return folder


def registry(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "datalayer.yaml"
    path.write_text(
        "version: 1\nprofiles:\n  local:\n    feats: " + store + "\npatterns: {}\n",
        encoding="utf-8",
    )
    return path


FOREIGN_REDIS = """\
    project: drivers
    provider: local
    registry: data/registry.db
    online_store:
      type: redis
      connection_string: "127.0.0.1:6390,db=2,password=s3cret"
    offline_store:
      type: file
    entity_key_serialization_version: 3
    """


def test_a_plain_feature_store_yaml_is_used_when_the_profile_has_none(tmp_path: Path) -> None:
    folder = repo(tmp_path, FOREIGN_REDIS)
    config = FeastConfig(type="feast", repo=str(folder))
    assert config.yaml_file(tmp_path) == folder / "feature_store.yaml"
    repo(tmp_path, "project: other\n", "feature_store.local.yaml")
    assert config.yaml_file(tmp_path) == folder / "feature_store.local.yaml"
    explicit = FeastConfig(type="feast", repo=str(folder), yaml="repo/feature_store.yaml")
    assert explicit.yaml_file(tmp_path) == folder / "feature_store.yaml"


def test_the_online_redis_comes_from_the_yaml(tmp_path: Path) -> None:
    found = FeastYaml.read(repo(tmp_path, FOREIGN_REDIS) / "feature_store.yaml", {})
    server = found.redis_server()
    assert server is not None
    assert (server.host, server.port, dict(server.options)) == (
        "127.0.0.1",
        6390,
        {"db": 2, "password": "s3cret"},
    )
    assert found.postgres_url() is None


def test_feast_defaults_and_clusters() -> None:
    assert parse_connection_string("redis-host").port == 6379
    assert parse_connection_string("h:1,ssl=true").options == {"ssl": True}
    with pytest.raises(ValueError, match="no host:port"):
        parse_connection_string("db=0")
    with pytest.raises(ValueError, match="bad port"):
        parse_connection_string("h:port")


def test_the_offline_postgres_comes_from_the_yaml(tmp_path: Path) -> None:
    text = """\
        project: p
        online_store: {type: sqlite, path: data/online.db}
        offline_store:
          type: postgres
          host: db.internal
          port: 5433
          database: feats
          user: "ml user"
          password: "p@ss/word"
          sslmode: disable
        """
    found = FeastYaml.read(repo(tmp_path, text) / "feature_store.yaml", {})
    assert found.postgres_url() == (
        "postgresql://ml%20user:p%40ss%2Fword@db.internal:5433/feats?sslmode=disable"
    )
    assert found.redis_server() is None


def test_validate_refuses_a_redis_url_that_contradicts_the_yaml(tmp_path: Path) -> None:
    folder = repo(tmp_path, FOREIGN_REDIS)
    path = registry(
        tmp_path, f"{{type: feast, repo: {folder}, redis_url: 'redis://127.0.0.1:6391/2'}}"
    )
    with pytest.raises(ConfigError) as info:
        load(path, "local")
    message = str(info.value)
    assert "profiles.local.feats.redis_url" in message
    assert "127.0.0.1:6391/2" in message and "127.0.0.1:6390/2" in message
    same = registry(
        tmp_path, f"{{type: feast, repo: {folder}, redis_url: 'redis://:s3cret@127.0.0.1:6390/2'}}"
    )
    assert load(same, "local").stores["feats"].type == "feast"


def test_validate_refuses_a_redis_url_on_a_yaml_without_redis(tmp_path: Path) -> None:
    folder = repo(tmp_path, "project: p\nonline_store: {type: sqlite}\n")
    path = registry(tmp_path, f"{{type: feast, repo: {folder}, redis_url: 'redis://h:1/0'}}")
    with pytest.raises(ConfigError, match="online store is 'sqlite'"):
        load(path, "local")


def test_validate_refuses_a_postgres_url_that_contradicts_the_yaml(tmp_path: Path) -> None:
    text = """\
        project: p
        offline_store: {type: postgres, host: a.example, port: 5432, database: d, user: u}
        """
    folder = repo(tmp_path, text)
    path = registry(
        tmp_path, f"{{type: feast, repo: {folder}, postgres_url: 'postgresql://u@b.example/d'}}"
    )
    with pytest.raises(ConfigError, match=r"feats\.postgres_url.*b\.example.*a\.example"):
        load(path, "local")


def test_validate_names_the_setting_an_unfilled_variable_needs(tmp_path: Path) -> None:
    folder = repo(
        tmp_path,
        'project: p\nonline_store: {type: redis, connection_string: "${DATALAYER_FEAST_REDIS}"}\n',
    )
    path = registry(tmp_path, f"{{type: feast, repo: {folder}}}")
    with pytest.raises(ConfigError, match=r"DATALAYER_FEAST_REDIS.*set 'redis_url'"):
        load(path, "local")


def test_validate_names_a_missing_or_broken_yaml(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    path = registry(tmp_path, f"{{type: feast, repo: {empty}}}")
    with pytest.raises(
        ConfigError, match=r"feats\.repo.*feature_store\.local\.yaml nor feature_store\.yaml"
    ):
        load(path, "local")
    path = registry(tmp_path, f"{{type: feast, repo: {empty}, yaml: nowhere.yaml}}")
    with pytest.raises(ConfigError, match=r"feats\.yaml.*nowhere\.yaml"):
        load(path, "local")
    folder = repo(tmp_path, "project: [unclosed\n")
    path = registry(tmp_path, f"{{type: feast, repo: {folder}}}")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(path, "local")


def test_a_redis_cluster_is_served_by_feast_and_the_store_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from datalayer.stores.feast.store import FeastStore

    text = """\
        project: p
        online_store: {type: redis, redis_type: redis_cluster, connection_string: "a:1,b:2"}
        """
    folder = repo(tmp_path, text)
    store = FeastConfig(type="feast", repo=str(folder)).connect("feats", tmp_path)
    assert isinstance(store, FeastStore)
    with caplog.at_level(logging.INFO, logger="datalayer.stores.feast.store"):
        assert store.fast_redis() is None and store.fast_redis() is None
    said = [r.getMessage() for r in caplog.records if "go through Feast" in r.getMessage()]
    assert len(said) == 1 and "redis_type 'redis_cluster'" in said[0]


def test_describe_names_the_path_that_serves_online_reads(tmp_path: Path) -> None:
    redis = FeastConfig(type="feast", repo=str(repo(tmp_path, FOREIGN_REDIS)))
    said = redis.serving(tmp_path)
    assert "online reads and materialization: the fast Redis paths (127.0.0.1:6390/2)" in said
    # the yaml names no offline store: Feast's default, the file store, read by the fast join
    assert said.endswith("training sets: the fast join for views over parquet files, else Feast's")
    off = FeastConfig(type="feast", repo=str(tmp_path / "repo"), fast_paths="off")
    assert "Feast's (fast_paths: off)" in off.serving(tmp_path)
    cluster = "project: p\nonline_store: {type: redis, redis_type: redis_cluster}\n"
    folder = repo(tmp_path, cluster, "feature_store.local.yaml")
    postgres = "project: p\noffline_store: {type: postgres, host: h}\n"
    (tmp_path / "pg").mkdir()
    assert "training sets: Feast's (offline store 'postgres'" in FeastConfig(
        type="feast", repo=str(repo(tmp_path / "pg", postgres))
    ).serving(tmp_path)
    assert "Feast's (online store 'redis of redis_type redis_cluster'" in FeastConfig(
        type="feast", repo=str(folder)
    ).serving(tmp_path)
