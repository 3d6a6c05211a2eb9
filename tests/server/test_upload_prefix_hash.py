"""The server hashes an upload's contiguous prefix as parts land; complete reads only the rest and
falls back to a full read whenever the prefix cannot be trusted (restart, duplicate write)."""

from __future__ import annotations

import hashlib

import pytest

from sophon_cli.server import uploadhash
from sophon_cli.server.routes import uploads as uploads_module
from sophon_cli.server.uploadhash import PrefixHash

from .helpers import Api

DATA = bytes(range(256)) * 41  # 10496 bytes: parts of 1000 .. and a last one of 496


def _staged(tmp_path, data=DATA):
    path = tmp_path / "upl.part"
    path.write_bytes(data)
    return path


def test_prefix_follows_contiguous_parts_and_finish_matches_a_full_hash(tmp_path):
    path = _staged(tmp_path)
    h = PrefixHash(path, 1000, len(DATA))
    for n in (1, 2):
        h.add(n, 1000)
    h.advance()
    assert h.upto == 0  # part 0 is missing
    h.add(0, 1000)
    h.advance()
    assert h.upto == 3000
    h.add(4, 1000)
    h.advance()
    assert h.upto == 3000  # part 3 is missing
    assert h.finish() == hashlib.sha256(DATA).hexdigest()
    h.add(3, 1000)
    h.advance()
    assert h.upto == 3000  # closed: no more work after finish


def test_whole_file_in_the_prefix(tmp_path):
    path = _staged(tmp_path)
    h = PrefixHash(path, 1000, len(DATA))
    for n in range(10):
        h.add(n, 1000)
    h.add(10, 496)
    h.advance()
    assert h.upto == len(DATA)
    assert h.finish() == hashlib.sha256(DATA).hexdigest()


def test_a_short_part_stops_the_prefix(tmp_path):
    path = _staged(tmp_path)
    h = PrefixHash(path, 1000, len(DATA))
    h.add(0, 999)
    h.advance()
    assert h.upto == 0
    assert h.finish() == hashlib.sha256(DATA).hexdigest()


def test_a_write_into_the_hashed_prefix_falls_back_to_a_full_read(tmp_path, monkeypatch):
    path = _staged(tmp_path)
    h = PrefixHash(path, 1000, len(DATA))
    h.add(0, 1000)
    h.add(1, 1000)
    h.advance()
    assert h.upto == 2000
    changed = b"Z" * 1000 + DATA[1000:]
    path.write_bytes(changed)  # a duplicate PUT of part 0 with other bytes
    h.wrote_at(0)
    assert not h.valid
    calls = []
    monkeypatch.setattr(
        uploadhash, "sha256_file", lambda p: calls.append(p) or hashlib.sha256(p.read_bytes()).hexdigest()
    )
    assert h.finish() == hashlib.sha256(changed).hexdigest()
    assert calls == [path]


def test_a_write_above_the_prefix_keeps_it(tmp_path):
    path = _staged(tmp_path)
    h = PrefixHash(path, 1000, len(DATA))
    h.add(0, 1000)
    h.advance()
    h.wrote_at(1000)
    assert h.valid
    assert h.finish() == hashlib.sha256(DATA).hexdigest()


# -- through the server ------------------------------------------------------------------------


def _put_parts(api, uid, data, cs, order):
    for n in order:
        r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * cs : (n + 1) * cs])
        assert r.status_code == 200, r.text


@pytest.fixture
def count_full_reads(monkeypatch):
    calls = []
    real = uploads_module.sha256_file

    def spy(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(uploads_module, "sha256_file", spy)
    monkeypatch.setattr(uploadhash, "sha256_file", spy)
    return calls


def test_complete_uses_the_prefix_and_reports_the_file_digest(make_server, clip, count_full_reads):
    data = clip.read_bytes()
    srv = make_server(chunk_size=4096)
    api = Api(srv)
    try:
        up = api.create_upload("clip.mp4", len(data))
        total = up["total_chunks"]
        assert total >= 4
        order = [1, 0, *range(total - 1, 1, -1)]  # out of order
        _put_parts(api, up["id"], data, 4096, order)
        _put_parts(api, up["id"], data, 4096, [0, 2])  # re-PUTs are no-ops
        r = api.post(f"/v1/uploads/{up['id']}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
        assert count_full_reads == []  # no second pass over the whole file
    finally:
        api.close()


def test_parts_from_before_a_restart_are_read_at_complete(make_server, clip, tmp_path):
    data = clip.read_bytes()
    d = tmp_path / "restart-data"
    first = make_server(d, chunk_size=4096)
    api = Api(first)
    up = api.create_upload("clip.mp4", len(data))
    total = up["total_chunks"]
    _put_parts(api, up["id"], data, 4096, [0, 2])
    api.close()
    first.stop()
    second = make_server(d, chunk_size=4096, api_keys=first.api_keys)
    api = Api(second)
    try:
        _put_parts(api, up["id"], data, 4096, [1, *range(3, total)])
        r = api.post(f"/v1/uploads/{up['id']}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        api.close()
