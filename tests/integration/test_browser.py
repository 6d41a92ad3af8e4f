"""tests/browser.py can fail: each kind of problem a page can have is reported, a page with
content is not blank and an empty one is, a page that never finishes fails within its timeout,
and no Chromium process outlives a call."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests import browser
from tests.browser import ChromiumError, blank, open_in_chromium

#: A report-like page: an inline SVG bar chart with axis labels and a table, no script.
CONTENT = """<!doctype html>
<html><head><meta charset="utf-8"><title>Skew report</title>
<style>body { font-family: sans-serif; margin: 24px } td, th { padding: 4px 12px }</style>
</head><body>
<h1>Feature skew</h1>
<svg width="480" height="240" role="img" aria-label="mismatches per feature">
  <line x1="40" y1="200" x2="460" y2="200" stroke="#333"/>
  <line x1="40" y1="20" x2="40" y2="200" stroke="#333"/>
  <rect x="60" y="80" width="60" height="120" fill="#4477aa"/>
  <rect x="160" y="140" width="60" height="60" fill="#ee6677"/>
  <rect x="260" y="40" width="60" height="160" fill="#228833"/>
  <text x="70" y="220">age</text><text x="170" y="220">city</text><text x="270" y="220">score</text>
</svg>
<table><tr><th>feature</th><th>mismatches</th><th>largest difference</th></tr>
<tr><td>age</td><td>12</td><td>3</td></tr><tr><td>city</td><td>6</td><td>-</td></tr>
<tr><td>score</td><td>16</td><td>0.25</td></tr></table>
</body></html>
"""


def page(tmp_path: Path, body: str, title: str = "t") -> Path:
    file = tmp_path / "page.html"
    file.write_text(f"<!doctype html><html><head><title>{title}</title></head><body>{body}")
    return file


def processes_naming(folders: list[str]) -> dict[int, str]:
    """Live processes (not zombies waiting for init to reap them) whose command line names
    one of ``folders``: every Chromium process has its profile folder there."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(folder in command for folder in folders):
            found[int(entry.name)] = command[:120]
    return found


