"""Helpers for the `sophon encode` tests: a fresh local server per test (so job and upload counts
belong to the test), distinct tiny clips, and the real CLI in a subprocess."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, _make_clip
from tests.helpers.env import cli_env


@pytest.fixture(scope="session")
def clip_bank(tmp_path_factory) -> list[Path]:
    """Six tiny clips with distinct content (distinct sizes), generated once per session."""
    d = tmp_path_factory.mktemp("encode-clips")
    return [_make_clip(d / f"clip{i}.mp4", seconds=1, size=f"{160 + 16 * i}x120") for i in range(6)]


@pytest.fixture(scope="session")
def gray_clip(tmp_path_factory) -> Path:
    """A flat gray clip already at the lowest H.264 quality: HEVC cannot beat it, so sophon-auto
    keeps the original and explicit profiles make a larger file."""
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("gray") / "gray.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
        + ["-i", "color=c=gray:size=160x120:rate=15:duration=1"]
        + ["-c:v", "libx264", "-preset", "veryslow", "-crf", "51", "-pix_fmt", "yuv420p", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def place(clips: list[Path], directory: Path, names: list[str] | None = None) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(clips):
        dst = directory / (names[i] if names else f"video{i}.mp4")
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def summary(self) -> dict:
        last = self.events()[-1]
        assert last["event"] == "summary", last
        return last


class Env:
    """One test's world: a fresh server, a SOPHON_HOME, a working directory."""

    def __init__(self, server, root: Path) -> None:
        self.server = server
        self.root = root
        self.home = root / "home"
        self.work = root / "work"
        self.work.mkdir(parents=True, exist_ok=True)

    def env(self, extra: dict | None = None) -> dict:
        """The child's environment: the one builder (``tests/helpers/env.py``) with this world's
        home and server; ``extra`` last (``None`` removes a variable)."""
        return cli_env(self.server, home=self.home, extra=extra)

    def argv(self, *args) -> list[str]:
        return [sys.executable, "-m", "sophon_cli", "encode", *map(str, args)]

    def encode(self, *args, timeout: float = 120, env: dict | None = None) -> Run:
        p = subprocess.run(
            self.argv(*args),
            cwd=self.work,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Run(p.returncode, p.stdout, p.stderr)

    def sophon(self, *args, timeout: float = 60) -> Run:
        p = subprocess.run(
            [sys.executable, "-m", "sophon_cli", *map(str, args)],
            cwd=self.work,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Run(p.returncode, p.stdout, p.stderr)

    def popen(self, *args, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.work,
            env=self.env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # -- what the server holds ------------------------------------------------------------------
    def jobs(self) -> list:
        from sophon_cli.client.http import SophonClient

        with SophonClient(self.server.url, TEST_KEY) as c:
            return list(c.jobs.iter())

    def upload_count(self) -> int:
        db = self.server.config.data_dir / "sophon.db"
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT COUNT(*) FROM uploads").fetchone()[0]
        finally:
            con.close()

    def requests(self) -> list[dict]:
        log = Path(self.server.config.request_log)
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.fixture
def world(make_server, tmp_path) -> Env:
    return Env(make_server(tmp_path / "server-data", chunk_size=8192), tmp_path)
