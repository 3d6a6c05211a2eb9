"""`sophon uploads get|cancel ID`: inspect or cancel an upload session."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sophon_cli.cli.context import get_ctx
from sophon_cli.cli.prompts import YesOpt, confirm

app = typer.Typer(no_args_is_help=True)

UploadIdArg = Annotated[str, typer.Argument(metavar="UPLOAD_ID", help="The upload id (upl_...).")]


def upload_rows(status: Any, when: Any = None, local: str | None = None) -> list[tuple[str, Any]]:
    """``uploads get``'s fields; ``when`` formats timestamps (``Output.when``); ``local`` is the
    local file noted for the upload. Its own name is shown unless it was derived from the content
    (``b78aade545f3f7d5.mp4``, what `sophon` sends), which names no file a person knows."""
    from sophon_cli.cli.output import rfc3339
    from sophon_cli.client.content import is_content_name

    when = when or rfc3339
    received = status.received_chunks or []
    name = local or (status.file_name if not is_content_name(status.file_name) else None)
    rows: list[tuple[str, Any]] = [
        ("id", status.id),
        ("status", status.status),
        ("file", name or "-"),
        ("parts", f"{len(received)} of {status.total_chunks} received"),
        ("expires", when(status.expires_at)),
    ]
    width = getattr(status, "source_width", None)
    height = getattr(status, "source_height", None)
    if width and height:
        rows.append(("resolution", f"{width}x{height}"))
    duration = getattr(status, "source_duration_seconds", None)
    if duration is not None:
        rows.append(("duration", f"{duration:.2f} s"))
    return rows


@app.command("get")
def get(ctx: typer.Context, upload_id: UploadIdArg) -> None:
    """Show an upload session: status, parts received, expiry."""
    from sophon_cli.cli import recent

    app_ctx = get_ctx(ctx)
    status = app_ctx.client().uploads.get(upload_id)
    local = recent.sources(app_ctx.state_path.parent).get(upload_id) if not app_ctx.out.json else None
    app_ctx.out.record(status, upload_rows(status, app_ctx.out.when, local))


@app.command("cancel")
def cancel(ctx: typer.Context, upload_id: UploadIdArg, yes: YesOpt = False) -> None:
    """Cancel an upload session and delete its staged parts (asks first on a terminal)."""
    app_ctx = get_ctx(ctx)
    confirm(f"Cancel upload {upload_id} and delete its parts?", yes=yes)
    app_ctx.client().uploads.cancel(upload_id)
    if app_ctx.out.json:
        app_ctx.out.emit({"id": upload_id, "status": "canceled"})
    else:
        app_ctx.out.fields(upload_id, "canceled")
