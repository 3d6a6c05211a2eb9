"""`sophon server`: run the local SOPHON-compatible server in the foreground;
`sophon server status|stop`: the server running on a data dir (the background ``--local`` one by
default).

Importing this module loads only typer; the server (starlette, uvicorn, PyAV) is imported when the
server runs, and ``status``/``stop`` need only the stdlib and filelock.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from sophon_cli.cli.context import get_ctx
from sophon_cli.exitcodes import ExitCode
from sophon_cli.server.config import RETENTION, UPLOAD_TTL  # stdlib only: no server dependencies

if TYPE_CHECKING:
    from sophon_cli.server.runner import Listening, ServerEvent

app = typer.Typer(invoke_without_command=True, no_args_is_help=False)

DataDirOption = Annotated[
    Optional[Path],  # noqa: UP045 - typer needs Optional on py3.10
    typer.Option(
        "--data-dir",
        metavar="DIR",
        help="State directory [default: $SOPHON_HOME/server or the user data dir].",
    ),
]


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
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port (0 picks a free one).")] = 8765,
    data_dir: DataDirOption = None,
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
    """Run the local SOPHON-compatible server (real HEVC encodes via ffmpeg).

    `sophon server status` and `sophon server stop` report on and stop the server of a data dir.
    """
    if ctx.invoked_subcommand is not None:
        return
    from sophon_cli.server.config import ServerConfig
    from sophon_cli.server.faults import FaultSpecError, parse_faults
    from sophon_cli.server.instance import BindError, DataDirInUse
    from sophon_cli.server.runner import serve

    try:
        parse_faults(faults)
    except FaultSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    if not 0 <= port <= 65535:  # as `webhooks listen` says it (bind() raised OverflowError)
        from sophon_cli.client.errors import InputError

        raise InputError(f"--port must be 0-65535 (got {port})", hint="e.g. --port 8765, or 0 for a free one")
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
        code = serve(config, on_event=_Announcer(config))
    except DataDirInUse as exc:
        raise _refused(exc, config.data_dir) from None
    except BindError as exc:
        raise _refused(exc, config.data_dir) from None
    raise typer.Exit(code)


class _Announcer:
    """What ``serve()`` tells (its events' lines), on stderr; after :class:`Listening` one more
    line: how to use the server from another shell. :class:`Stopped` comes on a fresh line unless
    the server stopped for being idle (after a Ctrl-C it read "^Csophon local server stopped")."""

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        self.config = config

    def __call__(self, event: ServerEvent) -> None:
        from sophon_cli.cli.output import interrupt_line
        from sophon_cli.server.runner import Listening, Stopped, StopReason

        fresh_line = isinstance(event, Stopped) and event.reason is not StopReason.IDLE
        for text in event.lines():
            if fresh_line:
                interrupt_line(text)  # after a Ctrl-C (or a SIGTERM: then a blank line before it)
            else:
                typer.echo(text, err=True)
        if isinstance(event, Listening):
            typer.echo(self.connect_step(event), err=True)

    def connect_step(self, listening: Listening) -> str:
        """The next step: ``--local`` where it finds this server and its key (the default data dir
        and its key file), else the URL and where the key is (the file, or the keys given)."""
        import os
        import shlex

        from sophon_cli.cli.hints import SERVER_STEPS
        from sophon_cli.server.config import KEYS_ENV

        config = self.config
        url, key_file = listening.url, listening.key_file
        if key_file is None:
            given = "--api-key" if config.api_keys else KEYS_ENV
            return SERVER_STEPS["connect_given_keys"].format(url=url, given=given)
        if Path(config.data_dir).resolve() == _default_data_dir().resolve():
            home = os.environ.get("SOPHON_HOME")
            return SERVER_STEPS["connect_local"].format(
                env=f"SOPHON_HOME={shlex.quote(home)} " if home else ""
            )
        return SERVER_STEPS["connect_key_file"].format(url=url, key_file=shlex.quote(str(key_file)))


def _dir_flag(data_dir: Path) -> str:
    """`` --data-dir DIR`` unless ``data_dir`` is the default one."""
    return "" if data_dir == _default_data_dir().resolve() else f" --data-dir {data_dir}"


def _refused(exc: Exception, data_dir: Path) -> Exception:
    """A start-up refusal (data dir held, port taken) as the one-line usage error (exit 2)."""
    from sophon_cli.cli.hints import SERVER_STEPS
    from sophon_cli.client.errors import InputError
    from sophon_cli.local import server_answers
    from sophon_cli.server.instance import BindError, url_for

    if isinstance(exc, BindError):
        if not exc.in_use:
            return InputError(str(exc), hint=SERVER_STEPS["cannot_listen"])
        answering = server_answers(url_for(exc.host, exc.port))
        return InputError(
            str(exc), hint=SERVER_STEPS["port_in_use_by_server" if answering else "port_in_use"]
        )
    state = getattr(exc, "state", None)
    url = state.url if state is not None and state.url else None
    step = SERVER_STEPS["data_dir_in_use_at" if url else "data_dir_in_use"]
    return InputError(str(exc), hint=step.format(url=url, data_dir=_dir_flag(data_dir)))


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _status_doc(status) -> dict:
    return {
        "running": status.running,
        "healthy": status.healthy,
        "url": status.url,
        "pid": status.pid,
        "started_at": _iso(status.started_at),
        "data_dir": str(status.data_dir),
    }


@app.command("status")
def status_command(ctx: typer.Context, data_dir: DataDirOption = None) -> None:
    """Show the server on a data dir; exit 3 if none runs.

    The data dir defaults to the one --local uses.
    """
    from sophon_cli.local import local_server_status

    out = get_ctx(ctx).out
    st = local_server_status(data_dir)
    if not st.running:
        state = "not running"
    elif st.healthy:
        state = "running"
    else:
        state = "running, not answering" if st.url else "starting"
    rows = [("status", state), ("url", st.url), ("pid", st.pid), ("started", _iso(st.started_at))]
    out.record(_status_doc(st), [(k, v) for k, v in rows if v is not None] + [("data dir", st.data_dir)])
    if not st.running:
        raise typer.Exit(ExitCode.NOT_FOUND)


@app.command("stop")
def stop_command(
    ctx: typer.Context,
    data_dir: DataDirOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", min=0.1, help="How long to wait for it to stop.")
    ] = 20.0,
) -> None:
    """Stop the server on a data dir (default: --local's).

    Nothing running is exit 0 with a notice. The server finishes the requests in flight and gives running jobs back to the queue (they resume on
    the next start).
    """
    from sophon_cli.cli.hints import SERVER_STEPS
    from sophon_cli.client.errors import WaitTimeoutError
    from sophon_cli.local import StopTimeout, stop_local_server

    out = get_ctx(ctx).out
    try:
        st = stop_local_server(data_dir, timeout=timeout)
    except StopTimeout as exc:
        st = exc.status
        if st.pid is None:
            raise WaitTimeoutError(
                f"the server on {st.data_dir} did not record its pid",
                hint=SERVER_STEPS["stop_unknown_pid"],
            ) from None
        raise WaitTimeoutError(str(exc), hint=SERVER_STEPS["stop_timeout"].format(pid=st.pid)) from None
    if out.json:
        out.emit({**_status_doc(st), "running": False, "stopped": st.running})
    elif st.running:
        out.print(f"stopped the server on {st.url or st.data_dir} (pid {st.pid})")
    else:
        out.notice(f"no server is running on {st.data_dir}; nothing to stop")


def _main() -> None:  # python -m sophon_cli.cli.server (how sophon_cli.local starts it)
    from sophon_cli.cli.errors import report

    try:
        typer.run(server_command)
    except Exception as exc:  # one line in the server log, as from `sophon server`
        sys.exit(report(exc))


app.callback(invoke_without_command=True)(server_command)

if __name__ == "__main__":
    _main()
