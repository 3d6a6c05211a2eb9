"""The HTTP surface of the local server: a Starlette app implementing the SOPHON API contract.

Request flow: :class:`~.frame.Frame` (pure ASGI; request id, timing, log lines, auth, fault
injection) -> the Starlette routes of :data:`~.routes.ROUTES` (handlers by resource under
``routes/``). POST routes go through :func:`~.idempotency.idempotent`. Errors are
:class:`~.errors.ApiError` rendered as the error envelope.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from .core import Core
from .errors import ApiError, BodyStalled, Code, envelope
from .frame import Frame
from .routes import starlette_routes, uploads
from .uploadhash import RetainBudget
from .util import redact_path

log = logging.getLogger("sophon.server")


def _rid(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return envelope(exc.status, exc.code, exc.message, _rid(request), exc.headers)


def _allowed_methods(request: Request) -> str | None:
    """Every method some route accepts for this path (routes are declared one method each)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)  # PARTIAL: the path matches, the method does not
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods)) or None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allow = _allowed_methods(request) or (exc.headers or {}).get("Allow")  # RFC 9110 wants it
        return envelope(
            405,
            Code.VALIDATION_ERROR,
            f"method {request.method} is not allowed here" + (f"; use {allow}" if allow else ""),
            _rid(request),
            headers={"Allow": allow} if allow else None,
        )
    if exc.status_code == 404:
        return envelope(
            404, Code.NOT_FOUND, f"no route for {request.method} {request.url.path}", _rid(request)
        )
    return envelope(exc.status_code, Code.VALIDATION_ERROR, str(exc.detail), _rid(request))


async def _gone(request: Request, exc: Exception) -> Response:
    # the client went away mid-request (nothing can be sent); a partial part is not recorded
    return envelope(
        400, Code.VALIDATION_ERROR, "the client disconnected before the body was complete", _rid(request)
    )


async def _stalled(request: Request, exc: Exception) -> Response:
    # nothing was recorded (a part is recorded only whole); the connection is closed after this
    # answer, since the rest of a stalled body may still arrive on it
    assert isinstance(exc, BodyStalled)
    return envelope(
        400,
        Code.VALIDATION_ERROR,
        f"the request body {exc.reason} and was abandoned; send the request again",
        _rid(request),
        headers={"Connection": "close"},
    )


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, redact_path(request.url.path))
    return envelope(500, Code.INTERNAL_ERROR, "internal error in the local server; retry", _rid(request))


def build_app(core: Core):
    app = Starlette(
        routes=starlette_routes(),
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            ClientDisconnect: _gone,
            BodyStalled: _stalled,
            Exception: _crash,
        },
    )
    app.state.core = core
    app.state.upload_digests = {}  # upload id -> UploadDigest (see uploadhash.py)
    app.state.retain_budget = RetainBudget()  # all uploads: bytes kept until hashed, queued until written
    app.state.part_writers = uploads.PartWriters()  # one writer per (upload, part) at a time
    return Frame(app, core)
