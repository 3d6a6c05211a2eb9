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
* a host name that does not resolve is not a network blip: the resolver answered that the name does
  not exist (``EAI_NONAME``, ``EAI_NODATA``, ``EAI_FAIL``: no retry, the answer is cached and will
  be the same in a few seconds), or it could not get an answer (``EAI_AGAIN``: one retry, as a
  dropped DNS packet or a resolver restarting clears in a moment, while a machine with no network
  or no DNS at all will not recover within the budget, and the resolver already spent its own
  timeouts and retries before saying so). See :func:`name_failure`.
* a TLS failure is not retried either: a certificate that does not verify (self-signed, expired,
  for another host) or a handshake the server cannot take part in (it speaks plain HTTP on that
  port) is the same on every try. A connection dropped during the handshake is a network failure
  like any other. See :func:`tls_failure`.

Pure: no httpx, no I/O. :class:`RetryState` is the per-call counter that the request loops ask
"may I try again, and after how long?"; ``on_retry`` observers hear about each retry (the CLI
renders "retrying (n/N)…" from them).
"""

from __future__ import annotations

import email.utils
import enum
import random
import re
import socket
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


class NameFailure(str, enum.Enum):
    """Why a host name did not resolve."""

    NOT_FOUND = "not_found"  # the resolver answered: no such name (or no address for it)
    TEMPORARY = "temporary"  # the resolver could not get an answer (EAI_AGAIN)


#: getaddrinfo codes that mean the name does not resolve (the resolver's answer, not a blip)
_NOT_FOUND_CODES = frozenset(
    code
    for code in (
        getattr(socket, "EAI_NONAME", None),
        getattr(socket, "EAI_NODATA", None),
        getattr(socket, "EAI_FAIL", None),
        getattr(socket, "EAI_ADDRFAMILY", None),
    )
    if code is not None
)


class TLSFailure(str, enum.Enum):
    """Why a TLS connection could not be made."""

    CERTIFICATE = "certificate"  # the server's certificate did not verify
    HANDSHAKE = "handshake"  # the handshake failed (e.g. plain HTTP on that port)


#: retries allowed per call for each kind of failure that retrying within seconds does not cure
FAILURE_RETRIES: dict[enum.Enum, int] = {
    NameFailure.NOT_FOUND: 0,
    NameFailure.TEMPORARY: 1,
    TLSFailure.CERTIFICATE: 0,
    TLSFailure.HANDSHAKE: 0,
}


def exception_chain(exc: BaseException | None):
    """``exc`` and its causes (``__cause__``, else ``__context__``), at most 16 deep."""
    seen = 0
    while exc is not None and seen < 16:
        yield exc
        exc = exc.__cause__ or exc.__context__
        seen += 1


def name_failure(exc: BaseException | None) -> NameFailure | None:
    """The kind of name-resolution failure behind ``exc`` (a ``socket.gaierror`` anywhere in its
    chain of causes, as httpx and http.client wrap it), or None when it is not one."""
    for cause in exception_chain(exc):
        if isinstance(cause, socket.gaierror):
            if cause.errno in _NOT_FOUND_CODES:
                return NameFailure.NOT_FOUND
            if cause.errno == getattr(socket, "EAI_AGAIN", None):
                return NameFailure.TEMPORARY
            return None  # EAI_SYSTEM, EAI_MEMORY, ...: a local failure, retried as any other
    return None


def tls_failure(exc: BaseException | None) -> TLSFailure | None:
    """The kind of TLS failure behind ``exc`` (an ``ssl.SSLError`` in its chain of causes), or None.
    An EOF or a close during the handshake is not one: the connection dropped (retried)."""
    import ssl

    for cause in exception_chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return TLSFailure.CERTIFICATE
        if isinstance(cause, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
            return None
        if isinstance(cause, ssl.SSLError):
            return TLSFailure.HANDSHAKE
    return None


def failure_kind(exc: BaseException | None) -> NameFailure | TLSFailure | None:
    """A network failure that retrying within seconds does not cure (see :data:`FAILURE_RETRIES`),
    or None for one that is worth the whole retry budget."""
    if exc is None:
        return None
    return name_failure(exc) or tls_failure(exc)


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
    #: failures that retrying does not cure, seen so far by kind (bounded by FAILURE_RETRIES)
    failures: dict[enum.Enum, int] = field(default_factory=dict)

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
        error: BaseException | None = None,
    ) -> float | None:
        """The seconds to sleep before another attempt, or None to give up (not retryable, out of
        attempts, or the retry would start after the deadline). Observers hear about a retry.
        ``error``: the network failure, when there is one (a name that does not resolve, a TLS
        failure: retried at most :data:`FAILURE_RETRIES` times)."""
        if not self.policy.should_retry(status, envelope_retryable):
            return None
        kind = failure_kind(error)
        max_attempts = self.max_attempts
        if kind is not None:
            self.failures[kind] = self.failures.get(kind, 0) + 1
            left = FAILURE_RETRIES[kind] - self.failures[kind] + 1  # retries left for this kind
            if left <= 0:
                return None
            max_attempts = min(max_attempts, self.attempts + left)  # "retrying (1/2)", not (1/6)
            if kind == NameFailure.TEMPORARY:
                reason = "the DNS resolver did not answer"
        if self.attempts >= self.max_attempts:
            return None
        delay = self.policy.delay(self.attempts - 1, retry_after)
        if self.clock() + delay > self.deadline:
            return None
        if self.observers:
            event = RetryEvent(
                attempt=self.attempts,
                max_attempts=max_attempts,
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
    "FAILURE_RETRIES",
    "NameFailure",
    "TLSFailure",
    "BACKOFF_CAP",
    "RetryEvent",
    "RetryPolicy",
    "RetryState",
    "backoff_delay",
    "exception_chain",
    "failure_kind",
    "name_failure",
    "parse_retry_after",
    "retry_delay",
    "should_retry_status",
    "tls_failure",
]
