"""A new user's first hour, played on a fresh clone in a temporary folder.

The clone is the repository's tracked files, nothing else (no data, no caches, no editable
install of this checkout): a virtual environment that sees the packages already installed
installs it with the README's own set-up command. Then, in order: the README's two set-up
commands (the test command up to collecting the suite, its servers already installed by the
run that runs this), every README block as written (``tests/readme_runner.py``), a pattern of
each category registered with a migration, and the features commands with the documented CSV.
Every command must exit 0 and print nothing wider than 100 columns, nothing cut to fit and
no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.readme_runner import WIDTH, blocks, output_problems

ROOT = Path(__file__).resolve().parents[2]

SCHEMAS = """\
from datetime import datetime

from pydantic import BaseModel


class Release(BaseModel):
    release_id: str
    service_id: str
    version: str
    released_at: datetime


class ReleaseEvent(BaseModel):
    release_id: str
    service_id: str
    step: str


class ReleaseNote(BaseModel):
    note_id: str
    release_id: str
    text: str
    tags: list[str] = []


class ReleaseLock(BaseModel):
    owner: str
"""

PATTERNS = {
    "releases": {
        "category": "transactional",
        "store": "sql",
        "table": "releases",
        "key": "release_id",
        "indexes": ["service_id"],
        "schema": "release_schemas:Release",
    },
    "release_events": {
        "category": "streaming",
        "store": "events",
        "topic": "release.events",
        "partitions": 2,
        "key": "service_id",
        "schema": "release_schemas:ReleaseEvent",
    },
    "release_notes": {
        "category": "document",
        "store": "docs",
        "collection": "release_notes",
        "key": "note_id",
        "indexes": ["release_id"],
        "schema": "release_schemas:ReleaseNote",
    },
    "release_locks": {
        "category": "key-value",
        "store": "cache",
        "ttl": "10m",
        "schema": "release_schemas:ReleaseLock",
    },
    "release_features": {
        "category": "feature",
        "store": "features",
        "features": ["service_alert_counts:alerts_1h", "account_profile:plan_rank"],
    },
}

USE_THEM = """\
import datalayer

with datalayer.open() as dl:
    dl.transactional("releases").put({"release_id": "r1", "service_id": "svc-01",
                                      "version": "2.0.0", "released_at": "2026-03-01T09:00:00Z"})
    assert dl.transactional("releases").query({"service_id": "svc-01"})[0]["version"] == "2.0.0"
    dl.stream("release_events").publish({"release_id": "r1", "service_id": "svc-01",
                                         "step": "canary"})
    got = [m.value["step"] for m in dl.stream("release_events").consume("watch", idle_timeout=1)]
    assert got == ["canary"], got
    dl.documents("release_notes").put({"note_id": "n1", "release_id": "r1", "text": "faster"})
    dl.documents("release_notes").update("n1", push={"tags": "perf"})
    assert dl.documents("release_notes").find({"release_id": "r1"})[0]["tags"] == ["perf"]
    dl.kv("release_locks").set("svc-01", {"owner": "ci"})
    assert dl.kv("release_locks").get("svc-01") == {"owner": "ci"}
    served = dl.features("release_features").online([{"service_id": "svc-01",
                                                      "account_id": "acct-1"}])
    assert list(served)[-2:] == ["service_alert_counts__alerts_1h", "account_profile__plan_rank"]
