"""The error envelope of the local server: one :class:`Code` enum, the retryable set, :class:`ApiError`.

Every error answer is ``{"error": {"code", "message", "retryable", "request_id"}}``; ``retryable``
is true exactly for the codes in :data:`RETRYABLE` (the spec's transient errors).
"""

from __future__ import annotations

from enum import Enum


class Code(str, Enum):
    VALIDATION_ERROR = "validation_error"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    SOURCE_INVALID = "source_invalid"
    OUTPUT_NOT_READY = "output_not_ready"
    JOB_NOT_CANCELABLE = "job_not_cancelable"
    RATE_LIMITED = "rate_limited"
    CAPACITY_EXCEEDED = "capacity_exceeded"
    INTERNAL_ERROR = "internal_error"

    def __str__(self) -> str:
        return self.value


RETRYABLE = frozenset({Code.RATE_LIMITED, Code.CAPACITY_EXCEEDED, Code.INTERNAL_ERROR})


class ApiError(Exception):
    """An answer other than 2xx: raised by handlers, rendered as the envelope by the app."""

    def __init__(self, status: int, code: Code, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = Code(code)
        self.message = message
        self.headers = headers or {}


class BodyStalled(Exception):
    """The request body made no progress for ``seconds``: the request is abandoned (see
    :meth:`~.frame.Frame.bounded_receive`), the connection closed after the answer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the request body {self.reason}")

    @property
    def reason(self) -> str:
        """What went wrong, worded to follow "the request body" (the answer's message)."""
        return f"made no progress for {self.seconds:g}s"


def invalid(message: str) -> ApiError:
    """400 ``validation_error`` (the most common answer)."""
    return ApiError(400, Code.VALIDATION_ERROR, message)


def envelope(status: int, code: Code, message: str, request_id: str | None, headers=None):
    from starlette.responses import JSONResponse

    code = Code(code)
    body = {
        "error": {
            "code": code.value,
            "message": message,
            "retryable": code in RETRYABLE,
            "request_id": request_id,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)
