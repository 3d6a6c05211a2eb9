"""Output conventions of the resource commands (issue 13), against the real local server:
piped shapes (tabs, RFC 3339), --json FIELDS / --jq, job list filters and SOURCE, --watch,
closed pipes and streams, prompts, flag spellings, help screens, the man page and job-id completion.
Terminal paths run on a pseudo-terminal and assert on the emulated screen (tests/cli/terminal.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.cli.helpers import assert_one_line_error, cli_env
from tests.cli.terminal import run_in_terminal

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"
ROOT = Path(__file__).resolve().parents[2]


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fresh(make_server_module, clip):
    """A server of its own with three jobs: two completed (metadata customer=acme / other), one
    failed; newest first: failed, other, acme."""
    from sophon_cli.client.http import SophonClient

    srv = make_server_module()
    with SophonClient(srv.url, srv.api_keys[0]) as api:
        up = api.uploads.upload_file(clip)
        acme = api.jobs.create(up.upload_id, profile="sophon-espresso", metadata={"customer": "acme", "n": 1})
        other = api.jobs.create(up.upload_id, profile="sophon-espresso", metadata={"customer": "other"})
        failed = api.jobs.create(up.upload_id, metadata={"sophon_local_fail": True})
        finals = api.jobs.wait_many([acme.id, other.id, failed.id], timeout=120)
    assert [j.status for j in finals] == ["completed", "completed", "failed"]
    srv.job_ids = [failed.id, other.id, acme.id]  # newest first
    srv.upload = up
    return srv


@pytest.fixture(scope="module")
def make_server_module(tmp_path_factory):
    from sophon_cli.server.runner import LocalServer
    from tests.conftest import TEST_KEY

    started = []

    def factory():
        base = tmp_path_factory.mktemp("own-server")
        srv = LocalServer(base / "data", api_keys=[TEST_KEY], request_log=base / "requests.jsonl")
        srv.start()
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture(scope="module")
def scratch(make_server_module, clip):
    """Another server, for the tests that add jobs (``fresh`` keeps its three)."""
    from sophon_cli.client.http import SophonClient

    srv = make_server_module()
    with SophonClient(srv.url, srv.api_keys[0]) as api:
        srv.upload = api.uploads.upload_file(clip)
    return srv


def _runner(cli, srv, home):
    def go(*args, **kw):
        env = {"SOPHON_BASE_URL": srv.url, **kw.pop("env", {})}
        return cli(*args, env=env, home=home, **kw)

    return go


def _terminal(srv, home):
    def go(*args, **kw):
        env = cli_env(srv, home, **kw.pop("env", {}))
        return run_in_terminal(list(args), env, **kw)

    return go


@pytest.fixture
def run(cli, fresh, tmp_path):
    """The CLI against ``fresh``, piped."""
    return _runner(cli, fresh, tmp_path / "home")


@pytest.fixture
def tty(fresh, tmp_path):
    """The CLI against ``fresh``, on a terminal."""
    return _terminal(fresh, tmp_path / "home")


@pytest.fixture
def run2(cli, scratch, tmp_path):
    return _runner(cli, scratch, tmp_path / "home")


@pytest.fixture
def tty2(scratch, tmp_path):
    return _terminal(scratch, tmp_path / "home")


# ---- job list: SOURCE, filters, timestamps, grammar ------------------------------------------------


def test_job_list_piped_has_source_rfc3339_and_the_filters(run, fresh):
    res = run("job", "list")
    assert res.returncode == 0, res.stderr
    rows = [r.split("\t") for r in res.stdout.splitlines()]
    assert rows[0] == ["ID", "STATUS", "SOURCE", "PROFILE", "CREATED", "PROGRESS"]
    assert [r[0] for r in rows[1:]] == fresh.job_ids
    for row in rows[1:]:
        created = datetime.strptime(row[4], RFC3339).replace(tzinfo=timezone.utc)
        assert abs(datetime.now(timezone.utc) - created) < timedelta(minutes=30)
        assert row[2]  # the upload's file name (these jobs are not in the encode cache)

    acme = run("job", "list", "--metadata", "customer=acme")
    assert [r.split("\t")[0] for r in acme.stdout.splitlines()[1:]] == [fresh.job_ids[2]]
    both = run("job", "list", "--metadata", "customer=acme", "--metadata", "n=1")
    assert [r.split("\t")[0] for r in both.stdout.splitlines()[1:]] == [fresh.job_ids[2]]
    none = run("job", "list", "--metadata", "customer=nobody")
    assert none.returncode == 0 and none.stdout.splitlines() == [
        "ID\tSTATUS\tSOURCE\tPROFILE\tCREATED\tPROGRESS"
    ]
    assert none.stderr.strip() == "no jobs match"

    recent = run("job", "list", "--since", "1h")
    assert len(recent.stdout.splitlines()) == 4
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime(RFC3339)
    assert run("job", "list", "--since", future).stdout.splitlines()[1:] == []
    bad = run("job", "list", "--since", "yesterday")
    assert_one_line_error(bad, 2, "--since", "2h")

    one = run("job", "list", "--limit", "1")
    assert one.stderr.strip() == "showing the newest job; use --limit N or --all for more"
    two = run("job", "list", "--limit", "2", "--page-size", "1")
    assert "newest 2 jobs" in two.stderr


def test_job_list_status_is_checked_locally_against_the_specs_statuses(cli, spec, tmp_path):
    """An unknown --status is a usage error (exit 2) listing the valid ones, before any request (no
    server answers here); any case is accepted. The values are the spec's JobStatus enum."""
    from sophon_cli.cli.job import JobStatus

    assert [s.value for s in JobStatus] == spec["components"]["schemas"]["JobStatus"]["enum"]
    env = {"SOPHON_BASE_URL": "http://127.0.0.1:9", "SOPHON_MAX_RETRIES": "0"}
    bad = cli("job", "list", "--status", "done", env=env)
    line = assert_one_line_error(bad, 2, "--status", "'done' is not one of", "'failed'", "'canceled'")
    assert "Value error" not in line


