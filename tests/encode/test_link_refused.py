"""A file whose download link the server refuses (its token expired or is not valid: the link's
token, not the API key) fails that file, not the run, with the fresh-link next step: the same
encode again reuses the job and asks the API for a fresh link. Real local server, links refused
by its fault injection (as in tests/client/test_download_link_refused.py)."""

from __future__ import annotations

import shutil

from .conftest import Env

REFUSED = "the download link was refused (401"
NEXT = "run the same command again: it asks for a fresh link"


def _output_asks(world: Env, job_id: str) -> int:
    return sum(
        1
        for r in world.requests()
        if r.get("method") == "GET" and r.get("path") == f"/v1/jobs/{job_id}/output"
    )


def test_a_refused_download_link_fails_the_file_with_the_fresh_link_step(make_server, clip_bank, tmp_path):
    # the local server answers every GET of a signed link with 401 (the refreshed link too)
    world = Env(make_server(tmp_path / "server-data", faults="GET /v1/downloads/*=401:1"), tmp_path)
    shutil.copyfile(clip_bank[0], world.work / "a.mp4")
    run = world.encode("a.mp4")
    assert run.returncode == 7, run.stderr  # a per-file failure, not exit 4 (the API key is fine)
    row = run.stdout.splitlines()[1].split("\t")
    assert row[0] == "a.mp4" and row[5].startswith(f"failed: {REFUSED}"), run.stdout
    assert "\n" not in row[5]
    notices = [ln for ln in run.stderr.splitlines() if NEXT in ln]
    assert notices == [f"1 file: the download link was refused; {NEXT}"], run.stderr
    assert "API key" not in run.stderr and "sophon download" not in run.stderr, run.stderr
    assert not (world.work / "a.sophon.mp4").exists()
    (job,) = world.jobs()
    asked = _output_asks(world, job.id)
    assert asked >= 1

    # the same encode again: no new job, the API is asked for the job's output (a fresh link) again
    again = world.encode("a.mp4", "--json")
    assert again.returncode == 7, again.stderr
    files = again.summary()["files"]
    assert files[0]["result"] == "failed" and files[0]["reason"].startswith(REFUSED), files
    assert [j.id for j in world.jobs()] == [job.id]
    assert _output_asks(world, job.id) > asked
