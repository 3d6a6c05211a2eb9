"""`sophon server` as a real process, and `--local`'s background server (ensure_local_server)."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest


def _start(args, env=None):
    full = {k: v for k, v in os.environ.items() if k != "SOPHON_SERVER_API_KEYS"}
    full.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", "server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            for _ in range(2):
                lines.append(proc.stderr.readline())
            return proc, m.group(1), lines
    proc.kill()
    raise AssertionError("server did not start: " + "".join(lines))


def _stop(proc) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def test_server_command_generates_key_logs_requests_and_stops_cleanly(tmp_path):
    data = tmp_path / "srv"
    proc, url, lines = _start(["--data-dir", str(data)])
    try:
        key_file = data / "api_key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and stat.S_IMODE(data.stat().st_mode) == 0o700
        banner = "".join(lines)
        assert str(key_file) in banner and key not in banner
        state = json.loads((data / "server.json").read_text())
        assert state == {**state, "url": url, "pid": proc.pid}
        assert httpx.get(url + "/v1/jobs").status_code == 401
        r = httpx.get(url + "/v1/jobs", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert httpx.get(url + "/v1/downloads/secret-token-value.abc").status_code == 403
    finally:
        code, err = _stop(proc)
    assert code == 0
    assert re.search(rf"GET /v1/jobs 200 {r.headers['x-request-id']} \d+\.\dms", err)
    assert "GET /v1/downloads/<redacted> 403" in err and "secret-token-value" not in err
    assert key not in err and "stopped" in err
    assert not (data / "server.json").exists()


def test_server_command_keys_from_env_and_options(tmp_path):
    data = tmp_path / "srv"
    proc, url, _ = _start(
        ["--data-dir", str(data), "--chunk-size", "1000"],
        env={"SOPHON_SERVER_API_KEYS": "alpha-key, beta-key"},
    )
    try:
        for k in ("alpha-key", "beta-key"):
            assert (
                httpx.get(url + "/v1/webhooks", headers={"Authorization": f"Bearer {k}"}).status_code == 200
            )
        r = httpx.post(
            url + "/v1/uploads",
            headers={"Authorization": "Bearer alpha-key", "Idempotency-Key": "x"},
            json={"file_name": "a", "file_size": 2500, "mime_type": "video/mp4"},
        )
        assert r.json()["chunk_size"] == 1000 and r.json()["total_chunks"] == 3
        assert not (data / "api_key").exists()
    finally:
        assert _stop(proc)[0] == 0
    bad = subprocess.run(
        [sys.executable, "-m", "sophon_cli", "server", "--faults", "*=teapot"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "teapot" in bad.stderr


@pytest.fixture
def local_dir(tmp_path):
    d = tmp_path / "local"
    yield d
    try:
        pid = json.loads((d / "server.json").read_text())["pid"]
    except (OSError, ValueError):
        return
    os.kill(pid, signal.SIGTERM)  # the background server this test started
    for _ in range(100):
        if not (d / "server.json").exists():
            break
        time.sleep(0.05)


def test_ensure_local_server_starts_one_shared_background_server(local_dir):
    from sophon_cli.local import ensure_local_server

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_local_server(local_dir))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    url, key = results[0]
    assert stat.S_IMODE((local_dir / "api_key").stat().st_mode) == 0o600
    pid = json.loads((local_dir / "server.json").read_text())["pid"]
    assert key not in Path(f"/proc/{pid}/cmdline").read_text()  # never on a command line
    h = {"Authorization": f"Bearer {key}", "Idempotency-Key": "shared-1"}
    up = httpx.post(url + "/v1/uploads", headers=h, json={"file_name": "a", "file_size": 5, "mime_type": "x"})
    # a separate process finds the same server and sees the same state
    code = (
        "import sys, httpx; from sophon_cli.local import ensure_local_server;"
        f"u, k = ensure_local_server({str(local_dir)!r});"
        f"print(u, httpx.get(u + '/v1/uploads/{up.json()['id']}', headers={{'Authorization': 'Bearer ' + k}}).status_code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == [url, "200"], out.stderr
    assert json.loads((local_dir / "server.json").read_text())["pid"] == pid


def test_local_flag_of_the_cli(cli, tmp_path):
    home = tmp_path / "home"
    r = cli(
        "job", "list", "--local", "--json", env={"SOPHON_BASE_URL": None, "SOPHON_API_KEY": None}, home=home
    )
    try:
        assert r.returncode == 0, r.stderr
        state = json.loads((home / "server" / "server.json").read_text())
        assert httpx.get(state["url"] + "/healthz").status_code == 200
    finally:
        try:
            os.kill(json.loads((home / "server" / "server.json").read_text())["pid"], signal.SIGTERM)
        except (OSError, ValueError):
            pass


def test_crashed_server_jobs_are_picked_up_by_the_next_one(tmp_path, make_server, clip):
    from .helpers import Api

    data = tmp_path / "crash"
    proc, url, _ = _start(["--data-dir", str(data)], env={"SOPHON_SERVER_API_KEYS": "test-key-0123456789"})
    try:

        class Remote:
            api_keys = ["test-key-0123456789"]

        Remote.url = url
        api = Api(Remote)
        uid = api.upload(clip)
        job = api.create_job(uid, "sophon-espresso", metadata={"sophon_local_delay": 1.5})
        api.wait(job["id"], statuses=("encoding",))
        api.close()
    finally:
        proc.kill()  # SIGKILL: no clean shutdown, the job stays "encoding" with a dead owner
        proc.communicate(timeout=20)
    srv = make_server(data)
    api = Api(srv)
    try:
        t = time.monotonic()
        final = api.wait(job["id"], timeout=30)
        assert final["status"] == "completed" and final["attempt"] == 2
        assert time.monotonic() - t < 15  # re-queued at start-up, not after the 30 s lease
    finally:
        api.close()


def test_server_exits_after_idle_timeout(tmp_path):
    proc, url, _ = _start(["--data-dir", str(tmp_path / "idle"), "--idle-timeout", "1"])
    try:
        assert httpx.get(url + "/healthz").status_code == 200
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "idle" in err
    assert not (tmp_path / "idle" / "server.json").exists()