def test_job_list_status_filters_in_any_case(run, fresh):
    upper = run("job", "list", "--status", "FAILED")
    assert upper.returncode == 0, upper.stderr
    assert [r.split("\t")[0] for r in upper.stdout.splitlines()[1:]] == [fresh.job_ids[0]]


def test_job_list_source_comes_from_the_encode_cache(run2, clip, tmp_path):
    """A job made by `sophon encode` shows the local file it came from."""
    import shutil

    src = tmp_path / "holiday.mp4"
    shutil.copyfile(clip, src)
    enc = run2("encode", src, "-o", tmp_path / "out", "--profile", "sophon-espresso")
    assert enc.returncode == 0, enc.stderr
    rows = [r.split("\t") for r in run2("job", "list", "--limit", "1").stdout.splitlines()]
    assert rows[1][2] == str(src)


def test_job_list_source_names_the_file_given_to_upload_or_job_create(run2, clip, tmp_path):
    """An upload's own name is derived from its content (identical bytes under two names are one
    upload), so SOURCE comes from what `upload` and `job create FILE` noted locally, not from it."""
    import shutil

    first, second = tmp_path / "wedding.mp4", tmp_path / "birthday.mp4"
    shutil.copyfile(clip, first)
    up = run2("upload", first)
    assert up.returncode == 0, up.stderr
    upload_id = up.stdout.split("\t")[0]
    by_id = run2("job", "create", "--upload", upload_id, "--profile", "sophon-espresso")
    assert by_id.returncode == 0, by_id.stderr
    shutil.copyfile(clip, second)  # the same bytes, another name: the same upload
    by_file = run2("job", "create", second, "--profile", "sophon-espresso")
    assert by_file.returncode == 0, by_file.stderr
    rows = [r.split("\t") for r in run2("job", "list", "--limit", "2").stdout.splitlines()]
    assert [row[2] for row in rows[1:]] == [str(second), str(first)]


def test_job_list_source_of_an_upload_made_elsewhere_is_its_name_or_id_never_a_hash(run2, scratch, clip):
    """Jobs with nothing noted locally (the SDK, another machine, a lost state dir): SOURCE is the
    upload's file name when the uploader gave a real one, else the upload id once `job create
    --upload` has seen it, else `-`; never the content-derived name (`b78aade545f3f7d5.mp4`)."""
    from sophon_cli.client.http import SophonClient

    with SophonClient(scratch.url, scratch.api_keys[0]) as api:
        named = api.uploads.upload_file(clip, file_name="from-the-sdk.mp4")
        by_name = api.jobs.create(named.upload_id, profile="sophon-espresso")
        hashed = api.jobs.create(scratch.upload.upload_id, profile="sophon-espresso")
        content_name = hashed.source.name
    assert re.fullmatch(r"[0-9a-f]{16}\.mp4", content_name), content_name
    made = run2("job", "create", "--upload", scratch.upload.upload_id, "--profile", "sophon-espresso")
    assert made.returncode == 0, made.stderr
    by_id = made.stdout.split("\t")[0]

    listed = run2("job", "list", "--limit", "20")
    assert listed.returncode == 0, listed.stderr
    source = {r.split("\t")[0]: r.split("\t")[2] for r in listed.stdout.splitlines()[1:]}
    assert source[by_name.id] == "from-the-sdk.mp4"
    assert source[by_id] == scratch.upload.upload_id
    assert source[hashed.id] == "-"
    assert content_name not in listed.stdout

    got = run2("job", "get", hashed.id)
    assert got.returncode == 0, got.stderr
    assert content_name not in got.stdout
    assert re.search(r"^source: +\d+x\d+, [\d.]+ KiB$", got.stdout, re.M), got.stdout
    assert re.search(r"^source: +upl_", run2("job", "get", by_id).stdout, re.M)


