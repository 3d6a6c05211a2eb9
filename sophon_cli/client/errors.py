"""Exceptions raised by the client library.

    SophonError                      every error this library raises
    ├── InputError                   bad local input (missing file, bad metadata, ...) -> exit 2
    ├── ConfigError                  missing API key or unusable configuration           -> exit 4
    ├── TransportError               server unreachable after retries (has .url)         -> exit 8
    ├── IntegrityError               a hash or size did not match what the server said    -> exit 1
    ├── JobFailedError               a waited-for job ended failed or canceled (.job)    -> exit 5
    ├── WaitTimeoutError             gave up waiting (.job_ids)                          -> exit 6
    ├── SignatureError               a webhook delivery did not verify (.reason)          -> exit 1
    └── APIError                     the server answered with an error envelope
        │                            (.status, .code, .message, .retryable, .request_id)
        ├── BadRequestError          400, 422                                            -> exit 1
        ├── AuthError                401, 403                                            -> exit 4
        ├── NotFoundError            404                                                 -> exit 3
        ├── ConflictError            409                                                 -> exit 1
        ├── RateLimitError           429                                                 -> exit 1
        └── ServerError              5xx                                                 -> exit 1

The CLI maps these to exit codes in one place (``sophon_cli.cli.errors``); the library itself knows
nothing about exit codes. Messages never contain the API key or download tokens.
"""

from __future__ import annotations

from typing import Any


class SophonError(Exception):
    """Base class. ``hint`` is the next step for the user, shown after the message."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class InputError(SophonError):
    """Bad local input: a missing/unreadable file, a bad flag value, invalid metadata..."""


class ConfigError(SophonError):
    """Missing API key or unusable configuration."""


class TransportError(SophonError):
    """The server could not be reached (after retries)."""

    def __init__(self, message: str, *, url: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url


class IntegrityError(SophonError):
    """A checksum or size did not match."""


class JobFailedError(SophonError):
    """A job ended ``failed`` or ``canceled``. ``job`` is the final job model."""

    def __init__(self, message: str, *, job: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.job = job


class WaitTimeoutError(SophonError):
    """Gave up waiting for jobs to finish."""

    def __init__(self, message: str, *, job_ids: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.job_ids = job_ids or []


class SignatureError(SophonError):
    """A webhook delivery failed verification. ``reason`` is a stable machine-readable string
    (one of ``sophon_cli.client.webhooks.REASONS``)."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class APIError(SophonError):
    """The server answered with an error status and (usually) the error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        request_id: str | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.retryable = retryable
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status}, code={self.code!r}, "
            f"message={self.message!r}, retryable={self.retryable}, request_id={self.request_id!r})"
        )


class BadRequestError(APIError):
    """400 or 422: the request or the source was rejected."""


class AuthError(APIError):
    """401 or 403."""


class NotFoundError(APIError):
    """404."""


class ConflictError(APIError):
    """409: idempotency conflict, job not cancelable, output not ready, wrong upload state."""


class RateLimitError(APIError):
    """429."""


class ServerError(APIError):
    """5xx."""


def error_class_for_status(status: int) -> type[APIError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    if 400 <= status < 500:
        return BadRequestError
    return APIError
