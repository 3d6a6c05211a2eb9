"""The per-file steps of ``sophon encode``: hash, upload, create the job, finish (download), fall back.

Each step is a function of a ``Context`` (client, cache, options, event sink, stop flag) and one
``Item`` (a source, its cache key and output path, its ``FileEntry``); it persists what it did
(``Context.save``) before returning, so a rerun resumes at the step that was reached. ``advance``
runs one file forward until it waits on its job (it returns ``Wait``) or is finished (it returns a
``FileResult``). The scheduler calls these from worker threads; none of them prints.

Server-side duplicates are avoided even without the cache: the upload's Idempotency-Key comes from
the content (see ``client.idempotency``) and the job's from the content hash + the (deterministic)
upload id + the job options (+ a nonce stored in the entry when ``force`` asked for a fresh job),
so a replayed POST returns the original session or job.

Fallback (the encode is an enhancement, the original is never lost): with ``copy``, a failed or
canceled job, a source the server rejected, a ``final_artifact: "original"`` result or an output
larger than its source puts a copy of the original at the output path (with the source's
extension); ``skip`` leaves nothing there; ``fail`` makes the file an error. So does an encode
whose VMAF is below ``min_vmaf`` (``quality_gate``, scored after the download).
"""

from __future__ import annotations

import hashlib
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sophon_cli.client.errors import (
    APIError,
    BadRequestError,
    ConflictError,
    IntegrityError,
    LinkRefusedError,
    NextStep,
    TargetExistsError,
)
from sophon_cli.client.files import copy_file, sha256_file
from sophon_cli.encode import quality_gate
from sophon_cli.encode.entry import ENTRY_SCHEMA, FileEntry, FileStat, Result, State
from sophon_cli.encode.events import EventSink, Progress
from sophon_cli.encode.inputs import Source
from sophon_cli.encode.naming import EncodeOptions, fallback_path_for, job_idempotency_key
from sophon_cli.encode.results import FileResult, Unscored

__all__ = [
    "Context",
    "Item",
    "OptionsRejected",
    "Stopped",
    "Wait",
    "advance",
    "create_job",
    "fail",
    "fail_timeout",
    "failure_reason",
    "fallback",
    "finish",
    "hash_source",
    "is_done",
    "observe",
    "result_of",
    "upload",
]


class OptionsRejected(BadRequestError):
    """The server refused the job options that every file of the batch shares: the batch stops
    at the first refusal instead of uploading every file."""

    def __init__(self, exc: BadRequestError) -> None:
        super().__init__(
            exc.status,
            exc.code,
            f"the server rejected the job options: {exc.message}",
            request_id=exc.request_id,
            envelope_retryable=exc.envelope_retryable,
            attempts=exc.attempts,
            path=exc.path,
        )


def _names_upload(exc: BadRequestError, item: Item) -> bool:
    upload_id = item.entry.upload_id
    return bool(upload_id) and upload_id in exc.message


class Stopped(Exception):
    """Raised inside a step (or from a progress callback) once a stop was requested."""


@dataclass(frozen=True)
class Wait:
    """What ``advance`` returns when the file now waits on its job."""

    job_id: str


@dataclass
class Item:
    """One file in one run."""

    source: Source
    key: str
    output: Path
    size: int
    entry: FileEntry
    stat: FileStat | None = None  # the source as stat'ed when the run began
    known: tuple[str, str | None] | None = None  # (sha256, content fingerprint) remembered for it
    #: output path -> sha256s of what a dropped entry of this item wrote there (ours to replace)
    previous_outputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    job: Any = None  # the last Job seen (a finished one is reused by ``finish``)
    reused: bool = False  # waits on a job from the cache, not yet seen by this run
    waited_since: float | None = None


