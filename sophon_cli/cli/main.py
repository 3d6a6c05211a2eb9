"""The ``sophon`` entry point: root app, global options and the one error boundary.

Importing this module loads typer/click and the command modules (which import only typer and the
standard library at top level); httpx, pydantic, rich and starlette are loaded by the commands that
need them. ``tests/test_startup.py`` keeps it that way.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sophon_cli import __version__
from sophon_cli.cli import (
    cache,
    config,
    download,
    encode,
    health,
    job,
    server,
    upload,
    uploads,
    webhooks,
)
from sophon_cli.cli.context import AppContext, GlobalOptions
from sophon_cli.cli.output import Output
from sophon_cli.exitcodes import EXIT_CODE_HELP, ExitCode

HELP = """Command-line tool for the SOPHON HEVC encoding API.

Encode many files in one resumable command (`sophon encode`), or drive the API step by step
(`upload`, `job`, `download`, `webhooks`). `--local` runs everything against an embedded
SOPHON-compatible server that really encodes, no account needed.
"""

app = typer.Typer(
    name="sophon",
    help=HELP,
    epilog=EXIT_CODE_HELP,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sophon {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", metavar="URL", help="API base URL [env SOPHON_BASE_URL; 'local' = local server]."
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", metavar="NAME", help="Config-file profile to use [env SOPHON_PROFILE]."),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print API objects as JSON (NDJSON for streams).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only data and errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print debug notices to stderr.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Never show progress bars.")] = False,
    local: Annotated[
        bool,
        typer.Option("--local", help="Use the embedded local server (started in the background if needed)."),
    ] = False,
) -> None:
    """Global options go before or after the command (flags only after it: --json, -q, -v, --no-progress, --local)."""
    opts = GlobalOptions(base_url, profile, json_output, quiet, verbose, no_progress, local)
    app_ctx = AppContext(
        options=opts,
        out=Output(json_mode=json_output, quiet=quiet, verbose=verbose, progress=not no_progress),
    )
    ctx.obj = app_ctx
    ctx.call_on_close(app_ctx.close)


app.command("upload", help="Upload files in resumable chunks; print their upload ids.")(upload.upload_command)
app.add_typer(uploads.app, name="uploads", help="Inspect or cancel upload sessions.")
app.add_typer(job.app, name="job", help="Create, inspect, list, cancel and wait for encoding jobs.")
app.command("download", help="Download a finished job's output, verified against its sha256.")(
    download.download_command
)
app.command("encode", help="Encode files or globs end to end: upload, encode, download; safe to re-run.")(
    encode.encode_command
)
app.add_typer(webhooks.app, name="webhooks", help="Manage webhooks; verify and receive signed deliveries.")
app.command("health", help="Check that the server is alive, ready, and accepts your key.")(
    health.health_command
)
app.command("server", help="Run the local SOPHON-compatible server (real HEVC encodes via ffmpeg).")(
    server.server_command
)
app.add_typer(config.app, name="config", help="Show and change settings (config profiles, API key).")
app.add_typer(cache.app, name="cache", help="Inspect and prune the local resume cache.")


@app.command("completions")
def completions_command(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")],
) -> None:
    """Print the static completion script for a shell (the same files as in completions/)."""
    from sophon_cli.cli.completions import render_all
    from sophon_cli.client.errors import InputError

    names = {"bash": "sophon.bash", "zsh": "_sophon", "fish": "sophon.fish"}
    if shell not in names:
        raise InputError(f"unknown shell {shell!r}", hint="use bash, zsh or fish")
    typer.echo(render_all()[names[shell]], nl=False)


# Flags that may also be written after the command; moved in front of it before parsing.
_HOISTABLE = {"--json", "--quiet", "-q", "--verbose", "-v", "--no-progress", "--local"}


def hoist_global_flags(args: list[str]) -> list[str]:
    """``sophon job list --json`` == ``sophon --json job list`` (value-less global flags only)."""
    front: list[str] = []
    rest: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            rest.extend(args[i:])
            break
        (front if arg in _HOISTABLE else rest).append(arg)
    return front + rest


INTERRUPTED_MESSAGE = "interrupted; run the same command again to resume"


def _usage_message(exc, click_exc) -> str:
    """A click/typer usage error as one line that names the next step."""
    from sophon_cli.cli.errors import one_line

    msg = one_line(exc.format_message()).rstrip(".")
    if isinstance(exc, click_exc.UsageError):
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path if ctx is not None else "sophon"
        msg = f"{msg}; see '{path} --help'"
    return msg


def main(argv: list[str] | None = None) -> None:
    from typer._click import exceptions as click_exc  # typer vendors click; its minor version is pinned

    from sophon_cli.cli.errors import report

    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=args, prog_name="sophon", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == ExitCode.INTERRUPTED:
            # typer turns a Ctrl-C inside a command into Exit(130); commands that handle it
            # themselves (encode) save their state first and exit the same way.
            sys.stderr.write(INTERRUPTED_MESSAGE + "\n")
    except typer.Abort:
        sys.stderr.write(INTERRUPTED_MESSAGE + "\n")
        code = ExitCode.INTERRUPTED
    except click_exc.NoArgsIsHelpError as exc:
        exc.show()
        code = exc.exit_code
    except click_exc.ClickException as exc:
        code = exc.exit_code
        sys.stderr.write(f"error: {_usage_message(exc, click_exc)}\n")
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED_MESSAGE + "\n")
        code = ExitCode.INTERRUPTED
    except BrokenPipeError:
        code = ExitCode.ERROR
    except Exception as exc:  # the one error boundary
        code = report(exc)
    sys.exit(code)
