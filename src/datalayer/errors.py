"""One exception root for the whole library, with a few subclasses callers can act on.

The driver's own exception is kept as ``__cause__``; messages never carry a URL's password.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_URL_PASSWORD = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<secret>\S+)@")


def redact(text: str) -> str:
    """Replace the password of every URL in ``text`` with ``***``.

    Greedy up to the last ``@`` of the URL, so an unencoded ``@`` or ``/`` in a password is
    hidden too (at the price of hiding a little more in the rare URL with ``@`` in its query).
    """
    return _URL_PASSWORD.sub(r"\g<scheme>***@", text)


class DataLayerError(Exception):
    """Root of every error raised by datalayer."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(DataLayerError):
    """The registry file is invalid: names the file, the YAML path and what would be valid."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        path: Sequence[str | int] = (),
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.path = ".".join(str(p) for p in path)
        self.line = line
        self.column = column
        where = file or "<config>"
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        prefix = f"{where}: {self.path}: " if self.path else f"{where}: "
        super().__init__(prefix + message)


class NotFound(DataLayerError, LookupError):
    """An unknown pattern, profile or store name, or a missing record where one is required."""


class PayloadValidationError(DataLayerError, ValueError):
    """A payload failed its pattern's schema; nothing was written."""

    def __init__(self, pattern: str, problems: Sequence[tuple[str, str]]) -> None:
        self.pattern = pattern
        self.problems = list(problems)
        detail = "; ".join(f"{field or '<payload>'}: {msg}" for field, msg in self.problems)
        super().__init__(f"pattern '{pattern}': payload rejected, nothing written ({detail})")


class QueryError(DataLayerError, ValueError):
    """A filter, sort or update uses an operator or field the contract does not allow."""


class StoreUnavailable(DataLayerError):
    """A store cannot be reached right now; retrying later may succeed."""


class MissingDriver(DataLayerError, ImportError):
    """A store type needs a driver that is not installed; names the extra that brings it."""


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
