"""How a server URL is pointed at a Toxiproxy proxy: only ``host:port`` changes."""

from __future__ import annotations

import pytest

from tests.services.process import ServiceError
from tests.services.toxiproxy import Proxy, Toxiproxy, through, upstream_of

PROXY = Proxy("p", "127.0.0.1:40001", "127.0.0.1:5432", Toxiproxy("http://127.0.0.1:1"))


@pytest.mark.parametrize(
    ("url", "upstream", "proxied"),
    [
        (
            "postgresql://u:secret@127.0.0.1:5432/db?sslmode=disable",
            "127.0.0.1:5432",
            "postgresql://u:secret@127.0.0.1:40001/db?sslmode=disable",
        ),
        ("redis://:secret@localhost:6380/2", "localhost:6380", "redis://:secret@127.0.0.1:40001/2"),
        ("mongodb://127.0.0.1:27018/", "127.0.0.1:27018", "mongodb://127.0.0.1:40001/"),
        ("postgresql://u@db.internal/x", "db.internal:5432", "postgresql://u@127.0.0.1:40001/x"),
        ("127.0.0.1:9092", "127.0.0.1:9092", "127.0.0.1:40001"),
    ],
)
def test_only_host_and_port_change(url: str, upstream: str, proxied: str) -> None:
    assert upstream_of(url) == upstream
    assert through(url, PROXY) == proxied


def test_a_url_of_several_hosts_is_refused() -> None:
    with pytest.raises(ServiceError, match="single host"):
        upstream_of("mongodb://a:1,b:2/?replicaSet=rs")
    with pytest.raises(ServiceError, match="several hosts"):
        through("mongodb://a:1,b:2/", PROXY)


def test_a_proxy_handle_reads_its_port() -> None:
    assert (PROXY.host, PROXY.port) == ("127.0.0.1", 40001)
