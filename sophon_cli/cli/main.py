"""The ``sophon`` entry point: root app, global options and the one error boundary.

The command tree is built lazily: a run of ``sophon job get ID`` imports and builds only the ``job``
group, and ``sophon --help`` lists the commands from the registry below without building them
(building every command's parameters costs typer tens of milliseconds). ``build_app()`` builds
the whole tree (completions, tests). Importing this module loads typer and nothing heavy; httpx,
pydantic, rich and starlette are loaded by the commands that need them
(``tests/cli/test_startup.py`` keeps it that way).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import types
from typing import Annotated

import typer

from sophon_cli import __version__
from sophon_cli.cli.context import AppContext, GlobalOptions
from sophon_cli.cli.helptext import polish
from sophon_cli.cli.output import Output, PipeClosed
from sophon_cli.exitcodes import EXIT_CODE_HELP, ExitCode

HELP = """Command-line tool for the SOPHON HEVC encoding API.

Encode many files in one resumable command (`sophon encode`), or drive the API step by step
(`upload`, `job`, `download`, `webhooks`). `--local` runs everything against an embedded
SOPHON-compatible server that really encodes, no account needed.
"""

#: (name, module in sophon_cli.cli, attribute, help); attribute "app" is a command group.
COMMANDS: list[tuple[str, str, str, str]] = [
    ("upload", "upload", "upload_command", "Upload files in resumable chunks; print their upload ids."),
    ("uploads", "uploads", "app", "Inspect or cancel upload sessions."),
    ("job", "job", "app", "Create, inspect, list, cancel and wait for encoding jobs."),
    (
        "download",
        "download",
        "download_command",
        "Download a finished job's output, verified against its sha256.",
    ),
    (
        "encode",
        "encode",
        "encode_command",
        "Encode files or globs end to end: upload, encode, download; safe to re-run.",
    ),
    ("compare", "compare", "compare_command", "Score an encode against its source: VMAF, SSIM and PSNR."),
    ("webhooks", "webhooks", "app", "Manage webhooks; verify and receive signed deliveries."),
    ("health", "health", "health_command", "Check that the server is alive, ready, and accepts your key."),
    ("doctor", "doctor", "doctor_command", "Check the setup: config, key, server, clock, ffmpeg, state dir."),
    (
        "server",
        "server",
        "app",
        "Run the local SOPHON-compatible server (real HEVC encodes via ffmpeg); status, stop.",
    ),
    ("config", "config", "app", "Show and change settings (config profiles, API key)."),
    ("cache", "cache", "app", "Inspect and prune the local resume cache."),
    ("completions", "main", "completions_command", "Print the static completion script for a shell."),
    ("version", "main", "version_command", "Show the version (the same as --version)."),
]
COMMAND_NAMES = frozenset(name for name, *_ in COMMANDS)


def _new_root() -> typer.Typer:
    root_app = typer.Typer(
        name="sophon",
        help=HELP,
        epilog=EXIT_CODE_HELP,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    root_app.callback()(root)
    return root_app


def _listed_only() -> None:  # pragma: no cover - never invoked: stands in for help listings
    raise AssertionError("placeholder command invoked")


def build_app(only: str | None = None, *, placeholders: bool = False) -> typer.Typer:
    """The root app with every command (``only=None``), or with just the command ``only`` (``""``:
    none), the others as cheap placeholders carrying their name and help when ``placeholders`` is
    set, which is all the root's help listing needs."""
    root_app = _new_root()
    # typer lists plain commands before groups; placeholders (plain commands) follow the same order
    for name, module, attr, help_text in sorted(COMMANDS, key=lambda c: c[2] == "app"):
        if only is not None and name != only:
            if placeholders:
                root_app.command(name, help=help_text)(_listed_only)
            continue
        mod = (
            sys.modules[__name__] if module == "main" else importlib.import_module(f"sophon_cli.cli.{module}")
        )
        obj = getattr(mod, attr)
        if attr == "app":
            root_app.add_typer(obj, name=name, help=help_text)
        else:
            root_app.command(name, help=help_text)(obj)
    return root_app


def __getattr__(name: str):  # ``app``: the full tree, built on first use
    if name == "app":
        return build_app()
    raise AttributeError(name)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sophon {__version__}")
        raise typer.Exit(0)


def version_command() -> None:
    """Show the version (the same as --version and -V)."""
    typer.echo(f"sophon {__version__}")