def test_download_into_a_directory_is_named_after_the_source_not_the_content_hash(
    run2, scratch, clip, tmp_path
):
    """The server names an output after the upload's name, which for an upload `sophon` made is
    derived from the content: into a directory the file is named after the local source when it
    is noted, else the job id; an upload with a real name (the SDK) keeps the server's name."""
    import shutil

    from sophon_cli.client.http import SophonClient

    src = tmp_path / "wedding.mp4"
    shutil.copyfile(clip, src)
    made = run2("job", "create", src, "--profile", "sophon-espresso", "--wait", "--timeout", "120")
    assert made.returncode == 0, made.stderr
    noted = made.stdout.split("\t")[0]
    with SophonClient(scratch.url, scratch.api_keys[0]) as api:
        bare = api.jobs.create(scratch.upload.upload_id, profile="sophon-espresso")
        named_up = api.uploads.upload_file(clip, file_name="from-the-sdk.mp4")
        named = api.jobs.create(named_up.upload_id, profile="sophon-espresso")
        api.jobs.wait_many([bare.id, named.id], timeout=120)
    out = tmp_path / "out"
    for job_id in (noted, bare.id, named.id):
        got = run2("download", job_id, "-o", f"{out}/")
        assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["wedding.sophon.mp4", f"{bare.id}.sophon.mp4", "from-the-sdk.sophon.mp4"]
    )
    again = run2("download", bare.id, "-o", out)  # the same name again: already in place
    assert again.returncode == 0 and "already holds this output" in again.stderr


def test_uploads_get_names_the_local_file_or_the_given_name_never_the_content_hash(
    run2, scratch, clip, tmp_path
):
    import shutil

    from sophon_cli.client.http import SophonClient

    src = tmp_path / "garden.mp4"
    shutil.copyfile(clip, src)
    up = run2("upload", src)
    assert up.returncode == 0, up.stderr
    mine = up.stdout.split("\t")[0]
    with SophonClient(scratch.url, scratch.api_keys[0]) as api:
        named = api.uploads.upload_file(clip, file_name="from-the-sdk.mp4").upload_id
        content_name = api.uploads.get(mine).file_name

    def file_row(upload_id):
        got = run2("uploads", "get", upload_id)
        assert got.returncode == 0, got.stderr
        assert content_name not in got.stdout, got.stdout
        return dict(line.split(":", 1) for line in got.stdout.splitlines())["file"].strip()

    assert file_row(mine) == str(src)  # noted by `sophon upload`
    assert file_row(named) == "from-the-sdk.mp4"
    assert run2("--json", "uploads", "get", mine).stdout.count(content_name) == 1  # --json: the API object
    other_home = run2("uploads", "get", mine, env={"SOPHON_HOME": str(tmp_path / "elsewhere")})
    assert re.search(r"^file: +-$", other_home.stdout, re.M), other_home.stdout


def test_empty_job_list_says_no_jobs(make_server_module, cli, tmp_path):
    srv = make_server_module()
    env = {"SOPHON_BASE_URL": srv.url}
    piped = cli("job", "list", env=env)
    assert (piped.returncode, piped.stderr) == (0, "no jobs\n")
    screen = run_in_terminal(["job", "list"], cli_env(srv, tmp_path / "h"))
    assert screen.returncode == 0 and screen.lines == ["no jobs"]


def test_job_list_on_a_terminal_is_relative_coloured_and_fits_60_columns(tty, fresh):
    wide = tty("job", "list", columns=120)
    assert wide.returncode == 0, wide.text
    header = [w for w in wide.lines[0].split() if w not in ("┃", "│")]
    assert header == ["id", "status", "source", "profile", "created", "progress"]
    assert all(re.search(r"(\d+ s|\d+ min|just now)( ago)?", line) for line in wide.lines[2:]), wide.text
    assert "\x1b[32m" in wide.raw and "\x1b[31m" in wide.raw  # completed green, failed red

    narrow = tty("job", "list", columns=60)
    assert narrow.returncode == 0, narrow.text
    rows = narrow.lines[2:]
    assert len(rows) == 3, narrow.text  # one line per job: nothing wrapped
    assert [row.split()[0] for row in rows] == fresh.job_ids  # ids whole
    assert all(len(line) <= 60 for line in narrow.lines)
    assert "profile" not in narrow.lines[0]  # the least important column went first
    assert "status" in narrow.lines[0] and "progress" in narrow.lines[0]


