"""Helpers for the reliability suite: the CLI as a real subprocess (run or Popen), the server's
request log and store, tiny media, a throttling TCP proxy, and a capture of everything printed.

Everything talks to a real :class:`LocalServer` on 127.0.0.1 (``make_server`` from tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, _make_clip
from tests.helpers.env import cli_env as shared_cli_env

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# The CLI as a subprocess
# ---------------------------------------------------------------------------------------------


def cli_env(server=None, home: Path | None = None, extra: dict | None = None) -> dict[str, str]:
    """tests/helpers/env.py's environment, colour off (these tests read plain text)."""
    return shared_cli_env(server, home, {"NO_COLOR": "1", **(extra or {})})


def run_cli(
    *args, server=None, home=None, env=None, timeout=120, cwd=None, input=None, preexec_fn=None, python=None
):
    return subprocess.run(
        [python or sys.executable, "-m", "sophon_cli", *map(str, args)],
        env=cli_env(server, home, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        input=input,
        preexec_fn=preexec_fn,
    )


def popen_cli(*args, server=None, home=None, env=None, cwd=None, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        env=cli_env(server, home, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        **kw,
    )


# ---------------------------------------------------------------------------------------------
# Server inspection
# ---------------------------------------------------------------------------------------------


def read_log(server) -> list[dict]:
    path = Path(server.request_log)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


def db_rows(server, sql: str, args=()) -> list[tuple]:
    """Read-only query of the server's SQLite store (to count sessions/jobs the API cannot list)."""
    uri = f"file:{Path(server.data_dir) / 'sophon.db'}?mode=ro"
    con = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        return list(con.execute(sql, args))
    finally:
        con.close()


def count_uploads(server) -> int:
    return db_rows(server, "SELECT COUNT(*) FROM uploads")[0][0]


def count_jobs(server) -> int:
    return db_rows(server, "SELECT COUNT(*) FROM jobs")[0][0]


def api(server, method: str, path: str, **kw):
    """One request with the test key. GETs are retried through injected faults (429/5xx/resets),
    so a test can inspect a faulty server; other methods are sent once."""
    import httpx

    headers = kw.pop("headers", {})
    headers.setdefault("Authorization", f"Bearer {TEST_KEY}")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for _ in range(30 if method == "GET" else 1):
            try:
                r = c.request(method, path, headers=headers, **kw)
            except httpx.TransportError:
                if method != "GET":
                    raise
                time.sleep(0.05)
                continue
            if method != "GET" or (r.status_code != 429 and r.status_code < 500):
                return r
            time.sleep(0.05)
        return r


def wait_jobs_terminal(server, job_ids, timeout=120.0) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    result: dict[str, dict] = {}
    pending = set(job_ids)
    while pending and time.monotonic() < deadline:
        for jid in list(pending):
            job = api(server, "GET", f"/v1/jobs/{jid}").json()
            if job["status"] in ("completed", "failed", "canceled"):
                result[jid] = job
                pending.discard(jid)
        if pending:
            time.sleep(0.2)
    assert not pending, f"jobs not terminal after {timeout}s: {sorted(pending)}"
    return result


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def padded_video(path: Path, size: int, seed: int = 0) -> Path:
    """A valid (faststart) MP4 of a 0.4 s 64x64 clip, padded with seeded random bytes to ``size``:
    the server probes it as a video, so big uploads cost no encode time."""
    import random

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    small = path.with_name(path.stem + "-core.mp4")
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
            "testsrc2=size=64x64:rate=15:duration=0.4",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(small),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    rng = random.Random(seed)
    with open(path, "wb") as out:
        out.write(small.read_bytes())
        left = size - out.tell()
        while left > 0:
            n = min(left, 1 << 20)
            out.write(rng.randbytes(n))
            left -= n
    small.unlink()
    return path


def tiny_clips(directory: Path, n: int, prefix: str = "clip") -> list[Path]:
    """``n`` distinct tiny clips (0.4 s, 64x64): distinct content, so distinct uploads and jobs."""
    directory.mkdir(parents=True, exist_ok=True)
    base = _make_clip(directory / f".{prefix}-base.mp4", seconds=0.4, size="64x64", rate=15)
    data = base.read_bytes()
    out = []
    for i in range(n):
        p = directory / f"{prefix}{i:02d}.mp4"
        # an mp4 'free' box appended keeps the file valid and makes its bytes (and sha256) unique
        payload = f"sophon-reliability-{prefix}-{i}".encode()
        p.write_bytes(data + (8 + len(payload)).to_bytes(4, "big") + b"free" + payload)
        out.append(p)
    base.unlink()
    return out


# ---------------------------------------------------------------------------------------------
# A throttling TCP proxy (a slow network link), so a kill can land mid-transfer
# ---------------------------------------------------------------------------------------------


class SlowProxy:
    """Forwards 127.0.0.1:<port> to ``target`` (host, port); server->client bytes are paced to
    ``rate`` bytes/s per connection."""

    def __init__(self, target: tuple[str, int], rate: int, record: bool = False, cut_after: int = 0) -> None:
        self.target = target
        self.rate = rate
        self.record = record
        self.cut_after = cut_after  # drop a connection once it has carried this many response bytes
        self.cuts = 0
        self.sent = bytearray()  # client -> server bytes (when recording)
        self.received = bytearray()  # server -> client bytes (when recording)
        self._rec_lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _pipe(self, src, dst, paced: bool) -> None:
        carried = 0
        try:
            while True:
                data = src.recv(16384 if paced else 65536)
                if not data:
                    break
                carried += len(data)
                if paced and self.cut_after and carried > self.cut_after:
                    dst.sendall(data[: max(0, len(data) - (carried - self.cut_after))])
                    self.cuts += 1
                    break
                if self.record:
                    with self._rec_lock:
                        (self.received if paced else self.sent).extend(data)
                dst.sendall(data)
                if paced:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve(self, client) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
        self._pipe(upstream, client, True)
        client.close()
        upstream.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def slow_proxy():
    made: list[SlowProxy] = []

    def factory(server, rate: int, record: bool = False, cut_after: int = 0) -> SlowProxy:
        proxy = SlowProxy(("127.0.0.1", server.port), rate, record, cut_after)
        made.append(proxy)
        return proxy

    yield factory
    for p in made:
        p.close()
