"""Retry policy, read back from the server's request log: 400/401/403/404/422 and an
idempotency-mismatch 409 are sent once; Retry-After (seconds and HTTP date) is waited out;
the number of attempts per command is bounded."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_KEY

from .conftest import api, read_log, run_cli


def attempts(srv, route: str) -> list[dict]:
    return [r for r in read_log(srv) if r["route"] == route]


def gaps_of(hits: list[dict]) -> list[float]:
    return [hits[i + 1]["ts"] - hits[i]["ts"] for i in range(len(hits) - 1)]


def one_line_error(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert TEST_KEY not in proc.stderr + proc.stdout
    return lines[0]


@pytest.mark.parametrize("status,exit_code", [(400, 1), (403, 4), (404, 3), (422, 1)])
def test_injected_non_retryable_status_is_sent_once(make_server, tmp_path, status, exit_code):
    # the injected envelope says retryable=true (code internal_error): the status still wins
    srv = make_server(faults=f"GET /v1/jobs/*={status}")
    proc = run_cli("job", "get", "job_0123456789abcdef", server=srv, home=tmp_path)
    assert proc.returncode == exit_code, proc.stderr
    one_line_error(proc)
    hits = attempts(srv, "GET /v1/jobs/{id}")
    assert [h["status"] for h in hits] == [status]


def test_wrong_key_401_is_sent_once(make_server, tmp_path):
    srv = make_server()
    proc = run_cli("job", "get", "job_x", server=srv, home=tmp_path, env={"SOPHON_API_KEY": "wrong-key-123"})
    assert proc.returncode == 4
    assert "wrong-key-123" not in proc.stderr + proc.stdout
    one_line_error(proc)
    assert [h["status"] for h in attempts(srv, "GET /v1/jobs/{id}")] == [401]


def test_real_404_is_sent_once(make_server, tmp_path):
    srv = make_server()
    proc = run_cli("job", "get", "job_doesnotexist", server=srv, home=tmp_path)
    assert proc.returncode == 3
    assert "job_doesnotexist" in one_line_error(proc)
    assert [h["status"] for h in attempts(srv, "GET /v1/jobs/{id}")] == [404]


def test_real_422_is_sent_once(make_server, tmp_path):
    srv = make_server()
    r = api(
        srv,
        "POST",
        "/v1/uploads",
        json={"file_name": "a.mp4", "file_size": 10, "mime_type": "video/mp4"},
        headers={"Idempotency-Key": "u1"},
    )
    uid = r.json()["id"]  # never completed
    proc = run_cli("job", "create", "--upload", uid, server=srv, home=tmp_path)
    assert proc.returncode == 1, proc.stderr
    one_line_error(proc)
    assert [h["status"] for h in attempts(srv, "POST /v1/jobs")] == [422]


def test_idempotency_mismatch_409_is_sent_once(make_server):
    from sophon_cli.client.errors import ConflictError
    from sophon_cli.client.http import SophonClient

    srv = make_server()
    with SophonClient(srv.url, TEST_KEY, sleep=lambda s: None) as c:
        c.webhooks.create("http://127.0.0.1:9/a", idempotency_key="same-key")
        with pytest.raises(ConflictError) as info:
            c.webhooks.create("http://127.0.0.1:9/b", idempotency_key="same-key")
    assert info.value.status == 409 and info.value.retryable is False
    assert [h["status"] for h in attempts(srv, "POST /v1/webhooks")] == [201, 409]


@pytest.mark.stress
def test_retry_after_seconds_is_honoured_and_attempts_are_bounded(make_server, tmp_path):
    srv = make_server(faults="GET /v1/jobs/*=429:1:retry-after=1")
    proc = run_cli("job", "get", "job_x", server=srv, home=tmp_path)
    assert proc.returncode == 1
    assert "429" in one_line_error(proc)
    hits = attempts(srv, "GET /v1/jobs/{id}")
    assert len(hits) == 6  # 1 + max_retries (5), then it gives up
    gaps = gaps_of(hits)
    assert min(gaps) >= 0.95, gaps


@pytest.mark.stress
def test_retry_after_http_date_is_honoured(make_server):
    from sophon_cli.client.errors import RateLimitError
    from sophon_cli.client.http import SophonClient

    # the date is rounded up to the next whole second: 1 to 2 s ahead
    srv = make_server(faults="GET /v1/jobs/*=429:1:retry-after=date:1")
    with SophonClient(srv.url, TEST_KEY, max_retries=2) as c:
        with pytest.raises(RateLimitError):
            c.jobs.get("job_x")
    hits = attempts(srv, "GET /v1/jobs/{id}")
    assert len(hits) == 3
    gaps = gaps_of(hits)
    assert min(gaps) >= 0.9, gaps


def test_retry_after_then_success_completes(make_server, tmp_path):
    srv = make_server(faults="GET /v1/jobs=429:0.5:retry-after=0.3", faults_seed=7)
    proc = run_cli("job", "list", "--json", server=srv, home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    statuses = [h["status"] for h in attempts(srv, "GET /v1/jobs")]
    assert statuses[-1] == 200 and set(statuses[:-1]) <= {429}
    gaps = gaps_of(attempts(srv, "GET /v1/jobs"))
    assert all(g >= 0.28 for g in gaps), gaps


@pytest.mark.parametrize(
    "fault,exit_code", [("503:1:retry-after=0.1", 1), ("500:1:retry-after=0.1", 1), ("reset", 8)]
)
def test_retries_per_command_are_bounded(make_server, tmp_path, fault, exit_code):
    srv = make_server(faults=f"GET /v1/jobs/*={fault}")
    proc = run_cli("job", "get", "job_x", server=srv, home=tmp_path, timeout=90)
    assert proc.returncode == exit_code, proc.stderr
    one_line_error(proc)
    assert len(attempts(srv, "GET /v1/jobs/{id}")) == 6