@dataclass
class Context:
    client: Any
    store: Any  # state.StateStore
    options: EncodeOptions
    fingerprint: str
    sink: EventSink
    run_id: str
    stop: threading.Event
    #: entry key -> output being scored, or caught by a stop while it was (``quality_gate``)
    unscored: dict[str, Unscored] = field(default_factory=dict)

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped()

    def save(
        self, item: Item, state: State, *, announce: bool = True, event: str | None = None, **fields: Any
    ) -> None:
        """Persist a step: set ``state`` and ``fields`` on the entry and in the cache, then (unless
        ``announce`` is false) emit one event named ``event`` or the state."""
        e = item.entry
        fields["state"] = state
        if e.path is None:
            fields.setdefault("path", str(item.source.path))
            fields.setdefault("fingerprint", self.fingerprint)
            fields.setdefault("size", item.size)
            fields.setdefault("schema", ENTRY_SCHEMA)
            if item.stat is not None:
                for k, v in item.stat.fields().items():
                    fields.setdefault(k, v)
        patch = e.update(**fields)
        self.store.update(item.key, patch)
        if announce:
            detail = {k: v for k, v in patch.items() if k not in ("state", "path", "fingerprint", "schema")}
            self.event(item, event or str(state), **detail)

    def event(self, item: Item, state: str, **detail: Any) -> None:
        self.sink.event(item.source.display, state, **detail)

    def progress(self, item: Item, phase: str, done: float, total: float | None, **more: Any) -> None:
        self.sink.progress(Progress(item.source.display, phase, done, total, **more))


# -- the state machine of one file ---------------------------------------------------------------


def advance(ctx: Context, item: Item) -> FileResult | Wait:
    """Run one file forward until it waits on its job or is finished."""
    e = item.entry
    if ctx.options.force and e.force_run != ctx.run_id:
        from sophon_cli.client.idempotency import new_nonce

        # A fresh intent: forget the old entry, and give the job key a new nonce.
        ctx.store.delete(item.key)
        item.entry = e = FileEntry()
        ctx.save(item, State.PENDING, nonce=new_nonce(), force_run=ctx.run_id, announce=False)
    if is_done(ctx, item):
        ctx.event(item, "cached", result=e.result, output=e.output)
        return result_of(ctx, item, cached=True)
    if e.job_id and e.job_terminal:
        if item.job is None and e.state == State.JOB_DONE:  # an earlier run saw it finish
            ctx.event(item, "job_reused", job_id=e.job_id, job_status=e.job_status)
        return finish(ctx, item)
    if e.job_id:
        # The cache has the job an earlier run made: this run waits on it. Its first poll says
        # how it is now (``observe``).
        item.reused = True
        return Wait(e.job_id)
    ctx.check_stop()
    # No separate hashing pass: the upload reads the file once, hashing while it sends, and
    # returns the full sha256 (a known one, e.g. from an earlier run, lets it skip reading).
    try:
        if not (e.upload_id and e.state == State.UPLOADED):
            upload(ctx, item)
        ctx.check_stop()
        try:
            create_job(ctx, item)
        except BadRequestError as exc:
            if exc.status == 400 and exc.code == "validation_error" and not _names_upload(exc, item):
                # The job request differs between files only by its upload id: a refused option
                # (an unknown profile, webhook or metadata) would be refused for every file.
                raise OptionsRejected(exc) from None
            if exc.code != "source_invalid" or not _names_upload(exc, item):
                raise
            # The recorded upload is no longer usable (expired, canceled): the file is fine.
            # Upload it again and create the job once more, into the next generation of the
            # content's session (the refused one is skipped even if it replays as "completed"),
            # so every run and machine makes the same one replacement.
            refused = e.upload_id
            ctx.save(item, State.UPLOADING, announce=False, upload_id=None)
            upload(ctx, item, unusable=(refused,) if refused else ())
            ctx.check_stop()
            create_job(ctx, item)
    except ConflictError as exc:
        return fail(
            ctx,
            item,
            f"the server refused to replay an earlier request ({exc})",
            next_step=NextStep.FRESH_JOB,
        )
    except BadRequestError as exc:
        if exc.code == "source_unsupported":
            return fallback(ctx, item, f"the server cannot encode this source: {exc.message}")
        if exc.status == 422 or exc.code == "source_invalid":
            # not a usable video: a failure (never "original kept", which would pass a CI job)
            return fail(ctx, item, f"the server rejected the source: {exc.message}")
        raise
    if item.entry.job_terminal:
        return finish(ctx, item)
    assert item.entry.job_id is not None
    return Wait(item.entry.job_id)


