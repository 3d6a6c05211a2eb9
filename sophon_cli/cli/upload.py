"""`sophon upload FILE...`: chunked, resumable uploads with progress; prints the upload ids.

Rerunning the same command resumes an interrupted upload of the same file (the library derives its
idempotency keys from the file's content and asks the server which parts it already has);
``--new`` starts a fresh upload session instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from sophon_cli.cli import options as opts
from sophon_cli.cli import shared
from sophon_cli.cli.context import get_ctx


def check_input_file(path: Path) -> Path:
    """Raise InputError unless ``path`` is a non-empty regular file this process can read."""
    from sophon_cli.client.uploads import check_local_file

    return check_local_file(path)[0]


def check_input_files(paths: list[Path]) -> list[Path]:
    """Check every file before any network call; drop repeats of the same file."""
    seen: set[str] = set()
    out: list[Path] = []
    for path in paths:
        check_input_file(path)
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def upload_files(app_ctx: Any, files: list[Path], *, concurrency: int, new: bool) -> list[tuple[Path, Any]]:
    """Upload ``files`` one after another with a bar per file plus a total; return (path, result)."""
    client = app_ctx.client()
    sizes = {f: f.stat().st_size for f in files}
    results: list[tuple[Path, Any]] = []
    with app_ctx.out.progress(transfer=True) as progress:
        total_task = progress.add("total", total=sum(sizes.values())) if len(files) > 1 else None
        finished = [0]  # bytes of the files already done (read by the callbacks)
        for path in files:
            task = progress.add(path.name, total=sizes[path])

            def on_progress(done: int, total: int | None = None, *_: Any, _task: int = task) -> None:
                progress.update(_task, completed=done, total=total)
                if total_task is not None:
                    progress.update(total_task, completed=finished[0] + done)

            def on_created(session: Any, *_: Any, _path: Path = path) -> None:
                app_ctx.out.debug(f"upload session {getattr(session, 'id', session)} for {_path}")

            result = client.uploads.upload_file(
                path, concurrency=concurrency, new=new, on_progress=on_progress, on_created=on_created
            )
            if result.parts_sent == 0:  # the server had every part: say so, not a transfer rate
                progress.update(task, description=f"{path.name} (already uploaded)")
            progress.done(task)
            finished[0] += sizes[path]
            if total_task is not None:
                progress.update(total_task, completed=finished[0])
            results.append((path, result))
            _remember_sources(app_ctx, [(result.upload_id, path)])
    return results


def _remember_sources(app_ctx: Any, pairs: list[tuple[Any, Any]]) -> None:
    """Note which local file each upload (or job) came from, for `job list`'s SOURCE (cli/recent.py)."""
    from sophon_cli.cli import recent

    recent.remember_sources(app_ctx.state_path.parent, pairs, on_error=app_ctx.out.debug)


def upload_command(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE", help="Video files to upload.", show_default=False)
    ],
    concurrency: opts.PartConcurrency = 4,
    new: Annotated[
        bool, typer.Option("--new", help="Start a fresh upload session instead of resuming one.")
    ] = False,
    old_concurrency: opts.OldConcurrency = None,
) -> None:
    """Upload files in resumable chunks and print one upload id per file."""
    app_ctx = get_ctx(ctx)
    out = app_ctx.out
    concurrency = shared.check_concurrency(shared.pick_concurrency(concurrency, old_concurrency))
    files = check_input_files(files)
    for path, result in upload_files(app_ctx, files, concurrency=concurrency, new=new):
        if out.json:
            out.emit(
                {
                    "file": str(path),
                    "upload_id": result.upload_id,
                    "sha256": result.sha256,
                    "bytes": result.bytes,
                }
            )
        else:
            out.fields(result.upload_id, path)
