"""An injected status answers with the contract's error code for that status (what production sends)."""

from __future__ import annotations

import pytest

from .helpers import Api

CASES = [
    (400, "validation_error", False),
    (401, "unauthorized", False),
    (403, "forbidden", False),
    (404, "not_found", False),
    (409, "conflict", False),
    (422, "source_invalid", False),
    (429, "rate_limited", True),
    (500, "internal_error", True),
    (503, "capacity_exceeded", True),
]


@pytest.mark.parametrize(("status", "code", "retryable"), CASES)
def test_injected_status_carries_the_contract_code(make_server, status, code, retryable):
    srv = make_server(faults=f"GET /v1/jobs={status}")
    api = Api(srv)
    try:
        r = api.get("/v1/jobs")
        assert r.status_code == status
        err = r.json()["error"]
        assert err["code"] == code
        assert err["retryable"] is retryable
        assert ("retry" in err["message"]) is retryable  # no "retry" advice on a permanent answer
        if status == 401:
            assert r.headers["www-authenticate"] == "Bearer"  # as the real auth check answers
    finally:
        api.close()
