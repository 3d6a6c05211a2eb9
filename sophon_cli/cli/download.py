"""`sophon download` (placeholder until the command lands)."""

from __future__ import annotations

import typer


def download_command(ctx: typer.Context) -> None:
    typer.echo("error: `sophon download` is not yet available", err=True)
    raise typer.Exit(1)
