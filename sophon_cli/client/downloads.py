"""Output downloads: the 302 by hand, the signed URL without auth, resumable and verified.

1. ``GET /v1/jobs/{id}/output`` on the authenticated client *without* following redirects; the
   Location (possibly relative) is resolved against the base URL. A job that is not completed
   surfaces the server's 409 ``output_not_ready`` as ConflictError.
2. The signed URL is fetched by a separate httpx client that never carries the API key (the token
   in the URL is the credential, and the URL may point at another host).
3. Bytes stream through the one safe writer (:class:`~sophon_cli.client.files.SafeWriter`) into
   its ``.part``; a leftover ``.part`` is resumed with ``Range: bytes=N-`` (206 appends, 200 restarts
   from zero). Dropped connections resume the same way, with backoff. Never more than the expected
   size is written.
4. The sha256 (job.output.sha256) is verified when the job has one, else the size (job.output.bytes,
   Content-Length / Content-Range) and the result says ``verified=False``; the file is fsynced and
   moved into place: the target path never holds a partial or unverified file.

``final_artifact == "original"`` jobs are not downloaded: the source was already the best file.
Progress: ``on_progress(done_bytes, total_bytes_or_None)``.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from sophon_cli.client import direct_get
from sophon_cli.client.errors import (
    APIError,
    ConflictError,
    IntegrityError,
    JobFailedError,
    LinkRefusedError,
    SizeExceededError,
    SophonError,
    TargetExistsError,
    error_from_response,
    malformed,
    malformed_from_transport,
)
from sophon_cli.client.files import SafeWriter, WriteResult
from sophon_cli.client.text import terminal_safe

if TYPE_CHECKING:  # pragma: no cover
    import ssl

    import httpx

    from sophon_cli.client.direct_get import DirectResponse
    from sophon_cli.client.http import SophonClient
    from sophon_cli.client.models import DownloadResult, Job

ProgressCallback = Callable[[int, "int | None"], None]
STREAM_BLOCK = 1024 * 1024
MAX_NAME_BYTES = 255
_REDIRECTS = (301, 302, 303, 307, 308)
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')
_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}


# -- pure helpers --------------------------------------------------------------------------------


def _clean_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        return ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    # drop control, format (e.g. bidi overrides), surrogate and unassigned characters
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    name = _UNSAFE_CHARS.sub("_", name)
    name = name.strip().strip(".").strip()
    if not name:
        return ""
    stem, dot, ext = name.partition(".")
    if stem.upper() in _RESERVED:
        name = "_" + name
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        root, ext = os.path.splitext(name)
        if len(ext.encode("utf-8")) > 16:
            root, ext = name, ""
        budget = MAX_NAME_BYTES - len(ext.encode("utf-8"))
        root = root.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(" .")
        name = (root + ext) if root else ""
    return name


def safe_filename(name: str | None, fallback: str) -> str:
    """A file name that is safe to create inside a chosen directory.

    Keeps only the last path component, removes NUL/control/format characters and characters
    Windows forbids, strips leading/trailing dots and spaces (so ``.``/``..``/hidden names
    cannot come out), avoids reserved device names and limits the result to 255 UTF-8 bytes.
    Falls back to (the cleaned) ``fallback`` and finally to ``"download"``.
    """
    return _clean_name(name) or _clean_name(fallback) or "download"


def filename_from_content_disposition(header: str | None) -> str | None:
    """The (unsanitised) file name of a Content-Disposition header, or None."""
    if not header:
        return None
    from email.message import Message

    msg = Message()
    try:
        msg["content-disposition"] = header
        name = msg.get_filename()
    except Exception:
        return None
    return name if isinstance(name, str) and name else None


def parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    if not value:
        return None
    m = re.match(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", value)
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), total


class _Restart(Exception):
    """Throw the .part away and fetch from zero."""


class _RefreshURL(Exception):
    """The signed URL was refused (expired token?): ask the API for a fresh one."""


# -- the resource --------------------------------------------------------------------------------


class Downloads:
    def __init__(self, client: SophonClient) -> None:
        self._c = client
        self._tls: ssl.SSLContext | None = None

    def output_url(self, job_id: str) -> str:
        """The absolute signed download URL of a completed job's output. It contains a credential:
        never print or log it."""
        import httpx

        response = self._c.request("GET", f"/v1/jobs/{quote(str(job_id), safe='')}/output", expect=_REDIRECTS)
        location = response.headers.get("location")
        if not location:
            raise malformed("an output redirect without a Location header", response)
        try:
            url = httpx.URL(self._c.base_url + "/").join(location)
        except httpx.InvalidURL:
            raise malformed("an output redirect to an invalid URL", response) from None
        if url.scheme not in ("http", "https"):
            scheme = terminal_safe(url.scheme)[:16] or "?"
            raise malformed(
                f"an output redirect to a {scheme}:// URL (only http and https are fetched)", response
            )
        return str(url)

    def download(
        self,
        job_id: str,
        target: str | os.PathLike[str],
        *,
        force: bool = False,
        on_progress: ProgressCallback | None = None,
        job: Job | None = None,
    ) -> DownloadResult:
        """Download a completed job's output to ``target`` (a file path, or a directory: an
        existing one or a path ending in ``/``) and return a DownloadResult.

        Written by the one safe writer (:class:`~sophon_cli.client.files.SafeWriter`): an existing
        target is refused unless ``force`` (unless it already holds exactly the job's output:
        ``already_present``), nothing is written through a symlink, the bytes are verified (sha256
        when the job has one, else the size; ``verified``/``verification`` say which)."""
        from sophon_cli.client.models import DownloadResult

        target_text = os.fspath(target)
        dir_mode = target_text.endswith(("/", os.sep)) or Path(target_text).is_dir()
        final: Path | None = None
        if dir_mode:
            directory = Path(target_text)
        else:
            final = Path(target_text)
            directory = final.parent

        if job is None:
            job = self._c.jobs.get(job_id)
        self._check_has_output(job)
        if job.final_artifact == "original":
            return DownloadResult(final_artifact="original", skipped=True, bytes=job.output.bytes)

        fallback = safe_filename(f"{job_id}.{job.output.container or 'mp4'}", "download")
        writer = SafeWriter(
            final if final is not None else directory / fallback,
            force=force,
            expected_size=job.output.bytes,
            expected_sha256=job.output.sha256,
            part_seed=None if final is not None else f"download:{job_id}",
            target_known=final is not None,
        )
        with writer as w:
            if w.already_present:
                return self._result(w.result, job)
            try:
                url = self.output_url(job_id)  # 409 output_not_ready surfaces here
            except ConflictError:
                self._check_has_output(self._c.jobs.get(job_id))  # ended meanwhile?
                raise
            if job.status != "completed" or not job.output.sha256:
                job = self._c.jobs.get(job_id)
                if job.final_artifact == "original":
                    return DownloadResult(final_artifact="original", skipped=True, bytes=job.output.bytes)
                w.expected_sha256 = (job.output.sha256 or "").lower() or None
                if job.output.bytes is not None:
                    w.expected_size = job.output.bytes
            restarted_for_integrity = False
            while True:
                url = self._fetch(w, url, job_id, directory if final is None else None, fallback, on_progress)
                if w.already_present:
                    return self._result(w.result, job)
                resumed = w.resumed_from
                try:
                    return self._result(w.commit(), job)
                except TargetExistsError:
                    raise
                except IntegrityError as err:
                    if resumed and not restarted_for_integrity:
                        # the leftover .part may have come from elsewhere: one clean retry from zero
                        restarted_for_integrity = True
                        w.restart()
                        continue
                    w.restart()
                    raise IntegrityError(
                        f"download of job {job_id} is corrupt: {err}",
                        hint="run the download again; if it keeps failing, report the job id",
                    ) from None

    @staticmethod
    def _check_has_output(job: Job) -> None:
        """A failed or canceled job has no output, and never will: JobFailedError (not "wait")."""
        if job.status in ("failed", "canceled"):
            reason = f" ({terminal_safe(job.status_reason)[:200]})" if job.status_reason else ""
            verb = "was canceled" if job.status == "canceled" else "failed"
            raise JobFailedError(f"job {job.id} {verb}{reason}: it has no output to download", job=job)

    @staticmethod
    def _result(written: WriteResult | None, job: Job) -> DownloadResult:
        from sophon_cli.client.models import DownloadResult

        assert written is not None
        return DownloadResult(
            path=written.path,
            bytes=written.bytes,
            sha256=written.sha256,
            final_artifact=job.final_artifact,
            skipped=False,
            resumed_from=written.resumed_from,
            verified=written.verified,
            verification=written.verification,
            already_present=written.already_present,
        )

    # -- streaming with resume ---------------------------------------------------------------

    def _fetch(
        self,
        w: SafeWriter,
        url: str,
        job_id: str,
        name_dir: Path | None,
        fallback: str,
        on_progress: ProgressCallback | None,
    ) -> str:
        """Stream the body into ``w`` (resuming with Range from ``w.offset``) until it holds the
        whole body; return the URL used (it changes when a refused token was refreshed).
        ``name_dir``: the directory in which the server's Content-Disposition names the file."""
        import httpx

        c = self._c
        state = c.retry_state(method="GET", path="/v1/downloads/")
        refreshed = False
        while True:
            anon = c.anon_client(url)  # the URL may change on a refresh
            offset = w.offset
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            attempt = state.begin()
            started = time.monotonic()
            try:
                with self._get(anon, url, headers) as (resp, direct):
                    status = resp.status_code
                    if status >= 300:
                        c.trace(resp.request, resp, started, attempt)
                    if status == 416 and offset:
                        if w.expected_size is not None and offset == w.expected_size:
                            if name_dir is not None:
                                w.set_target(name_dir / self._server_name(resp, fallback))
                            return url
                        raise _Restart()
                    if status in (401, 403, 404, 410) and not refreshed:
                        raise _RefreshURL()
                    if status >= 400:
                        if direct is not None:
                            resp = direct.read_error_body()
                        else:
                            resp.read()
                        err = error_from_response(resp, secrets=c._secret_values, link=True)
                        if isinstance(err, LinkRefusedError):
                            err.job_id = str(job_id)
                        raise err
                    total: int | None = None
                    if status == 206:
                        rng = parse_content_range(resp.headers.get("content-range"))
                        if rng is None or rng[0] != offset:
                            raise _Restart()
                        total = rng[1]
                    else:
                        if offset:
                            w.restart()
                        length = resp.headers.get("content-length")
                        total = int(length) if length and length.isdigit() else None
                    if w.expected_size is None and total is not None:
                        w.expected_size = total
                    elif w.expected_size is not None and total is not None and total > w.expected_size:
                        raise SizeExceededError(str(w.target), w.expected_size, received=total)
                    if name_dir is not None:
                        w.set_target(name_dir / self._server_name(resp, fallback))
                        name_dir = None
                        if w.already_present:
                            return url
                    self._write_stream(
                        direct, resp, w, w.expected_size or total, on_progress, c.stall_seconds, c.min_rate
                    )
                c.trace(resp.request, resp, started, attempt)
                want = w.expected_size
                if want is not None and w.offset < want:
                    raise _StoppedEarly()  # closed early without an error: resume
                return url
            except _Restart:
                w.restart()
                delay = state.next_delay(reason="restart")
                if delay is None:
                    raise SophonError(
                        f"download of job {job_id} kept restarting", hint="run the download again later"
                    ) from None
            except _RefreshURL:
                refreshed = True
                state.attempts -= 1  # asking for a fresh link is not a failed attempt
                url = self.output_url(job_id)
                continue
            except _StoppedEarly:
                delay = state.next_delay(reason="stream ended early")
                if delay is None:
                    raise c.transport_error(
                        ConnectionError("the download kept stopping early"), attempt
                    ) from None
            except _Stalled:
                delay = state.next_delay(reason="stalled")
                if delay is None:
                    raise c.stall_error(f"the download of job {job_id}", attempt) from None
            except (httpx.TooManyRedirects, httpx.DecodingError) as exc:
                raise malformed_from_transport(exc, secrets=c._secret_values) from None  # type: ignore[misc]
            except httpx.UnsupportedProtocol:
                raise malformed("a download redirect to a URL that is not http(s)") from None
            except APIError as err:
                err.attempts = attempt
                delay = state.next_delay(
                    status=err.status, envelope_retryable=err.envelope_retryable, retry_after=err.retry_after
                )
                if delay is None:
                    raise
            except httpx.TransportError as exc:
                try:
                    c.trace(exc.request, None, started, attempt, error=type(exc).__name__)
                except RuntimeError:  # no request attached
                    pass
                bad = malformed_from_transport(exc, secrets=c._secret_values)
                if bad is not None:
                    raise bad from None
                delay = state.next_delay(reason=type(exc).__name__, error=exc)
                if delay is None:
                    if isinstance(exc, httpx.ReadTimeout):  # nothing at all for stall_seconds
                        raise c.stall_error(f"the download of job {job_id}", attempt) from None
                    raise c.transport_error(exc, attempt) from None
            c.sleep(delay)

    @staticmethod
    def _server_name(resp: httpx.Response, fallback: str) -> str:
        return safe_filename(
            filename_from_content_disposition(resp.headers.get("content-disposition")), fallback
        )

    @contextmanager
    def _get(
        self, anon: httpx.Client, url: str, headers: dict[str, str]
    ) -> Iterator[tuple[httpx.Response, DirectResponse | None]]:
        """The GET of the signed URL: by http.client where it is the same request (see
        direct_get), else by httpx. Yields the response (status, headers) and, for the first,
        the reader of its body."""
        c = self._c
        if direct_get.usable(url, custom_transport=c._custom_transport is not None):
            direct = direct_get.open_get(
                url,
                {**c._anon_headers, **headers},
                timeout=c._stream_timeout.read or c.stall_seconds,
                ssl_context=self._ssl_context,
            )
            if direct is not None:
                with direct:
                    yield direct.response, direct
                return
        # httpx bounds each read only: bound its head (every redirect hop, and the bodies of the
        # redirects it reads) as a whole, as the direct path does, and its body by the stall rule
        # on a timer, so that bytes that arrive without making progress (a trickled chunk-size
        # line, a compressed body that decodes to nothing) cannot keep it alive
        from sophon_cli.client.deadline import bounded, install_on_client

        install_on_client(anon)  # idempotent; a custom transport is left alone
        with ExitStack() as stack:
            with bounded(c._stream_timeout.read or c.stall_seconds):
                resp = stack.enter_context(anon.stream("GET", url, headers=headers))
            watch = _StallWatch.on_response(resp, c.stall_seconds, c.min_rate)
            try:
                yield resp, None
            except Exception:
                if watch is not None and watch.stop():
                    raise _Stalled() from None  # the watch cut the connection: that is the error
                raise
            if watch is not None and watch.stop():
                raise _Stalled()

    def _ssl_context(self) -> ssl.SSLContext:
        """httpx's default verifying context (its CA bundle and SSL_CERT_* rules), made once."""
        if self._tls is None:
            import httpx

            self._tls = httpx.create_ssl_context()
        return self._tls

    @staticmethod
    def _write_stream(
        direct: DirectResponse | None,
        resp: httpx.Response,
        w: SafeWriter,
        total: int | None,
        on_progress: ProgressCallback | None,
        stall_seconds: float,
        min_rate: float,
    ) -> None:
        """Write the body as received (a drop loses nothing already written). Too few bytes over
        a window of ``stall_seconds`` (:func:`_too_slow`) is a stall (retried with Range).

        A large body is written behind (:class:`~sophon_cli.client.files.WriteBehind`): this
        thread receives (on the direct path straight into the writer's aligned buffers) and
        hashes, a helper thread writes, so the socket keeps draining during the disk writes."""
        done = w.offset
        if on_progress is not None:
            on_progress(done, total)
        window_start = time.monotonic()
        window_bytes = 0

        def got(n: int) -> None:
            nonlocal done, window_start, window_bytes
            done += n
            window_bytes += n
            now = time.monotonic()
            if now - window_start >= stall_seconds:
                if _too_slow(window_bytes, now - window_start, min_rate):
                    raise _Stalled()
                window_start, window_bytes = now, 0
            if on_progress is not None:
                on_progress(done, total)

        big = w.expected_size is not None and w.expected_size - done >= WRITE_BEHIND_MIN
        if big and direct is not None:
            with w.write_behind() as sink:  # everything received is written before it returns
                while n := direct.readinto1(sink.buffer()):  # one socket read into the buffer
                    sink.received(n)
                    got(n)
            return
        blocks: Iterable[bytes] = (
            iter(partial(direct.read1, STREAM_BLOCK), b"")  # up to 1 MiB per socket read
            if direct is not None
            else resp.iter_bytes()
        )
        with w.write_behind() if big else nullcontext(w) as out:
            for block in blocks:
                out.write(block)
                got(len(block))


