"""Chunked, resumable, parallel uploads.

``Uploads.upload_file`` is the engine behind ``sophon upload`` / ``sophon encode``:

1. local checks (missing, directory, empty, unreadable -> InputError naming the path);
2. the content **fingerprint** (size + a few sampled blocks, ``client.content``), which keys the
   session: a rerun, a copy under another name, or another machine gets the *same* session back
   (the name and MIME type sent are derived from the content too, never from the path);
3. ``GET`` the session to learn ``received_chunks`` (not for a session just created under this
   run's nonce, ``new=True``: it holds none); then **one read pass** (``client.upload_pass``):
   the file is read once, in order, every block hashed (sha256) and handed to the part being
   sent, up to ``concurrency`` parts in flight (each sent from the reader's buffers through
   ``client.direct`` where that is httpx's request); parts the server already holds are read and
   hashed, not sent; a retried part is re-read from disk;
4. complete with the deterministic complete-route key and check the server's sha256 and size
   against the local ones.

When they differ, the fingerprint's session holds other bytes (another file with the same
fingerprint, or parts of an earlier version of this one). That session may be someone else's, so
it is never canceled: the upload moves to the session keyed by the full sha256 (which only this
content can have) and runs again. A mismatch there is an IntegrityError.

A replayed session that is unusable (canceled, expired, gone; for a sha256 key also: completed
with other bytes) is replaced by the next *generation* of its key (``idempotency.generation_key``),
probed in order, so any number of runs and machines make one replacement, not one each.

Progress: ``on_progress(sent_bytes, total_bytes)`` is called from the calling thread with the
cumulative number of bytes the server holds (including parts it already had), first right after
the session's state is known and then after every part.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sophon_cli.client.content import ShortRead, identify_fd
from sophon_cli.client.content import guess_mime_type as guess_mime_type  # re-exported
from sophon_cli.client.errors import (
    BadRequestError,
    ConflictError,
    InputError,
    IntegrityError,
    MalformedResponseError,
    NotFoundError,
    ServerError,
)
from sophon_cli.client.idempotency import generation_key, new_nonce, route_key
from sophon_cli.client.upload_pass import PartSlice, PartStream, PassResult, part_range, run_pass

if TYPE_CHECKING:  # pragma: no cover
    from sophon_cli.client.content import UploadIdentity
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
MAX_GENERATIONS = 32  # replacement sessions probed per key before giving up
COMPLETE_TIMEOUT = 300.0


# -- pure-ish helpers ----------------------------------------------------------------------------


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


def check_session_shape(session: UploadSession, size: int) -> None:
    """A session whose parts do not tile the file is a broken (or hostile) server's answer: fail
    with a classified error before anything is sized from it (``total_chunks=10**12`` would
    otherwise mean a list of a trillion part numbers)."""
    chunk, total = session.chunk_size, session.total_chunks
    if chunk <= 0 or total <= 0 or total != -(-size // chunk):
        raise MalformedResponseError(
            f"the server sent an upload session that does not fit the file "
            f"({_clip(total)} parts of {_clip(chunk)} bytes for a file of {size} bytes)",
            status=201,
            path="/v1/uploads",
        )


def _clip(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:20] + "..."


class _StaleSession(Exception):
    """The replayed session cannot be used any more; probe the next generation."""


@dataclass
class _Outcome:
    """How one session ended: ``ok`` when the server's sha256 and size are the local ones."""

    ok: bool
    session: UploadSession
    local_sha256: str
    server_sha256: str
    server_bytes: int | None
    parts_sent: int
    resumed: bool


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

    def put_part(self, upload_id: str, part_number: int, data: bytes | PartSlice | PartStream) -> UploadPart:
        """Send one part. ``data`` is the part's bytes, or a re-iterable body with a length (a
        :class:`PartSlice` read from disk, a :class:`PartStream` of the read pass), sent with an
        explicit Content-Length; a retry iterates it again from the start."""
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
        fingerprint: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_created: Callable[[str], None] | None = None,
        mime_type: str | None = None,
        file_name: str | None = None,
        unusable: Collection[str] = (),
    ) -> UploadResult:
        """Upload one file (resuming whatever the server already has) and return an UploadResult
        whose ``sha256`` is the full digest of the bytes read (and the server's).

        ``sha256`` and ``fingerprint`` are what the caller already knows of this file's content
        (e.g. from a cache keyed by device, inode, size and mtime): with both, a file the server
        already holds is not read at all. They are trusted as given, so only pass them for an
        unchanged file; a wrong ``sha256`` only costs a read (the result carries the real digest).
        ``new=True`` forces a fresh session even if an identical upload exists.
        ``on_created(upload_id)`` is called as soon as a session id is known (again if the upload
        moves to another session). ``file_name`` / ``mime_type`` override the names derived from
        the content (and become part of the upload's identity). ``unusable`` names sessions the
        server refused for a job although they replay as completed: they are skipped like
        canceled or expired ones (the next generation of their key is used).
        """
        p, size = check_local_file(path)
        try:
            fh = open(p, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise InputError(f"cannot read {p} ({exc.strerror or exc})", hint="check the file") from None
        with fh:
            run = _Run(self, p, fh.fileno(), concurrency, on_progress, on_created, frozenset(unusable))
            size = run.size
            try:
                ident = identify_fd(
                    run.fd,
                    size,
                    p,
                    fingerprint=fingerprint,
                    file_name=file_name,
                    mime_type=mime_type,
                    nonce=new_nonce() if new else None,
                )
            except ShortRead:
                raise run.changed() from None
            known = sha256.lower() if sha256 else None

            # 1. the session of this content's fingerprint (the same on every machine)
            out = run.settle(ident.fingerprint_key(), ident, expected=known)
            if not out.ok:
                # Another file with the same fingerprint owns that session (or it holds bytes that
                # are not this file's). It may be someone else's upload: leave it alone, and
                # move to the session of the full sha256, which only this content can have.
                digest = out.local_sha256
                out = run.settle(ident.sha256_key(digest), ident, expected=digest, exact=True)
                if not out.ok:
                    raise IntegrityError(
                        f"upload of {p} was corrupted: the server's sha256 {out.server_sha256 or '(none)'} "
                        f"and size {out.server_bytes} differ from the local {out.local_sha256} and {size}",
                        hint="check the file is not being modified, then upload it again",
                    )
        from sophon_cli.client.models import UploadResult

        return UploadResult(
            file=str(p),
            upload_id=out.session.id,
            sha256=out.local_sha256,
            fingerprint=ident.fingerprint,
            bytes=size,
            parts_total=out.session.total_chunks,
            parts_sent=run.parts_sent,
            resumed=out.resumed,
        )

    def _status_or_stale(self, upload_id: str, unusable: frozenset[str] = frozenset()) -> UploadStatus:
        if upload_id in unusable:
            raise _StaleSession()
        waited = 0.0
        delay = 0.25
        while True:
            try:
                status = self.get(upload_id)
            except NotFoundError:
                raise _StaleSession() from None
            if status.status == "completed" and _is_past(status.expires_at):
                # still "completed", but past its expiry no job can be made from it
                raise _StaleSession()
            if status.status in ("uploading", "initiated", "completed"):
                return status
            if status.status == "assembling" and waited < 60.0:
                self._c.sleep(delay)
                waited += delay
                delay = min(delay * 2, 2.0)
                continue
            raise _StaleSession()


class _Run:
    """One ``upload_file`` call: the open file, the callbacks, and the sessions it tries."""

    def __init__(
        self,
        uploads: Uploads,
        p: Path,
        fd: int,
        concurrency: int,
        on_progress: ProgressCallback | None,
        on_created: Callable[[str], None] | None,
        unusable: frozenset[str] = frozenset(),
    ) -> None:
        self.up = uploads
        self.unusable = unusable
        self.p = p
        self.fd = fd
        self.stat = os.fstat(fd)
        self.size = self.stat.st_size
        if self.size <= 0:
            raise InputError(f"{p} is empty (0 bytes)", hint="pass a non-empty video file")
        self.concurrency = concurrency
        self.on_progress = on_progress
        self.on_created = on_created
        self.parts_sent = 0

    def changed(self) -> InputError:
        return InputError(
            f"{self.p} changed while uploading",
            hint="wait until the file is fully written, then upload it again",
        )

    def _check_unchanged(self) -> None:
        now = os.fstat(self.fd)
        if (now.st_size, now.st_mtime_ns) != (self.stat.st_size, self.stat.st_mtime_ns):
            raise self.changed()

    def _progress(self, done: int) -> None:
        if self.on_progress is not None:
            self.on_progress(done, self.size)

    def settle(
        self, base: str, ident: UploadIdentity, *, expected: str | None, exact: bool = False
    ) -> _Outcome:
        """Use the first usable session among the generations of ``base``.

        A generation is unusable when its session is canceled, expired or gone, and, with
        ``exact`` (keys derived from the full sha256), when it completed with other bytes than
        ``expected``. Every run probes the generations in the same order, so all of them end
        on the same replacement.
        """
        for generation in range(MAX_GENERATIONS):
            key = generation_key(base, generation)
            try:
                return self._use(key, ident, expected=expected, exact=exact)
            except _StaleSession:
                continue
        raise ServerError(
            409,
            "conflict",
            f"the server rejected {MAX_GENERATIONS} upload sessions in a row for {self.p}",
            hint="check the server's upload sessions, or try again later",
        )

    def _use(self, key: str, ident: UploadIdentity, *, expected: str | None, exact: bool) -> _Outcome:
        up = self.up
        session = up.create(
            ident.name, self.size, ident.mime, idempotency_key=route_key(key, "create-upload")
        )
        check_session_shape(session, self.size)
        if self.on_created is not None:
            self.on_created(session.id)
        complete_key = route_key(key, "complete-upload")
        if ident.nonce is not None:
            # Every key of this run carries its fresh nonce, so this create made the session now:
            # it holds no parts yet, and asking would only cost a round trip before the first part.
            # (A replay of a reused key, even with a 201, may hold parts or be completed: ask.)
            received: set[int] = set()
        else:
            status = up._status_or_stale(session.id, self.unusable)
            if status.status == "completed":
                return self._use_completed(session, complete_key, expected=expected, exact=exact)
            received = {n for n in status.received_chunks if 0 <= n < session.total_chunks}
        total, chunk = session.total_chunks, session.chunk_size
        self._progress(sum(part_range(n, chunk, self.size)[1] for n in received))
        result = self._pass(session, set(range(total)) - received)
        if exact and result.sha256 != expected:
            raise self.changed()  # it read other bytes than the pass before
        try:
            completed = self._complete_after_pass(session, complete_key, result.stopped)
        except BadRequestError as exc:
            # "not a usable video" about a session that holds parts this run did not send: those
            # may be another file's (same fingerprint), so the verdict is not about this file.
            # Only a session holding nothing but this file's bytes can say that.
            if exc.status != 422 or exact or not (received or result.stopped):
                raise
            return _Outcome(False, session, result.sha256, "", None, self.parts_sent, bool(received))
        return self._judge(session, completed, result.sha256, resumed=bool(received))

    def _use_completed(
        self, session: UploadSession, complete_key: str, *, expected: str | None, exact: bool
    ) -> _Outcome:
        """The replayed session is completed already: its complete replay says with which bytes."""
        completed = self._complete(session.id, complete_key)
        server = (completed.sha256 or "").lower()
        if exact and server != expected:
            raise _StaleSession()  # holds other bytes than its key says: the next generation
        self._progress(self.size)
        if expected is not None and server == expected and completed.bytes in (None, self.size):
            return self._judge(session, completed, expected, resumed=True)
        digest = self._pass(session, set()).sha256  # read it to know: hash only, send nothing
        return self._judge(session, completed, digest, resumed=True)

    def _pass(self, session: UploadSession, missing: set[int]) -> PassResult:
        done = [self.size - sum(part_range(n, session.chunk_size, self.size)[1] for n in missing)]

        def part_done(_n: int, length: int) -> None:
            self.parts_sent += 1
            done[0] += length
            self._progress(done[0])

        try:
            result = run_pass(
                self.fd,
                self.size,
                session.chunk_size,
                missing,
                lambda n, body: self.up.put_part(session.id, n, body),
                concurrency=self.concurrency,
                on_part_done=part_done,
                stop_on=(ConflictError,),
            )
        except ShortRead:
            raise self.changed() from None
        self._check_unchanged()
        return result

    def _complete_after_pass(
        self, session: UploadSession, complete_key: str, stopped: BaseException | None
    ) -> CompletedUpload:
        if stopped is not None:
            # a part was refused because the session is not uploading any more: someone else
            # (another process or machine with the same content) completed it meanwhile, and
            # the complete replay returns their result; or it is stale
            if self.up._status_or_stale(session.id).status != "completed":
                raise stopped
        for round_ in range(2):
            try:
                return self._complete(session.id, complete_key)
            except BadRequestError as exc:
                # "not all chunks received": the server lost a part; send what it lacks, once.
                if round_ == 1 or exc.status != 400:
                    raise
                status = self.up._status_or_stale(session.id)
                have = set(status.received_chunks)
                for n in range(session.total_chunks):
                    if n not in have:
                        offset, length = part_range(n, session.chunk_size, self.size)
                        try:
                            self.up.put_part(session.id, n, PartSlice(self.fd, offset, length, part_number=n))
                        except ShortRead:
                            raise self.changed() from None
                        self.parts_sent += 1
        raise AssertionError("unreachable")  # pragma: no cover

    def _complete(self, upload_id: str, complete_key: str) -> CompletedUpload:
        try:
            return self.up.complete(upload_id, idempotency_key=complete_key)
        except ConflictError:
            # The session is not uploading any more and the complete replay is unavailable.
            raise _StaleSession() from None

    def _judge(
        self, session: UploadSession, completed: CompletedUpload, digest: str, *, resumed: bool
    ) -> _Outcome:
        server = (completed.sha256 or "").lower()
        ok = server == digest and completed.bytes in (None, self.size)
        return _Outcome(ok, session, digest, server, completed.bytes, self.parts_sent, resumed)


def _is_past(stamp: str | None) -> bool:
    """True when the server's ISO-8601 time ``stamp`` is before now (False when absent or not a time)."""
    if not stamp:
        return False
    from datetime import datetime, timezone

    try:
        when = datetime.fromisoformat(stamp.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when <= datetime.now(timezone.utc)


def _q(value: str) -> str:
    return quote(str(value), safe="")
