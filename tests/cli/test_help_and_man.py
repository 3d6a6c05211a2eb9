"""Help screens, the man page and job-id completion: generated from the command tree, checked over
the whole tree (issue 13)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tree():
    import typer

    from sophon_cli.cli.helptext import polish, walk
    from sophon_cli.cli.main import build_app

    root = polish(typer.main.get_command(build_app()))
    return root, list(walk(root))


def _help(root, path):
    from typer import _click as click

    ctx = click.Context(root, info_name="sophon", max_content_width=100, terminal_width=100)
    cmd = root
    for name in path:
        cmd = cmd.commands[name]
        ctx = click.Context(cmd, info_name=name, parent=ctx)
    return cmd.get_help(ctx)


def test_every_help_screen_is_clean_and_ends_with_examples():
    root, commands = _tree()
    assert len(commands) > 30
    for path, _cmd in commands:
        text = _help(root, path)
        usage = text.splitlines()[0]
        assert usage.startswith("Usage: sophon"), (path, usage)
        for bad in ("{", "[[", "<list[", "<str>", "<path>", "<int>"):
            assert bad not in usage, (path, usage)
        assert "<list[" not in text and "<str>" not in text and "<path>" not in text, (path, text)
        for line in text.splitlines():
            assert line.count("[default:") <= 1, (path, line)
        assert text.count("Examples:") == 1, (path, text)  # not once in the docstring and again
        assert "[default: 0]" not in " ".join(text.split()), (path, text)  # a counter's (-v) zero
        tail = text.rstrip().splitlines()
        examples = [ln.strip() for ln in tail if ln.strip().startswith("$ sophon")]
        assert 1 <= len(examples) <= 3, (path, text)
        if path:
            assert tail[-1].strip().startswith("$ sophon"), (path, tail[-3:])  # the help ends with them


def test_summaries_in_listings_are_whole():
    root, commands = _tree()
    for path, cmd in commands:
        if not getattr(cmd, "commands", None):
            continue
        listing = _help(root, path)
        assert "..." not in listing.split("Commands:", 1)[1].split("Examples:", 1)[0], (path, listing)


def test_argument_names_in_usage_match_the_docs():
    root, _ = _tree()
    assert _help(root, ("encode",)).splitlines()[0] == "Usage: sophon encode [OPTIONS] PATTERN..."
    assert _help(root, ("job", "create")).splitlines()[0] == "Usage: sophon job create [OPTIONS] [FILE]"
    assert _help(root, ("config", "set")).splitlines()[0] == "Usage: sophon config set [OPTIONS] KEY VALUE"
    verify = _help(root, ("webhooks", "verify"))
    assert "[default: stdin]" in verify and "[default: -]" not in verify


def test_real_help_output_is_the_polished_one():
    res = subprocess.run(
        [sys.executable, "-m", "sophon_cli", "job", "create", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0
    assert res.stdout.splitlines()[0] == "Usage: sophon job create [OPTIONS] [FILE]"
    assert "$ sophon job create clip.mp4 --wait" in res.stdout
    root = subprocess.run([sys.executable, "-m", "sophon_cli", "--help"], capture_output=True, text=True)
    assert "verified against its sha256." in root.stdout  # the registry summary, not cut at "..."


def test_man_page_matches_the_tree_and_is_printed_by_completions_man():
    from sophon_cli.cli.manpage import render

    text = render()
    shipped = (ROOT / "completions" / "sophon.1").read_text()
    assert shipped == text, "completions/sophon.1 drifted; run python scripts/gen_completions.py"
    _, commands = _tree()
    for path, _cmd in commands:
        if path:
            assert f".SS sophon {' '.join(path)}".replace("-", "\\-") in text, path
    assert ".SH EXIT STATUS" in text and "130 interrupted" in text
    res = subprocess.run(
        [sys.executable, "-m", "sophon_cli", "completions", "--man"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (res.returncode, res.stdout) == (0, text)
    man = (
        subprocess.run(["man", "-l", "-"], input=text, capture_output=True, text=True)
        if Path("/usr/bin/man").exists()
        else None
    )
    if man is not None and man.returncode == 0:
        assert "sophon job create" in man.stdout


@pytest.mark.skipif(not Path("/bin/bash").exists(), reason="bash not installed")
def test_job_id_arguments_complete_recent_jobs_from_the_state_dir(tmp_path):
    from sophon_cli.cli import recent

    recent.remember(tmp_path, ["job_old"])
    recent.remember(tmp_path, ["job_new1", "job_new2", "job_old"])
    assert recent.read(tmp_path) == ["job_new1", "job_new2", "job_old"]
    assert oct((tmp_path / "recent-jobs").stat().st_mode & 0o777) == "0o600"

    def complete(*words: str) -> list[str]:
        script = (
            f"source {ROOT / 'completions' / 'sophon.bash'}\n"
            'COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _sophon; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        out = subprocess.run(
            ["/bin/bash", "-c", script, "bash", *words],
            capture_output=True,
            text=True,
            env={"PATH": "/nonexistent", "SOPHON_HOME": str(tmp_path)},  # no python, no sophon
            check=True,
        )
        return [w for w in out.stdout.splitlines() if w]

    assert complete("sophon", "job", "get", "") == ["job_new1", "job_new2", "job_old"]
    assert complete("sophon", "job", "get", "job_n") == ["job_new1", "job_new2"]
    assert complete("sophon", "job", "wait", "job_new1", "job_o") == ["job_old"]
    assert complete("sophon", "download", "job_o") == ["job_old"]
    assert complete("sophon", "upload", "") == []  # files, as before
    # only where a job id goes: `job get` takes one (it offered them for a second word too)
    assert complete("sophon", "job", "get", "job_new1", "") == []
    assert complete("sophon", "job", "cancel", "job_new1", "job_") == []
    assert complete("sophon", "download", "job_old", "") == []
    assert complete("sophon", "job", "get", "--interval", "5", "job_o") == ["job_old"]  # a value is no id
    assert complete("sophon", "--json", "job", "get", "--watch", "job_o") == ["job_old"]
    assert complete("sophon", "job", "wait", "job_new1", "job_new2", "job_o") == ["job_old"]
    assert re.search(r"__sophon_recent_jobs", (ROOT / "completions" / "_sophon").read_text())
    assert "__sophon_recent_jobs" in (ROOT / "completions" / "sophon.fish").read_text()


def test_job_commands_record_the_ids_they_show(tmp_path, server, clip):
    """`job get` adds to recent-jobs (what the completion reads)."""
    import os

    from sophon_cli.client.http import SophonClient

    with SophonClient(server.url, server.api_keys[0]) as api:
        up = api.uploads.upload_file(clip)
        job = api.jobs.create(up.upload_id, metadata={"sophon_local_fail": True})
    env = dict(
        os.environ, SOPHON_HOME=str(tmp_path), SOPHON_BASE_URL=server.url, SOPHON_API_KEY=server.api_keys[0]
    )
    res = subprocess.run(
        [sys.executable, "-m", "sophon_cli", "job", "get", job.id], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "recent-jobs").read_text().splitlines()[0] == job.id


def test_readme_names_every_command_with_its_own_profile_option():
    """The README said `--profile` after a command is an error; `encode --profile sophon-espresso`
    is not (an encoding profile), nor `job create`, `config set` and `config set-key`."""
    root, commands = _tree()
    own = {
        " ".join(path)
        for path, cmd in commands
        if path and any("--profile" in getattr(p, "opts", []) for p in cmd.params)
    }
    assert own == {"encode", "job create", "config set", "config set-key"}
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    start = readme.index("`--base-url` and `--profile` placed after the command")
    sentence = readme[start : readme.index(". ", start)]
    for name in own:
        assert f"`{name}`" in sentence or f"`{name.split()[-1]}`" in sentence, (name, sentence)