def hash_source(ctx: Context, item: Item) -> str:
    h = hashlib.sha256()
    done = 0
    with open(item.source.path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            h.update(block)
            done += len(block)
            ctx.progress(item, "hashing", done, item.size)
    return h.hexdigest()


def upload(ctx: Context, item: Item, *, unusable: tuple[str, ...] = ()) -> None:
    e = item.entry

    def created(upload_id: str) -> None:
        if e.upload_id != upload_id or e.state != State.UPLOADING:
            ctx.save(item, State.UPLOADING, upload_id=upload_id)

    def progress(done: int, total: int) -> None:
        ctx.progress(item, "uploading", done, total)
        ctx.check_stop()

    # What is remembered of this content (this entry's, or another entry's for the same device,
    # inode, size and mtime): with both digests the server's session is found without reading.
    sha256, fingerprint = (e.sha256, e.content_fingerprint) if e.sha256 else (item.known or (None, None))

    def send(sha256: str | None, fingerprint: str | None) -> Any:
        return ctx.client.uploads.upload_file(
            item.source.path,
            concurrency=ctx.options.part_concurrency,
            sha256=sha256,
            fingerprint=fingerprint if sha256 else None,
            unusable=unusable,
            on_created=created,
            on_progress=progress,
        )

    try:
        result = send(sha256, fingerprint)
    except IntegrityError:
        if not sha256:
            raise
        # What was remembered no longer describes the file (rewritten in place): drop it and
        # read the file again, once.
        item.known = None
        ctx.save(item, e.state, announce=False, sha256=None, content_fingerprint=None)
        result = send(None, None)
    # result.sha256 is the digest of the bytes read (checked against the server's): the truth
    # even when a remembered digest was stale
    ctx.save(
        item,
        State.UPLOADED,
        upload_id=result.upload_id,
        sha256=result.sha256,
        content_fingerprint=result.fingerprint,
        source_bytes=result.bytes,
        resumed_upload=bool(result.resumed),
    )


def create_job(ctx: Context, item: Item) -> None:
    e = item.entry
    o = ctx.options
    assert e.sha256 is not None and e.upload_id is not None
    key = job_idempotency_key(e.sha256, item.size, e.upload_id, o, e.nonce)
    job = ctx.client.jobs.create(
        e.upload_id,
        profile=o.profile,
        container=o.container,
        audio=o.audio,
        target_height=o.height,
        webhook_ids=list(o.webhook_ids) or None,
        metadata=dict(o.metadata) or None,
        idempotency_key=key,
    )
    event = None
    if getattr(job, "replayed", False):
        # The key found the job an earlier run made (its cache lost or never written): the
        # replayed answer is from then, so ask for the job as it is now.
        job, event = ctx.client.jobs.get(job.id), "job_reused"
    item.job = job
    ctx.save(
        item,
        State.JOB_CREATED,
        event=event,
        job_id=job.id,
        job_status=job.status,
        profile=job.profile or o.profile,
    )
    if job.is_terminal:  # it can already be over (a reused job that finished)
        ctx.save(item, State.JOB_DONE, **job_facts(job))


def finish(ctx: Context, item: Item) -> FileResult:
    """The job is terminal: download (or fall back) and record the result."""
    e = item.entry
    status = e.job_status
    if status != "completed":
        why = e.job_error or e.status_reason or "no reason given"
        return fallback(ctx, item, f"job {status}: {why}")
    if e.final_artifact == "original":
        return fallback(ctx, item, "nothing smaller than the source was made")
    out = item.output
    server_bytes = e.server_output_bytes
    if isinstance(server_bytes, int) and server_bytes > item.size:
        # The job says its output is larger than the source: no need to fetch it to know.
        _drop_own_output(ctx, item)
        return fallback(ctx, item, _larger(server_bytes, item.size))
    if (low := quality_gate.cached_verdict(ctx, item)) is not None:
        _drop_own_output(ctx, item)
        return fallback(ctx, item, low)
    if not (e.state == State.DOWNLOADED and out.exists() and e.output == str(out)):
        ctx.check_stop()
        expected = e.output_sha256
        if expected and out.is_file() and not out.is_symlink() and sha256_file(out) == expected:
            # already there and verified (e.g. the cache was deleted after a download)
            verified, verification, written = True, "already in place: sha256 matches", expected
        elif _holds_own_encode(item, out):
            # what this entry downloaded for this job before (checked as it was then: the
            # server gave no sha256), unchanged since: nothing to fetch again
            verified, verification, written = bool(e.verified), str(e.verification), e.written_sha256
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            ctx.event(item, "downloading", job_id=e.job_id)

            def progress(done: int, total: int | None = None, *_: Any) -> None:
                ctx.progress(item, "downloading", done, total)
                ctx.check_stop()

            # the one safe writer: a file at ``out`` that is not this job's output is left alone
            # (a per-file failure) unless ``force``; nothing is written through a symlink
            try:
                dl = ctx.client.downloads.download(
                    e.job_id,
                    out,
                    force=ctx.options.force or _ours(ctx, item, out),
                    on_progress=progress,
                    job=item.job,
                )
            except TargetExistsError as exc:
                return _in_the_way(ctx, item, exc)
            except LinkRefusedError as exc:
                # the link's token was refused, not the API key: this file fails, the run goes on;
                # the entry keeps its finished job, so the same encode again asks for a fresh link
                return fail(ctx, item, failure_reason(exc), next_step=exc.next_step)
            if getattr(dl, "skipped", False) or dl.final_artifact == "original":
                ctx.save(item, State.JOB_DONE, final_artifact="original", announce=False)
                return fallback(ctx, item, "nothing smaller than the source was made")
            verified, verification, written = bool(dl.verified), str(dl.verification), dl.sha256
        ctx.save(
            item,
            State.DOWNLOADED,
            output=str(out),
            output_bytes=out.stat().st_size,
            verified=verified,
            verification=verification,
            written_sha256=written,
        )
    out_bytes = int(e.output_bytes or out.stat().st_size)
    if out_bytes > item.size:
        _drop_own_output(ctx, item)
        return fallback(ctx, item, _larger(out_bytes, item.size))
    if (low := quality_gate.check(ctx, item, out)) is not None:
        _drop_own_output(ctx, item)
        return fallback(ctx, item, low)
    return _done(ctx, item, Result.ENCODED, None, output=str(out), output_bytes=out_bytes)


def fallback(ctx: Context, item: Item, reason: str) -> FileResult:
    mode = ctx.options.fallback
    if mode == "fail":
        return fail(ctx, item, reason)
    if mode == "skip":
        return _done(ctx, item, Result.SKIPPED, reason, output=None, output_bytes=None, written_sha256=None)
    target = fallback_path_for(item.output, item.source.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # through the safe writer: verified against the source's sha256, a copy already in place is
    # kept, anything else there is left alone unless ``force``
    source_sha = item.entry.sha256 or sha256_file(item.source.path)
    try:
        force = ctx.options.force or _ours(ctx, item, target)
        copied = copy_file(item.source.path, target, force=force, expected_sha256=source_sha)
    except TargetExistsError as exc:
        return _in_the_way(ctx, item, exc)
    ctx.event(item, "fallback", reason=reason, output=str(target))
    return _done(
        ctx,
        item,
        Result.ORIGINAL_KEPT,
        reason,
        output=str(target),
        output_bytes=target.stat().st_size,
        verified=copied.verified,
        verification=copied.verification,
        written_sha256=copied.sha256,
    )


def _done(
    ctx: Context,
    item: Item,
    result: Result,
    reason: str | None,
    *,
    output: str | None,
    output_bytes: int | None,
    **checked: Any,
) -> FileResult:
    """Record the file's result; ``checked`` may set ``verified``/``verification`` (a copy's)."""
    saved = None
    if output_bytes is not None and item.size:
        saved = round(100.0 * (item.size - output_bytes) / item.size, 1)
    ctx.save(
        item,
        State.DONE,
        result=result,
        reason=reason,
        output=output,
        output_bytes=output_bytes,
        saved_percent=saved,
        source_bytes=item.size,
        fallback=ctx.options.fallback,
        **checked,
    )
    return result_of(ctx, item)


def fail(ctx: Context, item: Item, reason: str, *, next_step: Any = None) -> FileResult:
    """Record a per-file failure; ``next_step`` (a ``NextStep``) is what a front end may suggest."""
    ctx.save(item, State.FAILED, result=Result.FAILED, reason=reason, failed_at_state=str(item.entry.state))
    r = result_of(ctx, item)
    r.next_step = getattr(next_step, "value", next_step)
    return r


def fail_timeout(ctx: Context, item: Item, job: Any) -> FileResult:
    """``timeout`` gave up on the job. The entry stays at job_created so a rerun resumes waiting."""
    reason = (
        f"gave up after {ctx.options.timeout:g}s waiting for job {job.id} ({job.status}); run again to resume"
    )
    ctx.event(item, "timed_out", job_id=job.id, job_status=job.status)
    r = result_of(ctx, item)
    r.result, r.reason, r.timed_out = Result.FAILED, reason, True
    return r


def observe(ctx: Context, item: Item, job: Any) -> bool:
    """Record what a poll saw of ``item``'s job; True if its status changed."""
    e = item.entry
    item.job = job
    progress = job.progress
    percent = getattr(progress, "percent", None) if progress is not None else None
    if percent is not None or job.status == "queued":
        ctx.progress(
            item,
            "encoding",
            float(percent or 0.0),
            100.0,
            status=job.status,
            fps=getattr(progress, "fps", None),
            eta_seconds=getattr(progress, "eta_seconds", None),
        )
    if item.reused:  # the first look at a job an earlier run made: say so, with its status now
        item.reused = False
        if job.is_terminal:
            ctx.event(item, "job_reused", job_id=job.id, job_status=job.status)
        else:
            changed = job.status != e.job_status
            ctx.save(item, State.JOB_CREATED, event="job_reused", job_id=job.id, job_status=job.status)
            return changed
    if job.status == e.job_status:
        return False
    if job.is_terminal:
        ctx.save(item, State.JOB_DONE, **job_facts(job))
    else:  # a status change of a running job: same step, its own event
        ctx.save(item, State.JOB_CREATED, event="job_status", job_status=job.status)
    return True


def result_of(ctx: Context, item: Item, *, cached: bool = False) -> FileResult:
    e = item.entry
    return FileResult(
        file=item.source.display,
        result=e.result or Result.FAILED,
        reason=e.reason,
        output=e.output,
        source_bytes=item.size,
        output_bytes=e.output_bytes,
        verified=e.verified if e.output else None,
        verification=e.verification if e.output else None,
        saved_percent=e.saved_percent,
        profile=e.profile or ctx.options.profile,
        effective_profile=e.effective_profile,
        job_id=e.job_id,
        upload_id=e.upload_id,
        cached=cached,
        vmaf=e.vmaf,
        quality_below_threshold=bool(e.quality_below_threshold),
    )


def is_done(ctx: Context, item: Item) -> bool:
    """True if an earlier run finished this file and its result still stands."""
    e = item.entry
    if e.state != State.DONE:
        return False
    if e.result != Result.ENCODED and e.fallback != ctx.options.fallback:
        return False  # fell back under another --fallback: decide again (locally)
    if not quality_gate.still_stands(ctx, item):
        return False  # scored under another --min-vmaf (or not yet scored): decide again
    if e.result in (Result.ENCODED, Result.ORIGINAL_KEPT):
        return bool(e.output) and Path(e.output).exists()  # type: ignore[arg-type]
    return e.result == Result.SKIPPED


def failure_reason(exc: BaseException) -> str:
    """The per-file reason for an error a step raised."""
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or exc}:{where}"
    text = str(exc)
    if isinstance(exc, LinkRefusedError):  # the server's words are about its API, not this link
        code = "" if exc.code == f"http_{exc.status}" else f" {exc.code}"
        return f"the download link was refused ({exc.status}{code}): expired or invalid token"
    if isinstance(exc, APIError) and isinstance(exc, BadRequestError):
        return f"the server rejected the request: {exc.message}"
    return text


def job_facts(job: Any) -> dict[str, Any]:
    out = job.output
    return {
        "job_status": job.status,
        "status_reason": job.status_reason,
        "job_error": getattr(job, "error", None),
        "final_artifact": getattr(job, "final_artifact", None),
        "effective_profile": job.effective_profile_id,
        "profile": job.profile,
        "output_sha256": getattr(out, "sha256", None) if out is not None else None,
        "server_output_bytes": getattr(out, "bytes", None) if out is not None else None,
    }


def _larger(out_bytes: int, src_bytes: int) -> str:
    return f"the encode ({out_bytes} bytes) is larger than the source ({src_bytes} bytes)"


def _drop_own_output(ctx: Context, item: Item) -> None:
    """Remove the output path only when it holds what is ours there (``_ours``): never a file
    someone else put there, nor one changed since it was written."""
    try:
        if _ours(ctx, item, item.output):
            item.output.unlink()
    except FileNotFoundError:
        pass


def _holds_own_encode(item: Item, path: Path) -> bool:
    """True if ``path`` holds, unchanged (size and sha256), the encode this entry downloaded for
    its job (not a fallback copy of the original, which a later decision may replace)."""
    e = item.entry
    written = e.written_at(str(path))
    if not e.written_sha256 or written is None or e.result == Result.ORIGINAL_KEPT:
        return False
    try:
        st = path.lstat()
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and written[1] in (None, st.st_size)
        and sha256_file(path) == e.written_sha256
    )


def _ours(ctx: Context, item: Item, path: Path) -> bool:
    """True if ``path`` is a regular file holding exactly what is ours there, so replacing or
    removing it loses nothing: this job's output (its sha256 from the server), or bytes that the
    cache records some run writing at that path (an encode with or without a server sha256, a
    copy of the original, an entry dropped because its source was rewritten), matched by size and
    sha256. A file changed since it was written matches nothing."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    wanted: set[str] = set(item.previous_outputs.get(str(path), ()))
    if item.entry.output_sha256:
        wanted.add(item.entry.output_sha256)
    for raw in ctx.store.entries().values():
        written = FileEntry.from_dict(raw).written_at(str(path))
        if written is not None and written[1] in (None, st.st_size):
            wanted.add(written[0])
    return bool(wanted) and sha256_file(path) in wanted


def _in_the_way(ctx: Context, item: Item, exc: TargetExistsError) -> FileResult:
    """Something that is not this entry's output is at the output path: a per-file failure."""
    return fail(
        ctx,
        item,
        f"{exc}: it is not this file's output, so it was left alone",
        next_step=exc.next_step,
    )
