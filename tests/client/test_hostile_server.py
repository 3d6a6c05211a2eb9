"""Hostile servers (a small real HTTP server on 127.0.0.1 in each test): one deadline per request,
a minimum throughput for streamed bodies, capped JSON replies, malformed replies classified (exit 1,
"the server sent ..."), the API key redacted from every printed field, control characters stripped.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time

import pytest

from sophon_cli.client.errors import MalformedResponseError, TransportError
from sophon_cli.client.files import part_path
from sophon_cli.client.http import SophonClient
from tests.client.hostile import FakeAPI, HostileServer, job_doc, send_json, send_raw, trickle
from tests.helpers.env import TEST_KEY, cli_env

JOB = json.dumps(job_doc("job_1", size=10, sha256=None)).encode()


def sophon(url, *args, home, env=None, timeout=60):
    started = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        env=cli_env(server=url, home=home, extra=env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    res.elapsed = time.monotonic() - started
    return res


PROGRESS = re.compile(r"^\S.*:\s+\d+(\.\d+)?% \(")  # plain progress lines when piped


def one_error_line(res):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not PROGRESS.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.stderr and "unexpected" not in res.stderr
    return lines[0]


def raw_route(raw: bytes):
    return lambda h: send_raw(h, raw)


# -- one deadline ---------------------------------------------------------------------------------


def test_a_trickling_api_reply_is_bounded_by_the_timeout(tmp_path):
    """Each byte arrives well within httpx's per-read timeout; the whole reply would take 40 s."""
    with HostileServer({"/v1/jobs/job_1": trickle(JOB + b" " * 300, 0.1)}) as srv:
        with SophonClient(srv.url, TEST_KEY, timeout=1.0, max_retries=0) as c:
            started = time.monotonic()
            with pytest.raises(TransportError) as info:
                c.jobs.get("job_1")
            assert time.monotonic() - started < 3
        assert "did not answer within 1 s" in str(info.value)
        res = sophon(
            srv.url, "job", "get", "job_1", home=tmp_path, env={"SOPHON_TIMEOUT": 1, "SOPHON_MAX_RETRIES": 0}
        )
    assert res.returncode == 8 and res.elapsed < 10, (res.returncode, res.elapsed, res.stderr)
    assert "did not answer within 1 s" in one_error_line(res)


def trickle_headers(every: float, count: int = 40):
    """A status line at once, then a header one byte every ``every`` s (each read well within
    httpx's per-read timeout), then a valid reply."""

    def route(h):
        h.close_connection = True
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        h.wfile.flush()
        for byte in b"X-Slow: " + b"a" * count + b"\r\n":
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(every)
        h.wfile.write(b"Content-Length: %d\r\n\r\n" % len(JOB) + JOB)
        h.wfile.flush()

    return route


def test_trickled_response_headers_are_bounded_by_the_timeout(tmp_path):
    """The deadline covers the status line and headers too (connect to last byte): the headers
    alone would take 15 s here."""
    with HostileServer({"/v1/jobs/job_1": trickle_headers(0.3)}) as srv:
        with SophonClient(srv.url, TEST_KEY, timeout=1.0, max_retries=0) as c:
            started = time.monotonic()
            with pytest.raises(TransportError) as info:
                c.jobs.get("job_1")
            assert time.monotonic() - started < 2.5
        assert "did not answer within 1 s" in str(info.value)
        res = sophon(
            srv.url, "job", "get", "job_1", home=tmp_path, env={"SOPHON_TIMEOUT": 1, "SOPHON_MAX_RETRIES": 0}
        )
    assert res.returncode == 8 and res.elapsed < 10, (res.returncode, res.elapsed, res.stderr)
    assert "did not answer within 1 s" in one_error_line(res)


