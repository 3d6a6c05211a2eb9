"""Fixtures of the quality tests: one small source clip and real encodes of it by the local server.

- ``source``       320x240, 1 s, 15 fps (15 frames) x264 clip (session)
- ``server_encode`` ``server_encode(profile="sophon-cortado", height=None) -> Path``: the local
                   server's real HEVC encode of ``source``, downloaded and verified (cached per
                   profile/height for the session)
- ``degraded``     ``source`` scaled to 1/4 and back, at CRF 40: heavily degraded (session)
- ``ffmpeg_exe``   the imageio-ffmpeg binary
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import _make_clip


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="session")
def qdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("quality")


@pytest.fixture(scope="session")
def source(qdir) -> Path:
    return _make_clip(qdir / "source.mp4", seconds=1, size="320x240", rate=15)


def ffmpeg(exe: str, *args: str) -> None:
    subprocess.run(
        [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="session")
def degraded(qdir, source, ffmpeg_exe) -> Path:
    out = qdir / "degraded.mp4"
    ffmpeg(
        ffmpeg_exe,
        "-i", str(source), "-vf", "scale=80:60:flags=bilinear,scale=320:240:flags=bilinear",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "40", "-pix_fmt", "yuv420p", str(out),
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def server_encode(server, source, qdir):
    from sophon_cli.client.http import SophonClient

    done: dict[tuple[str, int | None], Path] = {}

    def encode(profile: str = "sophon-cortado", height: int | None = None) -> Path:
        key = (profile, height)
        if key not in done:
            with SophonClient(server.url, server.api_keys[0]) as client:
                up = client.uploads.upload_file(source)
                job = client.jobs.create(
                    up.upload_id,
                    profile=profile,
                    target_height=height,
                    idempotency_key=f"q-{up.upload_id}-{profile}-{height}",
                )
                job = client.jobs.wait(job.id, timeout=120)
                assert job.status == "completed", job
                result = client.downloads.download(job.id, qdir / f"encode-{profile}-{height}.mp4")
            done[key] = result.path
        return done[key]

    return encode


# the `sophon encode` test world (a fresh local server per test, the CLI as a subprocess)
from tests.encode.conftest import Env, Run, world  # noqa: E402,F401
