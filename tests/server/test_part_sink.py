"""The upload's writer thread (server/partsink.py): blocks a part queued there are written in
order, a part that fails or is stopped while its blocks wait leaves none of them on disk or in the
hash, a write error is the part's (503 ``capacity_exceeded`` on a full disk), and the memory the
queues hold is bounded (server/uploadhash.RetainBudget)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

import pytest

from sophon_cli.server.errors import ApiError
from sophon_cli.server.partsink import HANDOFF, UploadWorker
from sophon_cli.server.uploadhash import RetainBudget, UploadDigest

MIB = 1 << 20


class Gate:
    """A call that holds the upload's thread until the test opens it (so blocks queue behind it)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self.open.wait(30)


async def _held(worker: UploadWorker) -> tuple[Gate, asyncio.Future]:
    gate = Gate()
    call = asyncio.ensure_future(worker.call(gate))
    while not gate.entered.is_set():
        await asyncio.sleep(0.001)
    return gate, call


def run(coro):
    return asyncio.run(coro)


def test_blocks_are_written_at_their_offset_in_order_and_hashed(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(4 * MIB))
    blocks = [os.urandom(300_000) for _ in range(10)]  # batches across the hand-off size
    budget = RetainBudget()
    h = hashlib.sha256()

    async def go():
        worker = UploadWorker()
        fd = os.open(path, os.O_WRONLY)
        try:
            sink = worker.sink(fd, MIB, budget)
            for b in blocks:
                await sink.reserve(len(b))
                sink.put(b, h)
            await sink.close()
        finally:
            os.close(fd)

    run(go())
    body = b"".join(blocks)
    assert path.read_bytes()[MIB : MIB + len(body)] == body
    assert h.hexdigest() == hashlib.sha256(body).hexdigest()
    assert budget.queued == 0 and budget.held == 0


def test_a_canceled_writer_still_waits_for_the_thread_to_be_done_with_its_part(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(2 * MIB))
    budget = RetainBudget()

    async def go():
        worker = UploadWorker()
        fd = os.open(path, os.O_WRONLY)
        try:
            gate, call = await _held(worker)
            sink = worker.sink(fd, 0, budget)
            await sink.reserve(HANDOFF)
            sink.put(b"a" * HANDOFF, None)
            closing = asyncio.ensure_future(sink.close())
            await asyncio.sleep(0.01)
            threading.Timer(0.2, gate.open.set).start()  # the thread goes on a little later
            closing.cancel()  # e.g. the server shutting down
            with pytest.raises(asyncio.CancelledError):
                await closing
            assert sink._finished.is_set()  # the cancel waited: no write can land after it
            await call
        finally:
            os.close(fd)

    run(go())
    assert budget.queued == 0


def test_a_part_stopped_while_its_blocks_wait_for_the_thread_drops_them(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(4 * MIB))
    budget = RetainBudget()
    h = hashlib.sha256()

    async def go():
        worker = UploadWorker()
        fd = os.open(path, os.O_WRONLY)
        try:
            gate, call = await _held(worker)  # the thread is busy: what follows waits in its queue
            sink = worker.sink(fd, 0, budget)
            for fill in (b"a", b"b", b"c"):
                await sink.reserve(HANDOFF)
                sink.put(fill * HANDOFF, h)  # a full batch each: handed to the thread's queue
            await sink.reserve(1000)
            sink.put(b"d" * 1000, h)  # still in the sink's own batch
            assert budget.queued == 3 * HANDOFF + 1000
            stopping = asyncio.ensure_future(sink.stop())  # the client went away
            await asyncio.sleep(0.01)
            assert not stopping.done()  # waits for the thread to be done with the part
            gate.open.set()
            await call
            await stopping
        finally:
            os.close(fd)

    run(go())
    assert path.read_bytes() == bytes(4 * MIB)  # nothing written
    assert h.hexdigest() == hashlib.sha256().hexdigest()  # nothing hashed
    assert budget.queued == 0 and budget.held == 0


def test_a_write_error_fails_the_part_and_what_follows_is_dropped():
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full for a real ENOSPC")
    budget = RetainBudget()
    h = hashlib.sha256()

    async def go():
        worker = UploadWorker()
        fd = os.open("/dev/full", os.O_WRONLY)
        try:
            sink = worker.sink(fd, 0, budget)
            with pytest.raises(ApiError) as err:
                for _ in range(8):
                    await sink.reserve(HANDOFF)
                    sink.put(b"x" * HANDOFF, h)
                await sink.close()
            await sink.stop()  # as the route does: the thread is done with the part
            return err.value
        finally:
            os.close(fd)

    err = run(go())
    assert err.status == 503 and err.code.value == "capacity_exceeded"
    assert h.hexdigest() == hashlib.sha256().hexdigest()  # a block not written is not hashed
    assert budget.queued == 0


