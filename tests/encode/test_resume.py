"""Resumption: SIGKILL at several points, Ctrl-C (once and twice), --timeout; never a duplicate."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from sophon_cli.client.files import PART_SUFFIX
from sophon_cli.state import StateStore
from tests.encode.conftest import Env, place


def _run_until(proc, stop_at: str, count: int = 1, timeout: float = 60) -> list[dict]:
    """Read NDJSON events until the ``count``-th event with state ``stop_at``; return them."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    events: list[dict] = []
    try:
        seen = 0
        for line in proc.stdout:
            event = json.loads(line)
            events.append(event)
            if event.get("state") == stop_at:
                seen += 1
                if seen == count:
                    return events
    finally:
        timer.cancel()
    raise AssertionError(f"the run ended before {count} {stop_at!r} events: {events}\n{proc.stderr.read()}")


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()


def _assert_one_job_per_file(world: Env, n: int, summary: dict) -> None:
    assert summary["counts"] == {"encoded": n}, summary
    jobs = world.jobs()
    assert len(jobs) == n, [j.id for j in jobs]
    assert {f["job_id"] for f in summary["files"]} == {j.id for j in jobs}
    assert world.upload_count() == n
    for f in summary["files"]:
        assert os.path.getsize(f["output"]) == f["output_bytes"] > 0
    leftovers = [p for p in (world.work / "out").iterdir() if p.name.endswith((PART_SUFFIX, ".tmp"))]
    assert leftovers == []


@pytest.mark.parametrize(
    "kill_points",
    [
        [("uploading", 1)],  # upload session saved, parts still being sent
        [("uploaded", 2), ("job_done", 1)],  # between upload and job; then before a download
        [("job_created", 1), ("downloading", 1)],  # waiting on jobs; then mid-download
    ],
    ids=["mid-upload", "after-upload+before-download", "after-job+mid-download"],
)
def test_sigkill_then_rerun_finishes_with_one_job_per_file(world, clip_bank, kill_points):
    place(clip_bank[:3], world.work / "v")
    args = ("v/*.mp4", "-o", "out", "--json", "--concurrency", "2")
    for state, count in kill_points:
        proc = world.popen(*args)
        _run_until(proc, state, count)
        _kill(proc)
    final = world.encode(*args)
    assert final.returncode == 0, final.stderr
    _assert_one_job_per_file(world, 3, final.summary())


def test_ctrl_c_saves_state_and_exits_130_then_rerun_resumes(world, clip_bank):
    place(clip_bank[:2], world.work / "v")
    args = ("v/*.mp4", "-o", "out", "--json", "--metadata", "sophon_local_delay=1")
    proc = world.popen(*args)
    _run_until(proc, "job_created", 2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - t0 < 5
    assert "run the same command again to resume" in proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    summary = json.loads(rest.splitlines()[-1])
    assert summary["interrupted"] is True and summary["exit_code"] == 130

    entries = StateStore(world.home / "state.json").load()
    assert sorted(e["state"] for e in entries.values()) == ["job_created", "job_created"]
    assert all(e["job_id"].startswith("job_") for e in entries.values())

    final = world.encode(*args)
    assert final.returncode == 0, final.stderr
    _assert_one_job_per_file(world, 2, final.summary())


def test_second_ctrl_c_stops_at_once(make_server, tmp_path, clip_bank):
    # Slow part uploads keep a worker busy after the first Ctrl-C.
    slow = make_server(tmp_path / "slow", chunk_size=16384, faults="PUT /v1/uploads/*/parts/*=latency:1s")
    world = Env(slow, tmp_path)
    place(clip_bank[:1], world.work / "v")
    args = ("v/*.mp4", "-o", "out", "--json", "--part-concurrency", "1")
    proc = world.popen(*args)
    _run_until(proc, "uploading", 1)
    time.sleep(0.3)  # the first part is now in flight (for 1 s)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)  # stop dispatching; wait for the part...
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # ...no: stop now
    assert proc.wait(timeout=30) == 130
    assert time.monotonic() - t0 < 0.9  # did not wait for the part in flight
    proc.stdout.close()
    proc.stderr.close()

    store = StateStore(world.home / "state.json")
    assert [e["state"] for e in store.load().values()] == ["uploading"]  # the cache is valid
    assert store.warnings == []

    final = world.encode("v/*.mp4", "-o", "out", "--json")
    assert final.returncode == 0, final.stderr
    _assert_one_job_per_file(world, 1, final.summary())


def test_timeout_fails_with_exit_6_and_a_rerun_resumes_the_same_job(world, clip_bank):
    place(clip_bank[:1], world.work / "v")
    base = ("v/*.mp4", "-o", "out", "--json", "--metadata", "sophon_local_delay=1")
    first = world.encode(*base, "--timeout", "0.3")
    assert first.returncode == 6, first.stderr
    row = first.summary()["files"][0]
    assert row["result"] == "failed" and "run again to resume" in row["reason"]
    final = world.encode(*base)
    assert final.returncode == 0, final.stderr
    assert final.summary()["files"][0]["job_id"] == row["job_id"]
    _assert_one_job_per_file(world, 1, final.summary())


# -- a rerun that finds the job an earlier run made says it reused it, with its status now ---------


def test_a_job_found_again_by_its_idempotency_key_is_reused_with_its_real_status(world, clip_bank):
    """The cache is gone, so the job POST replays: the answer is the one from when the job was
    made ("queued"); the line says the job was reused and how it is now (before: "job created
    (job_… queued)" for a job that had long completed)."""
    place(clip_bank[:1], world.work)
    first = world.encode("video0.mp4", "-o", "out1", "--json")
    assert first.returncode == 0, first.stderr
    (job_id,) = {f["job_id"] for f in first.summary()["files"]}
    for p in world.home.glob("state.json*"):
        p.unlink()
    again = world.encode("video0.mp4", "-o", "out2")
    assert again.returncode == 0, again.stderr
    assert "job created" not in again.stderr
    assert f"video0.mp4: job reused ({job_id} completed)" in again.stderr.splitlines()
    assert len(world.jobs()) == 1


def test_a_job_resumed_from_the_cache_is_said_to_be_reused(world, clip_bank):
    place(clip_bank[:1], world.work)
    args = ("video0.mp4", "-o", "out", "--json", "--metadata", "sophon_local_delay=3")
    proc = world.popen(*args)
    created = [e for e in _run_until(proc, "job_created") if e.get("state") == "job_created"]
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 130
    job_id = created[0]["job_id"]

    again = world.encode(*args)
    assert again.returncode == 0, again.stderr
    states = [e for e in again.events() if e.get("event") == "state"]
    assert "job_created" not in [e["state"] for e in states]
    reused = [e for e in states if e["state"] == "job_reused"]
    assert len(reused) == 1 and reused[0]["job_id"] == job_id
    # its status as this run's first look at the job found it
    assert reused[0]["job_status"] in {
        "queued",
        "probing",
        "encoding",
        "muxing",
        "uploading_output",
        "completed",
    }
    assert again.summary()["files"][0]["result"] == "encoded"
    assert len(world.jobs()) == 1
