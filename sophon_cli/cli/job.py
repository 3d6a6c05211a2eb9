"""`sophon job create|get|list|cancel|wait`: encoding jobs, one small function per command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sophon_cli.cli import options as opts
from sophon_cli.cli.context import get_ctx

app = typer.Typer(no_args_is_help=True)

TERMINAL = ("completed", "failed", "canceled")
MAX_PAGE_SIZE = 100  # the API's maximum `limit`
JobIdArg = Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id (job_...).")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="Give up waiting after this long (exit 6)."),
]

# ---- pure helpers (unit-tested) -------------------------------------------------------------


def _strict_json(text: str) -> Any:
    def reject(name: str) -> Any:
        raise ValueError(name)

    return json.loads(text, parse_constant=reject)


def parse_metadata_value(text: str) -> Any:
    """A --metadata value: the JSON value when ``text`` is valid JSON, else the string itself."""
    try:
        return _strict_json(text)
    except ValueError:
        return text


def build_metadata(
    pairs: list[str] | None, file_text: str | None, *, file_name: str = ""
) -> dict[str, Any] | None:
    """Merge --metadata-file (a JSON object) and KEY=VALUE pairs (pairs win); None when neither given.
    The result is checked by the library (a JSON object of at most 16 KiB)."""
    from sophon_cli.client.errors import InputError
    from sophon_cli.client.jobs import validate_metadata

    if not pairs and file_text is None:
        return None
    metadata: dict[str, Any] = {}
    if file_text is not None:
        try:
            loaded = _strict_json(file_text)
        except ValueError as exc:
            raise InputError(
                f"--metadata-file {file_name} is not valid JSON ({exc})", hint="fix the file"
            ) from None
        if not isinstance(loaded, dict):
            raise InputError(
                f"--metadata-file {file_name} must hold a JSON object, not {type(loaded).__name__}",
                hint='wrap the values in an object, e.g. {"key": "value"}',
            )
        metadata.update(loaded)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(
                f"--metadata expects KEY=VALUE (got {_clip(pair)!r})", hint="e.g. --metadata customer=acme"
            )
        metadata[key.strip()] = parse_metadata_value(value)
    return validate_metadata(metadata)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_height(height: int | None) -> int | None:
    from sophon_cli.client.errors import InputError
    from sophon_cli.client.jobs import MAX_TARGET_HEIGHT, MIN_TARGET_HEIGHT

    if height is not None and not MIN_TARGET_HEIGHT <= height <= MAX_TARGET_HEIGHT:
        raise InputError(
            f"--height must be between {MIN_TARGET_HEIGHT} and {MAX_TARGET_HEIGHT} pixels (got {height})",
            hint="e.g. --height 1080, or leave it out to keep the source size",
        )
    return height


def check_timeout(timeout: float | None) -> float | None:
    from sophon_cli.client.errors import InputError

    if timeout is not None and not timeout > 0:
        raise InputError(
            f"--timeout must be a positive number of seconds (got {timeout})", hint="e.g. --timeout 600"
        )
    return timeout


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def short_time(value: Any) -> str:
    """An RFC 3339 timestamp (str or datetime) as 'YYYY-MM-DD HH:MM:SS' (UTC as given)."""
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    text = text.replace("T", " ")
    return text[:19]


def progress_text(job: Any) -> str:
    status = _get(job, "status")
    progress = _get(job, "progress")
    percent = _get(progress, "percent")
    if status in TERMINAL:
        return "100%" if status == "completed" else "-"
    return f"{percent:.0f}%" if isinstance(percent, (int, float)) else ""


def failure_reason(job: Any) -> str | None:
    """'<error> (<status_reason>)', either alone, or None."""
    error = _get(job, "error")
    code = _get(job, "status_reason")
    if error and code and code not in error:
        return f"{error} ({code})"
    return error or code or None


def job_line(job: Any) -> str:
    status = str(_get(job, "status"))
    reason = failure_reason(job)
    extra = ""
    if status == "completed" and _get(job, "final_artifact") == "original":
        extra = "  (kept the original: no smaller output was made)"
    elif status in ("failed", "canceled") and reason:
        extra = f"  ({reason})"
    return f"{_get(job, 'id')}  {status}{extra}"


def job_rows(job: Any) -> list[tuple[str, Any]]:
    from sophon_cli.cli.output import human_bytes

    progress = _get(job, "progress")
    source = _get(job, "source")
    output = _get(job, "output")
    rows: list[tuple[str, Any]] = [("id", _get(job, "id")), ("status", _get(job, "status"))]
    if _get(job, "status_reason"):
        rows.append(("reason", _get(job, "status_reason")))
    profile = _get(job, "profile")
    effective = _get(job, "effective_profile_id")
    rows.append(("profile", f"{profile} ({effective})" if effective and effective != profile else profile))
    if _get(job, "status") not in TERMINAL:
        phase = _get(progress, "phase") or ""
        percent = _get(progress, "percent")
        rows.append(("progress", f"{phase} {percent:.0f}%" if isinstance(percent, (int, float)) else phase))
    src = [str(_get(source, "name") or "")]
    if _get(source, "resolution"):
        src.append(str(_get(source, "resolution")))
    if _get(source, "bytes") is not None:
        src.append(human_bytes(_get(source, "bytes")))
    rows.append(("source", ", ".join(s for s in src if s)))
    out = [str(_get(output, "state") or ""), str(_get(output, "container") or "")]
    if _get(output, "width") and _get(output, "height"):
        out.append(f"{_get(output, 'width')}x{_get(output, 'height')}")
    if _get(output, "bytes") is not None:
        out.append(human_bytes(_get(output, "bytes")))
    rows.append(("output", ", ".join(s for s in out if s)))
    if _get(job, "final_artifact"):
        rows.append(("final artifact", _get(job, "final_artifact")))
    if _get(job, "saved_percent") is not None:
        rows.append(("saved", f"{_get(job, 'saved_percent')}%"))
    metadata = _get(job, "metadata")
    if metadata:
        rows.append(("metadata", json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)))
    rows.append(("created", short_time(_get(job, "created_at"))))
    if _get(job, "started_at"):
        rows.append(("started", short_time(_get(job, "started_at"))))
    if _get(job, "completed_at"):
        rows.append(("finished", short_time(_get(job, "completed_at"))))
    if _get(job, "error"):
        rows.append(("error", _get(job, "error")))
    return rows


def progress_description(job: Any) -> str:
    progress = _get(job, "progress")
    parts = [str(_get(job, "id")), str(_get(progress, "phase") or _get(job, "status") or "")]
    fps = _get(progress, "fps")
    if isinstance(fps, (int, float)) and fps > 0:
        parts.append(f"{fps:.0f} fps")
    eta = _get(progress, "eta_seconds")
    if isinstance(eta, (int, float)) and eta >= 0:
        parts.append(f"eta {int(eta)}s")
    return " ".join(parts)


def failed_error(jobs: list[Any]):
    """The JobFailedError for the failed/canceled jobs among ``jobs`` (None when all completed)."""
    from sophon_cli.client.errors import JobFailedError

    bad = [j for j in jobs if _get(j, "status") in ("failed", "canceled")]
    if not bad:
        return None
    first = bad[0]
    reason = failure_reason(first) or "no reason given"
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return JobFailedError(
        f"job {_get(first, 'id')} ended {_get(first, 'status')}: {reason}{more}",
        job=first,
        hint=f"see `sophon job get {_get(first, 'id')}`",
    )


# ---- shared with other commands -------------------------------------------------------------


def wait_for_jobs(app_ctx: Any, job_ids: list[str], timeout: float | None) -> list[Any]:
    """Wait for ``job_ids`` with a progress bar each; return the terminal jobs (any final status)."""
    client = app_ctx.client()
    with app_ctx.out.progress(transfer=False) as progress:
        tasks = {jid: progress.add(jid, total=100) for jid in job_ids}

        def on_progress(job: Any, *_: Any) -> None:
            task = tasks.get(_get(job, "id"))
            if task is None:
                return
            if _get(job, "status") == "completed":
                progress.update(task, completed=100, description=progress_description(job))
                return
            percent = _get(_get(job, "progress"), "percent")
            progress.update(
                task,
                completed=percent if isinstance(percent, (int, float)) else None,
                description=progress_description(job),
            )

        finals = client.jobs.wait_many(job_ids, timeout=timeout, on_progress=on_progress)
        for job in finals:
            task = tasks.get(_get(job, "id"))
            if task is not None and _get(job, "status") == "completed":
                progress.done(task)
    return finals


def render_job(app_ctx: Any, job: Any) -> None:
    if app_ctx.out.json:
        app_ctx.out.emit(job)
    else:
        app_ctx.out.print(job_line(job))


# ---- commands -------------------------------------------------------------------------------


@app.command("create")
def create(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[FILE]", help="A video file to upload first (or give --upload).", show_default=False
        ),
    ] = None,
    upload_id: Annotated[
        str | None, typer.Option("--upload", metavar="UPLOAD_ID", help="Encode an already uploaded file.")
    ] = None,
    profile: opts.Profile = "sophon-auto",
    container: opts.Container = None,
    audio: opts.Audio = None,
    height: opts.Height = None,
    webhooks: opts.Webhooks = None,
    metadata: opts.Metadata = None,
    metadata_file: Annotated[
        Path | None, typer.Option("--metadata-file", metavar="FILE", help="Attach a JSON object of metadata.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the job to finish (exit 5 if it fails).")
    ] = False,
    timeout: TimeoutOpt = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", metavar="N", help="Upload parts in parallel (with FILE).")
    ] = 4,
) -> None:
    """Create an encoding job from FILE (uploaded first) or from --upload ID."""
    from sophon_cli.cli.upload import check_concurrency, check_input_file, upload_files
    from sophon_cli.client.errors import InputError

    app_ctx = get_ctx(ctx)
    if (file is None) == (upload_id is None):
        raise InputError(
            "give either FILE or --upload ID (exactly one)", hint="see `sophon job create --help`"
        )
    if container is not None and container not in ("mp4", "mkv"):
        raise InputError(f"--container must be mp4 or mkv (got {container!r})", hint="e.g. --container mp4")
    check_height(height)
    check_timeout(timeout)
    if timeout is not None and not wait:
        raise InputError("--timeout only applies with --wait", hint="add --wait, or drop --timeout")
    file_text = _read_metadata_file(metadata_file) if metadata_file is not None else None
    meta = build_metadata(metadata, file_text, file_name=str(metadata_file or ""))
    if file is not None:
        check_concurrency(concurrency)
        check_input_file(file)
        [(_, result)] = upload_files(app_ctx, [file], concurrency=concurrency, new=False)
        upload_id = result.upload_id
        app_ctx.out.notice(f"uploaded {file} as {upload_id}")
    job = app_ctx.client().jobs.create(
        upload_id,
        profile=profile,
        container=container,
        audio=audio,
        target_height=height,
        webhook_ids=webhooks or None,
        metadata=meta,
        idempotency_key=_new_key("job"),
    )
    if not wait:
        render_job(app_ctx, job)
        return
    app_ctx.out.notice(f"created {job.id}; waiting for it to finish")
    [final] = wait_for_jobs(app_ctx, [job.id], timeout)
    render_job(app_ctx, final)
    err = failed_error([final])
    if err is not None:
        raise err


def _read_metadata_file(path: Path) -> str:
    from sophon_cli.client.errors import InputError

    data = opts.read_option_file(str(path), "--metadata-file", kind="a JSON file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"--metadata-file {path} is not UTF-8 text", hint="pass a JSON file") from None


def _new_key(kind: str) -> str:
    import uuid

    return f"sc-{kind}-{uuid.uuid4().hex}"


@app.command("get")
def get(ctx: typer.Context, job_id: JobIdArg) -> None:
    """Show a job: status, progress, source and output."""
    app_ctx = get_ctx(ctx)
    job = app_ctx.client().jobs.get(job_id)
    app_ctx.out.record(job, job_rows(job))


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option("--status", metavar="STATUS", help="Only jobs with this status.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="Show at most N jobs.")] = 20,
    all_: Annotated[bool, typer.Option("--all", help="Show every job (follows the pages).")] = False,
    page_size: Annotated[
        int, typer.Option("--page-size", metavar="N", help=f"Jobs per request (1-{MAX_PAGE_SIZE}).")
    ] = MAX_PAGE_SIZE,
) -> None:
    """List jobs, newest first (a table; NDJSON with --json)."""
    from sophon_cli.client.errors import InputError

    if limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit})", hint="e.g. --limit 50, or --all")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InputError(
            f"--page-size must be between 1 and {MAX_PAGE_SIZE} (got {page_size})", hint="e.g. --page-size 50"
        )
    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    jobs = app_ctx.client().jobs
    more = False
    if all_:
        items: Any = jobs.iter(status=status, page_size=page_size)
    elif limit <= page_size:
        page = jobs.list(status=status, limit=limit)
        items, more = page.jobs, bool(page.has_more)
    else:
        items = _take(jobs.iter(status=status, page_size=page_size), limit)
    if out.json:
        for job in items:
            out.emit(job)
        return
    rows = (
        (
            _get(j, "id"),
            _get(j, "status"),
            _get(j, "profile"),
            short_time(_get(j, "created_at")),
            progress_text(j),
        )
        for j in items
    )
    out.table(["id", "status", "profile", "created", "progress"], list(rows))
    if more:
        out.notice(f"showing the newest {limit} jobs; use --limit N or --all for more")


def _take(iterator: Any, n: int):
    for i, item in enumerate(iterator):
        if i >= n:
            return
        yield item


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: JobIdArg) -> None:
    """Cancel a queued or running job."""
    app_ctx = get_ctx(ctx)
    render_job(app_ctx, app_ctx.client().jobs.cancel(job_id))


@app.command("wait")
def wait(
    ctx: typer.Context,
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB_ID", help="Jobs to wait for.")],
    timeout: TimeoutOpt = None,
) -> None:
    """Wait for jobs to finish with a progress bar; exit 5 if any failed or was canceled, 6 on timeout."""
    app_ctx = get_ctx(ctx)
    check_timeout(timeout)
    ids = list(dict.fromkeys(job_ids))
    finals = wait_for_jobs(app_ctx, ids, timeout)
    for job in finals:
        render_job(app_ctx, job)
    err = failed_error(finals)
    if err is not None:
        raise err
