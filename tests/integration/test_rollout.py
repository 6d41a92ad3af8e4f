"""A key-value pattern moves from the embedded store to Redis by stages: every write lands on
both stores while both are written, reads come from the side the stage (and the key's stable
bucket) says, a divergence on the new store is seen by shadow reads, a failing new store never
fails a shadow write, and going back a stage loses nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

import datalayer
from datalayer.errors import ConfigError
from datalayer.rollout import BUCKETS, bucket
from datalayer.testing.registry import write_registry
from tests.integration.rollouts import backfill_killed_after_one_batch, rollout_cli, run_writers

WRITERS, KEYS = 4, 50


def prefix(folder: Path) -> str:
    """The pattern's key prefix in one test's folder: tests share the Redis server."""
    return "w" + hashlib.sha256(str(folder).encode()).hexdigest()[:10]


def registry(folder: Path, redis_url: str, rollout: dict[str, Any] | None) -> Path:
    pattern: dict[str, Any] = {"category": "key-value", "store": "cache", "prefix": prefix(folder)}
    if rollout is not None:
        pattern["rollout"] = rollout
    stores = {
        "cache": {"type": "embedded-kv", "path": str(folder / "kv.db")},
        "redis": {"type": "redis", "url": redis_url},
    }
    return write_registry(folder, {"local": stores}, {"windows": pattern})


def write_concurrently(file: Path, stage: str) -> dict[str, Any]:
    """Writers of distinct keys at once (sets, increments, deletes); the values each key
    should hold afterwards."""
    expected: dict[str, Any] = {}
    lock = threading.Lock()

    def writer(n: int) -> None:
        with datalayer.open(file, "local") as dl:
            kv = dl.kv("windows")
            for i in range(KEYS):
                key = f"w{n}-{i}"
                kv.set(key, {"stage": stage, "i": i})
                kv.incr(f"count-{n}")
                if i % 10 == 0:
                    kv.delete(key)
                with lock:
                    expected[key] = None if i % 10 == 0 else {"stage": stage, "i": i}

    run_writers(writer, WRITERS)
    return expected


def new_side(folder: Path, redis_url: str) -> Path:
    """A registry of the pattern on the new store alone (no rollout): to look at, or write
    into, the new store behind the rollout's back."""
    side = folder / "new-side"
    side.mkdir(exist_ok=True)
    pattern = {"category": "key-value", "store": "redis", "prefix": prefix(folder)}
    return write_registry(
        side, {"local": {"redis": {"type": "redis", "url": redis_url}}}, {"windows": pattern}
    )


def both_sides(file: Path, redis_url: str, keys: list[str]) -> tuple[list[Any], list[Any]]:
    """The values of ``keys`` on the old store and on the new one, read without the
    rollout."""
    old = datalayer.open(registry(file.parent, redis_url, None), "local")
    with old, datalayer.open(new_side(file.parent, redis_url), "local") as new:
        return old.kv("windows").mget(keys), new.kv("windows").mget(keys)


def test_each_stage_writes_both_stores_and_reads_the_side_it_says(
    tmp_path: Path, redis_url: str
) -> None:
    expected: dict[str, Any] = {}
    counts = {f"count-{n}": 0 for n in range(WRITERS)}
    for stage, percent in (("shadow", 0), ("split", 50), ("cutover", 0), ("split", 50)):
        file = registry(tmp_path, redis_url, {"to": "redis", "stage": stage, "percent": percent})
        expected |= write_concurrently(file, stage)
        counts = {key: value + KEYS for key, value in counts.items()}
        keys = [*expected, *counts]
        with datalayer.open(file, "local") as dl:
            assert dl.kv("windows").mget(keys) == [*expected.values(), *counts.values()], stage
        old, new = both_sides(file, redis_url, keys)
        # every stage so far writes the old store first, then the new one: both hold it all
        assert old == new == [*expected.values(), *counts.values()], stage
    # done: only the new store is written; the old one keeps what it had
    file = registry(tmp_path, redis_url, {"to": "redis", "stage": "done"})
    with datalayer.open(file, "local") as dl:
        dl.kv("windows").set("w0-1", {"stage": "done", "i": 1})
        assert dl.kv("windows").get("w0-1") == {"stage": "done", "i": 1}
    old, new = both_sides(file, redis_url, ["w0-1"])
    assert old == [expected["w0-1"]] and new == [{"stage": "done", "i": 1}]


