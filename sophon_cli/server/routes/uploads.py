"""``/v1/uploads``: chunked upload sessions (create, status, parts, complete, cancel)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .. import media
from ..core import Core
from ..errors import ApiError, Code, invalid
from ..idempotency import idempotent
from ..uploadhash import UploadDigest
from ..util import iso, new_id, now
from ..worker import expire_uploads, sha256_file
from .common import as_int, core_of, json_body, ok

MB = 1024 * 1024
MAX_FILE_SIZE = 1 << 40  # 1 TiB
DISK_RESERVE = 64 * MB  # uploads and readiness keep this much disk free


def free_bytes(core: Core) -> int:
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


def upload_or_404(core: Core, upload_id: str) -> dict[str, Any]:
    row = core.store.get_upload(upload_id)
    if row is None:
        raise ApiError(404, Code.NOT_FOUND, f"upload {upload_id} not found")
    if row["status"] == "uploading" and row["expires_at"] < now():
        expire_uploads(core.store)
        row = core.store.get_upload(upload_id)
    return row  # type: ignore[return-value]


@idempotent
async def create_upload(request: Request) -> Response:
    core = core_of(request)
    data = await json_body(request)
    name, size, mime = data.get("file_name"), data.get("file_size"), data.get("mime_type")
    if not isinstance(name, str) or not name:  # the contract: minLength 1, no pattern (" " is a name)
        raise invalid("file_name must be a string of at least one character")
    size = as_int(size)
    if size is None or size < 1:
        raise invalid("file_size must be an integer >= 1")
    if size > MAX_FILE_SIZE:
        raise invalid(f"file_size exceeds the maximum of {MAX_FILE_SIZE} bytes")
    if not isinstance(mime, str):
        raise invalid("mime_type must be a string")
    if size > free_bytes(core) - DISK_RESERVE:
        raise ApiError(
            503, Code.CAPACITY_EXCEEDED, "not enough disk space for this upload; free space and retry"
        )
    chunk = chunk_size_for(size, core.config.chunk_size)
    total = math.ceil(size / chunk)
    uid = new_id("upl")
    staging = core.config.data_dir / "uploads" / f"{uid}.part"
    with open(staging, "wb") as fh:
        fh.truncate(size)  # sparse: parts are written at their offsets
    t = now()
    expires = t + core.config.upload_ttl
    core.store.insert_upload(
        id=uid,
        file_name=name,
        file_size=size,
        mime_type=mime,
        chunk_size=chunk,
        total_chunks=total,
        created_at=t,
        expires_at=expires,
        path=str(staging),
    )
    return ok({"id": uid, "chunk_size": chunk, "total_chunks": total, "expires_at": iso(expires)}, 201)


def upload_json(core: Core, row: dict[str, Any]) -> dict[str, Any]:
    probe = row.get("probe") or {}
    return {
        "id": row["id"],
        "status": row["status"],
        "file_name": row["file_name"],
        "total_chunks": row["total_chunks"],
        "received_chunks": core.store.part_numbers(row["id"]),
        "expires_at": iso(row["expires_at"]),
        "source_width": probe.get("width"),
        "source_height": probe.get("height"),
        "source_duration_seconds": probe.get("duration"),
    }


async def get_upload(request: Request) -> Response:
    core = core_of(request)
    return ok(upload_json(core, upload_or_404(core, request.path_params["id"])))


async def put_part(request: Request) -> Response:
    core = core_of(request)
    uid = request.path_params["id"]
    row = upload_or_404(core, uid)
    try:
        n = int(request.path_params["part_number"])
    except ValueError:
        raise invalid("part_number must be an integer") from None
    if row["status"] != "uploading":
        raise ApiError(409, Code.CONFLICT, f"upload {uid} is {row['status']}, not uploading")
    if n < 0 or n >= row["total_chunks"]:
        raise invalid(f"part_number {n} is out of range 0..{row['total_chunks'] - 1}")
    chunk, size = row["chunk_size"], row["file_size"]
    expected = min(chunk, size - n * chunk)
    if core.store.has_part(uid, n):
        return await _drained(request, n)
    wrong_length = f"part {n} must be exactly {expected} bytes"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) != expected:
        raise invalid(f"{wrong_length}, not {int(declared)}")
    # one writer per part at a time: a duplicate PUT of a part being received waits for the first
    # one, then drains if it was recorded (a received part is never rewritten) or writes if not
    async with _part_writer(request.app, uid, n):
        row = upload_or_404(core, uid)
        if row["status"] != "uploading":
            raise ApiError(409, Code.CONFLICT, f"upload {uid} is {row['status']}, not uploading")
        if core.store.has_part(uid, n):
            return await _drained(request, n)
        return await _write_part(request, core, row, n, expected, wrong_length)


async def _drained(request: Request, n: int) -> Response:
    async for _ in request.stream():  # drain; a received part is never rewritten
        pass
    return ok({"part_number": n, "received": True})


class PartWriters:
    """Per-(upload, part) locks of one server process, dropped when nobody holds or waits for one."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, int], tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, uid: str, n: int) -> AsyncIterator[None]:
        key = (uid, n)
        lock, users = self._locks.setdefault(key, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[key]


def _part_writer(app: Any, uid: str, n: int) -> contextlib.AbstractAsyncContextManager[None]:
    writers: PartWriters = app.state.part_writers
    return writers.hold(uid, n)


async def _write_part(
    request: Request, core: Core, row: dict[str, Any], n: int, expected: int, wrong_length: str
) -> Response:
    """Receive part ``n``: the event loop only receives; the upload's thread writes each block at its
    offset and hashes it when the part extends the digest's prefix (``partsink.py``)."""
    uid = row["id"]
    digest = _digest(request.app, core, row)
    try:
        fd = os.open(row["path"], os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ApiError(409, Code.CONFLICT, f"upload {uid} is no longer uploading") from None
    feed = digest.part(n)
    written = 0
    try:
        try:
            sink = digest.worker.sink(fd, n * row["chunk_size"], request.app.state.retain_budget)
            try:
                async for block in request.stream():
                    if not block:
                        continue
                    if written + len(block) > expected:
                        raise invalid(f"{wrong_length}; the body is longer")
                    await sink.reserve(len(block))
                    earlier = feed.feed(block)  # hashed by the writer if the part extends the prefix
                    sink.put(block, feed.h, earlier)
                    written += len(block)
                await sink.close()  # every block written (and hashed)
            finally:
                await sink.stop()  # (nothing once closed) drops the rest; the thread is done with it
        finally:
            os.close(fd)
        if written != expected:  # not recorded: a correct PUT of the same part is still accepted
            raise invalid(f"{wrong_length}, not {written}")
        core.store.add_part(uid, n, written)
        feed.recorded()
    finally:
        feed.failed()  # (nothing once recorded) a failed part leaves nothing in the digest
    return ok({"part_number": n, "received": True})


def _digest(app: Any, core: Core, row: dict[str, Any]) -> UploadDigest:
    """The upload's digest in this process, created on the first part it receives (parts already
    recorded, by an earlier process, are read from disk when the prefix reaches them)."""
    digests: dict[str, UploadDigest] = app.state.upload_digests
    uid = row["id"]
    digest = digests.get(uid)
    if digest is None:
        for other in list(digests):  # forget sessions that ended without complete or cancel here
            left = core.store.get_upload(other)
            if left is None or left["status"] != "uploading" or left["expires_at"] < now():
                digests.pop(other).close()
        parts = core.store.part_sizes(uid)
        digest = UploadDigest(
            row["path"], row["chunk_size"], row["file_size"], app.state.retain_budget, parts
        )
        digests[uid] = digest
    return digest


def _drop_digest(app: Any, uid: str) -> UploadDigest | None:
    digest = app.state.upload_digests.pop(uid, None)
    if digest is not None:
        digest.close()
    return digest


@idempotent
async def complete_upload(request: Request) -> Response:
    core = core_of(request)
    uid = request.path_params["id"]
    row = upload_or_404(core, uid)
    if row["status"] != "uploading":
        raise ApiError(409, Code.CONFLICT, f"upload {uid} is {row['status']}, not uploading")
    parts = core.store.part_sizes(uid)
    missing = row["total_chunks"] - len(parts)
    if missing:
        raise invalid(f"{missing} of {row['total_chunks']} parts are missing; upload them first")
    received = sum(parts.values())
    if received != row["file_size"]:
        raise ApiError(
            422,
            Code.SOURCE_INVALID,
            f"assembled size {received} bytes does not match file_size {row['file_size']}",
        )
    if not core.store.begin_assembling(uid, core.workers.owner):
        raise ApiError(409, Code.CONFLICT, f"upload {uid} is already being completed")
    staging = Path(row["path"])
    ext = Path(row["file_name"]).suffix.lower()[:10] or ".bin"
    final = core.config.data_dir / "sources" / f"{uid}{ext}"
    if not staging.exists() and final.exists():  # a server died between the move and the commit
        os.replace(final, staging)
    # the parts this process received were hashed as they landed: read only the rest
    hasher = request.app.state.upload_digests.pop(uid, None)
    try:
        if hasher is not None and Path(hasher.path) == staging:
            digest = await hasher.finish()
        else:
            if hasher is not None:
                hasher.close()
            digest = await run_in_threadpool(sha256_file, staging)
        info = await run_in_threadpool(media.probe, staging)
    except BaseException as exc:
        # nothing changes on a failed complete (only DELETE cancels a session): the parts stay,
        # so a retry of complete gives the same answer and the session can still be canceled
        core.store.abort_assembling(uid)
        if isinstance(exc, media.ProbeError):
            raise ApiError(
                422,
                Code.SOURCE_INVALID,
                f"the uploaded file is not a usable video: {exc}; cancel the upload and send a video",
            ) from None
        raise
    os.replace(staging, final)
    core.store.complete_upload(uid, sha256=digest, probe=info, path=str(final))
    return ok({"id": uid, "status": "completed", "sha256": digest, "bytes": row["file_size"]})


async def cancel_upload(request: Request) -> Response:
    core = core_of(request)
    uid = request.path_params["id"]
    row = upload_or_404(core, uid)
    _drop_digest(request.app, uid)
    if row["status"] != "canceled":
        core.store.cancel_upload(uid)
        if row["path"] and not core.store.upload_has_jobs(uid):  # a job's source (or "original" output) stays
            Path(row["path"]).unlink(missing_ok=True)
    return Response(status_code=204)
