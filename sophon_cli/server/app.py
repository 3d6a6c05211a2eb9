"""The HTTP surface of the local server: a Starlette app implementing the SOPHON API contract.

Request flow: :class:`Frame` (pure ASGI; request id, timing, log lines, auth, fault injection)
-> Starlette routes. POST routes go through :func:`idempotent`. Only 2xx answers are stored as
idempotency records (so a retry after a 4xx/5xx re-runs the request); records live 24 h.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from . import media
from .core import Core
from .tokens import TokenError
from .uploadhash import PrefixHash
from .util import JOB_STATUSES, PROFILES, RETRYABLE_CODES, TERMINAL, dumps, iso, new_id, now, redact_path
from .worker import finish_job, progress_doc, sha256_file

log = logging.getLogger("sophon.server")

PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics")
MB = 1024 * 1024
MAX_FILE_SIZE = 1 << 40  # 1 TiB
UPLOAD_TTL = 24 * 3600
METADATA_LIMIT = 16 * 1024
DISK_RESERVE = 64 * MB  # uploads and readiness keep this much disk free

ROUTES = [
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/{id}"),
    ("DELETE", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/output"),
    ("POST", "/v1/uploads"),
    ("GET", "/v1/uploads/{id}"),
    ("DELETE", "/v1/uploads/{id}"),
    ("PUT", "/v1/uploads/{id}/parts/{part_number}"),
    ("POST", "/v1/uploads/{id}/complete"),
    ("GET", "/v1/webhooks"),
    ("POST", "/v1/webhooks"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("GET", "/v1/downloads/{token}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


def route_template(method: str, path: str) -> str:
    """``PUT /v1/uploads/upl_1/parts/3`` -> ``PUT /v1/uploads/{id}/parts/{part_number}``."""
    segs = path.rstrip("/").split("/") if path != "/" else [""]
    m = "GET" if method == "HEAD" else method
    for rm, tmpl in ROUTES:
        tsegs = tmpl.split("/")
        if rm == m and len(tsegs) == len(segs):
            if all(t.startswith("{") or t == s for t, s in zip(tsegs, segs, strict=True)):
                return f"{method} {tmpl}"
    return f"{method} <unmatched>"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def envelope(status: int, code: str, message: str, request_id: str | None, headers=None) -> Response:
    body = {
        "error": {
            "code": code,
            "message": message,
            "retryable": code in RETRYABLE_CODES,
            "request_id": request_id,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _rid(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def ok(body: Any, status: int = 200, headers=None) -> Response:
    return Response(dumps(body).encode(), status_code=status, media_type="application/json", headers=headers)


# ---------------------------------------------------------------------------------------------
# The ASGI frame: request ids, logs, auth, faults
# ---------------------------------------------------------------------------------------------


class _ResetFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


class Frame:
    def __init__(self, app, core: Core) -> None:
        self.app = app
        self.core = core
        self._log_lock = __import__("threading").Lock()
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
            await self._handle(scope, receive, send_wrapper, rid, method, path)
        finally:
            core.in_flight -= 1
            core.last_request = time.monotonic()
            finish()

    async def _handle(self, scope, receive, send, rid, method, path):
        async def respond(resp: Response) -> None:
            await resp(scope, receive, send)

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
                code = {429: "rate_limited", 503: "capacity_exceeded"}.get(
                    rule.status or 500, "internal_error"
                )
                self.core.metrics.inc("sophon_faults_injected_total", fault=str(rule.status))
                await respond(
                    envelope(rule.status or 500, code, f"injected fault ({rule.status}); retry", rid, headers)
                )
                return
        if not any(path == p for p in PUBLIC_PATHS) and not path.startswith("/v1/downloads/"):
            if not self._authorized(scope):
                await respond(
                    envelope(
                        401,
                        "unauthorized",
                        "missing or invalid API key; send 'Authorization: Bearer <key>'",
                        rid,
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
        auth = b""
        for k, v in scope.get("headers", []):
            if k == b"authorization":
                auth = v
                break
        scheme, _, token = auth.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        token_b = token.strip().encode()
        good = False
        for key in self.core.api_keys:
            good |= hmac.compare_digest(token_b, key.encode())
        return good

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


# ---------------------------------------------------------------------------------------------
# Idempotency
# ---------------------------------------------------------------------------------------------


def _body_hash(body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        canonical = body
    return hashlib.sha256(canonical).hexdigest()


def idempotent(handler):
    async def wrapper(request: Request) -> Response:
        core: Core = request.app.state.core
        key = request.headers.get("idempotency-key")
        if not key or not key.strip():
            raise ApiError(400, "validation_error", "the Idempotency-Key header is required on POST requests")
        if len(key) > 128:
            raise ApiError(400, "validation_error", "Idempotency-Key must be 1 to 128 characters")
        body = await request.body()
        route = f"POST {request.url.path}"
        h = _body_hash(body)
        deadline = time.monotonic() + 60.0
        while True:
            state, row = core.store.idem_begin(key, route, h)
            if state != "pending" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # the first request with this key is still running
        if state == "route":
            raise ApiError(
                409, "conflict", "this Idempotency-Key was already used on another route; use a new key"
            )
        if state == "body":
            raise ApiError(
                409,
                "conflict",
                "this Idempotency-Key was already used with a different request body; use a new key",
            )
        if state == "pending":
            raise ApiError(409, "conflict", "a request with this Idempotency-Key is still in progress")
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


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise ApiError(400, "validation_error", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "validation_error", "the request body must be a JSON object")
    return data


# ---------------------------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------------------------


def _free_bytes(core: Core) -> int:
    import shutil

    return shutil.disk_usage(core.config.data_dir).free


def chunk_size_for(size: int, override: int | None) -> int:
    if override:
        return override
    if size < 64 * MB:
        return size
    if size <= 1024 * MB:
        return 8 * MB
    if size <= 10 * 1024 * MB:
        return 16 * MB
    return 32 * MB


def _upload_or_404(core: Core, upload_id: str) -> dict[str, Any]:
    row = core.store.one("SELECT * FROM uploads WHERE id=?", (upload_id,))
    if row is None:
        raise ApiError(404, "not_found", f"upload {upload_id} not found")
    if row["status"] == "uploading" and row["expires_at"] < now():
        from .worker import expire_uploads

        expire_uploads(core.store)
        row = core.store.one("SELECT * FROM uploads WHERE id=?", (upload_id,))
    return row  # type: ignore[return-value]


@idempotent
async def create_upload(request: Request) -> Response:
    core: Core = request.app.state.core
    data = await _json_body(request)
    name, size, mime = data.get("file_name"), data.get("file_size"), data.get("mime_type")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "validation_error", "file_name must be a non-empty string")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ApiError(400, "validation_error", "file_size must be an integer >= 1")
    if size > MAX_FILE_SIZE:
        raise ApiError(400, "validation_error", f"file_size exceeds the maximum of {MAX_FILE_SIZE} bytes")
    if not isinstance(mime, str):
        raise ApiError(400, "validation_error", "mime_type must be a string")
    if size > _free_bytes(core) - DISK_RESERVE:
        raise ApiError(
            503, "capacity_exceeded", "not enough disk space for this upload; free space and retry"
        )
    chunk = chunk_size_for(size, core.config.chunk_size)
    total = math.ceil(size / chunk)
    uid = new_id("upl")
    staging = core.config.data_dir / "uploads" / f"{uid}.part"
    with open(staging, "wb") as fh:
        fh.truncate(size)  # sparse: parts are written at their offsets
    t = now()
    core.store.conn().execute(
        "INSERT INTO uploads (id, file_name, file_size, mime_type, chunk_size, total_chunks, status,"
        " created_at, expires_at, path) VALUES (?,?,?,?,?,?,'uploading',?,?,?)",
        (uid, name, size, mime, chunk, total, t, t + UPLOAD_TTL, str(staging)),
    )
    return ok({"id": uid, "chunk_size": chunk, "total_chunks": total, "expires_at": iso(t + UPLOAD_TTL)}, 201)


def upload_json(core: Core, row: dict[str, Any]) -> dict[str, Any]:
    parts = core.store.conn().execute(
        "SELECT part_number FROM upload_parts WHERE upload_id=? ORDER BY part_number", (row["id"],)
    )
    probe = row.get("probe") or {}
    return {
        "id": row["id"],
        "status": row["status"],
        "file_name": row["file_name"],
        "total_chunks": row["total_chunks"],
        "received_chunks": [r[0] for r in parts],
        "expires_at": iso(row["expires_at"]),
        "source_width": probe.get("width"),
        "source_height": probe.get("height"),
        "source_duration_seconds": probe.get("duration"),
    }


async def get_upload(request: Request) -> Response:
    core: Core = request.app.state.core
    return ok(upload_json(core, _upload_or_404(core, request.path_params["id"])))


async def put_part(request: Request) -> Response:
    core: Core = request.app.state.core
    uid = request.path_params["id"]
    row = _upload_or_404(core, uid)
    try:
        n = int(request.path_params["part_number"])
    except ValueError:
        raise ApiError(400, "validation_error", "part_number must be an integer") from None
    if row["status"] != "uploading":
        raise ApiError(409, "conflict", f"upload {uid} is {row['status']}, not uploading")
    if n < 0 or n >= row["total_chunks"]:
        raise ApiError(
            400, "validation_error", f"part_number {n} is out of range 0..{row['total_chunks'] - 1}"
        )
    chunk, size = row["chunk_size"], row["file_size"]
    expected = min(chunk, size - n * chunk)
    have = (
        core.store.conn()
        .execute("SELECT 1 FROM upload_parts WHERE upload_id=? AND part_number=?", (uid, n))
        .fetchone()
    )
    if have is not None:
        async for _ in request.stream():  # drain; a received part is never rewritten
            pass
        return ok({"part_number": n, "received": True})
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > expected:
        raise ApiError(400, "validation_error", f"part {n} must be at most {expected} bytes")
    written = 0
    try:
        fh = open(row["path"], "r+b")
    except FileNotFoundError:
        raise ApiError(409, "conflict", f"upload {uid} is no longer uploading") from None
    hasher = _prefix_hash(request.app, uid, row)
    try:
        with fh:
            fh.seek(n * chunk)
            async for block in request.stream():
                if not block:
                    continue
                written += len(block)
                if written > expected:
                    raise ApiError(400, "validation_error", f"part {n} must be at most {expected} bytes")
                fh.write(block)
    finally:
        if hasher is not None and written:
            hasher.wrote_at(n * chunk)  # the bytes are in the file now (fh is closed)
    if written == 0:
        raise ApiError(400, "validation_error", f"part {n} has an empty body")
    core.store.conn().execute(
        "INSERT OR IGNORE INTO upload_parts (upload_id, part_number, size) VALUES (?,?,?)", (uid, n, written)
    )
    if hasher is not None and written == expected:
        hasher.add(n, written)
        hasher.kick()
    return ok({"part_number": n, "received": True})


def _prefix_hash(app: Any, uid: str, row: dict[str, Any]) -> PrefixHash | None:
    """The upload's incremental hasher (created on the first part this process receives)."""
    if not hasattr(os, "pread"):  # pragma: no cover - non-POSIX: complete reads the whole file
        return None
    hashers: dict[str, PrefixHash] = app.state.prefix_hashes
    hasher = hashers.get(uid)
    if hasher is None:
        hasher = hashers.setdefault(uid, PrefixHash(row["path"], row["chunk_size"], row["file_size"]))
    return hasher


