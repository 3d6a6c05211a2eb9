"""The README stays true: its test command is what CI runs, its exit codes are the enum's."""

from __future__ import annotations

import re
from pathlib import Path

from sophon_cli.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section)


def _is_test_command(cmd: str) -> bool:
    return re.search(r"(^|&& )\.venv/bin/pytest( |$)", cmd) is not None


def test_quickstart_has_an_encode_and_a_test_command():
    cmds = _quickstart_commands()
    assert any("sophon encode --local examples/sample.mp4" in c for c in cmds)
    assert any(_is_test_command(c) for c in cmds)
    assert (ROOT / "examples" / "sample.mp4").exists()


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = next(c for c in _quickstart_commands() if _is_test_command(c))
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()


def test_exit_code_table_matches_the_enum():
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", README, flags=re.M))
    assert sorted(int(k) for k in rows) == sorted(int(c) for c in ExitCode)