# ---- records: tabs piped, spaces on a terminal; cancel; timestamps in uploads get ----------------------


def test_records_are_tabs_piped_and_spaces_on_a_terminal(run, tty, fresh):
    failed = fresh.job_ids[0]
    piped = run("job", "wait", failed)
    assert piped.returncode == 5 and piped.stdout.startswith(f"{failed}\tfailed\t(")
    screen = tty("job", "wait", failed)
    assert screen.returncode == 5
    assert any(line.startswith(f"{failed}  failed  (") for line in screen.lines), screen.text


def test_uploads_get_expiry_is_rfc3339_piped_and_relative_on_a_terminal(run, tty, fresh):
    piped = run("uploads", "get", fresh.upload.upload_id)
    expires = dict(line.split(":", 1) for line in piped.stdout.splitlines())["expires"].strip()
    assert datetime.strptime(expires, RFC3339) > datetime.utcnow()
    screen = tty("uploads", "get", fresh.upload.upload_id)
    assert any(re.match(r"expires:\s+in \d+ (h|min)$", line) for line in screen.lines), screen.text


def test_cancel_of_a_canceled_job_is_exit_0_with_a_notice(run, run2, scratch, fresh):
    job = run2("job", "create", "--upload", scratch.upload.upload_id, "--metadata", "sophon_local_delay=30")
    job_id = job.stdout.split()[0]
    run = run2
    first = run("job", "cancel", job_id)
    assert first.returncode == 0 and first.stdout.startswith(f"{job_id}\tcanceled")
    again = run("job", "cancel", job_id)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"{job_id}\tcanceled")
    assert again.stderr.strip() == f"job {job_id} was already canceled"
    done = run2("--base-url", fresh.url, "job", "cancel", fresh.job_ids[1])  # completed: an error
    assert done.returncode == 1 and "finished" in done.stderr


def test_next_steps_name_the_job_instead_of_an_id_placeholder(run, run2, scratch, fresh, tmp_path):
    """An error about a known job says the command to run with that job's id, never `<id>`."""
    job = run2("job", "create", "--upload", scratch.upload.upload_id, "--metadata", "sophon_local_delay=30")
    job_id = job.stdout.split()[0]
    try:
        early = run2("download", job_id, "-o", tmp_path / "early.mp4")
        line = assert_one_line_error(early, 1, "output_not_ready", f"`sophon job wait {job_id}`")
        assert "<id>" not in line
        waited = run2("job", "wait", job_id, "--timeout", "0.5")
        assert waited.returncode == 6, waited.stderr
        assert f"wait again with `sophon job wait {job_id}`" in waited.stderr and "<id>" not in waited.stderr
    finally:
        run2("job", "cancel", job_id)
    done = fresh.job_ids[1]
    refused = run("job", "cancel", done)
    line = assert_one_line_error(refused, 1, "job_not_cancelable", f"`sophon job get {done}`")
    assert "<id>" not in line


# ---- --json FIELDS, --jq -------------------------------------------------------------------------------


def test_json_fields_and_jq(run, fresh):
    acme = fresh.job_ids[2]
    picked = run("job", "get", acme, "--json", "id,status")
    assert picked.returncode == 0, picked.stderr
    assert _lines(picked.stdout) == [{"id": acme, "status": "completed"}]
    front = run("--json", "status,id", "job", "get", acme)
    assert list(_lines(front.stdout)[0]) == ["status", "id"]  # the order asked for
    single = run("job", "list", "--json", "id")
    assert _lines(single.stdout) == [{"id": i} for i in fresh.job_ids]
    bare = run("job", "get", "--json", acme)  # a bare --json before an id stays a flag
    assert _lines(bare.stdout)[0]["id"] == acme and "output" in _lines(bare.stdout)[0]

    unknown = run("job", "get", acme, "--json", "id,colour")
    line = assert_one_line_error(unknown, 2, "'colour'", "valid fields:", "status", "output")
    assert "Traceback" not in line

    both = run("job", "get", acme, "--json", "id,metadata", "--jq", ".metadata.customer")
    assert both.stdout == "acme\n"
    assert_one_line_error(run("job", "list", "--jq", ".["), 2, "--jq", "not a valid jq expression")


