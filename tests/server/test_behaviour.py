"""Uploads, idempotency, pagination and downloads: the behaviour beyond status codes."""

from __future__ import annotations

import hashlib
import shutil
import time

import httpx
import pytest

from .helpers import Api


@pytest.fixture
def chunked(make_server):
    srv = make_server(chunk_size=1000)
    api = Api(srv)
    yield api
    api.close()


def test_chunked_upload_any_order_and_reput_is_a_noop(chunked):
    data = bytes(range(256)) * 10  # 2560 bytes -> parts of 1000, 1000, 560
    up = chunked.create_upload("x.bin", len(data))
    assert (up["chunk_size"], up["total_chunks"]) == (1000, 3)
    uid = up["id"]
    for n in (2, 0):
        assert (
            chunked.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * 1000 : (n + 1) * 1000]).status_code
            == 200
        )
    assert chunked.get(f"/v1/uploads/{uid}").json()["received_chunks"] == [0, 2]
    # re-PUT of a received part with different bytes succeeds and rewrites nothing
    r = chunked.put(f"/v1/uploads/{uid}/parts/0", content=b"Z" * 1000)
    assert r.status_code == 200 and r.json() == {"part_number": 0, "received": True}
    r = chunked.put(f"/v1/uploads/{uid}/parts/1", content=b"x" * 1001)  # larger than a part
    assert r.status_code == 400
    assert chunked.get(f"/v1/uploads/{uid}").json()["received_chunks"] == [0, 2]
    assert chunked.put(f"/v1/uploads/{uid}/parts/1", content=data[1000:2000]).status_code == 200
    staged = chunked.server.data_dir / "uploads" / f"{uid}.part"
    assert staged.read_bytes() == data  # each part landed at its offset
    r = chunked.post(f"/v1/uploads/{uid}/complete", headers=chunked.ikey())
    assert r.status_code == 422  # the bytes are not a video...
    assert r.json()["error"]["code"] == "source_invalid"
    # ...and nothing changed: only DELETE cancels a session (issue 16 item 14)
    assert chunked.get(f"/v1/uploads/{uid}").json()["status"] == "uploading"
    assert staged.read_bytes() == data
    assert chunked.delete(f"/v1/uploads/{uid}").status_code == 204
    assert not staged.exists()  # the staged data goes with the cancel


