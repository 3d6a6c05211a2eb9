"""`sophon encode` (placeholder until the command lands; owned by the encode pipeline work)."""

from __future__ import annotations

import typer


def encode_command(ctx: typer.Context) -> None:
    typer.echo("error: `sophon encode` is not yet available", err=True)
    raise typer.Exit(1)