def test_one_unknown_word_after_json_is_an_unknown_field_not_an_extra_argument(run, fresh):
    """`--json colour` (one word, no comma) is left to the command as an argument when it is no
    field name; a command that takes none said "Got unexpected extra argument (colour)"."""
    listed = run("job", "list", "--json", "colour")
    line = assert_one_line_error(listed, 2, "unknown JSON field 'colour'", "valid fields:", "status")
    assert "extra argument" not in line
    hooks = run("webhooks", "list", "--json", "colour")
    assert_one_line_error(hooks, 2, "unknown JSON field 'colour'", "`sophon webhooks list --json`")
    other = run("job", "list", "stray")  # a stray word elsewhere keeps click's words
    assert_one_line_error(other, 2, "unexpected extra argument", "(stray)")


def test_jq_on_a_list_command_gets_the_whole_list_as_one_array_like_gh(run, fresh, tmp_path):
    """gh applies --jq to a list command's whole JSON output, one array; so does sophon (without
    --jq the list stays NDJSON, one object per line)."""
    ids = run("job", "list", "--jq", ".[].id")
    assert ids.returncode == 0 and ids.stdout.splitlines() == fresh.job_ids  # strings raw, like gh
    assert run("job", "list", "--jq", "length").stdout == "3\n"
    sel = run("--jq", '.[] | select(.status == "failed") | {id, status_reason}', "job", "list")
    assert [r["id"] for r in _lines(sel.stdout)] == [fresh.job_ids[0]]
    picked = run("job", "list", "--json", "id,status", "--jq", ".")  # the fields, then the array
    assert json.loads(picked.stdout) == [
        {"id": i, "status": s}
        for i, s in zip(fresh.job_ids, ["failed", "completed", "completed"], strict=True)
    ]
    assert _lines(run("job", "list", "--json", "id").stdout) == [{"id": i} for i in fresh.job_ids]
    per_object = run("job", "list", "--jq", ".id")  # the per-object habit: one line naming .[]
    assert_one_line_error(per_object, 2, "Cannot index array", "begin with .[]")

    made = run("webhooks", "create", "https://example.com/a-hook")
    assert made.returncode == 0, made.stderr
    hooks = run("webhooks", "list", "--jq", "map(.url)")
    assert hooks.returncode == 0, hooks.stderr
    assert "https://example.com/a-hook" in json.loads(hooks.stdout)
    state = tmp_path / "empty-state.json"
    assert run("cache", "list", "--state-file", state, "--jq", "length").stdout == "0\n"


# ---- --watch ---------------------------------------------------------------------------------------------


def test_watch_ends_when_every_job_shown_is_terminal(run2, tty2, scratch):
    run, tty, fresh = run2, tty2, scratch
    job = run("job", "create", "--upload", fresh.upload.upload_id, "--metadata", "sophon_local_delay=4")
    job_id = job.stdout.split()[0]
    screen = tty("job", "get", job_id, "--watch", "--interval", "0.3", columns=100)
    assert screen.returncode == 0, screen.text
    drawn = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", screen.raw)
    assert re.search(r"status:\s+(queued|probing|encoding)", drawn)  # it was drawn while running too
    status = [line.split() for line in screen.lines if line.startswith("status:")]
    assert status == [["status:", "completed"]], screen.text  # the live view ended on its final frame

    listed = tty("job", "list", "--watch", "--interval", "0.3", "--limit", "2")
    assert listed.returncode == 0 and job_id in listed.text and "completed" in listed.text

    job2 = run("job", "create", "--upload", fresh.upload.upload_id, "--metadata", "sophon_local_delay=4")
    job2_id = job2.stdout.split()[0]
    stream = run("--json", "job", "get", job2_id, "--watch", "--interval", "0.2")
    seen = _lines(stream.stdout)
    assert len(seen) >= 2 and seen[-1]["status"] == "completed" and seen[0]["status"] != "completed"
    piped = run("job", "get", job2_id, "--watch")  # piped: the final record, once
    assert [ln.split() for ln in piped.stdout.splitlines() if ln.startswith("status:")] == [
        ["status:", "completed"]
    ]


# ---- closed pipes and streams --------------------------------------------------------------------------


def test_closed_pipe_is_a_quiet_exit_0_and_closed_stdout_one_line(fresh, tmp_path):
    env = cli_env(fresh, tmp_path / "home")
    cmd = f"set -o pipefail; {sys.executable} -m sophon_cli --json job list --all --page-size 1 | head -1"
    res = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["id"] == fresh.job_ids[0]
    assert res.stderr == ""

    closed = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m sophon_cli job list >&-"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert closed.returncode == 1
    assert closed.stderr.splitlines() == [
        "error: standard output is closed; send it to a file or to /dev/null (e.g. '>/dev/null')"
    ]


# ---- prompts ---------------------------------------------------------------------------------------------


