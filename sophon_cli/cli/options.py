"""Option definitions shared by several commands: one spelling and one help text each.

What the commands do with the values (checks, metadata, filters, prompts) is in ``cli/shared.py``.
Concurrency is spelled ``-j N`` / ``--concurrency N`` everywhere (``upload``, ``job create``,
``encode``); ``upload``'s old ``-c`` stays as a hidden alias (:data:`OldConcurrency`).
"""

from __future__ import annotations

from typing import Annotated

import typer

Profile = Annotated[
    str, typer.Option("--profile", metavar="PROFILE", help="Encoding profile (the server validates it).")
]
Container = Annotated[
    str | None,
    typer.Option("--container", metavar="mp4|mkv", help="Output container [server default: mp4]."),
]
Audio = Annotated[
    bool | None, typer.Option("--audio/--no-audio", help="Keep the source audio [server default: no].")
]
Height = Annotated[
    int | None, typer.Option("--height", metavar="N", help="Downscale to this height (144-4320).")
]
Webhooks = Annotated[
    list[str] | None,
    typer.Option("--webhook", metavar="WEBHOOK_ID", help="Notify this webhook (repeatable)."),
]
Metadata = Annotated[
    list[str] | None,
    typer.Option("--metadata", metavar="KEY=VALUE", help="Attach metadata; VALUE may be JSON (repeatable)."),
]


Concurrency = Annotated[
    int,
    typer.Option("--concurrency", "-j", metavar="N", help="Transfers at once (1-16)."),
]
PartConcurrency = Annotated[
    int,
    typer.Option("--concurrency", "-j", metavar="N", help="Parts uploaded in parallel per file (1-16)."),
]
#: the old ``upload -c N``: hidden, kept so scripts keep working (``shared.pick_concurrency``)
OldConcurrency = Annotated[int | None, typer.Option("-c", metavar="N", hidden=True)]


def read_option_file(path: str, option: str, *, kind: str) -> bytes:
    """The bytes of a file named by ``option`` (``-`` = stdin); a bad path is one InputError line."""
    import sys
    from pathlib import Path

    from sophon_cli.client.errors import InputError

    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"no such file: {path}", hint=f"check the {option} path") from None
    except IsADirectoryError:
        raise InputError(f"{option} {path} is a directory", hint=f"pass {kind}") from None
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied", hint="fix its permissions") from None
