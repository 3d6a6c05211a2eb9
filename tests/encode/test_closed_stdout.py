"""A reader of stdout that goes away (``sophon encode ... | head -1``) against the real local server.

The reader's end of the pipe is closed before the CLI writes anything, so its first write of data
meets a broken pipe: the run stops the way a Ctrl-C does (every step saved, no partial output in
place, the reports written), with no traceback, the exit code of a reader that stops early (0; 7
when a file had failed) and one notice; the rerun resumes and nothing is made twice.
"""

from __future__ import annotations

import json
import os
import subprocess

from sophon_cli.state import StateStore
from tests.encode.conftest import Run, place


def _encode_into_a_closed_pipe(world, *args, stderr_too: bool = False) -> Run:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line
    try:
        p = subprocess.run(
            world.argv(*args),
            cwd=world.work,
            env=world.env(),
            stdout=write_end,
            stderr=write_end if stderr_too else subprocess.PIPE,  # 2>&1 | head -1
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    return Run(p.returncode, "", p.stderr or "")


def test_a_reader_that_goes_away_stops_the_batch_and_the_rerun_resumes(world, clip_bank):
    place(clip_bank[:3], world.work / "v")
    report = world.root / "report.json"
    args = ("v", "-r", "-o", "out", "--json", "-j", "1", "--report", report)
    run = _encode_into_a_closed_pipe(world, *args)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr
    assert (
        "stopped: standard output was closed by its reader; 3 of 3 files not finished; "
        "run the same command again to resume"
    ) in run.stderr.splitlines()
    # stopped, not run to the end for nobody: only the first file was started
    assert world.upload_count() <= 1 and world.jobs() == []
    # nothing half-written in place (a download's partial file is a hidden .part), the cache readable
    out = world.work / "out"
    assert not out.exists() or [p.name for p in out.rglob("*") if not p.name.startswith(".")] == []
    store = StateStore(world.home / "state.json")
    entries = store.load()
    assert store.warnings == [] and all(e["state"] != "done" for e in entries.values())
    doc = json.loads(report.read_text())
    assert doc["interrupted"] is True and doc["exit_code"] == 0 and doc["files"] == []

    again = world.encode(*args)
    assert again.returncode == 0, again.stderr
    assert again.summary()["counts"] == {"encoded": 3}
    assert world.upload_count() == 3 and len(world.jobs()) == 3


def test_a_reader_gone_before_the_summary_leaves_the_reports_and_the_exit_code(world, clip_bank):
    """Plain output writes only the summary table to stdout: the batch runs to its end, the table
    meets the broken pipe, and the report and the exit code (7: a file failed) still follow (before:
    exit 0 and no report)."""
    place(clip_bank[:1], world.work)
    (world.work / "notavideo.mp4").write_bytes(os.urandom(4096))
    report = world.root / "report.json"
    run = _encode_into_a_closed_pipe(world, "video0.mp4", "notavideo.mp4", "--report", report)
    assert run.returncode == 7, run.stderr
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr
    files = {f["file"]: f["result"] for f in json.loads(report.read_text())["files"]}
    assert sorted(files.values()) == ["encoded", "failed"], files


def test_a_reader_of_both_streams_that_goes_away_stops_the_batch_too(world, clip_bank):
    """``sophon encode ... 2>&1 | head -1``: the plain lines on stderr meet the broken pipe. The
    batch stops the same way, the report is written, exit 0 (before: the batch ran on to its end
    and click's EPIPE handler made it exit 1)."""
    place(clip_bank[:2], world.work / "v")
    report = world.root / "report.json"
    args = ("v", "-r", "-o", "out", "-j", "1", "--report", report)
    run = _encode_into_a_closed_pipe(world, *args, stderr_too=True)
    assert run.returncode == 0
    assert world.jobs() == []
    doc = json.loads(report.read_text())
    assert doc["interrupted"] is True and doc["files"] == []
    again = world.encode(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert again.summary()["counts"] == {"encoded": 2}
    assert world.upload_count() == 2 and len(world.jobs()) == 2
