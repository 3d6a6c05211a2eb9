"""``/v1/jobs``: create, read, list and cancel jobs; the output redirect and signed downloads."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..core import Core
from ..errors import ApiError, Code, envelope, invalid
from ..idempotency import idempotent
from ..tokens import TokenError
from ..util import JOB_STATUSES, PROFILES, TERMINAL, iso, new_id, now
from ..worker import finish_job, progress_doc
from .common import as_int, core_of, json_body, ok

try:
    from ..zerocopy import available as zerocopy_available
except ImportError:  # no httptools: uvicorn's own protocol runs, without the zero-copy send
    zerocopy_available = None

METADATA_LIMIT = 16 * 1024
_LEAVE_OUT = ", not null; leave it out for the default"
MAX_SEQ = (1 << 63) - 1


def metadata_size(metadata: dict[str, Any]) -> int:
    """What the 16 KiB metadata limit counts: the UTF-8 bytes of the compact JSON serialization
    (no ASCII escaping: ``"é"`` is 2 bytes, not the 6 of ``"\\u00e9"``). A body's lone surrogates
    were refused by ``json_body``."""
    return len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def output_expired(job: dict[str, Any]) -> bool:
    """The job's retention ended: its output is no longer downloadable."""
    until = job["output"].get("retention_expires_at")
    return until is not None and until <= now()


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    out = dict(job["output"])
    if out.get("state") == "available" and output_expired(job):
        out["state"] = "expired"  # not in the spec's enum (pending, available): see the README
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


def job_or_404(core: Core, job_id: str) -> dict[str, Any]:
    row = core.store.get_job(job_id)
    if row is None:
        raise ApiError(404, Code.NOT_FOUND, f"job {job_id} not found")
    return row


@idempotent
async def create_job(request: Request) -> Response:
    core = core_of(request)
    data = await json_body(request)
    source = data.get("source")
    if not isinstance(source, dict) or source.get("type") != "upload":
        raise invalid('source must be {"type": "upload", "upload_id": "..."}')
    upload_id = source.get("upload_id")
    if not isinstance(upload_id, str) or not upload_id:
        raise invalid("source.upload_id must be a non-empty string")
    profile = data.get("profile")
    if profile not in PROFILES:
        raise invalid(f"unknown profile {profile!r}; use one of: {', '.join(PROFILES)}")
    # output, container, audio, webhook_ids and metadata are not nullable in the contract: a null
    # is refused like any other wrong type (left out, each has its default)
    output = data.get("output", {})
    if not isinstance(output, dict):
        raise invalid("output must be an object" + _LEAVE_OUT * (output is None))
    container = output.get("container", "mp4")
    if container not in ("mp4", "mkv"):
        raise invalid("output.container must be mp4 or mkv" + _LEAVE_OUT * (container is None))
    audio = output.get("audio", False)
    if not isinstance(audio, bool):
        raise invalid("output.audio must be true or false" + _LEAVE_OUT * (audio is None))
    th = output.get("target_height")
    if th is not None:
        th = as_int(th)
        if th is None or not 144 <= th <= 4320:
            raise invalid("output.target_height must be an integer from 144 to 4320")
    hooks = data.get("webhook_ids", [])
    if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
        raise invalid("webhook_ids must be a list of webhook ids" + _LEAVE_OUT * (hooks is None))
    for wid in hooks:
        if not core.store.webhook_is_active(wid):
            raise invalid(f"webhook {wid} does not exist or is inactive")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise invalid("metadata must be a JSON object" + _LEAVE_OUT * (metadata is None))
    if metadata_size(metadata) > METADATA_LIMIT:
        raise invalid(
            f"metadata is {metadata_size(metadata)} bytes as compact UTF-8 JSON; the limit is 16 KiB"
        )
    upload = core.store.get_upload(upload_id)
    if upload is None:
        raise invalid(f"upload {upload_id} not found")
    if upload["status"] != "completed":
        raise ApiError(422, Code.SOURCE_INVALID, f"upload {upload_id} is {upload['status']}, not completed")
    if upload["expires_at"] <= now():
        raise ApiError(
            422,
            Code.SOURCE_INVALID,
            f"upload {upload_id} expired at {iso(upload['expires_at'])}; upload the file again",
        )
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
        "audio": False,  # what the muxed result contains: known at completion (the spec)
        "target_height": th,
        "width": None,
        "height": None,
        "bytes": None,
        "sha256": None,
        "retention_expires_at": None,
    }
    jid = new_id("job")
    core.store.insert_job(
        id=jid,
        upload_id=upload_id,
        status="queued",
        profile=profile,
        options={"container": container, "audio": audio, "target_height": th},
        webhook_ids=hooks,
        metadata=metadata,
        source=src_info,
        progress=progress_doc("queued", None),
        output=out_info,
        created_at=now(),
    )
    created = job_json(job_or_404(core, jid))  # as created: queued
    core.workers.notify()
    core.metrics.inc("sophon_jobs_created_total", profile=profile)
    return ok(created, 201)