def test_cache_clear_and_uploads_cancel_ask_on_a_terminal(tty, run, fresh, tmp_path):
    from sophon_cli.state import StateStore

    store = StateStore(tmp_path / "home" / "state.json")
    store.update("a|b", state="done")
    no = tty("cache", "clear", answer="n\r", answer_after="[y/N]")
    assert no.returncode == 1 and "nothing was done" in no.text
    # every question is a sentence, as `webhooks delete` asks it ("Delete webhook wh_1? ...")
    assert no.lines[0].startswith("Remove every entry of "), no.text
    assert len(StateStore(tmp_path / "home" / "state.json").load()) == 1
    yes = tty("cache", "clear", answer="y\r", answer_after="[y/N]")
    assert yes.returncode == 0 and "cleared 1 entry from" in yes.text
    store.update("a|b", state="done")
    skip = tty("cache", "clear", "--yes")
    assert skip.returncode == 0 and "[y/N]" not in skip.text

    from sophon_cli.client.http import SophonClient

    with SophonClient(fresh.url, fresh.api_keys[0]) as api:
        session = api.uploads.create("pending.mp4", 1000, "video/mp4")
    keep = tty("uploads", "cancel", session.id, answer="\r", answer_after="[y/N]")
    assert keep.returncode == 1 and "nothing was done" in keep.text
    assert keep.lines[0].startswith(f"Cancel upload {session.id} and delete its parts? [y/N]"), keep.text
    assert _lines(run("--json", "uploads", "get", session.id).stdout)[0]["status"] != "canceled"  # untouched
    piped = run("uploads", "cancel", session.id)  # no terminal: no question
    assert piped.returncode == 0 and piped.stdout == f"{session.id}\tcanceled\n"


# ---- flag spellings, versions, misplaced global options, grammar ----------------------------------------------


def test_concurrency_is_j_everywhere_with_the_old_c_hidden(run, clip):
    assert run("upload", "-j", "2", clip).returncode == 0
    old = run("upload", "-c", "2", clip)
    assert old.returncode == 0, old.stderr
    assert_one_line_error(run("upload", "-c", "99", clip), 2, "--concurrency", "1 and 16")
    for cmd in (["upload"], ["job", "create"], ["encode"]):
        help_text = run(*cmd, "--help").stdout
        assert "-j, --concurrency N" in help_text and " -c" not in help_text


def test_version_spellings_and_misplaced_global_options(run):
    from sophon_cli import __version__

    for args in (["--version"], ["-V"], ["version"]):
        res = run(*args)
        assert (res.returncode, res.stdout) == (0, f"sophon {__version__}\n")
    misplaced = run("job", "list", "--base-url", "http://127.0.0.1:9")
    line = assert_one_line_error(misplaced, 2, "--base-url is a global option", "before the command")
    assert "sophon --base-url URL job list" in line
    assert run("job", "list", "--local", "--help").returncode == 0  # value-less ones already work
    typo = run("jbo")
    assert_one_line_error(typo, 2, "Did you mean 'job'? See 'sophon --help'")
    assert "?;" not in typo.stderr


# ---- job create --wait: one ETA; interrupted: the right next step -------------------------------------------


def test_job_create_wait_shows_one_eta_and_an_interrupt_names_job_wait(tty2, make_clip, tmp_path, scratch):
    from sophon_cli.client.http import SophonClient

    tty, fresh = tty2, scratch
    clip = make_clip(tmp_path / "long.mp4", seconds=4)
    screen = tty("job", "create", clip, "--wait", "--metadata", "sophon_local_realtime=true", columns=120)
    assert screen.returncode == 0, screen.text
    bar_lines = [
        line for line in screen.raw.replace("\r", "\n").splitlines() if "job_" in line and "%" in line
    ]
    assert bar_lines, screen.raw
    for line in bar_lines:
        plain = re.sub(r"\x1b\[[0-?]*[ -/]*[@-~]", "", line)
        assert len(re.findall(r"\d+:\d\d:\d\d", plain)) <= 1, plain
        assert not re.search(r"eta \d+s", plain), plain

    stopped = tty(
        "job", "create", "--upload", fresh.upload.upload_id, "--wait", "--metadata", "sophon_local_delay=30",
        interrupt_after="waiting for it to finish", columns=200,
    )  # fmt: skip
    assert stopped.returncode == 130, stopped.text
    [line] = [ln for ln in stopped.lines if "interrupted" in ln]  # after the terminal's echo of ^C
    job_id = re.search(r"job (job_\w+) goes on", line).group(1)
    assert f"sophon job wait {job_id}" in line and "run the same command again" not in stopped.text
    with SophonClient(fresh.url, fresh.api_keys[0]) as api:
        api.jobs.cancel(job_id)