def root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."),
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
        bool,
        typer.Option(
            "--json",
            help="Print API objects as JSON (NDJSON for lists and streams); --json id,status keeps only those fields.",
        ),
    ] = False,
    json_fields: Annotated[
        str | None,
        typer.Option(
            "--json-fields",
            metavar="FIELDS",
            hidden=True,  # written `--json id,status`: main() rewrites it to this before parsing
        ),
    ] = None,
    jq: Annotated[
        str | None,
        typer.Option(
            "--jq",
            metavar="EXPR",
            help=(
                "Filter the JSON output through a jq expression (implies --json). A list command's"
                " whole list is one array, as in gh (--jq '.[].id'); a stream's objects go one at a time."
            ),
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only data and errors.")] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            show_default=False,
            help="Print debug notices and each HTTP request to stderr (-vv: headers too).",
        ),
    ] = 0,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Never show progress bars.")] = False,
    local: Annotated[
        bool,
        typer.Option("--local", help="Use the embedded local server (started in the background if needed)."),
    ] = False,
) -> None:
    """Global options go before or after the command (flags only after it: --json, -q, -v, --no-progress, --local)."""
    from sophon_cli.cli.output import parse_json_fields

    fields = parse_json_fields(json_fields) if json_fields is not None else None
    if fields == []:  # `--json=` (or `--json=,`): no field named; it printed plain text
        from sophon_cli.client.errors import InputError

        raise InputError(
            "--json= needs field names (got none)",
            hint="e.g. --json=id,status, or --json alone for the whole objects",
        )
    if fields:
        from sophon_cli.cli.fields import check_fields

        check_fields(ctx.invoked_subcommand, fields)
    json_mode = json_output or bool(fields) or jq is not None
    opts = GlobalOptions(base_url, profile, json_mode, quiet, verbose, no_progress, local)
    app_ctx = AppContext(
        options=opts,
        out=Output(
            json_mode=json_mode,
            quiet=quiet,
            verbose=verbose > 0,
            progress=not no_progress,
            json_fields=fields,
            jq=jq,
        ),
    )
    ctx.obj = app_ctx
    ctx.call_on_close(app_ctx.close)


#: the shells `sophon completions SHELL` has a script for, and its file name in completions/
SHELL_SCRIPTS = {"bash": "sophon.bash", "zsh": "_sophon", "fish": "sophon.fish"}


def completions_command(
    shell: Annotated[
        str | None, typer.Argument(help="bash, zsh or fish.", metavar="SHELL", show_default=False)
    ] = None,
    man: Annotated[bool, typer.Option("--man", help="Print the man page (roff) instead.")] = False,
) -> None:
    """Print the static completion script for a shell (the same files as in completions/), or the
    man page with --man (also shipped as completions/sophon.1)."""
    from sophon_cli.client.errors import InputError

    if man:
        if shell is not None:
            raise InputError(
                "give a SHELL or --man, not both", hint="e.g. sophon completions --man > sophon.1"
            )
        from sophon_cli.cli.manpage import render

        typer.echo(render(), nl=False)
        return
    from sophon_cli.cli.completions import render_all

    names = SHELL_SCRIPTS
    if shell not in names:
        raise InputError(
            f"unknown shell {shell!r}" if shell else "name a shell", hint="use bash, zsh or fish (or --man)"
        )
    typer.echo(render_all()[names[shell]], nl=False)


# Flags that may also be written after the command; moved in front of it before parsing.
_HOISTABLE = {"--json", "--quiet", "-q", "--verbose", "-v", "-vv", "--no-progress", "--local"}
#: global options that take a value and may also follow the command (no command has them)
_HOISTABLE_VALUES = {"--jq", "--json-fields"}
#: global options that must come before the command (a command may have an option of that name)
_FRONT_ONLY = {"--base-url", "--profile", "--version", "-V"}
_FIELD_LIST = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(,[A-Za-z_][A-Za-z0-9_]*)*,?")


def _json_fields_value(args: list[str], i: int, *, stream: bool = False) -> str | None:
    """The FIELDS of ``--json FIELDS`` at ``args[i]`` (gh style), or None when ``--json`` stands
    alone. The next word is FIELDS when it is a comma list, or one name of a field of the API
    objects; a command name or an id (``job_...``) never is. For a ``stream`` command (``encode``,
    which takes no field list) a single word is its argument (``encode --json output`` names a
    directory); a comma list is still read as FIELDS, so it is refused in words."""
    if i + 1 >= len(args):
        return None
    word = args[i + 1]
    if word in COMMAND_NAMES or not _FIELD_LIST.fullmatch(word):
        return None
    if "," in word:
        return word
    if stream:
        return None
    from sophon_cli.cli.fields import KNOWN_FIELDS

    return word if word in KNOWN_FIELDS else None


