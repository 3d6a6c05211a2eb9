"""`sophon encode --min-vmaf / --check-quality` end to end against the local server (real encodes).

The source is 320x240; the local server's encode of it scores about 97 at full size, and about 83
at ``--height 144`` (scaled back with bicubic for scoring): a real encode that trips ``--min-vmaf 90``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.quality.conftest import Env, Run

pytestmark = pytest.mark.encode

LOW = ("--height", "144")  # ~83 VMAF


@pytest.fixture
def src(world: Env, source):
    path = world.work / "talk.mp4"
    shutil.copyfile(source, path)
    return path


def _file(run: Run) -> dict:
    files = run.summary()["files"]
    assert len(files) == 1
    return files[0]


def _states(run: Run) -> list[str]:
    return [e["state"] for e in run.events() if e["event"] == "state"]


def _downloads(world: Env) -> int:
    # the signed download link's route (the request log names routes "METHOD template"); counted
    # as "/download" suffixes before, which matched no route, so every comparison passed
    return sum(1 for r in world.requests() if r.get("route") == "GET /v1/downloads/{token}")


def _entry(world: Env) -> dict:
    from sophon_cli.state import StateStore

    entries = list(StateStore(world.home / "state.json").entries().values())
    assert len(entries) == 1
    return entries[0]


def test_below_min_vmaf_keeps_the_original_at_the_output_path(world, src):
    run = world.encode("talk.mp4", *LOW, "--min-vmaf", "90", "--json")
    assert run.returncode == 0, run.stderr
    f = _file(run)
    assert f["result"] == "original kept"
    assert f["quality_below_threshold"] is True
    assert 60 < f["vmaf"] < 90
    assert f["reason"] == f"quality_below_threshold: VMAF {f['vmaf']:.2f} is below the minimum 90"
    out = world.work / "talk.sophon.mp4"
    assert out.read_bytes() == src.read_bytes()  # the original, not the encode
    scored = [e for e in run.events() if e.get("state") == "scored"]
    assert len(scored) == 1 and scored[0]["vmaf"] == f["vmaf"]
    q = scored[0]["quality"]
    assert q["scaled"] and q["width"] == 320 and 0 < q["ssim"] < 1 and q["psnr_y"] > 0
    assert q["vmaf"]["mean"] == f["vmaf"]
    # the score is in the cache entry, with the output it belongs to
    e = _entry(world)
    assert e["vmaf"] == f["vmaf"] and e["vmaf_sha256"] == e["output_sha256"]
    assert e["quality_below_threshold"] is True and e["quality"]["vmaf"]["p1"] <= e["vmaf"]


def test_rerun_neither_rescores_nor_redownloads_and_a_new_threshold_decides_again(world, src):
    first = world.encode("talk.mp4", *LOW, "--min-vmaf", "90", "--json")
    assert first.returncode == 0, first.stderr
    vmaf = _file(first)["vmaf"]
    downloads = _downloads(world)
    again = world.encode("talk.mp4", *LOW, "--min-vmaf", "90", "--json")
    assert again.returncode == 0, again.stderr
    assert _states(again) == ["cached"]
    assert _file(again)["vmaf"] == vmaf and _file(again)["result"] == "original kept"
    assert _downloads(world) == downloads
    # a lower threshold: the saved score now passes; the encode is fetched again, not re-scored
    lower = world.encode("talk.mp4", *LOW, "--min-vmaf", "75", "--json")
    assert lower.returncode == 0, lower.stderr
    assert "scoring" not in _states(lower) and "downloading" in _states(lower)
    f = _file(lower)
    assert f["result"] == "encoded" and f["vmaf"] == vmaf and f["quality_below_threshold"] is False
    out = world.work / "talk.sophon.mp4"
    assert out.read_bytes() != src.read_bytes() and out.stat().st_size < src.stat().st_size
    # and back up: decided from the cache again, the encode replaced by the original, no download
    downloads = _downloads(world)
    higher = world.encode("talk.mp4", *LOW, "--min-vmaf", "90", "--json")
    assert "scoring" not in _states(higher)
    assert _file(higher)["result"] == "original kept" and _downloads(world) == downloads
    assert out.read_bytes() == src.read_bytes()


def test_fallback_fail_makes_a_low_score_a_failed_file(world, src):
    run = world.encode("talk.mp4", *LOW, "--min-vmaf", "90", "--fallback", "fail", "--json")
    assert run.returncode == 7, run.stderr
    f = _file(run)
    assert f["result"] == "failed" and f["reason"].startswith("quality_below_threshold: VMAF ")
    assert f["quality_below_threshold"] is True
    assert not (world.work / "talk.sophon.mp4").exists()  # the low-quality encode is not left there
    assert src.exists()
    # a rerun retries the failed file, but from the saved score: no download, no scoring
    downloads = _downloads(world)
    again = world.encode("talk.mp4", *LOW, "--min-vmaf", "90", "--fallback", "fail", "--json")
    assert again.returncode == 7
    assert "scoring" not in _states(again) and "downloading" not in _states(again)
    assert _downloads(world) == downloads and _file(again)["reason"] == f["reason"]


def test_fallback_skip_leaves_nothing(world, src):
    run = world.encode("talk.mp4", *LOW, "--min-vmaf", "90", "--fallback", "skip", "--json")
    assert run.returncode == 0, run.stderr
    assert _file(run)["result"] == "skipped" and _file(run)["quality_below_threshold"] is True
    assert not (world.work / "talk.sophon.mp4").exists()


def test_passing_score_keeps_the_encode_and_the_table_shows_it(world, src):
    run = world.encode("talk.mp4", "--min-vmaf", "90")
    assert run.returncode == 0, run.stderr
    header, row = run.stdout.splitlines()
    cells = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert cells["RESULT"] == "encoded"
    assert 90 <= float(cells["VMAF"]) < 100
    assert "talk.mp4: scored (VMAF " in run.stderr
    assert (world.work / "talk.sophon.mp4").stat().st_size < src.stat().st_size


def test_check_quality_scores_without_a_gate_and_a_rerun_does_not_rescore(world, src):
    plain = world.encode("talk.mp4", *LOW, "--json")  # no score asked for
    assert plain.returncode == 0 and _file(plain)["vmaf"] is None
    downloads = _downloads(world)
    run = world.encode("talk.mp4", *LOW, "--check-quality", "--json")
    assert run.returncode == 0, run.stderr
    f = _file(run)
    assert f["result"] == "encoded" and f["vmaf"] < 90 and f["quality_below_threshold"] is False
    assert "scoring" in _states(run) and _downloads(world) == downloads  # the verified output is reused
    again = world.encode("talk.mp4", *LOW, "--check-quality", "--json")
    assert _states(again) == ["cached"] and _file(again)["vmaf"] == f["vmaf"]


def test_without_the_quality_extra_nothing_is_uploaded(world, src):
    code = (
        "import sys; sys.modules['imageio_ffmpeg'] = None\n"
        "from sophon_cli.cli.main import main\nmain(sys.argv[1:])\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "encode", "talk.mp4", "--min-vmaf", "90"],
        cwd=world.work, env=world.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: measuring quality needs imageio-ffmpeg, which is not installed; "
        "install the quality extra: pip install 'sophon-cli[quality]'"
    ]
    assert world.upload_count() == 0


def test_min_vmaf_out_of_range_is_a_usage_error(world, src):
    run = world.encode("talk.mp4", "--min-vmaf", "101")
    assert run.returncode == 2
    assert "--min-vmaf" in run.stderr and "Traceback" not in run.stderr
    assert world.upload_count() == 0


def test_gate_that_cannot_measure_fails_the_file(world, src, tmp_path):
    # an ffmpeg that cannot score (a real child process standing in for it): the file fails, the
    # unvetted encode is removed, and a rerun with a working ffmpeg recovers
    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho 'libvmaf: out of memory' >&2\nexit 1\n")
    fake.chmod(0o755)
    run = world.encode("talk.mp4", "--min-vmaf", "90", "--json", env={"IMAGEIO_FFMPEG_EXE": str(fake)})
    assert run.returncode == 7, run.stderr
    f = _file(run)
    assert f["result"] == "failed"
    assert f["reason"] == (
        "could not measure the quality of the encode: ffmpeg could not score the videos: libvmaf: out of memory"
    )
    assert not (world.work / "talk.sophon.mp4").exists()
    fixed = world.encode("talk.mp4", "--min-vmaf", "90", "--json")
    assert fixed.returncode == 0 and _file(fixed)["result"] == "encoded", fixed.stderr
    assert json.dumps(_file(fixed)["vmaf"])  # a number


def test_the_score_reaches_every_report_and_the_step_summary(world, src):
    """One gated run, then a cached rerun: the score is in --report (JSON, CSV, JUnit) and in
    GitHub's step summary both times (the rerun reads it from the cache)."""
    import csv
    import xml.etree.ElementTree as ET

    step = world.root / "step-summary.md"
    run = world.encode(
        "talk.mp4", *LOW, "--min-vmaf", "90", "--json", "--report", "r.json",
        env={"GITHUB_STEP_SUMMARY": str(step)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    vmaf = _file(run)["vmaf"]
    doc = json.loads((world.work / "r.json").read_text())
    (f,) = doc["files"]
    assert f["vmaf"] == vmaf and f["quality_below_threshold"] is True and f["result"] == "original kept"
    assert f["reason"].startswith("quality_below_threshold: VMAF ")
    md = step.read_text()
    header = next(line for line in md.splitlines() if line.startswith("| source"))
    assert header.endswith("| VMAF |")
    row = next(line for line in md.splitlines() if line.startswith("| talk.mp4"))
    assert row.endswith(f"| {vmaf:.2f} |")

    for name in ("r.csv", "r.xml"):  # the rerun decides from the cache: nothing scored again
        again = world.encode("talk.mp4", *LOW, "--min-vmaf", "90", "--json", "--report", name)
        assert again.returncode == 0, again.stderr
        assert _states(again) == ["cached"]
    (row,) = list(csv.DictReader((world.work / "r.csv").open(encoding="utf-8")))
    assert float(row["vmaf"]) == pytest.approx(vmaf) and row["quality_below_threshold"] == "true"
    case = ET.parse(world.work / "r.xml").getroot().find(".//testcase")
    assert f"vmaf: {vmaf:.2f}" in case.findtext("system-out")