def test_the_head_part_failing_with_blocks_queued_leaves_nothing_in_the_digest(tmp_path):
    data = os.urandom(3 * MIB + 12345)
    path = tmp_path / "upl.part"
    path.write_bytes(bytes(len(data)))
    budget = RetainBudget()

    async def write(d, n, body, *, fail=False):
        fd = os.open(path, os.O_WRONLY)
        feed = d.part(n)
        try:
            sink = d.worker.sink(fd, n * MIB, budget)
            gate = call = None
            if fail:
                gate, call = await _held(d.worker)
            for i in range(0, len(body), 256 * 1024):
                piece = body[i : i + 256 * 1024]
                await sink.reserve(len(piece))
                earlier = feed.feed(piece)
                sink.put(piece, feed.h, earlier)
            if fail:  # the client goes away while the part's blocks wait behind the gate
                stopping = asyncio.ensure_future(sink.stop())
                await asyncio.sleep(0)
                gate.open.set()
                await call
                await stopping
                feed.failed()
                return
            await sink.close()
            feed.recorded()
        finally:
            os.close(fd)

    async def go():
        d = UploadDigest(path, MIB, len(data), budget)
        await write(d, 0, os.urandom(MIB), fail=True)  # the head: its hash checkpoint is put back
        assert path.read_bytes()[:MIB] == bytes(MIB)  # and none of it was written
        for n in (2, 0, 1, 3):
            await write(d, n, data[n * MIB : (n + 1) * MIB])
        return await d.finish()

    assert run(go()) == hashlib.sha256(data).hexdigest()
    assert budget.held == 0


def test_the_queues_wait_when_full_and_go_on_when_the_thread_catches_up():
    async def go():
        budget = RetainBudget(limit=4000, queue_limit=1000)
        await budget.queue(5000)  # more than the limit, but nothing is queued: goes through
        budget.done(5000)
        await budget.queue(600)
        waiting = asyncio.ensure_future(budget.queue(600))
        await asyncio.sleep(0.01)
        assert not waiting.done() and budget.queued == 600
        threading.Thread(target=budget.done, args=(600,)).start()  # the writer thread
        await asyncio.wait_for(waiting, 30)
        assert budget.queued == 600
        assert budget.take(3000) and not budget.take(1)  # parts keep at most limit - queue_limit
        budget.give(3000)
        budget.done(600)
        assert budget.held == 0

    run(go())


def test_writers_waiting_for_room_never_wait_on_bytes_still_in_a_batch(tmp_path):
    """Blocks are handed to the thread in batches; bytes a writer has not handed over yet (its
    client paused, say) must not hold the others: a writer that has to wait first makes every
    writer hand its batch over, so the room it waits for does come back."""
    path = tmp_path / "f"
    path.write_bytes(bytes(4 * MIB))
    budget = RetainBudget(limit=8 * MIB, queue_limit=2 * MIB)
    piece = 600_000  # under the hand-off size: stays in the writer's batch

    async def go():
        worker = UploadWorker()
        fd = os.open(path, os.O_WRONLY)
        try:
            sinks = [worker.sink(fd, i * MIB, budget) for i in range(4)]
            for i, sink in enumerate(sinks):  # the fourth has to wait for room
                await asyncio.wait_for(sink.reserve(piece), 30)
                sink.put(bytes([65 + i]) * piece, None)
            for sink in sinks:
                await sink.close()
        finally:
            os.close(fd)

    run(go())
    data = path.read_bytes()
    assert [data[i * MIB : i * MIB + piece] for i in range(4)] == [bytes([65 + i]) * piece for i in range(4)]
    assert budget.queued == 0 and not budget.batching


def test_an_upload_left_open_holds_no_thread(make_server):
    """The upload's thread ends when no part is being written: sessions left open (never
    completed, never canceled) do not each keep a thread."""
    from .helpers import Api, wait_for

    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "sophon-upload-writer" and t.is_alive()]

    srv = make_server(chunk_size=64 << 10)
    api = Api(srv)
    try:
        data = os.urandom(3 * (64 << 10))
        for _ in range(3):
            uid = api.create_upload("v.bin", len(data))["id"]
            for n in (1, 0):  # part 0 hashes what part 1 kept: a call on the thread too
                r = api.put(f"/v1/uploads/{uid}/parts/{n}", content=data[n << 16 : (n + 1) << 16])
                assert r.status_code == 200, r.text
        wait_for(lambda: not writers(), "the upload threads to end")
    finally:
        api.close()


@pytest.mark.timeout(120)
def test_a_server_stopped_with_a_part_in_flight_stops_and_the_part_can_be_sent_again(make_server, tmp_path):
    from .helpers import Api, SlowPut, wait_for

    errors: list[threading.ExceptHookArgs] = []
    hook, threading.excepthook = threading.excepthook, errors.append
    try:
        d = tmp_path / "data"
        srv = make_server(d, chunk_size=4 * MIB)
        api = Api(srv)
        data = os.urandom(4 * MIB)
        uid = api.create_upload("v.bin", len(data))["id"]
        api.close()
        slow = SlowPut(srv, uid, 0, len(data))
        slow.send(data[: 3 * MIB])  # three batches on the upload's thread, the rest never comes
        wait_for(lambda: srv.core.in_flight >= 1, "the part to arrive")
        srv.stop()  # uvicorn cancels the request: the writer waits for the thread, then lets go
        slow.sock.close()
        again = make_server(d, chunk_size=4 * MIB, api_keys=srv.api_keys)
        api = Api(again)
        try:
            assert api.get(f"/v1/uploads/{uid}").json()["received_chunks"] == []
            r = api.put(f"/v1/uploads/{uid}/parts/0", content=data)
            assert r.status_code == 200, r.text
            staged = again.core.store.get_upload(uid)["path"]
            with open(staged, "rb") as fh:
                assert fh.read() == data
        finally:
            api.close()
    finally:
        threading.excepthook = hook
    assert errors == []  # no thread died on a closed loop
