"""Real error responses and retries against the local server (including injected faults)."""

from __future__ import annotations

import socket

import pytest

from sophon_cli.cli.hints import hint_for
from sophon_cli.client.errors import (
    AuthError,
    BadRequestError,
    ConflictError,
    RateLimitError,
    TransportError,
)
from sophon_cli.client.retry import RETRY_AFTER_CAP

from .conftest import RequestLog


def test_wrong_key_is_auth_error_with_next_step(server, make_client):
    bad = "wrong-key-abcdef123456"
    client = make_client(server, key=bad)
    with pytest.raises(AuthError) as info:
        client.jobs.list()
    err = info.value
    assert err.status == 401 and err.code == "unauthorized" and err.request_id.startswith("req_")
    assert "SOPHON_API_KEY" in hint_for(err)
    assert bad not in str(err) and bad not in repr(err) and bad not in repr(client)


def test_bad_filter_is_bad_request(client):
    with pytest.raises(BadRequestError) as info:
        client.jobs.list(status="nonsense")
    assert info.value.status == 400 and info.value.code == "validation_error"


def test_one_key_on_two_routes_conflicts(client, clip):
    key = "client-test-shared-key"
    client.webhooks.create("https://example.com/a", idempotency_key=key)
    with pytest.raises(ConflictError) as info:
        client.uploads.create("a.mp4", 10, "video/mp4", idempotency_key=key)
    assert info.value.status == 409


def test_create_job_for_unknown_upload(client):
    with pytest.raises((BadRequestError,)) as info:
        client.jobs.create("upl_doesnotexist")
    assert info.value.status in (400, 422)


def test_health(client):
    assert client.healthz() is True
    ready = client.readyz()
    assert ready.ready is True and ready.checks_failed == []


def test_unreachable_server_is_transport_error(make_client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from sophon_cli.client.http import SophonClient

    sleeps = []
    c = SophonClient(f"http://127.0.0.1:{port}", "secret-key-xyz-123", max_retries=2, sleep=sleeps.append)
    with pytest.raises(TransportError) as info:
        c.jobs.get("job_1")
    assert f"127.0.0.1:{port}" in str(info.value) and "secret-key-xyz-123" not in str(info.value)
    assert len(sleeps) == 2
    with pytest.raises(TransportError):
        c.healthz()
    c.close()


def test_retry_after_seconds_from_a_real_429(make_server, make_client):
    srv = make_server(faults="GET /v1/jobs=429:0.5:retry-after=1", faults_seed=11)
    log = RequestLog(srv.request_log)
    sleeps = []
    client = make_client(srv, sleep=sleeps.append, max_retries=10)
    for _ in range(6):
        client.jobs.list()
    limited = [e for e in log.entries() if e["status"] == 429]
    assert limited and sleeps == [1.0] * len(limited)


def test_retry_after_http_date_and_giving_up(make_server, make_client):
    srv = make_server(faults="GET /v1/jobs=429:1:retry-after=date:2")
    sleeps = []
    client = make_client(srv, sleep=sleeps.append, max_retries=2)
    with pytest.raises(RateLimitError) as info:
        client.jobs.list()
    assert info.value.retryable and info.value.code == "rate_limited"
    assert len(sleeps) == 2 and all(0.5 <= s <= 3.0 for s in sleeps) and max(sleeps) <= RETRY_AFTER_CAP


def test_5xx_and_resets_are_retried_to_success(make_server, make_client, clip):
    srv = make_server(faults="*=503:0.3,GET /v1/jobs/*=500:0.3,POST /v1/jobs=reset:0.3", faults_seed=5)
    log = RequestLog(srv.request_log)
    sleeps = []
    client = make_client(srv, sleep=sleeps.append, max_retries=10)
    up = client.uploads.upload_file(clip)
    job = client.jobs.create(up.upload_id, profile="sophon-espresso")
    for _ in range(5):
        assert client.jobs.get(job.id).id == job.id
    faults = [e for e in log.entries() if e["status"] >= 500]
    assert faults and len(sleeps) >= len(faults) - 1
    created = [e for e in log.entries("POST", "POST /v1/jobs") if e["status"] == 201]
    assert len(created) == 1  # retries of the POST never made a second job
    assert len({j.id for j in client.jobs.iter()}) == 1