def _drop_prefix_hash(app: Any, uid: str) -> PrefixHash | None:
    hasher = app.state.prefix_hashes.pop(uid, None)
    if hasher is not None:
        hasher.close()
    return hasher


@idempotent
async def complete_upload(request: Request) -> Response:
    core: Core = request.app.state.core
    uid = request.path_params["id"]
    row = _upload_or_404(core, uid)
    if row["status"] != "uploading":
        raise ApiError(409, "conflict", f"upload {uid} is {row['status']}, not uploading")
    parts = core.store.all("SELECT part_number, size FROM upload_parts WHERE upload_id=?", (uid,))
    missing = row["total_chunks"] - len(parts)
    if missing:
        raise ApiError(
            400,
            "validation_error",
            f"{missing} of {row['total_chunks']} parts are missing; upload them first",
        )
    received = sum(p["size"] for p in parts)
    if received != row["file_size"]:
        raise ApiError(
            422,
            "source_invalid",
            f"assembled size {received} bytes does not match file_size {row['file_size']}",
        )
    cur = core.store.conn().execute(
        "UPDATE uploads SET status='assembling', assembling_owner=? WHERE id=? AND status='uploading'",
        (core.workers.owner, uid),
    )
    if cur.rowcount != 1:
        raise ApiError(409, "conflict", f"upload {uid} is already being completed")
    staging = Path(row["path"])
    ext = Path(row["file_name"]).suffix.lower()[:10] or ".bin"
    final = core.config.data_dir / "sources" / f"{uid}{ext}"
    if not staging.exists() and final.exists():  # a server died between the move and the commit
        os.replace(final, staging)
    # the parts this process received were hashed as they landed: read only the rest
    hasher = _drop_prefix_hash(request.app, uid)
    try:
        if hasher is not None and Path(hasher.path) == staging:
            digest = await run_in_threadpool(hasher.finish)
        else:
            digest = await run_in_threadpool(sha256_file, staging)
        info = await run_in_threadpool(media.probe, staging)
    except media.ProbeError as exc:
        core.store.conn().execute("UPDATE uploads SET status='canceled' WHERE id=?", (uid,))
        core.store.conn().execute("DELETE FROM upload_parts WHERE upload_id=?", (uid,))
        staging.unlink(missing_ok=True)
        raise ApiError(422, "source_invalid", f"the uploaded file is not a usable video: {exc}") from None
    except BaseException:
        core.store.conn().execute(
            "UPDATE uploads SET status='uploading', assembling_owner=NULL WHERE id=?", (uid,)
        )
        raise
    os.replace(staging, final)
    core.store.conn().execute(
        "UPDATE uploads SET status='completed', sha256=?, probe=?, path=? WHERE id=?",
        (digest, json.dumps(info), str(final), uid),
    )
    return ok({"id": uid, "status": "completed", "sha256": digest, "bytes": row["file_size"]})


