"""Every operation of the spec over a real socket, each status it lists, bodies checked against the
spec's schemas (the document is read from ../shared/sophon-api/openapi.yaml; skipped if absent)."""

from __future__ import annotations

import httpx
import pytest

from .helpers import Api, SpecValidator


@pytest.fixture(scope="module")
def v(spec):
    return SpecValidator(spec)


@pytest.fixture(scope="module")
def api(server):
    a = Api(server)
    yield a
    a.close()


@pytest.fixture(scope="module")
def upload_id(api, clip):
    return api.upload(clip)


@pytest.fixture(scope="module")
def done_job(api, upload_id):
    job = api.create_job(upload_id, "sophon-espresso")
    return api.wait(job["id"])


def test_unauthorized_everywhere_but_public_routes(server, v):
    ops = [
        ("GET", "/v1/jobs", "/v1/jobs"),
        ("POST", "/v1/jobs", "/v1/jobs"),
        ("GET", "/v1/jobs/{id}", "/v1/jobs/job_x"),
        ("DELETE", "/v1/jobs/{id}", "/v1/jobs/job_x"),
        ("GET", "/v1/jobs/{id}/output", "/v1/jobs/job_x/output"),
        ("POST", "/v1/uploads", "/v1/uploads"),
        ("GET", "/v1/uploads/{id}", "/v1/uploads/upl_x"),
        ("DELETE", "/v1/uploads/{id}", "/v1/uploads/upl_x"),
        ("PUT", "/v1/uploads/{id}/parts/{part_number}", "/v1/uploads/upl_x/parts/0"),
        ("POST", "/v1/uploads/{id}/complete", "/v1/uploads/upl_x/complete"),
        ("GET", "/v1/webhooks", "/v1/webhooks"),
        ("POST", "/v1/webhooks", "/v1/webhooks"),
        ("DELETE", "/v1/webhooks/{id}", "/v1/webhooks/wh_x"),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Basic dGVzdA=="}):
        for method, tmpl, path in ops:
            r = httpx.request(method, server.url + path, headers={**headers, "Idempotency-Key": "k"})
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
            v.check(tmpl, method, r)
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200


def test_upload_lifecycle_statuses(api, v, clip):
    data = clip.read_bytes()
    r = api.post(
        "/v1/uploads",
        headers=api.ikey(),
        json={"file_name": "a.mp4", "file_size": len(data), "mime_type": "video/mp4"},
    )
    v.check("/v1/uploads", "POST", r)
    assert r.status_code == 201
    up = r.json()
    assert up["chunk_size"] == len(data) and up["total_chunks"] == 1  # < 64 MB: one whole-file part
    uid = up["id"]

    r = api.get(f"/v1/uploads/{uid}")
    v.check("/v1/uploads/{id}", "GET", r)
    assert r.json()["status"] == "uploading" and r.json()["received_chunks"] == []

    r = api.put(f"/v1/uploads/{uid}/parts/1", content=b"x")
    v.check("/v1/uploads/{id}/parts/{part_number}", "PUT", r)
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"

    r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
    v.check("/v1/uploads/{id}/complete", "POST", r)
    assert r.status_code == 400  # part 0 missing

    r = api.put(f"/v1/uploads/{uid}/parts/0", content=data)
    v.check("/v1/uploads/{id}/parts/{part_number}", "PUT", r)
    assert r.status_code == 200 and r.json() == {"part_number": 0, "received": True}

    r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
    v.check("/v1/uploads/{id}/complete", "POST", r)
    assert r.status_code == 200
    import hashlib

    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest() and r.json()["bytes"] == len(data)

    r = api.get(f"/v1/uploads/{uid}")
    v.check("/v1/uploads/{id}", "GET", r)
    body = r.json()
    assert (body["status"], body["source_width"], body["source_height"]) == ("completed", 160, 120)
    assert body["source_duration_seconds"] == pytest.approx(1.0, abs=0.1)

    r = api.put(f"/v1/uploads/{uid}/parts/0", content=data)  # no longer uploading
    v.check("/v1/uploads/{id}/parts/{part_number}", "PUT", r)
    assert r.status_code == 409
    r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
    v.check("/v1/uploads/{id}/complete", "POST", r)
    assert r.status_code == 409

    for method, tmpl, path in (
        ("GET", "/v1/uploads/{id}", "/v1/uploads/upl_nope"),
        ("DELETE", "/v1/uploads/{id}", "/v1/uploads/upl_nope"),
        ("PUT", "/v1/uploads/{id}/parts/{part_number}", "/v1/uploads/upl_nope/parts/0"),
        ("POST", "/v1/uploads/{id}/complete", "/v1/uploads/upl_nope/complete"),
    ):
        r = api.request(method, path, headers=api.ikey(), content=b"x" if method == "PUT" else None)
        v.check(tmpl, method, r)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_create_upload_validation(api, v):
    for body in (
        {"file_name": "", "file_size": 10, "mime_type": "video/mp4"},
        {"file_name": "a.mp4", "file_size": 0, "mime_type": "video/mp4"},
        {"file_name": "a.mp4", "file_size": 1 << 50, "mime_type": "video/mp4"},
        {"file_name": "a.mp4", "file_size": 10},
    ):
        r = api.post("/v1/uploads", headers=api.ikey(), json=body)
        v.check("/v1/uploads", "POST", r)
        assert r.status_code == 400, body
    r = api.post("/v1/uploads", json={"file_name": "a.mp4", "file_size": 10, "mime_type": "video/mp4"})
    v.check("/v1/uploads", "POST", r)
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"]["message"]


def test_complete_rejects_size_mismatch_and_non_video(api, v, tmp_path):
    up = api.create_upload("short.mp4", 100)
    # a short part is refused when it arrives (issue 16 item 1), so complete finds it missing
    r = api.put(f"/v1/uploads/{up['id']}/parts/0", content=b"x" * 60)
    v.check("/v1/uploads/{id}/parts/{part_number}", "PUT", r)
    assert r.status_code == 400 and "exactly 100 bytes" in r.json()["error"]["message"]
    r = api.post(f"/v1/uploads/{up['id']}/complete", headers=api.ikey())
    v.check("/v1/uploads/{id}/complete", "POST", r)
    assert r.status_code == 400 and "1 of 1 parts are missing" in r.json()["error"]["message"]

    text = tmp_path / "notes.mp4"
    text.write_bytes(b"this is not a video at all\n" * 40)
    uid = api.upload(text, complete=False)
    r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
    v.check("/v1/uploads/{id}/complete", "POST", r)
    assert r.status_code == 422 and r.json()["error"]["code"] == "source_invalid"


def test_cancel_upload(api, v, server):
    up = api.create_upload("c.mp4", 1000)
    assert api.put(f"/v1/uploads/{up['id']}/parts/0", content=b"y" * 1000).status_code == 200
    staged = server.data_dir / "uploads" / f"{up['id']}.part"
    assert staged.exists()
    r = api.delete(f"/v1/uploads/{up['id']}")
    v.check("/v1/uploads/{id}", "DELETE", r)
    assert r.status_code == 204 and not staged.exists()
    got = api.get(f"/v1/uploads/{up['id']}").json()
    assert got["status"] == "canceled" and got["received_chunks"] == []


def test_jobs_operations(api, v, upload_id, done_job):
    r = api.get(f"/v1/jobs/{done_job['id']}")
    v.check("/v1/jobs/{id}", "GET", r)
    assert r.json()["status"] == "completed"

    r = api.get("/v1/jobs", params={"limit": 5})
    v.check("/v1/jobs", "GET", r)
    assert any(j["id"] == done_job["id"] for j in api.get("/v1/jobs", params={"limit": 100}).json()["jobs"])
    for params in (
        {"status": "bogus"},
        {"cursor": "!!notacursor"},
        {"limit": 0},
        {"limit": 101},
        {"limit": "x"},
    ):
        r = api.get("/v1/jobs", params=params)
        v.check("/v1/jobs", "GET", r)
        assert r.status_code == 400, params

    r = api.delete(f"/v1/jobs/{done_job['id']}")
    v.check("/v1/jobs/{id}", "DELETE", r)
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_cancelable"

    r = api.get(f"/v1/jobs/{done_job['id']}/output")
    v.check("/v1/jobs/{id}/output", "GET", r)
    assert r.status_code == 302 and r.headers["location"].startswith(f"{api.server.url}/v1/downloads/")
    r = httpx.get(r.headers["location"])
    v.check("/v1/downloads/{token}", "GET", r)
    assert r.status_code == 200

    for method, tmpl, path in (
        ("GET", "/v1/jobs/{id}", "/v1/jobs/job_nope"),
        ("DELETE", "/v1/jobs/{id}", "/v1/jobs/job_nope"),
        ("GET", "/v1/jobs/{id}/output", "/v1/jobs/job_nope/output"),
    ):
        r = api.request(method, path)
        v.check(tmpl, method, r)
        assert r.status_code == 404


def test_create_job_validation(api, v, upload_id):
    src = {"type": "upload", "upload_id": upload_id}
    bad = [
        {"source": src, "profile": "sophon-decaf"},
        {"source": src},
        {"source": {"type": "url", "url": "https://x"}, "profile": "sophon-auto"},
        {"source": {"type": "upload", "upload_id": "upl_nope"}, "profile": "sophon-auto"},
        {"source": src, "profile": "sophon-auto", "output": {"container": "avi"}},
        {"source": src, "profile": "sophon-auto", "output": {"target_height": 100}},
        {"source": src, "profile": "sophon-auto", "webhook_ids": ["wh_nope"]},
        {"source": src, "profile": "sophon-auto", "metadata": {"blob": "x" * (16 * 1024)}},
        {"source": src, "profile": "sophon-auto", "metadata": ["not", "an", "object"]},
    ]
    for body in bad:
        r = api.post("/v1/jobs", headers=api.ikey(), json=body)
        v.check("/v1/jobs", "POST", r)
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", body
    pending = api.create_upload("p.mp4", 10)
    r = api.post(
        "/v1/jobs",
        headers=api.ikey(),
        json={"source": {"type": "upload", "upload_id": pending["id"]}, "profile": "sophon-auto"},
    )
    v.check("/v1/jobs", "POST", r)
    assert r.status_code == 422 and r.json()["error"]["code"] == "source_invalid"


def test_create_job_201_cancel_200_output_409(api, v, upload_id):
    r = api.post(
        "/v1/jobs",
        headers=api.ikey(),
        json={
            "source": {"type": "upload", "upload_id": upload_id},
            "profile": "sophon-cortado",
            "metadata": {"sophon_local_delay": 30, "order": 7},
        },
    )
    v.check("/v1/jobs", "POST", r)
    assert r.status_code == 201
    job = r.json()
    assert job["status"] == "queued" and job["metadata"]["order"] == 7 and job["retryable"] is True
    r = api.get(f"/v1/jobs/{job['id']}/output")
    v.check("/v1/jobs/{id}/output", "GET", r)
    assert r.status_code == 409 and r.json()["error"]["code"] == "output_not_ready"
    api.wait(job["id"], statuses=("encoding",))
    r = api.delete(f"/v1/jobs/{job['id']}")
    v.check("/v1/jobs/{id}", "DELETE", r)
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"


def test_webhook_operations(api, v):
    r = api.post(
        "/v1/webhooks", headers=api.ikey(), json={"url": "https://hooks.example.com/sophon", "name": "n"}
    )
    v.check("/v1/webhooks", "POST", r)
    assert r.status_code == 201
    hook = r.json()
    r = api.get("/v1/webhooks")
    v.check("/v1/webhooks", "GET", r)
    r = api.delete(f"/v1/webhooks/{hook['id']}")
    v.check("/v1/webhooks/{id}", "DELETE", r)
    assert r.status_code == 204
    r = api.delete(f"/v1/webhooks/{hook['id']}")
    v.check("/v1/webhooks/{id}", "DELETE", r)
    assert r.status_code == 404
    r = api.post("/v1/webhooks", headers=api.ikey(), json={"url": "not a url"})
    v.check("/v1/webhooks", "POST", r)
    assert r.status_code == 400


def test_webhook_objects_carry_exactly_the_spec_fields_and_no_name(api, spec):
    """Issue 13 asked whether `webhooks list` shows an empty NAME because this server omits `name`:
    it does, as the spec does (neither WebhookResponse nor WebhookListItem has a `name`), so a
    client that relied on it here would break against the real API. The name stays client-side."""
    schemas = spec["components"]["schemas"]
    r = api.post(
        "/v1/webhooks", headers=api.ikey(), json={"url": "https://hooks.example.com/named", "name": "local"}
    )
    assert r.status_code == 201
    assert set(r.json()) == set(schemas["WebhookResponse"]["properties"])
    items = [w for w in api.get("/v1/webhooks").json()["webhooks"] if w["id"] == r.json()["id"]]
    assert len(items) == 1 and set(items[0]) == set(schemas["WebhookListItem"]["properties"])
    assert "name" not in schemas["WebhookResponse"]["properties"]
    assert "name" not in schemas["WebhookListItem"]["properties"]
    assert api.delete(f"/v1/webhooks/{r.json()['id']}").status_code == 204


def test_idempotency_conflicts(api, v, upload_id):
    key = {"Idempotency-Key": "contract-conflict-key"}
    body = {"file_name": "i.mp4", "file_size": 5, "mime_type": "video/mp4"}
    first = api.post("/v1/uploads", headers=key, json=body)
    assert first.status_code == 201
    again = api.post("/v1/uploads", headers=key, json=body)
    v.check("/v1/uploads", "POST", again)
    assert again.status_code == 201 and again.json() == first.json()
    other = api.post("/v1/uploads", headers=key, json={**body, "file_size": 6})
    v.check("/v1/uploads", "POST", other)
    assert other.status_code == 409 and other.json()["error"]["code"] == "conflict"
    for path, payload, tmpl in (
        (
            "/v1/jobs",
            {"source": {"type": "upload", "upload_id": upload_id}, "profile": "sophon-auto"},
            "/v1/jobs",
        ),
        ("/v1/webhooks", {"url": "https://hooks.example.com/x"}, "/v1/webhooks"),
    ):
        r = api.post(path, headers=key, json=payload)
        v.check(tmpl, "POST", r)
        assert r.status_code == 409 and "another route" in r.json()["error"]["message"]


def test_fault_statuses_are_spec_shaped(make_server, v):
    srv = make_server(faults="POST /v1/*=429:1:retry-after=1,PUT /v1/*=503:1,GET /v1/webhooks=500:1")
    api = Api(srv)
    try:
        for path in ("/v1/uploads", "/v1/jobs", "/v1/webhooks"):
            r = api.post(path, headers=api.ikey(), json={})
            v.check(path, "POST", r)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"] == {**r.json()["error"], "code": "rate_limited", "retryable": True}
        r = api.put("/v1/uploads/upl_x/parts/0", content=b"x")
        v.check("/v1/uploads/{id}/parts/{part_number}", "PUT", r)
        assert r.status_code == 503 and r.json()["error"]["code"] == "capacity_exceeded"
        r = api.get("/v1/webhooks")
        assert r.status_code == 500 and r.json()["error"]["retryable"] is True
        assert httpx.get(srv.url + "/healthz").status_code == 200  # health is never faulted by patterns
    finally:
        api.close()


def test_health_ready_metrics(server, v, make_server):
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 200 and r.headers["x-request-id"]
    r = httpx.get(server.url + "/readyz")
    v.check("/readyz", "GET", r)
    assert r.json() == {"ready": True, "checks_failed": []}
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'sophon_http_requests_total{route="GET /healthz",status="200"}' in r.text

    broken = make_server()
    broken.core.workers.stop()  # a dead worker pool must make the server unready
    r = httpx.get(broken.url + "/readyz")
    v.check("/readyz", "GET", r)
    assert r.status_code == 503 and r.json()["checks_failed"] == ["workers_dead"]
