"""A stream shared by several processes: a publisher here, a consumer there, one killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

import datalayer
from datalayer.testing.registry import write_registry

STORES = {
    "embedded-log": lambda req: {
        "type": "embedded-log",
        "path": "events.db",
        "session_timeout": "1s",
        "poll_interval": 0.01,
    },
    "kafka": lambda req: {
        "type": "kafka",
        "bootstrap_servers": req.getfixturevalue("kafka_bootstrap"),
        "session_timeout": "2s",
    },
}


@pytest.fixture(params=list(STORES))
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    topic = f"alerts_{uuid.uuid4().hex[:8]}"
    file = write_registry(
        tmp_path,
        {"local": {"events": STORES[request.param](request)}},
        {
            "alerts": {
                "category": "streaming",
                "store": "events",
                "topic": topic,
                "partitions": 3,
                "key": "service_id",
                "schema": "datalayer.examples.alerting:Alert",
                "dead_letter": f"{topic}.dlq",
            }
        },
    )
    with datalayer.open(file, "local") as dl:
        dl.apply()
    return file


def alert(n: int) -> dict[str, object]:
    return {
        "alert_id": f"a{n}",
        "service_id": f"svc-{n % 4}",
        "fingerprint": "cpu_high",
        "severity": "warning",
        "message": "cpu",
        "occurred_at": "2026-01-05T08:00:00Z",
    }


def run_python(code: str, registry: Path) -> subprocess.Popen[str]:
    script = textwrap.dedent(code).replace("REGISTRY_PATH", repr(str(registry)))
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_publisher_in_another_process(registry: Path) -> None:
    child = run_python(
        """
        import datalayer
        from tests.integration.test_stream_processes import alert
        with datalayer.open(REGISTRY_PATH, "local") as dl:
            dl.stream("alerts").publish_many([alert(n) for n in range(30)])
        """,
        registry,
    )
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    with datalayer.open(registry, "local") as dl:
        got = [m.value["alert_id"] for m in dl.stream("alerts").consume("g", idle_timeout=3)]
    assert sorted(got) == sorted(f"a{n}" for n in range(30))


def test_consumer_in_another_process(registry: Path) -> None:
    child = run_python(
        """
        import json, datalayer
        with datalayer.open(REGISTRY_PATH, "local") as dl:
            seen = []
            for message in dl.stream("alerts").consume("g", max_messages=20, idle_timeout=20):
                seen.append(message.value["alert_id"])
                message.ack()
        print(json.dumps(seen))
        """,
        registry,
    )
    time.sleep(3)
    with datalayer.open(registry, "local") as dl:
        dl.stream("alerts").publish_many([alert(n) for n in range(20)])
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    assert sorted(json.loads(out)) == sorted(f"a{n}" for n in range(20))


def test_killed_consumer_s_unacked_messages_go_to_the_group(registry: Path) -> None:
    with datalayer.open(registry, "local") as dl:
        dl.stream("alerts").publish_many([alert(n * 4) for n in range(6)])  # all on svc-0
    child = run_python(
        """
        import sys, time, datalayer
        with datalayer.open(REGISTRY_PATH, "local") as dl:
            messages = dl.stream("alerts").consume("g", idle_timeout=20)
            for i, message in enumerate(messages):
                if i < 2:
                    message.ack()
                if i == 3:
                    print("mid-batch", flush=True)
                    time.sleep(600)
        """,
        registry,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "mid-batch"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    with datalayer.open(registry, "local") as dl:
        got = [m.value["alert_id"] for m in dl.stream("alerts").consume("g", idle_timeout=5)]
    assert got == ["a8", "a12", "a16", "a20"]
