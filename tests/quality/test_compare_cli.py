"""`sophon compare` as a real subprocess: JSON, the piped table, the terminal (pty), bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import _make_clip
from tests.helpers.env import cli_env
from tests.helpers.tty import pty_run

pytestmark = pytest.mark.encode


@pytest.fixture
def copy(source, tmp_path):
    path = tmp_path / "copy.mp4"
    shutil.copyfile(source, path)
    return path


def test_json_is_one_object_with_every_score(cli, source, degraded):
    proc = cli("compare", source, degraded, "--json", "--subsample", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert doc["reference"] == str(source) and doc["distorted"] == str(degraded)
    assert 0 < doc["vmaf"]["mean"] < 60
    assert doc["vmaf"]["min"] <= doc["vmaf"]["p1"] <= doc["vmaf"]["harmonic_mean"] <= doc["vmaf"]["mean"]
    assert 0 < doc["ssim"] < 1 and doc["psnr_y"] > 0
    assert (doc["subsample"], doc["frames_scored"], doc["frames_compared"]) == (3, 5, 15)
    assert proc.stderr == ""  # no progress or notices with --json


def test_piped_output_is_a_tab_separated_table(cli, source, copy):
    proc = cli("compare", source, copy)
    assert proc.returncode == 0, proc.stderr
    rows = dict(line.split("\t") for line in proc.stdout.splitlines())
    assert rows.pop("METRIC") == "VALUE"
    assert float(rows["VMAF mean"]) >= 99
    assert set(rows) == {
        "VMAF mean", "VMAF harmonic mean", "VMAF 1% low", "VMAF min",
        "SSIM", "PSNR Y", "PSNR Cb", "PSNR Cr", "frames scored",
    }  # fmt: skip
    assert rows["frames scored"] == "15 of 15"


def test_scaled_encode_says_so(cli, source, server_encode):
    proc = cli("compare", source, server_encode(height=144))
    assert proc.returncode == 0, proc.stderr
    assert "note: the distorted video (192x144) was scaled to 320x240 (bicubic) for scoring" in proc.stderr


def test_terminal_shows_progress_and_a_table(server, source, degraded, tmp_path):
    code, data = pty_run(["compare", source, degraded], cli_env(home=tmp_path / "home"), columns=100)
    assert code == 0
    text = data.decode("utf-8", "replace")
    assert re.search(r"scoring 15/15 frames, \d+ fps", text)  # frames done/total and the rate
    assert "━" in text and "100%" in text  # the bar
    assert re.search(r"\d:\d\d:\d\d", text)  # the ETA column
    assert "┃" in text and "VMAF 1% low" in text and "PSNR Y" in text  # a rich table
    assert "METRIC\tVALUE" not in text


def _one_line_error(proc, code: int, *needles: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_missing_file(cli, source, tmp_path):
    _one_line_error(cli("compare", source, tmp_path / "nope.mp4"), 2, "no such file", "nope.mp4")


def test_not_a_video(cli, source, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    _one_line_error(cli("compare", bad, source), 2, "notes.txt is not a video file")


def test_no_video_stream(cli, source, tmp_path, ffmpeg_exe):
    from tests.quality.conftest import ffmpeg

    audio = tmp_path / "tone.m4a"
    ffmpeg(ffmpeg_exe, "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(audio))
    _one_line_error(cli("compare", source, audio), 2, "tone.m4a has no video stream")


def test_durations_mismatched_names_the_tolerance_to_pass(cli, source, tmp_path):
    longer = _make_clip(tmp_path / "long.mp4", seconds=2, size="320x240", rate=15)
    line = _one_line_error(cli("compare", source, longer), 2, "differ in duration", "tolerance 0.5 s")
    needed = float(line.rsplit("--duration-tolerance ", 1)[1])
    assert needed > 1.0
    proc = cli("compare", source, longer, "--duration-tolerance", needed, "--json")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "args, needle",
    [(["--subsample", "0"], "--subsample"), (["--threads", "0"], "--threads"), (["--model", "x"], "--model")],
)
def test_bad_options_are_usage_errors(cli, source, args, needle):
    _one_line_error(cli("compare", source, source, *args), 2, needle, "sophon compare --help")


def test_without_the_extra_names_it(source, tmp_path):
    code = (
        "import sys; sys.modules['imageio_ffmpeg'] = None\n"
        "from sophon_cli.cli.main import main\nmain(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "compare", str(source), str(source)],
        capture_output=True, text=True, timeout=60,
        env=cli_env(home=tmp_path / "home"),
    )  # fmt: skip
    line = _one_line_error(proc, 1, "imageio-ffmpeg", "pip install 'sophon-cli[quality]'")
    assert line.startswith("error: measuring quality needs imageio-ffmpeg")


def test_root_help_lists_compare(cli):
    proc = cli("--help")
    assert re.search(r"compare\s+Score an encode against its source", proc.stdout)
