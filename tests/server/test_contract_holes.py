"""Issue 16: places where the local server was looser than the published contract, each checked
against the real server over loopback."""

from __future__ import annotations

import base64
import json

import pytest

from .helpers import Api


@pytest.fixture
def api(make_server):
    a = Api(make_server(chunk_size=4096))
    yield a
    a.close()


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in a response body")

    return json.loads(text, parse_constant=refuse)


# -- 1. a part must have exactly its expected length -------------------------------------------


def test_short_or_long_parts_are_refused_and_not_stored(api, clip):
    data = clip.read_bytes()
    up = api.create_upload("clip.mp4", len(data))
    uid, cs, total = up["id"], up["chunk_size"], up["total_chunks"]
    assert cs == 4096 and total >= 3
    last = total - 1
    last_len = len(data) - last * cs
    bad = [
        (0, data[:4000]),  # short
        (0, data[: cs + 1]),  # long
        (last, data[last * cs : last * cs + last_len - 1]),  # short last part
        (last, data[last * cs :] + b"x"),  # long last part
    ]
    for n, body in bad:
        r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=body)
        expected = cs if n == 0 else last_len
        assert r.status_code == 400, (n, len(body), r.text)
        err = r.json()["error"]
        assert err["code"] == "validation_error" and f"exactly {expected} bytes" in err["message"]
    # without a Content-Length (chunked transfer) the short body is caught after reading it
    r = api.put(f"/v1/uploads/{uid}/parts/1", content=iter([data[cs : cs + 100], data[cs + 100 : cs + 200]]))
    assert r.status_code == 400 and f"exactly {cs} bytes" in r.json()["error"]["message"]
    assert api.get(f"/v1/uploads/{uid}").json()["received_chunks"] == []
    for n in range(total):  # the correct PUTs are accepted: nothing was poisoned
        r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * cs : (n + 1) * cs])
        assert r.status_code == 200, r.text
    r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
    assert r.status_code == 200, r.text


# -- 2. NaN / Infinity are not JSON --------------------------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_numbers_in_a_body_are_refused(api, clip, constant):
    uid = api.upload(clip)
    body = {
        "source": {"type": "upload", "upload_id": uid},
        "profile": "sophon-espresso",
        "metadata": {"x": 0},
    }
    raw = json.dumps(body).replace('"x": 0', f'"x": {constant}')
    r = api.post("/v1/jobs", headers={**api.ikey(), "Content-Type": "application/json"}, content=raw)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "validation_error" and "not JSON" in r.json()["error"]["message"]
    listed = api.get("/v1/jobs")
    assert _strict_json(listed.text)["jobs"] == []  # nothing was created


# -- 3. cursors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"v1:" + str(10**30).encode(), b"v1:9223372036854775808", b"v1:-1", b"v1:1e3", b"v1: 5", b"v2:5"],
)
def test_out_of_range_or_malformed_cursors_are_400(api, raw):
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    r = api.get("/v1/jobs", params={"cursor": cursor})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["retryable"] is False


def test_undecodable_cursors_are_400(api):
    for cursor in ("%%%", "a", "////", "\u00e9"):
        r = api.get("/v1/jobs", params={"cursor": cursor})
        assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", cursor


def test_the_largest_cursor_is_accepted(api):
    cursor = base64.urlsafe_b64encode(b"v1:9223372036854775807").decode().rstrip("=")
    r = api.get("/v1/jobs", params={"cursor": cursor})
    assert r.status_code == 200 and r.json()["jobs"] == []


# -- 14. a failed complete changes nothing -------------------------------------------------------


def test_a_422_on_complete_keeps_the_session_and_a_retry_answers_422_again(api):
    data = bytes(range(256)) * 40  # not a video
    up = api.create_upload("noise.mp4", len(data))
    uid, cs = up["id"], up["chunk_size"]
    for n in range(up["total_chunks"]):
        assert api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * cs : (n + 1) * cs]).status_code == 200
    key = api.ikey()
    first = api.post(f"/v1/uploads/{uid}/complete", headers=key)
    assert first.status_code == 422 and first.json()["error"]["code"] == "source_invalid"
    status = api.get(f"/v1/uploads/{uid}").json()
    assert status["status"] == "uploading"
    assert status["received_chunks"] == list(range(up["total_chunks"]))
    again = api.post(f"/v1/uploads/{uid}/complete", headers=key)  # the client's retry
    assert again.status_code == 422 and again.json()["error"]["code"] == "source_invalid"
    assert again.json()["error"]["message"] == first.json()["error"]["message"]
    assert api.delete(f"/v1/uploads/{uid}").status_code == 204  # only DELETE cancels
    assert api.get(f"/v1/uploads/{uid}").json()["status"] == "canceled"


# -- 7. idempotency records are per API key; errors are not replayed ------------------------------


def test_idempotency_keys_are_scoped_per_api_key(make_server):
    srv = make_server(api_keys=["key-a-0123456789", "key-b-0123456789"])
    a, b = Api(srv, "key-a-0123456789"), Api(srv, "key-b-0123456789")
    try:
        body = {"file_name": "x.mp4", "file_size": 10, "mime_type": "video/mp4"}
        key = {"Idempotency-Key": "shared-key-1"}
        first = a.post("/v1/uploads", headers=key, json=body)
        assert first.status_code == 201
        replay = a.post("/v1/uploads", headers=key, json=body)
        assert replay.json()["id"] == first.json()["id"] and replay.headers["idempotent-replayed"] == "true"
        other = b.post("/v1/uploads", headers=key, json=body)  # another API key: a new request
        assert other.status_code == 201 and "idempotent-replayed" not in other.headers
        assert other.json()["id"] != first.json()["id"]
        changed = b.post(
            "/v1/uploads", headers={"Idempotency-Key": "shared-key-1"}, json={**body, "file_size": 11}
        )
        assert changed.status_code == 409  # within key B, its own record decides
        assert a.post("/v1/uploads", headers=key, json=body).json()["id"] == first.json()["id"]
    finally:
        a.close()
        b.close()


def test_a_non_2xx_answer_is_not_replayed_the_retry_runs_again(api, clip):
    data = clip.read_bytes()
    up = api.create_upload("clip.mp4", len(data))
    body = {"source": {"type": "upload", "upload_id": up["id"]}, "profile": "sophon-espresso"}
    key = {"Idempotency-Key": "create-job-after-complete"}
    early = api.post("/v1/jobs", headers=key, json=body)
    assert early.status_code == 422 and early.json()["error"]["code"] == "source_invalid"
    cs = up["chunk_size"]
    for n in range(up["total_chunks"]):
        assert (
            api.put(f"/v1/uploads/{up['id']}/parts/{n}", content=data[n * cs : (n + 1) * cs]).status_code
            == 200
        )
    assert api.post(f"/v1/uploads/{up['id']}/complete", headers=api.ikey()).status_code == 200
    created = api.post("/v1/jobs", headers=key, json=body)  # same key, same body: runs again
    assert created.status_code == 201 and "idempotent-replayed" not in created.headers
    replay = api.post("/v1/jobs", headers=key, json=body)  # the 2xx is stored from now on
    assert replay.status_code == 201 and replay.json()["id"] == created.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
