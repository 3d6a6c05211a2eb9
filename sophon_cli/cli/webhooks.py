"""`sophon webhooks` (placeholder until the commands land)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


def _not_yet(name: str) -> None:
    typer.echo(f"error: `sophon webhooks {name}` is not yet available", err=True)
    raise typer.Exit(1)


@app.command("create")
def create(url: str) -> None:
    """Register a webhook."""
    _not_yet("create")


@app.command("list")
def list_() -> None:
    """List webhooks."""
    _not_yet("list")


@app.command("delete")
def delete(webhook_id: str) -> None:
    """Deactivate a webhook."""
    _not_yet("delete")


@app.command("verify")
def verify() -> None:
    """Verify a delivery's signature."""
    _not_yet("verify")


@app.command("listen")
def listen() -> None:
    """Receive deliveries locally."""
    _not_yet("listen")
