"""One exception root for the whole library, with a few subclasses callers can act on.

The driver's own exception is kept as ``__cause__``; messages never carry a URL's password.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Sequence

#: A URL's ``user:password@``. The password ends at the last ``@`` of its word that is followed
#: by a host (so one holding ``@`` or ``/`` is hidden whole); a password with a space runs on to
#: the next such ``@``, never into another URL.
_HOST_AHEAD = r"(?=@[^\s@/?#]*(?:[/?#\s,;)'\"]|$))"
_URL_PASSWORD = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)"
    rf"(?P<secret>\S*{_HOST_AHEAD}|(?:(?!://)[^\n])*?{_HOST_AHEAD})@"
)
#: ``password=...`` and its kin, in a URL's query, a connection string or a driver's message.
_KEY_SECRET = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|sasl\.password)\s*[=:]\s*)"
    r"(?P<secret>'[^']*'|\"[^\"]*\"|[^&\s,;]+)"
)


def redact(text: str) -> str:
    """Hide every password in ``text``: a URL's, and any ``password=`` (or token, secret, key)
    value, quoted or not, as ``***``.

    A URL's password runs to the last ``@`` before its host, so one holding ``@``, ``/`` or a
    space is hidden whole (at the price of hiding a little more in a rare message).
    """
    text = _URL_PASSWORD.sub(r"\g<scheme>***@", text)
    return _KEY_SECRET.sub(r"\g<key>***", text)


#: The longest message an error keeps: one quoting a mebibyte of input would flood every log.
MAX_MESSAGE = 2_000
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = _SHOWN.maxlong = 80
_SHOWN.maxlevel = 3


def shown(value: object) -> str:
    """A value as a message quotes it: its repr (escapes keep it printable), cut short."""
    return _SHOWN.repr(value)


def _bounded(message: str) -> str:
    """``message`` with what no terminal or log encoder takes (a lone surrogate) escaped, cut
    to ``MAX_MESSAGE`` characters."""
    if not message.isascii():
        try:
            message.encode()
        except UnicodeEncodeError:
            message = message.encode(errors="backslashreplace").decode()
    if len(message) > MAX_MESSAGE:
        half, cut = MAX_MESSAGE // 2, len(message) - MAX_MESSAGE
        message = f"{message[:half]}... ({cut:,} characters cut) ...{message[-half:]}"
    return message


class StoreLabel(str):
    """A store as messages name it (``store 'x' (postgres at ...)``) that also knows its bare
    name ``x``, so an error raised with it keeps that name as ``.store``."""

    name: str

    def __new__(cls, text: str, name: str) -> StoreLabel:
        label = super().__new__(cls, text)
        label.name = name
        return label


class DataLayerError(Exception):
    """Root of every error raised by datalayer.

    ``store`` is the name of the store that raised it (as the profile names it); None when the
    error was found before any store was asked: a payload that fails its schema, a filter
    outside the language, an unknown pattern.
    """

    def __init__(self, message: str, *, store: str | None = None) -> None:
        super().__init__(_bounded(redact(message)))
        self.store = store

    @property
    def message(self) -> str:
        return str(self.args[0])

    @property
    def orig(self) -> BaseException | None:
        """The driver's own exception behind this one (through SQLAlchemy's wrapper), if any."""
        cause = self.__cause__
        inner = getattr(cause, "orig", None)
        return inner if isinstance(inner, BaseException) else cause


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


class StoreTimeout(StoreUnavailable):
    """A store did not answer within its ``resilience.timeout`` (stopped, frozen or slow)."""


class CircuitOpen(StoreUnavailable):
    """The store's circuit breaker is open after failed calls in a row: refused at once, without
    trying the store, until its cool-down ends."""


class NotApplied(NotFound):
    """A table, topic or collection the registry declares is not on the store yet: run
    ``datalayer apply``."""


class Conflict(DataLayerError):
    """A transaction lost to a concurrent one (deadlock, serialization failure) and was rolled
    back whole; running it again may succeed."""


class MissingDriver(DataLayerError, ImportError):
    """A store type needs a driver that is not installed; names the extra that brings it."""


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    import difflib

    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""
