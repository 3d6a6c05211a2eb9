"""Fixtures for the client's integration tests (real LocalServer on loopback, see tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest


class RequestLog:
    """Reads the server's JSON-lines request log from a mark onwards."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def entries(self, method: str | None = None, route: str | None = None) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            fh.seek(self.offset)
            rows = [json.loads(line) for line in fh if line.strip()]
        return [
            r
            for r in rows
            if (method is None or r["method"] == method) and (route is None or r["route"] == route)
        ]


@pytest.fixture
def client(server):
    from sophon_cli.client.http import SophonClient

    with SophonClient(server.url, server.api_keys[0]) as c:
        yield c


@pytest.fixture
def make_client():
    from sophon_cli.client.http import SophonClient

    made = []

    def factory(srv, key=None, **kw):
        c = SophonClient(srv.url, key if key is not None else srv.api_keys[0], **kw)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


@pytest.fixture
def request_log(server):
    log = RequestLog(server.request_log)
    log.mark()
    return log


@pytest.fixture(scope="session")
def medium_clip(make_clip, tmp_path_factory) -> Path:
    """A clip of roughly 100-200 KB: several 32 KiB parts."""
    return make_clip(tmp_path_factory.mktemp("client-clips") / "medium.mp4", seconds=2, size="320x240")


@pytest.fixture(scope="session")
def efficient_clip(tmp_path_factory) -> Path:
    """A tiny, already well-compressed HEVC clip: sophon-auto cannot beat it (final_artifact original)."""
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("client-clips") / "black.mkv"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
    cmd += ["-i", "color=c=black:size=160x120:rate=15:duration=1", "-c:v", "libx265", "-crf", "51"]
    cmd += ["-preset", "ultrafast", "-x265-params", "log-level=error", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return path


@pytest.fixture(scope="session")
def completed_job(server, clip):
    """One encoded job on the session server: (job, upload_result)."""
    from sophon_cli.client.http import SophonClient

    with SophonClient(server.url, server.api_keys[0]) as c:
        up = c.uploads.upload_file(clip)
        job = c.jobs.create(up.upload_id, profile="sophon-espresso")
        job = c.jobs.wait(job.id, timeout=120)
    assert job.status == "completed", job.error
    return job, up


@pytest.fixture(scope="module")
def chunked_server(tmp_path_factory):
    """A server with 32 KiB upload parts (the real tiers would send a small clip in one part)."""
    from sophon_cli.server.runner import LocalServer

    base = tmp_path_factory.mktemp("chunked-server")
    srv = LocalServer(
        base / "data",
        api_keys=["chunked-key-0123456789"],
        chunk_size=32 * 1024,
        request_log=base / "requests.jsonl",
    )
    srv.start()
    yield srv
    srv.stop()
