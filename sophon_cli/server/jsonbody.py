"""The body of a JSON request (every POST but a part's bytes), read at most :data:`LIMIT` bytes.

The largest request this API takes as JSON is a job: 16 KiB of metadata, a few ids and options.
Before the bound, ``await request.body()`` held whatever a client sent in memory, gigabytes
included. A body past the bound (declared by its Content-Length, or found while reading a chunked
one) is refused with 400 ``validation_error`` before the rest is read, and the connection is
closed after the answer, since the rest may still be on it. The body is read once per request:
the Idempotency-Key check and the handler share it.
"""

from __future__ import annotations

from starlette.requests import Request

from .errors import ApiError, Code

LIMIT = 1 << 20  # bytes


def too_large() -> ApiError:
    return ApiError(
        400,
        Code.VALIDATION_ERROR,
        f"the request body is larger than {LIMIT >> 20} MiB, more than any JSON request of this API"
        " needs; send a smaller body",
        {"Connection": "close"},
    )


async def read(request: Request) -> bytes:
    """The whole body, or :func:`too_large` raised as soon as it is known to pass :data:`LIMIT`."""
    held = getattr(request.state, "json_body", None)
    if held is not None:
        return held
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 12 or int(declared) > LIMIT):
        raise too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > LIMIT:
            raise too_large()
    request.state.json_body = bytes(body)
    return request.state.json_body