def test_a_stalled_download_fails_with_exit_8_and_resumes_on_rerun(tmp_path):
    body = os.urandom(200_000)
    target = tmp_path / "o.mp4"
    env = {"SOPHON_STALL_SECONDS": 1, "SOPHON_MIN_RATE": 64, "SOPHON_MAX_RETRIES": 0}
    import hashlib

    with FakeAPI(body, size=len(body), sha256=hashlib.sha256(body).hexdigest(), chunk=500, delay=0.05) as api:
        slow = sophon(api.url, "download", "job_1", "-o", target, home=tmp_path / "h", env=env)
        assert slow.returncode == 8, slow.stderr
        line = one_error_line(slow)
        assert "stalled" in line and "run the same command again to resume" in line
        have = part_path(target).stat().st_size
        assert 0 < have < len(body) and not target.exists()
        api.delay, api.chunk = 0.0, 64 * 1024
        fast = sophon(api.url, "--json", "download", "job_1", "-o", target, home=tmp_path / "h", env=env)
    assert fast.returncode == 0, fast.stderr
    assert json.loads(fast.stdout)["resumed_from"] == have and api.ranges == [have]
    assert target.read_bytes() == body


# -- sizes ----------------------------------------------------------------------------------------


def test_json_replies_are_capped(tmp_path):
    big = b'{"id": "job_1", "status": "completed", "pad": "' + b"x" * (9 * 1024 * 1024) + b'"}'

    def chunked(h):  # no Content-Length: the cap holds while reading
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(big), 1 << 20):
            part = big[i : i + (1 << 20)]
            h.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    routes = {
        "/v1/jobs/job_1": lambda h: send_json(h, 200, json.loads(big)),
        "/v1/jobs/job_2": chunked,
    }
    with HostileServer(routes) as srv:
        with SophonClient(srv.url, TEST_KEY, max_retries=0) as c:
            with pytest.raises(MalformedResponseError, match="more than the 8388608 allowed"):
                c.jobs.get("job_1")
            with pytest.raises(MalformedResponseError, match="larger than the 8388608 bytes allowed"):
                c.jobs.get("job_2")
        res = sophon(srv.url, "job", "get", "job_2", home=tmp_path)
    assert res.returncode == 1 and "the server sent a response larger than" in one_error_line(res)


# -- malformed replies: exit 1, "the server sent ..." --------------------------------------------------

GZ_BAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"
MALFORMED = {
    "bad-content-length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
    "two-content-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}",
    "illegal-status-line": b"NOT HTTP AT ALL\r\n\r\n",
    "empty-200": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "not-json": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>",
    "bad-gzip": GZ_BAD,
    "redirect-to-file": b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\n\r\n",
    "wrong-shape": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
    "huge-content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_api_replies_are_exit_1_the_server_sent(tmp_path, case):
    with HostileServer({"/v1/jobs/job_1": raw_route(MALFORMED[case])}) as srv:
        res = sophon(srv.url, "job", "get", "job_1", home=tmp_path)
    assert res.returncode == 1, (case, res.returncode, res.stderr)
    assert "the server sent" in one_error_line(res), res.stderr
    assert res.stdout == ""


def _download_api(download_route, output_route=None):
    def get_job(h):
        send_json(h, 200, job_doc("job_1", size=10, sha256=None))

    def output(h):
        h.send_response(302)
        h.send_header("Location", "/v1/downloads/tok")
        h.send_header("Content-Length", "0")
        h.end_headers()

    return HostileServer(
        {
            "/v1/jobs/job_1": get_job,
            "/v1/jobs/job_1/output": output_route or output,
            "/v1/downloads/tok": download_route,
        }
    )


def _redirect(to):
    def route(h):
        h.send_response(302)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


@pytest.mark.parametrize(
    "case,srv",
    [
        ("download-redirect-loop", lambda: _download_api(_redirect("/v1/downloads/tok"))),
        ("download-redirect-to-file", lambda: _download_api(_redirect("file:///etc/passwd"))),
        ("output-location-file", lambda: _download_api(None, _redirect("file:///etc/passwd"))),
        ("download-bad-gzip", lambda: _download_api(raw_route(GZ_BAD))),
        ("download-bad-content-length", lambda: _download_api(raw_route(MALFORMED["bad-content-length"]))),
    ],
)
def test_malformed_download_replies_are_exit_1_the_server_sent(tmp_path, case, srv):
    with srv() as s:
        res = sophon(s.url, "download", "job_1", "-o", tmp_path / "o.mp4", home=tmp_path / "h")
    assert res.returncode == 1, (case, res.returncode, res.stderr)
    line = one_error_line(res)
    assert "the server sent" in line and "/etc/passwd" not in line
    assert not (tmp_path / "o.mp4").exists()


# -- secrets and control characters in server-supplied fields -----------------------------------------


def _echo_key(h):
    auth = h.headers.get("Authorization", "")
    body = {"error": {"code": f"bad {auth}", "message": f"you sent {auth}", "request_id": auth}}
    send_json(h, 400, body, headers={"X-Request-Id": auth})


def _echo_key_not_json(h):
    data = b"<html>oops</html>"
    h.send_response(200)
    h.send_header("X-Request-Id", h.headers.get("Authorization", ""))
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


@pytest.mark.parametrize("route", [_echo_key, _echo_key_not_json], ids=["error-envelope", "malformed-reply"])
def test_the_key_is_redacted_from_every_printed_field(tmp_path, route):
    with HostileServer({"/v1/jobs/job_1": route}) as srv:
        for args in (
            ("job", "get", "job_1"),
            ("--json", "job", "get", "job_1"),
            ("-v", "job", "get", "job_1"),
        ):
            res = sophon(srv.url, *args, home=tmp_path)
            assert res.returncode == 1, res.stderr
            assert TEST_KEY not in res.stdout + res.stderr, (args, res.stderr)
            assert "***" in res.stderr


def test_control_characters_from_the_server_never_reach_the_terminal(tmp_path):
    evil = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x07"

    def route(h):
        send_json(h, 409, {"error": {"code": f"c{evil}", "message": f"m{evil}", "request_id": f"r{evil}"}})

    with HostileServer({"/v1/jobs/job_1": route}) as srv:
        res = sophon(srv.url, "job", "get", "job_1", home=tmp_path)
    assert res.returncode == 1
    line = one_error_line(res)
    assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in line), repr(line)
    assert "pwned" not in line


