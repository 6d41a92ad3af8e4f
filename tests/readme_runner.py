"""Runs the README's code blocks as written, in order, in the folder of the README.

The line before each fenced block says what it is (an HTML comment, invisible on GitHub):

- ``<!-- readme: run -->``: run in order on the embedded profile: Python blocks in one
  namespace, shell blocks by bash (``set -e``) with whatever ``datalayer`` is on the PATH;
- ``<!-- readme: file NAME -->``: the block is the content of the file NAME, written there;
- ``<!-- readme: merge datalayer.yaml -->``: the block's keys are merged into the registry;
- ``<!-- readme: illustrative -->``: not run (it needs other servers, or it is a shape to
  copy), but it must parse (``tests/integration/test_readme.py`` checks that).

What a block prints must fit in 100 columns, with nothing cut (no ``…``) and no traceback.
``python -m tests.readme_runner`` runs the README of the working directory, as a user who
copies each block into a terminal would, with the interpreter that runs it;
``tests/integration/test_first_hour.py`` does so on a fresh clone.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: The terminal a new user is assumed to have; output wider than this, or cut to fit, fails.
WIDTH = 100
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


def blocks(readme: Path) -> list[Block]:
    """Every fenced block of ``readme``, with the marker on the line before it (if any)."""
    text = readme.read_text()
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


def output_problems(output: str) -> list[str]:
    """What a new user would trip over in a command's output: a traceback, lines wider than
    the terminal, a value cut to fit."""
    problems = []
    if "Traceback (most recent call last)" in output:
        problems.append("a traceback")
    problems += [f"wider than {WIDTH} columns: {line!r}" for line in _wide(output)]
    problems += [f"cut: {line!r}" for line in output.splitlines() if "…" in line]
    return problems


def _wide(output: str) -> list[str]:
    return [line for line in output.splitlines() if len(line.rstrip()) > WIDTH]


def run(folder: Path) -> int:
    """Run the README of ``folder`` there, block after block; returns how many blocks ran.
    Raises ``AssertionError`` naming the block that failed, with its output."""
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    ran = 0
    try:
        for block in blocks(folder / "README.md"):
            if block.kind in ("illustrative", None):
                continue
            ran += 1
            if block.kind == "file":
                assert block.arg, block.where
                (folder / block.arg).write_text(block.body)
                for name in [m for m in sys.modules if m == Path(block.arg).stem]:
                    del sys.modules[name]  # a file written again is imported again
            elif block.kind == "merge":
                registry = folder / (block.arg or "datalayer.yaml")
                merged = _merge(yaml.safe_load(registry.read_text()), yaml.safe_load(block.body))
                registry.write_text(yaml.safe_dump(merged, sort_keys=False))
            elif block.lang == "python":
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(compile(block.body, block.where, "exec"), namespace)
                _check(block, 0, printed.getvalue())
            elif block.lang == "bash":
                done = subprocess.run(
                    ["bash", "-e", "-c", block.body],
                    cwd=folder,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                _check(block, done.returncode, done.stdout + done.stderr)
            else:
                raise AssertionError(f"{block.where}: cannot run a {block.lang} block")
    finally:
        sys.path.remove(str(folder))
        dl = namespace.get("dl")
        if dl is not None:
            dl.close()
    return ran


def _check(block: Block, status: int, output: str) -> None:
    problems = ([f"exit status {status}"] if status else []) + output_problems(output)
    assert not problems, f"{block.where}: {'; '.join(problems)}\n{output}"


def _merge(base: Any, extra: Any) -> Any:
    if isinstance(base, dict) and isinstance(extra, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in extra.items()}}
    return extra


def main() -> int:
    try:
        ran = run(Path.cwd())
    except Exception:
        traceback.print_exc(limit=-3)
        return 1
    print(f"README.md: {ran} blocks ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
