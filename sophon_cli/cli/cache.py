"""`sophon cache` (placeholder until the commands land; owned by the encode pipeline work)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List cached entries."""
    typer.echo("error: `sophon cache list` is not yet available", err=True)
    raise typer.Exit(1)
