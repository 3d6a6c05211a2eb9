"""Asking before a destructive action: on a terminal only; ``--yes`` skips the question.

Without a terminal on stdin and stderr the command never prompts: it acts as asked (scripts and CI
keep working). A declined question is exit 1 with a one-line notice (nothing was done).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sophon_cli.client.errors import SophonError

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation on a terminal.")]


class Declined(SophonError):
    """The user answered no: nothing was done (exit 1)."""


def interactive() -> bool:
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or missing streams
        return False


def confirm(question: str, *, yes: bool = False) -> None:
    """Return when the action may go ahead; raise :class:`Declined` when the user said no."""
    if yes or not interactive():
        return
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:  # said "run the same command again to resume": nothing had begun
        from sophon_cli.cli.shared import Interrupted

        raise Interrupted("interrupted; nothing was done") from None
    if not answer.endswith("\n"):  # EOF (Ctrl-D): end the prompt's line
        sys.stderr.write("\n")
    if answer.strip().lower() not in ("y", "yes"):
        raise Declined("not confirmed; nothing was done", hint="answer y, or pass --yes to skip the question")