# ---- sizes in binary units; the field names --json FIELDS recognises ---------------------------------------


def test_upload_bar_on_a_terminal_counts_in_binary_units(tty2, make_clip, tmp_path):
    clip = make_clip(tmp_path / "units.mp4", seconds=2, size="320x240")
    screen = tty2("upload", clip, columns=120)
    assert screen.returncode == 0, screen.text
    bar = next(line for line in screen.lines if line.startswith("units.mp4"))
    assert re.search(r"\d+\.\d/\d+\.\d KiB", bar), bar
    rate = re.search(r"\s(\S+)/s\b", bar)  # none when rich measured none (one part): never "?"
    assert (rate is None or rate.group(1).endswith(("KiB", "MiB", "GiB"))) and " ? " not in bar, bar
    assert not re.search(r"\b(kB|MB)\b", screen.raw)  # rich's decimal units never show
    assert re.match(r"upl_\w+  \S+units\.mp4$", screen.lines[-1]), screen.lines[-1]  # two spaces on a tty


def test_known_json_fields_cover_every_printed_model():
    from sophon_cli.cli.fields import KNOWN_FIELDS
    from sophon_cli.client import models

    for model in (models.Job, models.UploadStatus, models.Webhook, models.WebhookItem, models.DownloadResult):
        missing = set(model.model_fields) - KNOWN_FIELDS
        assert not missing, (model.__name__, missing)
    from sophon_cli.cli.fields import JOB_FIELDS, UPLOAD_STATUS_FIELDS

    assert list(JOB_FIELDS) == list(models.Job.model_fields)
    assert list(UPLOAD_STATUS_FIELDS) == list(models.UploadStatus.model_fields)


