"""Crash and resume: SIGKILL of the real CLI process at seeded random points.

- upload of a big file (reduced 24 MB / 3 kills; full 200 MB / 20 kills; 1 MB parts):
  the final sha256 matches, the server holds exactly one upload session, and each resume re-sends
  at most ``concurrency`` parts the server had already received;
- download of an output over a slow link (reduced 3 kills; full 10): the final file's sha256 equals
  the job's, and the target path never holds a partial file.
(`encode` batches under SIGKILL are in test_encode_resilience.py.)
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sophon_cli.client.files import part_path
from tests.conftest import TEST_KEY

from .conftest import (
    count_jobs,
    count_uploads,
    db_rows,
    padded_video,
    popen_cli,
    read_log,
    run_cli,
    sha256_of,
    wait_jobs_terminal,
)
from .stress import MB, count

CONCURRENCY = 4


def _parts_received(srv) -> int:
    return db_rows(srv, "SELECT COUNT(*) FROM upload_parts")[0][0]


def _kill_when(proc, predicate, timeout=120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``predicate()`` holds; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            hit = predicate()
        except Exception:  # the DB may be busy for a moment
            hit = False
        if hit:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            return True
        time.sleep(0.005)
    proc.kill()
    proc.communicate()
    raise AssertionError("the kill point was never reached")


@pytest.mark.stress
def test_upload_survives_sigkill_and_resumes_without_resending(make_server, tmp_path):
    size = count(24, 200) * MB
    chunk = 1 * MB  # 24 / 200 parts: room for every kill (each also lets in-flight parts land)
    kills = count(3, 20)
    rng = random.Random(20261128)
    srv = make_server(chunk_size=chunk, faults="PUT /v1/uploads/*/parts/*=latency:60ms")
    src = padded_video(tmp_path / "big.mp4", size, seed=1)
    local_sha = sha256_of(src)
    total = -(-size // chunk)
    home = tmp_path / "home"
    # kill points: one at a random time (start-up, hashing or early parts), then "once the server
    # holds N parts" for random N ahead of what it holds, spaced so every kill has room to land
    killed = 0
    for k in range(kills):
        proc = popen_cli("upload", src, "--concurrency", CONCURRENCY, server=srv, home=home)
        if k == 0:
            start, after = time.monotonic(), rng.uniform(0.1, 0.8)
            hit = _kill_when(
                proc, lambda s=start, a=after: time.monotonic() - s >= a or _parts_received(srv) >= 2
            )
        else:
            have = _parts_received(srv)
            room = total - 1 - have
            assert room >= 1, f"no parts left to kill in before kill {k + 1}"
            spare = room - CONCURRENCY * (kills - k)  # in-flight parts may land after each kill
            target = have + rng.randint(1, max(1, spare // (kills - k)))
            hit = _kill_when(proc, lambda t=target: _parts_received(srv) >= t)
        killed += hit
        assert proc.returncode in (-signal.SIGKILL, 0)
    assert killed == kills, "a run finished before its kill point"
    assert _parts_received(srv) < total  # the kills really left it unfinished
    final = run_cli("upload", src, "--concurrency", CONCURRENCY, server=srv, home=home, timeout=300)
    assert final.returncode == 0, final.stderr
    upload_id = final.stdout.split()[0]
    assert upload_id.startswith("upl_")
    assert count_uploads(srv) == 1  # every resume found the same session
    row = db_rows(srv, "SELECT status, sha256, file_size FROM uploads WHERE id=?", (upload_id,))[0]
    assert row == ("completed", local_sha, size)
    # re-sent parts: a PUT of a part that an earlier PUT had already stored (200)
    stored: set[int] = set()
    resent = 0
    for rec in read_log(srv):
        if rec["route"] == "PUT /v1/uploads/{id}/parts/{part_number}":
            n = int(rec["path"].rsplit("/", 1)[1])
            if n in stored:
                resent += 1
            if rec["status"] == 200:
                stored.add(n)
    assert stored == set(range(total))
    assert resent <= killed * CONCURRENCY, (resent, killed)
    # encoding the same file afterwards, then again with the local cache gone, reuses that
    # session and makes exactly one job (the server's idempotency keys, not the cache, decide)
    for n, cache in enumerate((home, tmp_path / "fresh-home")):
        enc = run_cli(
            "encode", src, "-o", tmp_path / f"out{n}", "--profile", "sophon-espresso", server=srv, home=cache
        )
        assert enc.returncode == 0, enc.stderr
    assert count_uploads(srv) == 1
    assert count_jobs(srv) == 1


def _noise_clip(path: Path, seconds: float, size: str) -> Path:
    import imageio_ffmpeg

    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=15:duration={seconds},noise=alls=80:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-qp",
            "10",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return path


@pytest.mark.stress
def test_download_survives_sigkill_target_never_partial(make_server, slow_proxy, tmp_path):
    from sophon_cli.client.http import SophonClient

    kills = count(3, 10)
    rng = random.Random(7)
    srv = make_server()
    src = _noise_clip(tmp_path / "noise.mp4", count(2, 4), count("320x240", "640x480"))
    with SophonClient(srv.url, TEST_KEY) as c:
        up = c.uploads.upload_file(src)
        job = c.jobs.create(up.upload_id, profile="sophon-espresso-hq", idempotency_key="rel-dl-job")
    job = wait_jobs_terminal(srv, [job.id], timeout=180)[job.id]
    assert job["status"] == "completed", job
    out_bytes, out_sha = job["output"]["bytes"], job["output"]["sha256"]
    proxy = slow_proxy(srv, rate=max(out_bytes // 3, 200_000))  # ~3 s per full transfer
    target = tmp_path / "dl" / "result.mp4"
    part = part_path(target)
    home = tmp_path / "home"
    fractions = sorted(rng.uniform(0.05, 0.95) for _ in range(kills))
    killed = 0
    seen_partial_target: list[int] = []
    for frac in fractions:
        have = part.stat().st_size if part.exists() else 0
        frac = max(frac, (have + 65536) / out_bytes)  # always a point this run has yet to reach
        if frac >= 1:
            break
        proc = popen_cli("download", job["id"], "-o", target, server=proxy.url, home=home)

        def reached(f=frac):
            if target.exists():
                seen_partial_target.append(target.stat().st_size)
            return part.exists() and part.stat().st_size >= f * out_bytes

        killed += _kill_when(proc, reached)
        assert not target.exists(), "the target path holds a partial file after a kill"
        assert not seen_partial_target
    assert killed >= kills - 1
    assert part.exists() and 0 < part.stat().st_size < out_bytes
    have = part.stat().st_size
    final = run_cli("--json", "download", job["id"], "-o", target, server=proxy.url, home=home, timeout=120)
    assert final.returncode == 0, final.stderr
    result = json.loads(final.stdout.strip().splitlines()[-1])
    assert result["resumed_from"] == have  # it resumed from the partial, not from zero
    assert sha256_of(target) == out_sha
    assert target.stat().st_size == out_bytes
    assert not part.exists()


def test_download_resumes_across_dropped_connections(make_server, slow_proxy, tmp_path):
    """The link drops every connection mid-body: the download resumes with Range each time and
    ends with the job's sha256; the target never holds a partial file."""
    from sophon_cli.client.http import SophonClient

    srv = make_server()
    src = _noise_clip(tmp_path / "noise.mp4", 1, "320x240")
    with SophonClient(srv.url, TEST_KEY) as c:
        up = c.uploads.upload_file(src)
        job = c.jobs.create(up.upload_id, profile="sophon-espresso-hq", idempotency_key="rel-drop-job")
    job = wait_jobs_terminal(srv, [job.id], timeout=180)[job.id]
    out_bytes = job["output"]["bytes"]
    proxy = slow_proxy(srv, rate=100_000_000, cut_after=out_bytes // 3)
    target = tmp_path / "dl" / "result.mp4"
    got = run_cli("--json", "download", job["id"], "-o", target, server=proxy.url, home=tmp_path / "h")
    assert got.returncode == 0, got.stderr
    assert proxy.cuts >= 3  # the body really arrived in pieces
    assert sha256_of(target) == job["output"]["sha256"]
    assert not part_path(target).exists()
