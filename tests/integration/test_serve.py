"""``datalayer serve`` as a model service meets it: a real server process on loopback, called
over HTTP, its answers compared with the in-process read."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

import datalayer
from datalayer.examples.alerting import sample_accounts, sample_services
from datalayer.examples.features import load_example_features
from tests.example_project import copy_example
from tests.services.toxiproxy import Proxied

T = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
READER = "reader-token-" + "r" * 24
OTHER = "other-token-" + "o" * 24
TOKENS = {"DL_TEST_READER": READER, "DL_TEST_OTHER": OTHER}
SERVE_BLOCK = {
    "tokens": {
        "grouping-model": {"env": "DL_TEST_READER", "patterns": ["service_features"]},
        "other-model": {"env": "DL_TEST_OTHER", "patterns": ["account_features"]},
    },
    "max_entities": 50,
    "max_body_bytes": 4096,
}
ACCOUNT_FEATURES = {
    "category": "feature",
    "store": "features",
    "features": ["account_profile:plan_rank", "account_profile:monthly_spend"],
}


SERVE = [sys.executable, "-m", "datalayer.cli", "serve"]
#: How a server stopped by SIGTERM exits once it has drained.
STOPPED = 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Server:
    """A ``datalayer serve`` process; its stderr (the access log) goes to ``log``."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    tls: ssl.SSLContext | None = None

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        if token is not None:
            request.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.tls) as response:
                return Answer(response.status, dict(response.headers), response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers), exc.read())

    def stop(self) -> int:
        """SIGTERM, then the exit status once it has drained (``STOPPED``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def start(
    registry: Path,
    profile: str,
    *args: str,
    env: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Server:
    """Start ``datalayer serve`` on a free loopback port; ready once ``/health`` answers."""
    port = free_port()
    log = registry.parent / f"serve-{port}.log"
    environment = {**os.environ, **TOKENS, **(env or {})}
    process = subprocess.Popen(
        [*SERVE, "--config", str(registry), "--profile", profile, "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=environment,
    )
    scheme = "https" if tls else "http"
    server = Server(f"{scheme}://127.0.0.1:{port}", process, log, environment, tls)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"datalayer serve exited {process.returncode}:\n{log.read_text()}")
        try:
            if server.call("GET", "/health").status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    pytest.fail(f"datalayer serve did not answer within 90 s:\n{log.read_text()}")


def example(folder: Path, **changes: Any) -> Path:
    """The example registry with a second feature pattern and the ``serve`` block, its
    features written and materialized up to T."""
    registry_file = copy_example(folder)
    registry = yaml.safe_load(registry_file.read_text())
    registry["patterns"]["account_features"] = ACCOUNT_FEATURES
    registry["serve"] = SERVE_BLOCK
    registry.update(changes)
    registry_file.write_text(yaml.safe_dump(registry, sort_keys=False))
    with datalayer.open(registry_file, "local") as dl:
        dl.apply()
        load_example_features(dl, end=T)
        dl.features("service_features").materialize(T - timedelta(days=3), T)
    return registry_file


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    registry = example(tmp_path_factory.mktemp("serve"))
    server = start(registry, "local")
    yield server
    assert server.stop() == STOPPED, server.log.read_text()


def entity_rows() -> list[dict[str, str]]:
    accounts = sample_accounts()
    return [
        {"service_id": s.service_id, "account_id": accounts[i % len(accounts)].account_id}
        for i, s in enumerate(sample_services())
    ] + [{"service_id": "svc-missing", "account_id": "acct-missing"}]


@pytest.mark.parametrize("hours", [0, 1.5, 30])
def test_v1_answers_exactly_what_online_answers(served: Server, hours: float) -> None:
    at = T + timedelta(hours=hours)  # past some views' TTL: those read null, in both
    answer = served.call(
        "POST",
        "/v1/features/service_features",
        {"entities": entity_rows(), "as_of": at.isoformat()},
        token=READER,
    )
    assert answer.status == 200, answer.body
    registry = served.log.parent / "datalayer.yaml"
    with datalayer.open(registry, "local") as dl:
        expected = dl.features("service_features").online(entity_rows(), as_of=at)
    assert answer.json() == {"features": json.loads(json.dumps(expected))}
    values = answer.json()["features"]["service_alert_counts__alerts_1h"]
    if hours == 0:
        assert values[0] is not None and values[-1] is None
    if hours == 30:
        assert values == [None] * len(values)  # the 2 h TTL has passed for every entity


def test_features_narrows_the_read_and_ids_are_echoed(served: Server) -> None:
    answer = served.call(
        "POST",
        "/v1/features/service_features",
        {"entities": [{"account_id": "acct-1"}], "features": ["account_profile:plan_rank"]},
        token=READER,
    )
    assert answer.status == 200, answer.body
    assert list(answer.json()["features"]) == ["account_id", "account_profile__plan_rank"]
    assert len(answer.headers["x-request-id"]) == 32


LONG = "x" * 5000
BAD_REQUESTS = [
    ("unknown pattern", "/v1/features/nope", {}, 404, "pattern", "patterns served: service_"),
    ("not JSON", "/v1/features/service_features", b"{", 400, "body", "not JSON"),
    ("not an object", "/v1/features/service_features", [1], 400, "body", "JSON object"),
    ("no entities", "/v1/features/service_features", {}, 400, "entities", "non-empty list"),
    (
        "unknown key",
        "/v1/features/service_features",
        {"entities": [{}], "entitys": 1},
        400,
        "entitys",
        "unknown key",
    ),
    (
        "missing join key",
        "/v1/features/service_features",
        {"entities": [{"service_id": "svc-01", "account_id": "acct-1"}, {"service_id": "s"}]},
        400,
        "entities[1].account_id",
        "missing",
    ),
    (
        "wrong type",
        "/v1/features/service_features",
        {"entities": [{"service_id": 7, "account_id": "acct-1"}]},
        400,
        "entities[0].service_id",
        "must be a string, not int",
    ),
    (
        "too many entities",
        "/v1/features/service_features",
        {"entities": [{"service_id": "s", "account_id": "a"}] * 51},
        413,
        "entities",
        "at most 50",
    ),
    (
        "body too large",
        "/v1/features/service_features",
        {"entities": [{"service_id": LONG, "account_id": "a"}]},
        413,
        "body",
        "at most 4,096",
    ),
    (
        "naive as_of",
        "/v1/features/service_features",
        {"entities": [{"service_id": "s", "account_id": "a"}], "as_of": "2026-11-20T12:00:00"},
        400,
        "as_of",
        "time zone",
    ),
    (
        "unknown feature",
        "/v1/features/service_features",
        {"entities": [{"service_id": "s", "account_id": "a"}], "features": ["v:nope"]},
        400,
        "features",
        "no feature ['v:nope']",
    ),
    (
        "repeated feature",
        "/v1/features/service_features",
        {"entities": [{"account_id": "a"}], "features": ["account_profile:plan_rank"] * 2},
        400,
        "features",
        "twice",
    ),
    (
        "as_of finer than a microsecond",
        "/v1/features/service_features",
        {
            "entities": [{"service_id": "s", "account_id": "a"}],
            "as_of": "2026-11-20T12:00:00.1234567Z",
        },
        400,
        "as_of",
        "finer than a microsecond",
    ),
    (
        "as_of out of range",
        "/v1/features/service_features",
        {
            "entities": [{"service_id": "s", "account_id": "a"}],
            "as_of": "0001-01-01T00:00:00+14:00",
        },
        400,
        "as_of",
        "out of range",
    ),
    (
        "a filter for a key",
        "/v1/features/service_features",
        {"entities": [{"service_id": {"$gt": ""}, "account_id": "a"}]},
        400,
        "entities[0].service_id",
        "must be a string, not dict",
    ),
    ("unknown endpoint", "/v2/anything", {}, 404, "path", "endpoints:"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "field", "says"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_a_bad_request_is_a_4xx_naming_the_field(
    served: Server, path: str, body: Any, status: int, field: str | None, says: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    answer = served.call("POST", path, None if raw else body, token=READER, raw=raw)
    assert answer.status == status, answer.body
    error = answer.json()["error"]
    assert error["status"] == status and says in error["message"], error
    assert error.get("field") == field, error
    assert b"Traceback" not in answer.body


def test_tokens_decide_who_reads_what(served: Server) -> None:
    path, body = "/v1/features/service_features", {"entities": [{"account_id": "acct-1"}]}
    body["features"] = ["account_profile:plan_rank"]
    none = served.call("POST", path, body)
    assert none.status == 401 and none.headers["www-authenticate"].startswith("Bearer")
    assert served.call("POST", path, body, token=READER[:-1] + "?").status == 401
    assert served.call("POST", path, body, token=READER + "x").status == 401
    forbidden = served.call("POST", path, body, token=OTHER)
    assert forbidden.status == 403
    assert (
        "'other-model' may not read pattern 'service_features'"
        in forbidden.json()["error"]["message"]
    )
    assert served.call("POST", path, body, token=READER).status == 200
    # an unknown pattern names only the patterns this token may see
    unknown = served.call("POST", "/v1/features/x", body, token=OTHER).json()["error"]["message"]
    assert "account_features" in unknown and "service_features" not in unknown
    # a probe needs no token, and says nothing about features
    assert served.call("GET", "/health").json() == {"status": "ok"}


def test_ready_metrics_and_openapi(served: Server) -> None:
    ready = served.call("GET", "/ready")
    assert ready.status == 200 and ready.json() == {"ready": True, "stores": {"features": "ok"}}
    for _ in range(3):
        served.call(
            "POST",
            "/v1/features/service_features",
            {"entities": [{"service_id": "svc-01", "account_id": "acct-1"}] * 4},
            token=READER,
        )
    text = served.call("GET", "/metrics").body.decode()
    ok = 'pattern="service_features",route="/v1/features/{pattern}",status="200"'
    count = [
        line for line in text.splitlines() if line.startswith("datalayer_serve_requests_total")
    ]
    assert any(ok in line and float(line.split()[-1]) >= 3 for line in count), count
    assert (
        'datalayer_serve_entities_per_request_bucket{le="5.0",pattern="service_features"}' in text
    )
    assert "datalayer_serve_request_seconds_bucket{" in text
    assert 'datalayer_store_circuit_state{store="features"} 0.0' in text
    spec = served.call("GET", "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    parameter = spec["paths"]["/v1/features/{pattern}"]["post"]["parameters"][0]
    assert parameter["schema"]["enum"] == ["service_features", "account_features"]
    assert served.call("DELETE", "/health").status == 405


def test_the_access_log_has_a_line_per_request_and_no_secret(served: Server) -> None:
    served.call("POST", "/v1/features/service_features", {"entities": [{}]}, token=READER)
    served.call("GET", "/health", token=OTHER)
    time.sleep(0.2)
    log = served.log.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and {"request_id", "route", "pattern", "status", "ms", "caller"} <= set(lines[0])
    assert any(line["caller"] == "grouping-model" and line["status"] == 400 for line in lines)
    metrics = served.call("GET", "/metrics").body.decode()
    for secret in (READER, OTHER, READER[:20]):
        assert secret not in log and secret not in metrics


def test_graceful_shutdown_answers_the_requests_in_flight(tmp_path: Path) -> None:
    registry = example(tmp_path, serve={"max_entities": 5000, "max_body_bytes": 1 << 22})
    server = start(registry, "local")
    answers: list[Answer] = []
    rows = [{"service_id": f"svc-{i}", "account_id": "acct-1"} for i in range(5000)]

    def read() -> None:
        answers.append(server.call("POST", "/v1/features/service_features", {"entities": rows}))

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # the requests are in: the first is being read, the others wait for it
    assert server.stop() == STOPPED, server.log.read_text()
    for thread in threads:
        thread.join(timeout=60)
    assert [a.status for a in answers] == [200, 200, 200]
    assert all(len(a.json()["features"]["service_id"]) == 5000 for a in answers)
    with pytest.raises(OSError):
        server.call("GET", "/health")


def test_two_workers_share_one_count_of_requests(tmp_path: Path) -> None:
    server = start(example(tmp_path, serve={}), "local", "--workers", "2")
    try:
        for _ in range(20):
            answer = server.call(
                "POST", "/v1/features/account_features", {"entities": [{"account_id": "acct-1"}]}
            )
            assert answer.status == 200, answer.body
        text = server.call("GET", "/metrics").body.decode()
        line = next(
            line
            for line in text.splitlines()
            if line.startswith("datalayer_serve_requests_total{")
            and 'pattern="account_features"' in line
        )
        assert float(line.split()[-1]) == 20
    finally:
        assert server.stop() == STOPPED, server.log.read_text()


def run_serve(registry: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, "--config", str(registry), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_an_open_server_off_loopback_and_an_unset_token_are_refused(tmp_path: Path) -> None:
    registry_file = copy_example(tmp_path)
    open_server = run_serve(registry_file, "--host", "10.1.2.3", "--port", "1", env={})
    assert open_server.returncode == 1
    assert "refusing to serve on 10.1.2.3 without tokens" in " ".join(open_server.stderr.split())
    registry = yaml.safe_load(registry_file.read_text())
    registry["patterns"]["account_features"] = ACCOUNT_FEATURES
    registry["serve"] = SERVE_BLOCK
    registry_file.write_text(yaml.safe_dump(registry))
    unset = run_serve(registry_file, env={"DL_TEST_READER": "short"})
    message = " ".join(unset.stderr.split())
    assert unset.returncode == 1
    assert "DL_TEST_READER (token 'grouping-model') is shorter than 16" in message
    assert "DL_TEST_OTHER (token 'other-model') is not set" in message
    assert "short" not in message.replace("shorter", "")


def test_a_store_that_does_not_answer_is_a_503_and_the_server_recovers(
    tmp_path: Path, postgres_database: str, redis_proxy: Proxied, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis behind a proxy that is taken down: reads are 503s with Retry-After (never a
    traceback), /ready says which store, /health still answers; back up, reads succeed."""
    example_file = copy_example(tmp_path)
    example = yaml.safe_load(example_file.read_text())
    features = {
        **example["profiles"]["services"]["features"],
        "project": f"s{uuid.uuid4().hex[:10]}",
    }
    registry = {
        "version": 1,
        "profiles": {"services": {"features": features}},
        "patterns": {"service_features": example["patterns"]["service_features"]},
        "serve": {},
    }
    example_file.write_text(yaml.safe_dump(registry, sort_keys=False))
    env = {"DATALAYER_POSTGRES_URL": postgres_database, "DATALAYER_REDIS_URL": redis_proxy.url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with datalayer.open(example_file, "services") as dl:
        dl.apply()
        load_example_features(dl, end=T)
        dl.features("service_features").materialize(T - timedelta(days=3), T)
    server = start(example_file, "services", env=env)
    body = {"entities": [{"service_id": "svc-01", "account_id": "acct-1"}], "as_of": T.isoformat()}
    path = "/v1/features/service_features"
    try:
        first = server.call("POST", path, body)
        assert first.status == 200, first.body
        assert first.json()["features"]["service_alert_counts__alerts_1h"][0] is not None
        redis_proxy.proxy.disable()
        failed = server.call("POST", path, body)
        assert failed.status == 503, failed.body
        assert failed.headers["retry-after"] == "1"
        assert "retry in 1s" in failed.json()["error"]["message"]
        assert b"Traceback" not in failed.body
        ready = server.call("GET", "/ready")
        assert ready.status == 503 and "features unavailable" in ready.json()["error"]["message"]
        assert server.call("GET", "/health").status == 200
        metrics = server.call("GET", "/metrics").body.decode()
        assert 'datalayer_serve_store_errors_total{kind="unavailable",store="features"}' in metrics
        redis_proxy.proxy.enable()
        deadline = time.monotonic() + 60  # the circuit, if it opened, lets a probe through
        while (again := server.call("POST", path, body)).status != 200:
            assert time.monotonic() < deadline, again.body
            time.sleep(0.5)
        assert again.json() == first.json()
    finally:
        assert server.stop() == STOPPED, server.log.read_text()


def test_tls_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    trusted = ssl.create_default_context(cafile=str(cert))
    registry = example(tmp_path, serve={})
    server = start(registry, "local", "--certfile", str(cert), "--keyfile", str(key), tls=trusted)
    try:
        answer = server.call(
            "POST", "/v1/features/account_features", {"entities": [{"account_id": "acct-1"}]}
        )
        assert answer.status == 200 and answer.json()["features"]["account_id"] == ["acct-1"]
        # a client that does not trust the certificate does not get through
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            Server(server.url, server.process, server.log, tls=ssl.create_default_context()).call(
                "GET", "/health"
            )
    finally:
        assert server.stop() == STOPPED, server.log.read_text()
    half = run_serve(registry, "--certfile", str(cert), env={})
    assert half.returncode == 1 and "--certfile and --keyfile go together" in half.stderr
