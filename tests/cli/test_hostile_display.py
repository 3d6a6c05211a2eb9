"""Server-supplied text in the live displays, from a small real HTTP server on 127.0.0.1 (the local
server never sends such text): a job's progress phase that looks like rich markup or holds a
terminal sequence is drawn as plain text on a pseudo-terminal, never parsed or passed through."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cli.terminal import run_in_terminal
from tests.client.hostile import HostileServer, job_doc, send_json
from tests.helpers.env import cli_env

PHASE = "enc[/x]oding\x1b]0;pwned\x07"


def test_a_jobs_phase_in_the_wait_bar_is_text_never_markup_or_escape_sequences(tmp_path):
    """Before: `[/x]` in `progress.phase` ended `job wait` in a thread traceback and 'unexpected
    MarkupError' (exit 1); the OSC title reached the terminal."""
    polls = [0]

    def get_job(h):
        polls[0] += 1
        doc = job_doc("job_1", size=10, sha256=None, status="encoding" if polls[0] < 3 else "completed")
        doc["progress"] = {"stage": "encoding", "phase": PHASE, "percent": 50.0, "fps": 5, "eta_seconds": 3}
        send_json(h, 200, doc)

    with HostileServer({"/v1/jobs/job_1": get_job}) as srv:
        screen = run_in_terminal(["job", "wait", "job_1"], cli_env(srv.url, tmp_path / "home"), timeout=60)
    assert screen.returncode == 0, screen.text
    assert "Traceback" not in screen.raw and "MarkupError" not in screen.raw, screen.text
    assert "pwned" not in screen.raw  # the OSC sequence is dropped whole
    assert any("job_1 enc[/x]oding" in line for line in screen.lines), screen.text
    assert polls[0] >= 3


def test_a_jobs_fields_in_the_watch_view_never_carry_escape_sequences(tmp_path):
    """`job get --watch` draws the job's fields in a live view: a server's status_reason with an OSC
    title and a screen clear is shown without them."""
    polls = [0]

    def get_job(h):
        polls[0] += 1
        doc = job_doc("job_1", size=10, sha256=None, status="encoding" if polls[0] < 2 else "failed")
        doc["status_reason"] = "bad\x1b]0;pwned\x07 source\x1b[2J here"
        send_json(h, 200, doc)

    with HostileServer({"/v1/jobs/job_1": get_job}) as srv:
        screen = run_in_terminal(
            ["job", "get", "job_1", "--watch", "--interval", "0.2"],
            cli_env(srv.url, tmp_path / "home"),
            timeout=60,
        )
    assert "pwned" not in screen.raw and "\x1b[2J" not in screen.raw, screen.raw[-500:]
    assert any("bad source here" in line for line in screen.lines), screen.text


def test_an_infinite_or_absurd_eta_from_the_server_is_no_clock_and_no_traceback(tmp_path):
    """`"eta_seconds": 1e400` parses as infinity: the bar's clock once raised OverflowError in rich's
    refresh thread (a traceback on the terminal)."""
    polls = [0]

    def get_job(h):
        polls[0] += 1
        doc = job_doc("job_1", size=10, sha256=None, status="encoding" if polls[0] < 3 else "completed")
        doc["progress"] = {"phase": "encoding", "percent": 50.0, "eta_seconds": 1.0}
        body = json.dumps(doc).replace('"eta_seconds": 1.0', '"eta_seconds": 1e400').encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    with HostileServer({"/v1/jobs/job_1": get_job}) as srv:
        screen = run_in_terminal(["job", "wait", "job_1"], cli_env(srv.url, tmp_path / "home"), timeout=60)
    assert screen.returncode == 0, screen.text
    assert "Traceback" not in screen.raw and "OverflowError" not in screen.raw, screen.text
    assert polls[0] >= 3


def test_server_text_printed_by_jq_or_json_on_a_terminal_carries_no_control_characters(tmp_path):
    """`--jq` prints strings raw (as gh does), and JSON keeps C1 controls and bidi overrides as
    they are: on a terminal a server's text went through with its OSC title, its 8-bit CSI and its
    bidi override. Piped, the data stays exactly as the server sent it."""
    reason = "bad\x1b]0;pwned\x07 source\x9b2J\u202e here"

    def get_job(h):
        doc = job_doc("job_1", size=10, sha256=None, status="failed")
        doc["status_reason"] = reason
        send_json(h, 200, doc)

    with HostileServer({"/v1/jobs/job_1": get_job}) as srv:
        env = cli_env(srv.url, tmp_path / "home")
        raw = run_in_terminal(["job", "get", "job_1", "--jq", ".status_reason"], env, timeout=60)
        whole = run_in_terminal(["job", "get", "job_1", "--json", "status_reason"], env, timeout=60)
        piped = subprocess.run(
            [sys.executable, "-m", "sophon_cli", "job", "get", "job_1", "--jq", ".status_reason"],
            env=env,
            capture_output=True,
            timeout=60,
        )
    assert raw.returncode == 0, raw.text
    assert "pwned" not in raw.raw and "\x9b" not in raw.raw and "\u202e" not in raw.raw, repr(raw.raw)
    assert raw.lines == ["bad source here"], raw.text
    assert whole.returncode == 0, whole.text
    assert "\x9b" not in whole.raw and "\u202e" not in whole.raw, repr(whole.raw)
    assert json.loads(whole.raw.strip())["status_reason"] == reason  # escaped, so still the same data
    assert piped.returncode == 0 and piped.stdout.decode() == reason + "\n"


def test_job_list_source_is_the_uploads_file_name_when_the_job_carries_no_name(tmp_path):
    """The spec's `source.name` is nullable: for a job made with `job create --upload ID` from an
    upload made elsewhere, SOURCE is the upload's `file_name` (GET /v1/uploads/ID), not empty."""
    job = {**job_doc("job_1", size=10, sha256=None, status="queued"), "source": {"sha256": "ab"}}

    def create(h):
        send_json(h, 201, job)

    def upload(h):
        doc = {"id": "upl_1", "status": "completed", "file_name": "holiday.mov", "total_chunks": 1}
        send_json(h, 200, {**doc, "received_chunks": [0], "expires_at": "2099-01-01T00:00:00Z"})

    def listing(h):
        send_json(h, 200, {"jobs": [job], "has_more": False, "next_cursor": None})

    routes = {
        "/v1/uploads/upl_1": upload,
        "/v1/jobs": lambda h: (create if h.command == "POST" else listing)(h),
    }
    with HostileServer(routes) as srv:
        env = cli_env(srv.url, tmp_path / "home")
        run = [sys.executable, "-m", "sophon_cli"]
        made = subprocess.run(
            [*run, "job", "create", "--upload", "upl_1"], env=env, capture_output=True, text=True
        )
        assert made.returncode == 0, made.stderr
        listed = subprocess.run([*run, "job", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split("\t")[:3] == ["job_1", "queued", "holiday.mov"], listed.stdout
