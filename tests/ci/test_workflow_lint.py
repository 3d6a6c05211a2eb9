"""action.yml, every workflow of the repository and the example workflow pass the GitHub Actions
linters: jactionlint with actionlint's checks (shellcheck on every `run:` script) and zizmor's
security audits. Both run offline; a planted mistake shows they really look."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers.env import child_env

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return path


def _files() -> list[Path]:
    files = [REPO_ROOT / "action.yml", REPO_ROOT / "examples" / "ci" / "github-workflow.yml"]
    files += sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))
    return files


def _env() -> dict:
    return child_env(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # shellcheck next to python


def actionlint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("jactionlint"), "--no-online", "--profile", "correctness", "--no-color", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=REPO_ROOT,
    )


def zizmor(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", "--color", "never", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=REPO_ROOT,
    )


def test_the_files_to_lint_exist():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in _files()}
    assert {"action.yml", "examples/ci/github-workflow.yml", ".github/workflows/ci.yml"} <= names
    assert all(p.is_file() for p in _files())


def test_shellcheck_is_there_for_the_run_scripts():
    out = subprocess.run([_tool("shellcheck"), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "ShellCheck" in out.stdout


def test_actionlint_passes_on_the_action_and_every_workflow():
    result = actionlint(*_files())
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing_in_the_action_and_every_workflow():
    result = zizmor(*_files())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


def test_the_linters_catch_planted_mistakes(tmp_path):
    """The same commands fail on an action with an undefined input, a shell bug and an injection."""
    text = (REPO_ROOT / "action.yml").read_text()
    bad = text.replace("${{ inputs.profile }}", "${{ inputs.profle }}", 1)
    bad = bad.replace('rm -f "$report"', 'rm -f $report; echo "${{ github.event.issue.title }}"', 1)
    assert bad != text
    broken = tmp_path / "action.yml"
    broken.write_text(bad)
    lint = actionlint(broken)
    assert lint.returncode != 0
    assert "profle" in lint.stdout
    audit = zizmor(broken)
    assert audit.returncode != 0
    assert "template-injection" in audit.stdout + audit.stderr
