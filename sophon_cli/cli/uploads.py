"""`sophon uploads` (placeholder until the commands land)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


def _not_yet(name: str) -> None:
    typer.echo(f"error: `sophon uploads {name}` is not yet available", err=True)
    raise typer.Exit(1)


@app.command("get")
def get(upload_id: str) -> None:
    """Show an upload session."""
    _not_yet("get")


@app.command("cancel")
def cancel(upload_id: str) -> None:
    """Cancel an upload session and delete its staged data."""
    _not_yet("cancel")
