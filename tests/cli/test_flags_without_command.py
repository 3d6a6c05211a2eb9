"""Global flags with no command after them.

- ``sophon --jq job list``: the command name was taken as the jq expression, then "No such command
  'list'". Said as what it is: --jq needs an expression (after the command), exit 2.
- ``sophon --json`` (or another global flag) and no command: the help, as ``sophon`` alone prints
  it (stdout, exit 0), as gh does for valid flags and no command; it was "Missing command", exit 2.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli.helpers import assert_one_line_error, cli_env


def _run(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "sophon_cli", *args],
        env=cli_env(home=tmp_path, extra={"SOPHON_BASE_URL": "http://127.0.0.1:9"}),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "example"),
    [
        (["--jq", "job", "list"], "sophon job list --jq '.[].id'"),
        (["--jq", "job", "list", "--limit", "5"], "sophon job list --limit 5 --jq '.[].id'"),
        (["--json", "--jq", "webhooks", "list"], "sophon webhooks list --jq '.[].id'"),
        (["--jq", "job", "get", "job_1"], "sophon job get job_1 --jq '.'"),
        (["--jq", "download", "job_1"], "sophon download job_1 --jq '.'"),
        (["--jq", "health"], "sophon health --jq '.'"),
    ],
)
def test_a_command_name_after_jq_says_jq_needs_an_expression(tmp_path, args, example):
    line = assert_one_line_error(_run(tmp_path, *args), 2, "--jq takes a jq expression", example)
    assert "No such command" not in line and "Missing command" not in line


def test_a_real_expression_before_the_command_still_works_as_before(tmp_path):
    # `--jq job` followed by a word that is no subcommand of job: not taken for the mistake
    line = assert_one_line_error(_run(tmp_path, "--jq", "job", "frobnicate"), 2, "No such command")
    assert "--jq takes" not in line


@pytest.mark.parametrize(
    "args", [["--json"], ["-q"], ["--no-progress", "--json"], ["--json", "job"], ["job", "--json"]]
)
def test_global_flags_and_no_command_print_the_help_like_the_command_alone(tmp_path, args):
    words = [a for a in args if not a.startswith("-")]
    res = _run(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert res.stdout == _run(tmp_path, *words, "--help").stdout
    assert res.stdout.startswith(f"Usage: sophon {' '.join(words)}".rstrip() + " ")