async def cancel_upload(request: Request) -> Response:
    core: Core = request.app.state.core
    uid = request.path_params["id"]
    row = _upload_or_404(core, uid)
    _drop_prefix_hash(request.app, uid)
    if row["status"] != "canceled":
        core.store.conn().execute("UPDATE uploads SET status='canceled' WHERE id=?", (uid,))
        core.store.conn().execute("DELETE FROM upload_parts WHERE upload_id=?", (uid,))
        used = core.store.conn().execute("SELECT 1 FROM jobs WHERE upload_id=? LIMIT 1", (uid,)).fetchone()
        if row["path"] and used is None:  # a job's source (or "original" output) stays
            Path(row["path"]).unlink(missing_ok=True)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    out = dict(job["output"])
    out["retention_expires_at"] = iso(out.get("retention_expires_at"))
    doc: dict[str, Any] = {
        "id": job["id"],
        "status": job["status"],
        "status_reason": job["status_reason"],
        "attempt": job["attempt"],
        "retryable": job["status"] not in TERMINAL,
        "profile": job["profile"],
    }
    if job["effective_profile_id"]:
        doc["effective_profile_id"] = job["effective_profile_id"]
    doc.update(
        {
            "source": job["source"],
            "progress": job["progress"],
            "output": out,
            "metadata": job["metadata"],
            "created_at": iso(job["created_at"]),
            "started_at": iso(job["started_at"]),
            "completed_at": iso(job["completed_at"]),
            "error": job["error"],
        }
    )
    if job["status"] == "completed":
        doc["final_artifact"] = job["final_artifact"]
        doc["saved_percent"] = job["saved_percent"]
    return doc