async def get_job(request: Request) -> Response:
    core = core_of(request)
    return ok(job_json(job_or_404(core, request.path_params["id"])))


async def cancel_job(request: Request) -> Response:
    core = core_of(request)
    jid = request.path_params["id"]
    # one conditional UPDATE: the progress kept is the stored one at that moment (see
    # Store.finish_job), not a copy read before it that a worker's progress write could outdate
    row = finish_job(core.store, jid, "canceled")
    if row is None:
        job = job_or_404(core, jid)
        raise ApiError(
            409, Code.JOB_NOT_CANCELABLE, f"job {jid} is already {job['status']} and cannot be canceled"
        )
    core.workers.cancel(jid)
    core.delivery.notify()
    core.metrics.inc("sophon_jobs_finished_total", status="canceled")
    return ok(job_json(row))


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        tag, _, seq = raw.partition(":")
        if tag != "v1":
            raise ValueError
        if not seq.isdigit() or len(seq) > 19:
            raise ValueError
        value = int(seq)
        if value > MAX_SEQ:  # SQLite integers are signed 64-bit
            raise ValueError
        return value
    except (ValueError, UnicodeDecodeError):
        raise invalid("cursor is not valid; start again without a cursor") from None


async def list_jobs(request: Request) -> Response:
    core = core_of(request)
    q = request.query_params
    status = q.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise invalid(f"unknown status {status!r}; use one of: {', '.join(JOB_STATUSES)}")
    limit_text = q.get("limit")
    limit = 20
    if limit_text is not None:
        # ASCII digits only: int() would also take " 5", "1_0" and other scripts' digits (and a
        # few thousand digits would make it raise)
        digits = limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 10
        if not digits or not 1 <= int(limit_text) <= 100:
            raise invalid("limit must be an integer from 1 to 100")
        limit = int(limit_text)
    cursor = q.get("cursor")
    before = decode_cursor(cursor) if cursor else None
    rows = core.store.list_jobs(before_seq=before, status=status or None, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return ok(
        {
            "jobs": [job_json(r) for r in rows],
            "next_cursor": encode_cursor(rows[-1]["seq"]) if more else None,
            "has_more": more,
        }
    )


async def job_output(request: Request) -> Response:
    core = core_of(request)
    jid = request.path_params["id"]
    job = job_or_404(core, jid)
    status = job["status"]
    if status in ("failed", "canceled"):
        raise ApiError(409, Code.OUTPUT_NOT_READY, f"job {jid} is {status}; it has no output")
    if status != "completed" or not job["output_path"]:
        raise ApiError(409, Code.OUTPUT_NOT_READY, f"job {jid} is {status}; wait until it is completed")
    if output_expired(job):
        raise ApiError(
            409,
            Code.OUTPUT_NOT_READY,
            f"the output of job {jid} expired at {iso(job['output']['retention_expires_at'])}"
            " (retention); it is no longer downloadable, create a new job",
        )
    token, _exp = core.signer.issue(jid)
    # absolute, as the spec types Location (format: uri): built from the request's own base URL
    base = str(request.base_url).rstrip("/")
    return Response(status_code=302, headers={"Location": f"{base}/v1/downloads/{token}"})


async def download(request: Request) -> Response:
    core = core_of(request)
    try:
        jid = core.signer.verify(request.path_params["token"])
    except TokenError as exc:
        raise ApiError(
            403, Code.FORBIDDEN, f"{exc}; request a new link from GET /v1/jobs/{{id}}/output"
        ) from None
    job = core.store.get_job(jid)
    gone = job is None or not job["output_path"] or output_expired(job)
    if gone or not Path(job["output_path"]).is_file():
        raise ApiError(404, Code.NOT_FOUND, "the output file is not available")
    container = job["output"].get("container") or "mp4"
    if job["final_artifact"] == "original":
        suffix = Path(job["source"].get("name") or "").suffix or ".mp4"
        media_type = "video/mp4" if suffix.lower() in (".mp4", ".m4v", ".mov") else "application/octet-stream"
    else:
        suffix = f".{container}"
        media_type = "video/mp4" if container == "mp4" else "video/x-matroska"
    stem = Path(job["source"].get("name") or jid).stem or jid
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:100] or jid
    resp = _OutputFile(
        job["output_path"],
        media_type=media_type,
        filename=f"{safe}.sophon{suffix}",
        content_disposition_type="attachment",
    )
    resp.chunk_size = 1 << 20  # 1 MiB per worker-thread read instead of starlette's 64 KiB
    return resp