def test_gzip_replies_still_decode(tmp_path):
    body = gzip.compress(JOB)

    def route(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    with HostileServer({"/v1/jobs/job_1": route}) as srv, SophonClient(srv.url, TEST_KEY) as c:
        assert c.jobs.get("job_1").id == "job_1"


def test_a_slow_upload_body_is_not_cut_by_the_reply_deadline():
    """Sending a part may take longer than the timeout on a slow link (each write is bounded by
    itself); the deadline bounds the reply after the body is sent."""

    class SlowBody:
        def __len__(self):
            return 3000

        def __iter__(self):
            for _ in range(3):
                time.sleep(0.6)
                yield b"x" * 1000

    with HostileServer({"/v1/uploads/u/parts/1": lambda h: send_json(h, 200, {"part_number": 1})}) as srv:
        with SophonClient(srv.url, TEST_KEY, timeout=1.0, max_retries=0) as c:
            got = c.request(
                "PUT", "/v1/uploads/u/parts/1", content=SlowBody(), headers={"Content-Length": "3000"}
            )
    assert got.status_code == 200 and got.json() == {"part_number": 1}


def test_control_characters_in_printed_data_are_dropped(tmp_path):
    """job get / list / wait print server fields (reason, profile, error) on stdout: no escape
    sequence of them reaches the terminal, and piped rows keep their tabs."""
    evil = "\x1b]0;pwned\x07\x1b[2J\x9b31m\r"
    doc = job_doc("job_1", size=1, sha256=None, status="failed")
    doc.update(
        status_reason=f"bad{evil}", profile=f"p{evil}", error=f"m{evil}", created_at="2026-01-01T00:00:00Z"
    )
    routes = {
        "/v1/jobs/job_1": lambda h: send_json(h, 200, doc),
        "/v1/jobs": lambda h: send_json(h, 200, {"jobs": [doc], "has_more": False}),
    }
    with HostileServer(routes) as srv:
        for args in (
            ("job", "get", "job_1"),
            ("job", "list"),
            ("job", "wait", "job_1"),
            ("download", "job_1"),
        ):
            res = sophon(srv.url, *args, home=tmp_path)
            text = res.stdout + res.stderr
            assert not [c for c in text if (ord(c) < 32 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F], (
                args,
                text,
            )
            assert "pwned" not in text, (args, text)
            if args == ("job", "list"):
                header, row = (line.split("\t") for line in res.stdout.splitlines()[:2])
                assert dict(zip(header, row, strict=True))["PROFILE"] == "p "  # the \r became a space
