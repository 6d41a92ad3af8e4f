"""Shopify's Toxiproxy, a TCP proxy that injects faults, and a small client of its HTTP API.

The server is built with ``go install`` of the pinned module version through the Go module
proxy into the cache (``~/.cache/datalayer``), keyed by the version and the build flags, and
runs as a local process on 127.0.0.1 (never a container: it must reach the other servers on
this machine and be reached at the ports it opens here).

A proxy listens on a free 127.0.0.1 port and forwards to an upstream ``host:port``; toxics
(latency, bandwidth, reset_peer, timeout, slow_close) act on its live and new connections, and
disabling it refuses new connections and closes the open ones. A ``Toxiproxy`` client owns the
proxies it created: ``reset`` and ``delete_proxies`` touch only those, so the test sessions of
several checkouts can share one server; ``reset_server`` is the API's global reset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from tests.services.base import LocalServer, Running
from tests.services.kafka import KafkaServer
from tests.services.process import ServiceError, free_port, run, spawn, wait_ready

VERSION = "v2.12.0"
MODULE = "github.com/Shopify/toxiproxy/v2"
BINARY = "toxiproxy-server"
BUILD_FLAGS = ("-trimpath", f"-ldflags=-s -w -X {MODULE}.Version={VERSION}")

Stream = Literal["downstream", "upstream"]

#: An upstream nothing listens on (TCP port 1 on loopback): a proxy's target before it has one.
NOWHERE = "127.0.0.1:1"


def build_hash() -> str:
    """Changes with the version or the build flags, so a stale binary is not reused."""
    return hashlib.sha256("\0".join((MODULE, VERSION, *BUILD_FLAGS)).encode()).hexdigest()[:12]


class ToxiproxyServer(LocalServer):
    """One toxiproxy-server; its API at ``url`` (``http://127.0.0.1:PORT``)."""

    name: ClassVar[str] = "toxiproxy"
    env_var: ClassVar[str] = "DATALAYER_TOXIPROXY_URL"
    start_timeout: ClassVar[float] = 20.0

    def __init__(self, state_dir: Path, cache_dir: Path) -> None:
        super().__init__(state_dir, cache_dir)
        self.binary = self.cache_dir / f"toxiproxy-{VERSION}-{build_hash()}" / BINARY
        self.port: int | None = None

    def install(self) -> None:
        """``go install`` once per version and flags (about 20 s with an empty module cache)."""
        if self.binary.exists():
            return
        if shutil.which("go") is None:
            raise ServiceError("toxiproxy: building it needs Go >= 1.23 ('go' is not on PATH)")
        gobin = self.binary.parent / f".gobin-{os.getpid()}"
        gobin.mkdir(parents=True, exist_ok=True)
        try:
            run(
                ["go", "install", *BUILD_FLAGS, f"{MODULE}/cmd/server@{VERSION}"],
                what=f"toxiproxy: go install of {MODULE}/cmd/server@{VERSION}",
                timeout=900,
                env={"GOBIN": str(gobin), "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"},
            )
            (gobin / "server").replace(self.binary)  # atomic: a half build is never cached
        finally:
            shutil.rmtree(gobin, ignore_errors=True)

    def start(self) -> Running:
        if self.process is not None and self.process.poll() is None:
            return self.running(self.url)
        if self.port is None:
            self.port = free_port()
        self.process = spawn(
            [str(self.binary), "-host", "127.0.0.1", "-port", str(self.port)],
            self.log,
            env={"LOG_LEVEL": "info"},
        )
        wait_ready(
            self.name,
            lambda: self.check(self.url),
            timeout=self.start_timeout,
            log=self.log,
            process=self.process,
        )
        return self.running(self.url)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def check(url: str) -> None:
        Toxiproxy(url, timeout=2).version()


class ToxiproxyError(ServiceError):
    """A call to the Toxiproxy API failed; the message names the call, the status and the reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Toxic:
    """A toxic on a proxy, as the API reports it."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: Mapping[str, int]
    proxy: Proxy = field(repr=False, compare=False)

    def remove(self) -> None:
        self.proxy.remove_toxic(self.name)


@dataclass(frozen=True)
class Proxy:
    """One proxy: ``listen`` (``127.0.0.1:PORT``) forwards to ``upstream`` through its toxics.

    The fault methods return the ``Toxic`` they added; ``name=`` (default ``TYPE_STREAM``) lets
    one proxy carry two toxics of a type, one per stream. ``stream="downstream"`` (the default)
    acts on server-to-client bytes, ``"upstream"`` on client-to-server bytes.
    """

    name: str
    listen: str
    upstream: str
    client: Toxiproxy = field(repr=False, compare=False)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    # --- faults -------------------------------------------------------------------------

    def latency(
        self,
        ms: int,
        *,
        jitter_ms: int = 0,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
    ) -> Toxic:
        """Delay every chunk of data by ``ms`` (+/- ``jitter_ms``)."""
        attributes = {"latency": ms, "jitter": jitter_ms}
        return self.add_toxic("latency", attributes, stream=stream, toxicity=toxicity, name=name)

    def bandwidth(
        self, kb_per_s: int, *, stream: Stream = "downstream", name: str | None = None
    ) -> Toxic:
        """Cap the throughput at ``kb_per_s`` kilobytes a second."""
        return self.add_toxic("bandwidth", {"rate": kb_per_s}, stream=stream, name=name)

    def reset_peer(
        self, *, after_ms: int = 0, stream: Stream = "downstream", name: str | None = None
    ) -> Toxic:
        """Reset (TCP RST) each connection ``after_ms`` once data flows on ``stream``: open
        connections fail on their next round trip, new ones on their first."""
        return self.add_toxic("reset_peer", {"timeout": after_ms}, stream=stream, name=name)

    def timeout(
        self, *, close_after_ms: int = 0, stream: Stream = "downstream", name: str | None = None
    ) -> Toxic:
        """A black hole: data on ``stream`` is dropped; the connection is closed after
        ``close_after_ms``, or never with 0 (the client waits out its own timeout)."""
        return self.add_toxic("timeout", {"timeout": close_after_ms}, stream=stream, name=name)

    def slow_close(
        self, delay_ms: int, *, stream: Stream = "downstream", name: str | None = None
    ) -> Toxic:
        """Hold each connection's close back for ``delay_ms``."""
        return self.add_toxic("slow_close", {"delay": delay_ms}, stream=stream, name=name)

    def add_toxic(
        self,
        type: str,
        attributes: Mapping[str, int],
        *,
        stream: Stream = "downstream",
        toxicity: float = 1.0,
        name: str | None = None,
    ) -> Toxic:
        """Any toxic type the server knows (also ``slicer``, ``limit_data``)."""
        body = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": dict(attributes),
        }
        return self._toxic(self.client.call("POST", f"/proxies/{self._quoted}/toxics", body))

    def toxics(self) -> list[Toxic]:
        return [self._toxic(t) for t in self.client.call("GET", f"/proxies/{self._quoted}/toxics")]

    def remove_toxic(self, name: str) -> None:
        self.client.call("DELETE", f"/proxies/{self._quoted}/toxics/{_quote(name)}")

    @contextlib.contextmanager
    def toxic(self, added: Toxic) -> Iterator[Toxic]:
        """``with proxy.toxic(proxy.latency(300)):`` removes the toxic on leaving the block."""
        try:
            yield added
        finally:
            added.remove()

    # --- up and down --------------------------------------------------------------------

    def disable(self) -> None:
        """Take the proxy down: its port refuses connections and open connections are closed."""
        self._update({"enabled": False})

    def enable(self) -> None:
        """Bring it back on the same port (nothing else may have taken the port meanwhile)."""
        self._update({"enabled": True})

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """``with proxy.down():`` the server is unreachable inside the block."""
        self.disable()
        try:
            yield
        finally:
            self.enable()

    @property
    def enabled(self) -> bool:
        return bool(self.client.call("GET", f"/proxies/{self._quoted}")["enabled"])

    def reset(self) -> None:
        """Remove its toxics and enable it."""
        for toxic in self.toxics():
            toxic.remove()
        self.enable()

    def retarget(self, upstream: str) -> Proxy:
        """The same proxy (same port) forwarding to another ``host:port``; open connections
        are dropped. Returns the updated handle."""
        data = self.client.call("PATCH", f"/proxies/{self._quoted}", {"upstream": upstream})
        proxy = self.client._proxy(data)
        if self.name in self.client.owned:
            self.client.owned[self.name] = proxy
        return proxy

    def delete(self) -> None:
        self.client.delete_proxy(self.name)

    # --- internals ----------------------------------------------------------------------

    @property
    def _quoted(self) -> str:
        return _quote(self.name)

    def _update(self, fields: dict[str, Any]) -> None:
        self.client.call("PATCH", f"/proxies/{self._quoted}", fields)

    def _toxic(self, data: Mapping[str, Any]) -> Toxic:
        return Toxic(
            name=data["name"],
            type=data["type"],
            stream=data["stream"],
            toxicity=float(data["toxicity"]),
            attributes=dict(data.get("attributes") or {}),
            proxy=self,
        )


