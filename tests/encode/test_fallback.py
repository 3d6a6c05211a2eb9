"""Fallback: the original is never lost. Failed jobs, final_artifact "original", larger outputs."""

from __future__ import annotations

import shutil

FAIL = ("--metadata", "sophon_local_fail=true")


def test_failed_job_with_copy_skip_and_fail(world, clip_bank):
    for i, mode in enumerate(("copy", "skip", "fail")):
        shutil.copyfile(clip_bank[i], world.work / f"{mode}.mp4")
    copy = world.encode("copy.mp4", *FAIL, "--json")
    assert copy.returncode == 0, copy.stderr
    row = copy.summary()["files"][0]
    assert row["result"] == "original kept"
    assert "job failed" in row["reason"] and "forced failure" in row["reason"], copy.stdout
    out = world.work / "copy.sophon.mp4"
    assert out.read_bytes() == (world.work / "copy.mp4").read_bytes()
    assert row["output"] == str(out) and row["saved_percent"] == 0.0

    skip = world.encode("skip.mp4", *FAIL, "--fallback", "skip", "--json")
    assert skip.returncode == 0, skip.stderr
    row = skip.summary()["files"][0]
    assert row["result"] == "skipped" and "job failed" in row["reason"]
    assert not (world.work / "skip.sophon.mp4").exists()

    fail = world.encode("fail.mp4", *FAIL, "--fallback", "fail")
    assert fail.returncode == 7
    line = fail.stdout.splitlines()[1].split("\t")
    assert line[0] == "fail.mp4" and line[5].startswith("failed: job failed")
    assert not (world.work / "fail.sophon.mp4").exists()
    assert len(world.jobs()) == 3

    # Decided again locally under another --fallback: no new job, the original appears.
    again = world.encode("fail.mp4", *FAIL, "--fallback", "copy", "--json")
    assert again.returncode == 0
    assert again.summary()["files"][0]["result"] == "original kept"
    assert (world.work / "fail.sophon.mp4").read_bytes() == (world.work / "fail.mp4").read_bytes()
    assert len(world.jobs()) == 3


def test_final_artifact_original_keeps_a_copy(world, gray_clip):
    shutil.copyfile(gray_clip, world.work / "gray.mp4")
    run = world.encode("gray.mp4", "--json")
    assert run.returncode == 0, run.stderr
    row = run.summary()["files"][0]
    assert row["result"] == "original kept"
    assert "nothing smaller" in row["reason"]
    assert (world.work / "gray.sophon.mp4").read_bytes() == gray_clip.read_bytes()
    assert [j.final_artifact for j in world.jobs()] == ["original"]

    strict = world.encode("gray.mp4", "--fallback", "fail", "-o", "strict")
    assert strict.returncode == 7
    assert not (world.work / "strict").exists() or not any((world.work / "strict").iterdir())


def test_output_larger_than_source_falls_back(world, gray_clip):
    shutil.copyfile(gray_clip, world.work / "gray.mov")
    run = world.encode("gray.mov", "--profile", "sophon-espresso", "--json")
    assert run.returncode == 0, run.stderr
    row = run.summary()["files"][0]
    assert row["result"] == "original kept" and "larger than the source" in row["reason"]
    # The copy keeps the source's extension; the larger encode is not left behind.
    assert (world.work / "gray.sophon.mov").read_bytes() == gray_clip.read_bytes()
    assert not (world.work / "gray.sophon.mp4").exists()
    assert row["output"] == str(world.work / "gray.sophon.mov")
    # The job's own output size told us; the larger file was never fetched.
    assert not [r for r in world.requests() if r["route"].startswith("GET /v1/downloads")]
