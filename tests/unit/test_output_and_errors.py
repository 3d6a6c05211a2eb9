"""The Output object and the exception -> exit code mapping (pure, no server)."""

from __future__ import annotations

import io
import json

import pytest

from sophon_cli.cli.errors import classify, one_line
from sophon_cli.cli.main import hoist_global_flags
from sophon_cli.cli.output import Output
from sophon_cli.client import errors as e
from sophon_cli.exitcodes import ExitCode


def make(**kw):
    out, err = io.StringIO(), io.StringIO()
    return Output(stdout=out, stderr=err, **kw), out, err


def test_piped_table_is_plain_tab_separated_without_colour():
    o, out, err = make(is_tty=False)
    o.table(["id", "status"], [["job_1", "queued"], ["job_2", "completed"]])
    assert out.getvalue() == "ID\tSTATUS\njob_1\tqueued\njob_2\tcompleted\n"
    assert "\x1b[" not in out.getvalue() and err.getvalue() == ""


def test_tty_table_renders_with_rich_and_no_color_is_honoured(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    o, out, _ = make(is_tty=True)
    o.table(["id"], [["job_1"]])
    assert "job_1" in out.getvalue()
    assert "\x1b[" not in out.getvalue()


def test_json_emit_is_one_line_per_object():
    o, out, _ = make(json_mode=True)
    o.emit({"a": 1})
    o.emit([{"b": 2}])
    lines = out.getvalue().splitlines()
    assert [json.loads(x) for x in lines] == [{"a": 1}, [{"b": 2}]]


def test_notices_go_to_stderr_and_quiet_silences_them():
    o, out, err = make()
    o.notice("hello")
    o.print("data")
    assert err.getvalue() == "hello\n" and out.getvalue() == "data\n"
    o, out, err = make(quiet=True)
    o.notice("hello")
    o.warn("careful")
    assert err.getvalue() == "warning: careful\n"


def test_progress_disabled_in_json_mode_and_plain_when_piped():
    o, _, err = make(json_mode=True)
    with o.progress() as p:
        t = p.add("x", 10)
        p.advance(t, 10)
        p.done(t)
    assert err.getvalue() == ""
    o, _, err = make(is_tty=False)
    with o.progress() as p:
        t = p.add("file.mp4", 2048)
        p.update(t, completed=1024)
        p.done(t)
    assert "file.mp4" in err.getvalue() and "100.0%" in err.getvalue()


@pytest.mark.parametrize(
    "exc,code",
    [
        (e.InputError("bad"), ExitCode.USAGE),
        (e.ConfigError("no key"), ExitCode.AUTH),
        (e.AuthError(401, "unauthorized", "bad key"), ExitCode.AUTH),
        (e.AuthError(403, "forbidden", "scope"), ExitCode.AUTH),
        (e.NotFoundError(404, "not_found", "nope"), ExitCode.NOT_FOUND),
        (e.ConflictError(409, "conflict", "dup"), ExitCode.ERROR),
        (e.ServerError(500, "internal_error", "boom", retryable=True), ExitCode.ERROR),
        (e.TransportError("down", url="http://x"), ExitCode.UNREACHABLE),
        (e.JobFailedError("failed"), ExitCode.JOB_FAILED),
        (e.WaitTimeoutError("slow"), ExitCode.TIMEOUT),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
        (RuntimeError("surprise"), ExitCode.ERROR),
    ],
)
def test_exit_code_mapping(exc, code):
    got, msg = classify(exc)
    assert got == code
    assert "\n" not in msg


def test_message_carries_request_id_and_next_step():
    _, msg = classify(e.NotFoundError(404, "not_found", "job not found", request_id="req_123"))
    assert "req_123" in msg and "check the id" in msg
    _, msg = classify(e.AuthError(401, "unauthorized", "invalid key"))
    assert "sophon config set-key" in msg
    _, msg = classify(RuntimeError("x"))
    assert "SOPHON_DEBUG=1" in msg


def test_one_line_folds_newlines():
    assert one_line("a\nb\n  c") == "a b c"


def test_hoisting_global_flags():
    assert hoist_global_flags(["job", "list", "--json"]) == ["--json", "job", "list"]
    assert hoist_global_flags(["encode", "a.mp4", "-q", "--local"]) == ["-q", "--local", "encode", "a.mp4"]
    assert hoist_global_flags(["upload", "--", "--json"]) == ["upload", "--", "--json"]


def test_command_name_skips_global_options_and_their_values():
    from sophon_cli.cli.main import command_name

    assert command_name(["--profile", "job", "encode", "x"]) == "encode"
    assert command_name(["--base-url", "http://x", "--json", "job", "list"]) == "job"
    assert command_name(["--help"]) is None
    assert command_name(["frobnicate"]) is None
    assert command_name([]) is None


def test_root_help_from_the_registry_equals_the_full_tree_help():
    import contextlib
    import io

    import typer

    from sophon_cli.cli.main import build_app

    def help_of(app) -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            typer.main.get_command(app).main(["--help"], prog_name="sophon", standalone_mode=False)
        return buf.getvalue()

    assert help_of(build_app("", placeholders=True)) == help_of(build_app())
