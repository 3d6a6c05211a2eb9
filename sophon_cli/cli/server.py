"""`sophon server` (placeholder until the command lands; owned by the local server work)."""

from __future__ import annotations

import typer


def server_command(ctx: typer.Context) -> None:
    typer.echo("error: `sophon server` is not yet available", err=True)
    raise typer.Exit(1)
