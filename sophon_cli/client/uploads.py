"""Chunked, resumable, parallel uploads.

``Uploads.upload_file`` is the engine behind ``sophon upload`` / ``sophon encode``:

1. local checks (missing, directory, empty, unreadable -> InputError naming the path);
2. stream-hash the file (sha256) unless the caller already knows the digest;
3. create the session with a deterministic Idempotency-Key (see ``idempotency``), so a rerun or
   another machine gets the *same* session back instead of a second one;
4. ``GET`` the session to learn ``received_chunks`` and send only the missing parts, in parallel,
   each worker streaming its part from disk in 1 MiB blocks while sending it (no part-sized buffer
   ever exists; a retried request re-reads the part from its start);
5. complete with the deterministic complete-route key and check the server's sha256 and size
   against the local ones (mismatch -> IntegrityError and the session is canceled).

If a replayed session turns out to be unusable (canceled, expired, or gone), one fresh session is
created with a random nonce.

Progress: ``on_progress(sent_bytes, total_bytes)`` is called from the calling thread with the
cumulative number of bytes the server holds (including parts it already had), first right after
the session's state is known and then after every part.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote

from sophon_cli.client.errors import (
    BadRequestError,
    ConflictError,
    InputError,
    IntegrityError,
    NotFoundError,
    ServerError,
    SophonError,
)
from sophon_cli.client.idempotency import intent_key, new_nonce, route_key

if TYPE_CHECKING:  # pragma: no cover
    from sophon_cli.client.http import SophonClient
    from sophon_cli.client.models import (
        CompletedUpload,
        UploadPart,
        UploadResult,
        UploadSession,
        UploadStatus,
    )

ProgressCallback = Callable[[int, int], None]
HASH_BLOCK = 1024 * 1024
SEND_BLOCK = 1024 * 1024  # a streamed part is read from disk in blocks of this size
DEFAULT_MIME = "video/mp4"
COMPLETE_TIMEOUT = 300.0
_EXTRA_MIME = {
    ".mkv": "video/x-matroska",
    ".mov": "video/quicktime",
    ".mp4": "video/mp4",
    ".m4v": "video/x-m4v",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".ts": "video/mp2t",
    ".mts": "video/mp2t",
    ".mxf": "application/mxf",
    ".y4m": "video/x-yuv4mpeg",
}


# -- pure-ish helpers ----------------------------------------------------------------------------


def guess_mime_type(name: str) -> str:
    """The MIME type for a file name, ``video/mp4`` when nothing better is known."""
    ext = os.path.splitext(name)[1].lower()
    if ext in _EXTRA_MIME:
        return _EXTRA_MIME[ext]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or DEFAULT_MIME


def check_local_file(path: str | os.PathLike[str]) -> tuple[Path, int]:
    """Return ``(path, size)`` for a readable, non-empty regular file, else raise InputError."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file", hint="check the path and try again") from None
    except PermissionError:
        raise InputError(f"{p}: permission denied", hint="check the file's permissions") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot access ({exc.strerror or exc})", hint="check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p} is a directory, not a video file", hint="pass a video file instead")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p} is not a regular file", hint="pass a video file instead")
    if st.st_size == 0:
        raise InputError(f"{p} is empty (0 bytes)", hint="pass a non-empty video file")
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise InputError(
            f"cannot read {p}: permission denied", hint="check the file's permissions (chmod +r)"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {p} ({exc.strerror or exc})", hint="check the file") from None
    return p, st.st_size


def file_sha256(path: str | os.PathLike[str], *, block: int = HASH_BLOCK) -> str:
    """Hex sha256 of a file, streamed in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(block)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def part_range(part_number: int, chunk_size: int, file_size: int) -> tuple[int, int]:
    """``(offset, length)`` of a 0-indexed part."""
    offset = part_number * chunk_size
    return offset, max(0, min(chunk_size, file_size - offset))


class _PartReader:
    """Reads byte ranges of one open file from many threads (os.pread where available)."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._fd = fh.fileno()
        self.fileno = self._fd
        self._lock = threading.Lock()
        self._pread = getattr(os, "pread", None)

    def read(self, offset: int, length: int) -> bytes:
        if self._pread is not None:
            parts = []
            while length > 0:
                data = self._pread(self._fd, length, offset)
                if not data:
                    break
                parts.append(data)
                offset += len(data)
                length -= len(data)
            return b"".join(parts)
        with self._lock:  # pragma: no cover - non-POSIX fallback
            self._fh.seek(offset)
            return self._fh.read(length)


class PartSlice:
    """Bytes ``[offset, offset + length)`` of a file, streamed in ``block``-sized reads.

    Re-iterable: every iteration reads the range again from its start, so a retried request
    re-sends the whole part. ``len()`` is the part's length (sent as ``Content-Length``). A file
    that turns out shorter than the range raises InputError while iterating.
    """

    def __init__(
        self,
        reader: _PartReader,
        offset: int,
        length: int,
        *,
        block: int = SEND_BLOCK,
        name: str = "file",
        part_number: int | None = None,
    ) -> None:
        self._reader = reader
        self.offset = offset
        self.length = length
        self._block = max(1, int(block))
        self._name = name
        self._part = part_number

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        pos, end = self.offset, self.offset + self.length
        while pos < end:
            data = self._reader.read(pos, min(self._block, end - pos))
            if not data:
                which = "a part" if self._part is None else f"part {self._part}"
                raise InputError(
                    f"{self._name} changed while uploading ({which} is short)",
                    hint="wait until the file is fully written, then upload again",
                )
            pos += len(data)
            yield data


class _StaleSession(Exception):
    """The replayed session cannot be used any more; start a new one."""


# -- the resource --------------------------------------------------------------------------------


class Uploads:
    def __init__(self, client: SophonClient) -> None:
        self._c = client

    # raw endpoints ------------------------------------------------------------------------------

    def create(
        self, file_name: str, file_size: int, mime_type: str, *, idempotency_key: str | None = None
    ) -> UploadSession:
        from sophon_cli.client.models import UploadSession, parse_model

        response = self._c.request(
            "POST",
            "/v1/uploads",
            json={"file_name": file_name, "file_size": file_size, "mime_type": mime_type},
            idempotency_key=idempotency_key,
            expect=(200, 201),
        )
        return parse_model(UploadSession, response)

    def get(self, upload_id: str) -> UploadStatus:
        from sophon_cli.client.models import UploadStatus, parse_model

        return parse_model(UploadStatus, self._c.request("GET", f"/v1/uploads/{_q(upload_id)}"))

    def put_part(self, upload_id: str, part_number: int, data: bytes | PartSlice) -> UploadPart:
        """Send one part. ``data`` is the part's bytes or a :class:`PartSlice` streamed from disk
        (sent with an explicit Content-Length; a retry re-reads it from the start)."""
        from sophon_cli.client.models import UploadPart, parse_model

        headers = {"Content-Type": "application/octet-stream"}
        if not isinstance(data, (bytes, bytearray, memoryview)):
            headers["Content-Length"] = str(len(data))
        response = self._c.request(
            "PUT",
            f"/v1/uploads/{_q(upload_id)}/parts/{int(part_number)}",
            content=data,
            headers=headers,
            expect=(200, 201),
        )
        return parse_model(UploadPart, response)

    def complete(self, upload_id: str, *, idempotency_key: str | None = None) -> CompletedUpload:
        from sophon_cli.client.models import CompletedUpload, parse_model

        response = self._c.request(
            "POST",
            f"/v1/uploads/{_q(upload_id)}/complete",
            idempotency_key=idempotency_key,
            expect=(200, 201),
            # the server hashes and probes the whole file before answering
            timeout=max(self._c.timeout, COMPLETE_TIMEOUT),
        )
        return parse_model(CompletedUpload, response)

    def cancel(self, upload_id: str) -> None:
        self._c.request("DELETE", f"/v1/uploads/{_q(upload_id)}", expect=(200, 202, 204))

    # the engine --------------------------------------------------------------------------------

    def upload_file(
        self,
        path: str | os.PathLike[str],
        *,
        concurrency: int = 4,
        new: bool = False,
        sha256: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_created: Callable[[str], None] | None = None,
        mime_type: str | None = None,
        file_name: str | None = None,
    ) -> UploadResult:
        """Upload one file (resuming whatever the server already has) and return an UploadResult.

        ``new=True`` forces a fresh session even if an identical upload exists.
        ``on_created(upload_id)`` is called as soon as the session id is known.
        """
        p, size = check_local_file(path)
        digest = (sha256 or file_sha256(p)).lower()
        name = file_name or p.name
        mime = mime_type or guess_mime_type(name)
        nonce = new_nonce() if new else None
        for round_ in range(2):
            base = intent_key("upload", sha256=digest, size=size, name=name, mime=mime, nonce=nonce)
            try:
                return self._upload_with_key(
                    p, size, digest, name, mime, base, concurrency, on_progress, on_created
                )
            except _StaleSession:
                if round_ == 1:
                    break
                nonce = new_nonce()
        raise ServerError(  # pragma: no cover - needs a server that keeps losing sessions
            409,
            "conflict",
            f"the server keeps rejecting the upload session for {p}",
            hint="try again later, or with --new",
        )

    def _upload_with_key(
        self,
        p: Path,
        size: int,
        digest: str,
        name: str,
        mime: str,
        base: str,
        concurrency: int,
        on_progress: ProgressCallback | None,
        on_created: Callable[[str], None] | None,
    ) -> UploadResult:
        from sophon_cli.client.models import UploadResult

        session = self.create(name, size, mime, idempotency_key=route_key(base, "create-upload"))
        if session.chunk_size <= 0 or session.total_chunks <= 0:
            raise ServerError(
                200,
                "invalid_response",
                f"the server returned an unusable upload session (chunk_size={session.chunk_size})",
                hint="check SOPHON_BASE_URL points at a compatible SOPHON API server",
            )
        if on_created is not None:
            on_created(session.id)
        parts_sent = 0
        resumed = False
        for round_ in range(2):
            status = self._status_or_stale(session.id)
            if status.status == "completed":
                resumed = True
                if on_progress is not None:
                    on_progress(size, size)
            else:
                total = session.total_chunks
                received = {n for n in status.received_chunks if 0 <= n < total}
                missing = [n for n in range(total) if n not in received]
                done = sum(part_range(n, session.chunk_size, size)[1] for n in received)
                resumed = resumed or bool(received)
                if on_progress is not None:
                    on_progress(done, size)
                try:
                    parts_sent += self._send_parts(p, size, session, missing, concurrency, on_progress, done)
                except ConflictError:
                    # someone else (another process or machine with the same intent) completed the
                    # session meanwhile: the complete replay below returns their result
                    if self._status_or_stale(session.id).status != "completed":
                        raise
            try:
                completed = self.complete(session.id, idempotency_key=route_key(base, "complete-upload"))
                break
            except BadRequestError as exc:
                # "not all chunks received": the server lost a part; look again once.
                if round_ == 1 or exc.status != 400:
                    raise
            except ConflictError:
                # The session is not uploading any more and the complete replay is unavailable.
                raise _StaleSession() from None
        if (completed.sha256 or "").lower() != digest:
            self._cancel_quietly(session.id)
            raise IntegrityError(
                f"upload of {p} was corrupted: the server's sha256 {completed.sha256 or '(none)'} "
                f"differs from the local {digest}",
                hint="check the file is not being modified, then upload again with --new",
            )
        if completed.bytes is not None and completed.bytes != size:
            self._cancel_quietly(session.id)
            raise IntegrityError(
                f"upload of {p} is incomplete: the server holds {completed.bytes} bytes, the file has {size}",
                hint="check the file is not being modified, then upload again with --new",
            )
        return UploadResult(
            file=str(p),
            upload_id=session.id,
            sha256=digest,
            bytes=size,
            parts_total=session.total_chunks,
            parts_sent=parts_sent,
            resumed=resumed,
        )

    def _status_or_stale(self, upload_id: str) -> UploadStatus:
        waited = 0.0
        delay = 0.25
        while True:
            try:
                status = self.get(upload_id)
            except NotFoundError:
                raise _StaleSession() from None
            if status.status in ("uploading", "initiated", "completed"):
                return status
            if status.status == "assembling" and waited < 60.0:
                self._c.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)
                continue
            raise _StaleSession()

    def _cancel_quietly(self, upload_id: str) -> None:
        try:
            self.cancel(upload_id)
        except SophonError:
            pass

    def _send_parts(
        self,
        p: Path,
        size: int,
        session: UploadSession,
        missing: list[int],
        concurrency: int,
        on_progress: ProgressCallback | None,
        done: int,
    ) -> int:
        if not missing:
            return 0
        chunk = session.chunk_size
        workers = max(1, min(int(concurrency or 1), len(missing)))
        with open(p, "rb") as fh:
            reader = _PartReader(fh)
            abort = threading.Event()

            def send(n: int) -> int:
                if abort.is_set():
                    return 0
                offset, length = part_range(n, chunk, size)
                if os.fstat(reader.fileno).st_size < offset + length:
                    raise InputError(
                        f"{p} changed while uploading (part {n} is short)",
                        hint="wait until the file is fully written, then upload again",
                    )
                # streamed from disk while sending: memory stays at a few blocks per worker
                self.put_part(session.id, n, PartSlice(reader, offset, length, name=str(p), part_number=n))
                return length

            executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sophon-upload")
            futures: set[Future[int]] = set()
            sent_parts = 0
            try:
                futures = {executor.submit(send, n) for n in missing}
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        length = fut.result()  # re-raises the first failure
                        sent_parts += 1
                        done += length
                        if on_progress is not None:
                            on_progress(done, size)
            except BaseException:
                abort.set()
                for fut in futures:
                    fut.cancel()
                raise
            finally:
                executor.shutdown(wait=True, cancel_futures=True)
        return sent_parts


def _q(value: str) -> str:
    return quote(str(value), safe="")
