"""`sophon job` (placeholder until the commands land)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


def _not_yet(name: str) -> None:
    typer.echo(f"error: `sophon job {name}` is not yet available", err=True)
    raise typer.Exit(1)


@app.command("create")
def create() -> None:
    """Create an encoding job."""
    _not_yet("create")


@app.command("get")
def get(job_id: str) -> None:
    """Show a job."""
    _not_yet("get")


@app.command("list")
def list_() -> None:
    """List jobs, newest first."""
    _not_yet("list")


@app.command("cancel")
def cancel(job_id: str) -> None:
    """Cancel a job."""
    _not_yet("cancel")


@app.command("wait")
def wait(job_ids: list[str]) -> None:
    """Wait for jobs to finish."""
    _not_yet("wait")
