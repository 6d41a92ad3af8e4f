"""A Feast repo's ``feature_store.yaml`` read as Feast reads it (``${VAR}`` expanded from the
environment, then YAML), without importing Feast: the online and offline connections come from
it, so a foreign repo needs nothing repeated in the registry, and ``validate`` can refuse a
datalayer setting that contradicts it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import yaml

from datalayer.stores.feast.environment import feast_environment

#: Feast's defaults where the yaml leaves a setting out.
_DEFAULT_ONLINE = "sqlite"
_DEFAULT_REDIS = "localhost:6379"


class FeastYamlError(ValueError):
    """The yaml cannot be read, or says something datalayer cannot use; ``key``: where."""

    def __init__(self, message: str, key: str = "yaml") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class RedisServer:
    """The Redis server a connection string names, as redis-py's ``Redis(**kwargs)`` takes it."""

    host: str
    port: int
    options: Mapping[str, Any]

    def same_server(self, other: RedisServer) -> bool:
        def db(server: RedisServer) -> int:
            return int(server.options.get("db", 0) or 0)

        return (self.host, self.port, db(self)) == (other.host, other.port, db(other)) and (
            self.options.get("password") == other.options.get("password")
        )

    def describe(self) -> str:
        return f"{self.host}:{self.port}/{int(self.options.get('db', 0) or 0)}"


@dataclass(frozen=True)
class FeastYaml:
    """One Feast yaml, expanded with the variables datalayer gives it."""

    file: Path
    #: The text after expansion (a ``${VAR}`` left in it was not set).
    text: str
    data: Mapping[str, Any]

    @classmethod
    def read(cls, file: Path, variables: Mapping[str, str]) -> FeastYaml:
        try:
            with feast_environment(variables):
                text = os.path.expandvars(file.read_text(encoding="utf-8"))
            data = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise FeastYamlError(f"cannot read {file}: {exc}") from None
        except yaml.YAMLError as exc:
            raise FeastYamlError(f"{file} is not valid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise FeastYamlError(f"{file} is not a mapping of Feast settings")
        return cls(file, text, data)

    def section(self, name: str) -> Mapping[str, Any]:
        section = self.data.get(name)
        if section is None or isinstance(section, str):
            return {"type": section} if section else {}
        if not isinstance(section, Mapping):
            raise FeastYamlError(f"{self.file}: '{name}' is not a mapping")
        return section

    @property
    def online_type(self) -> str:
        return str(self.section("online_store").get("type") or _DEFAULT_ONLINE)

    @property
    def offline_type(self) -> str:
        return str(self.section("offline_store").get("type") or "dask")

    def redis_server(self) -> RedisServer | None:
        """The online store's Redis, when it is one plain Redis (a cluster or a sentinel
        setup is not: the fast paths leave those to Feast)."""
        online = self.section("online_store")
        if self.online_type != "redis" or online.get("redis_type", "redis") != "redis":
            return None
        return parse_connection_string(str(online.get("connection_string") or _DEFAULT_REDIS))

    def postgres_url(self) -> str | None:
        """The offline store's PostgreSQL as a URL, when the offline store is PostgreSQL."""
        offline = self.section("offline_store")
        if self.offline_type != "postgres":
            return None
        user, password = offline.get("user"), offline.get("password")
        userinfo = ""
        if user:
            userinfo = quote(str(user), safe="")
            if password:
                userinfo += ":" + quote(str(password), safe="")
            userinfo += "@"
        host = offline.get("host") or "localhost"
        port = int(offline.get("port") or 5432)
        database = quote(str(offline.get("database") or ""), safe="")
        sslmode = offline.get("sslmode")
        query = f"?sslmode={quote(str(sslmode), safe='')}" if sslmode else ""
        return f"postgresql://{userinfo}{host}:{port}/{database}{query}"


def connection_string(redis_url: str) -> str:
    """A ``redis://`` URL as Feast's Redis connection string (``host:port,password=,db=``)."""
    url = urlsplit(redis_url)
    parts = [f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"]
    if url.password:
        parts.append(f"password={unquote(url.password)}")
    if url.path.strip("/"):
        parts.append(f"db={url.path.strip('/')}")
    return ",".join(parts)


def parse_connection_string(text: str) -> RedisServer:
    """Feast's Redis connection string (``host:port,db=0,password=...,ssl=true``) read as
    Feast reads it: the first ``host:port`` and every ``name=value`` (JSON where it parses)."""
    nodes = [part for part in text.split(",") if "=" not in part]
    options: dict[str, Any] = {}
    for part in text.split(","):
        if "=" in part:
            name, value = part.split("=", 1)
            try:
                options[name] = json.loads(value)
            except json.JSONDecodeError:
                options[name] = value
    if not nodes:
        raise FeastYamlError(f"Redis connection string '{text}' names no host:port")
    host, _, port = nodes[0].partition(":")
    try:
        return RedisServer(host or "localhost", int(port or 6379), options)
    except ValueError:
        raise FeastYamlError(f"Redis connection string '{text}': bad port '{port}'") from None


def redis_url_server(url: str) -> RedisServer:
    """The server of a ``redis://`` URL, in the connection string's terms."""
    parts = urlsplit(url)
    options: dict[str, Any] = {}
    if parts.password:
        options["password"] = unquote(parts.password)
    if parts.path.strip("/"):
        options["db"] = int(parts.path.strip("/"))
    return RedisServer(parts.hostname or "localhost", parts.port or 6379, options)


def postgres_server(url: str) -> tuple[str, int, str, str]:
    """(host, port, database, user) of a PostgreSQL URL: what two URLs must agree on."""
    parts = urlsplit(url)
    return (
        parts.hostname or "localhost",
        parts.port or 5432,
        unquote(parts.path.lstrip("/")),
        unquote(parts.username or ""),
    )
