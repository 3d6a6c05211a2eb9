"""`sophon cache list|prune|clear`: the local resume cache behind `sophon encode`.

The cache only saves work (hashing, status calls); the server's idempotency keys are what prevent
duplicate uploads and jobs, so clearing it is always safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sophon_cli.cli.context import get_ctx
from sophon_cli.cli.prompts import YesOpt, confirm

app = typer.Typer(
    no_args_is_help=True,
    help="Inspect and prune the local resume cache of `sophon encode` (clearing it is always safe).",
)

StateFileOption = Annotated[
    Path | None,
    typer.Option(
        "--state-file", metavar="FILE", help="Cache file to use [default: state.json in the state dir]."
    ),
]


def _store(ctx: typer.Context, state_file: Path | None) -> Any:
    from sophon_cli.cli.shared import check_state_file
    from sophon_cli.state import StateStore

    app_ctx = get_ctx(ctx)
    check_state_file(state_file)  # StateStore raised ValueError ("empty name")
    return StateStore(state_file or app_ctx.state_path, on_warning=app_ctx.out.warn)


@app.command("list")
def list_(ctx: typer.Context, state_file: StateFileOption = None) -> None:
    """List cached files: state, result, job and output (--json: one entry per line; --jq: one array)."""
    from sophon_cli.cli.output import plural

    out = get_ctx(ctx).out
    store = _store(ctx, state_file)
    entries = store.load()
    ordered = sorted(entries.items(), key=lambda kv: kv[1].get("updated_at") or 0)
    if out.json:
        out.emit_list(_entry_json(key, entry) for key, entry in ordered)
        return
    rows = []
    for key, e in ordered:
        rows.append(
            (
                e.get("path") or key.split("|", 1)[0],
                e.get("state", "-"),
                e.get("result") or "-",
                e.get("job_id") or "-",
                e.get("output") or "-",
                out.when(e.get("updated_at")),
            )
        )
    # nothing cached: on a terminal the count line alone, no empty table; piped the header stays (a
    # script's `tail -n +2` sees the same shape whatever the count), as `job list` does
    if rows or not out.is_tty:
        out.table(["file", "state", "result", "job", "output", "updated"], rows)
    out.notice(f"{plural(len(rows), 'entry', 'entries')} in {store.path}")


def _entry_json(key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A cache entry as `cache list --json` prints it: its key, and RFC 3339 times."""
    from sophon_cli.cli.output import rfc3339

    data = {"key": key, **entry}
    for stamp in ("created_at", "updated_at"):  # epoch seconds in the cache; RFC 3339 out
        if isinstance(data.get(stamp), (int, float)):
            data[stamp] = rfc3339(data[stamp])
    return data


@app.command("prune")
def prune(
    ctx: typer.Context,
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than", metavar="DAYS", help="Drop finished entries not updated for this many days."
        ),
    ] = 30.0,
    state_file: StateFileOption = None,
) -> None:
    """Drop finished entries (done or failed) older than --older-than days."""
    from sophon_cli.cli.output import plural
    from sophon_cli.client.errors import InputError

    if older_than < 0:
        raise InputError("--older-than must be 0 or more days", hint="e.g. --older-than 30")
    out = get_ctx(ctx).out
    store = _store(ctx, state_file)
    dropped = store.prune(older_than * 86400.0)
    if out.json:
        out.emit({"pruned": len(dropped), "remaining": len(store), "state_file": str(store.path)})
    else:
        out.print(f"pruned {plural(len(dropped), 'entry', 'entries')} ({len(store)} left) in {store.path}")


@app.command("clear")
def clear(ctx: typer.Context, state_file: StateFileOption = None, yes: YesOpt = False) -> None:
    """Remove every entry (safe: a rerun finds its uploads and jobs again by idempotency key)."""
    from sophon_cli.cli.output import plural

    out = get_ctx(ctx).out
    store = _store(ctx, state_file)
    confirm(f"Remove every entry of {store.path}?", yes=yes)
    removed = store.clear()
    if out.json:
        out.emit({"cleared": removed, "state_file": str(store.path)})
    else:
        out.print(f"cleared {plural(removed, 'entry', 'entries')} from {store.path}")
