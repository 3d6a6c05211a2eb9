"""Fixtures of the server tests."""

from __future__ import annotations

import subprocess

import imageio_ffmpeg
import pytest


@pytest.fixture(scope="session")
def video(tmp_path_factory) -> bytes:
    """A 5 MiB Matroska file of random gray frames (incompressible, and a video complete accepts)."""
    path = tmp_path_factory.mktemp("video") / "v.mkv"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    cmd += ["-f", "rawvideo", "-pix_fmt", "gray", "-s", "1024x1024", "-r", "25", "-i", "/dev/urandom"]
    cmd += ["-frames:v", "5", "-c:v", "copy", "-f", "matroska", str(path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return path.read_bytes()
