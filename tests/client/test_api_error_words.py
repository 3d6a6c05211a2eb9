"""What each API error class looks like at the end of a command, against real servers: the local
server (its own errors and injected faults) and small real HTTP servers on 127.0.0.1 for what it
never sends (a 403 of the API, a 413 from a proxy, bodies that are not the API's envelope). One line,
the documented exit code, the next step named; retries that ran out are said."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.client.hostile import HostileServer, send_json
from tests.helpers.env import cli_env


def sophon(args, env):
    return subprocess.run(
        [sys.executable, "-m", "sophon_cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def send_page(status: int, body: bytes, ctype: str = "text/html"):
    def route(h):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def test_429_that_outlasts_the_retries_says_so(make_server, tmp_path):
    srv = make_server(faults="GET /v1/jobs=429:1:retry-after=0")
    res = sophon(["job", "list"], cli_env(server=srv, home=tmp_path, extra={"SOPHON_MAX_RETRIES": "1"}))
    assert res.returncode == 1
    line = error_line(res)
    assert "(429 rate_limited, after 2 attempts)" in line and "wait a minute" in line
    assert "(request id req_" in line


def test_5xx_that_outlasts_the_retries_says_so(make_server, tmp_path):
    srv = make_server(faults="GET /v1/jobs/*=500:1")
    res = sophon(
        ["job", "get", "job_1"], cli_env(server=srv, home=tmp_path, extra={"SOPHON_MAX_RETRIES": "1"})
    )
    assert res.returncode == 1
    line = error_line(res)
    assert "(500 internal_error, after 2 attempts)" in line
    assert "try again later and quote the request id" in line and "(request id req_" in line


def test_a_gateway_page_instead_of_an_api_error(tmp_path):
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with HostileServer({"/v1/jobs/job_1": send_page(502, page)}) as srv:
        res = sophon(
            ["job", "get", "job_1"], cli_env(server=srv.url, home=tmp_path, extra={"SOPHON_MAX_RETRIES": "1"})
        )
    assert res.returncode == 1
    line = error_line(res)
    assert "HTTP 502 Bad Gateway with an HTML page instead of an API error (502, after 2 attempts)" in line
    assert "did not come from the SOPHON API" in line and "(set by SOPHON_BASE_URL)" in line
    assert "http_502" not in line and "quote the request id" not in line  # there is none to quote


def test_a_base_url_that_is_not_the_api_is_not_told_to_check_the_id(tmp_path):
    with HostileServer({"*": send_page(404, b"<!doctype html><title>Not Found</title>")}) as srv:
        res = sophon(["job", "get", "job_1"], cli_env(server=srv.url, home=tmp_path))
    assert res.returncode == 1  # not 3: nothing says that the job does not exist
    line = error_line(res)
    assert "with an HTML page instead of an API error (404)" in line
    assert "check that the base URL (set by SOPHON_BASE_URL) points at the SOPHON API" in line
    assert "sophon job list" not in line


def test_413_names_the_body_limit_not_the_help(tmp_path):
    with HostileServer({"*": send_page(413, b"<html>413 Request Entity Too Large</html>")}) as srv:
        res = sophon(["job", "get", "job_1"], cli_env(server=srv.url, home=tmp_path))
    assert res.returncode == 1
    line = error_line(res)
    assert "(413)" in line and "refused a request this large" in line and "--help" not in line


def test_403_of_the_api_names_where_the_key_came_from(tmp_path):
    refuse = {"error": {"code": "forbidden", "message": "this key may not read jobs", "retryable": False}}
    with HostileServer({"*": lambda h: send_json(h, 403, refuse)}) as srv:
        res = sophon(["job", "get", "job_1"], cli_env(server=srv.url, home=tmp_path))
    assert res.returncode == 4
    line = error_line(res)
    assert line.startswith("error: this key may not read jobs (403 forbidden)")
    assert "the API key from SOPHON_API_KEY is not allowed to do this" in line


@pytest.mark.parametrize(
    "args,code,words",
    [
        (["job", "get", "job_doesnotexist"], 3, "check the id (`sophon job list`)"),
        (["uploads", "get", "upl_doesnotexist"], 3, "the upload session is gone or expired"),
        (["webhooks", "delete", "--yes", "whk_doesnotexist"], 3, "check the id (`sophon webhooks list`)"),
    ],
)
def test_404_of_an_id_names_where_to_find_the_right_one(cli, args, code, words):
    res = cli(*args)
    assert res.returncode == code
    line = error_line(res)
    assert words in line and "(404 not_found)" in line and "(request id req_" in line


def test_409_of_an_unfinished_job_says_to_wait_for_it(cli, client, clip, tmp_path):
    up = client.uploads.upload_file(clip, new=True)
    job = client.jobs.create(
        up.upload_id, metadata={"sophon_local_delay": 600}, idempotency_key=f"{tmp_path}"
    )
    try:
        res = cli("download", job.id, "-o", tmp_path / "out")
    finally:
        client.jobs.cancel(job.id)
    assert res.returncode == 1
    line = error_line(res)
    assert "(409 output_not_ready)" in line and f"`sophon job wait {job.id}`" in line


def test_a_download_origin_answering_its_own_404_page_is_still_a_missing_output(tmp_path):
    from tests.client.hostile import job_doc

    job = job_doc("job_1", size=10, sha256=None)
    routes = {
        "/v1/jobs/job_1": lambda h: send_json(h, 200, job),
        "/v1/jobs/job_1/output": lambda h: h.redirect(302, "/v1/downloads/tok"),
        "/v1/downloads/tok": send_page(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml"),
    }
    with HostileServer(routes) as srv:
        res = sophon(["download", "job_1", "-o", tmp_path / "out"], cli_env(server=srv.url, home=tmp_path))
    assert res.returncode == 3
    line = error_line(res)
    assert "with an application/xml body" in line  # what it was, not "an HTML page"
    assert "the output file is gone; run the download again" in line and "base URL" not in line
