"""Large downloads (at least WRITE_BEHIND_MIN): received in one thread, hashed and written into
the safe writer by helper threads (files.WriteBehind), against a small real HTTP server on
127.0.0.1. The guarantees are those of every download: exact bytes, verified, a drop resumed
with Range without losing what was received, never more than the expected size on disk."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from sophon_cli.client.downloads import WRITE_BEHIND_MIN
from sophon_cli.client.errors import SizeExceededError
from sophon_cli.client.http import SophonClient
from sophon_cli.client.models import Job
from tests.client.hostile import FakeAPI, QuietHandler, Serving

KEY = "xt_live_LARGEDLKEY001"
_BLOCK = os.urandom(1 << 20)
DATA = _BLOCK * (WRITE_BEHIND_MIN // len(_BLOCK)) + os.urandom(12345)
SHA = hashlib.sha256(DATA).hexdigest()
SMALL = os.urandom(3 << 20)


def job(data: bytes = DATA) -> Job:
    return Job.model_validate(
        {
            "id": "job_1",
            "status": "completed",
            "output": {
                "state": "available",
                "container": "mp4",
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
            "final_artifact": "encoded",
        }
    )


class Origin(Serving):
    """``/v1/jobs/job_1/output`` -> 302 -> ``/dl/tok``; the first GET of ``/dl/tok`` sends
    ``drop_at`` bytes of a 200 and closes (when set), later ones honour Range."""

    def __init__(self, data: bytes, drop_at: int | None = None) -> None:
        self.ranges: list[str | None] = []
        origin = self

        class Handler(QuietHandler):
            def do_GET(self):
                if self.path.endswith("/output"):
                    self.redirect(302, "/dl/tok")
                    return
                rng = self.headers.get("Range")
                origin.ranges.append(rng)
                start = int(rng.split("=")[1].rstrip("-")) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                end = len(data)
                if len(origin.ranges) == 1 and drop_at is not None:
                    end, self.close_connection = drop_at, True
                view = memoryview(data)
                for i in range(start, end, 1 << 20):
                    self.wfile.write(view[i : min(i + (1 << 20), end)])

        self.serve(Handler)


def _download(url: str, target, data: bytes = DATA):
    """Download, noting (from the progress callback) whether a write-behind thread was running."""
    seen: list[bool] = []

    def on_progress(done, total):
        seen.append(any(t.name == "sophon-write-behind" for t in threading.enumerate()))

    with SophonClient(url, KEY, sleep=lambda s: None, max_retries=3) as c:
        result = c.downloads.download("job_1", target, job=job(data), on_progress=on_progress)
    return result, seen


def _sha_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_a_large_download_is_written_behind_and_exact(tmp_path):
    origin = Origin(DATA)
    try:
        result, seen = _download(origin.url, tmp_path / "o.mp4")
    finally:
        origin.close()
    assert result.verified and result.bytes == len(DATA) and _sha_of(tmp_path / "o.mp4") == SHA
    assert any(seen), "no write-behind thread while receiving"
    assert not any(t.name == "sophon-write-behind" for t in threading.enumerate())  # joined


def test_a_small_download_is_written_in_the_receiving_thread(tmp_path):
    origin = Origin(SMALL)
    try:
        result, seen = _download(origin.url, tmp_path / "o.mp4", SMALL)
    finally:
        origin.close()
    assert result.verified and (tmp_path / "o.mp4").read_bytes() == SMALL
    assert seen and not any(seen)


def test_a_large_download_dropped_midway_resumes_with_everything_received(tmp_path):
    drop_at = 40 * (1 << 20) + 4321
    origin = Origin(DATA, drop_at=drop_at)
    try:
        result, _ = _download(origin.url, tmp_path / "o.mp4")
    finally:
        origin.close()
    assert origin.ranges == [None, f"bytes={drop_at}-"]  # every received byte was written first
    assert result.verified and _sha_of(tmp_path / "o.mp4") == SHA


def test_a_large_body_longer_than_the_job_says_is_cut_at_the_expected_size(tmp_path):
    body = DATA + os.urandom(3 << 20)  # no Content-Length: only the writer can see it is too long
    with FakeAPI(body, size=len(DATA), sha256=SHA, chunk=1 << 20, content_length=False) as api:
        with SophonClient(api.url, KEY, max_retries=0) as c:
            with pytest.raises(SizeExceededError) as info:
                c.downloads.download("job_1", tmp_path / "o.mp4", job=job())
    assert info.value.limit == len(DATA)
    assert not (tmp_path / "o.mp4").exists()
    assert all(p.stat().st_size <= len(DATA) for p in tmp_path.iterdir())
    assert not any(t.name == "sophon-write-behind" for t in threading.enumerate())


class Trickle(Serving):
    """A 200 with the whole Content-Length that sends ``burst`` bytes, then one byte every 0.05 s
    until the client goes away (or 200 bytes were trickled)."""

    def __init__(self, data: bytes, burst: int) -> None:
        self.sent = 0
        origin = self

        class Handler(QuietHandler):
            def do_GET(self):
                if self.path.endswith("/output"):
                    self.redirect(302, "/dl/tok")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data[:burst])
                    origin.sent = burst
                    for i in range(burst, burst + 200):
                        time.sleep(0.05)
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        origin.sent = i + 1
                except OSError:
                    pass
                self.close_connection = True

        self.serve(Handler)


def test_a_large_download_that_stalls_keeps_every_byte_received_in_the_part(tmp_path):
    from sophon_cli.client.errors import TransportError

    burst = 10 * (1 << 20) + 1234  # two and a half write-behind buffers: a partial one at the stall
    origin = Trickle(DATA, burst)
    try:
        with SophonClient(origin.url, KEY, sleep=lambda s: None, max_retries=0, stall_seconds=0.5) as c:
            with pytest.raises(TransportError) as info:
                c.downloads.download("job_1", tmp_path / "o.mp4", job=job())
    finally:
        origin.close()
    assert "stalled" in str(info.value)
    assert not (tmp_path / "o.mp4").exists()
    (part,) = [p for p in tmp_path.iterdir() if p.name.endswith(".sophon-part")]
    kept = part.read_bytes()
    assert burst <= len(kept) <= origin.sent and kept == DATA[: len(kept)]  # all of it, in order
    assert not any(t.name.startswith("sophon-") and "behind" in t.name for t in threading.enumerate())
