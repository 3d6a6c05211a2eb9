"""`sophon encode --report/--summary`, the GitHub step summary and `--shard auto`, through the real
CLI against a real local server."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET

from sophon_cli import reports
from tests.ci.conftest import place
from tests.ci.test_reports import _check_junit


def test_reports_in_every_format_and_the_step_summary(world, clip_bank, gray_clip):
    place(clip_bank[:2], world.work / "videos", ["a.mp4", "b.mp4"])
    place([gray_clip], world.work / "videos", ["gray.mp4"])  # no smaller encode: fails with --fallback fail
    step = world.root / "step_summary.md"
    step.write_text("# an earlier step\n")
    run = world.encode(
        "videos/*.mp4",
        "-o",
        "out",
        "--fallback",
        "fail",
        "--report",
        "reports/run.json",
        "--summary",
        "summary.md",
        env={"GITHUB_STEP_SUMMARY": str(step)},
    )
    assert run.returncode == 7, run.stderr

    doc = json.loads((world.work / "reports" / "run.json").read_text())
    assert doc["exit_code"] == 7
    by_file = {f["file"]: f for f in doc["files"]}
    assert set(by_file) == {"videos/a.mp4", "videos/b.mp4", "videos/gray.mp4"}
    assert by_file["videos/a.mp4"]["result"] == "encoded" and by_file["videos/a.mp4"]["job_id"]
    assert by_file["videos/gray.mp4"]["result"] == "failed" and by_file["videos/gray.mp4"]["reason"]
    totals = doc["totals"]
    assert (totals["encoded"], totals["failed"]) == (2, 1)
    assert totals["saved_bytes"] == sum(
        f["source_bytes"] - f["output_bytes"] for f in doc["files"] if f["result"] == "encoded"
    )
    assert totals["saved_bytes"] > 0

    md = (world.work / "summary.md").read_text()
    assert md.startswith(reports.MARKDOWN_MARKER) and "2 encoded, 1 failed" in md
    lines = md.splitlines()
    first_row = lines[lines.index("| source | output | saved | profile | result | job id |") + 2]
    assert "gray.mp4" in first_row and "failed" in first_row  # failures first
    text = step.read_text()
    assert text.startswith("# an earlier step\n") and reports.MARKDOWN_MARKER in text  # appended
    assert text.split("# an earlier step\n", 1)[1] == md

    # the same run again, as CSV and JUnit: every file is replayed from the cache
    rerun = world.encode("videos/*.mp4", "-o", "out", "--fallback", "fail", "--report", "run.csv")
    assert rerun.returncode == 7
    rows = list(csv.DictReader((world.work / "run.csv").open(newline="")))
    assert sorted(r["file"] for r in rows) == ["videos/a.mp4", "videos/b.mp4", "videos/gray.mp4"]
    assert {r["file"]: r["cached"] for r in rows}["videos/a.mp4"] == "true"
    junit = world.encode("videos/*.mp4", "-o", "out", "--fallback", "fail", "--report", "junit.xml")
    root = _check_junit((world.work / "junit.xml").read_text())
    failed = [c.get("name") for c in root.iter("testcase") if c.find("failure") is not None]
    assert junit.returncode == 7 and failed == ["videos/gray.mp4"]
    assert len(world.jobs()) == 3  # reruns made no new job


def test_report_paths_are_checked_before_any_work(world, clip_bank):
    place(clip_bank[:1], world.work)
    (world.work / "notes.json").write_text('{"mine": true}')
    for args, words in (
        (["--report", "report.txt"], "report format"),
        (["--report", "notes.json"], "not an earlier sophon report"),
        (["--summary", "."], "directory"),
    ):
        run = world.encode("video0.mp4", *args)
        assert run.returncode == 2, run.stderr
        assert words in run.stderr and len(run.stderr.strip().splitlines()) == 1
        assert "Traceback" not in run.stderr
    assert (world.work / "notes.json").read_text() == '{"mine": true}'
    assert world.jobs() == [] and world.upload_count() == 0


def test_shard_auto_without_ci_variables_is_one_clear_error(world, clip_bank):
    place(clip_bank[:1], world.work)
    env = {
        k: ""
        for k in (
            "CI_NODE_INDEX",
            "CI_NODE_TOTAL",
            "CIRCLE_NODE_INDEX",
            "BUILDKITE_PARALLEL_JOB",
            "JOB_COMPLETION_INDEX",
        )
    }
    run = world.encode("video0.mp4", "--shard", "auto", env=env)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "CI_NODE_INDEX" in lines[0] and "JOB_COMPLETION_INDEX" in lines[0]
    k8s = world.encode("video0.mp4", "--shard", "auto", env={**env, "JOB_COMPLETION_INDEX": "1"})
    assert k8s.returncode == 2 and "auto/N" in k8s.stderr
    assert world.jobs() == []


def test_an_empty_shard_still_writes_its_report_and_summary(world, clip_bank):
    place(clip_bank[:1], world.work)
    # find the GitLab node (1-based) that gets no file of a one-file batch split four ways
    from sophon_cli.encode.inputs import shard_of

    owner = shard_of("video0.mp4", 4)
    empty = 1 if owner != 1 else 2
    step = world.root / "step.md"
    run = world.encode(
        "video0.mp4",
        "--shard",
        "auto",
        "--report",
        "r.xml",
        env={"CI_NODE_INDEX": str(empty), "CI_NODE_TOTAL": "4", "GITHUB_STEP_SUMMARY": str(step)},
    )
    assert run.returncode == 0, run.stderr
    root = ET.fromstring((world.work / "r.xml").read_text())
    assert root.get("tests") == "0" and f"shard {empty}/4" in root.find("testsuite").get("name")
    assert "**0 files**" in step.read_text()
    assert world.jobs() == []


def test_a_fresh_checkout_with_the_restored_state_sends_nothing_twice(world, clip_bank):
    """A CI rerun checks the files out again (new mtimes) and starts without the outputs: the
    restored state no longer matches by mtime, but the idempotency keys replay the same upload and
    job, so the server sees no second upload or job."""
    import os
    import shutil

    place(clip_bank[:2], world.work / "videos")
    state = world.root / "ci-cache" / "state.json"
    first = world.encode("videos", "-r", "-o", "out", "--state-file", state, "--report", "r1.json")
    assert first.returncode == 0, first.stderr
    jobs, uploads = {j.id for j in world.jobs()}, world.upload_count()
    assert len(jobs) == 2
    shutil.rmtree(world.work / "out")
    for p in (world.work / "videos").iterdir():
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = world.encode("videos", "-r", "-o", "out", "--state-file", state, "--report", "r2.json")
    assert again.returncode == 0, again.stderr
    doc = json.loads((world.work / "r2.json").read_text())
    assert [f["result"] for f in doc["files"]] == ["encoded", "encoded"]
    assert {f["job_id"] for f in doc["files"]} == jobs
    assert {j.id for j in world.jobs()} == jobs and world.upload_count() == uploads
