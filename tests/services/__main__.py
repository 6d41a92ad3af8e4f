"""``python -m tests.services up|down|env|status|install [NAME...]``: real servers for development.

``up`` starts the servers in the background and prints ``export DATALAYER_...=...`` lines, so
``eval "$(scripts/services up)"`` points this shell at them; ``down`` stops them all.
``install`` only fetches or builds what the local processes need (into the cache), e.g. once
in CI before the tests, and installs the tools the tests run (Chromium), which are no servers:
``up`` and ``down`` never name them.
"""

from __future__ import annotations

import argparse
import sys
import time

from datalayer.errors import redact
from tests.services.base import Running
from tests.services.launcher import (
    ENV_VARS,
    NAMES,
    ROOT,
    TOOLS,
    Launcher,
    install,
    load_state,
    save_state,
    stop,
)
from tests.services.process import ServiceError

STATE_FILE = ROOT / ".datalayer" / "services.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/services", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "env", "status", "install"])
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *NAMES, *TOOLS],
        default=[],
        metavar="NAME",
        help=f"servers (default: all of {', '.join(NAMES)}); install also takes the tools "
        f"the tests run ({', '.join(TOOLS)}) and installs them too by default",
    )
    args = parser.parse_args(argv)
    if args.command == "install":
        try:
            for name in args.names or [*NAMES, *TOOLS]:
                started = time.monotonic()
                say(f"{name}: installing ...")
                install(name)  # the cache and PATH only, never the state folder
                say(f"{name}: installed ({time.monotonic() - started:.1f} s)")
        except ServiceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    tools = [n for n in args.names if n in TOOLS]
    if tools:
        parser.error(
            f"{', '.join(tools)}: a tool the tests run, not a server: only install takes it"
        )
    names = args.names or NAMES
    state = load_state(STATE_FILE)
    if args.command == "up":
        missing = [n for n in names if n not in state]
        if missing:
            launcher = Launcher()
            try:
                launcher.up(missing, say=say)
            except ServiceError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            state.update(launcher.running)
            save_state(STATE_FILE, state)
        print_env(state)
    elif args.command == "env":
        print_env(state)
    elif args.command == "status":
        for name, running in state.items():
            url = redact(running.url)
            print(f"{name:9} {running.mode:9} {url}  pids={running.pids} log={running.log}")
    else:
        for name in names:
            if name in state:
                stop(state.pop(name))
        save_state(STATE_FILE, state)
    return 0


def say(line: str) -> None:
    """A progress line, on stderr: stdout holds only what ``eval`` reads."""
    print(f"services: {line}", file=sys.stderr, flush=True)


def print_env(state: dict[str, Running]) -> None:
    for name, running in state.items():
        print(f"export {ENV_VARS[name]}='{running.url}'")


if __name__ == "__main__":
    sys.exit(main())