def test_chunk_size_tiers_without_override(server):
    api = Api(server)
    try:
        mb = 1024 * 1024
        for size, chunk in (
            (1, 1),
            (64 * mb - 1, 64 * mb - 1),
            (64 * mb, 8 * mb),
            (1024 * mb, 8 * mb),
            (1024 * mb + 1, 16 * mb),
            (10 * 1024 * mb, 16 * mb),
            (10 * 1024 * mb + 1, 32 * mb),
        ):
            free = shutil.disk_usage(server.data_dir).free
            r = api.post(
                "/v1/uploads",
                headers=api.ikey(),
                json={"file_name": "big.mov", "file_size": size, "mime_type": "video/mp4"},
            )
            if size > free - 64 * mb:  # staging is sparse, but the server keeps disk for the data
                assert r.status_code == 503 and r.json()["error"]["code"] == "capacity_exceeded"
                continue
            up = r.json()
            assert (up["chunk_size"], up["total_chunks"]) == (chunk, -(-size // chunk)), size
            assert api.delete(f"/v1/uploads/{up['id']}").status_code == 204
        r = api.post(
            "/v1/uploads",
            headers=api.ikey(),
            json={"file_name": "huge.mov", "file_size": (1 << 40) - 1, "mime_type": "video/mp4"},
        )
        if (1 << 40) > shutil.disk_usage(server.data_dir).free:
            assert r.status_code == 503 and r.json()["error"]["retryable"] is True
    finally:
        api.close()


def test_replay_has_no_side_effects(server, clip):
    api = Api(server)
    try:
        uid = api.upload(clip)
        key = {"Idempotency-Key": f"replay-{time.time_ns()}"}
        body = {
            "source": {"type": "upload", "upload_id": uid},
            "profile": "sophon-espresso",
            "metadata": {"sophon_local_fail": True},
        }
        before = len(api.get("/v1/jobs", params={"limit": 100}).json()["jobs"])
        first = api.post("/v1/jobs", headers=key, json=body)
        # the same body with keys in another order is the same request
        again = api.post("/v1/jobs", headers=key, json=dict(reversed(list(body.items()))))
        assert first.status_code == again.status_code == 201
        assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
        assert len(api.get("/v1/jobs", params={"limit": 100}).json()["jobs"]) == before + 1
        # an error is not stored: the same key may be retried once the request can succeed
        k2 = {"Idempotency-Key": f"retry-{time.time_ns()}"}
        up = api.create_upload("r.mp4", clip.stat().st_size)
        assert api.post(f"/v1/uploads/{up['id']}/complete", headers=k2).status_code == 400
        assert api.put(f"/v1/uploads/{up['id']}/parts/0", content=clip.read_bytes()).status_code == 200
        assert api.post(f"/v1/uploads/{up['id']}/complete", headers=k2).status_code == 200
        assert api.post(f"/v1/uploads/{up['id']}/complete", headers=k2).status_code == 200  # replay
        assert api.post(f"/v1/uploads/{up['id']}/complete", headers=api.ikey()).status_code == 409
        r = api.post("/v1/uploads", headers={"Idempotency-Key": "k" * 129}, json={})
        assert r.status_code == 400
    finally:
        api.close()


def test_pagination_is_stable_while_jobs_arrive(make_server, clip):
    srv = make_server()
    api = Api(srv)
    try:
        uid = api.upload(clip)
        fail = {"metadata": {"sophon_local_fail": True}}
        ids = [api.create_job(uid, "sophon-espresso", **fail)["id"] for _ in range(7)]
        page1 = api.get("/v1/jobs", params={"limit": 3}).json()
        assert [j["id"] for j in page1["jobs"]] == ids[::-1][:3] and page1["has_more"]
        newer = [api.create_job(uid, "sophon-espresso", **fail)["id"] for _ in range(2)]
        seen = [j["id"] for j in page1["jobs"]]
        cursor = page1["next_cursor"]
        while cursor:
            page = api.get("/v1/jobs", params={"limit": 3, "cursor": cursor}).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            assert page["has_more"] == (cursor is not None)
        assert seen == ids[::-1]  # nothing skipped, nothing repeated, new jobs not mixed in
        first = api.get("/v1/jobs", params={"limit": 2}).json()["jobs"]
        assert [j["id"] for j in first] == newer[::-1]
        for j in ids + newer:
            api.wait(j)
        failed = api.get("/v1/jobs", params={"status": "failed", "limit": 100}).json()
        assert len(failed["jobs"]) == 9 and all(j["status"] == "failed" for j in failed["jobs"])
        assert api.get("/v1/jobs", params={"status": "completed"}).json() == {
            "jobs": [],
            "next_cursor": None,
            "has_more": False,
        }
        assert len(api.get("/v1/jobs").json()["jobs"]) == 9  # default limit 20
    finally:
        api.close()


def test_download_range_forged_expired_and_missing(server, clip):
    from sophon_cli.server.config import TOKEN_SECRET_FILE
    from sophon_cli.server.tokens import TokenSigner

    api = Api(server)
    try:
        job = api.wait(api.create_job(api.upload(clip), "sophon-espresso")["id"])
        loc = api.get(f"/v1/jobs/{job['id']}/output").headers["location"]
        assert loc.startswith(f"{server.url}/v1/downloads/")  # absolute, as the spec types it
        url = loc
        full = httpx.get(url).content
        r = httpx.get(url, headers={"Range": "bytes=10-19"})
        assert r.status_code == 206 and r.content == full[10:20]
        assert r.headers["content-range"] == f"bytes 10-19/{len(full)}"
        r = httpx.get(url, headers={"Range": "bytes=-5"})
        assert r.status_code == 206 and r.content == full[-5:]
        assert httpx.get(url, headers={"Range": f"bytes={len(full) + 5}-"}).status_code == 416
        assert hashlib.sha256(full).hexdigest() == job["output"]["sha256"]
        # a second 302 gives a different, equally valid token
        loc2 = api.get(f"/v1/jobs/{job['id']}/output").headers["location"]
        assert loc2 != loc and httpx.get(loc2).content == full

        token = loc.rsplit("/", 1)[1]
        forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
        for bad in (forged, "nonsense", token.split(".")[0]):
            r = httpx.get(f"{server.url}/v1/downloads/{bad}")
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
            assert bad not in r.text
        signer = TokenSigner((server.data_dir / TOKEN_SECRET_FILE).read_text().strip())
        expired, _ = signer.issue(job["id"], now=time.time() - 2 * 86400)
        r = httpx.get(f"{server.url}/v1/downloads/{expired}")
        assert r.status_code == 403 and "expired" in r.json()["error"]["message"]

        (server.data_dir / "outputs" / f"{job['id']}.mp4").unlink()
        r = httpx.get(url)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    finally:
        api.close()


def test_request_log_counts_routes_and_redacts_tokens(make_server, clip):
    srv = make_server()
    api = Api(srv)
    try:
        job = api.wait(api.create_job(api.upload(clip), "sophon-espresso")["id"])
        r = api.download(job["id"])
        token = r.request.url.path.rsplit("/", 1)[1]
    finally:
        api.close()
    import json

    text = srv.request_log.read_text()
    assert token not in text and srv.api_keys[0] not in text
    recs = [json.loads(line) for line in text.splitlines()]
    routes = {rec["route"] for rec in recs}
    assert {
        "POST /v1/uploads",
        "PUT /v1/uploads/{id}/parts/{part_number}",
        "POST /v1/uploads/{id}/complete",
        "POST /v1/jobs",
        "GET /v1/jobs/{id}/output",
        "GET /v1/downloads/{token}",
    } <= routes
    dl = next(rec for rec in recs if rec["route"] == "GET /v1/downloads/{token}")
    assert (
        dl["path"] == "/v1/downloads/<redacted>"
        and dl["status"] == 200
        and dl["request_id"].startswith("req_")
    )
    assert all("idempotency_key_hash" in rec for rec in recs if rec["method"] == "POST")


def test_upload_sessions_expire_after_24h(make_server):
    import sqlite3

    srv = make_server()
    api = Api(srv)
    try:
        up = api.create_upload("old.mp4", 10)
        assert api.put(f"/v1/uploads/{up['id']}/parts/0", content=b"0123456789").status_code == 200
        staged = srv.data_dir / "uploads" / f"{up['id']}.part"
        # simulate the passing of a day: the session's expiry moves into the past
        db = sqlite3.connect(srv.data_dir / "sophon.db")
        db.execute("UPDATE uploads SET expires_at = expires_at - 86401 WHERE id = ?", (up["id"],))
        db.commit()
        db.close()
        got = api.get(f"/v1/uploads/{up['id']}").json()
        assert got["status"] == "canceled" and got["received_chunks"] == [] and not staged.exists()
        assert api.post(f"/v1/uploads/{up['id']}/complete", headers=api.ikey()).status_code == 409
    finally:
        api.close()
