"""Every code block of the README is run as written, or checked as an illustration.

The line before each fenced block says what it is (an HTML comment, invisible on GitHub):

- ``<!-- readme: run -->``: run in order, in a copy of the example project on the embedded
  profile: Python blocks in one namespace, shell blocks by bash (``set -e``) with a
  ``datalayer`` command that is this interpreter's CLI;
- ``<!-- readme: file NAME -->``: the block is the content of the file NAME, written there;
- ``<!-- readme: merge datalayer.yaml -->``: the block's keys are merged into the registry;
- ``<!-- readme: illustrative -->``: not run (it needs other servers, or it is a shape to
  copy), but it must parse: Python compiles, YAML and TOML load, shell passes ``bash -n``.

A block without a marker fails the first test, so a new snippet is run or says why not.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.example_project import copy_example

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[a-z]+)\n(?P<body>.*?)^(?P=indent)```$", re.S | re.M
)
_MARKER = re.compile(r"<!-- readme: (?P<kind>run|file|merge|illustrative)(?: (?P<arg>\S+))? -->")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str
    kind: str | None
    arg: str | None

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def blocks() -> list[Block]:
    text = (ROOT / "README.md").read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").splitlines()
        marker = _MARKER.search(before[-1]) if before else None
        found.append(
            Block(
                line=text.count("\n", 0, match.start()) + 1,
                lang=match["lang"],
                body=textwrap.dedent(match["body"]),
                kind=marker["kind"] if marker else None,
                arg=marker["arg"] if marker else None,
            )
        )
    return found


def test_every_block_is_run_or_marked_illustrative_and_parses() -> None:
    found = blocks()
    assert len(found) >= 20
    unmarked = [b.where for b in found if b.kind is None]
    assert not unmarked, f"code blocks without a '<!-- readme: ... -->' line before: {unmarked}"
    for block in found:
        if block.lang == "python":
            compile(block.body, block.where, "exec")
        elif block.lang == "yaml":
            assert yaml.safe_load(block.body) is not None, block.where
        elif block.lang == "toml":
            tomllib.loads(block.body)
        elif block.lang == "bash":
            checked = subprocess.run(["bash", "-n"], input=block.body, text=True)
            assert checked.returncode == 0, block.where
        elif block.lang == "csv":
            assert len({len(row) for row in csv.reader(io.StringIO(block.body))}) == 1, block.where
        else:
            pytest.fail(f"{block.where}: no check for {block.lang} blocks")


def test_the_readme_runs_as_written_on_the_embedded_profile(tmp_path: Path) -> None:
    copy_example(tmp_path, migrations=True)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    (bin_dir / "datalayer").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m datalayer.cli "$@"\n'
    )
    (bin_dir / "datalayer").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
        "COLUMNS": "100",
    }
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        ran = 0
        for block in blocks():
            if block.kind == "illustrative":
                continue
            ran += 1
            if block.kind == "file":
                assert block.arg, block.where
                (tmp_path / block.arg).write_text(block.body)
                for name in [m for m in sys.modules if m == Path(block.arg).stem]:
                    del sys.modules[name]  # a file written again is imported again
            elif block.kind == "merge":
                registry = tmp_path / (block.arg or "datalayer.yaml")
                merged = _merge(yaml.safe_load(registry.read_text()), yaml.safe_load(block.body))
                registry.write_text(yaml.safe_dump(merged, sort_keys=False))
            elif block.lang == "python":
                exec(compile(block.body, block.where, "exec"), namespace)
            elif block.lang == "bash":
                done = subprocess.run(
                    ["bash", "-e", "-c", block.body],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert done.returncode == 0, f"{block.where}:\n{done.stdout}\n{done.stderr}"
                assert "Traceback" not in done.stderr, f"{block.where}:\n{done.stderr}"
            else:
                pytest.fail(f"{block.where}: cannot run a {block.lang} block")
        assert ran >= 8
    finally:
        os.chdir(cwd)
        sys.path.remove(str(tmp_path))
        dl = namespace.get("dl")
        if dl is not None:
            dl.close()


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in extra.items()}}
    return extra
