"""A 405 carries the error envelope and an Allow header naming every method of that path."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize(
    "path,allowed",
    [
        ("/v1/jobs", {"GET", "HEAD", "POST"}),
        ("/v1/jobs/job_x", {"GET", "HEAD", "DELETE"}),
        ("/v1/uploads/upl_x/parts/0", {"PUT"}),
    ],
)
def test_405_names_the_allowed_methods(server, path, allowed):
    r = httpx.request("PATCH", server.url + path, headers={"Authorization": f"Bearer {server.api_keys[0]}"})
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["Allow"].split(",")} == allowed
    body = r.json()["error"]
    assert body["code"] == "validation_error" and body["request_id"] == r.headers["X-Request-Id"]
