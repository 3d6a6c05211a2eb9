"""`sophon webhooks`: the secret store and the receiver as a library, and the commands around them
(the once-only secret is never lost, the http:// hint, names, the listen port, delete's question)."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sophon_cli.client.webhooks import compute_signature
from sophon_cli.webhooks.receiver import DEFAULT_PORT, Receiver
from sophon_cli.webhooks.secret_store import SecretStore, SecretStoreError, resolve_secrets

from .helpers import assert_one_line_error, cli_env
from .ttyrun import run_in_pty


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---- library: layering -----------------------------------------------------------------------------


def test_webhook_library_never_imports_the_cli():
    code = (
        "import sys, sophon_cli.webhooks.receiver, sophon_cli.webhooks.secret_store, sophon_cli.diagnose, sophon_cli.setting_sources;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click') or m == 'sophon_cli.cli' or m.startswith('sophon_cli.cli.')];"
        "print(','.join(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


# ---- library: the secret store ---------------------------------------------------------------------


def test_saved_secrets_are_private_and_found(tmp_path, monkeypatch):
    monkeypatch.setenv("SOPHON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SOPHON_WEBHOOK_SECRET", raising=False)
    store = SecretStore()
    assert resolve_secrets(None) == []
    path = store.save("wh_1", url="https://a.example/hook", secret="secret-one", name="first")
    store.save("wh_2", url="https://b.example/hook", secret="secret-two")
    store.save("wh_3", url="https://c.example/hook", name="name-only")
    assert path == tmp_path / "home" / "webhook-secrets.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.secrets() == {"wh_1": "secret-one", "wh_2": "secret-two"}
    assert store.names() == {"wh_1": "first", "wh_3": "name-only"}
    assert resolve_secrets(None) == ["secret-one", "secret-two"]
    monkeypatch.setenv("SOPHON_WEBHOOK_SECRET", "from-env")
    assert resolve_secrets(None) == ["from-env"]
    assert resolve_secrets("flag") == ["flag"]


@pytest.mark.parametrize("damage", ["not-toml", "directory", "symlink"])
def test_damaged_store_is_refused_before_writing(tmp_path, damage):
    path = tmp_path / "webhook-secrets.toml"
    if damage == "not-toml":
        path.write_text("[webhooks\nsecret = ")
    elif damage == "directory":
        path.mkdir()
    else:
        (tmp_path / "elsewhere.toml").write_text("")
        path.symlink_to(tmp_path / "elsewhere.toml")
    store = SecretStore(path)
    with pytest.raises(SecretStoreError) as info:
        store.check_writable()
    assert str(path) in str(info.value)
    if damage == "not-toml":
        assert "line 1" in str(info.value)
    with pytest.raises(SecretStoreError):
        store.save("wh_1", url="https://a.example/", secret="s")
    assert (tmp_path / "elsewhere.toml").exists() is (damage == "symlink")
    if damage == "symlink":
        assert (tmp_path / "elsewhere.toml").read_text() == ""  # never written through the link


def test_store_check_passes_and_leaves_nothing_behind(tmp_path):
    store = SecretStore(tmp_path / "cfg" / "webhook-secrets.toml")
    store.check_writable()
    assert list((tmp_path / "cfg").iterdir()) == []


# ---- library: the receiver -------------------------------------------------------------------------


def _delivery(event_id: str, secret: str, *, ts: str | None = None) -> tuple[dict, bytes]:
    body = json.dumps(
        {"event_id": event_id, "type": "job.completed", "job_id": "job_9", "status": "completed"}
    )
    ts = ts or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    headers = {"X-Turbo-Timestamp": ts, "X-Turbo-Signature-256": compute_signature(body.encode(), ts, secret)}
    return headers, body.encode()


def _receiver(**kw) -> tuple[Receiver, list[dict], io.StringIO]:
    events: list[dict] = []
    warnings = io.StringIO()
    rx = Receiver(
        kw.pop("secrets", ["k1", "k2"]),
        on_event=events.append,
        on_warning=lambda m: warnings.write(m + "\n"),
        **kw,
    )
    return rx, events, warnings


def test_receiver_verifies_dedupes_and_counts():
    rx, events, warnings = _receiver(max_events=2)
    assert rx.handle(*_delivery("evt_a", "wrong")) == (401, "signature_mismatch")
    assert rx.handle(*_delivery("evt_a", "k2")) == (200, "ok")  # any known secret verifies
    assert rx.handle(*_delivery("evt_a", "k1")) == (200, "duplicate")
    rx.check_done()
    assert not rx.finished.is_set()
    old = _delivery("evt_b", "k1", ts="2020-01-01T00:00:00Z")
    assert rx.handle(*old) == (401, "timestamp_out_of_tolerance")
    assert rx.handle(*_delivery("evt_b", "k1")) == (200, "ok")
    rx.check_done()
    assert rx.finished.is_set()
    assert [e["event_id"] for e in events] == ["evt_a", "evt_b"]
    assert "signature_mismatch" in warnings.getvalue() and "k1" not in warnings.getvalue()


def test_receiver_rejects_signed_bodies_without_event_id():
    rx, events, _ = _receiver()
    body = b'{"type": "job.completed"}'
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    headers = {"X-Turbo-Timestamp": ts, "X-Turbo-Signature-256": compute_signature(body, ts, "k1")}
    assert rx.handle(headers, body).status == 400
    assert events == []


def test_receiver_failed_forward_is_not_marked_seen():
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rx, events, warnings = _receiver(forward_to=f"http://127.0.0.1:{port}/")
    try:
        headers, body = _delivery("evt_f", "k1")
        assert rx.handle(headers, body) == (502, "forward failed")
        assert rx.handle(headers, body) == (502, "forward failed")  # the retry is forwarded again
        assert events == [] and "evt_f" in warnings.getvalue()
        assert rx.count == 0
    finally:
        rx.close()


def test_listen_default_port_is_not_the_local_servers(server, tmp_path):
    assert DEFAULT_PORT != 8765
    env = cli_env(server, tmp_path / "home", SOPHON_WEBHOOK_SECRET="s" * 20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", "webhooks", "listen"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    # listening, or (port taken by someone else) the one-line error naming it: either way 8766
    assert f":{DEFAULT_PORT}" in first and "8765" not in first, first


# ---- create --save-secret: the once-only secret is never lost ---------------------------------------


def _ids(api) -> set[str]:
    return {h.id for h in api.webhooks.list()}


@pytest.mark.parametrize("damage", ["not-toml", "directory"])
def test_save_secret_with_a_broken_store_creates_nothing(cli, api, tmp_path, damage):
    home = tmp_path / "sophon-home"
    home.mkdir()
    secrets = home / "webhook-secrets.toml"
    if damage == "not-toml":
        secrets.write_text("[webhooks.wh_old]\nsecret = 'x\n")
    else:
        secrets.mkdir()
    before = _ids(api)
    res = cli("webhooks", "create", "http://127.0.0.1:9/hook", "--save-secret")
    assert_one_line_error(res, 2, str(secrets))
    assert _ids(api) == before  # nothing was created on the server


def test_save_secret_unreadable_store_creates_nothing(cli, api, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    home = tmp_path / "sophon-home"
    home.mkdir()
    secrets = home / "webhook-secrets.toml"
    secrets.write_text("")
    secrets.chmod(0)
    before = _ids(api)
    res = cli("webhooks", "create", "http://127.0.0.1:9/hook", "--save-secret")
    assert_one_line_error(res, 2, str(secrets), "permission denied")
    assert _ids(api) == before


class _BreakingServer:
    """A real HTTP server that creates a webhook and, before answering, ruins the secrets file
    (as a concurrent editor or a full disk would between the check and the save)."""

    SECRET = "f" * 64

    def __init__(self, secrets_path: Path) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                secrets_path.write_text("this is = = not toml")
                body = json.dumps(
                    {
                        "id": "wh_breaking",
                        "url": "https://example.com/hook",
                        "secret": outer.SECRET,
                        "active": True,
                        "created_at": "2026-01-01T00:00:00Z",
                    }
                ).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("json_mode", [False, True])
def test_secret_that_cannot_be_saved_after_creation_is_printed_once(cli, tmp_path, json_mode):
    home = tmp_path / "sophon-home"
    secrets = home / "webhook-secrets.toml"
    srv = _BreakingServer(secrets)
    try:
        args = ["--json"] if json_mode else []
        res = cli(
            *args,
            "webhooks",
            "create",
            "https://example.com/hook",
            "--save-secret",
            env={"SOPHON_BASE_URL": srv.url},
        )
    finally:
        srv.close()
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stdout.count(srv.SECRET) == 1, res.stdout
    assert srv.SECRET not in res.stderr
    if json_mode:
        assert _json_lines(res.stdout)[0]["secret"] == srv.SECRET
    else:
        assert f"secret: {srv.SECRET}" in res.stdout and "wh_breaking" in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "wh_breaking" in errors[0] and "could not be saved" in errors[0]
    assert "printed above" in errors[0] and "Traceback" not in res.stderr
    # nothing under SOPHON_HOME holds the secret (the ruined file is the hostile server's text)
    for path in home.rglob("*"):
        if path.is_file():
            assert srv.SECRET not in path.read_text(errors="replace"), path


# ---- create against a server that refuses http:// ---------------------------------------------------


def test_http_url_refused_says_how_to_allow_it_locally(cli, make_server, tmp_path):
    strict = make_server(tmp_path / "strict", allow_insecure_webhooks=False)
    res = cli("webhooks", "create", "http://127.0.0.1:9/hook", env={"SOPHON_BASE_URL": strict.url})
    line = assert_one_line_error(res, 1, "https", "--allow-insecure-webhooks")
    assert "check the options you passed" not in line


# ---- list shows the name given at creation -----------------------------------------------------------


def test_list_shows_the_name_given_at_creation(cli, server):
    created = cli("--json", "webhooks", "create", "http://127.0.0.1:9/named", "--name", "local")
    assert created.returncode == 0, created.stderr
    hook_id = _json_lines(created.stdout)[0]["id"]
    try:
        listed = cli("webhooks", "list")
        assert listed.returncode == 0, listed.stderr
        header, *rows = listed.stdout.splitlines()
        assert header.split("\t") == ["ID", "URL", "ACTIVE", "CREATED", "NAME"]
        row = next(r.split("\t") for r in rows if r.startswith(hook_id))
        assert row[4] == "local"
        as_json = {h["id"]: h for h in _json_lines(cli("--json", "webhooks", "list").stdout)}
        assert as_json[hook_id]["name"] == "local"
    finally:
        cli("webhooks", "delete", hook_id, "--yes")


# ---- delete asks on a terminal ----------------------------------------------------------------------


def _create(api, name: str) -> str:
    return api.webhooks.create(f"http://127.0.0.1:9/{name}", idempotency_key=f"t-{name}-{time.time_ns()}").id


def test_delete_asks_on_a_terminal(api, server, tmp_path):
    env = cli_env(server, tmp_path / "home")
    hook_id = _create(api, "asked")
    code, text = run_in_pty(["webhooks", "delete", hook_id], env, replies=[("[y/N]", b"n\n")])
    assert code == 1, text
    assert f"Delete webhook {hook_id}?" in text and "nothing was done" in text
    assert hook_id in _ids(api)
    code, text = run_in_pty(["webhooks", "delete", hook_id], env, replies=[("[y/N]", b"y\n")])
    assert code == 0, text
    assert f"{hook_id}\tdeleted" in text
    assert hook_id not in _ids(api)


def test_delete_yes_and_no_terminal_never_prompt(api, cli, server, tmp_path):
    env = cli_env(server, tmp_path / "home")
    first = _create(api, "yes-flag")
    code, text = run_in_pty(["webhooks", "delete", first, "--yes"], env)
    assert code == 0 and "[y/N]" not in text, text
    assert first not in _ids(api)
    second = _create(api, "piped")
    res = cli("webhooks", "delete", second, input="")  # no terminal: acts, never asks
    assert (res.returncode, res.stdout) == (0, f"{second}\tdeleted\n"), res.stderr
    assert "[y/N]" not in res.stderr
    assert second not in _ids(api)


# ---- listen: piped lines are tab-separated; a broken store is named --------------------------------


def test_listen_piped_prints_tab_separated_events(server, tmp_path):
    import httpx

    secret = "listen-secret-" + "x" * 16
    env = cli_env(server, tmp_path / "home", SOPHON_WEBHOOK_SECRET=secret)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sophon_cli", "webhooks", "listen", "--port", "0", "--max-events", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stderr.readline()
        assert first.startswith("listening on http://127.0.0.1:"), first
        url = first.split()[2]
        headers, body = _delivery("evt_tab", secret)
        assert httpx.post(url, content=body, headers=headers, timeout=10).status_code == 200
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    fields = out.splitlines()[0].split("\t")
    assert fields == ["job.completed", "job_9", "completed", "evt_tab"], out


def test_listen_with_a_broken_store_names_the_file(cli, tmp_path):
    home = tmp_path / "sophon-home"
    home.mkdir()
    (home / "webhook-secrets.toml").write_text("[webhooks\n")
    res = cli("webhooks", "listen", "--port", "0", env={"SOPHON_WEBHOOK_SECRET": None})
    assert_one_line_error(res, 2, str(home / "webhook-secrets.toml"), "line 1")


class _EscapingServer(BaseHTTPRequestHandler):
    """Lists a webhook whose fields carry terminal escape sequences."""

    def do_GET(self):  # noqa: N802
        hook = {
            "id": "wh_\x1b]0;pwned\x07esc",
            "url": "https://example.com/\x1b[2Jhook",
            "active": True,
            "created_at": "2026-01-01T00:00:00Z",
            "name": "n\x1b[31mred",
        }
        data = json.dumps({"webhooks": [hook]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_list_strips_control_characters_from_server_fields(cli):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EscapingServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        res = cli("webhooks", "list", env={"SOPHON_BASE_URL": f"http://127.0.0.1:{httpd.server_address[1]}"})
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
    row = res.stdout.splitlines()[1].split("\t")
    assert row[0] == "wh_esc" and row[1] == "https://example.com/hook" and row[4] == "nred"


def test_verify_on_a_terminal_without_a_body_file_says_so_instead_of_waiting(tmp_path):
    """With no --body-file the body came from stdin: on a terminal the command sat there, silent,
    waiting for a raw body to be typed. It is a one-line error (exit 2) naming both ways to give it."""
    env = cli_env(None, tmp_path / "home", SOPHON_WEBHOOK_SECRET="whsec_test")
    args = ["webhooks", "verify", "--signature", "sha256=" + "a" * 64, "--timestamp", "2026-01-31T12:00:00Z"]
    code, text = run_in_pty(args, env, timeout=30)
    assert code == 2, text
    assert "standard input is a terminal" in text and "--body-file FILE" in text and "pipe" in text, text
    body = tmp_path / "body.json"
    body.write_bytes(b'{"event_id":"e1"}')
    sig = compute_signature(body.read_bytes(), "2026-01-31T12:00:00Z", "whsec_test")
    code, text = run_in_pty([*args[:3], sig, *args[4:], "--tolerance", str(10**10), "--body-file", body], env)
    assert code == 0 and "valid" in text, text


def test_an_empty_webhooks_list_says_so_like_job_list(make_server, tmp_path):
    """It printed a bare header (an empty table on a terminal) and nothing else."""
    from tests.helpers.tty import run_in_terminal

    srv = make_server()
    env = cli_env(srv, tmp_path / "home")
    piped = subprocess.run(
        [sys.executable, "-m", "sophon_cli", "webhooks", "list"], env=env, capture_output=True, text=True
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == "ID\tURL\tACTIVE\tCREATED\tNAME\n"  # the shape a script expects
    assert piped.stderr == "no webhooks; create one with `sophon webhooks create URL`\n"
    screen = run_in_terminal(["webhooks", "list"], env)
    assert screen.returncode == 0 and screen.lines == [
        "no webhooks; create one with `sophon webhooks create URL`"
    ]
