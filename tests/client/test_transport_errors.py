"""Network failures other than DNS, each against a real server on 127.0.0.1: a certificate that does
not verify and a server that does not speak TLS fail at once (retrying cannot cure them), a refused
loopback port is retried and then says to start the local server, a server that does not answer in
time names SOPHON_TIMEOUT. One line each, exit 8, the next step named."""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer

import pytest

from sophon_cli.client.errors import NextStep, TLSError, TransportError
from sophon_cli.client.http import SophonClient
from sophon_cli.client.retry import TLSFailure
from tests.client.hostile import HostileServer, QuietHandler, job_doc, send_json
from tests.helpers.env import cli_env

KEY = "transport-test-key-0123456789"


def sophon(args, env):
    return subprocess.run(
        [sys.executable, "-m", "sophon_cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert KEY not in res.stderr
    return lines[0]


def attempts(res) -> int:
    return len([ln for ln in res.stderr.splitlines() if ln.startswith("http: ")])


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made by the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_server(self_signed):
    """An https server on 127.0.0.1 with the self-signed certificate, answering an empty job list."""

    class Handler(QuietHandler):
        def do_GET(self):  # noqa: N802
            send_json(self, 200, {"data": [], "next_cursor": None})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*map(str, self_signed))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", self_signed[0]
    httpd.shutdown()
    httpd.server_close()


def test_a_certificate_that_does_not_verify_fails_at_once(tls_server, tmp_path):
    url, cert = tls_server
    sleeps: list[float] = []
    with SophonClient(url, KEY, sleep=sleeps.append) as c:
        with pytest.raises(TLSError) as info:
            c.jobs.list()
    err = info.value
    assert isinstance(err, TransportError) and err.failure is TLSFailure.CERTIFICATE
    assert sleeps == [] and err.attempts == 1 and err.next_step is NextStep.CHECK_CERTIFICATE
    assert "self-signed certificate" in str(err) and err.host == url.removeprefix("https://")

    env = cli_env(server=url, home=tmp_path, extra={"SOPHON_API_KEY": KEY})
    res = sophon(["-v", "job", "list"], env)
    assert res.returncode == 8 and attempts(res) == 1, res.stderr
    line = error_line(res)
    assert "did not verify (self-signed certificate)" in line and "SSL_CERT_FILE" in line
    # the step it names works: trusting that certificate reaches the server
    trusted = sophon(["job", "list"], {**env, "SSL_CERT_FILE": str(cert)})
    assert trusted.returncode == 0, trusted.stderr


def test_https_to_a_plain_http_server_says_it_does_not_speak_tls(tmp_path):
    with HostileServer({"*": lambda h: send_json(h, 200, {"data": [], "next_cursor": None})}) as srv:
        url = srv.url.replace("http://", "https://")
        sleeps: list[float] = []
        with SophonClient(url, KEY, sleep=sleeps.append) as c:
            with pytest.raises(TLSError) as info:
                c.jobs.list()
        assert info.value.failure is TLSFailure.HANDSHAKE and sleeps == []
        res = sophon(["-v", "job", "list"], cli_env(server=url, home=tmp_path, extra={"SOPHON_API_KEY": KEY}))
    assert res.returncode == 8 and attempts(res) == 1, res.stderr
    line = error_line(res)
    assert "TLS handshake with 127.0.0.1:" in line and "does not speak TLS" in line and "http://" in line


def test_a_refused_loopback_port_is_retried_then_says_to_start_the_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env(server=f"http://127.0.0.1:{port}", home=tmp_path, extra={"SOPHON_MAX_RETRIES": "1"})
    res = sophon(["-v", "job", "list"], env)
    assert res.returncode == 8 and attempts(res) == 2, res.stderr  # a transient failure: retried
    line = error_line(res)
    assert "connection refused: nothing is listening there" in line
    assert f"`sophon server --port {port}`" in line and "--local" in line and "SOPHON_BASE_URL" in line


def test_a_server_that_does_not_answer_in_time_names_the_timeout(tmp_path):
    release = threading.Event()
    with HostileServer({"*": lambda h: release.wait(60)}) as srv:
        env = cli_env(server=srv.url, home=tmp_path, extra={"SOPHON_TIMEOUT": "1", "SOPHON_MAX_RETRIES": "0"})
        try:
            res = sophon(["job", "get", "job_1"], env)
        finally:
            release.set()
    assert res.returncode == 8, res.stderr
    line = error_line(res)
    assert "did not answer within 1 s" in line and "SOPHON_TIMEOUT (seconds, now 1" in line


def _proxy_env(tmp_path, proxy: str) -> dict[str, str]:
    extra = {"SOPHON_MAX_RETRIES": "0", "HTTPS_PROXY": proxy}
    for name in ("https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        extra[name] = None  # only the proxy this test sets
    return cli_env(server="https://api.sophon.test", home=tmp_path, extra=extra)


def test_an_unreachable_proxy_is_named_not_the_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = sophon(["job", "list"], _proxy_env(tmp_path, f"http://user:pw@127.0.0.1:{port}"))
    assert res.returncode == 8, res.stderr
    line = error_line(res)
    assert (
        f"cannot reach the proxy http://127.0.0.1:{port} (set by HTTPS_PROXY) for https://api.sophon.test"
        in line
    )
    assert "check HTTPS_PROXY" in line and "NO_PROXY" in line and "pw" not in line


def test_a_proxy_whose_name_does_not_resolve_is_named_at_once(tmp_path):
    res = sophon(["-v", "job", "list"], _proxy_env(tmp_path, "http://no-such-proxy.invalid:3128"))
    assert res.returncode == 8 and attempts(res) == 1, res.stderr
    line = error_line(res)
    assert "cannot resolve the host name 'no-such-proxy.invalid' of the proxy" in line
    assert "api.sophon.test" not in line and "check HTTPS_PROXY" in line


def test_a_server_that_drops_every_connection_is_retried_then_says_so(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def drop_all():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed at the end of the test
                return
            conn.recv(65536)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
            conn.close()

    threading.Thread(target=drop_all, daemon=True).start()
    try:
        env = cli_env(server=f"http://127.0.0.1:{port}", home=tmp_path, extra={"SOPHON_MAX_RETRIES": "1"})
        res = sophon(["-v", "job", "list"], env)
    finally:
        listener.close()
    assert res.returncode == 8 and attempts(res) == 2, res.stderr
    line = error_line(res)
    assert f"the SOPHON server at http://127.0.0.1:{port} closed the connection without answering" in line
    assert "after 2 attempts" in line and "try again later" in line and "points at the SOPHON API" in line


def test_a_download_host_whose_certificate_does_not_verify_is_not_blamed_on_the_base_url(
    tls_server, tmp_path
):
    tls_url, _ = tls_server

    def output(h):
        h.redirect(302, f"{tls_url}/v1/downloads/tok")

    job = job_doc("job_1", size=10, sha256=None)
    routes = {"/v1/jobs/job_1": lambda h: send_json(h, 200, job), "/v1/jobs/job_1/output": output}
    with HostileServer(routes) as api:
        env = cli_env(server=api.url, home=tmp_path, extra={"SOPHON_MAX_RETRIES": "1"})
        res = sophon(["download", "job_1", "-o", tmp_path / "out"], env)
    assert res.returncode == 8, res.stderr
    line = error_line(res)
    assert f"the TLS certificate of {tls_url.removeprefix('https://')} did not verify" in line
    assert "the download host, not the base URL's" in line and "SSL_CERT_FILE" in line
    assert "check the host name in the base URL" not in line


def test_an_unreachable_remote_server_names_where_the_base_url_came_from(monkeypatch, tmp_path):
    from sophon_cli.cli import origins
    from sophon_cli.cli.hints import hint_for
    from sophon_cli.settings import load_settings

    monkeypatch.setenv("SOPHON_HOME", str(tmp_path))
    monkeypatch.setenv("SOPHON_BASE_URL", "https://api.sophon.test")
    monkeypatch.setattr(origins, "_SETTINGS", None)  # restored after the test
    origins.note_settings(load_settings(), flags={})
    err = TransportError("cannot reach", url="https://api.sophon.test", next_step=NextStep.CHECK_CONNECTION)
    assert hint_for(err) == (
        "check your network and the base URL (set by SOPHON_BASE_URL), or use --local for the local server"
    )
