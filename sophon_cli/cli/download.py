"""`sophon download JOB_ID [-o FILE|DIR] [--force]`: fetch a finished job's output, verified.

The library's one safe writer streams into a hidden ``.part`` and renames only after verification
(sha256 when the job has one, else the size), so the target never holds a partial file; it refuses
to overwrite without ``force`` (a target that already holds exactly this output is left as it is).
How the bytes were verified is said on stderr (``verified`` in ``--json``); an unverified download
is a warning even with ``-q``. A ``sophon-auto`` job
that kept the original (``final_artifact: "original"``) has nothing to download: that is said, and
the exit code is 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from sophon_cli.cli.context import get_ctx


def download_command(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="A completed job's id.")],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE|DIR",
            help="Where to save it: a file, or a directory (existing, or ending in /) [default: .].",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file.")] = False,
) -> None:
    """Download a completed job's output (verified against its sha256)."""
    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    target = output or "."  # a str, so a trailing "/" (= a directory) survives
    client = app_ctx.client()
    job = None
    if _is_directory(target):
        job = client.jobs.get(job_id)  # handed to the library, which would read it anyway
        name = _readable_name(app_ctx, job)
        if name is not None:
            target = os.path.join(target, name)
    with out.progress(transfer=True) as progress:
        task = progress.add(job_id)

        def on_progress(done: int, total: int | None = None, *_: Any) -> None:
            progress.update(task, completed=done, total=total)

        result = client.downloads.download(job_id, target, force=force, on_progress=on_progress, job=job)
        if result.already_present:  # nothing was fetched: the bar said "0/? bytes ?"
            size = result.bytes or 0
            progress.update(task, completed=size, total=size, description=f"{job_id} (already downloaded)")
        if not result.skipped:
            progress.done(task)
    if out.json:
        data = {"job_id": job_id, "downloaded": not result.skipped}
        data.update(result.model_dump(mode="json"))
        out.emit(data)
    elif result.skipped:
        out.notice(
            f"job {job_id} kept the original: no smaller output was made, so there is nothing to download"
        )
    else:
        out.print(str(result.path))
    if result.skipped:
        return
    if result.already_present:
        out.notice(f"{result.path} already holds this output ({result.verification}); nothing downloaded")
    elif result.verified:
        out.notice(f"verified: {result.verification}")
    if not result.verified:
        out.warn(f"{result.path} is not verified against a sha256: {result.verification}")


def _is_directory(target: str) -> bool:
    """``-o`` names a directory as the library reads it: an existing one, or a path ending in /."""
    return target.endswith(("/", os.sep)) or Path(target).is_dir()


def _readable_name(app_ctx: Any, job: Any) -> str | None:
    """The file name for a download into a directory when the server's would say nothing: its name
    is made from the upload's, which for an upload this tool made is derived from the content
    (``b78aade545f3f7d5.sophon.mp4``). Then ``<stem>.sophon.<container>``, the stem being the local
    file's the job was made from when it is noted (``job list``'s SOURCE), else the job id. None
    keeps the server's name (an upload with a real name, e.g. from the SDK)."""
    import re

    from sophon_cli.cli import jobview as view
    from sophon_cli.client.content import is_content_name
    from sophon_cli.client.downloads import safe_filename

    if not is_content_name(view.get(view.get(job, "source"), "name")):
        return None
    label = view.source_label(job, view.source_names(app_ctx.state_path))
    noted_file = label != "-" and not re.fullmatch(r"[A-Za-z0-9_-]+", label)  # not an upload id
    stem = Path(label).stem if noted_file else str(view.get(job, "id"))
    container = view.get(view.get(job, "output"), "container") or "mp4"
    return safe_filename(f"{stem}.sophon.{container}", f"{view.get(job, 'id')}.{container}")
