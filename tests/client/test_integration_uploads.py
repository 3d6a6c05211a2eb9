"""Uploads against the real local server: multi-part parallel upload, replay, resume, --new, faults."""

from __future__ import annotations

import hashlib
import http.server
import json
import math
import os
import subprocess
import sys
import threading

import httpx
import pytest

from sophon_cli.client.content import identify
from sophon_cli.client.errors import InputError, IntegrityError, NotFoundError
from sophon_cli.client.idempotency import route_key

from .conftest import RequestLog

CHUNK = 32 * 1024


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def distinct(src, dst, tag: str):
    """A copy of the mp4 ``src`` with unique bytes: an appended 'free' box keeps it a valid video.
    (Uploads are keyed on content, so a copy under another name is the *same* upload.)"""
    payload = f"sophon-upload-test-{tag}".encode()
    dst.write_bytes(src.read_bytes() + (8 + len(payload)).to_bytes(4, "big") + b"free" + payload)
    return dst


def _sessions(srv) -> list[tuple[str, str]]:
    """``(id, status)`` of every upload session the server holds (read from its store)."""
    import sqlite3

    con = sqlite3.connect(f"file:{srv.data_dir}/sophon.db?mode=ro", uri=True, timeout=10)
    try:
        return list(con.execute("SELECT id, status FROM uploads ORDER BY created_at"))
    finally:
        con.close()


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


