"""Uploads against the real local server: multi-part parallel upload, replay, resume, --new, faults."""

from __future__ import annotations

import hashlib
import math
import threading

import httpx
import pytest

from sophon_cli.client.errors import InputError, IntegrityError, NotFoundError
from sophon_cli.client.idempotency import intent_key, route_key

from .conftest import RequestLog

CHUNK = 32 * 1024


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _part_numbers(log: RequestLog) -> list[int]:
    return sorted(int(e["path"].rsplit("/", 1)[1]) for e in log.entries("PUT") if e["status"] == 200)


@pytest.fixture
def ulog(chunked_server):
    log = RequestLog(chunked_server.request_log)
    log.mark()
    return log


def test_multipart_parallel_upload(chunked_server, make_client, medium_clip, ulog):
    size = medium_clip.stat().st_size
    parts = math.ceil(size / CHUNK)
    assert parts >= 3, "the clip should span several parts"
    client = make_client(chunked_server)
    progress, created = [], []
    result = client.uploads.upload_file(
        medium_clip,
        concurrency=3,
        new=True,
        on_progress=lambda s, t: progress.append((s, t)),
        on_created=created.append,
    )
    assert created == [result.upload_id]
    assert result.sha256 == _sha(medium_clip) and result.bytes == size
    assert result.parts_total == parts and result.parts_sent == parts and not result.resumed
    assert progress[0] == (0, size) and progress[-1] == (size, size)
    assert [s for s, _ in progress] == sorted(s for s, _ in progress)
    assert _part_numbers(ulog) == list(range(parts))  # every part exactly once
    status = client.uploads.get(result.upload_id)
    assert status.status == "completed"


def test_rerun_replays_the_same_session_and_sends_nothing(chunked_server, make_client, medium_clip, ulog):
    client = make_client(chunked_server)
    first = client.uploads.upload_file(medium_clip)
    ulog.mark()
    again = make_client(chunked_server).uploads.upload_file(medium_clip)  # "another machine": no shared state
    assert again.upload_id == first.upload_id
    assert again.parts_sent == 0 and again.resumed
    assert again.sha256 == first.sha256
    assert _part_numbers(ulog) == []
    assert len(ulog.entries("POST", "POST /v1/uploads")) == 1


def test_resume_sends_only_the_missing_parts(chunked_server, make_client, medium_clip, ulog, tmp_path):
    # a copy with a distinct name: a fresh intent nobody uploaded yet
    src = tmp_path / "resume-me.mp4"
    src.write_bytes(medium_clip.read_bytes())
    size = src.stat().st_size
    parts = math.ceil(size / CHUNK)
    client = make_client(chunked_server)
    # an earlier run (same deterministic key) created the session and sent parts 0 and 2
    base = intent_key("upload", sha256=_sha(src), size=size, name=src.name, mime="video/mp4")
    session = client.uploads.create(
        src.name, size, "video/mp4", idempotency_key=route_key(base, "create-upload")
    )
    data = src.read_bytes()
    client.uploads.put_part(session.id, 0, data[:CHUNK])
    client.uploads.put_part(session.id, 2, data[2 * CHUNK : 3 * CHUNK])
    ulog.mark()

    progress = []
    result = client.uploads.upload_file(src, on_progress=lambda s, t: progress.append(s))
    assert result.upload_id == session.id and result.resumed
    assert result.parts_sent == parts - 2
    assert _part_numbers(ulog) == [n for n in range(parts) if n not in (0, 2)]
    assert progress[0] == 2 * CHUNK  # the parts already on the server count from the start
    assert result.sha256 == _sha(src)


def test_interrupted_upload_resumes_where_it_stopped(
    chunked_server, make_client, medium_clip, ulog, tmp_path
):
    src = tmp_path / "interrupted.mp4"
    src.write_bytes(medium_clip.read_bytes())
    parts = math.ceil(src.stat().st_size / CHUNK)
    client = make_client(chunked_server)
    ids = []

    class Boom(Exception):
        pass

    def explode(sent, total):
        if sent > 0:
            raise Boom()

    with pytest.raises(Boom):
        client.uploads.upload_file(src, concurrency=1, on_progress=explode, on_created=ids.append)
    have = set(client.uploads.get(ids[0]).received_chunks)
    assert 1 <= len(have) < parts
    ulog.mark()
    result = client.uploads.upload_file(src, concurrency=2)
    assert result.upload_id == ids[0] and result.resumed
    assert set(_part_numbers(ulog)) == set(range(parts)) - have
    assert result.parts_sent == parts - len(have)