class Toxiproxy:
    """Client of one toxiproxy-server's HTTP API at ``url`` (``http://127.0.0.1:PORT``).

    Proxy names get ``prefix`` in front (unique per test in the fixture), and the proxies this
    client created are its own: ``reset`` and ``delete_proxies`` act on those alone.
    """

    def __init__(self, url: str, *, prefix: str = "", timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.prefix = prefix
        self.timeout = timeout
        self.owned: dict[str, Proxy] = {}

    def version(self) -> str:
        return str(self.call("GET", "/version")["version"])

    def create_proxy(self, name: str, upstream: str, *, listen: str = "127.0.0.1:0") -> Proxy:
        """A proxy named ``prefix + name`` from ``listen`` (a free port by default) to
        ``upstream`` (``host:port``); enabled, without toxics."""
        body = {"name": self.prefix + name, "listen": listen, "upstream": upstream}
        proxy = self._proxy(self.call("POST", "/proxies", body))
        self.owned[proxy.name] = proxy
        return proxy

    def proxy(self, name: str) -> Proxy:
        """A proxy on the server by its full name (prefix included)."""
        return self._proxy(self.call("GET", f"/proxies/{_quote(name)}"))

    def proxies(self) -> list[Proxy]:
        """Every proxy on the server, this client's or not."""
        return [self._proxy(p) for p in self.call("GET", "/proxies").values()]

    def delete_proxy(self, name: str) -> None:
        """Delete a proxy by its full name; its port closes and so do its connections."""
        self.call("DELETE", f"/proxies/{_quote(name)}")
        self.owned.pop(name, None)

    def reset(self) -> None:
        """Remove every toxic of this client's proxies and enable them."""
        for proxy in list(self.owned.values()):
            proxy.reset()

    def delete_proxies(self) -> None:
        """Delete this client's proxies (those already gone are skipped)."""
        for name in list(self.owned):
            try:
                self.delete_proxy(name)
            except ToxiproxyError as exc:
                if exc.status != 404:
                    raise
                self.owned.pop(name, None)

    def reset_server(self) -> None:
        """The API's ``POST /reset``: every proxy on the server enabled, every toxic removed."""
        self.call("POST", "/reset")

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """One API request; JSON in and out (``None`` for an empty answer)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace").strip()
            with contextlib.suppress(ValueError, TypeError, KeyError):
                detail = json.loads(detail)["error"]
            raise ToxiproxyError(
                f"toxiproxy at {self.url}: {method} {path} answered {exc.code}: {detail}", exc.code
            ) from exc
        except OSError as exc:
            raise ToxiproxyError(f"toxiproxy at {self.url}: {method} {path} failed: {exc}") from exc
        return json.loads(payload) if payload.strip() else None

    def _proxy(self, data: Mapping[str, Any]) -> Proxy:
        return Proxy(
            name=data["name"], listen=data["listen"], upstream=data["upstream"], client=self
        )


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def through(url: str, proxy: Proxy) -> str:
    """``url`` with its ``host:port`` replaced by the proxy's, user, password, path and query
    kept: ``postgresql://u:p@127.0.0.1:5432/db`` -> ``postgresql://u:p@127.0.0.1:PROXY/db``.
    A bare ``host:port`` (a Kafka bootstrap) becomes the proxy's ``listen``."""
    if "://" not in url:
        return proxy.listen
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if "," in hostport:
        raise ServiceError(f"toxiproxy: {parts.scheme} URL names several hosts ({hostport})")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}{at}{proxy.listen}"))


DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "mongodb": 27017}


def upstream_of(url: str) -> str:
    """The ``host:port`` a server URL (or a bare ``host:port``) points at, for a proxy."""
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if "," in parts.netloc:
        raise ServiceError(f"toxiproxy: no single host and port in a {parts.scheme} URL")
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    if not parts.hostname or port is None:
        raise ServiceError(f"toxiproxy: no single host and port in a {parts.scheme} URL")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


@dataclass(frozen=True)
class Proxied:
    """A server seen through a proxy: ``url`` goes through ``proxy`` (and its faults),
    ``direct_url`` reaches the server itself (for set-up and checks that must not fail)."""

    proxy: Proxy
    url: str
    direct_url: str

    def through(self, url: str) -> str:
        """Another URL of the same server (another database, say) through the same proxy."""
        return through(url, self.proxy)


def proxy_to(client: Toxiproxy, name: str, url: str) -> Proxied:
    """A new proxy of ``client`` in front of the server at ``url``."""
    proxy = client.create_proxy(name, upstream_of(url))
    return Proxied(proxy=proxy, url=through(url, proxy), direct_url=url)


@dataclass(frozen=True)
class ProxiedKafka(Proxied):
    """A private single-node Kafka whose advertised listener is the proxy: clients bootstrapped
    at ``url`` fetch metadata naming the proxy, so every request stays behind its faults.
    ``direct_url`` is a listener that advertises itself (set-up and checks, never faulted);
    ``server`` can be ``stop()``-ped and ``restart()``-ed on the same ports."""

    server: KafkaServer


def start_kafka_behind(client: Toxiproxy, state_dir: Path, cache_dir: Path) -> ProxiedKafka:
    """Bind the proxy first (so no other process can take its port), start a broker that
    advertises it, then point the proxy at the broker's client listener."""
    proxy = client.create_proxy("kafka", upstream=NOWHERE)
    server = KafkaServer(state_dir, cache_dir, advertised_port=proxy.port)
    server.install()
    server.start()
    try:
        proxy = proxy.retarget(f"127.0.0.1:{server.port}")
    except BaseException:
        server.stop()
        raise
    return ProxiedKafka(
        proxy=proxy, url=server.bootstrap, direct_url=server.direct_bootstrap, server=server
    )
