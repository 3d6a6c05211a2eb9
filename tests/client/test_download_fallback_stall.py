"""The signed-URL reply handled by httpx (client/direct_get.py leaves redirects, compressed and
chunked bodies to it) is bounded as a whole, like the direct path: its head (redirect hops
included) within the stream timeout, its body by the stall rule (SOPHON_MIN_RATE over
SOPHON_STALL_SECONDS) on the bytes that arrive, whether or not they decode to any output.

A small real HTTP server on 127.0.0.1 trickles a byte every 0.1 s: each read comes well inside the
per-read timeout, so before the fix every case here ran until the server gave up (about a minute)
and ended in something other than a stall. Each trickle records whether the client hung up first."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from sophon_cli.client.errors import TransportError
from sophon_cli.client.files import part_path
from sophon_cli.client.http import SophonClient
from sophon_cli.client.models import Job
from tests.client.hostile import QuietHandler, Serving
from tests.helpers.env import TEST_KEY, cli_env

KEY = "xt_live_FALLBACKKEY01"
DATA = os.urandom(256 * 1024)
SHA = hashlib.sha256(DATA).hexdigest()
TRICKLE_BYTES = 600  # one every 0.1 s: a minute, far beyond the 1 s limits of the client below
GZIP_HEADER = bytes.fromhex("1f8b0800000000000003")
EMPTY_FLUSH = bytes.fromhex("000000ffff")  # an empty stored deflate block (a sync flush): no output


JOB = {
    "id": "job_1",
    "status": "completed",
    "output": {"state": "available", "container": "mp4", "bytes": len(DATA), "sha256": SHA},
    "final_artifact": "encoded",
}


def job():
    return Job.model_validate(JOB)


class Origin(Serving):
    """``/v1/jobs/job_1/output`` -> 302 -> ``/dl/tok`` -> 307 -> ``/dl/moved`` (so the reply is
    httpx's), answered as ``how`` says. ``outcomes`` collects, per trickle, "cut" (the client hung
    up) or "finished" (the server trickled all it had)."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.outcomes: list[str] = []
        self.done = threading.Event()
        origin = self

        class Handler(QuietHandler):
            def do_GET(self):
                if self.path == "/v1/jobs/job_1":
                    doc = json.dumps(JOB).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(doc)))
                    self.end_headers()
                    self.wfile.write(doc)
                    return
                if self.path.endswith("/output"):
                    return self.redirect(302, "/dl/tok")
                if self.path == "/dl/tok":
                    return self.redirect(307, "/dl/moved")
                self.close_connection = True
                try:
                    getattr(self, origin.how)()
                    origin.outcomes.append("finished")
                except OSError:
                    origin.outcomes.append("cut")
                finally:
                    origin.done.set()

            def trickle(self, blob):
                for i in range(len(blob)):
                    self.wfile.write(blob[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.1)

            def head(self):  # the status line, then one header byte at a time
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self.trickle(b"X-Slow: " + b"a" * TRICKLE_BYTES)

            def gzip(self):  # a compressed body whose bytes never decode to any output
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(DATA)))
                self.end_headers()
                self.trickle(GZIP_HEADER + EMPTY_FLUSH * (TRICKLE_BYTES // len(EMPTY_FLUSH)))

            def chunks(self):  # a chunked body that never finishes its first chunk-size line
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.trickle(b"10;ext=" + b"x" * TRICKLE_BYTES)

            def slow_redirect_body(self):  # a second redirect whose (discarded) body trickles
                self.send_response(307)
                self.send_header("Location", "/dl/tok")
                self.send_header("Content-Length", str(TRICKLE_BYTES))
                self.end_headers()
                self.trickle(b"r" * TRICKLE_BYTES)

        self.serve(Handler)


@pytest.mark.parametrize("how", ["head", "gzip", "chunks", "slow_redirect_body"])
def test_a_trickling_reply_on_the_httpx_path_is_a_stall(how, tmp_path):
    origin = Origin(how)
    try:
        with SophonClient(
            origin.url,
            KEY,
            sleep=lambda s: None,
            max_retries=0,
            timeout=1.0,
            stall_seconds=1.0,
            min_rate=1024,
        ) as c:
            with pytest.raises(TransportError) as info:
                c.downloads.download("job_1", tmp_path / "o.mp4", job=job())
        assert "stalled" in str(info.value)  # the download stall: exit 8, a rerun resumes
        assert origin.done.wait(30), "the trickling reply never ended"
        assert origin.outcomes == ["cut"], origin.outcomes  # the client hung up, not the server
        assert not (tmp_path / "o.mp4").exists()
        assert not part_path(tmp_path / "o.mp4").exists()  # nothing was received: no .part left
    finally:
        origin.close()


def test_the_cli_exits_8_on_a_stall_of_the_httpx_path(tmp_path):
    origin = Origin("gzip")
    try:
        env = {"SOPHON_STALL_SECONDS": 1, "SOPHON_MIN_RATE": 1, "SOPHON_TIMEOUT": 1, "SOPHON_MAX_RETRIES": 0}
        res = subprocess.run(
            [sys.executable, "-m", "sophon_cli", "download", "job_1", "-o", str(tmp_path / "o.mp4")],
            env=cli_env(server=origin.url, home=tmp_path / "home", extra=env),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 8, res.stderr
        assert "stalled" in res.stderr and "Traceback" not in res.stderr
        assert TEST_KEY not in res.stderr
        assert origin.done.wait(30) and origin.outcomes == ["cut"], origin.outcomes
    finally:
        origin.close()