def test_new_forces_a_fresh_session(chunked_server, make_client, clip):
    client = make_client(chunked_server)
    a = client.uploads.upload_file(clip)
    b = client.uploads.upload_file(clip, new=True)
    assert a.upload_id != b.upload_id and a.sha256 == b.sha256


def test_canceled_session_is_replaced_by_a_fresh_one(chunked_server, make_client, tmp_path, clip):
    src = tmp_path / "cancel-me.mp4"
    src.write_bytes(clip.read_bytes())
    client = make_client(chunked_server)
    ids = []
    with pytest.raises(KeyboardInterrupt):
        client.uploads.upload_file(
            src, on_progress=lambda s, t: (_ for _ in ()).throw(KeyboardInterrupt()), on_created=ids.append
        )
    client.uploads.cancel(ids[0])
    assert client.uploads.get(ids[0]).status == "canceled"
    result = client.uploads.upload_file(src)
    assert result.upload_id != ids[0] and result.sha256 == _sha(src)


def test_local_problems_fail_before_any_request(chunked_server, make_client, tmp_path, ulog):
    client = make_client(chunked_server)
    with pytest.raises(InputError, match="no such file"):
        client.uploads.upload_file(tmp_path / "missing.mp4")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(InputError, match="empty"):
        client.uploads.upload_file(empty)
    with pytest.raises(InputError, match="directory"):
        client.uploads.upload_file(tmp_path)
    assert ulog.entries() == []


def test_cancel_unknown_upload_is_not_found(chunked_server, make_client):
    with pytest.raises(NotFoundError) as info:
        make_client(chunked_server).uploads.cancel("upl_doesnotexist")
    assert info.value.request_id and "upload" in info.value.hint


def test_upload_survives_dropped_connections_and_503s(make_server, make_client, medium_clip):
    srv = make_server(
        chunk_size=CHUNK,
        faults="PUT /v1/uploads/*/parts/*=reset:0.3,POST /v1/uploads*=503:0.3",
        faults_seed=3,
    )
    log = RequestLog(srv.request_log)
    sleeps = []
    client = make_client(srv, sleep=sleeps.append, max_retries=8)
    result = client.uploads.upload_file(medium_clip, concurrency=2)
    assert result.sha256 == _sha(medium_clip)
    assert client.uploads.get(result.upload_id).status == "completed"
    statuses = [e["status"] for e in log.entries()]
    assert 503 in statuses or any(e["status"] != 200 for e in log.entries("PUT"))  # faults did happen
    assert sleeps  # and the client backed off


def test_checksum_mismatch_is_integrity_error_and_nothing_is_reused(
    chunked_server, make_client, clip, tmp_path
):
    src = tmp_path / "mismatch.mp4"
    src.write_bytes(clip.read_bytes())
    client = make_client(chunked_server)
    ids = []
    with pytest.raises(IntegrityError) as info:
        client.uploads.upload_file(src, sha256="0" * 64, on_created=ids.append)
    assert "sha256" in str(info.value) and info.value.hint
    assert client.uploads.get(ids[0]).status == "canceled"  # the session can't be picked up later
    assert client.uploads.upload_file(src).upload_id != ids[0]


class CountingTransport(httpx.HTTPTransport):
    """A real transport that records how many part PUTs are in flight at once, and from which threads."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.threads = set()

    def handle_request(self, request):
        if request.method != "PUT":
            return super().handle_request(request)
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.threads.add(threading.get_ident())
        try:
            response = super().handle_request(request)
            response.read()
            return response
        finally:
            with self.lock:
                self.in_flight -= 1


def test_parallelism_is_bounded_by_concurrency(chunked_server, make_client, medium_clip):
    transport = CountingTransport()
    client = make_client(chunked_server, transport=transport)
    result = client.uploads.upload_file(medium_clip, concurrency=2, new=True)
    assert result.parts_sent == result.parts_total >= 3
    assert 1 <= transport.max_in_flight <= 2
    assert len(transport.threads) == 2


def test_two_uploaders_of_the_same_file_share_one_session(chunked_server, make_client, medium_clip, tmp_path):
    src = tmp_path / "twins.mp4"
    src.write_bytes(medium_clip.read_bytes())
    results, errors = [], []

    def run():
        try:
            results.append(make_client(chunked_server).uploads.upload_file(src, concurrency=2))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len({r.upload_id for r in results}) == 1 and len(results) == 2
    assert {r.sha256 for r in results} == {_sha(src)}
