"""`-v`/`-vv` HTTP lines, "retrying (n/N)" notices, and the words after errors about canceled things.

Against the real local server (the ``cli`` fixture), a small real HTTP server for retries, and a
pseudo-terminal for what a user sees.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from sophon_cli.cli.verbose import http_lines
from sophon_cli.client.trace import HttpEvent, redact_headers
from tests.client.hostile import HostileServer, job_doc, send_json
from tests.helpers.env import TEST_KEY, cli_env
from tests.helpers.tty import run_in_pty


@pytest.fixture
def completed_job_id(completed_job):
    return completed_job[0].id


def _http_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("http: ")]


def test_v_prints_one_line_per_request_without_key_or_token(cli, server, completed_job_id, tmp_path):
    got = cli("-v", "download", completed_job_id, "-o", tmp_path / "o.mp4")
    assert got.returncode == 0, got.stderr
    lines = _http_lines(got.stderr)
    assert any(
        re.match(rf"http: GET /v1/jobs/{completed_job_id} -> 200 in \d+\.\d{{3}} s \(request id req_", ln)
        for ln in lines
    ), lines
    assert any(f"GET /v1/jobs/{completed_job_id}/output -> 302" in ln for ln in lines), lines
    downloads = [ln for ln in lines if "/v1/downloads/" in ln]
    assert downloads and all("/v1/downloads/*** -> 200" in ln for ln in downloads), downloads
    assert server.api_keys[0] not in got.stdout + got.stderr
    assert not any(ln.startswith(("http: >", "http: <")) for ln in lines)  # no headers at -v


def test_vv_adds_headers_with_credentials_masked(cli, server, completed_job_id, tmp_path):
    got = cli("download", completed_job_id, "-o", tmp_path / "o.mp4", "-vv")  # also after the command
    assert got.returncode == 0, got.stderr
    text = got.stderr
    assert "authorization: bearer ***" in text.lower()
    assert server.api_keys[0] not in text + got.stdout
    locations = [ln for ln in text.splitlines() if ln.lower().startswith("http: < location:")]
    assert locations and all(re.search(r"/v1/downloads/\*\*\*$", ln) for ln in locations), locations
    assert "content-type: application/json" in text.lower()


def test_v_health_prints_its_probes_too(cli, server):
    # health builds its own short-lived probe client; -v must reach it as well as the authenticated one
    got = cli("-v", "health")
    assert got.returncode == 0, got.stderr
    lines = _http_lines(got.stderr)
    assert any(re.match(r"http: GET /healthz -> 200 in \d+\.\d{3} s", ln) for ln in lines), lines
    assert any(ln.startswith("http: GET /readyz -> 200") for ln in lines), lines
    assert any(ln.startswith("http: GET /v1/jobs") for ln in lines), lines
    assert server.api_keys[0] not in got.stdout + got.stderr


def test_without_v_nothing_about_http_is_printed(cli, completed_job_id):
    got = cli("job", "get", completed_job_id)
    assert got.returncode == 0 and _http_lines(got.stderr) == [] and got.stderr == ""


def test_redact_headers_and_line_rendering():
    shown = dict(
        redact_headers(
            [
                ("Authorization", f"Bearer {TEST_KEY}"),
                ("Cookie", "s=1"),
                ("Location", "/v1/downloads/abc.def"),
            ]
        )
    )
    assert shown == {"Authorization": "Bearer ***", "Cookie": "***", "Location": "/v1/downloads/***"}
    event = HttpEvent("GET", "/v1/jobs/x", None, 0.5, attempt=2, error="ConnectError")
    assert http_lines(event, 1) == ["http: GET /v1/jobs/x -> failed (ConnectError) in 0.500 s (attempt 2)"]


# -- retries ----------------------------------------------------------------------------------


def _flaky(fails: int):
    state = {"n": 0}

    def route(h):
        state["n"] += 1
        if state["n"] <= fails:
            send_json(h, 503, {"error": {"code": "internal_error", "message": "busy", "retryable": True}})
        else:
            send_json(h, 200, job_doc("job_1", size=1, sha256=None))

    return route


def test_retries_are_announced_on_a_terminal_and_with_v(tmp_path):
    with HostileServer({"/v1/jobs/job_1": _flaky(2)}) as srv:
        env = cli_env(server=srv.url, home=tmp_path)
        code, screen = run_in_pty(["job", "get", "job_1"], env)
        assert code == 0, screen
        assert re.search(r"retrying \(1/5\) in \d+\.\d s: HTTP 503 on GET /v1/jobs/job_1", screen), screen
        assert "retrying (2/5)" in screen
    with HostileServer({"/v1/jobs/job_1": _flaky(1)}) as srv:
        env = cli_env(server=srv.url, home=tmp_path)
        piped = subprocess.run(
            [sys.executable, "-m", "sophon_cli", "job", "get", "job_1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert piped.returncode == 0 and "retrying" not in piped.stderr  # scripts read one error line
    with HostileServer({"/v1/jobs/job_1": _flaky(1)}) as srv:
        env = cli_env(server=srv.url, home=tmp_path)
        loud = subprocess.run(
            [sys.executable, "-m", "sophon_cli", "-v", "job", "get", "job_1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert loud.returncode == 0
    lines = loud.stderr.splitlines()
    assert lines[0].startswith("http: GET /v1/jobs/job_1 -> 503") and lines[1].startswith("retrying (1/5)")
    assert lines[2].startswith("http: GET /v1/jobs/job_1 -> 200") and "(attempt 2)" in lines[2]


# -- canceled jobs and uploads ----------------------------------------------------------------------


def test_download_of_a_canceled_job_says_so_with_exit_5(cli, client, clip, tmp_path):
    up = client.uploads.upload_file(clip)
    job = client.jobs.create(up.upload_id, metadata={"sophon_local_delay": 120})
    client.jobs.cancel(job.id)
    got = cli("download", job.id, "-o", tmp_path / "o.mp4")
    assert got.returncode == 5, got.stderr
    assert f"job {job.id} was canceled" in got.stderr and "wait until" not in got.stderr
    assert list(tmp_path.glob("o.mp4*")) == []


def test_job_create_on_a_canceled_upload_names_the_cause(cli, client):
    session = client.uploads.create("gone.mp4", 1000, "video/mp4")
    client.uploads.cancel(session.id)
    got = cli("job", "create", "--upload", session.id)
    assert got.returncode == 1, got.stderr
    assert "the upload is canceled" in got.stderr and "playable" not in got.stderr
    assert "sophon upload" in got.stderr
