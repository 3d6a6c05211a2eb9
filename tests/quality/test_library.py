"""sophon_cli.quality.compare on real files: copies, real server encodes, degraded versions, bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from sophon_cli.quality import (
    DurationMismatchError,
    MediaError,
    QualityError,
    QualityReport,
    compare,
)
from sophon_cli.quality.command import build_command, default_threads
from sophon_cli.quality.probe import VideoInfo
from sophon_cli.quality.report import percentile
from tests.quality.conftest import ffmpeg

pytestmark = pytest.mark.encode


def test_untouched_copy_scores_at_least_99(source, tmp_path):
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(source, copy)
    r = compare(source, copy)
    # VMAF is not exactly 100 on every identical frame (its motion feature), but close
    assert r.vmaf.mean >= 99 and r.vmaf.min >= 95
    assert r.ssim >= 0.999
    assert r.psnr_y >= 59  # libvmaf caps identical 8-bit frames at 60 dB
    assert r.frames_scored == r.frames_compared == 15
    assert (r.width, r.height, r.scaled, r.rate_matched) == (320, 240, False, False)
    assert r.model == "vmaf_v0.6.1" and r.threads == default_threads()


def test_video_starting_after_the_audio_is_compared_frame_for_frame(source, tmp_path, ffmpeg_exe):
    # a stream copy of the video starting 0.4 s into the file (audio from 0): timestamps are reset
    shifted = tmp_path / "shifted.mp4"
    ffmpeg(
        ffmpeg_exe,
        "-itsoffset", "0.4", "-i", str(source), "-f", "lavfi", "-i", "sine=duration=1.4",
        "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(shifted),
    )  # fmt: skip
    r = compare(source, shifted)
    assert r.vmaf.mean >= 99 and r.frames_scored == 15


def test_real_server_encode_scores_high_and_degraded_clearly_lower(source, server_encode, degraded):
    good = compare(source, server_encode())
    bad = compare(source, degraded)
    assert 90 <= good.vmaf.mean < 100
    assert bad.vmaf.mean < 60 and bad.vmaf.mean < good.vmaf.mean - 30
    assert bad.ssim < good.ssim and bad.psnr_y < good.psnr_y
    for r in (good, bad):
        v = r.vmaf
        assert v.min <= v.p1 <= v.harmonic_mean <= v.mean <= v.max


def test_server_encode_at_lower_height_is_scaled_back_with_bicubic(source, server_encode):
    r = compare(source, server_encode(height=144))
    assert r.scaled and (r.distorted_width, r.distorted_height) == (192, 144)
    assert (r.width, r.height) == (320, 240)
    assert 40 < r.vmaf.mean < 95  # real loss, but a sane score (not garbage from a size mismatch)


def test_frame_rate_is_matched(source, tmp_path, ffmpeg_exe):
    doubled = tmp_path / "30fps.mp4"
    ffmpeg(ffmpeg_exe, "-i", str(source), "-r", "30", "-c:v", "libx264", "-crf", "0", str(doubled))
    r = compare(source, doubled)
    assert r.rate_matched and r.fps == "15"
    assert r.frames_compared == 15 and r.vmaf.mean >= 95


def test_subsample_scores_every_nth_frame(source, tmp_path):
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(source, copy)
    r = compare(source, copy, subsample=4)
    assert r.subsample == 4 and r.frames_compared == 15
    assert r.frames_scored == math.ceil(15 / 4)
    assert r.vmaf.mean >= 99


def test_progress_reports_frames_up_to_the_total(source, degraded):
    seen: list[tuple[int, int | None]] = []
    compare(source, degraded, on_progress=lambda done, total: seen.append((done, total)))
    assert seen, "no progress reported"
    assert all(total == 15 for _, total in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 15


def test_report_round_trips_through_json(source, degraded):
    r = compare(source, degraded, subsample=2)
    doc = json.loads(json.dumps(r.to_dict()))
    assert QualityReport.from_dict(doc) == r
    assert set(doc["vmaf"]) == {"mean", "harmonic_mean", "p1", "min", "max"}


# ---- bad input: one-line errors of the documented types ---------------------------------------


def test_missing_file(source, tmp_path):
    with pytest.raises(MediaError, match="no such file") as info:
        compare(source, tmp_path / "nope.mp4")
    assert info.value.path == tmp_path / "nope.mp4"


def test_directory(source, tmp_path):
    with pytest.raises(MediaError, match="is a directory"):
        compare(tmp_path, source)


def test_not_a_video(source, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    with pytest.raises(MediaError, match="not a video file"):
        compare(source, text)


def test_no_video_stream(source, tmp_path, ffmpeg_exe):
    audio = tmp_path / "tone.m4a"
    ffmpeg(ffmpeg_exe, "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(audio))
    with pytest.raises(MediaError, match="has no video stream"):
        compare(source, audio)


def test_durations_beyond_tolerance(source, tmp_path):
    from tests.conftest import _make_clip

    longer = _make_clip(tmp_path / "long.mp4", seconds=2, size="320x240", rate=15)
    with pytest.raises(DurationMismatchError) as info:
        compare(source, longer)
    assert info.value.reference == pytest.approx(1.0, abs=0.1)
    assert info.value.distorted == pytest.approx(2.0, abs=0.1)
    assert "\n" not in str(info.value)
    # within a tolerance that covers it, the common part is scored
    r = compare(source, longer, duration_tolerance=1.5)
    assert r.frames_compared == 15 and r.vmaf.mean >= 99


def test_bad_arguments(source):
    for kwargs in ({"subsample": 0}, {"threads": 0}, {"model": "vmaf_nope"}):
        with pytest.raises(ValueError):
            compare(source, source, **kwargs)


# ---- ffmpeg failing or hanging (a real child process standing in for ffmpeg) ---------------------


def _fake_ffmpeg(tmp_path: Path, body: str) -> str:
    exe = tmp_path / "ffmpeg"
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
    return str(exe)


def test_ffmpeg_failure_is_one_line_with_its_last_message(source, tmp_path):
    exe = _fake_ffmpeg(tmp_path, "echo 'first line' >&2; printf 'model not found\\033[31m\\n' >&2; exit 1")
    with pytest.raises(QualityError) as info:
        compare(source, source, ffmpeg=exe)
    msg = str(info.value)
    assert msg == "ffmpeg could not score the videos: model not found [31m"  # control characters dropped
    assert "\x1b" not in msg


def test_ffmpeg_that_stalls_is_stopped(source, tmp_path):
    pid_file = tmp_path / "pid"
    exe = _fake_ffmpeg(tmp_path, f"echo $$ > {pid_file}; exec sleep 30")
    with pytest.raises(QualityError, match="no progress for 0.5 s"):
        compare(source, source, ffmpeg=exe, stall_timeout=0.5)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped, not left running


# ---- the pure parts -------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy():
    assert percentile([5.0], 1) == 5.0
    assert percentile([0.0, 100.0], 1) == pytest.approx(1.0)
    assert percentile(list(map(float, range(101))), 1) == pytest.approx(1.0)
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def _info(path, w, h, fps, pix="yuv420p"):
    return VideoInfo(Path(path), w, h, 1.0, Fraction(fps), 15, pix, "h264")


def test_command_prepares_streams_the_standard_way():
    ref = _info("/v/ref:1.mp4", 1920, 1080, Fraction(30000, 1001))
    dis = _info("-dist.mp4", 1280, 720, 25)
    cmd, prep = build_command("ffmpeg", ref, dis, subsample=5, threads=3)
    graph = cmd[cmd.index("-filter_complex") + 1]
    dist_chain, ref_chain, vmaf = graph.split(";")
    assert dist_chain == (
        "[0:v:0]setpts=PTS-STARTPTS,fps=30000/1001,scale=1920:1080:flags=bicubic,format=yuv420p[dis]"
    )
    assert ref_chain == "[1:v:0]setpts=PTS-STARTPTS,format=yuv420p[ref]"
    assert vmaf.startswith("[dis][ref]libvmaf=model=version=vmaf_v0.6.1:")
    assert "feature=name=psnr|name=float_ssim" in vmaf
    assert "n_threads=3" in vmaf and "n_subsample=5" in vmaf
    # distorted first (libvmaf's main input), both as file: paths (no protocol or option parsing)
    inputs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-i"]
    assert inputs == [f"file:{Path('-dist.mp4').resolve()}", "file:/v/ref:1.mp4"]
    assert prep.scaled and prep.rate_matched


def test_command_leaves_matching_streams_alone_and_keeps_high_bit_depth():
    ref = _info("/r.mkv", 640, 360, 24, "yuv420p10le")
    dis = _info("/d.mkv", 640, 360, 24, "yuv420p")
    cmd, prep = build_command("ffmpeg", ref, dis)
    graph = cmd[cmd.index("-filter_complex") + 1]
    assert "scale=" not in graph and "fps=" not in graph
    assert graph.count("format=yuv420p10le") == 2
    assert not prep.scaled and not prep.rate_matched
    odd = _info("/j.mp4", 640, 360, 24, "yuvj420p")
    assert build_command("ffmpeg", odd, dis)[1].pix_fmt == "yuv420p"


# ---- usable without typer/rich; a clear error without the extra ---------------------------------


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_library_runs_without_loading_typer_or_rich(source):
    code = (
        "import sys; from sophon_cli.quality import compare;"
        "r = compare(sys.argv[1], sys.argv[1], subsample=5);"
        "print(r.vmaf.mean, sorted(m for m in ('typer', 'rich', 'httpx', 'pydantic') if m in sys.modules))"
    )
    proc = _python(code, str(source))
    assert proc.returncode == 0, proc.stderr
    score, loaded = proc.stdout.split(" ", 1)
    assert float(score) >= 99 and loaded.strip() == "[]"


@pytest.mark.parametrize("module", ["imageio_ffmpeg", "av"])
def test_missing_extra_is_a_clear_error_naming_it(source, module):
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"  # what an install without the extra looks like
        "from sophon_cli.quality import compare, QualityUnavailableError\n"
        "try:\n    compare(sys.argv[1], sys.argv[1])\n"
        "except QualityUnavailableError as e:\n    print(f'{e}; {e.hint}')\n"
    )
    proc = _python(code, str(source))
    assert proc.returncode == 0, proc.stderr
    assert "is not installed" in proc.stdout
    assert "pip install 'sophon-cli[quality]'" in proc.stdout


def test_find_ffmpeg_is_imageio_ffmpegs_binary(monkeypatch):
    import imageio_ffmpeg

    from sophon_cli.quality.scoring import find_ffmpeg

    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE", raising=False)
    assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", "/opt/ffmpeg")  # explicit wins, as in imageio-ffmpeg
    assert find_ffmpeg() == "/opt/ffmpeg"


def test_the_ffmpeg_check_gets_no_sophon_variable(tmp_path, monkeypatch):
    # imageio_ffmpeg.get_ffmpeg_exe() runs `ffmpeg -version` with the whole environment; our check
    # runs a real child without the key (this stand-in records what it was given)
    from sophon_cli.quality.scoring import runs

    seen = tmp_path / "env.txt"
    fake = tmp_path / "ffmpeg"
    fake.write_text(f'#!/bin/sh\nenv > {seen}\n[ "$1" = -version ]\n')
    fake.chmod(0o755)
    monkeypatch.setenv("SOPHON_API_KEY", "sk-never-in-a-child")
    assert runs(str(fake)) is True
    assert "sk-never-in-a-child" not in seen.read_text() and "PATH=" in seen.read_text()
    assert runs(str(tmp_path / "missing")) is False
