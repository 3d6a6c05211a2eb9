"""`sophon job create|get|list|cancel|wait`: encoding jobs, one small function per command.

Parse the options (checks in ``cli/shared.py``), call the library, render (``cli/jobview.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from sophon_cli.cli import jobview as view
from sophon_cli.cli import options as opts
from sophon_cli.cli import shared
from sophon_cli.cli.context import get_ctx

app = typer.Typer(no_args_is_help=True)

MAX_PAGE_SIZE = 100  # the API's maximum `limit`


class JobStatus(str, enum.Enum):
    """The spec's JobStatus enum: the values `job list --status` takes (and completes)."""

    QUEUED = "queued"
    PROBING = "probing"
    ENCODING = "encoding"
    MUXING = "muxing"
    UPLOADING_OUTPUT = "uploading_output"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


JobIdArg = Annotated[
    str,
    typer.Argument(metavar="JOB_ID", help="The job id (job_...)."),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", metavar="SECONDS", help="Give up waiting after this long (exit 6)."),
]
WatchOpt = Annotated[
    bool, typer.Option("--watch", "-w", help="Keep the view live until every job shown has finished.")
]
IntervalOpt = Annotated[
    float, typer.Option("--interval", metavar="SECONDS", help="Seconds between refreshes with --watch.")
]


@app.command("create")
def create(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="FILE", help="A video file to upload first (or give --upload).", show_default=False
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
    concurrency: opts.PartConcurrency = 4,
) -> None:
    """Create an encoding job from FILE (uploaded first) or from --upload ID."""
    from sophon_cli.cli.upload import check_input_file, upload_files
    from sophon_cli.client.errors import InputError

    app_ctx = get_ctx(ctx)
    if (file is None) == (upload_id is None):
        raise InputError(
            "give either FILE or --upload ID (exactly one)", hint="see `sophon job create --help`"
        )
    if container is not None and container not in ("mp4", "mkv"):
        raise InputError(f"--container must be mp4 or mkv (got {container!r})", hint="e.g. --container mp4")
    shared.check_height(height)
    shared.check_timeout(timeout)
    if timeout is not None and not wait:
        raise InputError("--timeout only applies with --wait", hint="add --wait, or drop --timeout")
    file_text = _read_metadata_file(metadata_file) if metadata_file is not None else None
    meta = shared.build_metadata(metadata, file_text, file_name=str(metadata_file or ""))
    if file is not None:
        shared.check_concurrency(concurrency)
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
    _remember(app_ctx, [job])
    _remember_source(app_ctx, job, upload_id, file)
    if not wait:
        view.render_job(app_ctx.out, job)
        return
    try:
        app_ctx.out.notice(f"created {job.id}; waiting for it to finish")
        [final] = view.wait_for_jobs(app_ctx, [job.id], timeout)
    except KeyboardInterrupt:
        # the job goes on on the server; running `job create` again would make a second one
        # (its idempotency key is fresh on every run), so the next step is to wait for this one
        raise shared.Interrupted(
            f"interrupted; job {job.id} goes on: follow it with `sophon job wait {job.id}`"
        ) from None
    view.render_job(app_ctx.out, final)
    err = view.failed_error([final])
    if err is not None:
        raise err


