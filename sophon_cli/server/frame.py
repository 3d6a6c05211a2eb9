"""The pure-ASGI frame around the routes: request ids, timing, log lines, auth, fault injection."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import json
import logging
import math
import secrets
import sys
import threading
import time
from typing import Any

from .bodyrate import BodyRate
from .core import Core
from .errors import RETRYABLE, ApiError, BodyStalled, Code, envelope
from .routes import is_public, route_template
from .util import redact_path

SESSION_COOKIE = "sophon_api_session"
# The contract's ErrorBody code for each status an injected fault may answer (what production sends);
# any other status answers internal_error.
FAULT_CODES = {
    400: Code.VALIDATION_ERROR,
    401: Code.UNAUTHORIZED,
    403: Code.FORBIDDEN,
    404: Code.NOT_FOUND,
    409: Code.CONFLICT,
    422: Code.SOURCE_INVALID,
    429: Code.RATE_LIMITED,
    503: Code.CAPACITY_EXCEEDED,
}


class _ResetFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


class _BodyWait:
    """The idle bound of one request body (:meth:`Frame.bounded_receive`)."""

    __slots__ = ("idle", "loop", "body_done", "waiting", "since", "timer", "fired")

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.loop: asyncio.AbstractEventLoop | None = None
        self.body_done = False
        self.waiting: asyncio.Task | None = None  # the task waiting in receive
        self.since = 0.0  # when that receive began (loop time)
        self.timer: asyncio.TimerHandle | None = None
        self.fired = False  # the timer canceled the waiting receive

    def begin(self) -> float:
        """A ``receive`` begins (returns when, in loop time)."""
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        self.waiting = asyncio.current_task()
        self.since = loop.time()
        if self.timer is None:
            self.timer = loop.call_at(self.since + self.idle, self._check)
        return self.since

    def _check(self) -> None:
        self.timer = None
        if self.waiting is None or self.body_done:
            return  # set again by the next receive
        due = self.since + self.idle
        if self.loop.time() < due:  # type: ignore[union-attr]
            self.timer = self.loop.call_at(due, self._check)  # type: ignore[union-attr]
            return
        self.fired = True
        self.waiting.cancel()

    def stalled(self) -> bool:
        """Whether the CancelledError out of ``receive`` is this bound's, rather than a cancel
        from elsewhere (a server shutting down): then it is taken back from the task."""
        if not self.fired:
            return False
        self.fired = False
        self.end()
        task = self.waiting
        return task is None or task.uncancel() == 0

    def end(self) -> None:
        """The body is complete (or abandoned): no more bound."""
        self.body_done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Frame:
    def __init__(self, app, core: Core) -> None:
        self.app = app
        self.core = core
        self._log_lock = threading.Lock()
        logging.getLogger("uvicorn.error").addFilter(_ResetFilter())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        core = self.core
        rid = "req_" + secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        method, path = scope["method"], scope["path"]
        status_box = [0]
        core.in_flight += 1
        core.last_request = time.monotonic()

        logged = [False]

        def finish() -> None:
            if not logged[0]:
                logged[0] = True
                ms = (time.perf_counter() - start) * 1000.0
                self._log(scope, method, path, status_box[0], rid, ms)

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = dict(message, headers=headers)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # record the request before its last byte leaves, so a client that got the whole
                # response always finds it in the request log
                finish()
            await send(message)

        try:
            await self._handle(scope, self.bounded_receive(receive), send_wrapper, rid, method, path)
        finally:
            core.in_flight -= 1
            core.last_request = time.monotonic()
            finish()

    def bounded_receive(self, receive):
        """``receive`` that raises :class:`BodyStalled` when the request body makes no progress for
        ``config.body_idle_seconds``, or arrives below the minimum rate (:mod:`.bodyrate`): a client
        that sends the headers and then stalls, trickles or vanishes without closing cannot hold a
        request (and the part lock of an upload) forever.
        Once the body is complete, ``receive`` (which then only waits for a disconnect) is not bounded.

        One timer per request, not one per message (``asyncio.wait_for`` made a task and a timer
        for every chunk of an upload): each ``receive`` notes when it began, and the timer, when it
        fires, cancels the ``receive`` waiting if that one is overdue, or is set again for when it
        would be (:class:`_BodyWait`)."""
        idle = self.core.config.body_idle_seconds
        rate = BodyRate(self.core.config.body_min_rate, self.core.config.body_rate_window)
        state = _BodyWait(idle)

        async def bounded():
            if state.body_done:
                return await receive()
            t0 = state.begin()
            try:
                message = await receive()
            except asyncio.CancelledError:
                if state.stalled():
                    raise BodyStalled(idle) from None
                raise
            finally:
                state.waiting = None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state.end()
            waited = state.loop.time() - t0
            rate.arrived(len(message.get("body", b"")), waited, state.body_done)  # bodyrate.py
            return message

        return bounded

    async def _handle(self, scope, receive, send, rid, method, path):
        async def respond(exc: ApiError) -> None:
            await envelope(exc.status, exc.code, exc.message, rid, exc.headers)(scope, receive, send)

        if self.core.faults:
            for rule in self.core.faults.roll(method, path):
                if rule.kind == "latency":
                    await asyncio.sleep(rule.latency)
                    continue
                if rule.kind == "reset":
                    await self._reset(receive, send)
                    return
                headers = {}
                ra = rule.options.get("retry-after")
                if ra is not None:
                    if ra.startswith("date:"):
                        # HTTP dates have 1 s resolution: round up so the wait is never shorter
                        when = math.ceil(time.time() + float(ra[5:]))
                        headers["Retry-After"] = email.utils.formatdate(when, usegmt=True)
                    else:
                        headers["Retry-After"] = ra
                status = rule.status or 500
                code = FAULT_CODES.get(status, Code.INTERNAL_ERROR)
                if code is Code.UNAUTHORIZED:
                    headers.setdefault("WWW-Authenticate", "Bearer")  # as the real auth check answers
                advice = "; retry" if code in RETRYABLE else ""
                self.core.metrics.inc("sophon_faults_injected_total", fault=str(rule.status))
                await respond(ApiError(status, code, f"injected fault ({rule.status}){advice}", headers))
                return
        if not is_public(path) and not self._authorized(scope):
            await respond(
                ApiError(
                    401,
                    Code.UNAUTHORIZED,
                    "missing or invalid API key; send 'Authorization: Bearer <key>'",
                    {"WWW-Authenticate": "Bearer"},
                )
            )
            return
        await self.app(scope, receive, send)

    async def _reset(self, receive, send) -> None:
        """Drop the connection mid-request: read part of the body, start a response, never finish it.

        uvicorn closes the transport when an app returns with its response incomplete.
        """
        self.core.metrics.inc("sophon_faults_injected_total", fault="reset")
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"error":', "more_body": True})

    def _authorized(self, scope) -> bool:
        """A known API key as ``Authorization: Bearer <key>`` or, the spec's second scheme, as the
        ``sophon_api_session`` cookie. The caller's identity (a hash of the key, never the key)
        goes to ``scope["state"]["principal"]``: idempotency records are scoped by it."""
        token = self._credential(scope)
        if not token:
            return False
        token_b = token.encode("latin-1")
        good = None
        for key in self.core.api_keys:
            if hmac.compare_digest(token_b, key.encode()):
                good = key
        if good is None:
            return False
        scope["state"]["principal"] = hashlib.sha256(good.encode()).hexdigest()[:32]
        return True

    @staticmethod
    def _credential(scope) -> str:
        auth = cookie = ""
        for k, v in scope.get("headers", []):
            if k == b"authorization" and not auth:
                auth = v.decode("latin-1")
            elif k == b"cookie":
                cookie += ";" + v.decode("latin-1")
        if auth:
            scheme, _, token = auth.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE:
                return value.strip().strip('"')
        return ""

    def _log(self, scope, method, path, status, rid, ms) -> None:
        cfg = self.core.config
        route = route_template(method, path)
        self.core.metrics.inc("sophon_http_requests_total", route=route, status=str(status))
        shown = redact_path(path)
        if cfg.log_requests:
            print(f"{method} {shown} {status} {rid} {ms:.1f}ms", file=sys.stderr, flush=True)
        if cfg.request_log is not None:
            rec: dict[str, Any] = {
                "ts": round(time.time(), 6),
                "method": method,
                "path": shown,
                "route": route,
                "status": status,
                "request_id": rid,
                "ms": round(ms, 3),
            }
            for k, v in scope.get("headers", []):
                if k == b"idempotency-key":
                    rec["idempotency_key_hash"] = hashlib.sha256(v).hexdigest()[:16]
            line = json.dumps(rec) + "\n"
            with self._log_lock:
                with open(cfg.request_log, "a", encoding="utf-8") as fh:
                    fh.write(line)
