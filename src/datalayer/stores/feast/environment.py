"""What surrounds a call into Feast: the variables its yaml reads, and its output kept quiet."""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from collections.abc import Iterator, Mapping

_ENV_LOCK = threading.RLock()


@contextlib.contextmanager
def feast_environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set the variables Feast expands in the yaml, only while Feast reads it."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in variables}
        os.environ.update(variables)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Feast prints progress to stdout and its DuckDB path warns on every query: keep both out
    of our output (and our CLI's tables)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield buffer
