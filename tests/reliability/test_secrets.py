"""Secrets: the API key and download tokens appear in no output or log at any verbosity, and the
signed-URL request carries no Authorization header.

Every command's stdout and stderr, the server's request log, and every file the CLI wrote under
SOPHON_HOME are searched for the key, each download token, and each token's signature half.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, _make_clip

from .conftest import run_cli
from .stress import count

ALL_VERBOSITIES = [[], ["-q"], ["-v"], ["--json"], ["-v", "--json"]]
VERBOSITIES = count([["-q"], ["-v"]], ALL_VERBOSITIES)
DEBUG = {"SOPHON_DEBUG": "1"}


def _tokens(proxy) -> set[str]:
    text = bytes(proxy.received).decode("latin-1")
    found = set(re.findall(r"(?im)^location:\s*\S*/v1/downloads/([A-Za-z0-9_\-\.]+)", text))
    return found


def _requests(proxy) -> list[str]:
    """The client->server request heads seen by the proxy."""
    text = bytes(proxy.sent).decode("latin-1")
    return [m for m in re.split(r"\r\n\r\n", text) if re.match(r"^(GET|POST|PUT|DELETE|HEAD) ", m.lstrip())]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.stress
def test_key_and_download_tokens_never_printed_or_logged(make_server, slow_proxy, tmp_path):
    srv = make_server()
    proxy = slow_proxy(srv, rate=50_000_000, record=True)
    clip = _make_clip(tmp_path / "secret-src.mp4", seconds=0.4, size="64x64")
    home = tmp_path / "home"
    captured: list[str] = []

    def run(*args, env=None, url=None, ok=True):
        p = run_cli(*args, server=url or proxy.url, home=home, env=env, cwd=tmp_path)
        captured.extend([p.stdout, p.stderr])
        if ok:
            assert p.returncode == 0, (args, p.stderr)
        return p

    created = run("--json", "job", "create", clip, "--profile", "sophon-espresso", "--wait")
    job_id = json.loads(created.stdout.strip().splitlines()[-1])["id"]
    for i, flags in enumerate(VERBOSITIES):
        out_dir = tmp_path / f"out{i}"
        run(*flags, "upload", clip)
        run(*flags, "job", "get", job_id)
        run(*flags, "download", job_id, "-o", f"{out_dir}/")
        run(*flags, "download", job_id, "-o", f"{out_dir}/", "--force", env=DEBUG)
        # failures, with tracebacks (a file that is not this output is in the way)
        for written in out_dir.iterdir():
            written.write_bytes(b"another file")
        assert run(*flags, "download", job_id, "-o", f"{out_dir}/", env=DEBUG, ok=False).returncode == 2
        wrong = dict(DEBUG, SOPHON_API_KEY=TEST_KEY + "-wrong")
        assert run(*flags, "job", "get", job_id, env=wrong, ok=False).returncode == 4
    run("-v", "--json", "job", "list")
    run("-v", "--json", "job", "wait", job_id)
    run("-v", "--json", "health")
    # the whole pipeline (hash, upload, job, poll, signed download) at the loudest settings
    enc_dir = tmp_path / "enc-in"
    enc_dir.mkdir()
    _make_clip(enc_dir / "e.mp4", seconds=0.4, size="64x64")
    run(
        "-v",
        "--json",
        "encode",
        f"{enc_dir}/*.mp4",
        "-o",
        tmp_path / "enc-out",
        "--profile",
        "sophon-espresso",
        env=DEBUG,
    )
    run(
        "-v",
        "encode",
        f"{enc_dir}/*.mp4",
        "-o",
        tmp_path / "enc-out2",
        "--force",
        "--profile",
        "sophon-espresso",
    )
    assert run("-v", "job", "get", "job_nope", env=DEBUG, ok=False).returncode == 3
    if count(False, True):  # server down waits out ~9 s of connection retries (reduced: the bad-input table)
        down = f"http://127.0.0.1:{_closed_port()}"
        assert run("-v", "job", "get", job_id, env=DEBUG, url=down, ok=False).returncode == 8
    tokens = _tokens(proxy)
    assert len(tokens) >= 2 * len(VERBOSITIES)  # every download got a fresh signed URL
    needles = {TEST_KEY} | tokens | {t.split(".", 1)[1] for t in tokens}
    haystacks = {"cli output": "\n".join(captured)}
    haystacks["server request log"] = Path(srv.request_log).read_text()
    for f in home.rglob("*"):
        if f.is_file():
            haystacks[str(f)] = f.read_text(errors="replace")
    for name, text in haystacks.items():
        for needle in needles:
            assert needle not in text, f"a secret ({len(needle)} chars) leaked into {name}"
    assert "Traceback" in haystacks["cli output"]  # SOPHON_DEBUG really printed tracebacks
    # the signed URL was requested without credentials; every API request carried them
    heads = _requests(proxy)
    downloads = [h for h in heads if "/v1/downloads/" in h.split("\r\n", 1)[0]]
    api_calls = [h for h in heads if h.split(" ", 2)[1].startswith("/v1/") and h not in downloads]
    assert downloads and api_calls
    for h in downloads:
        assert not re.search(r"(?im)^authorization:", h), h.split("\r\n", 1)[0]
        assert TEST_KEY not in h
    assert all(re.search(r"(?im)^authorization: bearer ", h) for h in api_calls if "wrong" not in h)


def test_client_objects_and_errors_never_show_the_key(make_server):
    from sophon_cli.client.errors import AuthError
    from sophon_cli.client.http import SophonClient

    srv = make_server()
    bad = "sk_wrong_" + "9" * 24
    with SophonClient(srv.url, bad, max_retries=0) as c:
        assert bad not in repr(c)
        with pytest.raises(AuthError) as info:
            c.jobs.get("job_x")
    err = info.value
    for text in (str(err), repr(err), err.hint or "", str(err.__dict__)):
        assert bad not in text
    assert TEST_KEY not in repr(srv)


def test_sophon_server_process_logs_no_key_or_tokens(slow_proxy, tmp_path):
    """`sophon server` (the real process, with --faults) prints one line per request and a JSONL
    request log: neither holds the key nor a download token."""
    import signal
    import time

    from .conftest import popen_cli

    key = "sk_server_" + "7" * 24
    data = tmp_path / "srvdata"
    log = tmp_path / "srv.jsonl"
    server = popen_cli(
        "-v",
        "server",
        "--port",
        "0",
        "--data-dir",
        data,
        "--api-key",
        key,
        "--request-log",
        log,
        "--faults",
        "GET /v1/jobs/*=503:0.2",
        "--faults-seed",
        "3",
        home=tmp_path / "srvhome",
        env=DEBUG,
    )
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = server.stderr.readline()
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "the server did not announce its URL"

        class _Srv:
            port = int(url.rsplit(":", 1)[1])

        proxy = slow_proxy(_Srv, rate=50_000_000, record=True)
        clip = _make_clip(tmp_path / "s.mp4", seconds=0.4, size="64x64")
        env = dict(DEBUG, SOPHON_API_KEY=key)
        created = run_cli(
            "--json",
            "job",
            "create",
            clip,
            "--profile",
            "sophon-espresso",
            "--wait",
            server=proxy.url,
            env=env,
            home=tmp_path / "h",
        )
        assert created.returncode == 0, created.stderr
        job_id = json.loads(created.stdout.strip().splitlines()[-1])["id"]
        got = run_cli(
            "-v", "download", job_id, "-o", f"{tmp_path}/o/", server=proxy.url, env=env, home=tmp_path / "h"
        )
        assert got.returncode == 0, got.stderr
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    tokens = _tokens(proxy)
    assert tokens
    text = out + err + log.read_text() + created.stdout + created.stderr + got.stdout + got.stderr
    assert "/v1/downloads/" in err  # the request lines are there, with the token hidden
    for needle in {key} | tokens | {t.split(".", 1)[1] for t in tokens}:
        assert needle not in text


def test_stored_key_is_0600_and_never_shown(tmp_path):
    import stat

    key = "sk_live_" + "Q" * 28
    home = tmp_path / "cfg"
    stored = run_cli("config", "set-key", home=home, input=key + "\n")
    assert stored.returncode == 0, stored.stderr
    files = [p for p in home.rglob("*") if p.is_file()]
    holding = [p for p in files if key in p.read_text(errors="replace")]
    assert len(holding) == 1 and stat.S_IMODE(holding[0].stat().st_mode) == 0o600
    shown = [stored.stdout, stored.stderr]
    for flags in ([], ["-v"], ["--json"]):
        p = run_cli(*flags, "config", "show", home=home, env=DEBUG)
        assert p.returncode == 0, p.stderr
        shown += [p.stdout, p.stderr]
    text = "\n".join(shown)
    assert key not in text and key[8:] not in text
    assert key[-4:] in text  # the masked form still lets the user tell keys apart
