"""Resilience policies, Dapr-style: a bound on every call, retries for idempotent ones, and a
circuit breaker per store, configured by a ``resilience`` block in the registry.

- ``timeout`` bounds one attempt of one call. Stores enforce it where the server would stop
  answering: a socket timeout (Redis, MongoDB), librdkafka's own timeouts (Kafka), and for
  PostgreSQL a watchdog that shuts the connection's socket when the attempt's time is up,
  since libpq would wait on a frozen server forever.
- ``retries`` more attempts follow a ``StoreUnavailable`` for operations a backend declares
  idempotent (never inside a transaction), after ``backoff`` doubled each time, capped at
  ``max_backoff``, with full jitter. A call thus errs within ``timeout * (retries + 1)`` plus
  the backoffs; a non-idempotent one within ``timeout``.
- The breaker opens after ``failures`` consecutive attempts the store did not answer, and then
  refuses calls at once with ``CircuitOpen`` for ``cooldown``; after it one probe goes through,
  closing the breaker when it succeeds and opening it again when it fails.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datalayer.errors import CircuitOpen, StoreTimeout, StoreUnavailable
from datalayer.validators import Duration

T = TypeVar("T")

_LONGEST_TIMEOUT = timedelta(hours=1)
_SHORTEST_TIMEOUT = timedelta(milliseconds=10)


def _a_timeout(value: timedelta) -> timedelta:
    """Between 10 ms (less would fail every call, the round trip included) and an hour."""
    if value < _SHORTEST_TIMEOUT:
        raise ValueError(f"at least 10ms, got {value.total_seconds():g}s")
    return _at_most_an_hour(value)


def _at_most_an_hour(value: timedelta) -> timedelta:
    if value > _LONGEST_TIMEOUT:
        raise ValueError(f"at most 1h, got {value.total_seconds():g}s")
    return value


class BreakerConfig(BaseModel):
    """When the circuit opens (``failures`` in a row; 0 never) and for how long."""

    model_config = ConfigDict(extra="forbid")

    # strict: YAML's ``true`` or ``"5"`` is no count (pydantic would read them as 1 and 5)
    failures: int = Field(default=5, ge=0, le=10_000, strict=True)
    cooldown: Duration = timedelta(seconds=5)

    _bounded = field_validator("cooldown")(_at_most_an_hour)


class RetryConfig(BaseModel):
    """How an idempotent call is retried; a pattern may override these per pattern."""

    model_config = ConfigDict(extra="forbid")

    retries: int = Field(default=2, ge=0, le=10, strict=True)
    backoff: Duration = timedelta(milliseconds=100)
    max_backoff: Duration = timedelta(seconds=2)

    _bounded = field_validator("backoff", "max_backoff")(_at_most_an_hour)


class ResilienceConfig(RetryConfig):
    """A store's ``resilience`` block."""

    timeout: Duration = timedelta(seconds=5)
    apply_timeout: Duration = timedelta(minutes=5)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)

    _bounded_timeouts = field_validator("timeout", "apply_timeout")(_a_timeout)


class PatternResilience(BaseModel):
    """A pattern's ``resilience`` block: its own retry settings over its store's."""

    model_config = ConfigDict(extra="forbid")

    retries: int | None = Field(default=None, ge=0, le=10, strict=True)
    backoff: Duration | None = None
    max_backoff: Duration | None = None

    _bounded = field_validator("backoff", "max_backoff")(
        lambda v: None if v is None else _at_most_an_hour(v)
    )


