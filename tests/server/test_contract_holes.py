"""Issue 16: places where the local server was looser than the published contract, each checked
against the real server over loopback."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime

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


# -- 8. upload expiry and output retention are enforced -------------------------------------------


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# The TTL and the retention are stamped from the server's options (checked on the stamps), and
# enforced from the stamps (checked by moving them into the past in the server's store, as waiting
# them out would: no short lifetime races the upload and the encode under load).
TTL, RETENTION = 3600.0, 7200.0
MS = 0.001  # the stamps are RFC 3339 with milliseconds


def test_an_expired_upload_cannot_be_used_and_an_expired_output_is_gone(make_server, clip):
    from tests.helpers.store import expire_outputs, expire_uploads

    srv = make_server(upload_ttl=TTL, retention=RETENTION)
    api = Api(srv)
    try:
        t0 = time.time()
        stale = api.upload(clip)
        t1 = time.time()
        expires = _ts(api.get(f"/v1/uploads/{stale}").json()["expires_at"])
        assert t0 + TTL - MS <= expires <= t1 + TTL + MS  # created_at + the TTL option
        fresh_job = api.wait(api.create_job(stale, "sophon-espresso")["id"])  # within its TTL: fine
        assert fresh_job["status"] == "completed" and fresh_job["output"]["state"] == "available"
        until = _ts(fresh_job["output"]["retention_expires_at"])
        started, completed = _ts(fresh_job["started_at"]), _ts(fresh_job["completed_at"])
        assert started + RETENTION - MS <= until <= completed + RETENTION + MS  # at completion
        assert api.get(f"/v1/jobs/{fresh_job['id']}/output").status_code == 302

        assert expire_uploads(srv) == 1
        r = api.post(
            "/v1/jobs",
            headers=api.ikey(),
            json={"source": {"type": "upload", "upload_id": stale}, "profile": "sophon-espresso"},
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "source_invalid"
        assert "expired" in r.json()["error"]["message"]

        assert expire_outputs(srv) == 1
        job = api.get(f"/v1/jobs/{fresh_job['id']}").json()
        assert job["output"]["state"] == "expired", job["output"]
        r = api.get(f"/v1/jobs/{fresh_job['id']}/output")
        assert r.status_code == 409 and r.json()["error"]["code"] == "output_not_ready"
        assert "expired" in r.json()["error"]["message"]
    finally:
        api.close()


def test_a_download_link_stops_working_when_retention_ends(make_server, clip):
    from tests.helpers.store import expire_outputs

    srv = make_server(retention=RETENTION)
    api = Api(srv)
    try:
        job = api.wait(api.create_job(api.upload(clip), "sophon-espresso")["id"])
        link = api.get(f"/v1/jobs/{job['id']}/output").headers["location"]
        import httpx

        assert httpx.get(link).status_code == 200
        assert expire_outputs(srv) == 1  # the link itself is still within its own lifetime
        r = httpx.get(link)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    finally:
        api.close()


# -- 9. Location is absolute ------------------------------------------------------------------------


def test_output_redirect_location_is_an_absolute_url(api, clip):
    job = api.wait(api.create_job(api.upload(clip), "sophon-espresso")["id"])
    r = api.get(f"/v1/jobs/{job['id']}/output")
    assert r.status_code == 302
    assert r.headers["location"].startswith(f"{api.server.url}/v1/downloads/")


# -- 10. output.audio is what the result contains ----------------------------------------------------


def test_output_audio_is_false_until_the_result_is_known(api, make_clip, tmp_path):
    with_audio = make_clip(tmp_path / "a.mp4", audio=True)
    silent = make_clip(tmp_path / "s.mp4")
    job = api.create_job(
        api.upload(with_audio),
        "sophon-espresso",
        output={"audio": True},
        metadata={"sophon_local_delay": 0.5},
    )
    assert job["output"]["audio"] is False  # not known yet
    assert api.get(f"/v1/jobs/{job['id']}").json()["output"]["audio"] is False
    assert api.wait(job["id"])["output"]["audio"] is True
    job = api.wait(api.create_job(api.upload(silent), "sophon-espresso", output={"audio": True})["id"])
    assert job["status"] == "completed" and job["output"]["audio"] is False  # nothing to mux


# -- 11. smaller ---------------------------------------------------------------------------------------


def test_416_carries_the_error_envelope(api, clip):
    import httpx

    job = api.wait(api.create_job(api.upload(clip), "sophon-espresso")["id"])
    link = api.get(f"/v1/jobs/{job['id']}/output").headers["location"]
    r = httpx.get(link, headers={"Range": f"bytes={job['output']['bytes'] + 10}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{job['output']['bytes']}"
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["request_id"] == r.headers["x-request-id"]
    assert err["retryable"] is False


def test_a_canceled_jobs_output_is_not_something_to_wait_for(api, clip):
    job = api.create_job(api.upload(clip), "sophon-espresso", metadata={"sophon_local_delay": 30})
    assert api.delete(f"/v1/jobs/{job['id']}").status_code == 200
    r = api.get(f"/v1/jobs/{job['id']}/output")
    assert r.status_code == 409 and r.json()["error"]["code"] == "output_not_ready"
    message = r.json()["error"]["message"]
    assert "canceled" in message and "wait until" not in message


def test_the_session_cookie_is_accepted_like_the_bearer_key(api):
    import httpx

    url = api.server.url + "/v1/jobs"
    assert httpx.get(url, cookies={"sophon_api_session": api.key}).status_code == 200
    assert httpx.get(url, cookies={"sophon_api_session": "wrong"}).status_code == 401
    assert httpx.get(url, cookies={"other": api.key}).status_code == 401


# -- 15. integers as JSON Schema counts them; key length in characters ---------------------------


def test_integral_numbers_are_integers_and_key_length_counts_characters(api, clip):
    r = api.post(
        "/v1/uploads",
        headers=api.ikey(),
        json={"file_name": "f.mp4", "file_size": 114.0, "mime_type": "video/mp4"},
    )
    assert r.status_code == 201, r.text
    r = api.post(
        "/v1/uploads",
        headers=api.ikey(),
        json={"file_name": "f.mp4", "file_size": 114.5, "mime_type": "video/mp4"},
    )
    assert r.status_code == 400
    job = api.create_job(api.upload(clip), "sophon-espresso", output={"target_height": 144.0})
    assert job["output"]["target_height"] == 144 and isinstance(job["output"]["target_height"], int)
    body = {"file_name": "f.mp4", "file_size": 10, "mime_type": "video/mp4"}
    key = "é" * 128  # 128 characters, 256 UTF-8 bytes
    r = api.post("/v1/uploads", headers={"Idempotency-Key": key.encode()}, json=body)
    assert r.status_code == 201, r.text
    r = api.post("/v1/uploads", headers={"Idempotency-Key": ("é" * 129).encode()}, json=body)
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"]["message"]


# -- 6, 13. webhook URL rules: every host form, URI syntax ----------------------------------------

REFUSED_URLS = [
    "https://127.1/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0177.0.0.1/",
    "https://127.0.0.1./",
    "https://100.64.0.1/",
    "https://10.0.0.1/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data",
    "https://0.0.0.0/",
    "https://224.0.0.1/",
    "https://240.0.0.1/",
    "https://255.255.255.255/",
    "https://[::1]/",
    "https://[::]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:10.0.0.1]/",
    "https://[fe80::1]/",
    "https://[fc00::1]/",
    "https://[ff02::1]/",
    "https://[64:ff9b::7f00:1]/",
    "https://[2002:7f00:1::]/",
    "https://localhost/",
    "https://localhost./",
    "https://LOCALHOST/",
    "https://printer.local/",
    "https://app.localhost/",
    "https://exa mple.com/",
    "https://example.com/a b",
    "https://bücher.example/",
    "https://example.com/%zz",
    "https://1.2.3.4.5/",
    "https://256.1.1.1/",
    "https://-bad-.example.com/",
    "https://example.com:99999/",
    "https://user@example.com/",
    "http://example.com/",
]


def test_webhook_urls_are_refused_in_every_host_form(make_server):
    srv = make_server(allow_insecure_webhooks=False)
    api = Api(srv)
    try:
        for url in REFUSED_URLS:
            r = api.post("/v1/webhooks", headers=api.ikey(), json={"url": url})
            assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error", (url, r.text)
        for url in (
            "https://93.184.216.34/hook",
            "https://[2606:4700::1111]/hook",
            "https://hooks.example.com/x?a=1&b=%20",
            "https://xn--bcher-kva.example/",
            "https://hooks.example.com./",
        ):
            r = api.post("/v1/webhooks", headers=api.ikey(), json={"url": url})
            assert r.status_code == 201, (url, r.text)
        listed = api.get("/v1/webhooks").json()["webhooks"]
        assert len(listed) == 5 and all(" " not in w["url"] for w in listed)
    finally:
        api.close()


def test_a_name_that_resolves_to_a_refused_address_is_refused_at_delivery(make_server, clip):
    import ipaddress
    import socket

    name = socket.gethostname()
    try:
        addrs = {
            ipaddress.ip_address(i[4][0]) for i in socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)
        }
    except OSError:
        pytest.skip("the host name does not resolve")
    if not all(a.is_loopback or a.is_private for a in addrs) or name.endswith((".local", ".localhost")):
        pytest.skip("the host name does not resolve to a local address here")
    srv = make_server(allow_insecure_webhooks=False, webhook_retry_delays=(0.05, 0.05))
    api = Api(srv)
    try:
        hook = api.post("/v1/webhooks", headers=api.ikey(), json={"url": f"https://{name}/hook"})
        assert hook.status_code == 201  # a name is checked where it resolves: at delivery
        job = api.create_job(
            api.upload(clip),
            "sophon-espresso",
            webhook_ids=[hook.json()["id"]],
            metadata={"sophon_local_fail": True},
        )
        api.wait(job["id"])
        deadline = time.monotonic() + 15
        while (rows := srv.core.store.deliveries_of(hook.json()["id"])) and rows[0]["state"] != "dropped":
            assert time.monotonic() < deadline, rows
            time.sleep(0.02)
        assert rows[0]["last_error"].startswith("refused: the URL resolves to")
    finally:
        api.close()


# -- 5. a deleted webhook gets no further attempt ---------------------------------------------------


def test_a_deleted_webhook_receives_no_queued_retry(make_server, clip):
    from .test_webhooks_restart import Receiver, settled

    failing = Receiver(statuses=[500, 500, 500])
    # the retry is queued for 10 minutes later: the delete comes first however loaded the machine
    # is (with 1 s, a slow poll below let the retry go out before the delete)
    srv = make_server(webhook_retry_delays=(600.0, 600.0))
    api = Api(srv)
    try:
        hook = api.post("/v1/webhooks", headers=api.ikey(), json={"url": failing.url}).json()
        job = api.create_job(
            api.upload(clip),
            "sophon-espresso",
            webhook_ids=[hook["id"]],
            metadata={"sophon_local_fail": True},
        )
        api.wait(job["id"])
        failing.wait_for(1)  # the first attempt failed; a retry is queued
        deadline = time.monotonic() + 60
        while srv.core.store.deliveries_of(hook["id"])[0]["state"] != "pending":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert api.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
        rows = settled(srv, hook["id"])
        assert [(d["state"], d["attempts"]) for d in rows] == [("dropped", 1)]
        assert rows[0]["last_error"] == "the webhook was deleted"
        assert len(failing.deliveries) == 1
    finally:
        api.close()
        failing.close()


# -- 4. the metadata limit counts UTF-8 bytes of the compact serialization -------------------------


def test_metadata_limit_counts_utf8_bytes(api, clip):
    uid = api.upload(clip)
    overhead = len('{"k":""}')
    fits = {"k": "é" * ((16 * 1024 - overhead) // 2)}  # 16383 bytes as UTF-8, 49k ASCII-escaped
    assert len(json.dumps(fits, separators=(",", ":"), ensure_ascii=False).encode()) <= 16 * 1024
    job = api.create_job(uid, "sophon-espresso", metadata=fits)
    assert job["metadata"] == fits
    over = {"k": "é" * ((16 * 1024 - overhead) // 2 + 1)}  # 16385 bytes
    r = api.post(
        "/v1/jobs",
        headers=api.ikey(),
        json={"source": {"type": "upload", "upload_id": uid}, "profile": "sophon-espresso", "metadata": over},
    )
    assert r.status_code == 400 and "16 KiB" in r.json()["error"]["message"]


def test_metadata_with_a_lone_surrogate_is_a_400_not_a_crash(api, clip):
    uid = api.upload(clip)
    raw = (
        '{"source":{"type":"upload","upload_id":"%s"},"profile":"sophon-espresso","metadata":{"k":"\\ud800"}}'
    )
    r = api.post(
        "/v1/jobs", headers={**api.ikey(), "Content-Type": "application/json"}, content=raw.replace("%s", uid)
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "validation_error"