def test_split_reads_each_key_from_its_stable_side(tmp_path: Path, redis_url: str) -> None:
    """Values that differ on purpose between the stores show which side a read came from:
    about ``percent`` of the keys read the new store, the same keys every time."""
    file = registry(tmp_path, redis_url, None)
    keys = [f"k{i}" for i in range(400)]
    new_file = new_side(tmp_path, redis_url)
    with datalayer.open(file, "local") as old, datalayer.open(new_file, "local") as new:
        for key in keys:
            old.kv("windows").set(key, "old")
            new.kv("windows").set(key, "new")
    split = registry(tmp_path, redis_url, {"to": "redis", "stage": "split", "percent": 25})
    with datalayer.open(split, "local") as dl:
        first = dl.kv("windows").mget(keys)
        assert first == dl.kv("windows").mget(keys)  # stable
        assert [dl.kv("windows").get(k) for k in keys[:20]] == first[:20]
    news = {k for k, v in zip(keys, first, strict=True) if v == "new"}
    assert news == {k for k in keys if bucket(f"{prefix(tmp_path)}:{k}") < 2500}
    assert 0.18 < len(news) / len(keys) < 0.32


def test_the_split_is_within_two_points_over_ten_thousand_keys_in_every_process() -> None:
    keys = [f"service-{i}:latency" for i in range(10_000)]
    here = [bucket(k) for k in keys]
    for percent in (1, 10, 50, 90):
        share = sum(b < percent * BUCKETS / 100 for b in here) / len(keys) * 100
        assert abs(share - percent) <= 2, (percent, share)
    code = (
        "import sys; from datalayer.rollout import bucket; "
        "print(','.join(str(bucket(f'service-{i}:latency')) for i in range(10000)))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"} | _python_env(),
    )
    assert [int(b) for b in other.stdout.strip().split(",")] == here


def _python_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(("PYTHONPATH", "VIRTUAL_ENV"))}


def test_shadow_reads_report_a_divergence_on_the_new_store(tmp_path: Path, redis_url: str) -> None:
    file = registry(tmp_path, redis_url, {"to": "redis", "stage": "shadow", "compare_sample": 1.0})
    with datalayer.open(file, "local") as dl:
        kv = dl.kv("windows")
        kv.set("a", 1)
        kv.set("b", 2)
        assert kv.mget(["a", "b"]) == [1, 2]
        (rollout,) = dl.rollouts()
        assert (rollout.stats.compared, rollout.stats.mismatches) == (2, 0)
    # written straight into the new store, behind the rollout's back
    with datalayer.open(new_side(tmp_path, redis_url), "local") as new:
        new.kv("windows").set("b", 3)
    with datalayer.open(file, "local") as dl:
        assert dl.kv("windows").mget(["a", "b"]) == [1, 2]  # shadow reads the current store
        (rollout,) = dl.rollouts()
        assert (rollout.stats.compared, rollout.stats.mismatches) == (2, 1)
    # the counts of both closed processes, in status and in the feature server's metrics
    status = rollout_cli(file, "status")
    assert "windows" in status.stdout and "shadow" in status.stdout, status.stdout
    lines = _metrics(file).splitlines()
    assert 'datalayer_rollout_events{kind="mismatches",pattern="windows"} 1.0' in lines
    assert 'datalayer_rollout_events{kind="compared",pattern="windows"} 4.0' in lines


