"""Idempotency-Key handling for POST routes (:func:`idempotent`).

Only 2xx answers are stored as idempotency records (so a retry after a 4xx/5xx re-runs the
request); records live 24 h. A second request with the key of one still running waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from starlette.requests import Request
from starlette.responses import Response

from .errors import ApiError, Code, invalid


def body_hash(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def idempotent(handler):
    async def wrapper(request: Request) -> Response:
        core = request.app.state.core
        key = request.headers.get("idempotency-key")
        if not key or not key.strip():
            raise invalid("the Idempotency-Key header is required on POST requests")
        if len(key) > 128:
            raise invalid("Idempotency-Key must be 1 to 128 characters")
        body = await request.body()
        route = f"POST {request.url.path}"
        h = body_hash(body)
        deadline = time.monotonic() + 60.0
        while True:
            state, row = core.store.idem_begin(key, route, h)
            if state != "pending" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # the first request with this key is still running
        if state == "route":
            raise ApiError(
                409, Code.CONFLICT, "this Idempotency-Key was already used on another route; use a new key"
            )
        if state == "body":
            raise ApiError(
                409,
                Code.CONFLICT,
                "this Idempotency-Key was already used with a different request body; use a new key",
            )
        if state == "pending":
            raise ApiError(409, Code.CONFLICT, "a request with this Idempotency-Key is still in progress")
        if state == "replay":
            return Response(
                row["body"],
                status_code=row["status"],
                media_type=row["content_type"] or "application/json",
                headers={"Idempotent-Replayed": "true"},
            )
        try:
            resp = await handler(request)
        except BaseException:
            core.store.idem_abort(key)
            raise
        if 200 <= resp.status_code < 300:
            core.store.idem_finish(
                key, resp.status_code, bytes(resp.body), resp.media_type or "application/json"
            )
        else:
            core.store.idem_abort(key)
        return resp

    wrapper.__name__ = handler.__name__
    return wrapper
