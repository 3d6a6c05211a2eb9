"""The server hashes an upload from the bytes it receives: the part at the end of the hashed
prefix as it arrives, parts further on from the blocks they kept (or from disk past the memory
budget, or when recorded by an earlier process); complete reads only what is left, and reads the
whole file whenever the prefix cannot be trusted."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from sophon_cli.server import uploadhash
from sophon_cli.server.routes import uploads as uploads_module
from sophon_cli.server.uploadhash import RetainBudget, UploadDigest

from .helpers import Api, SlowPut, staged_bytes, wait_for
from .test_upload_part_writers import CS as CS_BIG
from .test_upload_part_writers import SEEN, SENT

DATA = bytes(range(256)) * 41  # 10496 bytes: parts of 1000 .. and a last one of 496
CS = 1000


@pytest.fixture
def disk_reads(monkeypatch):
    """Every range the digest reads back from disk, as (start, bytes read)."""
    calls: list[tuple[int, int]] = []
    real = uploadhash._hash_range

    def spy(path, h, start, end):
        real(path, h, start, end)
        calls.append((start, (end if end is not None else path.stat().st_size) - start))

    monkeypatch.setattr(uploadhash, "_hash_range", spy)
    return calls


@pytest.fixture
def full_reads(monkeypatch):
    calls = []
    real = uploads_module.sha256_file

    def spy(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(uploads_module, "sha256_file", spy)
    monkeypatch.setattr(uploadhash, "sha256_file", spy)
    return calls


def _staged(tmp_path, data=DATA):
    path = tmp_path / "upl.part"
    path.write_bytes(data)
    return path


async def _send(digest, feed, pieces, *, record=True):
    """What the part route does with ``pieces`` of part ``feed.n``: each goes through a real
    :class:`~sophon_cli.server.partsink.PartSink` (written at its offset, hashed on the sink's thread when the part is the
    head); then the part is recorded, or (``record=False``) the sink is stopped and the part fails."""
    fd = os.open(digest.path, os.O_WRONLY)
    sink = digest.worker.sink(fd, feed.start, digest.budget)
    try:
        for piece in pieces:
            await sink.reserve(len(piece))
            earlier = feed.feed(piece)
            sink.put(piece, feed.h, earlier)
        if record:
            await sink.close()
    finally:
        await sink.stop()
        os.close(fd)
    if record:
        feed.recorded()
    else:
        feed.failed()
    return feed


async def _write(digest, n, data=DATA, blocks=3):
    """A writer of part ``n`` that sends its bytes in ``blocks`` pieces and records the part."""
    body = data[n * CS : (n + 1) * CS]
    step = -(-len(body) // blocks)
    return await _send(digest, digest.part(n), [body[i : i + step] for i in range(0, len(body), step)])


def run(coro):
    return asyncio.run(coro)


def test_parts_in_any_order_are_hashed_from_what_was_received(tmp_path, disk_reads, full_reads):
    path = _staged(tmp_path)
    budget = RetainBudget()

    async def go():
        d = UploadDigest(path, CS, len(DATA), budget)
        for n in (2, 1, 4):
            await _write(d, n)
        assert d.upto == 0 and budget.held == 3 * CS  # kept: part 0 is missing
        await _write(d, 0)  # streamed, then parts 1 and 2 from what they kept
        assert d.upto == 3 * CS and budget.held == CS
        for n in (3, *range(5, 11)):
            await _write(d, n)
        assert d.upto == len(DATA) and budget.held == 0
        return await d.finish()

    assert run(go()) == hashlib.sha256(DATA).hexdigest()
    assert disk_reads == [(len(DATA), 0)] and full_reads == []  # nothing was read back


def test_a_part_failing_at_the_head_leaves_nothing_in_the_hash(tmp_path, disk_reads):
    path = _staged(tmp_path)

    async def go():
        d = UploadDigest(path, CS, len(DATA), RetainBudget())
        # hashed as it came (part 0 is the head), then the client went away: the next writer
        # writes the whole part again
        await _send(d, d.part(0), [b"x" * 400], record=False)
        for n in range(11):
            await _write(d, n)
        return await d.finish()

    assert run(go()) == hashlib.sha256(DATA).hexdigest()


def test_a_part_failing_ahead_of_the_prefix_gives_its_memory_back(tmp_path):
    path = _staged(tmp_path)
    budget = RetainBudget()

    async def go():
        d = UploadDigest(path, CS, len(DATA), budget)
        bad = d.part(3)
        bad.feed(b"y" * 500)  # kept: the prefix is not there
        assert budget.held == 500
        bad.failed()
        assert budget.held == 0
        for n in range(11):
            await _write(d, n)
        return await d.finish()

    assert run(go()) == hashlib.sha256(DATA).hexdigest()


def test_over_the_budget_a_part_is_read_back_from_disk(tmp_path, disk_reads):
    path = _staged(tmp_path)
    budget = RetainBudget(limit=2500, queue_limit=1000)  # parts keep at most 1500 bytes

    async def go():
        d = UploadDigest(path, CS, len(DATA), budget)
        await _write(d, 1)  # kept (1000 bytes)
        await _write(d, 2)  # over the budget: dropped, read from disk later
        assert budget.held == CS
        await _write(d, 0)
        while d._reading is not None:
            await asyncio.sleep(0.001)
        assert d.upto == 3 * CS
        for n in range(3, 11):
            await _write(d, n)
        return await d.finish()

    assert run(go()) == hashlib.sha256(DATA).hexdigest()
    assert (2 * CS, CS) in disk_reads and budget.held == 0


def test_parts_recorded_before_this_process_are_read_from_disk(tmp_path, disk_reads):
    path = _staged(tmp_path)

    async def go():
        d = UploadDigest(path, CS, len(DATA), RetainBudget(), on_disk={0: CS, 1: CS, 3: CS})
        await _write(d, 2)  # parts 0 and 1 are read back, then part 2 comes from memory
        while d._reading is not None:
            await asyncio.sleep(0.001)
        assert d.upto == 4 * CS
        for n in range(4, 11):
            await _write(d, n)
        return await d.finish()

    assert run(go()) == hashlib.sha256(DATA).hexdigest()
    assert disk_reads[:2] == [(0, 2 * CS), (3 * CS, CS)]


def test_a_write_into_the_hashed_prefix_falls_back_to_a_full_read(tmp_path, full_reads):
    path = _staged(tmp_path)
    changed = b"Z" * CS + DATA[CS:]

    async def go():
        d = UploadDigest(path, CS, len(DATA), RetainBudget())
        await _write(d, 0)
        path.write_bytes(changed)  # a writer that got past the part writer lock, somehow
        d.part(0)
        assert not d.valid
        return await d.finish()

    assert run(go()) == hashlib.sha256(changed).hexdigest()
    assert full_reads == [path]


# -- through the server ------------------------------------------------------------------------


def _put_parts(api, uid, data, cs, order):
    for n in order:
        r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n * cs : (n + 1) * cs])
        assert r.status_code == 200, r.text


def test_complete_uses_the_prefix_and_reports_the_file_digest(make_server, clip, full_reads, disk_reads):
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
        assert full_reads == [] and disk_reads == [(len(data), 0)]  # nothing read back
    finally:
        api.close()


def test_parts_from_before_a_restart_are_read_back_once(make_server, clip, tmp_path, full_reads, disk_reads):
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
        assert full_reads == []
        assert sum(n for _, n in disk_reads) == 2 * 4096  # parts 0 and 2, once each
    finally:
        api.close()


def test_a_client_gone_mid_part_then_other_bytes_for_that_part(make_server, video):
    """The part at the head of the prefix is hashed as it arrives; when its client goes away
    mid-body, the hash goes back to the part's start, and the bytes of the next PUT count."""
    data = video
    srv = make_server(chunk_size=CS_BIG)
    api = Api(srv)
    try:
        up = api.create_upload("v.mkv", len(data))
        uid = up["id"]
        gone = SlowPut(srv, uid, 0, CS_BIG)
        junk = bytes(b ^ 0x5A for b in data[:SENT])
        gone.send(junk)
        wait_for(lambda: staged_bytes(srv, uid, 0, SEEN) == junk[:SEEN], "the junk on disk")
        gone.sock.close()
        wait_for(lambda: srv.core.in_flight == 0, "the server to see the client gone")
        assert api.get(f"/v1/uploads/{uid}").json()["received_chunks"] == []
        _put_parts(api, uid, data, CS_BIG, range(up["total_chunks"]))
        r = api.post(f"/v1/uploads/{uid}/complete", headers=api.ikey())
        assert r.status_code == 200, r.text
        assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        api.close()
