"""Open a self-contained HTML file in headless Chromium and say what went wrong in it.

``open_in_chromium(html, screenshot)`` loads the file in Debian's Chromium (installed by
``python -m tests.services install chromium`` when missing), waits for its load event and two
rendered frames, saves a PNG of the viewport and returns a ``Rendered``: console messages of
level error (``console.error``, failed ``console.assert``, and what the browser itself logs as
an error: a resource that failed, a blocked script), uncaught exceptions and unhandled
rejections, failed or forbidden requests, and the document's title. A self-contained page
needs no network: every request whose scheme is not file:, data:, blob: or about: is reported
and blocked before it leaves the browser, so a page that reaches out fails fast, not by hanging.

``blank(png)`` says whether a screenshot is one colour or nearly so (nothing was drawn).

It speaks the Chrome DevTools Protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out,
one JSON message per NUL-terminated chunk): no port to find or expose, no client library, and
Chromium exits by itself when the pipe closes, so a test process that dies leaves no browser
behind. The browser runs in a session of its own with a throwaway profile and is killed
(SIGKILL, its process group and every process naming its temp folder) whatever happens,
within ``timeout`` seconds of the call plus a few for the kill.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.services import chromium
from tests.services.process import process_tree

#: URL schemes a self-contained page may load; any other request is reported and blocked.
LOCAL_SCHEMES = frozenset({"file", "data", "blob", "about"})

#: Seconds of quiet after the page rendered, for errors thrown by timers and late promises.
SETTLE = 0.3

#: How the page is judged rendered: its fonts loaded and two animation frames drawn.
_RENDERED = """new Promise(done => document.fonts.ready.then(() =>
    requestAnimationFrame(() => requestAnimationFrame(() => done(document.title)))))"""


class ChromiumError(RuntimeError):
    """Chromium could not be started, crashed, or the page did not render in time."""


@dataclass(frozen=True)
class Rendered:
    """What a page did while it loaded and rendered, and where its screenshot is."""

    title: str
    screenshot: Path
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    #: What ``script`` returned (JSON values), when one was given.
    evaluated: Any = None

    @property
    def errors(self) -> list[str]:
        """Every problem, each prefixed with its kind: empty for a clean page."""
        return [
            *(f"console error: {m}" for m in self.console_errors),
            *(f"page error: {m}" for m in self.page_errors),
            *(f"request: {m}" for m in self.failed_requests),
        ]


def open_in_chromium(
    html: Path,
    screenshot: Path,
    *,
    width: int = 1280,
    height: int = 2000,
    timeout: float = 60,
    settle: float = SETTLE,
    script: str | None = None,
) -> Rendered:
    """Load ``html`` (a file) in headless Chromium with a ``width`` x ``height`` viewport, save a
    PNG of it to ``screenshot`` and return what went wrong. Raises ``ChromiumError`` when the
    browser cannot start or crashes, or when the page has not rendered within ``timeout``
    seconds (e.g. a script that never returns); the message then lists the errors seen so far.
    ``script``, a JavaScript expression (a promise is awaited), runs once the page rendered and
    before the screenshot, as a user's clicks would; its value is ``Rendered.evaluated``.
    """
    html = Path(html).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"no such HTML file: {html}")
    chromium.install()  # nothing to do when it is on PATH; not counted in ``timeout``
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(
        prefix="datalayer-chromium-", ignore_cleanup_errors=True
    ) as tmp:
        browser = _Browser(Path(tmp), width, height)
        try:
            page = _Page(browser, deadline)
            page.open(html.as_uri(), width, height)
            title = page.rendered(settle)
            evaluated = page.evaluate(script, settle) if script is not None else None
            png = page.screenshot()
        finally:
            browser.kill()
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(png)
    return Rendered(
        title=title,
        screenshot=screenshot,
        console_errors=page.console_errors,
        page_errors=page.page_errors,
        failed_requests=list(page.failed_requests.values()),
        evaluated=evaluated,
    )


def blank(png: Path, *, min_colours: int = 3, min_stddev: float = 1.0) -> bool:
    """True when the image at ``png`` has fewer than ``min_colours`` distinct colours, or when
    no colour channel varies by a standard deviation of ``min_stddev`` (out of 255) or more:
    an empty page, a single coloured box, a few stray pixels."""
    from PIL import Image, ImageStat

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    if rgb.getcolors(maxcolors=min_colours - 1) is not None:
        return True
    return max(ImageStat.Stat(rgb).stddev) < min_stddev


class _Browser:
    """A headless Chromium with a throwaway profile in ``tmp``, driven over a pipe."""

    def __init__(self, tmp: Path, width: int, height: int) -> None:
        self.tmp = tmp
        self.log = tmp / "chromium.log"
        command = [
            chromium.executable(),
            "--headless",
            *(["--no-sandbox"] if os.geteuid() == 0 else []),  # it refuses to run as root else
            "--remote-debugging-pipe",
            f"--user-data-dir={tmp / 'profile'}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            "--disable-dev-shm-usage",  # /dev/shm may be small (containers)
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--mute-audio",
            "about:blank",
        ]
        # Chromium reads commands from fd 3 and writes to fd 4; bash moves the pipes there (dash
        # takes no fd above 9), then becomes Chromium, in a session of its own.
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        theirs = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]
        for fd in (to_browser, from_browser):
            os.close(fd)
        script = f'exec "$@" 3<&{theirs[0]} 4>&{theirs[1]} {theirs[0]}<&- {theirs[1]}>&-'
        env = {
            **os.environ,
            # its crash handler's database (under ~/.config otherwise), so kill() finds it
            "XDG_CONFIG_HOME": str(tmp / "config"),
        }
        self._buffer = b""
        try:
            with open(self.log, "wb") as log:
                self.process = subprocess.Popen(
                    ["bash", "-c", script, "chromium", *command],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=theirs,
                    env=env,
                    start_new_session=True,
                )
        except BaseException:
            os.close(self._read)
            os.close(self._write)
            raise
        finally:
            for fd in theirs:
                os.close(fd)

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._write, data) :]
        except BrokenPipeError:
            raise ChromiumError(f"Chromium exited{self._tail()}") from None

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None once ``deadline`` has passed."""
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._read], [], [], remaining)[0]:
                return None
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                self.process.poll()
                raise ChromiumError(
                    f"Chromium closed its DevTools pipe (exit code {self.process.returncode})"
                    + self._tail()
                )
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def kill(self) -> None:
        """SIGKILL Chromium's process group, its descendants and any process that names its
        temp folder (the crash handler, which leaves the group); wait for them, bounded."""
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
        # the group and the tree while Chromium is not reaped (its pid cannot be reused yet)
        pids = set(process_tree(self.process.pid)) if self.process.poll() is None else set()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            pids |= self._naming_tmp()  # every child has --user-data-dir=<tmp>/profile
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=max(0.1, min(2.0, deadline - time.monotonic())))
            if (self.process.poll() is not None and not self._naming_tmp()) or (
                time.monotonic() > deadline
            ):
                return
            pids = set()
            time.sleep(0.05)

    def _naming_tmp(self) -> set[int]:
        """Live processes whose command line contains this browser's temp folder."""
        marker = str(self.tmp).encode()
        found = set()
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours to read
        return found

    def _tail(self, lines: int = 15) -> str:
        """The last lines of Chromium's own output, without its D-Bus complaints (no bus here)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        kept = [line for line in text if "dbus" not in line.lower()][-lines:]
        return "\n--- Chromium's last lines ---\n" + "\n".join(kept) if kept else ""


class _Page:
    """One tab of ``browser``, with what it reported so far; every wait ends at ``deadline``."""

    def __init__(self, browser: _Browser, deadline: float) -> None:
        self.browser = browser
        self.deadline = deadline
        self.session: str | None = None
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.failed_requests: dict[str, str] = {}  # by URL, in the order they were seen
        self._urls: dict[str, str] = {}  # request id -> URL
        self._loaded = False
        self._next_id = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "Runtime.consoleAPICalled": self._console,
            "Runtime.exceptionThrown": self._exception,
            "Log.entryAdded": self._log_entry,
            "Network.requestWillBeSent": self._request,
            "Network.loadingFailed": self._loading_failed,
            "Network.webSocketCreated": lambda p: self._forbidden(p["url"], "WebSocket"),
            "Fetch.requestPaused": self._paused,
            "Page.loadEventFired": self._load_event,
            "Page.javascriptDialogOpening": self._dialog,
            "Inspector.targetCrashed": self._crashed,
        }

    def open(self, url: str, width: int, height: int) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
        )
        self.session = attached["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page", "Inspector"):
            self.call(f"{domain}.enable")
        self.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]})
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        self._loaded = False
        navigated = self.call("Page.navigate", {"url": url})
        if navigated.get("errorText"):
            raise ChromiumError(f"{url} did not load: {navigated['errorText']}")
        self.wait_for(lambda: self._loaded, "the load event")

    def rendered(self, settle: float) -> str:
        """Wait for fonts and two frames, then ``settle`` seconds of events; the title."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": _RENDERED, "awaitPromise": True, "returnByValue": True},
            what="the page to render (its fonts and two frames)",
        )
        if "exceptionDetails" in result:
            raise ChromiumError(f"the page did not render: {_exception_text(result)}")
        title = str(result["result"].get("value", ""))
        self._settle(settle)
        return title

    def evaluate(self, script: str, settle: float) -> Any:
        """Run ``script`` in the page (awaited), then ``settle`` seconds of events; its value.
        An exception it throws is a page error."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": script, "awaitPromise": True, "returnByValue": True},
            what="the script to finish",
        )
        if "exceptionDetails" in result:
            self.page_errors.append(f"the test's script threw: {_exception_text(result)}")
        self._settle(settle)
        return result.get("result", {}).get("value")

    def _settle(self, seconds: float) -> None:
        """Handle what the page reports for ``seconds`` more (timers, late promises)."""
        quiet_until = min(time.monotonic() + seconds, self.deadline)
        while (message := self.browser.receive(quiet_until)) is not None:
            self._dispatch(message)

    def screenshot(self) -> bytes:
        shot = self.call("Page.captureScreenshot", {"format": "png", "fromSurface": True})
        return base64.b64decode(shot["data"])

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        browser: bool = False,
        what: str | None = None,
    ) -> dict[str, Any]:
        """Send a command and return its result; events that come first are handled."""
        ident = self.send(method, params, browser=browser)
        while True:
            message = self._receive(what or method)
            if message.get("id") == ident:
                if "error" in message:
                    raise ChromiumError(f"{method}: {message['error'].get('message')}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False
    ) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if not browser and self.session is not None:
            message["sessionId"] = self.session
        self.browser.send(message)
        return self._next_id

    def wait_for(self, done: Callable[[], bool], what: str) -> None:
        while not done():
            self._receive(what)

    def _receive(self, waiting_for: str) -> dict[str, Any]:
        message = self.browser.receive(self.deadline)
        if message is None:
            seen = "\n".join(
                [*self.console_errors, *self.page_errors, *self.failed_requests.values()]
            )
            raise ChromiumError(
                f"timed out waiting for {waiting_for} (a script that never returns?)"
                + (f"; seen so far:\n{seen}" if seen else "")
            )
        self._dispatch(message)
        return message

    def _dispatch(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(message.get("method", ""))
        if handler is not None and message.get("sessionId") in (None, self.session):
            handler(message.get("params", {}))

    # events

    def _console(self, params: dict[str, Any]) -> None:
        if params["type"] in ("error", "assert"):
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            frames = params.get("stackTrace", {}).get("callFrames", [])
            where = f" ({_where(frames[0]['url'], frames[0]['lineNumber'])})" if frames else ""
            self.console_errors.append(f"{text}{where}")

    def _exception(self, params: dict[str, Any]) -> None:
        self.page_errors.append(_exception_text(params))

    def _log_entry(self, params: dict[str, Any]) -> None:
        entry = params["entry"]
        if entry.get("level") == "error":
            url = entry.get("url")
            self.console_errors.append(f"{entry['text']} ({url})" if url else entry["text"])

    def _request(self, params: dict[str, Any]) -> None:
        url = params["request"]["url"]
        self._urls[params["requestId"]] = url
        self._forbidden(url, params["request"].get("method", "GET"))

    def _forbidden(self, url: str, how: str) -> None:
        if urlsplit(url).scheme not in LOCAL_SCHEMES:
            self.failed_requests.setdefault(
                url, f"{how} {url}: not a local resource (a self-contained page needs no network)"
            )

    def _loading_failed(self, params: dict[str, Any]) -> None:
        url = self._urls.get(params["requestId"], f"request {params['requestId']}")
        self.failed_requests.setdefault(url, f"{url}: {params.get('errorText', 'failed')}")

    def _paused(self, params: dict[str, Any]) -> None:
        url = params["request"]["url"]
        if urlsplit(url).scheme in LOCAL_SCHEMES:
            self.send("Fetch.continueRequest", {"requestId": params["requestId"]})
        else:
            self._forbidden(url, params["request"].get("method", "GET"))
            self.send(
                "Fetch.failRequest",
                {"requestId": params["requestId"], "errorReason": "BlockedByClient"},
            )

    def _load_event(self, _params: dict[str, Any]) -> None:
        self._loaded = True

    def _dialog(self, params: dict[str, Any]) -> None:
        # a dialog blocks the page until answered: answer it, and say it opened
        self.console_errors.append(f"{params['type']}() dialog opened: {params['message']!r}")
        self.send("Page.handleJavaScriptDialog", {"accept": False})

    def _crashed(self, _params: dict[str, Any]) -> None:
        raise ChromiumError("the page's renderer crashed" + self.browser._tail())


def _remote_text(arg: dict[str, Any]) -> str:
    """A console argument as DevTools shows it, roughly."""
    if "value" in arg:
        value = arg["value"]
        return value if isinstance(value, str) else json.dumps(value)
    preview = arg.get("preview")
    if preview and arg.get("subtype") != "error":  # {a: 1, b: 'x'}, [1, 2]
        items = [
            value if preview.get("subtype") == "array" else f"{p['name']}: {value}"
            for p in preview.get("properties", [])
            for value in [repr(p["value"]) if p.get("type") == "string" else p["value"]]
        ]
        more = ", …" if preview.get("overflow") else ""
        inside = ", ".join(items) + more
        return f"[{inside}]" if preview.get("subtype") == "array" else f"{{{inside}}}"
    return str(arg.get("unserializableValue") or arg.get("description") or arg.get("type"))


def _exception_text(params: dict[str, Any]) -> str:
    """'Uncaught Error: boom' (or 'Uncaught (in promise) ...') with its stack and location."""
    details = params["exceptionDetails"]
    exception = details.get("exception") or {}
    text = str(details.get("text", "Uncaught"))
    if exception:
        text = f"{text} {_remote_text(exception)}"
    url = details.get("url")
    if url and url not in text:  # a thrown Error's description has its stack already
        text += f" ({_where(url, details.get('lineNumber', 0))})"
    return text


def _where(url: str, line: int) -> str:
    return f"{url.rsplit('/', 1)[-1] or url}:{line + 1}"