def _metrics(file: Path) -> str:
    """A scrape of the feature server's /metrics over the registry of ``file``."""
    import asyncio

    from datalayer.serve.app import FeatureServer

    app = FeatureServer(datalayer.open(file, "local"), {})
    app.open()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": []}
    try:
        asyncio.run(app(scope, receive, send))
    finally:
        app.close()
    assert sent[0]["status"] == 200, sent
    return bytes(sent[1]["body"]).decode()


def test_a_failing_new_store_never_fails_a_shadow_write(tmp_path: Path) -> None:
    file = registry(tmp_path, "redis://127.0.0.1:9/0", {"to": "redis", "stage": "shadow"})
    with datalayer.open(file, "local") as dl:
        kv = dl.kv("windows")
        kv.set("a", 1)
        assert kv.incr("n") == 1
        assert kv.get("a") == 1
        (rollout,) = dl.rollouts()
        assert rollout.stats.write_failures == 2
    compared = registry(
        tmp_path, "redis://127.0.0.1:9/0", {"to": "redis", "stage": "shadow", "compare_sample": 1}
    )
    with datalayer.open(compared, "local") as dl:
        assert dl.kv("windows").get("a") == 1  # the comparison fails, the read does not
        (rollout,) = dl.rollouts()
        assert (rollout.stats.compare_failures, rollout.stats.compared) == (1, 0)
    split = registry(tmp_path, "redis://127.0.0.1:9/0", {"to": "redis", "stage": "split"})
    with datalayer.open(split, "local") as dl, pytest.raises(datalayer.StoreUnavailable):
        dl.kv("windows").set("a", 2)  # past shadow, both stores must take the write


@pytest.mark.parametrize(
    ("rollout", "where", "said"),
    [
        ({"to": "nowhere", "stage": "shadow"}, "rollout.to", "store 'nowhere' is not defined"),
        ({"to": "cache", "stage": "shadow"}, "rollout.to", "on store 'cache' already"),
        ({"to": "redis", "stage": "halfway"}, "rollout.stage", "shadow"),
        ({"to": "redis", "stage": "split", "percent": 101}, "rollout.percent", "100"),
    ],
)
def test_a_broken_rollout_block_names_the_key(
    tmp_path: Path, rollout: dict[str, Any], where: str, said: str
) -> None:
    with pytest.raises(ConfigError) as info:
        datalayer.open(registry(tmp_path, "redis://127.0.0.1:9/0", rollout), "local")
    assert info.value.path == f"patterns.windows.{where}" and said in str(info.value)


def test_backfill_resumes_keeps_concurrent_writes_and_verify_finds_a_divergence(
    tmp_path: Path, redis_url: str
) -> None:
    """Keys written before the rollout are copied by a backfill that is interrupted once and
    resumed, while writers update and delete some of those keys through the rollout; at the
    end both stores hold the same keys and values. A value changed on the new store alone is
    then reported by verify."""
    from datalayer.rollout import BATCH

    before = registry(tmp_path, redis_url, None)
    with datalayer.open(before, "local") as dl:
        kv = dl.kv("windows")
        for i in range(3 * BATCH):
            kv.set(f"old-{i}", {"i": i}, ttl="1h" if i % 3 == 0 else None)
    file = registry(tmp_path, redis_url, {"to": "redis", "stage": "shadow"})
    stop = threading.Event()

    def writer(n: int) -> None:
        with datalayer.open(file, "local") as dl:
            kv, i = dl.kv("windows"), 0
            while not stop.is_set():
                # each writer its own keys: two writers of one key at once may leave each
                # store a different last write (the module says so); that is not a backfill's
                key = f"old-{2 * ((i * 13) % (3 * BATCH // 2)) + n}"
                if i % 5 == 0:
                    kv.delete(key)
                else:
                    kv.set(key, {"writer": n, "i": i})
                i += 1

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in writers:
        thread.start()
    try:
        checkpoints = backfill_killed_after_one_batch(file, "windows")
        assert checkpoints.load("windows", "redis").cursor  # a place to resume from
        resumed = rollout_cli(file, "backfill", "windows")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    finally:
        stop.set()
        for thread in writers:
            thread.join(30)
    checked = rollout_cli(file, "verify", "windows", "--json")
    result = json.loads(checked.stdout)
    status = rollout_cli(file, "status")
    said = (result["mismatches"], result["keys"], status.stdout)
    assert checked.returncode == 0 and result["clean"], said
    assert result["old_keys"] == result["new_keys"] > BATCH
    assert "windows" in status.stdout and "done" in status.stdout, status.stdout
    candidates = [f"old-{i}" for i in range(20)]
    with datalayer.open(file, "local") as dl:  # a key the writers left there
        values = dl.kv("windows").mget(candidates)
        tampered = next(k for k, v in zip(candidates, values, strict=True) if v is not None)
    with datalayer.open(new_side(tmp_path, redis_url), "local") as new:
        new.kv("windows").set(tampered, {"tampered": True})
    diverged = rollout_cli(file, "verify", "windows")
    assert diverged.returncode == 1
    assert f"1 values differ: {prefix(tmp_path)}:{tampered}" in diverged.stdout, diverged.stdout
    # the new store given the current store's value, and a key only it has removed
    with datalayer.open(new_side(tmp_path, redis_url), "local") as new:
        new.kv("windows").set("stray", 1)
    repaired = rollout_cli(file, "verify", "windows", "--repair", "--json")
    result = json.loads(repaired.stdout)
    assert repaired.returncode == 0 and result["clean"] and result["repaired"] == 2, result
    with datalayer.open(file, "local") as dl:
        assert dl.kv("windows").get(tampered) != {"tampered": True}


