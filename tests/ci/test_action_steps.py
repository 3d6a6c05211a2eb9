"""The GitHub Action's own steps, run for real: each `run:` block of action.yml executes in bash the
way the runner runs it (`bash --noprofile --norc -eo pipefail`), with the step's `env:` (its
`${{ }}` expressions resolved), GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / RUNNER_TEMP as temporary
files, against the local server. The two `actions/cache` steps are stood in for by a directory
store with GitHub's key / restore-keys rules, so a rerun of the same job shows that it resumes.

The install step really creates a venv and pip-installs the action's checkout (this repository)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sophon_cli import reports
from tests.ci.conftest import place
from tests.conftest import REPO_ROOT, TEST_KEY

ACTION = yaml.safe_load((REPO_ROOT / "action.yml").read_text())
EXPR = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


class CacheStore:
    """actions/cache semantics: an exact key, else the newest key starting with a restore key
    (tried in order); a saved key is never overwritten."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.saved: list[str] = []

    def restore(self, path: Path, key: str, restore_keys: list[str]) -> str | None:
        hit = key if key in self.saved else None
        for prefix in restore_keys:
            if hit:
                break
            hit = next((k for k in reversed(self.saved) if k.startswith(prefix)), None)
        if hit:
            shutil.copytree(self.root / str(self.saved.index(hit)), path, dirs_exist_ok=True)
        return hit

    def save(self, path: Path, key: str) -> bool:
        if key in self.saved or not path.is_dir():
            return False
        shutil.copytree(path, self.root / str(len(self.saved)))
        self.saved.append(key)
        return True


class Runner:
    """One job of a workflow run that calls the action once."""

    def __init__(self, base: Path, workspace: Path, cache: CacheStore, inputs: dict, attempt: int) -> None:
        self.base = base
        self.workspace = workspace
        self.cache = cache
        self.inputs = {k: str(v.get("default", "")) for k, v in ACTION["inputs"].items()}
        self.inputs.update(inputs)
        self.temp = base / "runner-temp"
        self.temp.mkdir(parents=True)
        self.summary = base / "step-summary.md"
        self.summary.write_text("")
        self.attempt = attempt
        self.steps: dict[str, dict] = {}
        self.log: list[tuple[str, int, str]] = []
        self.restored: str | None = None

    def value(self, expr: str) -> str:
        parts = expr.split(".")
        if parts[0] == "inputs":
            return self.inputs[parts[1]]
        if expr == "github.action_path":
            return str(REPO_ROOT)
        if expr == "runner.temp":
            return str(self.temp)
        if parts[0] == "steps" and parts[2] in ("outputs", "outcome"):
            step = self.steps.get(parts[1], {})
            return (
                step.get("outcome", "")
                if parts[2] == "outcome"
                else step.get("outputs", {}).get(parts[3], "")
            )
        raise AssertionError(f"the test runner does not know the expression {expr!r}")

    def render(self, text: str) -> str:
        return EXPR.sub(lambda m: self.value(m.group(1)), str(text))

    def condition(self, cond: str | None, failed: bool) -> bool:
        if cond is None:
            return not failed  # success()
        terms = [t.strip() for t in cond.split("&&")]
        ok = True
        if "always()" not in terms:
            ok = not failed
        for t in terms:
            if t == "always()":
                continue
            left, right = (x.strip() for x in t.split("=="))
            ok = ok and self.value(left) == right.strip("'")
        return ok

    def env(self, step_env: dict, output: Path) -> dict:
        keep = ("PATH", "HOME", "LANG", "TMPDIR", "SSL_CERT_FILE")
        env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
        env.update(
            GITHUB_OUTPUT=str(output),
            GITHUB_STEP_SUMMARY=str(self.summary),
            GITHUB_ENV=str(self.base / "github-env"),
            GITHUB_PATH=str(self.base / "github-path"),
            GITHUB_WORKSPACE=str(self.workspace),
            GITHUB_ACTION_PATH=str(REPO_ROOT),
            GITHUB_WORKFLOW="Encode videos",
            GITHUB_JOB="encode",
            GITHUB_RUN_ID="4242",
            GITHUB_RUN_ATTEMPT=str(self.attempt),
            RUNNER_TEMP=str(self.temp),
            RUNNER_OS="Linux",
            RUNNER_ARCH="X64",
            CI="true",
            SOPHON_HOME=str(self.base / "sophon-home"),
        )
        env.update({k: self.render(v) for k, v in (step_env or {}).items()})
        return env

    def run(self, timeout: float = 600) -> dict:
        failed = False
        for n, step in enumerate(ACTION["runs"]["steps"]):
            sid = step.get("id", f"step{n}")
            if not self.condition(step.get("if"), failed):
                self.steps[sid] = {"outcome": "skipped", "outputs": {}}
                continue
            if "uses" in step:
                self.steps[sid] = self.cache_step(step)
                continue
            output = self.base / f"output-{sid}"
            output.write_text("")
            script = self.base / f"{sid}.sh"
            script.write_text(step["run"])
            assert step["shell"] == "bash"
            p = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                cwd=self.workspace,
                env=self.env(step.get("env"), output),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            self.log.append((sid, p.returncode, p.stdout + p.stderr))
            outcome = "success" if p.returncode == 0 else "failure"
            self.steps[sid] = {
                "outcome": outcome,
                "outputs": parse_outputs(output.read_text()),
                "rc": p.returncode,
            }
            failed = failed or p.returncode != 0
        return {name: self.render(o["value"]) for name, o in ACTION["outputs"].items()}

    def cache_step(self, step: dict) -> dict:
        action = step["uses"].split("@")[0]
        args = {k: self.render(v) for k, v in step["with"].items()}
        path = Path(args["path"])
        if action == "actions/cache/restore":
            keys = [k for k in args.get("restore-keys", "").splitlines() if k.strip()]
            self.restored = self.cache.restore(path, args["key"], keys)
            return {"outcome": "success", "outputs": {"cache-hit": str(self.restored == args["key"]).lower()}}
        assert action == "actions/cache/save", action
        self.cache.save(path, args["key"])
        return {"outcome": "success", "outputs": {}}


