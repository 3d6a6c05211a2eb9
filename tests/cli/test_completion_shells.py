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


def test_bash_completes_the_known_words_of_an_argument():
    assert _bash_complete("sophon", "completions", "") == ["bash", "zsh", "fish"]
    assert _bash_complete("sophon", "completions", "z") == ["zsh"]
    assert _bash_complete("sophon", "config", "set", "ti") == ["timeout"]
    assert _bash_complete("sophon", "config", "set", "--profile", "ci", "max") == ["max_retries"]
    assert _bash_complete("sophon", "config", "set", "timeout", "") == []


def test_bash_completes_documented_option_values():
    assert sorted(_bash_complete("sophon", "encode", "--fallback", "")) == ["copy", "fail", "skip"]
    assert _bash_complete("sophon", "job", "create", "--container", "m") == ["mp4", "mkv"]


# the words a user has typed -> what each shell offers: recent job ids only where a job id goes,
# file names for files and option values, nothing where nothing fits (`job get` took ids twice)
_PLACES = [
    (["job", "get", ""], "ids"),
    (["job", "get", "job_a1", ""], "nothing"),
    (["job", "wait", "job_a1", ""], "ids"),
    (["download", "job_a1", ""], "nothing"),
    (["download", "-o", ""], "files"),
    (["job", "get", "--interval", ""], "files"),
    (["uploads", "get", ""], "nothing"),  # an upload id: none kept, and no file is one
    (["upload", ""], "files"),
    (["completions", ""], ["bash", "zsh", "fish"]),  # the known words of an argument (were files)
    (
        ["config", "set", ""],
        ["base_url", "timeout", "max_retries", "retry_budget", "stall_seconds", "min_rate"],
    ),
    (["config", "set", "timeout", ""], "nothing"),
]
_IDS = ["job_a1", "job_a2", "job_b"]


def _home_with_recent_jobs(tmp_path: Path) -> Path:
    (tmp_path / "recent-jobs").write_text("".join(f"{i}\n" for i in _IDS))
    (tmp_path / "a-file.mp4").write_text("")
    return tmp_path


def test_zsh_offers_job_ids_only_where_a_job_id_goes(tmp_path):
    exe = shutil.which("zsh")
    if exe is None:
        pytest.skip("zsh is not installed")
    home = _home_with_recent_jobs(tmp_path)
    # zsh's completion builtins stand in as functions that say what they were asked to offer
    script = "\n".join(
        [
            'compadd() { [[ $1 == -- ]] && shift; print -r -- "ids $*"; }',
            "_files() { print -r -- files; }",
            "_describe() { print -r -- commands; }",
            f"source {COMPLETIONS / '_sophon'} >/dev/null",
            'words=(sophon "$@"); CURRENT=${#words}; _sophon || true',
        ]
    )
    for words, offered in _PLACES:
        out = subprocess.run(
            [exe, "-f", "-c", script, "zsh", *words],
            capture_output=True, text=True, env={"SOPHON_HOME": str(home), "PATH": "/nonexistent"},
            cwd=home, check=True,
        ).stdout.strip()  # fmt: skip
        if isinstance(offered, list):
            expected = "ids " + " ".join(offered)  # compadd offers them
        else:
            expected = {"ids": "ids " + " ".join(_IDS), "files": "files", "nothing": ""}[offered]
        assert out == expected, (words, out)


def test_fish_offers_job_ids_only_where_a_job_id_goes(tmp_path):
    exe = shutil.which("fish")
    if exe is None:
        pytest.skip("fish is not installed")
    home = _home_with_recent_jobs(tmp_path)
    lines = [f"source {COMPLETIONS / 'sophon.fish'}"]
    for words, _ in _PLACES:
        lines += [f"complete -C {' '.join(['sophon', *words])!r}", "echo ---"]
    out = subprocess.run(
        [exe, "--no-config", "-c", "\n".join(lines)],
        capture_output=True, text=True, env={"SOPHON_HOME": str(home), "HOME": str(home)}, cwd=home,
        check=True,
    ).stdout  # fmt: skip
    for (words, offered), part in zip(_PLACES, out.split("---"), strict=False):
        got = sorted(line.split("\t")[0] for line in part.strip().splitlines())
        if isinstance(offered, list):
            expected = sorted(offered)
        else:
            expected = {"ids": _IDS, "files": ["a-file.mp4", "recent-jobs"], "nothing": []}[offered]
        assert got == expected, (words, got)
