"""Every code block of the README is marked: run as written (by ``tests/readme_runner.py``,
in ``test_first_hour.py``, on a fresh clone), or illustrative, and then it must parse."""

from __future__ import annotations

import csv
import io
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.readme_runner import blocks

ROOT = Path(__file__).resolve().parents[2]


def test_every_block_is_run_or_marked_illustrative_and_parses() -> None:
    found = blocks(ROOT / "README.md")
    assert len(found) >= 20
    unmarked = [b.where for b in found if b.kind is None]
    assert not unmarked, f"code blocks without a '<!-- readme: ... -->' line before: {unmarked}"
    assert len([b for b in found if b.kind == "run"]) >= 8
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
