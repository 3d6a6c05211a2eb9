"""Fixtures for the CI tests: the encode tests' world (a fresh local server per test, a SOPHON_HOME,
a working directory) and clips, plus a batch of twelve tiny distinct clips for the shard tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import _make_clip
from tests.encode.conftest import Env, Run, clip_bank, gray_clip, place, world  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def twelve_clips(tmp_path_factory) -> list[Path]:
    """Twelve tiny clips with distinct content (each its own width), made once per session."""
    d = tmp_path_factory.mktemp("ci-clips")
    return [_make_clip(d / f"c{i:02d}.mp4", seconds=1, size=f"{64 + 8 * i}x48", rate=10) for i in range(12)]
