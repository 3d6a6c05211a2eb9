"""Loopback URLs (the local server) never go through a proxy from the environment."""

from __future__ import annotations

import pytest

from sophon_cli.client.http import SophonClient, is_loopback


@pytest.mark.parametrize(
    "url,expected",
    [
        ("http://127.0.0.1:8765", True),
        ("http://127.8.9.10", True),
        ("http://[::1]:9", True),
        ("http://localhost:1", True),
        ("https://api.liqhtworks.xyz", False),
        ("http://10.0.0.1", False),
    ],
)
def test_is_loopback(url, expected):
    assert is_loopback(url) is expected


def test_local_server_is_reached_despite_a_proxy_in_the_environment(server, clip, monkeypatch, request_log):
    with SophonClient(server.url, server.api_keys[0]) as client:  # at least two jobs on the server
        upload = client.uploads.upload_file(clip)
        for _ in range(2):
            client.jobs.create(upload.upload_id, metadata={"sophon_local_fail": True})
    # a proxy that does not exist: any request routed through it would fail
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with SophonClient(server.url, server.api_keys[0], max_retries=0) as client:
        assert client.healthz() is True
        page = client.jobs.list(limit=1)
    # the server itself logged the list call (a proxy would have refused the connection), with
    # the limit that was sent, and answered a page of at most that many jobs
    calls = request_log.entries("GET", "GET /v1/jobs")
    assert len(calls) == 1 and calls[0]["status"] == 200
    assert len(page.jobs) == 1
    assert page.has_more is True  # two jobs exist (made above): a page of one cannot be all of them