def test_a_moving_pattern_may_not_take_another_patterns_place_on_the_new_store(
    tmp_path: Path,
) -> None:
    """The store a pattern moves to is checked as its own: a key prefix overlapping one of a
    pattern there (or a collection or table it has) is refused, naming the key."""
    file = registry(tmp_path, "redis://127.0.0.1:9/0", {"to": "redis", "stage": "shadow"})
    found = yaml.safe_load(file.read_text())
    there = {"category": "key-value", "store": "redis", "prefix": prefix(tmp_path)}
    found["patterns"]["already_there"] = there
    file.write_text(yaml.safe_dump(found))
    with pytest.raises(ConfigError) as info:
        datalayer.open(file, "local")
    said = str(info.value)
    assert info.value.path == "patterns.windows.prefix", said
    assert "of pattern 'already_there' on store 'redis' (where it is moving)" in said


def test_describe_says_where_a_pattern_is_moving(tmp_path: Path) -> None:
    file = registry(
        tmp_path, "redis://127.0.0.1:9/0", {"to": "redis", "stage": "split", "percent": 25}
    )
    described = subprocess.run(
        [sys.executable, "-m", "datalayer.cli", "describe", "--config", str(file), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert described.returncode == 0, described.stderr
    (row,) = [r for r in json.loads(described.stdout)["patterns"] if r["pattern"] == "windows"]
    assert row["target"].endswith("moving to 'redis' (split 25%)"), row


def embedded_to_embedded(folder: Path, **rollout: Any) -> Path:
    """A key-value pattern in shadow from one embedded store to another: no server."""
    stores = {
        "cache": {"type": "embedded-kv", "path": str(folder / "old.db")},
        "next": {"type": "embedded-kv", "path": str(folder / "new.db")},
    }
    pattern = {
        "category": "key-value",
        "store": "cache",
        "rollout": {"to": "next", "stage": "shadow", **rollout},
    }
    return write_registry(folder, {"local": stores}, {"windows": pattern})


def test_a_value_written_since_the_read_is_no_shadow_mismatch(tmp_path: Path) -> None:
    """A comparison reads the new store after the read: a value both stores changed
    meanwhile is not counted, one the new store alone holds is."""
    file = embedded_to_embedded(tmp_path, compare_sample=0.0)
    with datalayer.open(file, "local") as dl:
        kv = dl.kv("windows")
        kv.set("moved", 1)
        kv.set("diverged", 1)
        router, key = kv.backend, kv.full_key
        router.new.set(key("diverged"), b"2", None)  # behind the rollout's back
        (rollout,) = dl.rollouts()
        # what two reads returned before "moved" was written as 1 on both stores
        keys = [key("moved"), key("diverged")]
        rollout.compare(keys, [b"0", b"1"], router.new.get_many, router.old.get_many)
        assert (rollout.stats.compared, rollout.stats.mismatches) == (2, 1)


def test_a_backfill_killed_right_after_copying_a_deleted_key_removes_it_when_resumed(
    tmp_path: Path,
) -> None:
    """A key deleted (on both stores) between the copy's read and its add, the run killed
    right after the add: the resumed run finds the key in the batch it saved as in flight,
    gone from the current store, and removes the copy from the new store."""
    from datalayer.rollout import Checkpoints, KVSide, Progress, backfill, sides, verify

    file = embedded_to_embedded(tmp_path)
    with datalayer.open(file, "local") as dl:
        kv = dl.kv("windows")
        router = kv.backend
        router.old.set(kv.full_key("victim"), b"7", None)  # there before the rollout
        router.old.set(kv.full_key("kept"), b"8", None)
        old, new = sides(router, dl.pattern("windows"))
        checkpoints = Checkpoints(dl.rollout_folder)

        class KilledAfterAdd(KVSide):
            def add(self, key: str, value: Any) -> bool:
                added = super().add(key, value)
                if key.endswith("victim"):
                    raise KeyboardInterrupt  # SIGKILL, right after the add
                return added

        def saved(progress: Progress) -> None:
            checkpoints.save("windows", progress)
            if progress.in_flight:  # the copy has read the values: a writer deletes one
                kv.delete("victim")

        killed = KilledAfterAdd(router.new, dl.pattern("windows").key_prefix)
        with pytest.raises(KeyboardInterrupt):
            backfill(old, killed, Progress("next"), saved)
        assert router.new.get_many([kv.full_key("victim")]) == [b"7"]  # resurrected, for now
        resumed = backfill(old, new, checkpoints.load("windows", "next"), saved)
        assert resumed.done and router.new.get_many([kv.full_key("victim")]) == [None]
        assert verify(old, new).clean


def documents_registry(folder: Path, mongodb_url: str, rollout: dict[str, Any] | None) -> Path:
    pattern: dict[str, Any] = {
        "category": "document",
        "store": "docs",
        "collection": f"notes_{prefix(folder)}",  # tests share the MongoDB server
        "key": "note_id",
        "indexes": ["service_id"],
    }
    if rollout is not None:
        pattern["rollout"] = rollout
    stores = {
        "docs": {"type": "embedded-documents", "path": str(folder / "docs.db")},
        "mongo": {"type": "mongodb", "url": mongodb_url, "database": "rollouts"},
    }
    return write_registry(folder, {"local": stores}, {"notes": pattern})


def test_a_document_pattern_moves_to_mongodb_and_back_a_stage_losing_nothing(
    tmp_path: Path, mongodb_url: str
) -> None:
    """Documents written before the rollout are backfilled, interrupted once and resumed,
    while a writer updates and deletes some of them through it; verify is clean; at split,
    cutover and back at split three writers put, update and delete documents of their own at
    once, and both stores hold every write (verify clean); a document changed on MongoDB
    alone is reported by verify."""

    def note(i: int) -> dict[str, Any]:
        return {"note_id": f"n{i:04d}", "service_id": f"svc-{i % 7}", "text": f"t{i}"}

    with datalayer.open(documents_registry(tmp_path, mongodb_url, None), "local") as dl:
        dl.apply()
        for i in range(700):
            dl.documents("notes").put(note(i))
    shadow = documents_registry(tmp_path, mongodb_url, {"to": "mongo", "stage": "shadow"})
    stop = threading.Event()

    def writer() -> None:
        with datalayer.open(shadow, "local") as dl:
            notes, i = dl.documents("notes"), 0
            while not stop.is_set():
                key = f"n{(i * 37) % 700:04d}"
                if i % 4 == 0:
                    notes.delete(key)
                else:
                    notes.update(key, set={"text": f"edited {i}"})
                i += 1

    with datalayer.open(shadow, "local") as dl:
        dl.apply()  # the collection and its index on MongoDB too
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        checkpoints = backfill_killed_after_one_batch(shadow, "notes")
        copied = rollout_cli(shadow, "backfill", "notes")
        assert copied.returncode == 0, copied.stdout + copied.stderr
        assert checkpoints.load("notes", "mongo").copied > 0
    finally:
        stop.set()
        thread.join(30)
    checked = rollout_cli(shadow, "verify", "notes", "--json")
    result = json.loads(checked.stdout)
    assert checked.returncode == 0 and result["clean"], (result["mismatches"], result["keys"])
    assert result["old_keys"] == result["new_keys"] > 400
    for turn, stage in enumerate(("split", "cutover", "split")):
        file = documents_registry(
            tmp_path, mongodb_url, {"to": "mongo", "stage": stage, "percent": 50}
        )

        def stage_writer(n: int, file: Path = file, stage: str = f"{stage}{turn}") -> None:
            with datalayer.open(file, "local") as dl:
                notes = dl.documents("notes")
                for i in range(30):
                    key = f"{stage}-{n}-{i}"
                    notes.put({"note_id": key, "service_id": f"svc-{n}", "text": "new"})
                    notes.update(key, set={"text": f"edited {i}"}, push={"tags": stage})
                    if i % 6 == 0:
                        notes.delete(key)

        run_writers(stage_writer, 3)
        with datalayer.open(file, "local") as dl:
            notes = dl.documents("notes")
            notes.put(note(900) | {"text": stage})
            assert notes.update("n0900", push={"tags": stage}) is True
            assert notes.get("n0900") == note(900) | {"text": stage, "tags": [stage]}
            assert len(notes.find({"service_id": "svc-3"})) == notes.count({"service_id": "svc-3"})
        checked = rollout_cli(file, "verify", "notes")
        assert checked.returncode == 0, checked.stdout  # both sides took every write
    with datalayer.open(documents_registry(tmp_path, mongodb_url, None), "local") as old:
        assert old.documents("notes").get("n0900")["tags"] == ["split"]  # type: ignore[index]
    (tmp_path / "mongo-side").mkdir()
    mongo_only = {"category": "document", "store": "mongo", "key": "note_id"}
    mongo_only["collection"] = f"notes_{prefix(tmp_path)}"
    moved = write_registry(
        tmp_path / "mongo-side",
        {"local": {"mongo": {"type": "mongodb", "url": mongodb_url, "database": "rollouts"}}},
        {"notes": mongo_only},
    )
    with datalayer.open(moved, "local") as new:
        new.documents("notes").update("n0900", set={"text": "tampered"})
    compared = documents_registry(
        tmp_path, mongodb_url, {"to": "mongo", "stage": "shadow", "compare_sample": 1.0}
    )
    with datalayer.open(compared, "local") as dl:
        assert dl.documents("notes").get("n0900")["text"] == "split"  # type: ignore[index]
        dl.documents("notes").get("n0002")  # the same on both stores (or on neither)
        (rollout,) = dl.rollouts()
        assert (rollout.stats.compared, rollout.stats.mismatches) == (2, 1), rollout.stats
    file = documents_registry(tmp_path, mongodb_url, {"to": "mongo", "stage": "split"})
    diverged = rollout_cli(file, "verify", "notes")
    assert diverged.returncode == 1 and "1 values differ: n0900" in diverged.stdout, diverged.stdout
    repaired = rollout_cli(file, "verify", "notes", "--repair")
    assert repaired.returncode == 0, repaired.stdout
    assert "notes: 1 mismatches set right from the current store" in repaired.stdout
    with datalayer.open(moved, "local") as new:
        assert new.documents("notes").get("n0900")["text"] == "split"  # type: ignore[index]
