"""Bad input, one row each: a one-line `error:` on stderr naming the problem (and the next step),
the documented exit code, nothing on stdout, no traceback, nothing written or lost.

Every row runs the real CLI in a subprocess against the real local server on loopback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import assert_one_line_error, free_port

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass
class Env:
    tmp: Path
    upload_id: str
    job_id: str
    clip: Path

    def file(self, name: str, data: bytes = b"") -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path


@dataclass
class Case:
    id: str
    args: Callable[[Env], list[Any]]
    code: int
    needles: tuple[str, ...]
    env: dict[str, str | None] = field(default_factory=dict)
    skip_root: str | None = None


def _unreadable(e: Env) -> list[Any]:
    path = e.file("locked.mp4", b"not empty")
    path.chmod(0)
    return ["upload", path]


def _metadata_file(e: Env, text: str) -> Path:
    path = e.tmp / "meta.json"
    path.write_text(text)
    return path


CASES = [
    # local files
    Case("upload-missing-file", lambda e: ["upload", e.tmp / "nope.mp4"], 2, ("nope.mp4", "no such file")),
    Case("upload-directory", lambda e: ["upload", e.tmp], 2, ("is a directory",)),
    Case("upload-empty-file", lambda e: ["upload", e.file("empty.mp4")], 2, ("empty.mp4", "empty")),
    Case(
        "upload-unreadable-file",
        _unreadable,
        2,
        ("locked.mp4", "permission denied"),
        skip_root="root can read any file",
    ),
    Case("job-create-missing-file", lambda e: ["job", "create", e.tmp / "nope.mp4"], 2, ("no such file",)),
    Case("job-create-no-source", lambda e: ["job", "create"], 2, ("FILE or --upload",)),
    # credentials and reachability
    Case(
        "no-api-key",
        lambda e: ["job", "list"],
        4,
        ("no API key", "SOPHON_API_KEY"),
        env={"SOPHON_API_KEY": None},
    ),
    Case(
        "wrong-api-key",
        lambda e: ["job", "list"],
        4,
        ("401", "SOPHON_API_KEY"),
        env={"SOPHON_API_KEY": "wrong-key-0000"},
    ),
    # unknown ids
    Case("unknown-job-get", lambda e: ["job", "get", "job_doesnotexist"], 3, ("job_doesnotexist", "404")),
    Case("unknown-job-wait", lambda e: ["job", "wait", "job_doesnotexist"], 3, ("404",)),
    Case("unknown-job-download", lambda e: ["download", "job_doesnotexist", "-o", e.tmp], 3, ("404",)),
    Case(
        "unknown-upload-get", lambda e: ["uploads", "get", "upl_doesnotexist"], 3, ("upl_doesnotexist", "404")
    ),
    Case("unknown-webhook-delete", lambda e: ["webhooks", "delete", "wh_doesnotexist"], 3, ("404",)),
    # server-side validation: the server's message is shown
    Case(
        "bad-profile",
        lambda e: ["job", "create", "--upload", e.upload_id, "--profile", "sophon-bogus"],
        1,
        ("sophon-bogus", "validation_error"),
    ),
    # local validation before anything is sent
    Case(
        "metadata-not-key-value",
        lambda e: ["job", "create", "--upload", e.upload_id, "--metadata", "novalue"],
        2,
        ("KEY=VALUE",),
    ),
    Case(
        "metadata-file-not-json",
        lambda e: ["job", "create", "--upload", e.upload_id, "--metadata-file", _metadata_file(e, "{oops")],
        2,
        ("not valid JSON",),
    ),
    Case(
        "metadata-file-not-object",
        lambda e: ["job", "create", "--upload", e.upload_id, "--metadata-file", _metadata_file(e, "[1, 2]")],
        2,
        ("JSON object",),
    ),
    Case(
        "metadata-too-big",
        lambda e: ["job", "create", "--upload", e.upload_id, "--metadata", "blob=" + "x" * 17000],
        2,
        ("16384",),
    ),
    Case(
        "height-too-small",
        lambda e: ["job", "create", "--upload", e.upload_id, "--height", "100"],
        2,
        ("144", "4320"),
    ),
    Case("height-too-big", lambda e: ["job", "create", e.clip, "--height", "5000"], 2, ("--height",)),
    Case(
        "bad-container",
        lambda e: ["job", "create", "--upload", e.upload_id, "--container", "avi"],
        2,
        ("mp4 or mkv",),
    ),
    Case(
        "timeout-without-wait",
        lambda e: ["job", "create", "--upload", e.upload_id, "--timeout", "5"],
        2,
        ("--wait",),
    ),
    # output paths
    Case(
        "download-parent-is-a-file",
        lambda e: ["download", e.job_id, "-o", e.file("plainfile") / "out.mp4"],
        2,
        ("plainfile",),
    ),
    Case(
        "download-dir-not-writable",
        lambda e: ["download", e.job_id, "-o", _readonly_dir(e) / "out.mp4"],
        2,
        ("out.mp4",),
        skip_root="root can write into a read-only directory",
    ),
    # webhooks
    Case(
        "verify-no-secret",
        lambda e: [
            "webhooks",
            "verify",
            "--signature",
            "sha256=00",
            "--timestamp",
            "1",
            "--body-file",
            e.clip,
        ],
        2,
        ("--secret", "SOPHON_WEBHOOK_SECRET"),
        env={"SOPHON_WEBHOOK_SECRET": None},
    ),
    Case(
        "listen-no-secret",
        lambda e: ["webhooks", "listen", "--port", "0"],
        2,
        ("no webhook secret",),
        env={"SOPHON_WEBHOOK_SECRET": None},
    ),
]


def _readonly_dir(e: Env) -> Path:
    path = e.tmp / "ro"
    path.mkdir()
    path.chmod(0o500)
    return path


@pytest.fixture(scope="module")
def env_base(uploaded, done_job, clip):
    return {"upload_id": uploaded.upload_id, "job_id": done_job.id, "clip": clip}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, cli, env_base, tmp_path, server):
    if case.skip_root and IS_ROOT:
        pytest.skip(case.skip_root)
    work = tmp_path / "work"
    work.mkdir()
    e = Env(tmp=work, **env_base)
    args = case.args(e)
    before = sorted(p.name for p in work.iterdir())
    result = cli(*args, env=case.env)
    assert_one_line_error(result, case.code, *case.needles, secrets=(server.api_keys[0],))
    # nothing written: the work directory holds what the row put there, nothing more
    assert sorted(p.name for p in work.iterdir()) == before


def test_bad_local_input_sends_nothing(cli, server, clip, tmp_path):
    """A bad file in a batch is reported before any upload starts."""
    log = server.request_log
    before = log.read_text().count("\n") if log and log.exists() else 0
    result = cli("upload", clip, tmp_path / "missing.mp4")
    assert_one_line_error(result, 2, "missing.mp4")
    after = log.read_text() if log and log.exists() else ""
    new = [json.loads(line) for line in after.splitlines()[before:]]
    assert not [r for r in new if r["path"].startswith("/v1/uploads")], new


def test_server_down_names_the_url_after_retries(cli, tmp_path):
    """Nothing listens on the port: exit 8 after the client's retries, naming the URL.

    The client retries connection failures with backoff (about 5-10 s in total here)."""
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("job", "get", "job_x", env={"SOPHON_BASE_URL": url}, timeout=60)
    line = assert_one_line_error(result, 8, url, "cannot reach")
    assert "attempts" in line


def test_keys_never_appear_in_errors(cli):
    secret_key = "sk-very-secret-value-1234567890"
    result = cli("job", "list", env={"SOPHON_API_KEY": secret_key})
    assert_one_line_error(result, 4, secrets=(secret_key,))
