"""What every command shares: the consoles, the --config/--profile options, error reporting
and progress bars."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from datalayer.errors import DataLayerError, MissingDriver, redact

#: No emoji codes: a key prefix such as ``a:b:`` must print as written, not as an emoji.
console = Console(emoji=False)
err_console = Console(stderr=True, soft_wrap=True, emoji=False)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Registry file (default: $DATALAYER_CONFIG, else ./datalayer.yaml).",
        show_default=False,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        help="Profile to use (default: $DATALAYER_PROFILE, else local).",
        show_default=False,
    ),
]

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of text, for scripts.")
]

#: The loggers of the store drivers and the libraries under them, quiet unless --verbose.
DRIVER_LOGGERS = (
    "feast",
    "alembic",
    "librdkafka",
    "pymongo",
    "redis",
    "sqlalchemy",
    "py.warnings",
    "dask",
    "urllib3",
)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time (a test runner swaps it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def configure_logging(verbose: bool) -> None:
    """One stderr handler for every log line: datalayer's warnings, and with ``verbose``
    everything at INFO from datalayer and the drivers (librdkafka's own lines too, see
    ``KafkaConfig.client_config``). Python warnings (Feast raises a few on every call) go
    through logging, so they are quiet too unless asked for."""
    root = logging.getLogger()
    if not any(isinstance(handler, _Stderr) for handler in root.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.captureWarnings(True)
    for name in DRIVER_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)


def fitted_table(
    title: str,
    rows: list[dict[str, str]],
    *,
    keep: list[str],
    drop_first: list[str],
    width: int,
) -> Table:
    """A table that fits ``width`` without cutting a value: the ``keep`` columns (ids, names)
    and the ``drop_first`` ones never wrap; the ``drop_first`` columns go, in order, while
    they would not fit next to a readable share of the others, which wrap."""
    columns = list(rows[0]) if rows else [*keep, *drop_first]

    def longest(column: str) -> int:
        return max([len(column), *(len(row[column]) for row in rows)])

    whole = [*keep, *drop_first]
    for dropped in [*drop_first, None]:
        needed = sum(longest(c) + 3 if c in whole else min(longest(c), 16) + 3 for c in columns)
        if needed + 1 <= width or dropped is None:
            break
        columns.remove(dropped)
    table = Table(title=title)
    for column in columns:
        if column in whole:
            table.add_column(column, no_wrap=True, min_width=longest(column))
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(row[c]) for c in columns))
    return table


def shown_path(path: Path) -> str:
    """A path as short as it is unambiguous: relative when it is under the working directory."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


F = TypeVar("F", bound=Callable[..., Any])


def one_line(text: str) -> str:
    """A message on one line: a driver's multi-line detail folded into it."""
    return " ".join(text.split())


def reports_errors(command: F) -> F:
    """Print any error as one clear line on stderr and exit non-zero, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DataLayerError as exc:
            # A missing driver is named as such: it is fixed by an install, not by the registry.
            kind = "MissingDriver: " if isinstance(exc, MissingDriver) else ""
            err_console.print(
                f"[bold red]error:[/] {kind}{escape(one_line(str(exc)))}", highlight=False
            )
            raise typer.Exit(1) from None
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("DATALAYER_DEBUG"):
                raise
            err_console.print(
                f"[bold red]internal error:[/] "
                f"{escape(one_line(redact(f'{type(exc).__name__}: {exc}')))} "
                "(set DATALAYER_DEBUG=1 for the traceback)",
                highlight=False,
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def progress_bar(width: int = 36, *, transient: bool = False) -> Progress:
    """A Rich progress bar: description, bar, done/total and elapsed time."""
    return Progress(
        TextColumn(f"{{task.description:<{width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
    )
