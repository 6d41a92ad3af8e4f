"""The README's read-modify-write snippet runs as written on the embedded profile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import datalayer
from tests.example_project import copy_example

ROOT = Path(__file__).resolve().parents[2]


def snippet_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.S)
    assert match is not None, f"no python block after {heading!r}"
    return match.group(1)


def test_the_read_modify_write_snippet_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_example(tmp_path)
    monkeypatch.chdir(tmp_path)
    with datalayer.open("datalayer.yaml", "local") as dl:  # 'datalayer apply', Feast left out
        for store in ("sql", "docs"):
            dl.store(store).apply([p for p in dl.patterns.values() if p.store == store])
    code = snippet_after("### Read-modify-write safely")
    for _ in range(2):  # and again over what the first run wrote
        exec(compile(code, "README.md", "exec"), {})
    with datalayer.open("datalayer.yaml", "local") as dl:
        assert dl.transactional("accounts").get("acct-9")["plan"] == "team"  # type: ignore[index]