class Watchdog:
    """One daemon thread that cuts the attempts past their deadline, checking every ``TICK``
    while any is watched: a dict entry per attempt, so bounding every statement costs well
    under a microsecond (a timer or a heap entry per call would cost several)."""

    TICK = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, Attempt] = {}
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, attempt: Attempt) -> None:
        with self._lock:
            self._watched[id(attempt)] = attempt
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="datalayer-watchdog")
                self._thread.daemon = True
                self._thread.start()
        if not self._busy.is_set():
            self._busy.set()

    def unwatch(self, attempt: Attempt) -> None:
        """After this returns, ``attempt``'s cuts never run."""
        with self._lock:
            self._watched.pop(id(attempt), None)

    def _run(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:  # cuts run under it: unwatch cannot return while one runs
                for key, attempt in list(self._watched.items()):
                    if attempt.deadline <= now:
                        del self._watched[key]
                        with suppress(Exception):  # a cut must never kill the watchdog
                            attempt.cut()
                if not self._watched:
                    self._busy.clear()


WATCHDOG = Watchdog()


class Attempt:
    """One attempt of one call, with its deadline. A store whose driver cannot bound a wait by
    itself registers what to cut when time is up (``on_expiry``)."""

    __slots__ = ("_cuts", "deadline", "started", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self._cuts: dict[int, Callable[[], None]] | None = None

    def left(self) -> float:
        """Seconds left before the deadline (negative past it)."""
        return self.deadline - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.left() <= 0

    def on_expiry(self, key: int, cut: Callable[[], None]) -> None:
        """Run ``cut`` if the attempt outlives its timeout (keyed, so a connection used by
        several statements is registered once)."""
        if self._cuts is None:
            self._cuts = {key: cut}
            WATCHDOG.watch(self)
        elif key not in self._cuts:
            self._cuts[key] = cut

    def release(self, key: int) -> None:
        """Forget a connection handed back (to a pool): it is no longer this attempt's."""
        if self._cuts is not None:
            self._cuts.pop(key, None)

    def cut(self) -> None:
        for cut in list((self._cuts or {}).values()):
            cut()

    def finish(self) -> None:
        if self._cuts is not None:
            WATCHDOG.unwatch(self)


_ATTEMPT: ContextVar[Attempt | None] = ContextVar("datalayer-attempt", default=None)


def current_attempt() -> Attempt | None:
    """The attempt the calling code runs in, if a guarded call started one."""
    return _ATTEMPT.get()


class Breaker:
    """Consecutive-failure circuit breaker: closed, open for ``cooldown``, then half-open
    (one probe at a time)."""

    def __init__(self, config: BreakerConfig) -> None:
        self.threshold = config.failures
        self.cooldown = config.cooldown.total_seconds()
        self._lock = threading.Lock()
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self._probing or time.monotonic() - self.opened_at >= self.cooldown:
            return "half-open"
        return "open"

    def admit(self) -> float | None:
        """None to let a call through; else seconds until the next probe may."""
        if self.opened_at is None:
            return None
        with self._lock:
            if self.opened_at is None:
                return None
            left = self.opened_at + self.cooldown - time.monotonic()
            if left > 0 or self._probing:
                return max(left, 0.0)
            self._probing = True
            return None

    def succeeded(self) -> None:
        if self.failures or self.opened_at is not None:
            with self._lock:
                self.failures = 0
                self.opened_at = None
                self._probing = False

    def failed(self) -> None:
        if not self.threshold:
            return
        with self._lock:
            self.failures += 1
            if self._probing or self.failures >= self.threshold:
                self.opened_at = time.monotonic()
                self._probing = False


@dataclass
class GuardStats:
    """Counters for ``doctor`` and metrics: calls, attempts the store did not answer, retries,
    timeouts, calls refused by the open circuit, and the circuit's state."""

    store: str
    state: str
    calls: int
    failures: int
    retries: int
    timeouts: int
    rejected: int


class Guard:
    """A store's resilience: its policy, breaker and counters; ``run`` calls through them."""

    def __init__(self, label: str, name: str, config: ResilienceConfig) -> None:
        self.label = label
        self.name = name
        self.config = config
        self.timeout = config.timeout.total_seconds()
        self.breaker = Breaker(config.breaker)
        self.calls = self.failures = self.retries = self.timeouts = self.rejected = 0

    def stats(self) -> GuardStats:
        return GuardStats(
            self.name,
            self.breaker.state,
            self.calls,
            self.failures,
            self.retries,
            self.timeouts,
            self.rejected,
        )

    def policy(self, override: PatternResilience | None) -> RetryConfig:
        if override is None:
            return self.config
        return RetryConfig(
            retries=self.config.retries if override.retries is None else override.retries,
            backoff=override.backoff or self.config.backoff,
            max_backoff=override.max_backoff or self.config.max_backoff,
        )

    @contextmanager
    def attempt(self, timeout: float | None = None) -> Iterator[Attempt]:
        """One attempt through the breaker, bounded; a timeout surfaces as ``StoreTimeout``."""
        self._admit()
        try:
            with self.bounded(timeout) as attempt:
                yield attempt
        except StoreUnavailable:
            self._failed()
            raise
        except BaseException:
            self.breaker.succeeded()  # the store answered (with an error of the caller's)
            raise
        else:
            self.breaker.succeeded()

    @contextmanager
    def bounded(self, timeout: float | None = None) -> Iterator[Attempt]:
        """Bound the calls in the block by ``timeout`` (the store's by default), outside the
        breaker and its counts: for ``doctor``'s ping, which must reach the store even when
        the circuit is open."""
        attempt = Attempt(self.timeout if timeout is None else timeout)
        token = _ATTEMPT.set(attempt)
        try:
            yield attempt
        except StoreUnavailable as exc:
            raise self._timed_out(attempt, exc) from exc.__cause__
        finally:
            attempt.finish()
            _ATTEMPT.reset(token)

    def run(
        self,
        call: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        *,
        policy: RetryConfig,
        retry_safe: bool,
    ) -> T:
        """``call`` through the breaker, each attempt bounded, retried when ``retry_safe``.

        The hot path of every guarded call, so written out rather than built from the
        context managers above (which cost several microseconds more)."""
        self.calls += 1
        left = policy.retries if retry_safe else 0
        delay = policy.backoff.total_seconds()
        while True:
            self._admit()
            attempt = Attempt(self.timeout)
            token = _ATTEMPT.set(attempt)
            try:
                result = call(*args, **kwargs)
            except StoreUnavailable as exc:
                self._failed()
                if not left:
                    raise self._timed_out(attempt, exc) from exc.__cause__
            except BaseException:
                self.breaker.succeeded()  # the store answered (with an error of the caller's)
                raise
            else:
                self.breaker.succeeded()
                return result
            finally:
                attempt.finish()
                _ATTEMPT.reset(token)
            left -= 1
            self.retries += 1
            time.sleep(random.uniform(0, min(delay, policy.max_backoff.total_seconds())))
            delay *= 2

    def _admit(self) -> None:
        wait = self.breaker.admit()
        if wait is not None:
            self.rejected += 1
            raise CircuitOpen(
                f"{self.label}: circuit open after {self.breaker.failures} failed calls in a "
                f"row; next try in {wait:.1f}s",
                store=self.name,
            )

    def _failed(self) -> None:
        self.failures += 1
        self.breaker.failed()

    def _timed_out(self, attempt: Attempt, exc: StoreUnavailable) -> StoreUnavailable:
        """``exc`` as a ``StoreTimeout`` when the attempt ran out of time (counted), else as is."""
        if isinstance(exc, StoreTimeout):
            self.timeouts += 1
            return exc
        if not attempt.expired:
            return exc
        self.timeouts += 1
        waited = time.monotonic() - attempt.started
        timeout = StoreTimeout(
            f"{self.label} did not answer within {waited:.1f}s "
            f"(resilience.timeout {attempt.timeout:g}s)",
            store=self.name,
        )
        timeout.__cause__ = exc.__cause__ or exc
        return timeout


class GuardedOperations:
    """Mixin of a category's backend ABC: which calls the guard wraps, and which of them are
    idempotent (so retried). A backend in a transaction says so, and is then not retried."""

    #: method name -> idempotent
    operations: ClassVar[Mapping[str, bool]] = {}

    def retry_safe_now(self) -> bool:
        return True


def guard_backend(backend: GuardedOperations, guard: Guard, policy: RetryConfig) -> None:
    """Route the backend's declared operations through ``guard`` (on this instance only; a
    backend shared by patterns, as a streaming store is, keeps the first pattern's policy)."""
    if vars(backend).get("_guarded"):
        return
    backend._guarded = True  # type: ignore[attr-defined]
    for name, idempotent in backend.operations.items():
        setattr(backend, name, _guarded(getattr(backend, name), backend, guard, policy, idempotent))


def _guarded(
    call: Callable[..., T],
    backend: GuardedOperations,
    guard: Guard,
    policy: RetryConfig,
    idempotent: bool,
) -> Callable[..., T]:
    @wraps(call)
    def guarded(*args: Any, **kwargs: Any) -> T:
        if _ATTEMPT.get() is not None:  # called by another guarded call: part of its attempt
            return call(*args, **kwargs)
        retry_safe = idempotent and backend.retry_safe_now()
        return guard.run(call, args, kwargs, policy=policy, retry_safe=retry_safe)

    return guarded
