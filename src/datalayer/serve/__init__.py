"""``datalayer serve``: the feature server model services call over HTTP.

Checks what can be checked before binding (a pattern to serve, every token set, no open
server off loopback unless asked), then runs the ASGI application of ``serve.app`` on uvicorn,
which drains in-flight requests on SIGTERM before it stops.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from datalayer.config import load
from datalayer.errors import ConfigError, DataLayerError, MissingDriver

#: Seconds in-flight requests get to finish after SIGTERM or Ctrl-C.
GRACE_SECONDS = 30


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(
    config: Path | None,
    profile: str | None,
    *,
    host: str,
    port: int,
    workers: int,
    insecure: bool = False,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    access_log: bool = True,
) -> None:
    try:
        import orjson  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise MissingDriver(
            f"the feature server needs {exc.name}: pip install 'datalayer[serve]'"
        ) from None
    registry = load(config, profile)
    file = str(registry.file)
    served = [n for n, p in registry.patterns.items() if p.category == "feature"]
    if not served:
        raise ConfigError("no feature pattern to serve; add one to 'patterns'", file=file)
    registry.serve.secrets(file)  # every token set, before anything binds
    if not registry.serve.tokens and not is_loopback(host) and not insecure:
        raise DataLayerError(
            f"refusing to serve on {host} without tokens: anyone who reaches it could read "
            "every feature; declare tokens in the registry's 'serve' block, bind to "
            "127.0.0.1, or pass --insecure"
        )
    if (certfile is None) != (keyfile is None):
        raise DataLayerError("--certfile and --keyfile go together (TLS needs both)")
    for path in (certfile, keyfile):
        if path is not None and not path.is_file():
            raise DataLayerError(f"no such file: {path}")
    if workers < 1:
        raise DataLayerError("--workers must be at least 1")
    # The workers read these: with several, each is a new interpreter.
    os.environ["DATALAYER_CONFIG"] = file
    os.environ["DATALAYER_PROFILE"] = registry.profile
    os.environ["DATALAYER_ACCESS_LOG"] = "1" if access_log else "0"
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="datalayer-metrics-")
    scheme = "https" if certfile else "http"
    print(
        f"serving {', '.join(served)} on {scheme}://{host}:{port} ({workers} worker"
        f"{'s' if workers > 1 else ''}, {len(registry.serve.tokens) or 'no'} token"
        f"{'' if len(registry.serve.tokens) == 1 else 's'}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    for stop in (signal.SIGINT, signal.SIGTERM):
        # uvicorn drains, then raises the signal again for this handler: a stop asked for is a
        # clean exit (status 0), with one worker or several
        signal.signal(stop, lambda *_: None)
    uvicorn.run(
        "datalayer.serve.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        log_level="warning",
        server_header=False,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )


def configure_access_log() -> None:
    """One JSON line per request on stderr, in every worker, unless turned off."""
    logger = logging.getLogger("datalayer.serve.access")
    if os.environ.get("DATALAYER_ACCESS_LOG", "1") == "0":
        logger.disabled = True
        return
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
