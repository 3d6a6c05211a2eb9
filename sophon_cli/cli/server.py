"""`sophon server`: run the local SOPHON-compatible server in the foreground.

Importing this module loads only typer; the server (starlette, uvicorn, PyAV) is imported when the
command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sophon_cli.server.config import RETENTION, UPLOAD_TTL  # stdlib only: no server dependencies


def _default_data_dir() -> Path:
    from sophon_cli.local import default_data_dir

    return default_data_dir()


def _delays(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise typer.BadParameter("use comma-separated seconds, e.g. 10,60") from None
    if not values or any(v < 0 for v in values):
        raise typer.BadParameter("use comma-separated non-negative seconds, e.g. 10,60")
    return values


def server_command(
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port (0 picks a free one).")] = 8765,
    data_dir: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional on py3.10
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="State directory [default: $SOPHON_HOME/server or the user data dir].",
        ),
    ] = None,
    api_key: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--api-key",
            metavar="KEY",
            help="Accepted API key (repeatable) [env SOPHON_SERVER_API_KEYS, comma-separated]; "
            "default: a key generated and stored 0600 in the data dir.",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", metavar="N", min=1, help="Parallel encode workers.")
    ] = 1,
    chunk_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--chunk-size",
            metavar="BYTES",
            min=1,
            help="Override the upload chunk size in bytes (for tests).",
        ),
    ] = None,
    faults: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--faults",
            metavar="SPEC",
            help="Fault injection rules, e.g. 'PUT /v1/uploads/*/parts/*=reset:0.02,*=429:0.05:retry-after=1'.",
        ),
    ] = None,
    faults_seed: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--faults-seed", metavar="N", help="Seed for repeatable fault injection."),
    ] = None,
    allow_insecure_webhooks: Annotated[
        bool,
        typer.Option("--allow-insecure-webhooks", help="Accept http:// and private/loopback webhook URLs."),
    ] = False,
    webhook_retry_delays: Annotated[
        str,
        typer.Option(
            "--webhook-retry-delays", metavar="SECONDS,...", help="Seconds between delivery attempts."
        ),
    ] = "10,60",
    upload_ttl: Annotated[
        float,
        typer.Option(
            "--upload-ttl",
            metavar="SECONDS",
            min=0.001,
            help="How long an upload can be completed and used by new jobs [default: 86400, 24 h].",
            show_default=False,
        ),
    ] = UPLOAD_TTL,
    retention: Annotated[
        float,
        typer.Option(
            "--retention",
            metavar="SECONDS",
            min=0.001,
            help="How long a job's output stays downloadable [default: 604800, 7 days].",
            show_default=False,
        ),
    ] = RETENTION,
    idle_timeout: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--idle-timeout",
            metavar="SECONDS",
            help="Exit after this many seconds without requests or active jobs.",
        ),
    ] = None,
    request_log: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--request-log", metavar="FILE", help="Append one JSON object per request to this file."
        ),
    ] = None,
    quiet_requests: Annotated[
        bool, typer.Option("--no-request-log-lines", help="Do not print one line per request on stderr.")
    ] = False,
) -> None:
    """Run the local SOPHON-compatible server (real HEVC encodes via ffmpeg)."""
    from sophon_cli.server.config import ServerConfig
    from sophon_cli.server.faults import FaultSpecError, parse_faults
    from sophon_cli.server.runner import serve

    try:
        parse_faults(faults)
    except FaultSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {host}, reachable beyond this machine", err=True)
    config = ServerConfig(
        data_dir=data_dir or _default_data_dir(),
        api_keys=list(api_key or []),
        host=host,
        port=port,
        workers=workers,
        chunk_size=chunk_size,
        faults=faults,
        faults_seed=faults_seed,
        allow_insecure_webhooks=allow_insecure_webhooks,
        webhook_retry_delays=_delays(webhook_retry_delays),
        request_log=request_log,
        log_requests=not quiet_requests,
        idle_timeout=idle_timeout,
        upload_ttl=upload_ttl,
        retention=retention,
    )
    try:
        code = serve(config, announce=lambda text: typer.echo(text, err=True))
    except OSError as exc:
        typer.echo(
            f"error: cannot start the server on {host}:{port}: {exc.strerror or exc}; try --port 0", err=True
        )
        raise typer.Exit(1) from None
    raise typer.Exit(code)


if __name__ == "__main__":  # python -m sophon_cli.cli.server (used by sophon_cli.local)
    typer.run(server_command)