ZEROCOPY_TAIL = 64 << 10  # the last bytes of a body go as a body message (see _OutputFile)


class _OutputFile(FileResponse):
    """A FileResponse whose Range errors (416, and 400 for a malformed Range) carry the error
    envelope instead of Starlette's plain text, and whose whole-file body is sent by
    ``sendfile`` where the server offers it (:mod:`..zerocopy`); everything else is Starlette's
    own handling.

    Sendfile: Starlette sends a whole file as one ``http.response.pathsend`` message when the
    scope offers that extension; here it is offered to Starlette and each such message becomes
    ``http.response.zerocopy`` of all but the last :data:`ZEROCOPY_TAIL` bytes plus a final
    ``http.response.body`` carrying those, so the response still ends with a body message (the
    request log records a request before its last byte leaves). Range requests (a resume) keep
    Starlette's 1 MiB reads."""

    async def __call__(self, scope, receive, send) -> None:
        held: dict[str, Any] = {}
        length = [0]
        if zerocopy_available is not None and zerocopy_available(scope):
            scope = {**scope, "extensions": {**scope["extensions"], "http.response.pathsend": {}}}

        async def send_or_replace(message) -> None:
            if message["type"] == "http.response.start":
                for k, v in message.get("headers", []):
                    if k.lower() == b"content-length":
                        length[0] = int(v)
            if message["type"] == "http.response.pathsend":
                await self._send_file(message["path"], length[0], send)
                return
            if message["type"] == "http.response.start" and message["status"] in (400, 416):
                held["status"] = message["status"]
                held["headers"] = {
                    k.decode("latin-1"): v.decode("latin-1")
                    for k, v in message.get("headers", [])
                    if k.lower() == b"content-range"
                }
                return
            if held:
                if message["type"] == "http.response.body" and not message.get("more_body", False):
                    status = held["status"]
                    text = (
                        "the requested range is not satisfiable"
                        if status == 416
                        else "the Range header is malformed"
                    )
                    size = held["headers"].get("content-range", "").rpartition("/")[2]
                    if status == 416 and size:
                        text += f" (the file has {size} bytes)"
                    rid = scope.get("state", {}).get("request_id")
                    await envelope(status, Code.VALIDATION_ERROR, text, rid, held["headers"])(
                        scope, receive, send
                    )
                return
            await send(message)

        await super().__call__(scope, receive, send_or_replace)

    async def _send_file(self, path: str, length: int, send) -> None:
        """The body of ``length`` bytes from ``path``: sendfile, then the tail as a body message."""
        import anyio

        fh = await anyio.to_thread.run_sync(open, path, "rb")
        try:
            head = max(0, length - ZEROCOPY_TAIL)
            try:
                await send(
                    {
                        "type": "http.response.zerocopy",
                        "file": fh,
                        "offset": 0,
                        "count": head,
                        "more_body": True,
                    }
                )
            except asyncio.SendfileNotAvailableError:
                head = 0  # not on this loop or transport after all: every byte as a body message
            fh.seek(head)
            while True:
                chunk = await anyio.to_thread.run_sync(fh.read, min(self.chunk_size, length - head))
                head += len(chunk)
                more = bool(chunk) and head < length
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    return
        finally:
            fh.close()