@pytest.fixture(autouse=True)
def no_browser_left(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test's browsers, by their temp folders (other tests of the machine may run one):
    none of their processes outlives the call."""
    browsers: list[browser._Browser] = []
    start = browser._Browser.__init__

    def recorded(self: browser._Browser, *args: Any) -> None:
        start(self, *args)
        browsers.append(self)

    monkeypatch.setattr(browser._Browser, "__init__", recorded)
    yield
    assert all(b.process.poll() is not None for b in browsers), "Chromium still runs"
    left = processes_naming([str(b.tmp) for b in browsers])
    assert not left, f"Chromium processes outlived the call: {left}"


def test_console_error_is_reported(tmp_path: Path) -> None:
    html = page(tmp_path, '<p>x</p><script>console.log("fine"); console.error("bad", 42)</script>')
    rendered = open_in_chromium(html, tmp_path / "shot.png")
    assert rendered.console_errors == ["bad 42 (page.html:1)"], rendered.errors
    assert not rendered.page_errors and not rendered.failed_requests, rendered.errors


def test_uncaught_errors_and_rejections_are_reported(tmp_path: Path) -> None:
    html = page(
        tmp_path,
        "<p>x</p><script>setTimeout(() => { throw new TypeError('late') });"
        "Promise.reject(new Error('refused')); undefinedFunction()</script>",
    )
    rendered = open_in_chromium(html, tmp_path / "shot.png")
    errors = "\n".join(rendered.page_errors)
    assert len(rendered.page_errors) == 3, rendered.errors
    for expected in (
        "Uncaught ReferenceError: undefinedFunction is not defined",
        "Uncaught (in promise) Error: refused",
        "Uncaught TypeError: late",
    ):
        assert expected in errors, rendered.errors
    assert not rendered.console_errors and not rendered.failed_requests, rendered.errors


def test_external_requests_are_reported_and_never_leave_the_browser(tmp_path: Path) -> None:
    with socket.socket() as listener:  # a local server the page names: it must hear nothing
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        html = page(
            tmp_path,
            f'<img src="http://127.0.0.1:{port}/x.png"><img src="missing.png">'
            f'<script src="https://cdn.example.com/lib.js"></script>'
            f"<script>fetch('http://127.0.0.1:{port}/data').catch(() => {{}})</script>",
        )
        rendered = open_in_chromium(html, tmp_path / "shot.png")
        with pytest.raises(BlockingIOError):
            listener.accept()
    requests = "\n".join(rendered.failed_requests)
    assert len(rendered.failed_requests) == 4, rendered.errors
    for url in (
        f"GET http://127.0.0.1:{port}/x.png: not a local resource",
        f"GET http://127.0.0.1:{port}/data: not a local resource",
        "GET https://cdn.example.com/lib.js: not a local resource",
        "missing.png: net::ERR_FILE_NOT_FOUND",  # a local file that is not there fails too
    ):
        assert url in requests, rendered.errors
    # the browser logs each failed load as a console error too, as DevTools shows it
    assert all("Failed to load resource" in e for e in rendered.console_errors), rendered.errors


def test_a_page_with_content_renders_without_errors_and_is_not_blank(tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    html.write_text(CONTENT)
    rendered = open_in_chromium(html, tmp_path / "out" / "report.png", width=800, height=600)
    assert rendered.errors == []
    assert rendered.title == "Skew report"
    assert rendered.screenshot == tmp_path / "out" / "report.png"
    with Image.open(rendered.screenshot) as image:
        assert image.size == (800, 600)
    assert not blank(rendered.screenshot)


def test_a_script_acts_on_the_page_and_its_throw_is_a_page_error(tmp_path: Path) -> None:
    html = page(tmp_path, "<button onclick=\"this.textContent = 'clicked'\">press</button>")
    script = (
        "(() => { const b = document.querySelector('button'); b.click(); return b.textContent; })()"
    )
    done = open_in_chromium(html, tmp_path / "shot.png", script=script)
    assert (done.evaluated, done.errors) == ("clicked", [])
    thrown = open_in_chromium(html, tmp_path / "shot.png", script="missing.call()")
    assert thrown.evaluated is None
    assert len(thrown.page_errors) == 1 and "missing is not defined" in thrown.page_errors[0]


def test_an_empty_page_is_blank(tmp_path: Path) -> None:
    rendered = open_in_chromium(page(tmp_path, "", title=""), tmp_path / "shot.png")
    assert rendered.errors == [] and rendered.title == ""
    assert blank(rendered.screenshot)


def test_a_page_that_never_finishes_fails_within_its_timeout(tmp_path: Path) -> None:
    html = page(tmp_path, "<script>console.error('looping'); for (;;) {}</script>")
    started = time.monotonic()
    with pytest.raises(ChromiumError, match=r"timed out waiting for the load event") as caught:
        open_in_chromium(html, tmp_path / "shot.png", timeout=5)
    assert time.monotonic() - started < 5 + 5  # the kill is bounded too
    assert "looping" in str(caught.value)  # what it saw before
    assert not (tmp_path / "shot.png").exists()


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        ("white", True),
        ("one box", True),  # two colours: a page that drew one flat rectangle
        ("a few stray pixels", True),
        ("three flat bars", False),
        ("a line of text", False),
    ],
)
def test_blank_judges_screenshots(tmp_path: Path, pixels: str, expected: bool) -> None:
    image = Image.new("RGB", (400, 300), "white")
    if pixels == "one box":
        image.paste((68, 119, 170), (50, 50, 150, 250))
    elif pixels == "a few stray pixels":
        for x, colour in ((1, (250, 250, 250)), (2, (0, 0, 0))):
            image.putpixel((x, 1), colour)
    elif pixels == "three flat bars":
        for i, colour in enumerate([(68, 119, 170), (238, 102, 119), (34, 136, 51)]):
            image.paste(colour, (50 + 100 * i, 100, 100 + 100 * i, 250))
    elif pixels == "a line of text":
        from PIL import ImageDraw

        ImageDraw.Draw(image).text((10, 10), "mismatches: 12", fill="black")
    file = tmp_path / "shot.png"
    image.save(file)
    assert blank(file) is expected
