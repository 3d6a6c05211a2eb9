"""Idempotency-Key handling for POST routes (:func:`idempotent`).

- Records are scoped per API key: the same Idempotency-Key sent with another API key is a new
  request (it neither replays nor conflicts with the first key's record). Within one API key a
  record remembers its route and body: the same key on another route, or with another body, is a
  409 ``conflict``.
- Only 2xx answers are stored and replayed (with ``Idempotent-Replayed: true``) for 24 h. A non-2xx
  answer is not stored: every error of this server leaves nothing changed, so a retry with the same
  key and body simply runs again and answers from the current state (the same error while the
  cause is still there, e.g. the 422 of a complete on a file that is not a video; a success once
  the cause is gone, e.g. a job created after its upload was completed). This is how "replaying
  returns the original response without side effects" is kept for errors: there was no side
  effect to protect, and a deterministic key never gets stuck on an old error.
- A second request with the key of one still running waits for it (up to 60 s), then replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from starlette.requests import Request
from starlette.responses import Response

from . import jsonbody
from .errors import ApiError, Code, invalid


def body_hash(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def _characters(header_value: str) -> str:
    """The header as the client sent it: HTTP stacks hand headers over as latin-1; a UTF-8 key
    is decoded back so its length counts characters, as the spec's ``maxLength`` does."""
    try:
        return header_value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return header_value


def idempotent(handler):
    async def wrapper(request: Request) -> Response:
        core = request.app.state.core
        key = request.headers.get("idempotency-key")
        if not key or not key.strip():
            raise invalid("the Idempotency-Key header is required on POST requests")
        key = _characters(key)
        if len(key) > 128:
            raise invalid("Idempotency-Key must be 1 to 128 characters")
        body = await jsonbody.read(request)
        route = f"POST {request.url.path}"
        h = body_hash(body)
        # the stored key is scoped by the caller (a hash of its API key; see Frame._authorized)
        key = f"{request.scope.get('state', {}).get('principal', '-')}:{key}"
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
