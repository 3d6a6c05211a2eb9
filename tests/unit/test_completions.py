"""The static completion scripts match the command tree and complete without starting Python."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from sophon_cli.cli.completions import _all, build_tree, render_all

ROOT = Path(__file__).resolve().parents[2]
COMPLETIONS = ROOT / "completions"


def test_completion_files_match_the_command_tree():
    rendered = render_all()
    for name, text in rendered.items():
        path = COMPLETIONS / name
        assert path.exists(), f"{path} missing; run python scripts/gen_completions.py"
        assert path.read_text() == text, (
            f"{name} drifted from the command tree; run python scripts/gen_completions.py"
        )


def test_every_command_path_and_option_is_in_every_script():
    tree = build_tree()
    texts = {name: (COMPLETIONS / name).read_text() for name in render_all()}
    for node in _all(tree):
        for text in texts.values():
            if node.path:
                assert node.path[-1] in text
            for opt in node.options:
                assert opt.lstrip("-") in text


def test_tree_has_the_documented_commands():
    tree = build_tree()
    paths = {node.key for node in _all(tree)}
    for expected in [
        "/upload",
        "/uploads/get",
        "/uploads/cancel",
        "/job/create",
        "/job/get",
        "/job/list",
        "/job/cancel",
        "/job/wait",
        "/download",
        "/webhooks/create",
        "/webhooks/list",
        "/webhooks/delete",
        "/webhooks/verify",
        "/webhooks/listen",
        "/encode",
        "/server",
        "/health",
        "/config/show",
        "/config/set",
        "/config/set-key",
    ]:
        assert expected in paths


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