def _read_metadata_file(path: Path) -> str:
    from sophon_cli.client.errors import InputError

    data = opts.read_option_file(str(path), "--metadata-file", kind="a JSON file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"--metadata-file {path} is not UTF-8 text", hint="pass a JSON file") from None


def _remember(app_ctx: Any, jobs: list[Any]) -> None:
    """Note the ids for `job get <Tab>` (cli/recent.py)."""
    from sophon_cli.cli import recent

    recent.remember(app_ctx.state_path.parent, [view.get(j, "id") for j in jobs], on_error=app_ctx.out.debug)


def _remember_source(app_ctx: Any, job: Any, upload_id: str, file: Path | None) -> None:
    """The local file a job came from: FILE, or the one `sophon upload` sent as --upload's id. An
    upload made elsewhere has no local file: its own name is shown when it has a recognisable one
    (the SDK sends the real name), else the upload id is noted (view.source_label)."""
    from sophon_cli.cli import recent
    from sophon_cli.cli.upload import _remember_sources

    source = str(file) if file is not None else recent.sources(app_ctx.state_path.parent).get(upload_id)
    if not source and view.source_label(job, {}) == "-":
        source = _upload_name(app_ctx, job, upload_id) or upload_id
    if source:
        _remember_sources(app_ctx, [(view.get(job, "id"), source)])


def _upload_name(app_ctx: Any, job: Any, upload_id: str) -> str | None:
    """The upload's own file name when the job carries none (the spec's ``source.name`` may be
    null) and it is one a person gave (not derived from the content); None otherwise."""
    from sophon_cli.client.content import is_content_name
    from sophon_cli.client.errors import SophonError

    if view.get(view.get(job, "source"), "name"):
        return None  # the job has the upload's name already: derived from the content
    try:
        name = app_ctx.client().uploads.get(upload_id).file_name
    except SophonError as exc:  # only the SOURCE column is at stake
        app_ctx.out.debug(f"could not read upload {upload_id}: {exc}")
        return None
    return name if name and not is_content_name(name) else None


def _new_key(kind: str) -> str:
    import uuid

    return f"sc-{kind}-{uuid.uuid4().hex}"


@app.command("get")
def get(ctx: typer.Context, job_id: JobIdArg, watch: WatchOpt = False, interval: IntervalOpt = 2.0) -> None:
    """Show a job: status, progress, source and output."""
    from sophon_cli.cli import watch as live

    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    jobs = app_ctx.client().jobs
    sources = view.source_names(app_ctx.state_path) if not out.json else {}
    if watch:
        live.check_interval(interval)
        with _stopping_only_the_view(f"job {job_id} goes"):
            live.watch(out, lambda: [jobs.get(job_id)], live.record_view(out, sources), interval=interval)
        return
    job = jobs.get(job_id)
    _remember(app_ctx, [job])
    out.record(job, view.job_rows(job, out.when, sources))


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        JobStatus | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="Only jobs with this status: " + ", ".join(s.value for s in JobStatus) + ".",
            show_choices=False,
            case_sensitive=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="WHEN",
            help="Only jobs created since WHEN: a duration (30m, 2h, 7d) or a date.",
        ),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata", metavar="KEY=VALUE", help="Only jobs whose metadata KEY equals VALUE (repeatable)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="Show at most N jobs.")] = 20,
    all_: Annotated[bool, typer.Option("--all", help="Show every job (follows the pages).")] = False,
    page_size: Annotated[
        int, typer.Option("--page-size", metavar="N", help=f"Jobs per request (1-{MAX_PAGE_SIZE}).")
    ] = MAX_PAGE_SIZE,
    watch: WatchOpt = False,
    interval: IntervalOpt = 2.0,
) -> None:
    """List jobs, newest first, with the file each was made from (NDJSON with --json; --jq gets one array)."""
    from sophon_cli.cli import watch as live
    from sophon_cli.client.errors import InputError

    if limit < 1:
        raise InputError(f"--limit must be at least 1 (got {limit})", hint="e.g. --limit 50, or --all")
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InputError(
            f"--page-size must be between 1 and {MAX_PAGE_SIZE} (got {page_size})", hint="e.g. --page-size 50"
        )
    if watch:
        live.check_interval(interval)
    wanted_status = status.value if status is not None else None
    cutoff = shared.parse_since(since)
    wanted = shared.metadata_filter(metadata)
    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    jobs = app_ctx.client().jobs
    filtered = cutoff is not None or bool(wanted)

    def fetch() -> tuple[list[Any], bool]:
        """The jobs to show and whether more matched than were shown."""
        if not filtered and not all_ and limit <= page_size:
            page = jobs.list(status=wanted_status, limit=limit)
            return list(page.jobs), bool(page.has_more)
        shown: list[Any] = []
        for job in jobs.iter(status=wanted_status, page_size=page_size):
            if cutoff is not None and _created(job) is not None and _created(job) < cutoff:
                break  # newest first: everything further is older
            if not shared.metadata_matches(view.get(job, "metadata"), wanted):
                continue
            if not all_ and len(shown) == limit:
                return shown, True
            shown.append(job)
        return shown, False

    sources = view.source_names(app_ctx.state_path) if not out.json else {}
    if watch:
        with _stopping_only_the_view():
            live.watch(out, lambda: fetch()[0], live.table_view(out, sources), interval=interval)
        return
    items, more = fetch()
    _remember(app_ctx, items[:20])
    if out.json:
        out.emit_list(items)
        return
    if not items:
        out.notice("no jobs match" if filtered or status else "no jobs")
        if out.is_tty:
            return
    view.list_table(out, items, sources)
    if more:
        out.notice(f"showing the {_newest(limit)}; use --limit N or --all for more")


@contextmanager
def _stopping_only_the_view(what: str = "the jobs go") -> Iterator[None]:
    """Ctrl-C in `--watch` stops the view, not the jobs: said so, instead of "run the same command
    again to resume" (exit 130 all the same)."""
    try:
        yield
    except KeyboardInterrupt:
        raise shared.Interrupted(f"stopped watching; {what} on on the server") from None


def _newest(n: int) -> str:
    return "newest job" if n == 1 else f"newest {n} jobs"


def _created(job: Any):
    from sophon_cli.cli.output import parse_time

    return parse_time(view.get(job, "created_at"))


@app.command("cancel")
def cancel(ctx: typer.Context, job_id: JobIdArg) -> None:
    """Cancel a queued or running job (a job already canceled is not an error)."""
    from sophon_cli.client.errors import ConflictError

    app_ctx = get_ctx(ctx)
    jobs = app_ctx.client().jobs
    try:
        job = jobs.cancel(job_id)
    except ConflictError:
        job = jobs.get(job_id)
        if view.get(job, "status") != "canceled":
            raise
        app_ctx.out.notice(f"job {job_id} was already canceled")
    view.render_job(app_ctx.out, job)


@app.command("wait")
def wait(
    ctx: typer.Context,
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB_ID", help="Jobs to wait for.")],
    timeout: TimeoutOpt = None,
) -> None:
    """Wait for jobs to finish with a progress bar; exit 5 if any failed or was canceled, 6 on timeout."""
    app_ctx = get_ctx(ctx)
    shared.check_timeout(timeout)
    ids = list(dict.fromkeys(job_ids))
    try:
        finals = view.wait_for_jobs(app_ctx, ids, timeout)
    except KeyboardInterrupt:
        # waiting changes nothing on the server: the jobs go on, and waiting again picks them up
        raise shared.Interrupted(
            f"interrupted; the {'job goes' if len(ids) == 1 else 'jobs go'} on: "
            f"wait again with `sophon job wait {' '.join(ids)}`"
        ) from None
    for job in finals:
        view.render_job(app_ctx.out, job)
    err = view.failed_error(finals)
    if err is not None:
        raise err
