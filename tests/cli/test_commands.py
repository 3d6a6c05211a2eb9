"""The resource commands end to end: the real CLI in a subprocess against the real local server on
loopback, in human and --json modes (stdout and stderr checked separately)."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.cli.helpers import assert_one_line_error, cli_env, free_port, start_cli
from tests.conftest import TEST_KEY


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---- upload / uploads ---------------------------------------------------------------------------


def test_upload_prints_ids_human_and_json(cli, clip, make_clip, tmp_path):
    human = cli("upload", clip)
    assert human.returncode == 0, human.stderr
    upload_id, shown = human.stdout.rstrip("\n").split("\t")  # piped: tab-separated, as documented
    assert upload_id.startswith("upl_") and shown == str(clip)

    other = make_clip(tmp_path / "other.mp4", size="128x96")
    res = cli("--json", "upload", clip, other)
    assert res.returncode == 0, res.stderr
    lines = _json_lines(res.stdout)
    assert [line["file"] for line in lines] == [str(clip), str(other)]
    assert lines[0] == {
        "file": str(clip),
        "upload_id": upload_id,  # the same content resumes (here: replays) the same session
        "sha256": _sha256(clip),
        "bytes": clip.stat().st_size,
    }
    assert lines[1]["upload_id"] not in (upload_id, None)
    assert "Traceback" not in res.stderr

    fresh = cli("--json", "upload", "--new", clip)
    assert fresh.returncode == 0, fresh.stderr
    assert _json_lines(fresh.stdout)[0]["upload_id"] != upload_id


def test_upload_rerun_sends_only_the_missing_parts(make_server, cli, clip):
    """An interrupted upload (parts 0 and 2 of 4 on the server) is finished by the same command."""
    from sophon_cli.client.content import identify
    from sophon_cli.client.http import SophonClient
    from sophon_cli.client.idempotency import route_key

    srv = make_server(chunk_size=8192)
    size = clip.stat().st_size
    assert size > 3 * 8192, "the clip must span 4 parts"
    ident = identify(clip)  # what any run derives from the content
    with SophonClient(srv.url, srv.api_keys[0]) as api:
        session = api.uploads.create(
            ident.name, size, ident.mime, idempotency_key=route_key(ident.fingerprint_key(), "create-upload")
        )
        data = clip.read_bytes()
        for n in (0, 2):
            api.uploads.put_part(session.id, n, data[n * 8192 : (n + 1) * 8192])
    log_before = srv.request_log.read_text().count("\n")

    res = cli("--json", "upload", clip, env={"SOPHON_BASE_URL": srv.url})
    assert res.returncode == 0, res.stderr
    assert _json_lines(res.stdout)[0]["upload_id"] == session.id
    records = [json.loads(line) for line in srv.request_log.read_text().splitlines()[log_before:]]
    parts = sorted(int(r["path"].rsplit("/", 1)[1]) for r in records if r["method"] == "PUT")
    assert parts == [1, 3]


def test_uploads_get_and_cancel(cli, api, uploaded):
    res = cli("uploads", "get", uploaded.upload_id)
    assert res.returncode == 0, res.stderr
    assert "status:" in res.stdout and "completed" in res.stdout
    assert "1 of 1 received" in res.stdout

    data = _json_lines(cli("--json", "uploads", "get", uploaded.upload_id).stdout)[0]
    assert data["id"] == uploaded.upload_id and data["status"] == "completed"

    session = api.uploads.create("pending.mp4", 1000, "video/mp4")
    res = cli("uploads", "cancel", session.id)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{session.id}\tcanceled\n"
    assert api.uploads.get(session.id).status == "canceled"


# ---- jobs ---------------------------------------------------------------------------------------


def test_job_create_get_list_wait_download(cli, uploaded, tmp_path):
    res = cli(
        "--json",
        "job",
        "create",
        "--upload",
        uploaded.upload_id,
        "--profile",
        "sophon-espresso",
        "--metadata",
        "n=1",
        "--metadata",
        'obj={"x": [1, 2]}',
        "--metadata",
        "text=hello world",
        "--wait",
        "--timeout",
        "120",
    )
    assert res.returncode == 0, res.stderr
    [job] = _json_lines(res.stdout)
    job_id = job["id"]
    assert job["status"] == "completed"
    assert job["metadata"] == {"n": 1, "obj": {"x": [1, 2]}, "text": "hello world"}

    got = cli("job", "get", job_id)
    assert got.returncode == 0, got.stderr
    assert "id:" in got.stdout and job_id in got.stdout and "completed" in got.stdout
    assert "sophon-espresso" in got.stdout
    assert (
        _json_lines(cli("--json", "job", "get", job_id).stdout)[0]["output"]["sha256"]
        == job["output"]["sha256"]
    )

    listed = cli("job", "list", "--status", "completed", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0] == "ID\tSTATUS\tSOURCE\tPROFILE\tCREATED\tPROGRESS"
    mine = [r.split("\t") for r in rows[1:] if r.startswith(job_id)]
    # SOURCE: an upload made by the library (no local note), whose own name is derived from its
    # content: `job create --upload` noted the upload id instead
    assert mine and mine[0][1:4] == ["completed", uploaded.upload_id, "sophon-espresso"]
    assert mine[0][5] == "100%"
    assert datetime.strptime(mine[0][4], "%Y-%m-%dT%H:%M:%SZ")  # piped: RFC 3339 with its zone

    everything = _json_lines(cli("--json", "job", "list", "--all", "--status", "completed").stdout)
    assert job_id in [j["id"] for j in everything]
    assert {j["status"] for j in everything} == {"completed"}

    waited = cli("job", "wait", job_id)
    assert (waited.returncode, waited.stdout) == (0, f"{job_id}\tcompleted\n")

    out_dir = tmp_path / "out"
    dl = cli("download", job_id, "-o", f"{out_dir}/")
    assert dl.returncode == 0, dl.stderr
    path = Path(dl.stdout.strip())
    assert path.parent == out_dir and _sha256(path) == job["output"]["sha256"]
    assert sorted(p.name for p in out_dir.iterdir()) == [path.name]  # no .part left behind

    assert "verified: sha256 matches" in dl.stderr
    before = path.stat().st_mtime_ns
    again = cli("download", job_id, "-o", path)  # the same bytes are there already: done
    assert again.returncode == 0 and "already holds this output" in again.stderr, again.stderr
    assert path.stat().st_mtime_ns == before
    path.write_bytes(b"someone else's file")
    refused = cli("download", job_id, "-o", path)
    assert_one_line_error(refused, 2, "already exists", "--force")
    assert path.read_bytes() == b"someone else's file"

    forced = cli("--json", "download", job_id, "-o", path, "--force")
    assert forced.returncode == 0, forced.stderr
    data = _json_lines(forced.stdout)[0]
    assert data["downloaded"] is True and data["path"] == str(path)
    assert data["sha256"] == job["output"]["sha256"] == _sha256(path)
    assert data["verified"] is True and data["already_present"] is False


def test_job_list_follows_cursors(make_server, cli, clip):
    """--all and a --limit above the page size follow next_cursor across pages (fresh server)."""
    from sophon_cli.client.http import SophonClient

    srv = make_server()
    with SophonClient(srv.url, srv.api_keys[0]) as api:
        up = api.uploads.upload_file(clip)
        made = [api.jobs.create(up.upload_id, metadata={"sophon_local_fail": True}).id for _ in range(3)]
    env = {"SOPHON_BASE_URL": srv.url}
    log_before = srv.request_log.read_text().count("\n")

    res = cli("--json", "job", "list", "--all", "--page-size", "1", env=env)
    assert res.returncode == 0, res.stderr
    assert [j["id"] for j in _json_lines(res.stdout)] == made[::-1]  # newest first, each once
    records = [json.loads(line) for line in srv.request_log.read_text().splitlines()[log_before:]]
    assert len([r for r in records if r["method"] == "GET" and r["path"] == "/v1/jobs"]) >= 3

    two = cli("job", "list", "--limit", "2", "--page-size", "1", env=env)
    assert two.returncode == 0, two.stderr
    assert [row.split("\t")[0] for row in two.stdout.splitlines()[1:]] == made[:0:-1]


def test_job_from_file_wait_timeout_cancel(cli, api, clip):
    """FILE is uploaded first; a slow job times out (6), is canceled, and waiting on it exits 5."""
    res = cli("job", "create", clip, "--metadata", "sophon_local_delay=60")
    assert res.returncode == 0, res.stderr
    job_id, status = res.stdout.split()
    assert job_id.startswith("job_") and status in ("queued", "probing", "encoding")
    assert "uploaded" in res.stderr
    try:
        timed_out = cli("--no-progress", "job", "wait", job_id, "--timeout", "0.5")
        assert_one_line_error(timed_out, 6, job_id, "gave up")

        canceled = cli("job", "cancel", job_id)
        assert canceled.returncode == 0, canceled.stderr
        assert canceled.stdout.startswith(f"{job_id}\tcanceled")

        waited = cli("--json", "job", "wait", job_id)
        assert waited.returncode == 5
        assert _json_lines(waited.stdout)[0]["status"] == "canceled"
        assert "Traceback" not in waited.stderr and f"job {job_id} ended canceled" in waited.stderr
    finally:
        if not api.jobs.get(job_id).is_terminal:
            api.jobs.cancel(job_id)


def test_job_that_fails_exits_5_with_its_reason(cli, uploaded):
    res = cli(
        "job", "create", "--upload", uploaded.upload_id, "--metadata", "sophon_local_fail=true", "--wait"
    )
    assert res.returncode == 5, res.stderr
    job_id = res.stdout.split()[0]
    assert res.stdout.startswith(f"{job_id}\tfailed") and "forced failure" in res.stdout
    err = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert err == [err[0]] and f"job {job_id} ended failed" in err[0] and "forced failure" in err[0]
    assert "Traceback" not in res.stderr


def test_download_of_a_kept_original_writes_nothing(cli, tmp_path):
    import imageio_ffmpeg

    black = tmp_path / "black.mp4"  # so small that no HEVC encode beats it: sophon-auto keeps it
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
        + ["-i", "color=c=black:size=160x120:rate=15:duration=1", "-c:v", "libx264", "-preset"]
        + ["ultrafast", "-crf", "51", "-pix_fmt", "yuv420p", str(black)],
        check=True,
        timeout=60,
    )
    res = cli("--json", "job", "create", black, "--wait")
    assert res.returncode == 0, res.stderr
    job = _json_lines(res.stdout)[0]
    assert job["final_artifact"] == "original"

    out_dir = tmp_path / "dl"
    out_dir.mkdir()
    human = cli("download", job["id"], "-o", out_dir)
    assert (human.returncode, human.stdout) == (0, "")
    assert "kept the original" in human.stderr and "nothing to download" in human.stderr
    as_json = cli("--json", "download", job["id"], "-o", out_dir)
    assert as_json.returncode == 0, as_json.stderr
    data = _json_lines(as_json.stdout)[0]
    assert (data["downloaded"], data["final_artifact"], data["path"]) == (False, "original", None)
    assert list(out_dir.iterdir()) == []


# ---- webhooks -----------------------------------------------------------------------------------


def test_webhooks_create_list_delete(cli, tmp_path):
    home = tmp_path / "sophon-home"
    res = cli("webhooks", "create", "http://127.0.0.1:9/hook", "--name", "ci", "--save-secret")
    assert res.returncode == 0, res.stderr
    fields = dict(line.split(":", 1) for line in res.stdout.splitlines())
    hook_id, secret = fields["id"].strip(), fields["secret"].strip()
    assert hook_id.startswith("wh_") and len(secret) == 64
    saved = home / "webhook-secrets.toml"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert secret in saved.read_text() and hook_id in saved.read_text()
    assert secret not in res.stderr

    listed = cli("webhooks", "list")
    assert listed.returncode == 0 and hook_id in listed.stdout and secret not in listed.stdout
    as_json = cli("--json", "webhooks", "list")
    items = _json_lines(as_json.stdout)
    assert hook_id in [i["id"] for i in items]
    assert all("secret" not in i for i in items) and secret not in as_json.stdout

    deleted = cli("webhooks", "delete", hook_id)
    assert (deleted.returncode, deleted.stdout) == (0, f"{hook_id}\tdeleted\n")

    unsaved = cli("--json", "webhooks", "create", "http://127.0.0.1:9/other")
    assert unsaved.returncode == 0, unsaved.stderr
    hook = _json_lines(unsaved.stdout)[0]
    assert len(hook["secret"]) == 64 and "only this once" in unsaved.stderr
    assert hook["id"] not in saved.read_text()
    assert (
        cli("--json", "webhooks", "delete", hook["id"]).stdout
        == json.dumps({"id": hook["id"], "deleted": True}, separators=(",", ":")) + "\n"
    )


def test_webhooks_verify(cli, tmp_path):
    from sophon_cli.client.webhooks import compute_signature

    secret = "s3cret-" + "a" * 20
    body = b'{"event_id":"evt_1","type":"job.completed","job_id":"job_1","status":"completed"}'
    ts = _now_rfc3339()
    sig = compute_signature(body, ts, secret)
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)

    ok = cli(
        "webhooks",
        "verify",
        "--secret",
        secret,
        "--signature",
        sig,
        "--timestamp",
        ts,
        "--body-file",
        body_file,
    )
    assert (ok.returncode, ok.stdout) == (0, "valid\n"), ok.stderr
    from_env = cli(
        "webhooks",
        "verify",
        "--signature",
        sig,
        "--timestamp",
        ts,
        env={"SOPHON_WEBHOOK_SECRET": secret},
        input=body.decode(),
    )
    assert (from_env.returncode, from_env.stdout) == (0, "valid\n"), from_env.stderr

    tampered = cli(
        "webhooks",
        "verify",
        "--signature",
        sig,
        "--timestamp",
        ts,
        env={"SOPHON_WEBHOOK_SECRET": secret},
        input=body.decode() + " ",
    )
    assert_one_line_error(tampered, 1, "does not match", "signature_mismatch", secrets=(secret,))

    old = "2020-01-01T00:00:00Z"
    as_json = cli(
        "--json",
        "webhooks",
        "verify",
        "--signature",
        compute_signature(body, old, secret),
        "--timestamp",
        old,
        "--body-file",
        body_file,
        env={"SOPHON_WEBHOOK_SECRET": secret},
    )
    assert as_json.returncode == 1
    assert _json_lines(as_json.stdout) == [{"valid": False, "reason": "timestamp_out_of_tolerance"}]
    assert "old" in as_json.stderr and "Traceback" not in as_json.stderr


def _wait_for_url(proc: subprocess.Popen) -> str:
    line = proc.stderr.readline()
    assert line.startswith("listening on http://"), line
    return line.split()[2]


def test_webhooks_listen_receives_a_real_delivery(cli, server, uploaded, tmp_path):
    home = tmp_path / "sophon-home"
    port = free_port()
    created = cli("--json", "webhooks", "create", f"http://127.0.0.1:{port}/hook", "--save-secret")
    assert created.returncode == 0, created.stderr
    hook = _json_lines(created.stdout)[0]
    listener = start_cli(
        ["--json", "webhooks", "listen", "--port", str(port), "--max-events", "1"], cli_env(server, home)
    )
    try:
        assert _wait_for_url(listener) == f"http://127.0.0.1:{port}/"
        job = cli(
            "--json", "job", "create", "--upload", uploaded.upload_id, "--webhook", hook["id"], "--wait"
        )
        assert job.returncode == 0, job.stderr
        job_id = _json_lines(job.stdout)[0]["id"]
        out, err = listener.communicate(timeout=60)
        assert listener.returncode == 0, err
        [event] = _json_lines(out)
        assert (event["job_id"], event["type"], event["status"]) == (job_id, "job.completed", "completed")
        assert event["event_id"]
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.communicate()
        cli("webhooks", "delete", hook["id"])


def test_webhooks_listen_verifies_dedupes_and_forwards(server, tmp_path):
    import httpx

    from sophon_cli.client.webhooks import compute_signature

    secret = "listen-secret-0123456789"
    env = cli_env(server, tmp_path / "home")
    sink = start_cli(
        ["--json", "webhooks", "listen", "--secret", secret, "--port", "0", "--max-events", "2"], env
    )
    front = None
    try:
        sink_url = _wait_for_url(sink)
        front = start_cli(
            [
                "--json",
                "webhooks",
                "listen",
                "--port",
                "0",
                "--max-events",
                "2",
                "--forward-to",
                sink_url + "fwd",
            ],
            {**env, "SOPHON_WEBHOOK_SECRET": secret},
        )
        front_url = _wait_for_url(front)

        def deliver(event_id: str, *, key: str = secret) -> int:
            body = json.dumps(
                {"event_id": event_id, "type": "job.completed", "job_id": "job_x", "status": "completed"}
            )
            ts = _now_rfc3339()
            headers = {
                "Content-Type": "application/json",
                "X-Turbo-Timestamp": ts,
                "X-Turbo-Signature-256": compute_signature(body.encode(), ts, key),
                "X-Turbo-Event-Id": event_id,
            }
            return httpx.post(front_url + "hook", content=body, headers=headers, timeout=10).status_code

        assert deliver("evt_bad", key="wrong-secret-000") == 401
        assert deliver("evt_1") == 200
        assert deliver("evt_1") == 200  # at-least-once: a repeat is acknowledged, not printed again
        assert deliver("evt_2") == 200
        front_out, front_err = front.communicate(timeout=30)
        sink_out, sink_err = sink.communicate(timeout=30)
        assert (front.returncode, sink.returncode) == (0, 0), (front_err, sink_err)
        assert [e["event_id"] for e in _json_lines(front_out)] == ["evt_1", "evt_2"]
        assert [e["event_id"] for e in _json_lines(sink_out)] == ["evt_1", "evt_2"]  # verified again there
        assert "signature_mismatch" in front_err and "evt_bad" not in front_out
        assert secret not in front_err + front_out + sink_err + sink_out
    finally:
        for proc in (front, sink):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


# ---- health -------------------------------------------------------------------------------------


def test_health_ok_human_and_json(cli, server):
    res = cli("health")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [f"healthz\tok\t{server.url}", "readyz\tready", "auth\tok"]
    data = _json_lines(cli("--json", "health").stdout)[0]
    assert data == {"base_url": server.url, "alive": True, "ready": True, "checks_failed": [], "auth": "ok"}


@pytest.mark.parametrize(
    ("env", "code", "auth_line", "needle"),
    [
        ({"SOPHON_API_KEY": "wrong-key-0000"}, 4, "auth\trejected", "401"),
        ({"SOPHON_API_KEY": None}, 4, "auth\tmissing", "SOPHON_API_KEY"),
    ],
    ids=["wrong-key", "no-key"],
)
def test_health_bad_key(cli, env, code, auth_line, needle):
    res = cli("health", env=env)
    assert res.returncode == code
    assert res.stdout.splitlines()[-1] == auth_line
    err = res.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]


def test_health_unreachable_exits_8_fast(cli):
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    res = cli("health", env={"SOPHON_BASE_URL": url})
    assert_one_line_error(res, 8, url)
    assert time.monotonic() - started < 20


class _NotReady(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        routes = {
            "/healthz": (200, {"status": "ok"}),
            "/readyz": (503, {"ready": False, "checks_failed": ["draining"]}),
        }
        status, body = routes.get(self.path.split("?")[0], (200, {"jobs": [], "has_more": False}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_health_not_ready_exits_1(cli):
    """A server that is alive but draining (the local server cannot be made to say so on demand)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NotReady)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        res = cli("health", env={"SOPHON_BASE_URL": url})
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert res.returncode == 1
    assert res.stdout.splitlines() == [f"healthz\tok\t{url}", "readyz\tnot ready (draining)", "auth\tok"]
    err = res.stderr.splitlines()
    assert len(err) == 1 and "not ready" in err[0] and "draining" in err[0]


def test_no_secret_leaks_into_verbose_output(cli, server, clip):
    """The key the child really sends (the server fixture's, given to it as SOPHON_API_KEY) appears
    nowhere in what -v prints, not even in part; the run printed debug lines, so there was a place
    for it to leak into."""
    key = server.api_keys[0]
    assert key == TEST_KEY and len(key) >= 16
    res = cli("-v", "upload", clip)
    assert res.returncode == 0, res.stderr
    assert any(line.startswith("debug:") for line in res.stderr.splitlines()), res.stderr
    printed = res.stdout + res.stderr
    assert key not in printed
    assert key[-8:] not in printed and key[:8] not in printed
