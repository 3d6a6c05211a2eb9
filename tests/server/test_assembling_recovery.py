"""An upload left ``assembling`` by a server that died mid-complete can still be completed."""

from __future__ import annotations

import hashlib
import socket
import sqlite3

import httpx

from tests.conftest import TEST_KEY


def _headers(key: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {TEST_KEY}"}
    if key:
        h["Idempotency-Key"] = key
    return h


def test_upload_stuck_assembling_by_a_dead_server_completes_after_restart(make_server, tmp_path, clip):
    data = clip.read_bytes()
    data_dir = tmp_path / "data"
    srv = make_server(data_dir)
    r = httpx.post(
        srv.url + "/v1/uploads",
        headers=_headers("a-create"),
        json={"file_name": "c.mp4", "file_size": len(data), "mime_type": "video/mp4"},
    )
    assert r.status_code == 201
    upload = r.json()
    size = upload["chunk_size"]
    for n in range(upload["total_chunks"]):
        part = data[n * size : (n + 1) * size]
        assert (
            httpx.put(
                f"{srv.url}/v1/uploads/{upload['id']}/parts/{n}", headers=_headers(), content=part
            ).status_code
            == 200
        )
    srv.stop()
    # what a server killed in the middle of complete leaves behind: status assembling, owned by a
    # process that no longer exists
    db = sqlite3.connect(data_dir / "sophon.db")
    db.execute(
        "UPDATE uploads SET status='assembling', assembling_owner=? WHERE id=?",
        (f"{socket.gethostname()}:999999999:dead", upload["id"]),
    )
    db.commit()
    db.close()

    srv = make_server(data_dir)
    got = httpx.get(f"{srv.url}/v1/uploads/{upload['id']}", headers=_headers()).json()
    assert got["status"] == "uploading"
    r = httpx.post(f"{srv.url}/v1/uploads/{upload['id']}/complete", headers=_headers("a-complete"))
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()


def test_upload_assembling_by_a_live_server_is_left_alone(make_server, tmp_path):
    srv = make_server(tmp_path / "data")
    r = httpx.post(
        srv.url + "/v1/uploads",
        headers=_headers("b-create"),
        json={"file_name": "c.mp4", "file_size": 10, "mime_type": "video/mp4"},
    )
    uid = r.json()["id"]
    store = srv.core.store
    store.conn().execute(
        "UPDATE uploads SET status='assembling', assembling_owner=? WHERE id=?", (srv.core.workers.owner, uid)
    )
    assert store.release_stale_assembling(lambda owner: owner != srv.core.workers.owner) == 0
    assert httpx.get(f"{srv.url}/v1/uploads/{uid}", headers=_headers()).json()["status"] == "assembling"
