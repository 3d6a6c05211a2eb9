"""Stopping `sophon compare` and the encode quality gate while ffmpeg scores: the real CLI process,
its real ffmpeg child, and real signals. No ffmpeg outlives the CLI.

A Ctrl-C (SIGINT to the CLI) stops ffmpeg and exits 130 with the one "interrupted" line; a kill
that skips every cleanup (SIGKILL, like the second Ctrl-C's immediate exit) still ends ffmpeg (its
next progress line meets a closed pipe). The gate keeps the downloaded, verified encode in place,
unscored, and says so; the rerun scores it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import _make_clip
from tests.helpers.env import cli_env

pytestmark = [
    pytest.mark.encode,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the ffmpeg child"),
]

INTERRUPTED = "interrupted; run the same command again to resume"  # cli/main.py, the error boundary
#: compare keeps nothing between runs: its line says so instead of offering a resume
COMPARE_INTERRUPTED = "interrupted; nothing was scored or saved (running it again scores from the start)"


@pytest.fixture(scope="module")
def long_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A 20 s 320x240 clip and a copy: scoring takes seconds, long enough to interrupt."""
    d = tmp_path_factory.mktemp("interrupt")
    ref = _make_clip(d / "long.mp4", seconds=20, size="320x240", rate=15)
    dist = d / "long-copy.mp4"
    shutil.copyfile(ref, dist)
    return ref, dist


def _ffmpeg_children(pid: int) -> list[int]:
    """The children of ``pid`` running ffmpeg's scoring pass (not imageio-ffmpeg's ``-version`` check)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if (
            ppid == pid
            and b"ffmpeg" in Path(os.fsdecode(argv[0])).name.encode()
            and b"-filter_complex" in argv
        ):
            found.append(int(entry.name))
    return found


def _wait_for_ffmpeg(proc: subprocess.Popen, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = _ffmpeg_children(proc.pid)
        if children:
            return children[0]
        if proc.poll() is not None:
            raise AssertionError(f"the CLI ended before scoring started: {proc.communicate()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("no ffmpeg child appeared")


def _gone(pid: int, timeout: float = 10) -> bool:
    """The process no longer exists (a zombie counts as gone: it no longer runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def _downloads(world) -> int:
    """Output downloads the server answered (the signed download link's route in its request log)."""
    return sum(1 for r in world.requests() if r.get("route") == "GET /v1/downloads/{token}")


def _popen(args: list, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_ctrl_c_during_compare_stops_ffmpeg_and_exits_130(long_pair, tmp_path):
    ref, dist = long_pair
    env = cli_env(home=tmp_path / "home", SOPHON_API_KEY="sk-never-in-a-child")
    proc = _popen(["compare", ref, dist, "--threads", "1"], env)
    ffmpeg = _wait_for_ffmpeg(proc)
    assert b"sk-never-in-a-child" not in Path(f"/proc/{ffmpeg}/environ").read_bytes()
    assert not _gone(ffmpeg, timeout=0)  # still scoring when the signal arrives
    # a terminal's Ctrl-C goes to the foreground process group: ffmpeg is not in ours, so only the
    # CLI gets it and decides; it stays in our session (the same scheduler autogroup)
    assert os.getpgid(ffmpeg) != os.getpgid(proc.pid)
    assert os.getsid(ffmpeg) == os.getsid(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [COMPARE_INTERRUPTED] and out == ""
    assert "resume" not in err
    assert _gone(ffmpeg), "ffmpeg outlived `sophon compare`"


def test_killed_compare_takes_ffmpeg_with_it(long_pair, tmp_path):
    ref, dist = long_pair
    proc = _popen(["compare", ref, dist, "--threads", "1", "--json"], cli_env(home=tmp_path / "home"))
    ffmpeg = _wait_for_ffmpeg(proc)
    proc.kill()  # no handler, no finally: only the kernel can stop the child now
    proc.communicate(timeout=30)
    assert _gone(ffmpeg), "ffmpeg outlived a killed `sophon compare`"


@pytest.mark.parametrize("ctrl_c", [1, 2], ids=["one-ctrl-c", "two-ctrl-c"])
def test_ctrl_c_while_the_encode_gate_scores_keeps_the_verified_encode_for_the_rerun(
    world, long_pair, ctrl_c
):
    """The encode is downloaded and verified; the score is extra. One Ctrl-C or two (the second
    stops at once) end the same way: ffmpeg stopped, the encode kept at its output path, the cache
    at ``downloaded`` with no score, one line that says exactly that; the rerun scores it without
    downloading it again. (Before: the first Ctrl-C deleted the verified encode, the second left it
    unscored, and both said only "run the same command again to resume".)"""
    import hashlib

    from sophon_cli.state import StateStore

    src = world.work / "talk.mp4"
    shutil.copyfile(long_pair[0], src)
    out_path = world.work / "talk.sophon.mp4"
    proc = world.popen("talk.mp4", "--min-vmaf", "50", "--json")
    ffmpeg = _wait_for_ffmpeg(proc, timeout=180)
    for _ in range(ctrl_c):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)  # two separate signals (not one coalesced), the second while the first unwinds
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "interrupted" in line] == [
        "interrupted; talk.sophon.mp4 is downloaded and verified but not scored yet (kept in place); "
        "run the same command again to score it without downloading again"
    ]
    assert _gone(ffmpeg), "ffmpeg outlived `sophon encode`"
    (entry,) = StateStore(world.home / "state.json").entries().values()
    assert entry["state"] == "downloaded" and entry.get("vmaf") is None and entry["verified"] is True
    assert entry["output"] == str(out_path)
    assert hashlib.sha256(out_path.read_bytes()).hexdigest() == entry["output_sha256"]

    downloads = _downloads(world)
    assert downloads >= 1  # the first run downloaded it
    again = world.encode("talk.mp4", "--min-vmaf", "50", "--json", timeout=300)
    assert again.returncode == 0, again.stderr
    f = again.summary()["files"][0]
    assert f["result"] == "encoded" and f["vmaf"] >= 50
    assert [e["state"] for e in again.events() if e.get("event") == "state"][0] == "scoring"
    assert _downloads(world) == downloads
