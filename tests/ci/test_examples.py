"""examples/ci: the GitHub workflow uses the action as action.yml defines it (inputs, outputs, a
4-way matrix; actionlint and zizmor check it in test_workflow_lint.py), the GitLab job fans out with
`parallel: 4` and `--shard auto`, the Kubernetes manifest is an Indexed Job whose completions match
`--shard auto/N`. The `sophon encode` command line of each example is also run for real (as a
`--dry-run`, with the CI's variables set) so an example can never use a flag sophon lacks."""

from __future__ import annotations

import os
import re
import shlex

import pytest
import yaml

from sophon_cli.encode.inputs import shard_of
from tests.ci.conftest import place
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples" / "ci"


def load(name: str):
    with open(EXAMPLES / name, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def action():
    with open(REPO_ROOT / "action.yml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_the_github_workflow_runs_the_action_on_a_four_way_matrix():
    wf = load("github-workflow.yml")
    act = action()
    job = wf["jobs"]["encode"]
    shards = job["strategy"]["matrix"]["shard"]
    assert shards == [1, 2, 3, 4]
    assert job["strategy"]["fail-fast"] is False  # one failed shard does not cancel the others
    assert wf["permissions"] == {"contents": "read"}
    step = next(s for s in job["steps"] if str(s.get("uses", "")).startswith("sophon-cli/sophon-cli@"))
    inputs = step["with"]
    assert set(inputs) <= set(act["inputs"])
    assert {k for k, v in act["inputs"].items() if v.get("required")} <= set(inputs)
    assert inputs["shard"] == "${{ matrix.shard }}/" + str(len(shards))
    assert inputs["api-key"] == "${{ secrets.SOPHON_API_KEY }}"  # from a secret, never a literal
    used = set(
        re.findall(r"steps\.sophon\.outputs\.([\w-]+)", (EXAMPLES / "github-workflow.yml").read_text())
    )
    assert used and used <= set(act["outputs"])


def test_the_action_declares_what_the_issue_asks_for():
    act = action()
    assert act["runs"]["using"] == "composite"
    assert set(act["inputs"]) == {
        "files",
        "output",
        "profile",
        "args",
        "api-key",
        "base-url",
        "local",
        "shard",
    }
    assert set(act["outputs"]) == {"report", "encoded", "kept-original", "failed", "saved-bytes"}
    steps = act["runs"]["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert uses == ["actions/cache/restore", "actions/cache/save"]
    assert "always()" in next(s for s in steps if s.get("uses", "").startswith("actions/cache/save"))["if"]
    for s in steps:
        if "run" in s:
            assert "${{" not in s["run"], "inputs reach scripts through env:, never by substitution"
            assert s["shell"] == "bash"
    text = (REPO_ROOT / "action.yml").read_text()
    assert text.count("${{ inputs.api-key }}") == 1
    assert "SOPHON_API_KEY: ${{ inputs.api-key }}" in text  # through the environment only


def _words(script: str) -> list[str]:
    """The `sophon encode ...` words of a shell command line (after `exec`, `&&`)."""
    command = script.split("&&")[-1].strip()
    words = shlex.split(command)
    if words[0] == "exec":
        words = words[1:]
    assert words[:2] == ["sophon", "encode"], words
    return words[2:]


def test_the_gitlab_job_fans_out_four_ways_and_reports_junit():
    doc = load("gitlab-ci.yml")
    job = doc["encode-videos"]
    assert job["parallel"] == 4
    script = [line for line in job["script"] if "sophon encode" in line]
    assert len(script) == 1
    words = _words(script[0])
    assert words[words.index("--shard") + 1] == "auto"
    report = words[words.index("--report") + 1]
    assert report.endswith(".xml") and job["artifacts"]["reports"]["junit"] == report
    assert words[words.index("--summary") + 1] in job["artifacts"]["paths"]
    assert job["artifacts"]["when"] == "always"  # failed files are reported too
    # each parallel copy keeps its own resume cache, saved even when the job fails
    assert "$CI_JOB_NAME" in job["cache"]["key"] and job["cache"]["when"] == "always"
    state = words[words.index("--state-file") + 1]
    assert state.startswith("$STATE_DIR/") and job["variables"]["STATE_DIR"].endswith(
        job["cache"]["paths"][0].rstrip("/")
    )
    assert "SOPHON_API_KEY" not in job.get("variables", {})  # a masked CI/CD variable, not in the file


def test_the_kubernetes_manifest_is_an_indexed_job_matching_its_shards():
    docs = [d for d in yaml.safe_load_all((EXAMPLES / "kubernetes-indexed-job.yaml").read_text()) if d]
    assert len(docs) == 1
    job = docs[0]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job" and job["metadata"]["name"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["completions"], int) and spec["completions"] >= 2
    assert spec["parallelism"] <= spec["completions"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")  # what a Job allows
    (container,) = pod["containers"]
    assert container["name"] and container["image"]
    script = (
        " ".join(container["command"][2:] + container["args"])
        if container["command"][:2] == ["sh", "-c"]
        else None
    )
    assert script
    words = _words(script)
    assert words[words.index("--shard") + 1] == f"auto/{spec['completions']}"
    assert "$JOB_COMPLETION_INDEX" in words[words.index("--state-file") + 1]  # each index its own cache
    env = {e["name"]: e for e in container["env"]}
    assert env["SOPHON_API_KEY"]["valueFrom"]["secretKeyRef"]["name"]  # from a Secret
    assert "value" not in env["SOPHON_API_KEY"]
    volumes = {v["name"] for v in pod["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes


def _expand(word: str, env: dict) -> str:
    return re.sub(r"\$(\w+)", lambda m: env[m.group(1)], word)


@pytest.mark.parametrize("example", ["gitlab", "kubernetes"])
def test_each_example_command_line_is_a_valid_sophon_encode(world, clip_bank, example):
    """Run the example's own flags (paths moved into a temp dir) as a --dry-run with the CI's
    variables set: sophon accepts every flag and finds its shard."""
    if example == "gitlab":
        words = _words(
            next(line for line in load("gitlab-ci.yml")["encode-videos"]["script"] if "sophon encode" in line)
        )
        ci_env = {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4", "STATE_DIR": str(world.root / "state")}
    else:
        container = load("kubernetes-indexed-job.yaml")["spec"]["template"]["spec"]["containers"][0]
        words = _words(" ".join(container["args"]))
        ci_env = {"JOB_COMPLETION_INDEX": "1"}
    place(clip_bank[:3], world.work / "videos", ["a.mov", "b.mp4", "c.mp4"])
    root = str(world.work)
    words = [_expand(w, ci_env).replace("/videos/", f"{root}/videos/") for w in words]
    run = world.encode(*words, "--dry-run", "--json", env={**ci_env, "GITHUB_STEP_SUMMARY": ""})
    assert run.returncode == 0, run.stderr
    planned = {e["file"] for e in run.events() if e["event"] == "plan"}
    index, count = (
        (2, 4) if example == "gitlab" else (2, int(words[words.index("--shard") + 1].split("/")[1]))
    )
    expected = {f"videos/{n}" for n in ("a.mov", "b.mp4", "c.mp4") if shard_of(f"videos/{n}", count) == index}
    assert planned == expected
    assert world.jobs() == [] and not os.path.exists(world.work / "encoded")
