"""The one retry policy. Every request the library sends goes through it, downloads included.

* retried: network errors (connect/read/write failures, timeouts, dropped connections, a stream
  that stalls or ends early), 408, 429, 5xx (except 501), and any error envelope that says
  ``"retryable": true`` unless the status is one that is never retried (400, 401, 403, 404, 422).
  An explicit ``"retryable": false`` on a 429/5xx envelope (e.g. ``quota_exceeded``) stops the
  retries: the server said waiting won't help.
* delay: capped full-jitter exponential backoff, ``uniform(0, min(cap, base * 2**n))`` for retry
  number ``n`` (0 for the first retry); when the response carries ``Retry-After`` (delta-seconds or
  an HTTP date) that value is used instead, capped at :data:`RETRY_AFTER_CAP` seconds.
* bounded: at most ``max_retries`` retries, and no retry that would start after the overall
  deadline (``budget`` seconds after the first attempt).

Pure: no httpx, no I/O. :class:`RetryState` is the per-call counter that the request loops ask
"may I try again, and after how long?"; ``on_retry`` observers hear about each retry (the CLI
renders "retrying (n/N)…" from them).
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

RETRY_AFTER_CAP = 60.0  # never sleep longer than this because a server asked us to
BACKOFF_BASE = 0.5
BACKOFF_CAP = 20.0
RETRY_STATUSES = frozenset({408, 429})
NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 422})


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or None when absent/unparseable.

    Accepts delta-seconds (``"3"``, also a decimal like ``"1.5"``) and an HTTP date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). A date in the past gives 0. The result is not capped here.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(
    attempt: int,
    *,
    rng: random.Random | None = None,
    base: float = BACKOFF_BASE,
    cap: float = BACKOFF_CAP,
) -> float:
    """Full-jitter backoff for retry number ``attempt`` (0 for the first retry): a uniform draw from
    ``[0, min(cap, base * 2**attempt)]``."""
    ceiling = min(cap, base * (2 ** min(max(attempt, 0), 30)))
    return (rng or random).uniform(0.0, ceiling)


def retry_delay(
    attempt: int,
    retry_after: float | None,
    *,
    rng: random.Random | None = None,
    cap: float = RETRY_AFTER_CAP,
) -> float:
    """The delay before the next attempt: ``Retry-After`` (capped) when the server sent one,
    otherwise :func:`backoff_delay`."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), cap)
    return backoff_delay(attempt, rng=rng)


def should_retry_status(status: int, envelope_retryable: bool | None) -> bool:
    """Whether a response with this status (and envelope ``retryable`` flag, None if absent) is retried."""
    if status in NEVER_RETRY_STATUSES:
        return False
    if status in RETRY_STATUSES or (status >= 500 and status != 501):
        return envelope_retryable is not False
    return envelope_retryable is True


@dataclass(frozen=True)
class RetryEvent:
    """One retry about to happen: ``attempt`` failed (1-based) out of at most ``max_attempts``;
    the next try starts after ``delay`` seconds. ``reason`` is a short text such as
    ``"HTTP 503"`` or ``"ConnectError"`` (never a URL or a secret)."""

    attempt: int
    max_attempts: int
    delay: float
    reason: str
    method: str = ""
    path: str = ""


RetryObserver = Callable[[RetryEvent], None]


@dataclass
class RetryPolicy:
    """What is retried, how long to wait, and when to give up. One instance per client."""

    max_retries: int = 5
    budget: float = 120.0
    rng: random.Random = field(default_factory=random.Random)
    retry_after_cap: float = RETRY_AFTER_CAP

    def should_retry(self, status: int | None, envelope_retryable: bool | None = None) -> bool:
        """``status`` None means a network failure (always worth another try)."""
        if status is None:
            return True
        return should_retry_status(status, envelope_retryable)

    def delay(self, retry_index: int, retry_after: float | None = None) -> float:
        return retry_delay(retry_index, retry_after, rng=self.rng, cap=self.retry_after_cap)

    def start(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        retry: bool = True,
        observers: tuple[RetryObserver, ...] = (),
        method: str = "",
        path: str = "",
    ) -> RetryState:
        """A fresh counter for one logical call (its deadline starts now)."""
        return RetryState(
            self,
            clock=clock,
            max_attempts=1 + (max(0, int(self.max_retries)) if retry else 0),
            deadline=clock() + float(self.budget),
            observers=observers,
            method=method,
            path=path,
        )


@dataclass
class RetryState:
    """The attempts of one logical call. ``attempts`` counts the attempts made so far."""

    policy: RetryPolicy
    clock: Callable[[], float]
    max_attempts: int
    deadline: float
    observers: tuple[RetryObserver, ...] = ()
    method: str = ""
    path: str = ""
    attempts: int = 0

    def begin(self) -> int:
        """Count one attempt; return its number (1-based)."""
        self.attempts += 1
        return self.attempts

    def next_delay(
        self,
        *,
        status: int | None = None,
        envelope_retryable: bool | None = None,
        retry_after: float | None = None,
        reason: str = "",
    ) -> float | None:
        """The seconds to sleep before another attempt, or None to give up (not retryable, out of
        attempts, or the retry would start after the deadline). Observers hear about a retry."""
        if not self.policy.should_retry(status, envelope_retryable):
            return None
        if self.attempts >= self.max_attempts:
            return None
        delay = self.policy.delay(self.attempts - 1, retry_after)
        if self.clock() + delay > self.deadline:
            return None
        if self.observers:
            event = RetryEvent(
                attempt=self.attempts,
                max_attempts=self.max_attempts,
                delay=delay,
                reason=reason or (f"HTTP {status}" if status is not None else "network error"),
                method=self.method,
                path=self.path,
            )
            for observer in self.observers:
                observer(event)
        return delay


__all__ = [
    "RETRY_AFTER_CAP",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "RetryEvent",
    "RetryPolicy",
    "RetryState",
    "backoff_delay",
    "parse_retry_after",
    "retry_delay",
    "should_retry_status",
]