def _job_or_404(core: Core, job_id: str) -> dict[str, Any]:
    row = core.store.get_job(job_id)
    if row is None:
        raise ApiError(404, "not_found", f"job {job_id} not found")
    return row


@idempotent
async def create_job(request: Request) -> Response:
    core: Core = request.app.state.core
    data = await _json_body(request)
    source = data.get("source")
    if not isinstance(source, dict) or source.get("type") != "upload":
        raise ApiError(400, "validation_error", 'source must be {"type": "upload", "upload_id": "..."}')
    upload_id = source.get("upload_id")
    if not isinstance(upload_id, str) or not upload_id:
        raise ApiError(400, "validation_error", "source.upload_id must be a non-empty string")
    profile = data.get("profile")
    if profile not in PROFILES:
        raise ApiError(
            400, "validation_error", f"unknown profile {profile!r}; use one of: {', '.join(PROFILES)}"
        )
    output = data.get("output") or {}
    if not isinstance(output, dict):
        raise ApiError(400, "validation_error", "output must be an object")
    container = output.get("container", "mp4")
    if container is None:
        container = "mp4"
    if container not in ("mp4", "mkv"):
        raise ApiError(400, "validation_error", "output.container must be mp4 or mkv")
    audio = output.get("audio", False)
    if audio is None:
        audio = False
    if not isinstance(audio, bool):
        raise ApiError(400, "validation_error", "output.audio must be true or false")
    th = output.get("target_height")
    if th is not None and (isinstance(th, bool) or not isinstance(th, int) or not 144 <= th <= 4320):
        raise ApiError(400, "validation_error", "output.target_height must be an integer from 144 to 4320")
    hooks = data.get("webhook_ids", [])
    if hooks is None:
        hooks = []
    if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
        raise ApiError(400, "validation_error", "webhook_ids must be a list of webhook ids")
    for wid in hooks:
        w = core.store.one("SELECT active FROM webhooks WHERE id=?", (wid,))
        if w is None or not w["active"]:
            raise ApiError(400, "validation_error", f"webhook {wid} does not exist or is inactive")
    metadata = data.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ApiError(400, "validation_error", "metadata must be a JSON object")
    if len(json.dumps(metadata, separators=(",", ":")).encode()) > METADATA_LIMIT:
        raise ApiError(400, "validation_error", "metadata exceeds 16 KiB when serialized")
    upload = core.store.one("SELECT * FROM uploads WHERE id=?", (upload_id,))
    if upload is None:
        raise ApiError(400, "validation_error", f"upload {upload_id} not found")
    if upload["status"] != "completed":
        raise ApiError(422, "source_invalid", f"upload {upload_id} is {upload['status']}, not completed")
    probe = upload["probe"] or {}
    src_info = {
        "name": upload["file_name"],
        "bytes": upload["file_size"],
        "sha256": upload["sha256"],
        "duration_seconds": probe.get("duration"),
        "resolution": f"{probe['width']}x{probe['height']}" if probe.get("width") else None,
        "frame_rate": probe.get("frame_rate"),
    }
    out_info = {
        "state": "pending",
        "container": container,
        "audio": audio,
        "target_height": th,
        "width": None,
        "height": None,
        "bytes": None,
        "sha256": None,
        "retention_expires_at": None,
    }
    jid = new_id("job")
    core.store.conn().execute(
        "INSERT INTO jobs (id, upload_id, status, profile, options, webhook_ids, metadata, source,"
        " progress, output, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            jid,
            upload_id,
            "queued",
            profile,
            json.dumps({"container": container, "audio": audio, "target_height": th}),
            json.dumps(hooks),
            json.dumps(metadata),
            json.dumps(src_info),
            json.dumps(progress_doc("queued", None)),
            json.dumps(out_info),
            now(),
        ),
    )
    created = job_json(core.store.get_job(jid))  # type: ignore[arg-type]  # as created: queued
    core.workers.notify()
    core.metrics.inc("sophon_jobs_created_total", profile=profile)
    return ok(created, 201)


