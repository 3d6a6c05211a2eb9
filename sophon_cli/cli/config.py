"""`sophon config`: show and change settings. The API key is read from stdin or a hidden prompt only."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer
from typer.core import TyperCommand

from sophon_cli.cli.context import get_ctx
from sophon_cli.settings import SETTABLE_KEYS

app = typer.Typer(no_args_is_help=True)

#: the names `config set` takes, as its help lists them (settings.py is light: no pydantic at import)
_SETTABLE = ", ".join(SETTABLE_KEYS)

ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", metavar="NAME", help="Config profile to change [default: the active one]."),
]


def _target_profile(ctx: typer.Context, profile: str | None) -> str:
    import os

    from sophon_cli.settings import DEFAULT_PROFILE

    return profile or get_ctx(ctx).options.profile or os.environ.get("SOPHON_PROFILE") or DEFAULT_PROFILE


@app.command("show")
def show(ctx: typer.Context) -> None:
    """Show the effective settings and where each comes from (flag, env, file or default).

    The API key is masked and a password (or token) in the base URL is shown as ****.
    """
    from sophon_cli.setting_sources import Source, describe
    from sophon_cli.settings import config_path

    ac = get_ctx(ctx)
    opts = ac.options
    values = describe(
        ac.settings,
        flags={"base_url": opts.base_url, "profile": opts.profile, "local": opts.local},
        config_file=config_path(),
    )
    files = {"config_file": str(config_path()), "state_file": str(ac.state_path)}
    if ac.out.json:
        data: dict[str, object] = {v.name: v.value for v in values}
        data.update(files)
        data["sources"] = {v.name: {"source": v.source.value, "origin": v.origin or None} for v in values}
        ac.out.emit(data)
        return
    rows = []
    for v in values:
        where = v.source.value if v.source is Source.DEFAULT else f"{v.source.value} {v.origin}"
        rows.append((v.name, f"{v.value}  ({where})"))
    ac.out.kv([*rows, *files.items()])


#: a negative number as a word (``-5``, ``-0.5``, ``-1e3``, ``-inf``): a VALUE, never an option
_NEGATIVE = re.compile(r"-(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|inf(?:inity)?|nan)", re.IGNORECASE)


class _NegativeValues(TyperCommand):
    """``config set timeout -5`` reached click as an unknown option ("No such option: -5") unless
    the user knew to write ``--``: a negative number among the arguments is passed on as an
    argument (behind ``--``, in its place among them), so the value's own check answers."""

    def parse_args(self, ctx, args):  # type: ignore[no-untyped-def]
        valued = {o for p in self.params if getattr(p, "opts", None) and not getattr(p, "is_flag", True)
                  for o in p.opts}  # fmt: skip
        head: list[str] = []
        tail: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                tail += args[i + 1 :]
                break
            if arg in valued and i + 1 < len(args):
                head += args[i : i + 2]
                i += 2
                continue
            # the arguments from the first negative number on keep their order behind `--`
            (tail if _NEGATIVE.fullmatch(arg) or (tail and not arg.startswith("-")) else head).append(arg)
            i += 1
        return super().parse_args(ctx, [*head, "--", *tail] if tail else head)


@app.command("set", cls=_NegativeValues)
def set_value(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help=f"Setting name: {_SETTABLE}.")],
    value: Annotated[str, typer.Argument(help="New value; an empty string removes the setting.")],
    profile: ProfileOpt = None,
) -> None:
    """Set a value in the config file for a profile."""
    from sophon_cli.client.errors import InputError
    from sophon_cli.settings import SETTABLE_KEYS, update_config

    name = key.strip().lower().replace("-", "_")
    if name in ("api_key", "key"):
        raise InputError("the API key is not set from the command line", hint="run `sophon config set-key`")
    if name not in SETTABLE_KEYS:
        raise InputError(f"unknown setting {key!r}", hint=f"use one of: {', '.join(sorted(SETTABLE_KEYS))}")
    parsed: object = None
    if value != "":
        try:
            parsed = SETTABLE_KEYS[name](value)
        except ValueError as exc:
            raise InputError(f"bad value for {name}: {value!r}", hint="give a number") from exc
        _check_number(name, parsed, value)
        if name == "base_url" and value.lower() != "local" and not value.startswith(("http://", "https://")):
            raise InputError(
                f"base_url must start with http:// or https:// (got {value!r})",
                hint="or use 'local' for the local server",
            )
    target = _target_profile(ctx, profile)
    path = update_config(target, {name: parsed})
    get_ctx(ctx).out.notice(f"{'removed' if parsed is None else 'set'} {name} in profile {target!r} ({path})")


#: the lowest value each number may have, and whether it may be that value (settings.Settings'
#: Field bounds: `config set` refuses what would make every later command fail to load its settings)
_LOWEST = {"timeout": (0, False), "max_retries": (0, True), "retry_budget": (0, True),
           "stall_seconds": (0, False), "min_rate": (0, True)}  # fmt: skip


def _check_number(name: str, parsed: object, value: str) -> None:
    import math

    from sophon_cli.client.errors import InputError

    if name not in _LOWEST or not isinstance(parsed, (int, float)):
        return
    low, inclusive = _LOWEST[name]
    if not math.isfinite(parsed) or parsed < low or (parsed == low and not inclusive):
        bound = f"at least {low}" if inclusive else f"more than {low}"
        raise InputError(f"bad value for {name}: {value!r}", hint=f"give a finite number {bound}")


@app.command("set-key")
def set_key(ctx: typer.Context, profile: ProfileOpt = None) -> None:
    """Store the API key for a profile (read from stdin, or a hidden prompt on a terminal)."""
    from sophon_cli.client.errors import InputError
    from sophon_cli.settings import update_config

    stdin = sys.stdin
    try:
        if stdin is None:  # started with stdin closed (`<&-`)
            raise OSError("standard input is closed")
        if stdin.isatty():
            key = typer.prompt("API key", hide_input=True)
        else:
            key = stdin.readline()
    except (OSError, ValueError) as exc:  # ValueError: I/O on a closed file
        raise InputError(
            f"cannot read the API key from standard input ({exc})",
            hint='pipe it in: `printf %s "$KEY" | sophon config set-key`',
        ) from None
    key = key.strip()
    if not key:
        raise InputError("no API key given", hint='pipe it in: `printf %s "$KEY" | sophon config set-key`')
    if any(c.isspace() for c in key) or not key.isprintable():
        raise InputError("the API key contains spaces or control characters", hint="check what you pasted")
    target = _target_profile(ctx, profile)
    path = update_config(target, {"api_key": key})
    get_ctx(ctx).out.notice(f"stored the API key for profile {target!r} in {path} (mode 0600)")


@app.command("path")
def path_cmd(ctx: typer.Context) -> None:
    """Print the config file's path."""
    from sophon_cli.settings import config_path

    get_ctx(ctx).out.print(str(config_path()))
