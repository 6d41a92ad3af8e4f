"""Counting attempts and what each one did: a round trip, a clean refusal, or a violation."""

from __future__ import annotations

import re
import reprlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from datalayer import DataLayerError

#: What an attempt must end in: read back equal, refused with nothing written, or either.
Outcome = Literal["round trip", "refused", "either"]
#: The longest error message accepted: a message quoting a 1 MiB input floods every log.
MAX_MESSAGE = 2_200
_SQL_TEXT = re.compile(r"\[SQL:|\[parameters:")
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 40
_SHOWN.maxlevel = 3


def shown(value: Any) -> str:
    """A value as a label shows it: short, whatever its size or depth."""
    return _SHOWN.repr(value)


def _short(value: object) -> str:
    text = str(value).encode(errors="backslashreplace").decode()
    return text if len(text) <= 300 else f"{text[:300]}... ({len(text):,} characters)"


@dataclass
class Tally:
    """Attempts and their outcomes for one surface of one store. Violations are collected,
    not raised, so one run reports every break at once; ``finish`` records the figures with
    pytest's ``record_property`` and fails on any violation or a vacuous run."""

    category: str
    store: str
    surface: str
    record: Callable[[str, object], None]
    attempts: int = 0
    refused: int = 0
    round_trips: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def attempt(
        self,
        label: str,
        act: Callable[[], Any],
        *,
        check: Callable[[Any], object] | None = None,
        unchanged: Callable[[], object] | None = None,
        outcome: Outcome = "either",
    ) -> bool:
        """Run ``act``. Accepted, ``check(result)`` must pass (it asserts the round trip);
        refused with a ``DataLayerError``, ``unchanged()`` must pass (nothing was written) and
        the message must be short, printable and free of SQL. True for a round trip."""
        self.attempts += 1
        try:
            result = act()
        except DataLayerError as exc:
            self._refused(label, exc, unchanged, outcome)
            return False
        except Exception as exc:
            self.violations.append(f"{label}: raised {type(exc).__name__}: {_short(exc)}")
            return False
        if outcome == "refused":
            self.violations.append(f"{label}: accepted what must be refused")
            return False
        try:
            if check is not None:
                check(result)
        except Exception as exc:
            self.violations.append(f"{label}: accepted, but {type(exc).__name__}: {_short(exc)}")
            return False
        self.round_trips += 1
        return True

    def _refused(
        self,
        label: str,
        exc: DataLayerError,
        unchanged: Callable[[], object] | None,
        outcome: Outcome,
    ) -> None:
        self.errors[type(exc).__name__] += 1
        problems = []
        message = str(exc)
        if outcome == "round trip":
            problems.append(f"refused a valid input with {type(exc).__name__}: {_short(exc)}")
        if len(message) > MAX_MESSAGE:
            problems.append(f"error message of {len(message):,} characters")
        if _SQL_TEXT.search(message):
            problems.append(f"error message carries SQL: {_short(exc)}")
        try:
            message.encode()
        except UnicodeEncodeError:
            problems.append("error message cannot be printed (a lone surrogate)")
        try:
            if unchanged is not None:
                unchanged()
        except Exception as broke:
            problems.append(f"refused, but wrote: {type(broke).__name__}: {_short(broke)}")
        if problems:
            self.violations.extend(f"{label}: {problem}" for problem in problems)
        else:
            self.refused += 1

    def violation(self, text: str) -> None:
        self.violations.append(text)

    def finish(self) -> None:
        """Record the figures, then fail on any violation or on a run that tried nothing, or
        never refused, or never round-tripped."""
        figures: list[tuple[str, object]] = [
            ("category", self.category),
            ("store", self.store),
            ("surface", self.surface),
            ("attempts", self.attempts),
            ("refused", self.refused),
            ("round_trips", self.round_trips),
            ("violations", len(self.violations)),
            ("errors", ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items()))),
        ]
        for name, value in figures:
            self.record(name, value)
        listed = "\n".join(self.violations[:60])
        assert not self.violations, (
            f"{len(self.violations)} violations in {self.attempts} attempts on {self.store} "
            f"({self.surface}):\n{listed}"
        )
        assert self.attempts > 0 and self.refused > 0 and self.round_trips > 0, (
            f"vacuous: {self.attempts} attempts, {self.refused} refused, "
            f"{self.round_trips} round trips"
        )
        assert self.refused + self.round_trips == self.attempts


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types (a bool is not a number, an int not a float), deeply, and
    without recursion, so values nested thousands deep compare."""
    pairs = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if x.keys() != y.keys():
                return False
            pairs.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def assert_same(found: Any, expected: Any) -> None:
    if not same(found, expected):
        raise AssertionError(f"read back {shown(found)}, expected {shown(expected)}")


def assert_equal(found: Any, expected: Any) -> None:
    if found != expected:
        raise AssertionError(f"got {shown(found)}, expected {shown(expected)}")
