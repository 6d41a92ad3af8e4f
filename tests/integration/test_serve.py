"""``datalayer serve`` as a model service meets it: a real server process on loopback, called
over HTTP, its answers compared with the in-process read."""

from __future__ import annotations

import asyncio
import http.client
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
from datalayer.examples.features import load_example_features
from tests.example_project import copy_example, example_entity_rows, materialized
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
    return healthy(server, "datalayer serve", 90)


def healthy(server: Server, what: str, seconds: float) -> Server:
    """``server`` once ``/health`` answers 200; the test fails with its log otherwise."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            code = server.process.returncode
            pytest.fail(f"{what} exited {code}:\n{server.log.read_text()}")
        try:
            if server.call("GET", "/health").status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.stop()
    pytest.fail(f"{what} did not answer within {seconds:g} s:\n{server.log.read_text()}")


def example(folder: Path, **changes: Any) -> Path:
    """The example registry with a second feature pattern and the ``serve`` block, its
    features written and materialized up to T."""
    registry_file = copy_example(folder)
    registry = yaml.safe_load(registry_file.read_text())
    registry["patterns"]["account_features"] = ACCOUNT_FEATURES
    registry["serve"] = SERVE_BLOCK
    registry.update(changes)
    registry_file.write_text(yaml.safe_dump(registry, sort_keys=False))
    return materialized(registry_file, T)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    registry = example(tmp_path_factory.mktemp("serve"))
    server = start(registry, "local")
    yield server
    assert server.stop() == STOPPED, server.log.read_text()


@pytest.mark.parametrize("hours", [0, 1.5, 30])
def test_v1_answers_exactly_what_online_answers(served: Server, hours: float) -> None:
    at = T + timedelta(hours=hours)  # past some views' TTL: those read null, in both
    answer = served.call(
        "POST",
        "/v1/features/service_features",
        {"entities": example_entity_rows(), "as_of": at.isoformat()},
        token=READER,
    )
    assert answer.status == 200, answer.body
    registry = served.log.parent / "datalayer.yaml"
    with datalayer.open(registry, "local") as dl:
        expected = dl.features("service_features").online(example_entity_rows(), as_of=at)
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
    assert parameter["schema"]["enum"] == ["service_features", "model_features", "account_features"]
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
    rows = [{"service_id": f"svc-{i}", "account_id": "acct-1"} for i in range(5000)]
    body = json.dumps({"entities": rows}).encode()
    host, port = server.url.removeprefix("http://").split(":")
    # Three requests the server has begun: headers and half the body sent, the rest held back.
    requests = [http.client.HTTPConnection(host, int(port), timeout=60) for _ in range(3)]
    for request in requests:
        request.putrequest("POST", "/v1/features/service_features")
        request.putheader("content-type", "application/json")
        request.putheader("content-length", str(len(body)))
        request.endheaders()
        request.send(body[: len(body) // 2])
    # Their bytes reached the server before this request was sent, so once it is answered the
    # server has read their headers: they are in flight, not waiting in the listen queue.
    assert server.call("GET", "/health").status == 200
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # the server is draining: no new connection, the three still open
    with pytest.raises(OSError):
        server.call("GET", "/health")
    for request in requests:
        request.send(body[len(body) // 2 :])
    answers = [request.getresponse() for request in requests]
    assert [a.status for a in answers] == [200, 200, 200]
    assert all(len(json.loads(a.read())["features"]["service_id"]) == 5000 for a in answers)
    assert server.process.wait(timeout=60) == STOPPED, server.log.read_text()


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


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server over feature data that ends now (Feast's server reads at now, so values are
    fresh enough to compare), without tokens."""
    folder = tmp_path_factory.mktemp("serve-now")
    registry_file = copy_example(folder)
    registry = yaml.safe_load(registry_file.read_text())
    registry["patterns"]["account_features"] = ACCOUNT_FEATURES
    registry["serve"] = {
        "tokens": {
            "pusher": {"env": "DL_TEST_READER", "patterns": ["*"], "scopes": ["read", "push"]}
        }
    }
    registry_file.write_text(yaml.safe_dump(registry, sort_keys=False))
    with datalayer.open(registry_file, "local") as dl:
        dl.apply()
        end = load_example_features(dl)
        dl.features("service_features").materialize(end - timedelta(days=3), end)
    server = start(registry_file, "local")
    yield server
    assert server.stop() == STOPPED, server.log.read_text()


