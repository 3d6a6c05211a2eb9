"""Idempotency, server and client: replay with the same key and body returns the identical response
and creates nothing; a different body is a 409; keys are scoped per route; 32 concurrent requests
with one key create exactly one resource; the client's per-route keys never collide."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sophon_cli.client.idempotency import ROUTES, intent_key, route_key
from tests.conftest import TEST_KEY, _make_clip

from .conftest import api, count_jobs, count_uploads, db_rows, read_log


def post(srv, path, key, body):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return api(
        srv, "POST", path, content=data, headers={"Idempotency-Key": key, "Content-Type": "application/json"}
    )


def count_webhooks(srv) -> int:
    return db_rows(srv, "SELECT COUNT(*) FROM webhooks")[0][0]


@pytest.fixture(scope="module")
def idem_server(tmp_path_factory):
    from sophon_cli.server.runner import LocalServer

    base = tmp_path_factory.mktemp("idem")
    srv = LocalServer(
        base / "data", api_keys=[TEST_KEY], allow_insecure_webhooks=True, request_log=base / "log.jsonl"
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory):
    return _make_clip(tmp_path_factory.mktemp("idemclip") / "c.mp4", seconds=0.4, size="64x64").read_bytes()


def _completed_upload(srv, data: bytes, tag: str) -> str:
    r = post(
        srv,
        "/v1/uploads",
        f"up-{tag}",
        {"file_name": f"{tag}.mp4", "file_size": len(data), "mime_type": "video/mp4"},
    )
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    assert api(srv, "PUT", f"/v1/uploads/{uid}/parts/0", content=data).status_code == 200
    r = post(srv, f"/v1/uploads/{uid}/complete", f"done-{tag}", b"")
    assert r.status_code == 200, r.text
    return uid


def _routes(srv, clip_bytes, tag):
    """(path, counter, body_a, body_b) for every POST route; complete needs a fresh upload."""
    up = {"file_name": f"{tag}.mp4", "file_size": len(clip_bytes), "mime_type": "video/mp4"}
    r = post(srv, "/v1/uploads", f"pre-{tag}", up)
    uid = r.json()["id"]
    api(srv, "PUT", f"/v1/uploads/{uid}/parts/0", content=clip_bytes)
    done = _completed_upload(srv, clip_bytes, f"{tag}-src")
    return {
        "create-upload": ("/v1/uploads", count_uploads, up, dict(up, file_name=f"{tag}-other.mp4")),
        "complete-upload": (
            f"/v1/uploads/{uid}/complete",
            lambda s: db_rows(s, "SELECT COUNT(*) FROM uploads WHERE status='completed'")[0][0],
            b"",
            b'{"extra": 1}',
        ),
        "create-job": (
            "/v1/jobs",
            count_jobs,
            {
                "source": {"type": "upload", "upload_id": done},
                "profile": "sophon-espresso",
                "metadata": {"sophon_local_delay": 60},
            },
            {
                "source": {"type": "upload", "upload_id": done},
                "profile": "sophon-cortado",
                "metadata": {"sophon_local_delay": 60},
            },
        ),
        "create-webhook": (
            "/v1/webhooks",
            count_webhooks,
            {"url": "http://127.0.0.1:9/a"},
            {"url": "http://127.0.0.1:9/b"},
        ),
    }


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_same_key_same_body_replays_identical_response_without_new_resource(idem_server, clip_bytes, route):
    srv = idem_server
    path, counter, body, _ = _routes(srv, clip_bytes, f"replay-{route}")[route]
    key = f"k-replay-{route}"
    first = post(srv, path, key, body)
    assert first.status_code in (200, 201), first.text
    n = counter(srv)
    for _ in range(3):
        again = post(srv, path, key, body)
        assert again.status_code == first.status_code
        assert again.content == first.content  # byte-identical (same id, same secret, same timestamps)
    assert counter(srv) == n


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_same_key_different_body_is_409(idem_server, clip_bytes, route):
    srv = idem_server
    path, counter, body, other = _routes(srv, clip_bytes, f"diff-{route}")[route]
    key = f"k-diff-{route}"
    assert post(srv, path, key, body).status_code in (200, 201)
    n = counter(srv)
    r = post(srv, path, key, other)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "conflict"
    assert r.json()["error"]["retryable"] is False
    assert counter(srv) == n


def test_same_key_on_another_route_is_409(idem_server, clip_bytes):
    srv = idem_server
    routes = _routes(srv, clip_bytes, "cross")
    path, _, body, _ = routes["create-webhook"]
    assert post(srv, path, "k-cross", body).status_code == 201
    path, counter, body, _ = routes["create-upload"]
    n = counter(srv)
    r = post(srv, path, "k-cross", body)
    assert r.status_code == 409 and counter(srv) == n


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_32_concurrent_requests_with_one_key_create_one_resource(idem_server, clip_bytes, route):
    srv = idem_server
    path, counter, body, _ = _routes(srv, clip_bytes, f"conc-{route}")[route]
    before = counter(srv)
    key = f"k-conc-{route}"
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: post(srv, path, key, body), range(32)))
    assert len({a.status_code for a in answers}) == 1, {a.status_code for a in answers}
    assert answers[0].status_code in (200, 201), answers[0].text
    assert len({a.json()["id"] for a in answers}) == 1
    assert len({a.content for a in answers}) == 1
    assert counter(srv) == before + 1


def test_client_rerun_reuses_session_and_job_with_distinct_keys_per_route(make_server, tmp_path):
    """The library's deterministic keys: a rerun after the local cache is gone gets the same
    upload and job back; the keys it sent on different routes all differ."""
    from sophon_cli.client.http import SophonClient

    srv = make_server()
    clip = _make_clip(tmp_path / "k.mp4", seconds=0.4, size="64x64")
    results = []
    for _ in range(2):
        with SophonClient(srv.url, TEST_KEY) as c:
            results.append(c.uploads.upload_file(clip))
    assert results[0].upload_id == results[1].upload_id
    assert count_uploads(srv) == 1
    by_route: dict[str, set[str]] = {}
    for rec in read_log(srv):
        if rec["method"] == "POST":
            by_route.setdefault(rec["route"], set()).add(rec["idempotency_key_hash"])
    assert set(by_route) == {"POST /v1/uploads", "POST /v1/uploads/{id}/complete"}
    assert all(len(v) == 1 for v in by_route.values())  # one key per route across both runs
    assert by_route["POST /v1/uploads"].isdisjoint(by_route["POST /v1/uploads/{id}/complete"])
    statuses = [r["status"] for r in read_log(srv) if r["method"] == "POST"]
    assert 409 not in statuses


_fields = st.dictionaries(
    st.text(min_size=1, max_size=8).map(lambda s: "f_" + s),
    st.one_of(st.none(), st.integers(), st.text(max_size=20), st.booleans()),
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(
    kind_a=st.sampled_from(["upload", "job", "webhook"]),
    a=_fields,
    kind_b=st.sampled_from(["upload", "job", "webhook"]),
    b=_fields,
)
def test_client_route_keys_never_collide(kind_a, a, kind_b, b):
    base_a, base_b = intent_key(kind_a, **a), intent_key(kind_b, **b)
    keys_a = {r: route_key(base_a, r) for r in ROUTES}
    keys_b = {r: route_key(base_b, r) for r in ROUTES}
    for keys in (keys_a, keys_b):
        assert len(set(keys.values())) == len(ROUTES)  # one intent: a distinct key per route
        assert all(1 <= len(k) <= 128 and k.isascii() and k.isprintable() for k in keys.values())
    same_intent = (kind_a, {k: v for k, v in a.items() if v is not None}) == (
        kind_b,
        {k: v for k, v in b.items() if v is not None},
    )
    for ra in ROUTES:
        for rb in ROUTES:
            if keys_a[ra] == keys_b[rb]:
                assert ra == rb and same_intent


@settings(max_examples=100, deadline=None)
@given(base=st.text(min_size=0, max_size=300))
def test_route_key_of_any_base_is_valid_and_route_scoped(base):
    keys = [route_key(base, r) for r in sorted(ROUTES)]
    assert len(set(keys)) == len(keys)
    assert all(1 <= len(k) <= 128 and k.isascii() for k in keys)
