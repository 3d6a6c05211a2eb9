"""`sophon doctor` against the local server, a hostile one (skewed clock, not ready, key refused),
an unreachable URL and broken local files; on a terminal (pty), piped and as JSON."""

from __future__ import annotations

import json
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .helpers import cli_env, free_port
from .ttyrun import run_in_pty

ALL = [
    "config",
    "profile",
    "api key",
    "base url",
    "clock",
    "readyz",
    "auth",
    "ffmpeg",
    "state dir",
    "webhook secrets",
]


def _rows(stdout: str) -> dict[str, list[str]]:
    rows = [line.split("\t") for line in stdout.splitlines()]
    assert all(len(r) == 4 for r in rows), stdout
    return {r[1]: r for r in rows}


def test_doctor_all_ok_piped_and_json(cli, server):
    res = cli("doctor")
    assert res.returncode == 0, (res.stdout, res.stderr)
    rows = _rows(res.stdout)
    assert list(rows) == ALL
    assert {r[0] for r in rows.values()} == {"ok"}, res.stdout
    assert all(r[3] == "" for r in rows.values())  # no hint on ok lines
    key = server.api_keys[0]
    assert key not in res.stdout + res.stderr
    assert rows["api key"][2].startswith(f"****{key[-4:]}")
    assert server.url in rows["base url"][2]
    data = json.loads(cli("--json", "doctor").stdout)
    assert data["ok"] is True and [c["name"] for c in data["checks"]] == ALL
    assert all(c["status"] == "ok" and c["hint"] is None for c in data["checks"])


@pytest.mark.parametrize("colour", [False, True], ids=["no-colour", "colour"])
def test_doctor_on_a_terminal_is_aligned(server, tmp_path, colour):
    env = cli_env(server, tmp_path / "home", NO_COLOR="1")
    if colour:
        env.pop("NO_COLOR")
    code, text = run_in_pty(["doctor"], env)
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert "\t" not in text
    checks = [line for line in lines if line.split()[0] in ("ok", "warn", "fail")]
    assert [line.split()[0] for line in checks] == ["ok"] * len(ALL), text
    column = 4 + 2 + len("webhook secrets") + 2  # status, name, then the detail at one column
    for line, name in zip(checks, ALL, strict=True):
        assert line[6 : 6 + len(name)] == name, line
        assert line[column - 2 : column] == "  " and line[column] != " ", line


class _Hostile(BaseHTTPRequestHandler):
    """Alive, but its clock is 10 minutes ahead, it is not ready and it refuses every key."""

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/healthz":
            status, body = 200, {"status": "ok"}
        elif path == "/readyz":
            status, body = 503, {"ready": False, "checks_failed": ["database", "disk_critical"]}
        else:
            status, body = 401, {"error": {"code": "unauthorized", "message": "bad key", "retryable": False}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def date_time_string(self, timestamp=None):
        return formatdate(time.time() + 600, usegmt=True)

    def log_message(self, *args):
        pass


def test_doctor_reports_skew_not_ready_and_refused_key(cli):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        res = cli("doctor", env={"SOPHON_BASE_URL": url})
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert res.returncode == 1, (res.stdout, res.stderr)
    rows = _rows(res.stdout)
    assert rows["base url"][0] == "ok"
    status, _, detail, hint = rows["clock"]
    assert status == "fail" and "behind" in detail and "webhook signatures" in detail and "clock" in hint
    import re

    assert 595 <= int(re.search(r"(\d+)s behind", detail).group(1)) <= 605, detail
    assert rows["readyz"][:3] == ["fail", "readyz", "not ready: database, disk_critical"]
    assert rows["auth"][0] == "fail" and "401" in rows["auth"][2] and "set-key" in rows["auth"][3]
    assert res.stderr.strip() == "3 checks failed"


def test_doctor_unreachable_fails_fast_and_hides_userinfo(cli):
    port = free_port()
    started = time.monotonic()
    res = cli("doctor", env={"SOPHON_BASE_URL": f"http://someone:hunter2@127.0.0.1:{port}"})
    assert time.monotonic() - started < 30
    assert res.returncode == 1
    assert "hunter2" not in res.stdout + res.stderr and "someone" not in res.stdout + res.stderr
    rows = _rows(res.stdout)
    assert rows["base url"][0] == "fail" and f"127.0.0.1:{port}" in rows["base url"][2]
    assert "network" in rows["base url"][3]
    assert "readyz" not in rows and "clock" not in rows  # nothing to ask when it cannot be reached
    assert rows["state dir"][0] == "ok"  # the local checks still ran


def test_doctor_broken_config_and_unknown_profile(cli, tmp_path):
    home = tmp_path / "sophon-home"
    home.mkdir()
    (home / "config.toml").write_text('[profiles.default]\nbase_url = "https://x.example"\ntimeout = \n')
    res = cli("doctor")
    assert res.returncode == 1
    rows = _rows(res.stdout)
    assert rows["config"][0] == "fail" and "line 3" in rows["config"][2] and str(home) in rows["config"][2]
    assert rows["settings"][0] == "fail"
    (home / "config.toml").write_text('[profiles.default]\nbase_url = "https://x.example"\n')
    res = cli("--profile", "nope", "doctor")
    rows = _rows(res.stdout)
    assert rows["profile"][:3] == ["fail", "profile", "profile 'nope' not found (profiles: default)"]
    assert "--profile" in rows["profile"][3]
    assert res.returncode == 1
    # from the environment: the hint said "or drop --profile", a flag nobody gave
    by_env = _rows(cli("doctor", env={"SOPHON_PROFILE": "nope"}).stdout)
    assert by_env["profile"][0] == "fail" and "SOPHON_PROFILE" in by_env["profile"][3]
    assert "drop --profile" not in by_env["profile"][3]


def test_doctor_state_dir_not_writable(cli, tmp_path):
    home = tmp_path / "a-file"
    home.write_text("not a directory")
    res = cli("doctor", home=home)
    assert res.returncode == 1
    rows = _rows(res.stdout)
    assert rows["state dir"][0] == "fail" and "not a directory" in rows["state dir"][2]
    assert "SOPHON_HOME" in rows["state dir"][3]
    assert home.read_text() == "not a directory"