def feast_serve(repo: Path) -> Server:
    """Feast's own feature server on the same repository (its yaml, its registry, its
    online store), started the way its CLI starts it."""
    port = free_port()
    log = repo / f"feast-serve-{port}.log"
    env = {**os.environ, "DATALAYER_FEAST_PROJECT": "alerting"}
    process = subprocess.Popen(
        ["feast", "-f", "feature_store.local.yaml", "serve", "--port", str(port)],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env=env,
    )
    return healthy(Server(f"http://127.0.0.1:{port}", process, log), "feast serve", 120)


def by_name(answer: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    names = answer["metadata"]["feature_names"]
    return dict(zip(names, answer["results"], strict=True))


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_get_online_features_answers_as_feast_s_own_server(
    fresh: Server, full_feature_names: bool
) -> None:
    """The same request to both servers: the same columns, values, statuses and event times,
    but for values past their view's TTL, which Feast serves as PRESENT and we as null with
    OUTSIDE_MAX_AGE (the README's documented difference)."""
    feast = feast_serve(fresh.log.parent / "feature_repo")
    body = {
        "feature_service": "alert_grouping_v1",
        "entities": {
            "service_id": ["svc-01", "svc-02", "svc-nope"],
            "account_id": ["acct-1", "acct-2", "acct-nope"],
        },
        "full_feature_names": full_feature_names,
    }
    try:
        theirs = feast.call("POST", "/get-online-features", body)
    finally:
        feast.stop()
    ours = fresh.call("POST", "/get-online-features", body, token=READER)
    assert theirs.status == 200 and ours.status == 200, (theirs.body, ours.body)
    expected, got = by_name(theirs.json()), by_name(ours.json())
    assert sorted(got) == sorted(expected)
    expired = 0
    for name, column in expected.items():
        for i, status in enumerate(got[name]["statuses"]):
            mine = {key: got[name][key][i] for key in column}
            feast_row = {key: column[key][i] for key in column}
            if status == "OUTSIDE_MAX_AGE":
                expired += 1
                assert feast_row["statuses"] == "PRESENT" and mine["values"] is None
                assert mine["event_timestamps"] == feast_row["event_timestamps"]
            else:
                assert mine == feast_row, name
    assert expired < sum(len(c["statuses"]) for c in expected.values()) // 2


def test_feast_s_remote_online_store_reads_through_datalayer_serve(
    fresh: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feast's own client code path: a repository whose online store is ``remote``, pointed at
    our server, reads what ``online()`` reads; Feast's client sends our bearer token from the
    variable its ``oidc`` auth names."""
    from feast import FeatureStore

    repo = fresh.log.parent / "remote_repo"
    repo.mkdir(exist_ok=True)
    registry_db = fresh.log.parent / "feature_repo" / "data" / "registry.db"
    (repo / "feature_store.yaml").write_text(
        yaml.safe_dump(
            {
                "project": "alerting",
                "provider": "local",
                "registry": str(registry_db),
                "online_store": {"type": "remote", "path": fresh.url},
                "auth": {"type": "oidc", "token_env_var": "DL_TEST_READER"},
                "entity_key_serialization_version": 3,
            }
        )
    )
    rows = [
        {"service_id": "svc-01", "account_id": "acct-1"},
        {"service_id": "svc-nope", "account_id": "acct-2"},
    ]
    monkeypatch.setenv("DL_TEST_READER", READER)
    store = FeatureStore(repo_path=str(repo))
    read = store.get_online_features(
        features=store.get_feature_service("alert_grouping_v1"), entity_rows=rows
    ).to_dict()
    with datalayer.open(fresh.log.parent / "datalayer.yaml", "local") as dl:
        expected = dl.features("service_features").online(rows)
    assert {k: read[k] for k in read} == {(k.split("__", 1)[-1]): v for k, v in expected.items()}


def test_push_then_read_and_the_push_scope(fresh: Server, served: Server) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    body = {
        "push_source_name": "service_alert_stream_push",
        "df": {
            "service_id": ["svc-pushed"],
            "last_severity_rank": [3],
            "alerts_seen": [41],
            "event_timestamp": [now.isoformat()],
        },
        "to": "online",
    }
    pushed = fresh.call("POST", "/push", body, token=READER)
    assert pushed.status == 200, pushed.body
    assert pushed.json() == {"pushed": 1, "view": "service_alert_stream"}
    read = fresh.call(
        "POST",
        "/v1/features/service_features",
        {
            "entities": [{"service_id": "svc-pushed"}],
            "features": ["service_alert_stream:alerts_seen"],
        },
        token=READER,
    )
    assert read.json()["features"]["service_alert_stream__alerts_seen"] == [41]
    unknown = fresh.call("POST", "/push", {**body, "push_source_name": "nope"}, token=READER)
    assert unknown.status == 404 and "service_alert_stream_push" in unknown.body.decode()
    bad_to = fresh.call("POST", "/push", {**body, "to": "elsewhere"}, token=READER)
    assert bad_to.status == 400 and bad_to.json()["error"]["field"] == "to"
    typed = {**body, "df": {**body["df"], "alerts_seen": ["many"]}}
    wrong = fresh.call("POST", "/push", typed, token=READER)
    assert wrong.status == 400, wrong.body  # refused before anything is written
    assert "row 0.alerts_seen: must be int, not 'many'" in wrong.json()["error"]["message"]
    for bad, named in (
        ({"feature_service": {"a": 1}}, "feature_service"),
        (
            {"feature_service": "alert_grouping_v1", "full_feature_names": "yes"},
            "full_feature_names",
        ),
        (
            {"feature_service": "alert_grouping_v1", "entities": {"service_id": "svc-01"}},
            "entities",
        ),
    ):
        request = {"entities": {"service_id": ["svc-01"], "account_id": ["acct-1"]}, **bad}
        refused = fresh.call("POST", "/get-online-features", request, token=READER)
        assert refused.status == 400 and refused.json()["error"]["field"] == named, refused.body
    # a token with the read scope only may not push
    refused = served.call("POST", "/push", body, token=READER)
    assert refused.status == 403 and "may not push" in refused.json()["error"]["message"]


async def asgi_post(app: Any, path: str, body: Any, token: str) -> tuple[int, Any]:
    """One request straight to the ASGI application, no socket: its status and JSON."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"authorization", f"Bearer {token}".encode())],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_a_span_per_request_and_a_child_per_store_call(
    served: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read with the SDK's in-memory exporter: the request's span (route, pattern, status,
    entities; no token) is the parent of the store call's span."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from datalayer.serve.app import FeatureServer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    dl = datalayer.open(served.log.parent / "datalayer.yaml", "local")
    app = FeatureServer(dl, dl.registry.serve.secrets("datalayer.yaml"), provider)
    app.open()
    try:
        body = {"entities": [{"service_id": "svc-01", "account_id": "acct-1"}] * 3}
        status, answer = asyncio.run(asgi_post(app, "/v1/features/service_features", body, READER))
        forbidden, _ = asyncio.run(asgi_post(app, "/v1/features/service_features", body, OTHER))
    finally:
        app.close()
    assert status == 200 and len(answer["features"]["service_id"]) == 3
    assert forbidden == 403
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name == "POST /v1/features/{pattern}"]
    stores = [s for s in spans if s.name == "features online"]
    assert len(requests) == 2 and len(stores) == 1, [s.name for s in spans]
    first = requests[0]
    assert stores[0].parent is not None and stores[0].parent.span_id == first.context.span_id
    assert first.attributes is not None and stores[0].attributes is not None
    assert first.attributes["http.response.status_code"] == 200
    assert first.attributes["datalayer.pattern"] == "service_features"
    assert first.attributes["datalayer.entities"] == 3
    assert stores[0].attributes["datalayer.store.type"] == "feast"
    assert requests[1].attributes is not None
    assert requests[1].attributes["http.response.status_code"] == 403
    for span in spans:
        assert READER not in str(span.to_json()) and OTHER not in str(span.to_json())


def test_with_an_otlp_endpoint_the_server_exports_its_spans(tmp_path: Path) -> None:
    """The real exporter: spans reach an OTLP/HTTP collector (a stub here) by the time a
    stopped server has exited."""
    import http.server

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[ExportTraceServiceRequest] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.path == "/v1/traces":
                received.append(ExportTraceServiceRequest.FromString(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    try:
        server = start(
            example(tmp_path, serve={}),
            "local",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "grouping"},
        )
        answer = server.call(
            "POST", "/v1/features/account_features", {"entities": [{"account_id": "acct-1"}]}
        )
        assert answer.status == 200, answer.body
        assert server.stop() == STOPPED, server.log.read_text()
    finally:
        collector.shutdown()
    spans = [
        (span.name, resource.resource.attributes)
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = [name for name, _ in spans]
    assert "POST /v1/features/{pattern}" in names and "features online" in names, names
    assert any(
        attribute.key == "service.name" and attribute.value.string_value == "grouping"
        for _, attributes in spans
        for attribute in attributes
    )