def test_encode_json_takes_no_field_list_and_a_single_word_is_its_argument(run2, scratch, clip, tmp_path):
    """`encode --json file,result` once failed every file (each state event lacked a field) and
    wrote nothing; it is refused before any request. `encode --json output` names a directory."""
    import shutil

    log = Path(scratch.request_log)
    before = log.read_text().count("\n")
    listed = run2("encode", clip, "-o", tmp_path / "out", "--json", "file,result")
    assert_one_line_error(listed, 2, "takes no field list", "--jq")
    assert log.read_text().count("\n") == before  # nothing sent
    assert not (tmp_path / "out").exists()
    (tmp_path / "output").mkdir()  # a directory named like a field
    shutil.copyfile(clip, tmp_path / "output" / "c.mp4")

    def in_dir(*args):
        return subprocess.run(
            [sys.executable, "-m", "sophon_cli", *args],
            env=cli_env(scratch, tmp_path / "home"), cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    res = in_dir("encode", "--json", "output", "-r", "-o", "out", "--profile", "sophon-espresso")
    assert res.returncode == 0, res.stderr
    assert _lines(res.stdout)[-1]["counts"] == {"encoded": 1}
    picked = in_dir(
        "encode", "--json", "output", "-r", "-o", "out", "--profile", "sophon-espresso",
        "--jq", 'select(.event == "summary") | .counts',
    )  # fmt: skip
    assert picked.returncode == 0 and _lines(picked.stdout) == [{"encoded": 1}], picked.stderr


def test_an_unknown_field_is_refused_before_any_work(run, fresh):
    """`job create --json colour` is exit 2 and creates no job (checked before the command runs)."""
    before = run("--json", "job", "list", "--all").stdout.count("\n")
    res = run("job", "create", "--upload", fresh.upload.upload_id, "--json", "id,colour")
    assert_one_line_error(res, 2, "'colour'", "valid fields: id, status, status_reason")
    assert run("--json", "job", "list", "--all").stdout.count("\n") == before


def test_cache_list_times_are_rfc3339_piped_and_in_json_relative_on_a_terminal(run, tty, tmp_path):
    from sophon_cli.state import StateStore

    StateStore(tmp_path / "home" / "state.json").update(
        "clip.mp4|k", state="done", job_id="job_1", path="clip.mp4"
    )
    piped = run("cache", "list")
    [row] = [line.split("\t") for line in piped.stdout.splitlines()[1:]]
    assert datetime.strptime(row[5], RFC3339)
    assert piped.stderr.strip().startswith("1 entry in ")
    [entry] = _lines(run("--json", "cache", "list").stdout)
    assert datetime.strptime(entry["updated_at"], RFC3339) and datetime.strptime(entry["created_at"], RFC3339)
    screen = tty("cache", "list")
    # relative, whatever the time the two piped runs took on a loaded machine ("just now" is < 5 s)
    relative = re.compile(r"just now|\d+ s ago|\d+ min ago")
    assert any("clip.mp4" in line and relative.search(line) for line in screen.lines), screen.text
    assert not re.search(r"\d{4}-\d\d-\d\dT", screen.text), screen.text


def test_an_empty_cache_list_is_one_line_and_no_empty_table(run, tty, tmp_path):
    """Like `job list`'s "no jobs": nothing cached draws no empty table on a terminal; piped, the
    header stays (the same shape for scripts whatever the count, as `job list`)."""
    piped = run("cache", "list")
    assert piped.returncode == 0 and piped.stdout == "FILE\tSTATE\tRESULT\tJOB\tOUTPUT\tUPDATED\n"
    assert piped.stderr == f"0 entries in {tmp_path / 'home' / 'state.json'}\n"
    screen = tty("cache", "list", columns=200)
    assert screen.returncode == 0
    assert screen.lines == [f"0 entries in {tmp_path / 'home' / 'state.json'}"], screen.text


def test_ctrl_c_in_job_wait_or_watch_says_the_jobs_go_on_not_resume(tty2, scratch):
    """Waiting and watching change nothing on the server: Ctrl-C said "run the same command again
    to resume"; it says the job goes on and how to follow it again (exit 130)."""
    from sophon_cli.client.http import SophonClient

    with SophonClient(scratch.url, scratch.api_keys[0]) as api:
        job = api.jobs.create(scratch.upload.upload_id, metadata={"sophon_local_delay": 30})
    try:
        waited = tty2("job", "wait", job.id, interrupt_after=job.id, columns=160)
        assert waited.returncode == 130, waited.text
        [line] = [ln for ln in waited.lines if "interrupted" in ln]
        assert line.endswith(f"the job goes on: wait again with `sophon job wait {job.id}`"), line
        watched = tty2("job", "get", job.id, "--watch", interrupt_after="status:", columns=160)
        assert watched.returncode == 130, watched.text
        assert f"stopped watching; job {job.id} goes on on the server" in watched.text
        listed = tty2("job", "list", "--watch", interrupt_after="status", columns=160)
        assert listed.returncode == 130, listed.text
        assert "stopped watching; the jobs go on on the server" in listed.text
        assert "run the same command again" not in waited.text + watched.text + listed.text
    finally:
        with SophonClient(scratch.url, scratch.api_keys[0]) as api:
            api.jobs.cancel(job.id)


def test_upload_bar_says_already_uploaded_and_never_shows_a_question_mark_rate(tty2, scratch, clip):
    """A small file goes in one part (or not at all when the server has it): rich measures no rate,
    and the bar ended with "382.2/382.2 KiB ? 0:00:00"."""
    again = tty2("upload", clip, columns=120)  # the session the fixture uploaded: nothing to send
    assert again.returncode == 0, again.text
    [bar] = [ln for ln in again.lines if "KiB" in ln]
    assert bar.startswith(f"{clip.name} (already uploaded)") and " ? " not in bar, again.text
    fresh = tty2("upload", clip, "--new", columns=120)
    assert fresh.returncode == 0, fresh.text
    [bar] = [ln for ln in fresh.lines if "KiB" in ln]
    assert "already uploaded" not in bar and " ? " not in bar, fresh.text


def test_since_further_back_than_the_calendar_and_a_jq_error_of_the_users_own(run, fresh):
    """`--since 99999999d` ended in "unexpected OverflowError" (exit 1); an error the expression
    raises itself was answered with the hint for a per-object filter given the list."""
    every = run("job", "list", "--since", "99999999d", "--jq", "length")
    assert every.returncode == 0 and every.stdout == "3\n", every.stderr
    own = run("job", "list", "--jq", 'error("no such thing")')
    line = assert_one_line_error(own, 2, "no such thing", "check the expression")
    assert ".[]" not in line


def test_download_bar_of_an_output_already_in_place_says_so(tty2, run2, scratch, clip, tmp_path):
    """Nothing is fetched when the target already holds the output: the bar stayed at "0/? bytes ?"."""
    from sophon_cli.client.http import SophonClient

    with SophonClient(scratch.url, scratch.api_keys[0]) as api:
        job = api.jobs.wait(
            api.jobs.create(scratch.upload.upload_id, profile="sophon-espresso").id, timeout=120
        )
    target = tmp_path / "here.mp4"
    first = run2("download", job.id, "-o", target)
    assert first.returncode == 0, first.stderr
    again = tty2("download", job.id, "-o", target, columns=120)
    assert again.returncode == 0, again.text
    [bar] = [ln for ln in again.lines if ln.startswith(job.id)]
    assert "(already downloaded)" in bar and "?" not in bar and "KiB" in bar, again.text
