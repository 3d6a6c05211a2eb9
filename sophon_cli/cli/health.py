"""`sophon health` (placeholder until the command lands)."""

from __future__ import annotations

import typer


def health_command(ctx: typer.Context) -> None:
    typer.echo("error: `sophon health` is not yet available", err=True)
    raise typer.Exit(1)
