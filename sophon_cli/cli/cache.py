"""`sophon cache list|prune|clear`: the local resume cache behind `sophon encode`.

The cache only saves work (hashing, status calls); the server's idempotency keys are what prevent
duplicate uploads and jobs, so clearing it is always safe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sophon_cli.cli.context import get_ctx

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
    from sophon_cli.state import StateStore

    app_ctx = get_ctx(ctx)
    return StateStore(state_file or app_ctx.state_path, on_warning=app_ctx.out.warn)


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


@app.command("list")
def list_(ctx: typer.Context, state_file: StateFileOption = None) -> None:
    """List cached files: state, result, job and output (--json: one entry per line)."""
    import time

    out = get_ctx(ctx).out
    store = _store(ctx, state_file)
    entries = store.load()
    ordered = sorted(entries.items(), key=lambda kv: kv[1].get("updated_at") or 0)
    if out.json:
        for key, entry in ordered:
            out.emit({"key": key, **entry})
        return
    now = time.time()
    rows = []
    for key, e in ordered:
        rows.append(
            (
                e.get("path") or key.split("|", 1)[0],
                e.get("state", "-"),
                e.get("result") or "-",
                e.get("job_id") or "-",
                e.get("output") or "-",
                _age(now - float(e.get("updated_at") or now)),
            )
        )
    out.table(["file", "state", "result", "job", "output", "updated"], rows)
    out.notice(f"{len(rows)} entries in {store.path}")


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
    from sophon_cli.client.errors import InputError

    if older_than < 0:
        raise InputError("--older-than must be 0 or more days", hint="e.g. --older-than 30")
    out = get_ctx(ctx).out
    store = _store(ctx, state_file)
    dropped = store.prune(older_than * 86400.0)
    if out.json:
        out.emit({"pruned": len(dropped), "remaining": len(store), "state_file": str(store.path)})
    else:
        out.print(f"pruned {len(dropped)} entries ({len(store)} left) in {store.path}")


@app.command("clear")
def clear(ctx: typer.Context, state_file: StateFileOption = None) -> None:
    """Remove every entry (safe: a rerun finds its uploads and jobs again by idempotency key)."""
    out = get_ctx(ctx).out
    store = _store(ctx, state_file)
    removed = store.clear()
    if out.json:
        out.emit({"cleared": removed, "state_file": str(store.path)})
    else:
        out.print(f"cleared {removed} entries from {store.path}")