def parse_outputs(text: str) -> dict:
    """GITHUB_OUTPUT's two forms: name=value and name<<DELIMITER ... DELIMITER."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1 : j])
            i = j + 1
            continue
        name, _, value = line.partition("=")
        out[name] = value
        i += 1
    return out


@pytest.mark.timeout(900)
def test_the_action_steps_encode_report_and_resume_on_a_rerun(world, clip_bank, gray_clip, tmp_path):
    place(clip_bank[:2], world.work / "videos", ["a.mp4", "b.mp4"])
    place([gray_clip], world.work / "videos", ["gray.mp4"])  # nothing smaller: a failure with --fallback fail
    cache = CacheStore(tmp_path / "cache-store")
    inputs = {
        "files": "videos/*.mp4\n\n  videos/b.mp4  \n",  # one per line; blanks and padding ignored
        "output": "encoded",
        "args": "--fallback fail --name-template '{stem} hevc.{ext}'",  # quoted words stay one word
        "api-key": TEST_KEY,
        "base-url": world.server.url,
    }

    first = Runner(tmp_path / "attempt1", world.work, cache, inputs, attempt=1)
    outputs = first.run()
    rcs = {sid: rc for sid, rc, _ in first.log}
    logs = "\n".join(text for _, _, text in first.log)
    assert rcs["setup"] == 0, logs
    assert rcs["encode"] == 7, logs  # a file failed: the step fails, after setting its outputs
    assert TEST_KEY not in logs

    assert outputs["encoded"] == "2" and outputs["failed"] == "1" and outputs["kept-original"] == "0"
    doc = json.loads(Path(outputs["report"]).read_text())
    assert Path(outputs["report"]).is_relative_to(first.temp)
    assert int(outputs["saved-bytes"]) == doc["totals"]["saved_bytes"] > 0
    assert {f["file"]: f["result"] for f in doc["files"]} == {
        "videos/a.mp4": "encoded",
        "videos/b.mp4": "encoded",
        "videos/gray.mp4": "failed",
    }
    assert (world.work / "encoded" / "a hevc.mp4").is_file()  # the quoted template stayed one word
    summary = first.summary.read_text()
    assert summary.startswith(reports.MARKDOWN_MARKER) and "2 encoded, 1 failed" in summary
    assert "**Failed (1):**" in summary and "gray.mp4" in summary
    assert len(cache.saved) == 1 and cache.saved[0].endswith("-4242-1")  # saved although encode failed
    jobs, uploads = len(world.jobs()), world.upload_count()
    assert jobs == 3

    # "Re-run failed jobs": attempt 2 of the same run, a fresh RUNNER_TEMP, the same inputs
    second = Runner(tmp_path / "attempt2", world.work, cache, inputs, attempt=2)
    outputs2 = second.run()
    assert second.restored == cache.saved[0]  # attempt 1's state came back
    assert {sid: rc for sid, rc, _ in second.log}["encode"] == 7
    doc2 = json.loads(Path(outputs2["report"]).read_text())
    assert {f["file"] for f in doc2["files"] if f["cached"]} == {"videos/a.mp4", "videos/b.mp4"}
    assert (outputs2["encoded"], outputs2["failed"]) == ("2", "1")
    assert (len(world.jobs()), world.upload_count()) == (jobs, uploads)  # nothing sent twice
    assert cache.saved[1].endswith("-4242-2")


@pytest.mark.timeout(900)
def test_the_action_rejects_bad_inputs_with_one_clear_error(world, tmp_path):
    runner = Runner(
        tmp_path / "bad", world.work, CacheStore(tmp_path / "store"), {"files": "x.mp4", "local": "yes"}, 1
    )
    outputs = runner.run()
    sid, rc, text = runner.log[0]
    assert sid == "setup" and rc == 2
    assert "::error::input local must be 'true' or 'false'" in text
    assert outputs["report"] == ""
    assert [s for s, _, _ in runner.log] == ["setup"]  # nothing ran after it
