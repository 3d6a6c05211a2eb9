"""The line after a Ctrl-C on a terminal: the terminal echoes "^C" where the cursor is, and our
"interrupted; ..." line starts on a fresh line after it (it read "^Cinterrupted; ..."), while a live
display that redrew over the "^C" leaves no blank line. Typed into a real pseudo-terminal."""

from __future__ import annotations

import pytest

from tests.helpers.env import cli_env
from tests.helpers.tty import run_in_terminal


@pytest.fixture
def held_job(make_server, clip):
    """A server with one job held before encoding (so waiting on it lasts until the Ctrl-C)."""
    from sophon_cli.client.http import SophonClient

    srv = make_server()
    with SophonClient(srv.url, srv.api_keys[0]) as api:
        up = api.uploads.upload_file(clip)
        job = api.jobs.create(up.upload_id, metadata={"sophon_local_delay": 600})
    return srv, up, job


def _assert_own_line(screen, start: str) -> int:
    """The line beginning with ``start`` is there, and no line has the "^C" glued to a message."""
    assert not [ln for ln in screen.lines if ln.startswith("^C") and ln.strip() != "^C"], screen.text
    found = [i for i, ln in enumerate(screen.lines) if ln.startswith(start)]
    assert found, screen.text
    return found[-1]


def test_an_interrupted_command_without_a_live_display_says_so_on_a_fresh_line(held_job, tmp_path):
    srv, up, job = held_job
    args = ["job", "create", "--upload", up.upload_id, "--wait", "--no-progress"]
    args += ["--metadata", "sophon_local_delay=600"]
    screen = run_in_terminal(args, cli_env(srv, tmp_path / "home"), interrupt_after="waiting for it")
    assert screen.returncode == 130, screen.text
    i = _assert_own_line(screen, "interrupted; job job_")
    assert screen.lines[i - 1] == "^C", screen.text  # the echo stays, on its own line


def test_after_progress_bars_the_line_follows_them_without_a_blank_line(held_job, tmp_path):
    srv, _, job = held_job
    screen = run_in_terminal(["job", "wait", job.id], cli_env(srv, tmp_path / "home"), interrupt_after="%")
    assert screen.returncode == 130, screen.text
    i = _assert_own_line(screen, "interrupted; the job goes on")
    assert job.id in screen.lines[i - 1], screen.text  # the bar's last frame, then the line
    assert "^C" not in screen.text  # drawn over by the bar's last frame


def test_webhooks_listen_stops_on_a_fresh_line(tmp_path):
    args = ["webhooks", "listen", "--port", "0", "--secret", "s"]
    screen = run_in_terminal(args, cli_env(None, tmp_path / "home"), interrupt_after="Ctrl-C to stop")
    assert screen.returncode == 0, screen.text
    i = _assert_own_line(screen, "stopped")
    assert screen.lines[i] == "stopped" and screen.lines[i - 1] == "^C", screen.text


def test_ctrl_c_at_a_question_says_nothing_was_done_on_a_fresh_line(tmp_path):
    """It said "^C" then "interrupted; run the same command again to resume" after "… [y/N]":
    there is nothing to resume, nothing was removed."""
    home = tmp_path / "home"
    screen = run_in_terminal(["cache", "clear"], cli_env(None, home), interrupt_after="[y/N]")
    assert screen.returncode == 130, screen.text
    assert screen.lines[-2].endswith("[y/N] ^C") and screen.lines[-1] == "interrupted; nothing was done", (
        screen.text
    )