def hoist_global_flags(args: list[str]) -> list[str]:
    """``sophon job list --json`` == ``sophon --json job list`` (value-less global flags, and
    ``--jq EXPR`` / ``--json FIELDS``, which no command has); ``--json FIELDS`` becomes
    ``--json-fields FIELDS``."""
    from sophon_cli.cli.fields import STREAM_COMMANDS

    stream = command_name(args) in STREAM_COMMANDS
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--json":
            fields = _json_fields_value(args, i, stream=stream)
            if fields is not None:
                front += ["--json-fields", fields]
                i += 2
                continue
            front.append(arg)
        elif arg.startswith("--json="):
            front += ["--json-fields", arg.split("=", 1)[1]]
        elif arg in _HOISTABLE_VALUES and i + 1 < len(args):
            front += [arg, args[i + 1]]
            i += 2
            continue
        elif arg in _HOISTABLE_VALUES:  # a last `--jq` without its value: an empty one, said so
            front.append(f"{arg}=")
        elif arg.split("=", 1)[0] in _HOISTABLE_VALUES and "=" in arg:
            front.append(arg)
        else:
            (front if arg in _HOISTABLE else rest).append(arg)
        i += 1
    return front + rest


INTERRUPTED_MESSAGE = "interrupted; run the same command again to resume"
_VALUE_OPTIONS = {"--base-url", "--profile", "--jq", "--json-fields"}