def test_a_fresh_session_is_not_asked_for_its_parts(chunked_server, make_client, medium_clip, ulog):
    """``new=True`` keys carry this run's nonce, so the create made the session just now: no
    ``GET /v1/uploads/{id}`` (it could only show zero parts) stands between it and the first part."""
    client = make_client(chunked_server)
    result = client.uploads.upload_file(medium_clip, new=True)
    routes = [e["route"] for e in ulog.entries()]
    assert routes[0] == "POST /v1/uploads" and routes[-1] == "POST /v1/uploads/{id}/complete"
    assert "GET /v1/uploads/{id}" not in routes, routes
    assert result.parts_sent == result.parts_total and result.sha256 == _sha(medium_clip)


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
    # distinct content: a fresh intent nobody uploaded yet
    src = distinct(medium_clip, tmp_path / "resume-me.mp4", "resume")
    size = src.stat().st_size
    parts = math.ceil(size / CHUNK)
    client = make_client(chunked_server)
    # an earlier run (same deterministic key) created the session and sent parts 0 and 2
    ident = identify(src)
    session = client.uploads.create(
        ident.name, size, ident.mime, idempotency_key=route_key(ident.fingerprint_key(), "create-upload")
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
    src = distinct(medium_clip, tmp_path / "interrupted.mp4", "interrupted")
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


def test_canceled_session_is_replaced_by_one_session_for_every_run(make_server, make_client, tmp_path, clip):
    """Issue 11 item 12: three runs (fresh clients: a lost cache, other machines) after the session
    was canceled make one replacement, not three."""
    srv = make_server(chunk_size=CHUNK)
    src = distinct(clip, tmp_path / "cancel-me.mp4", "cancel")
    client = make_client(srv)
    ids = []
    with pytest.raises(KeyboardInterrupt):
        client.uploads.upload_file(
            src, on_progress=lambda s, t: (_ for _ in ()).throw(KeyboardInterrupt()), on_created=ids.append
        )
    client.uploads.cancel(ids[0])
    assert client.uploads.get(ids[0]).status == "canceled"
    results = [make_client(srv).uploads.upload_file(src) for _ in range(3)]
    assert {r.upload_id for r in results} == {results[0].upload_id} != {ids[0]}
    assert all(r.sha256 == _sha(src) for r in results)
    assert [status for _, status in _sessions(srv)] == ["canceled", "completed"]
    # and when the replacement is canceled too, the next one is again shared by every run
    client.uploads.cancel(results[0].upload_id)
    again = {make_client(srv).uploads.upload_file(src).upload_id for _ in range(2)}
    assert len(again) == 1 and again.isdisjoint({ids[0], results[0].upload_id})
    assert len(_sessions(srv)) == 3


def test_completed_session_past_its_expiry_is_replaced_by_one_session_for_every_run(
    make_server, make_client, tmp_path, clip
):
    """Issue 11 item 12: a completed session past ``expires_at`` still replays as "completed", but
    no job can be made from it; every later run (fresh clients) moves to the same next generation."""
    from tests.helpers.store import expire_uploads

    srv = make_server(chunk_size=CHUNK)
    src = distinct(clip, tmp_path / "expire-me.mp4", "expire")
    first = make_client(srv).uploads.upload_file(src)
    assert expire_uploads(srv) == 1
    assert make_client(srv).uploads.get(first.upload_id).status == "completed"  # as the server says
    results = [make_client(srv).uploads.upload_file(src) for _ in range(2)]
    assert {r.upload_id for r in results} == {results[0].upload_id} != {first.upload_id}
    assert all(r.sha256 == _sha(src) for r in results)
    assert len(_sessions(srv)) == 2
    # a session the caller names as refused is skipped the same way (no clock involved)
    again = make_client(srv).uploads.upload_file(src, unusable=[results[0].upload_id])
    assert again.upload_id not in {first.upload_id, results[0].upload_id} and len(_sessions(srv)) == 3


def test_identical_content_under_two_names_shares_one_upload(make_server, make_client, tmp_path, clip):
    """Issue 11 item 13: the file name is not part of the upload's identity."""
    srv = make_server(chunk_size=CHUNK)
    a = distinct(clip, tmp_path / "holiday.mp4", "twins-by-name")
    b = tmp_path / "sub" / "copy of holiday.MOV"
    b.parent.mkdir()
    b.write_bytes(a.read_bytes())
    first = make_client(srv).uploads.upload_file(a)
    second = make_client(srv).uploads.upload_file(b)
    assert second.upload_id == first.upload_id and second.parts_sent == 0 and second.resumed
    assert second.sha256 == first.sha256 == _sha(a)
    assert len(_sessions(srv)) == 1
    # the name the server keeps comes from the content, the same for both
    assert make_client(srv).uploads.get(first.upload_id).file_name.endswith(".mp4")


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
    assert info.value.request_id and info.value.path == "/v1/uploads/upl_doesnotexist"
    from sophon_cli.cli.hints import hint_for  # the words a terminal user sees

    assert "upload" in hint_for(info.value)


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


def test_a_wrong_known_sha256_costs_a_read_not_a_wrong_upload(chunked_server, make_client, clip, tmp_path):
    src = distinct(clip, tmp_path / "stale-digest.mp4", "stale-digest")
    client = make_client(chunked_server)
    result = client.uploads.upload_file(src, sha256="0" * 64)  # e.g. a stale cache entry
    assert result.sha256 == _sha(src)  # the digest of what was read, checked against the server's
    assert client.uploads.get(result.upload_id).status == "completed"
    assert make_client(chunked_server).uploads.upload_file(src).upload_id == result.upload_id


def _poison(client, ident, key_base, data, part=0):
    """What a broken or hostile uploader with the same key would leave: a session whose part
    ``part`` holds other bytes of the right length."""
    session = client.uploads.create(
        ident.name, ident.size, ident.mime, idempotency_key=route_key(key_base, "create-upload")
    )
    offset = part * session.chunk_size
    bad = bytes(b ^ 0xFF for b in data[offset : offset + session.chunk_size])
    client.uploads.put_part(session.id, part, bad)
    return session.id


def test_session_with_other_bytes_is_left_alone_and_the_upload_moves_to_the_sha256_key(
    make_server, make_client, medium_clip, tmp_path
):
    srv = make_server(chunk_size=CHUNK)
    src = distinct(medium_clip, tmp_path / "victim.mp4", "poison-fp")
    data, ident = src.read_bytes(), identify(src)
    client = make_client(srv)
    poisoned = _poison(client, ident, ident.fingerprint_key(), data, part=1)
    result = make_client(srv).uploads.upload_file(src)
    assert result.sha256 == _sha(src) and result.upload_id != poisoned
    sessions = dict(_sessions(srv))
    assert sessions[result.upload_id] == "completed"
    assert sessions[poisoned] != "canceled"  # maybe someone else's: never canceled
    # a lost cache or another machine lands on the same session, and makes no new one
    assert make_client(srv).uploads.upload_file(src).upload_id == result.upload_id
    assert len(_sessions(srv)) == 2


def test_a_foreign_session_that_is_not_a_video_does_not_condemn_this_file(
    make_server, make_client, medium_clip, tmp_path
):
    srv = make_server(chunk_size=CHUNK)
    src = distinct(medium_clip, tmp_path / "fine.mp4", "poison-header")
    data, ident = src.read_bytes(), identify(src)
    _poison(make_client(srv), ident, ident.fingerprint_key(), data, part=0)  # its header is garbage
    result = make_client(srv).uploads.upload_file(src)
    assert result.sha256 == _sha(src)
    assert make_client(srv).uploads.get(result.upload_id).status == "completed"


def test_corruption_under_the_sha256_key_is_an_integrity_error_then_the_next_generation(
    make_server, make_client, medium_clip, tmp_path
):
    srv = make_server(chunk_size=CHUNK)
    src = distinct(medium_clip, tmp_path / "corrupt.mp4", "poison-both")
    data, ident = src.read_bytes(), identify(src)
    client = make_client(srv)
    _poison(client, ident, ident.fingerprint_key(), data, part=1)
    bad = _poison(client, ident, ident.sha256_key(_sha(src)), data, part=2)
    with pytest.raises(IntegrityError) as info:
        make_client(srv).uploads.upload_file(src)
    assert "sha256" in str(info.value) and info.value.hint
    assert "--" not in info.value.hint  # the library never words hints as CLI flags
    assert dict(_sessions(srv))[bad] == "completed"  # complete ran: the server holds other bytes
    # every rerun skips that session (it completed with other bytes than its key says) and
    # lands on the same next generation
    ids = {make_client(srv).uploads.upload_file(src).upload_id for _ in range(2)}
    assert len(ids) == 1 and bad not in ids
    assert len(_sessions(srv)) == 3


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
    src = distinct(medium_clip, tmp_path / "twins.mp4", "twins")
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


# -- one read pass: bytes read by a real upload process -------------------------------------------

READS = r"""
import json, sys
from sophon_cli.client.http import SophonClient

def rchar():
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar:")).split()[1])

url, key, warm, path = sys.argv[1:5]
with SophonClient(url, key) as c:
    c.uploads.upload_file(warm)  # every module and model loaded before measuring
    before = rchar()
    first = c.uploads.upload_file(path, concurrency=4)
    mid = rchar()
    again = c.uploads.upload_file(path, sha256=first.sha256, fingerprint=first.fingerprint)
    after = rchar()
print(json.dumps({"first": mid - before, "again": after - mid, "sha256": first.sha256,
                  "sent": first.parts_sent, "same": again.upload_id == first.upload_id}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/<pid>/io")
def test_every_byte_is_read_once_and_a_known_file_not_at_all(make_server, medium_clip, tmp_path):
    from sophon_cli.client.content import sample_ranges

    srv = make_server(chunk_size=1024 * 1024)
    src = tmp_path / "big.mp4"
    payload = os.urandom(8 * 1024 * 1024)  # a valid mp4 followed by 8 MiB in a 'free' box
    src.write_bytes(medium_clip.read_bytes() + (8 + len(payload)).to_bytes(4, "big") + b"free" + payload)
    warm = distinct(medium_clip, tmp_path / "warm.mp4", "warm-up")
    size = src.stat().st_size
    proc = subprocess.run(
        [sys.executable, "-c", READS, srv.url, srv.api_keys[0], str(warm), str(src)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["sha256"] == _sha(src) and got["sent"] == math.ceil(size / (1024 * 1024))
    sampled = sum(length for _, length in sample_ranges(size))
    slack = 256 * 1024  # responses read from the socket
    assert got["first"] <= size + sampled + slack, (got["first"], size)  # not 2 x size
    # the digest and fingerprint known (a cache), the server holding the upload: nothing to read
    assert got["same"] and got["again"] <= 64 * 1024, got["again"]


# -- hostile servers --------------------------------------------------------------------------------


class _Hostile(http.server.BaseHTTPRequestHandler):
    session: dict = {}

    def log_message(self, *args):
        pass

    def _send(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(201, dict(self.session, id="upl_hostile", expires_at="2030-01-01T00:00:00Z"))

    def do_GET(self):
        self._send(200, {"id": "upl_hostile", "status": "uploading", "received_chunks": [], **self.session})

    def do_PUT(self):
        self._send(500, {"error": {"code": "internal_error", "message": "no part should be sent"}})


@pytest.fixture
def hostile():
    servers = []

    def start(**session):
        handler = type("Handler", (_Hostile,), {"session": session})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize(
    "session",
    [
        {"chunk_size": 1, "total_chunks": 10**12},  # would be a list of a trillion part numbers
        {"chunk_size": 1024, "total_chunks": 10**12},
        {"chunk_size": 0, "total_chunks": 3},
        {"chunk_size": 10, "total_chunks": 1},  # parts that do not cover the file
    ],
)
def test_a_session_that_does_not_fit_the_file_is_a_classified_error(hostile, make_client, clip, session):
    """Issue 11 item 16: total_chunks is checked against size / chunk_size before anything is sized
    from it (on main, 10**12 ran into MemoryError)."""
    from sophon_cli.client.errors import ServerError
    from sophon_cli.client.http import SophonClient

    with SophonClient(hostile(**session), "hostile-key", max_retries=0) as c:
        with pytest.raises(ServerError) as info:
            c.uploads.upload_file(clip)
    assert info.value.code == "invalid_response"
    assert "does not fit the file" in str(info.value) and info.value.hint
