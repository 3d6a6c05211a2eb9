"""One writer per part: a duplicate PUT of a part that is still being received waits for the first
one and is then drained, so a received part is never rewritten and the sha256 at complete is the
sha256 of the bytes on disk, whatever the timing of the duplicates."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from .helpers import Api, SlowPut, staged_bytes, wait_for

CS = 2 << 20
SENT = 3 << 19  # the first piece of a slow body; the test waits until SEEN bytes of it are on disk
SEEN = 1 << 20  # (the server writes parts in 1 MiB buffers)
# `video`: 5 MiB of random frames in Matroska (tests/server/conftest.py)


def test_a_duplicate_put_of_a_part_in_flight_never_rewrites_it(make_server, video):
    data = video
    srv = make_server(chunk_size=CS)
    api = Api(srv)
    try:
        up = api.create_upload("v.mkv", len(data))
        uid, total = up["id"], up["total_chunks"]
        first = data[:CS]
        other = bytes(b ^ 0xFF for b in first)  # a second PUT of part 0 with different bytes
        a = SlowPut(srv, uid, 0, CS)
        a.send(first[:SENT])
        wait_for(lambda: staged_bytes(srv, uid, 0, SEEN) == first[:SEEN], "the first piece on disk")
        b_status: list[int] = []
        b = threading.Thread(
            target=lambda: b_status.append(api.put(f"/v1/uploads/{uid}/parts/0", content=other).status_code)
        )
        b.start()
        # the duplicate is inside the server (waiting for the first writer) or already answered
        wait_for(lambda: srv.core.in_flight >= 2 or b_status, "the duplicate PUT to arrive")
        for n in range(1, total):
            r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * CS : (n + 1) * CS])
            assert r.status_code == 200, r.text
        a.send(first[SENT:])
        assert a.status() == 200
        b.join(30)
        assert b_status == [200]
        assert staged_bytes(srv, uid, 0, CS) == first  # the first writer's bytes, not rewritten
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        source = Path(srv.core.store.get_upload(uid)["path"]).read_bytes()
        assert r.json()["sha256"] == hashlib.sha256(source).hexdigest()  # the bytes on disk
        assert source == data  # the first writer's part, whole: the duplicate was drained
    finally:
        api.close()


def test_complete_waits_for_nothing_half_written(make_server, video):
    """While the only copy of a part is still arriving, complete reports it missing (and the part,
    once in, is the one hashed)."""
    data = video
    srv = make_server(chunk_size=CS)
    api = Api(srv)
    try:
        up = api.create_upload("v.mkv", len(data))
        uid, total = up["id"], up["total_chunks"]
        for n in range(1, total):
            r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * CS : (n + 1) * CS])
            assert r.status_code == 200, r.text
        a = SlowPut(srv, uid, 0, CS)
        a.send(data[:SENT])
        wait_for(lambda: staged_bytes(srv, uid, 0, SEEN) == data[:SEEN], "the first piece on disk")
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 400 and "missing" in r.json()["error"]["message"], r.text
        a.send(data[SENT:CS])
        assert a.status() == 200
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        api.close()


def test_a_full_disk_fails_the_part_with_capacity_exceeded(make_server, video, tmp_path):
    data = video
    srv = make_server(chunk_size=CS)
    api = Api(srv)
    try:
        up = api.create_upload("v.mkv", len(data))
        uid = up["id"]
        staging = Path(srv.core.store.get_upload(uid)["path"])
        staging.unlink()
        staging.symlink_to("/dev/full")  # every write: ENOSPC
        r = api.put(f"/v1/uploads/{uid}/parts/0", content=data[:CS])
        assert r.status_code == 503 and r.json()["error"]["code"] == "capacity_exceeded", r.text
        assert r.json()["error"]["retryable"] is True
        assert api.get(f"/v1/uploads/{uid}").json()["received_chunks"] == []
        staging.unlink()  # space again
        with open(staging, "wb") as fh:
            fh.truncate(len(data))
        for n in range(up["total_chunks"]):
            r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * CS : (n + 1) * CS])
            assert r.status_code == 200, r.text
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        api.close()
