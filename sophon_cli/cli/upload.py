"""`sophon upload` (placeholder until the command lands)."""

from __future__ import annotations

import typer


def upload_command(ctx: typer.Context) -> None:
    typer.echo("error: `sophon upload` is not yet available", err=True)
    raise typer.Exit(1)