WRITE_BEHIND_MIN = 64 << 20  # bodies at least this large are written behind (files.WriteBehind)


class _Stalled(Exception):
    """Fewer bytes arrived than the minimum throughput allows: try again (resumes with Range)."""


def _too_slow(received: int, seconds: float, min_rate: float) -> bool:
    """The stall rule: over a window of ``seconds``, fewer than ``min_rate`` bytes/s, or nothing."""
    return received < max(1.0, min_rate * seconds)


class _StallWatch:
    """The stall rule for a body received by httpx, checked on a timer rather than when a block
    comes out of httpx (which may be never: framing and compressed bytes arrive without making
    a block). Each window of ``seconds`` in which the response's raw bytes grow too little
    (:func:`_too_slow`) shuts the connection's socket down, which ends the blocked read."""

    def __init__(self, resp: httpx.Response, sock: socket.socket, seconds: float, min_rate: float) -> None:
        self._resp = resp
        self._sock = sock
        self._seconds = seconds
        self._min_rate = min_rate
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.fired = False
        threading.Thread(target=self._run, name="sophon-stall-watch", daemon=True).start()

    @classmethod
    def on_response(cls, resp: httpx.Response, seconds: float, min_rate: float) -> _StallWatch | None:
        """Watch ``resp`` (None when it has no socket to shut, e.g. a custom transport)."""
        stream = resp.extensions.get("network_stream")
        try:
            sock = stream.get_extra_info("socket") if stream is not None else None
        except Exception:  # pragma: no cover - a stream without that information
            sock = None
        if not isinstance(sock, socket.socket):
            return None
        return cls(resp, sock, seconds, min_rate)

    def _run(self) -> None:
        last, since = self._resp.num_bytes_downloaded, time.monotonic()
        while not self._stopped.wait(self._seconds):
            now, got = time.monotonic(), self._resp.num_bytes_downloaded
            if _too_slow(got - last, now - since, self._min_rate):
                with self._lock:
                    if self._stopped.is_set():
                        return
                    self.fired = True
                    try:  # the plain socket's shutdown (for TLS too): the blocked read ends at once
                        socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            last, since = got, now

    def stop(self) -> bool:
        """Stop watching; True when the watch had cut the connection."""
        with self._lock:
            self._stopped.set()
            return self.fired


class _StoppedEarly(Exception):
    """The body ended before the expected size without an error: resume with a Range request."""
