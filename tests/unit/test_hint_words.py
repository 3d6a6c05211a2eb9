"""The library never words a hint or message in terms of the command line (DEVELOPERS.md): the flags
and `sophon ...` commands a terminal user is told to try live in ``sophon_cli/cli/hints.py``.

An AST scan of every string constant outside ``sophon_cli/cli/`` (docstrings left out: they document
for developers), plus the words the CLI puts back for the library's data."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sophon_cli.cli.errors import classify
from sophon_cli.next_steps import LocalServerStartError, Option, OptionError, Step, StepInputError
from sophon_cli.state import StateError

PACKAGE = Path(__file__).resolve().parents[2] / "sophon_cli"

#: a flag (` --word`, ` -x `) or a `sophon ...` command (backticked, or a command of the tree)
FLAG_WORDS = re.compile(
    r"(?:^|[\s(\"'`])(--[a-z][a-z0-9-]*|-[a-zA-Z](?=\s|$))|`sophon\b"
    r"|\bsophon (?:upload|encode|job|jobs|download|config|server|cache|doctor|webhooks|compare)\b"
)

#: (module, string) pairs that are no hint: arguments built for a child process, not words
ALLOWED: set[tuple[str, str]] = {
    # local.py starts the background server with these argv words
    ("local.py", "--data-dir"),
    ("local.py", "--port"),
    ("local.py", "--idle-timeout"),
    ("local.py", "--no-request-log-lines"),
    ("local.py", "-m"),  # python -m sophon_cli
    # ffmpeg's arguments
    ("quality/command.py", "-i"),
    ("quality/command.py", "-f"),
    ("server/media.py", "-y"),
    ("server/media.py", "-i"),
    ("server/media.py", "-f"),
    # an idempotency key's generation suffix (``<base>-g2``), no flag at all
    ("client/idempotency.py", "-g"),
    # `config show`'s label of where base_url came from (the flag the user gave), not a next step
    ("setting_sources.py", "--local"),
    # a report's title and markers name the command that made it (data in the file, not a hint)
    ("reports.py", "<!-- sophon encode summary -->"),
    ("reports.py", "sophon encode"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def flag_words_outside_cli(root: Path = PACKAGE) -> list[str]:
    found: list[tuple[str, int, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] == "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docs:
                continue
            if FLAG_WORDS.search(node.value) and (rel.as_posix(), node.value) not in ALLOWED:
                found.append((rel.as_posix(), node.lineno, node.value))
    return [f"{rel}:{line}: {value!r}" for rel, line, value in sorted(found)]


def test_no_module_outside_the_cli_words_a_flag_or_a_sophon_command():
    assert flag_words_outside_cli() == []


def test_the_scan_catches_a_flag_in_a_hint(tmp_path):
    """The scan is not vacuous: a hint naming a flag (the pattern this replaced) is found."""
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "x.py").write_text('H = "pass --recursive"\n')  # the CLI may
    (tmp_path / "lib.py").write_text(
        '"""Docs may say --recursive."""\n'
        'def f():\n    raise ValueError("x", "pass --recursive")\n'
        'G = f"see `sophon server` {1}"\nA = ["-o", "x"]\nB = "then run sophon cache clear"\n'
    )
    found = flag_words_outside_cli(tmp_path)
    assert [f.split(":")[1] for f in found] == ["3", "4", "5", "6"]


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            OptionError(Option.MIN_VMAF, " 150 is out of range", hint="use a score from 0 to 100"),
            "--min-vmaf 150 is out of range; use a score from 0 to 100",
        ),
        (
            OptionError(Option.CONCURRENCY, " must be at least 1", hint="use 1 or more, e.g. 2"),
            "--concurrency must be at least 1; pass e.g. --concurrency 2",
        ),
        (
            OptionError(Option.CONTAINER, " 'avi'", before="unknown ", hint="use mp4 or mkv"),
            "unknown --container 'avi'; use mp4 or mkv",
        ),
        (
            StepInputError("a and b would both be written to x", step=Step.KEEP_LAYOUT, hint="plain"),
            "a and b would both be written to x; use -o with the directory layout kept, or a "
            "--name-template with {name}",
        ),
        (
            StateError("timed out waiting for the state lock /s.lock", step=Step.STATE_BUSY, hint="plain"),
            "timed out waiting for the state lock /s.lock; another sophon process is holding it; wait for "
            "it or pass --state-file",
        ),
        (
            StateError(
                "could not write the state file /s: No space", step=Step.STATE_UNWRITABLE, hint="plain"
            ),
            "could not write the state file /s: No space; check free space and permissions, or pass --state-file",
        ),
        (
            LocalServerStartError(
                "the local server did not start within 15s", data_dir=Path("/d"), log=Path("/d/l")
            ),
            "the local server did not start within 15s; see /d/l, or run `sophon server --data-dir /d` to see why",
        ),
    ],
)
def test_the_cli_words_the_librarys_data_with_its_flags(exc, line):
    assert classify(exc)[1] == line
    assert not FLAG_WORDS.search(str(exc)) and not FLAG_WORDS.search(exc.hint or "")  # plain for the library


def test_every_step_and_option_has_cli_words():
    from sophon_cli.cli.hints import OPTION_FLAGS, STEPS

    assert set(STEPS) == {s.value for s in Step}
    assert set(OPTION_FLAGS) == {o.value for o in Option}


def test_the_options_are_encode_options_fields_and_real_flags():
    """An Option is named as the library names it (an EncodeOptions field, a parameter), and its
    flag is one the CLI has."""
    import dataclasses

    import typer

    from sophon_cli.cli.helptext import walk
    from sophon_cli.cli.hints import OPTION_FLAGS
    from sophon_cli.cli.main import build_app
    from sophon_cli.encode import EncodeOptions

    fields = {f.name for f in dataclasses.fields(EncodeOptions)}
    # the others: expand_inputs(recursive=), the state cache's path, the local server's data dir
    assert {o.value for o in Option} - fields == {"recursive", "state_file", "data_dir"}
    flags = {
        opt
        for _, cmd in walk(typer.main.get_command(build_app()))
        for param in getattr(cmd, "params", [])
        for opt in getattr(param, "opts", [])
    }
    assert set(OPTION_FLAGS.values()) <= flags