def command_name(args: list[str]) -> str | None:
    """The subcommand ``args`` invoke (None for root help, --version or an unknown word)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return None
        if arg in _VALUE_OPTIONS:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg if arg in COMMAND_NAMES else None
    return None


_NOT_A_NUMBER = re.compile(
    r"Invalid value for '(?P<opt>-[\w-]+)'(?: / '-\w')?: Input should be a valid (?P<kind>integer|number)"
    r"(?:, unable to parse string as an? (?:integer|number))?"
)


_OUT_OF_RANGE = re.compile(
    r"Invalid value for '(?P<opt>-[\w-]+)'(?: / '-\w')?: Input should be "
    r"(?P<rel>greater than or equal to|less than or equal to|greater than|less than) (?P<bound>\S+)"
)
_RANGE_WORDS = {
    "greater than or equal to": "at least",
    "less than or equal to": "at most",
    "greater than": "more than",
    "less than": "less than",
}


def _given_value(names: set[str], given: list[str]) -> str | None:
    """The value the user gave to the option called one of ``names`` (the last one given)."""
    value = None
    for i, arg in enumerate(given):
        if arg in names and i + 1 < len(given):
            value = given[i + 1]
        elif "=" in arg and arg.split("=", 1)[0] in names:
            value = arg.split("=", 1)[1]
    return value


def _option_names(found: re.Match) -> set[str]:
    names = {found.group("opt")}
    if " / '-" in found.group(0):
        names.add(found.group(0).split(" / '", 1)[1].split("'", 1)[0])
    return names


def _range_message(msg: str, given: list[str]) -> str:
    """typer words a value out of an option's range as pydantic does ("Invalid value for '--workers':
    Input should be greater than or equal to 1"), without the value: said as the commands' own
    checks say it ("--workers must be at least 1 (got 0)")."""
    found = _OUT_OF_RANGE.search(msg)
    if found is None:
        return msg
    value = _given_value(_option_names(found), given)
    got = f" (got {value})" if value is not None else ""
    words = f"{found.group('opt')} must be {_RANGE_WORDS[found.group('rel')]} {found.group('bound')}{got}"
    return msg.replace(found.group(0), words, 1)


def _number_message(msg: str, given: list[str]) -> str:
    """typer words a bad number as pydantic does ("Input should be a valid integer, unable to parse
    string as an integer"), without the value: say which value and what was expected."""
    found = _NOT_A_NUMBER.search(msg)
    if found is None:
        return msg
    opt, kind = found.group("opt"), found.group("kind")
    value = _given_value(_option_names(found), given)
    what = "a whole number" if kind == "integer" else "a number"
    shown = f"{value!r}" if value is not None else "the value"
    return msg.replace(found.group(0), f"{opt} takes {what}, not {shown}", 1)


def _suggest_global_flags(exc, ctx) -> None:
    """A misspelt option after a command is matched against the global flags that may follow it too
    (``job list --josn`` suggested ``--since``, the only close option of ``job list`` itself)."""
    import difflib

    own = [o for p in (ctx.command.params if ctx is not None else []) for o in getattr(p, "opts", [])]
    globals_ = sorted((_HOISTABLE | _HOISTABLE_VALUES) - {"--json-fields", "-vv"})
    name = exc.option_name or ""
    exc.possibilities = difflib.get_close_matches(name, [*own, *globals_], n=3, cutoff=0.7) or None


def _usage_message(exc, click_exc, given: list[str] | None = None) -> str:
    """A click/typer usage error as one line that names the next step."""
    from sophon_cli.cli.errors import one_line

    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "sophon"
    option = getattr(exc, "option_name", None)
    if isinstance(exc, click_exc.NoSuchOption) and option in _FRONT_ONLY and path != "sophon":
        value = " URL" if option == "--base-url" else " NAME" if option == "--profile" else ""
        return (
            f"{option} is a global option: put it before the command, "
            f"e.g. 'sophon {option}{value} {path.removeprefix('sophon ')}'"
        )
    if isinstance(exc, click_exc.NoSuchOption) and path != "sophon":
        _suggest_global_flags(exc, ctx)
    # typer words some checks as pydantic does ("Value error, 'x' is not one of ..."): drop the label
    msg = one_line(exc.format_message()).rstrip(".").replace(": Value error, ", ": ")
    msg = _range_message(_number_message(msg, given or []), given or [])
    if isinstance(exc, click_exc.UsageError):
        if msg.endswith("?"):  # "... Did you mean 'job'?"
            return f"{msg} See '{path} --help'"
        msg = f"{msg}; see '{path} --help'"
    return msg


def _json_word_message(given: list[str], exc) -> str | None:
    """``sophon job list --json colour``: a single word after ``--json`` that is no field name was
    left to the command as an argument, which it does not take. Said as what it is, an unknown
    field, not as "unexpected extra argument (colour)"."""
    from sophon_cli.cli.errors import one_line
    from sophon_cli.cli.fields import FIELDS_BY_COMMAND

    text = exc.format_message()
    if not text.startswith("Got unexpected extra argument"):
        return None
    words = [given[i + 1] for i, arg in enumerate(given[:-1]) if arg == "--json"]
    word = next((w for w in words if f"({w})" in text or f"({w} " in text), None)
    if word is None:
        return None
    ctx = getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "sophon"
    valid = FIELDS_BY_COMMAND.get(command_name(given) or "")
    hint = "valid fields: " + ", ".join(valid) if valid else f"`{path} --json` shows the fields"
    return one_line(f"unknown JSON field {word!r} after --json; {hint}")


def _jq_took_the_command(args: list[str]) -> str | None:
    """``sophon --jq job list``: the command's name was taken as the jq expression and what is left
    ("list") fails as a command. When the word after ``--jq`` is a command name, no command follows,
    and that word with the words after it makes a command (a group's next word is one of its
    commands), say that --jq needs an expression, with the command written the way that works."""
    import shlex

    if command_name(args) is not None or "--jq" not in args[:-1]:
        return None
    i = args.index("--jq")
    word, rest = args[i + 1], args[i + 2 :]
    attr = next((a for n, _m, a, _h in COMMANDS if n == word), None)
    if attr is None:
        return None
    sub = next((a for a in rest if not a.startswith("-")), None)
    if attr == "app":
        group = typer.main.get_command(build_app(word)).commands[word]  # type: ignore[attr-defined]
        if sub not in group.commands:
            return None
    expression = "'.[].id'" if sub == "list" else "'.'"
    command = shlex.join(["sophon", word, *rest])
    return f"--jq takes a jq expression, not the command: put it after the command, e.g. {command} --jq {expression}"


def _flags_only(exc, click_exc) -> bool:
    """``sophon --json``: valid flags and no command. The help, as ``sophon`` alone prints it
    (gh does the same for flags without a command), not "Missing command"."""
    ctx = getattr(exc, "ctx", None)
    return (
        isinstance(exc, click_exc.UsageError)
        and ctx is not None
        and not ctx.args
        and exc.format_message().startswith("Missing command")
    )


def _standard_streams() -> str | None:
    """A closed stdout (``>&-``) is reported once (a closed stdin is left to the commands that
    read it); a closed stderr becomes /dev/null. Returns the error line when stdout is closed."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if sys.stdout is None:
        return "standard output is closed; send it to a file or to /dev/null (e.g. '>/dev/null')"
    return None


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``| head -1``): stop quietly with exit 0 (the reader chose
    to stop; under ``set -o pipefail`` the pipeline keeps its own status). stdout is pointed at
    /dev/null so the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    return ExitCode.OK


_NO_PLUGINS = ("__all__", "1", "true")  # the values pydantic reads as "no plugins at all"


def _no_pydantic_plugins() -> types.ModuleType:
    """What pydantic's ``plugin._loader`` is when plugins are off: ``get_plugins()`` returns none."""
    name = "pydantic.plugin._loader"
    module = types.ModuleType(name)
    module.get_plugins = tuple  # type: ignore[attr-defined]  # () -- pydantic's answer for these values

    def real(attr: str) -> object:
        # anything else a later pydantic asks of its loader comes from the real one, loaded then
        # (not a module's own attributes that tools probe for, such as __file__)
        if attr.startswith("__"):
            raise AttributeError(attr)
        if sys.modules.get(name) is module:
            del sys.modules[name]
        return getattr(importlib.import_module(name), attr)

    module.__getattr__ = real  # type: ignore[attr-defined]  # PEP 562: names not defined here
    return module


def main(argv: list[str] | None = None) -> None:
    from typer._click import exceptions as click_exc  # typer vendors click; its minor version is pinned

    from sophon_cli.cli.errors import report
    from sophon_cli.cli.output import interrupt_line
    from sophon_cli.cli.shared import Interrupted

    closed = _standard_streams()
    if closed is not None:
        sys.stderr.write(f"error: {closed}\n")
        sys.exit(ExitCode.ERROR)
    # httpx imports its own command-line client (rich, pygments, click: ~80 ms) whenever click is
    # installed; this process never uses it, and httpx falls back to a stub when it is absent.
    sys.modules.setdefault("httpx._main", None)
    # pydantic looks for third-party plugins the first time it builds a validator (the settings, a
    # reply model) by reading the entry points of every installed distribution: 5-10 ms before the
    # first request, more in a big environment. sophon uses no pydantic plugin (typer switches them
    # off for its own validators the same way); a value the user set is left alone.
    if os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__") in _NO_PLUGINS:
        # With every plugin off, pydantic's loader returns none, but importing it still imports
        # importlib.metadata (email, zipfile, csv, ...: ~11 ms before the first request).
        sys.modules.setdefault("pydantic.plugin._loader", _no_pydantic_plugins())
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["help"]:  # `sophon help job list` = `sophon job list --help` (as gh and git have it)
        given = [*given[1:], "--help"]
    args = hoist_global_flags(given)
    name = command_name(args)
    # Only the invoked command is built; root help and errors list placeholders with the same help.
    command = polish(typer.main.get_command(build_app(name or "", placeholders=True)))
    try:
        rv = command.main(args=args, prog_name="sophon", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == ExitCode.INTERRUPTED:
            # typer turns a Ctrl-C inside a command into Exit(130); commands that handle it
            # themselves (encode) save their state first and exit the same way.
            interrupt_line(INTERRUPTED_MESSAGE)
    except typer.Abort:
        interrupt_line(INTERRUPTED_MESSAGE)
        code = ExitCode.INTERRUPTED
    except click_exc.NoArgsIsHelpError as exc:
        # `sophon` or `sophon job` alone asks what there is: the help, on stdout, exit 0 (as gh does
        # it; click's default is stderr and exit 2, which read as a failure)
        typer.echo(exc.ctx.get_help())
        code = ExitCode.OK
    except click_exc.ClickException as exc:
        code = exc.exit_code
        jq = _jq_took_the_command(args)
        if jq is None and _flags_only(exc, click_exc):  # `sophon --json`: the help, as `sophon` alone
            typer.echo(exc.ctx.get_help())
            code = ExitCode.OK
        else:
            msg = jq or _json_word_message(given, exc) or _usage_message(exc, click_exc, given)
            sys.stderr.write(f"error: {msg}\n")
    except Interrupted as exc:
        interrupt_line(str(exc))
        code = ExitCode.INTERRUPTED
    except KeyboardInterrupt:
        interrupt_line(INTERRUPTED_MESSAGE)
        code = ExitCode.INTERRUPTED
    except (BrokenPipeError, PipeClosed):
        code = _quiet_broken_pipe()
    except Exception as exc:  # the one error boundary
        code = report(exc)
    sys.exit(code)