async def get_job(request: Request) -> Response:
    core: Core = request.app.state.core
    return ok(job_json(_job_or_404(core, request.path_params["id"])))


async def cancel_job(request: Request) -> Response:
    core: Core = request.app.state.core
    jid = request.path_params["id"]
    job = _job_or_404(core, jid)
    row = finish_job(
        core.store,
        jid,
        "canceled",
        progress=dict(job["progress"], phase="canceled", stage="canceled"),
    )
    if row is None:
        job = _job_or_404(core, jid)
        raise ApiError(
            409, "job_not_cancelable", f"job {jid} is already {job['status']} and cannot be canceled"
        )
    core.workers.cancel(jid)
    core.delivery.notify()
    core.metrics.inc("sophon_jobs_finished_total", status="canceled")
    return ok(job_json(row))


def _encode_cursor(seq: int) -> str:
    import base64

    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> int:
    import base64

    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        tag, _, seq = raw.partition(":")
        if tag != "v1":
            raise ValueError
        value = int(seq)
        if value < 0:
            raise ValueError
        return value
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "validation_error", "cursor is not valid; start again without a cursor") from None


async def list_jobs(request: Request) -> Response:
    core: Core = request.app.state.core
    q = request.query_params
    status = q.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise ApiError(
            400, "validation_error", f"unknown status {status!r}; use one of: {', '.join(JOB_STATUSES)}"
        )
    limit_text = q.get("limit")
    limit = 20
    if limit_text is not None:
        try:
            limit = int(limit_text)
        except ValueError:
            raise ApiError(400, "validation_error", "limit must be an integer from 1 to 100") from None
        if not 1 <= limit <= 100:
            raise ApiError(400, "validation_error", "limit must be an integer from 1 to 100")
    where, args = [], []
    cursor = q.get("cursor")
    if cursor:
        where.append("seq < ?")
        args.append(_decode_cursor(cursor))
    if status:
        where.append("status = ?")
        args.append(status)
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "")
    rows = core.store.all(sql + " ORDER BY seq DESC LIMIT ?", (*args, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return ok(
        {
            "jobs": [job_json(r) for r in rows],
            "next_cursor": _encode_cursor(rows[-1]["seq"]) if more else None,
            "has_more": more,
        }
    )


async def job_output(request: Request) -> Response:
    core: Core = request.app.state.core
    jid = request.path_params["id"]
    job = _job_or_404(core, jid)
    if job["status"] != "completed" or not job["output_path"]:
        raise ApiError(409, "output_not_ready", f"job {jid} is {job['status']}; wait until it is completed")
    token, _exp = core.signer.issue(jid)
    return Response(status_code=302, headers={"Location": f"/v1/downloads/{token}"})


async def download(request: Request) -> Response:
    core: Core = request.app.state.core
    try:
        jid = core.signer.verify(request.path_params["token"])
    except TokenError as exc:
        raise ApiError(
            403, "forbidden", f"{exc}; request a new link from GET /v1/jobs/{{id}}/output"
        ) from None
    job = core.store.get_job(jid)
    if job is None or not job["output_path"] or not Path(job["output_path"]).is_file():
        raise ApiError(404, "not_found", "the output file is not available")
    container = job["output"].get("container") or "mp4"
    if job["final_artifact"] == "original":
        suffix = Path(job["source"].get("name") or "").suffix or ".mp4"
        media_type = "video/mp4" if suffix.lower() in (".mp4", ".m4v", ".mov") else "application/octet-stream"
    else:
        suffix = f".{container}"
        media_type = "video/mp4" if container == "mp4" else "video/x-matroska"
    stem = Path(job["source"].get("name") or jid).stem or jid
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:100] or jid
    resp = FileResponse(
        job["output_path"],
        media_type=media_type,
        filename=f"{safe}.sophon{suffix}",
        content_disposition_type="attachment",
    )
    resp.chunk_size = 1 << 20  # 1 MiB per worker-thread read instead of starlette's 64 KiB
    return resp


# ---------------------------------------------------------------------------------------------
# Webhooks
# ---------------------------------------------------------------------------------------------


def check_webhook_url(url: Any, allow_insecure: bool) -> str:
    if not isinstance(url, str) or not url:
        raise ApiError(400, "validation_error", "url must be an https URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise ApiError(400, "validation_error", "url is not a valid URL") from None
    allowed = ("https", "http") if allow_insecure else ("https",)
    if parts.scheme not in allowed:
        raise ApiError(400, "validation_error", "url must use https")
    if not host:
        raise ApiError(400, "validation_error", "url has no host")
    if parts.username or parts.password:
        raise ApiError(400, "validation_error", "url must not contain user info")
    if allow_insecure:
        return url
    if host == "localhost" or host.endswith(".localhost") or host.endswith(".local"):
        raise ApiError(400, "validation_error", "url must not point to a local host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return url
    if (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    ):
        raise ApiError(
            400, "validation_error", "url must not point to a private, loopback or link-local address"
        )
    return url


@idempotent
async def create_webhook(request: Request) -> Response:
    core: Core = request.app.state.core
    data = await _json_body(request)
    url = check_webhook_url(data.get("url"), core.config.allow_insecure_webhooks)
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "validation_error", "name must be a string")
    wid = new_id("wh")
    secret = secrets.token_hex(32)
    t = now()
    core.store.conn().execute(
        "INSERT INTO webhooks (id, url, name, secret, active, created_at) VALUES (?,?,?,?,1,?)",
        (wid, url, name, secret, t),
    )
    return ok({"id": wid, "url": url, "secret": secret, "active": True, "created_at": iso(t)}, 201)


async def list_webhooks(request: Request) -> Response:
    core: Core = request.app.state.core
    rows = core.store.all(
        "SELECT id, url, active, created_at FROM webhooks WHERE active=1 ORDER BY created_at"
    )
    return ok(
        {
            "webhooks": [
                {
                    "id": r["id"],
                    "url": r["url"],
                    "active": bool(r["active"]),
                    "created_at": iso(r["created_at"]),
                }
                for r in rows
            ]
        }
    )


async def delete_webhook(request: Request) -> Response:
    core: Core = request.app.state.core
    wid = request.path_params["id"]
    cur = core.store.conn().execute("UPDATE webhooks SET active=0 WHERE id=? AND active=1", (wid,))
    if cur.rowcount != 1:
        raise ApiError(404, "not_found", f"webhook {wid} not found or already inactive")
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# Health
# ---------------------------------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return ok({"status": "ok"})


async def readyz(request: Request) -> Response:
    core: Core = request.app.state.core
    failed = []
    if not core.store.ping():
        failed.append("database")
    try:
        if _free_bytes(core) < DISK_RESERVE:
            failed.append("disk_critical")
    except OSError:
        failed.append("disk_critical")
    if not (core.workers.alive() and core.delivery.alive()):
        failed.append("workers_dead")
    return ok({"ready": not failed, "checks_failed": failed}, 200 if not failed else 503)


async def metrics(request: Request) -> Response:
    core: Core = request.app.state.core
    lines = []
    seen = set()
    for (name, labels), value in sorted(core.metrics.snapshot().items()):
        if name not in seen:
            lines.append(f"# TYPE {name} counter")
            seen.add(name)
        lab = ",".join(f'{k}="{v}"' for k, v in labels)
        lines.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")
    lines.append("# TYPE sophon_jobs gauge")
    for status, count in core.store.conn().execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
        lines.append(f'sophon_jobs{{status="{status}"}} {count}')
    lines.append("# TYPE sophon_webhook_deliveries gauge")
    for state, count in core.store.conn().execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
        lines.append(f'sophon_webhook_deliveries{{state="{state}"}} {count}')
    lines.append("# TYPE sophon_workers_busy gauge")
    lines.append(f"sophon_workers_busy {core.workers.busy}")
    lines.append("# TYPE sophon_uptime_seconds gauge")
    lines.append(f"sophon_uptime_seconds {time.time() - core.started_at:.3f}")
    return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------


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
            "validation_error",
            f"method {request.method} is not allowed here" + (f"; use {allow}" if allow else ""),
            _rid(request),
            headers={"Allow": allow} if allow else None,
        )
    if exc.status_code == 404:
        return envelope(404, "not_found", f"no route for {request.method} {request.url.path}", _rid(request))
    return envelope(exc.status_code, "validation_error", str(exc.detail), _rid(request))


async def _gone(request: Request, exc: Exception) -> Response:
    # the client went away mid-request (nothing can be sent); a partial part is not recorded
    return envelope(
        400, "validation_error", "the client disconnected before the body was complete", _rid(request)
    )


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, redact_path(request.url.path))
    return envelope(500, "internal_error", "internal error in the local server; retry", _rid(request))


def build_app(core: Core):
    routes = [
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs", create_job, methods=["POST"]),
        Route("/v1/jobs/{id}", get_job, methods=["GET"]),
        Route("/v1/jobs/{id}", cancel_job, methods=["DELETE"]),
        Route("/v1/jobs/{id}/output", job_output, methods=["GET"]),
        Route("/v1/uploads", create_upload, methods=["POST"]),
        Route("/v1/uploads/{id}", get_upload, methods=["GET"]),
        Route("/v1/uploads/{id}", cancel_upload, methods=["DELETE"]),
        Route("/v1/uploads/{id}/parts/{part_number}", put_part, methods=["PUT"]),
        Route("/v1/uploads/{id}/complete", complete_upload, methods=["POST"]),
        Route("/v1/webhooks", list_webhooks, methods=["GET"]),
        Route("/v1/webhooks", create_webhook, methods=["POST"]),
        Route("/v1/webhooks/{id}", delete_webhook, methods=["DELETE"]),
        Route("/v1/downloads/{token}", download, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            ClientDisconnect: _gone,
            Exception: _crash,
        },
    )
    app.state.core = core
    app.state.prefix_hashes = {}  # upload id -> PrefixHash (see uploadhash.py)
    return Frame(app, core)
