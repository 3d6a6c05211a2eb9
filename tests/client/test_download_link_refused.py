"""A signed download link the server refuses (its token expired, was tampered with, or an origin
answers 401) is a refused link, not a rejected API key: the link's token is the credential and
the key plays no part. One line, exit 4 (auth), saying what was refused and that a fresh link
comes from running the download again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.client.hostile import HostileServer, job_doc, send_json
from tests.helpers.env import cli_env


def sophon(args, env):
    return subprocess.run(
        [sys.executable, "-m", "sophon_cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def assert_link_refused(res, job_id: str, status: int) -> str:
    assert res.returncode == 4, res.stderr
    line = error_line(res)
    assert f"the download link was refused ({status}" in line, line
    assert "expired or invalid token" in line, line
    assert "API key" not in line and "SOPHON_API_KEY" not in line and "set-key" not in line, line
    assert f"`sophon download {job_id}`" in line and f"`sophon job get {job_id}`" in line, line
    return line


def _job(server, clip):
    from sophon_cli.client.http import SophonClient

    with SophonClient(server.url, server.api_keys[0]) as client:
        up = client.uploads.upload_file(clip)
        job = client.jobs.create(up.upload_id, profile="sophon-espresso")
        final = client.jobs.wait(job.id, timeout=90)
    assert final.status == "completed", final
    return final


def test_a_401_from_the_download_link_is_a_refused_link_not_the_api_key(make_server, clip, tmp_path):
    # the local server answers every GET of a signed link with 401 (the refreshed link too)
    srv = make_server(faults="GET /v1/downloads/*=401:1")
    job = _job(srv, clip)
    res = sophon(["download", job.id, "-o", tmp_path / "out.mp4"], cli_env(server=srv, home=tmp_path))
    assert_link_refused(res, job.id, 401)
    assert not (tmp_path / "out.mp4").exists()


def _linked_to(local, token: str) -> HostileServer:
    """An API that serves job_1 and redirects its output to the local server's download of ``token``
    (every time: the refreshed link is the same)."""
    routes = {
        "/v1/jobs/job_1": lambda h: send_json(h, 200, job_doc("job_1", size=10, sha256=None)),
        "/v1/jobs/job_1/output": lambda h: h.redirect(302, f"{local.url}/v1/downloads/{token}"),
    }
    return HostileServer(routes)


def test_an_expired_or_tampered_token_is_a_refused_link(make_server, clip, tmp_path):
    from sophon_cli.server.tokens import TokenSigner

    local = make_server()
    job = _job(local, clip)
    signer = TokenSigner((Path(local.data_dir) / "token_secret").read_text().strip())
    expired, _ = signer.issue(job.id, ttl=60, now=time.time() - 3600)  # its stamp an hour ago
    valid, _ = signer.issue(job.id)
    tampered = valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB")
    for token in (expired, tampered):
        with _linked_to(local, token) as api:
            res = sophon(
                ["download", "job_1", "-o", tmp_path / "out.mp4"], cli_env(server=api.url, home=tmp_path)
            )
        line = assert_link_refused(res, "job_1", 403)
        assert token not in line
        assert not (tmp_path / "out.mp4").exists()
