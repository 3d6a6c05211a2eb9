"""The README's server section stays true to `sophon server` (its options, its subcommands) and
states the choices the contract leaves open (issue 16 items 7 and 8)."""

from __future__ import annotations

import re
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[2]
SECTION = (ROOT / "README.md").read_text().split("### The local server", 1)[1].split("\n## ", 1)[0]


def _server_group():
    from sophon_cli.cli.main import build_app

    return typer.main.get_command(build_app("server")).commands["server"]


def test_synopsis_lists_exactly_the_server_options_and_subcommands():
    group = _server_group()
    synopsis = re.search(r"```sh\n(sophon server .+?)\n```", SECTION, re.S).group(1)
    documented = set(re.findall(r"\[(--[a-z-]+)", synopsis))
    options = {o for p in group.params for o in p.opts if o.startswith("--") and o != "--help"}
    # --idle-timeout, --request-log and --no-request-log-lines are for the background server and tests
    assert documented == options - {"--idle-timeout", "--request-log", "--no-request-log-lines"}
    assert (
        set(re.findall(r"^sophon server (\w+)", synopsis, re.M)) == set(group.commands) == {"status", "stop"}
    )


def test_idempotency_scope_and_non_2xx_replay_are_stated():
    text = " ".join(SECTION.split())
    assert "**Idempotency** is scoped per API key" in text
    assert "another route or another body is a 409 `conflict`" in text
    assert "Only 2xx answers are stored and replayed" in text
    from sophon_cli.server import idempotency

    doc = " ".join((idempotency.__doc__ or "").split())
    assert "scoped per API key" in doc and "Only 2xx answers are stored and replayed" in doc


def test_upload_ttl_and_retention_are_stated_with_their_defaults():
    from sophon_cli.server.config import RETENTION, UPLOAD_TTL

    text = " ".join(SECTION.split())
    assert "**Upload TTL and retention are enforced.**" in text
    assert UPLOAD_TTL == 24 * 3600 and "(`--upload-ttl`, default 24 h;" in text
    assert RETENTION == 7 * 24 * 3600 and "(`--retention`, default 7 days)" in text
    assert "422 `source_invalid`" in text and "409 `output_not_ready`" in text
    assert "`output.state` reads `expired`" in text


def test_the_request_body_idle_bound_is_stated_with_its_setting_and_default():
    from sophon_cli.server.config import BODY_IDLE, BODY_IDLE_ENV

    text = " ".join(SECTION.split())
    assert "**A request body is bounded in time.**" in text
    assert f"`{BODY_IDLE_ENV}` (default {BODY_IDLE:g} s)" in text
    assert "400 `validation_error`" in text and "its connection is closed" in text


def test_the_request_header_bound_is_stated_with_its_setting_and_default():
    from sophon_cli.server.config import HEADER_TIMEOUT, HEADER_TIMEOUT_ENV

    text = " ".join(SECTION.split())
    assert "**Request headers are bounded in time.**" in text
    assert f"`{HEADER_TIMEOUT_ENV}` (default {HEADER_TIMEOUT:g} s)" in text
    assert "`408 Request Timeout`" in text
