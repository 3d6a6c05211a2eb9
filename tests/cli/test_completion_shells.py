"""The static completion scripts in real shells: bash completes with its builtins alone (PATH
points nowhere, so no Python and no sophon start), zsh and fish parse theirs, fish completes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPLETIONS = ROOT / "completions"


def _bash_complete(*words: str) -> list[str]:
    script = (
        f"source {COMPLETIONS / 'sophon.bash'}\n"
        'COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _sophon; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    # PATH points nowhere: completion must work with shell builtins alone (no python, no sophon).
    out = subprocess.run(
        ["/bin/bash", "-c", script, "bash", *words],
        capture_output=True,
        text=True,
        env={"PATH": "/nonexistent"},
        check=True,
    )
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="bash not installed")
def test_bash_completes_subcommands_and_options_without_python():
    assert _bash_complete("sophon", "jo") == ["job"]
    assert sorted(_bash_complete("sophon", "job", "c")) == ["cancel", "create"]
    assert "wait" in _bash_complete("sophon", "--json", "job", "")
    assert _bash_complete("sophon", "config", "set", "--pr") == ["--profile"]
    # arguments of leaf commands fall back to file names
    assert _bash_complete("sophon", "upload", "") == []
    # values the API's enum allows, not file names
    assert _bash_complete("sophon", "job", "list", "--status", "f") == ["failed"]
    assert len(_bash_complete("sophon", "job", "list", "--status", "")) == 8


@pytest.mark.parametrize(
    "shell,name,flag", [("zsh", "_sophon", "-n"), ("fish", "sophon.fish", "--no-execute")]
)
def test_other_shells_parse_their_scripts(shell, name, flag):
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    subprocess.run([exe, flag, str(COMPLETIONS / name)], check=True)


def test_fish_completes_subcommands_and_options():
    exe = shutil.which("fish")
    if exe is None:
        pytest.skip("fish is not installed")
    script = (
        f"source {COMPLETIONS / 'sophon.fish'}\n"
        "complete -C 'sophon jo'\necho ---\ncomplete -C 'sophon job '\necho ---\ncomplete -C 'sophon config set --p'\n"
    )
    out = subprocess.run(
        [exe, "--no-config", "-c", script], capture_output=True, text=True, check=True
    ).stdout
    first, second, third = (part.strip().splitlines() for part in out.split("---"))
    assert [line.split("\t")[0] for line in first] == ["job"]
    assert {line.split("\t")[0] for line in second} == {"create", "get", "list", "cancel", "wait"}
    assert [line.split("\t")[0] for line in third] == ["--profile"]


def test_bash_completes_documented_option_values():
    assert sorted(_bash_complete("sophon", "encode", "--fallback", "")) == ["copy", "fail", "skip"]
    assert _bash_complete("sophon", "job", "create", "--container", "m") == ["mp4", "mkv"]
