"""Fixtures shared by the whole suite: a real local server on loopback, tiny clips, the spec, the CLI.

- ``server``      session LocalServer (key ``test-key-0123456789``, insecure webhooks allowed,
                  webhook retry delays 0.2 s/0.5 s, request log in its tmp dir)
- ``make_server`` factory taking LocalServer's keyword arguments; stops them all at teardown
- ``make_clip``   ``make_clip(path, seconds=1, size="160x120", rate=15, audio=False) -> Path``
- ``clip``        one session-wide tiny clip
- ``spec``        the OpenAPI document (skips when ../shared/sophon-api/openapi.yaml is absent)
- ``cli``         ``cli(*args, env=None, input=None, timeout=120, home=None)`` runs
                  ``python -m sophon_cli`` against ``server`` and returns the CompletedProcess
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.env import TEST_KEY, cli_env  # noqa: F401  (tests import TEST_KEY from here)

REPO_ROOT = Path(__file__).resolve().parent.parent
SPEC_PATH = REPO_ROOT.parent / "shared" / "sophon-api" / "openapi.yaml"


def pytest_configure(config):
    # A suite started in the background of a non-interactive shell (`bash .ci/run &`) inherits
    # SIGINT ignored, and so would every CLI it starts: Python installs no KeyboardInterrupt
    # handler then, and each Ctrl-C test fails. The children get the default disposition back.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    from sophon_cli.server.runner import LocalServer

    base = tmp_path_factory.mktemp("sophon-server")
    srv = LocalServer(
        base / "data",
        api_keys=[TEST_KEY],
        allow_insecure_webhooks=True,
        webhook_retry_delays=(0.2, 0.5),
        request_log=base / "requests.jsonl",
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(tmp_path):
    from sophon_cli.server.runner import LocalServer

    started: list = []

    def factory(data_dir=None, **kwargs):
        kwargs.setdefault("api_keys", [TEST_KEY])
        kwargs.setdefault("allow_insecure_webhooks", True)
        kwargs.setdefault("webhook_retry_delays", (0.2, 0.5))
        if data_dir is None:
            data_dir = tmp_path / f"server-{len(started)}"
        kwargs.setdefault("request_log", Path(data_dir).parent / f"{Path(data_dir).name}-requests.jsonl")
        srv = LocalServer(data_dir, **kwargs)
        srv.start()
        started.append(srv)
        return srv

    yield factory
    for srv in reversed(started):
        srv.stop()


def _make_clip(path, seconds=1, size="160x120", rate=15, audio=False) -> Path:
    import imageio_ffmpeg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
    cmd += ["-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    cmd.append(str(path))
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return path


@pytest.fixture(scope="session")
def make_clip():
    return _make_clip


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    return _make_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


@pytest.fixture(scope="session")
def spec():
    if not SPEC_PATH.is_file():
        pytest.skip(f"API spec not found at {SPEC_PATH} (expected ../shared/sophon-api/openapi.yaml)")
    import yaml

    with open(SPEC_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def cli(server, tmp_path):
    def run(*args, env=None, input=None, timeout=120, home=None):
        return subprocess.run(
            [sys.executable, "-m", "sophon_cli", *map(str, args)],
            env=cli_env(server, home if home is not None else tmp_path / "sophon-home", env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run
