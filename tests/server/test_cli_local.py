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


def _sophon(*args, home, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHON_")}
    env["SOPHON_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "sophon_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc/<pid>/environ")
def test_background_server_status_stop_and_no_sophon_secret_in_its_environment(tmp_path, monkeypatch):
    """Issue 13: `server status` / `server stop` for the background --local server; issue 11: it
    inherits no SOPHON_* secret (the webhook secret reached it before)."""
    from sophon_cli.local import ensure_local_server

    home = tmp_path / "home"
    data = home / "server"  # the default data dir for this SOPHON_HOME
    monkeypatch.setenv("SOPHON_WEBHOOK_SECRET", "whsec-must-not-leak-0123")
    monkeypatch.setenv("SOPHON_API_KEY", "sk-real-must-not-leak-0123")
    monkeypatch.setenv("SOPHON_SERVER_API_KEYS", "srv-key-must-not-leak")
    monkeypatch.setenv("SOPHON_FUTURE_TOKEN", "tok-must-not-leak")
    monkeypatch.setenv("SOPHON_HOME", str(home))
    url, key = ensure_local_server()
    pid = json.loads((data / "server.json").read_text())["pid"]
    try:
        env = _environ_of(pid)
        leaked = [k for k in env if k.startswith("SOPHON_")]
        assert leaked == [] and not any("must-not-leak" in v for v in env.values())
        assert "PATH" in env  # the rest of the environment is kept

        st = _sophon("server", "status", home=home)
        assert st.returncode == 0, st.stderr
        assert re.search(r"^status:\s+running$", st.stdout, re.M)
        assert f"url:      {url}" in st.stdout and f"pid:      {pid}" in st.stdout
        doc = json.loads(_sophon("--json", "server", "status", home=home).stdout)
        assert doc == {**doc, "running": True, "healthy": True, "url": url, "pid": pid, "data_dir": str(data)}

        stop = _sophon("server", "stop", home=home)
        assert stop.returncode == 0, stop.stderr
        assert stop.stdout.strip() == f"stopped the server on {url} (pid {pid})"
        assert not (data / "server.json").exists()  # removed before the data dir was released
        for _ in range(100):  # the process itself ends right after (a zombie here: we are its parent)
            if not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text():
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the stopped server is still running")
    finally:
        if (data / "server.json").exists():
            os.kill(pid, signal.SIGTERM)
    st = _sophon("server", "status", home=home)
    assert st.returncode == 3 and re.search(r"^status:\s+not running$", st.stdout, re.M)
    assert json.loads(_sophon("--json", "server", "status", home=home).stdout)["running"] is False
    again = _sophon("server", "stop", home=home)
    assert again.returncode == 0 and again.stdout == ""
    assert again.stderr.strip() == f"no server is running on {data}; nothing to stop"


def test_stop_never_signals_a_pid_from_a_stale_state_file(tmp_path):
    """A server.json left by a dead server names a pid that may now be someone else's."""
    home = tmp_path / "home"
    data = home / "server"
    data.mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (data / "server.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": bystander.pid}))
        (data / "server.lock").touch()
        r = _sophon("server", "stop", home=home)
        assert r.returncode == 0 and "nothing to stop" in r.stderr
        assert bystander.poll() is None  # still alive
        assert _sophon("server", "status", home=home).returncode == 3
    finally:
        bystander.kill()
        bystander.wait(timeout=10)


def test_busy_port_is_one_line_exit_2_with_a_hint(tmp_path):
    """Issue 13: was uvicorn's raw `[Errno 98]` and exit 3 ("not found")."""
    import socket

    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = _sophon("server", "--port", port, "--data-dir", tmp_path / "d1", home=home)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Errno" not in r.stderr and "Traceback" not in r.stderr
    assert r.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: the address is already in use; "
        "pick another port with --port (0 picks a free one)\n"
    )
    assert not (tmp_path / "d1" / "sophon.db").exists()
    # the port is held by a sophon server (foreground, another data dir): the hint says so
    proc, url, _ = _start(["--data-dir", str(tmp_path / "d2")])
    try:
        port = int(url.rsplit(":", 1)[1])
        r = _sophon("server", "--port", port, "--data-dir", tmp_path / "d3", home=home)
        assert r.returncode == 2 and r.stderr.count("\n") == 1
        assert "already in use; a server already answers there (`sophon server status`" in r.stderr
    finally:
        assert _stop(proc)[0] == 0


def test_second_server_on_a_data_dir_is_refused(tmp_path, monkeypatch):
    """Issue 13: `sophon server` on the data dir of a running server (foreground or background)
    started a second server on the same SQLite database."""
    from sophon_cli.local import ensure_local_server

    home = tmp_path / "home"
    fg = tmp_path / "fg"
    proc, url, _ = _start(["--data-dir", str(fg)])
    try:
        r = _sophon("server", "--port", 0, "--data-dir", fg, home=home)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(
            f"error: the data dir {fg} is in use by a running server (pid {proc.pid}, {url}); "
            f"it answers at {url}: use it"
        )
        assert f"`sophon server stop --data-dir {fg}`" in r.stderr
    finally:
        assert _stop(proc)[0] == 0
    # the background --local server of the default data dir
    monkeypatch.setenv("SOPHON_HOME", str(home))
    bg_url, _ = ensure_local_server()
    try:
        r = _sophon("server", "--port", 0, home=home)
        assert r.returncode == 2 and "in use by a running server" in r.stderr and bg_url in r.stderr
        assert "`sophon server stop`," in r.stderr  # the default data dir needs no --data-dir
        assert _sophon("server", "status", home=home).returncode == 0  # the first one is untouched
    finally:
        assert _sophon("server", "stop", home=home).returncode == 0