print("every new pattern works")
"""


@dataclass(frozen=True)
class User:
    """A new user at a terminal of 100 columns in the clone, with its virtual environment."""

    folder: Path
    env: dict[str, str]

    def run(self, command: str, *, timeout: float = 600, ours: bool = True) -> str:
        """Run ``command`` as typed; it must succeed and print no traceback and, when it is
        ours (not pytest's, say), nothing wider than the terminal or cut."""
        done = subprocess.run(
            ["bash", "-e", "-c", command],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"$ {command}\nexit status {done.returncode}\n{output}"
        problems = output_problems(output) if ours else []
        assert "Traceback (most recent" not in output, f"$ {command}\n{output}"
        assert not problems, f"$ {command}\n" + "\n".join(problems) + f"\n{output}"
        return done.stdout


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> User:
    """The repository's tracked files in a new folder, and a virtual environment that sees the
    installed packages (so nothing is downloaded but pip's build backend) without datalayer."""
    base = tmp_path_factory.mktemp("first-hour")
    folder = base / "datalayer"
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    for name in filter(None, listed.stdout.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is not in the clone
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DATALAYER_CONFIG", "DATALAYER_PROFILE", "PYTHON"))
    }
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "COLUMNS": str(WIDTH),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_QUIET": "1",  # pip's "Requirement already satisfied" lines are not ours to fit
        "PIP_ROOT_USER_ACTION": "ignore",
    }
    return User(folder, env)


@pytest.mark.timeout(1800)
def test_a_new_user_s_first_hour_on_a_fresh_clone(user: User) -> None:
    readme = blocks(user.folder / "README.md")
    main_job, tests = readme[0].body.strip(), readme[1].body.strip()
    assert "datalayer quickstart" in main_job and tests == "./scripts/test", (main_job, tests)

    # 1. The README's first command: install, then the main job on the embedded profile.
    out = user.run(main_job)
    imported = user.run("python -c 'import datalayer; print(datalayer.__file__)'")
    assert imported.startswith(str(user.folder)), imported
    assert "237 grouped" in out and "where the data is" in out
    where = out[out.index("where the data is") : out.index("next")].splitlines()[1:]
    for line in where:  # each embedded store's file, relative to the clone
        assert (user.folder / line.split(": ")[1]).exists(), line
    commands = [line.strip() for line in out.splitlines() if line.startswith("    datalayer ")]
    assert len(commands) == 2, out

    # 2. The test command's steps: its installs, then pytest collects every test of the clone.
    collected = user.run(f"{tests} --collect-only -q -p no:cacheprovider", timeout=900, ours=False)
    assert " tests collected" in collected.splitlines()[-1], collected[-500:]

    # 3. Every README block, as written, in order.
    assert "blocks ran" in user.run("python -m tests.readme_runner", timeout=1200)

    # 4. The quickstart's next steps, as printed.
    for command in commands:
        user.run(command)
    assert (user.folder / "training.parquet").exists()

    # 5. A pattern of each category: a schema, an entry, validate, describe, a migration.
    (user.folder / "release_schemas.py").write_text(SCHEMAS)
    registry_file = user.folder / "datalayer.yaml"
    registry = yaml.safe_load(registry_file.read_text())
    registry["patterns"].update(PATTERNS)
    registry_file.write_text(yaml.safe_dump(registry, sort_keys=False))
    user.run("datalayer validate")
    described = user.run("datalayer describe")
    for name in PATTERNS:
        assert name in described, described
    warned = user.run("datalayer apply")
    assert "'releases' is in no revision yet" in " ".join(warned.split()), warned
    assert "new revision migrations/versions/" in user.run(
        'datalayer migrations new -m "add releases"'
    )
    applied = user.run("datalayer apply")
    assert "table 'releases' exists" in applied and "topic 'release.events'" in applied, applied
    assert "add releases" in user.run("datalayer migrations history")
    (user.folder / "use_releases.py").write_text(USE_THEM)
    assert "every new pattern works" in user.run("python use_releases.py")

    # 6. The features commands with the documented CSV, and --json for scripts.
    user.run(
        "datalayer features materialize release_features "
        "--start 2026-11-17T00:00:00Z --end 2026-11-20T12:00:00Z"
    )
    online = json.loads(
        user.run(
            "datalayer features online release_features "
            "--row service_id=svc-01,account_id=acct-1 --json",
            ours=False,  # JSON is for scripts, on one line
        )
    )["features"]
    assert set(online) >= {"service_alert_counts__alerts_1h", "account_profile__plan_rank"}
    user.run(
        "datalayer features historical service_features --entities entities.csv "
        "--output training.csv"
    )
    training = pd.read_csv(user.folder / "training.csv")
    entities = pd.read_csv(user.folder / "entities.csv")
    assert training[["service_id", "account_id"]].values.tolist() == (
        entities[["service_id", "account_id"]].values.tolist()
    )
    assert "service_alert_counts__alerts_1h" in training.columns
    for command in ("validate --json", "describe --json", "doctor --json"):
        json.loads(user.run(f"datalayer {command}", ours=False))
