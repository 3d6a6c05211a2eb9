"""`sophon encode` keeps its promises (issues 11, 12, 13) against the real local server: one
canonical form of the job options, invalid sources are failures, a new output path is a new
download of the same job, cheap checks before any upload, a batch that stops at an error every
file shares, and an interrupted run that says how to resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY
from tests.encode.conftest import place


def _posts(world, route: str) -> int:
    return sum(1 for r in world.requests() if r["route"] == route)


# -- one canonical form of the job options (issue 11 items 7, 14) ---------------------------------


def test_explicit_defaults_and_webhook_order_give_the_same_job(world, clip_bank):
    from sophon_cli.client.http import SophonClient

    place(clip_bank[:1], world.work)
    with SophonClient(world.server.url, TEST_KEY) as c:
        a = c.webhooks.create("http://127.0.0.1:9/a").id
        b = c.webhooks.create("http://127.0.0.1:9/b").id
    # each run with its own cache, so only the server's idempotency keys can make them agree
    runs = [
        ("--webhook", a, "--webhook", b),
        ("--container", "mp4", "--no-audio", "--webhook", b, "--webhook", a),
        ("--webhook", a, "--webhook", b, "--webhook", b),
    ]
    jobs = set()
    for i, extra in enumerate(runs):
        run = world.encode(
            "video0.mp4", "-o", f"out{i}", "--state-file", world.root / f"s{i}.json", *extra, "--json"
        )
        assert run.returncode == 0, run.stderr
        jobs.add(run.summary()["files"][0]["job_id"])
    assert len(jobs) == 1
    assert len(world.jobs()) == 1 and world.upload_count() == 1


def test_the_canonical_form_keeps_the_keys_earlier_versions_made():
    """Defaults are canonicalised to "not given", so a job made before this rule (no flags) has
    the same key today: upgrading never makes a second job for a file already encoded."""
    from sophon_cli.encode import EncodeOptions
    from sophon_cli.encode.naming import job_idempotency_key

    plain = EncodeOptions()
    assert plain.job_options() == {
        "profile": "sophon-auto",
        "container": None,
        "audio": None,
        "target_height": None,
        "webhook_ids": None,
        "metadata": None,
    }
    same = EncodeOptions(container="mp4", audio=False, webhook_ids=("w2", "w1", "w2"))
    assert same.job_options() == {**plain.job_options(), "webhook_ids": ["w1", "w2"]}
    key = job_idempotency_key("ab" * 32, 10, "upl_1", plain, None)
    assert key == job_idempotency_key(
        "ab" * 32, 10, "upl_1", EncodeOptions(container="mp4", audio=False), None
    )
    assert key != job_idempotency_key("ab" * 32, 10, "upl_1", EncodeOptions(container="mkv"), None)


# -- not a video: a failure, never "original kept" (item 9) ---------------------------------------


def test_a_file_that_is_not_a_video_fails_and_nothing_is_copied(world):
    (world.work / "junk.mp4").write_bytes(os.urandom(20000))
    run = world.encode("junk.mp4", "--json")
    assert run.returncode == 7, run.stderr
    row = run.summary()["files"][0]
    assert row["result"] == "failed" and "not a usable video" in row["reason"]
    assert not (world.work / "junk.sophon.mp4").exists()
    assert sorted(p.name for p in world.work.iterdir()) == ["junk.mp4"]


# -- a new output path: a new entry, the same upload and job, a new download (item 3) --------------


def test_a_new_output_directory_or_template_downloads_again_and_sends_nothing_twice(world, clip_bank):
    place(clip_bank[:2], world.work / "v")
    first = world.encode("v", "-r", "-o", "out1", "--json")
    assert first.returncode == 0, first.stderr
    jobs, uploads = {j.id for j in world.jobs()}, world.upload_count()
    creates = _posts(world, "POST /v1/jobs")

    for args, out_dir, name in (
        (("-o", "out2"), "out2", "{stem}.sophon.mp4"),
        (("-o", "out2", "--name-template", "{stem}-small.{ext}"), "out2", "{stem}-small.mp4"),
    ):
        run = world.encode("v", "-r", *args, "--json")
        assert run.returncode == 0, run.stderr
        files = run.summary()["files"]
        assert [f["result"] for f in files] == ["encoded", "encoded"]
        for f in files:
            stem = Path(f["file"]).stem
            want = world.work / out_dir / name.format(stem=stem)
            assert f["output"] == str(want) and want.is_file() and not f["cached"]
    assert {j.id for j in world.jobs()} == jobs and world.upload_count() == uploads
    # the job requests replayed by key (the server made no new job): at most one POST per file
    assert _posts(world, "POST /v1/jobs") - creates <= 4


# -- issue 12: a file met again under a new intent is not read to find its session ---------------

READS = r"""
import json, sys
from pathlib import Path
from sophon_cli.client.http import SophonClient
from sophon_cli.encode import EncodeOptions, Pipeline, expand_inputs
from sophon_cli.state import StateStore

def rchar():
    with open("/proc/self/io") as fh:
        return int(next(line for line in fh if line.startswith("rchar:")).split()[1])

url, key, state, warm, path, work = sys.argv[1:7]
store = StateStore(state)
with SophonClient(url, key) as c:
    def run(pattern, out):
        sources, _ = expand_inputs([pattern], cwd=work)
        return Pipeline(c, store, EncodeOptions(output_dir=Path(work) / out)).run(sources)
    run(warm, "warm")  # every module loaded before measuring
    before = rchar()
    one = run(path, "out1")
    mid = rchar()
    two = run(path, "out2")
    after = rchar()
print(json.dumps({"first": mid - before, "again": after - mid,
                  "results": [str(one.results[0].result), str(two.results[0].result)],
                  "jobs": [one.results[0].job_id, two.results[0].job_id],
                  "outputs": [one.results[0].output, two.results[0].output],
                  "cached": [one.results[0].cached, two.results[0].cached]}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/<pid>/io")
def test_an_unchanged_file_under_a_new_output_is_not_read_again(world, clip_bank):
    place(clip_bank[:1], world.work, ["warm.mp4"])
    big = world.work / "big.mp4"
    payload = os.urandom(4 * 1024 * 1024)  # a valid mp4 followed by 4 MiB in a 'free' box
    big.write_bytes(clip_bank[1].read_bytes() + (8 + len(payload)).to_bytes(4, "big") + b"free" + payload)
    proc = subprocess.run(
        [sys.executable, "-c", READS, world.server.url, TEST_KEY, str(world.root / "s.json")]
        + ["warm.mp4", "big.mp4", str(world.work)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["results"] == ["encoded", "encoded"] and got["jobs"][0] == got["jobs"][1]
    assert got["cached"] == [False, False]
    assert got["outputs"] == [str(world.work / d / "big.sophon.mp4") for d in ("out1", "out2")]
    size = big.stat().st_size
    assert got["first"] >= size  # the first run read the file (once)
    # the second, under a new -o: its digest remembered by (device, inode, size, mtime): no re-read
    assert got["again"] <= 256 * 1024, got


def test_a_same_size_rewrite_with_its_mtime_restored_is_read_again(world, clip_bank):
    """cp -p / rsync -t: size and mtime unchanged, content not. What was remembered must not be
    trusted (ctime tells), so the new bytes are uploaded and encoded."""
    import hashlib

    (src,) = place(clip_bank[:1], world.work, ["a.mp4"])
    assert world.encode("a.mp4", "-o", "out1").returncode == 0
    st = src.stat()
    data = bytearray(src.read_bytes())
    data[-100] ^= 0xFF  # same size, different content
    with open(src, "r+b") as fh:  # rewritten in place (same inode), as cp -p does
        fh.write(data)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (src.stat().st_size, src.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    for out in ("out1", "out2"):  # the same intent and a new one
        run = world.encode("a.mp4", "-o", out, "--json")
        assert run.returncode == 0, run.stderr
        assert "--new" not in run.stderr
        job = next(j for j in world.jobs() if j.id == run.summary()["files"][0]["job_id"])
        assert job.source.sha256 == hashlib.sha256(bytes(data)).hexdigest(), out


# -- cheap checks before any upload (items 10, 17; issue 13) --------------------------------------


def test_an_output_location_that_is_a_file_is_refused_before_any_upload(world, clip_bank):
    place(clip_bank[:2], world.work)
    (world.work / "out").write_text("a regular file")
    run = world.encode("*.mp4", "-o", "out")
    assert run.returncode == 2, run.stderr
    assert "is a file, not a directory" in run.stderr and "Traceback" not in run.stderr
    assert world.upload_count() == 0 and world.requests() == []


def test_an_output_name_too_long_is_refused_before_any_upload(world, clip_bank):
    place(clip_bank[:1], world.work)
    run = world.encode("video0.mp4", "--name-template", "x" * 250 + "-{stem}.{ext}")
    assert run.returncode == 2, run.stderr
    assert "bytes long" in run.stderr and "shorter name template" in run.stderr
    assert world.upload_count() == 0 and world.requests() == []


def test_a_long_valid_name_is_written_with_short_temporary_names(world, clip_bank):
    place(clip_bank[:1], world.work)
    template = "y" * (255 - len("-video0.mp4")) + "-{stem}.{ext}"
    run = world.encode("video0.mp4", "--name-template", template, "--json")
    assert run.returncode == 0, run.stderr
    assert Path(run.summary()["files"][0]["output"]).is_file()


def test_a_rejected_key_is_found_with_one_request_before_any_file_is_read(world, clip_bank):
    place(clip_bank[:3], world.work)
    run = world.encode("*.mp4", env={"SOPHON_API_KEY": "sk_wrong_key_000000"})
    assert run.returncode == 4, run.stderr
    assert [r["route"] for r in world.requests()] == ["GET /v1/jobs"]
    assert run.stderr.count("error:") == 1 and "Traceback" not in run.stderr


def test_an_unknown_profile_stops_the_batch_at_the_first_rejection(world, clip_bank):
    place(clip_bank[:4], world.work)
    import re

    from sophon_cli.server.util import PROFILES

    run = world.encode("*.mp4", "-j", "1", "--profile", "sophon-nopes")
    assert run.returncode == 1, run.stderr
    line = next(ln for ln in run.stderr.splitlines() if ln.startswith("error:"))
    assert "the server rejected the job options: unknown profile 'sophon-nopes'" in line
    assert "source" not in line.split(";")[0]  # the options are blamed, not the file
    # the server's long list is shortened at a word boundary: every name shown is a whole one
    listed = re.findall(r"sophon-[a-z0-9-]+", line.split("use one of:")[1])
    assert listed and set(listed) <= set(PROFILES), listed
    assert world.upload_count() == 1 and world.jobs() == []


def test_a_429_storm_stops_the_batch_instead_of_retrying_every_file(make_server, tmp_path, clip_bank):
    from tests.encode.conftest import Env

    world = Env(make_server(tmp_path / "srv", faults="POST /v1/uploads=429:1:retry-after=0.05"), tmp_path)
    place(clip_bank[:4], world.work)
    run = world.encode("*.mp4", "-j", "1", env={"SOPHON_MAX_RETRIES": "2"}, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "rate" in run.stderr.lower() and "Traceback" not in run.stderr
    assert _posts(world, "POST /v1/uploads") <= 3  # one file's attempts, not four files' worth
    assert "4 files not finished" in run.stderr


# -- -o naming a file, shell-expanded globs (issue 13) --------------------------------------------


def test_o_with_a_video_name_writes_that_file_for_one_input(world, clip_bank):
    place(clip_bank[:2], world.work)
    run = world.encode("video0.mp4", "-o", "result.mp4", "--json")
    assert run.returncode == 0, run.stderr
    out = world.work / "result.mp4"
    assert out.is_file() and run.summary()["files"][0]["output"] == str(out)
    several = world.encode("video0.mp4", "video1.mp4", "-o", "both.mp4")
    assert several.returncode == 2 and "names a file" in several.stderr
    assert not (world.work / "both.mp4").exists()


def test_a_directory_among_shell_expanded_inputs_is_skipped_with_a_notice(world, clip_bank):
    place(clip_bank[:1], world.work / "vids")
    (world.work / "vids" / "sub").mkdir()
    run = world.encode("vids/video0.mp4", "vids/sub", "--dry-run")  # what `vids/*` expands to
    assert run.returncode == 0, run.stderr
    assert "skipping vids/sub: a directory" in run.stderr
    alone = world.encode("vids/sub", "--dry-run")
    assert alone.returncode == 2 and "is a directory" in alone.stderr


# -- an interrupted run (issue 13; issue 11: Ctrl-C and a lost server end alike) -----------------


def test_an_interrupted_force_run_prints_one_line_that_says_to_drop_force(world, clip_bank):
    import signal
    import threading

    place(clip_bank[:1], world.work)
    assert world.encode("video0.mp4").returncode == 0
    args = ("video0.mp4", "--force", "--metadata", "sophon_local_delay=2")
    proc = world.popen(*args)
    timer = threading.Timer(60, proc.kill)
    timer.start()
    try:
        for line in proc.stderr:
            if "job created" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        timer.cancel()
    assert proc.returncode == 130, err
    assert out == ""  # nothing finished: no empty table header
    assert err.count("interrupted") == 1 and "run the same command again without --force to resume" in err
    forced_job = {j.id for j in world.jobs()}
    assert len(forced_job) == 2  # the first run's job and the --force one
    again = world.encode("video0.mp4", "--metadata", "sophon_local_delay=2", "--json")
    assert again.returncode == 0, again.stderr
    assert len(world.jobs()) == 2  # resumed the --force job, no third


# -- nothing lost: a file at the output path is never replaced without --force (item 1) ----------


def test_a_file_already_at_the_output_path_is_left_alone_unless_force(world, clip_bank):
    place(clip_bank[:2], world.work)
    mine = world.work / "video0.sophon.mp4"
    mine.write_bytes(b"the user's own file")
    victim = world.work / "victim.txt"
    victim.write_text("must not change")
    (world.work / "video1.sophon.mp4").symlink_to(victim)
    run = world.encode("video0.mp4", "video1.mp4", "--json")
    assert run.returncode == 7, run.stderr
    rows = {f["file"]: f for f in run.summary()["files"]}
    assert {r["result"] for r in rows.values()} == {"failed"}
    assert "left alone" in rows["video0.mp4"]["reason"]
    assert "use --force to overwrite it" in run.stderr
    assert mine.read_bytes() == b"the user's own file" and victim.read_text() == "must not change"
    assert (world.work / "video1.sophon.mp4").is_symlink()
    # a rerun does not pass either; --force replaces them (the symlink with a regular file)
    assert world.encode("video0.mp4", "video1.mp4").returncode == 7
    forced = world.encode("video0.mp4", "video1.mp4", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert [f["result"] for f in forced.summary()["files"]] == ["encoded", "encoded"]
    assert mine.read_bytes() != b"the user's own file"
    assert not (world.work / "video1.sophon.mp4").is_symlink() and victim.read_text() == "must not change"


def test_a_fallback_copy_never_replaces_a_file_it_did_not_write(world, gray_clip):
    place([gray_clip], world.work, ["gray.mp4"])
    mine = world.work / "gray.sophon.mp4"
    mine.write_bytes(b"keep me")
    run = world.encode("gray.mp4", "--json")  # nothing smaller: the original would be copied there
    assert run.returncode == 7, run.stderr
    assert mine.read_bytes() == b"keep me"
    mine.unlink()
    again = world.encode("gray.mp4", "--json")
    assert again.returncode == 0, again.stderr
    assert again.summary()["files"][0]["result"] == "original kept"
    assert mine.read_bytes() == gray_clip.read_bytes()


def test_a_stale_remembered_digest_is_dropped_after_the_integrity_failure_and_the_file_reread(
    world, clip_bank
):
    """The cache holds a wrong sha256 for an unchanged-looking file (what a same-size rewrite the
    stat cannot see leaves behind): the upload's check fails once, the digest is dropped, the file
    is read again, and the run ends encoded with the true digest (no hint naming --new)."""
    import hashlib

    from sophon_cli.state import StateStore

    (src,) = place(clip_bank[:1], world.work, ["a.mp4"])
    assert world.encode("a.mp4", "-o", "out").returncode == 0
    store = StateStore(world.home / "state.json")
    (key,) = store.load()
    store.update(key, state="hashed", sha256="0" * 64, upload_id=None, job_id=None, job_status=None)
    (world.work / "out" / "a.sophon.mp4").unlink()
    run = world.encode("a.mp4", "-o", "out", "--json")
    assert run.returncode == 0, run.stderr
    assert "--new" not in run.stderr + run.stdout
    assert run.summary()["files"][0]["result"] == "encoded"
    assert world.upload_count() == 1 and len(world.jobs()) == 1  # the same session and job
    assert (
        StateStore(world.home / "state.json").load()[key]["sha256"]
        == hashlib.sha256(src.read_bytes()).hexdigest()
    )


def test_a_lost_server_ends_like_ctrl_c_with_the_summary_and_the_resume_hint(world, clip_bank):
    import threading

    place(clip_bank[:2], world.work)
    args = ("video0.mp4", "video1.mp4", "-j", "1", "--json", "--metadata", "sophon_local_delay=2")
    proc = world.popen(*args, env={"SOPHON_MAX_RETRIES": "1", "SOPHON_RETRY_BUDGET": "2"})
    timer = threading.Timer(90, proc.kill)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            ev = json.loads(line)
            if ev.get("state") == "done":
                world.server.stop()  # the second file is still waiting on its job
                break
        rest, err = proc.communicate(timeout=60)
    finally:
        timer.cancel()
    assert proc.returncode == 8, err
    summary = json.loads(rest.splitlines()[-1])
    assert summary["event"] == "summary" and [f["file"] for f in summary["files"]] == ["video0.mp4"]
    assert summary["exit_code"] == 8
    assert "1 of 2 files not finished; run the same command again to resume" in err
    assert err.count("error:") == 1 and "Traceback" not in err


def test_a_recorded_job_the_server_does_not_know_fails_and_the_cli_words_the_next_step(world, clip_bank):
    """The library marks the failure with a next step (no flag in its reason); the CLI words it."""
    from sophon_cli.state import StateStore

    place(clip_bank[:1], world.work)
    assert world.encode("video0.mp4", "-o", "out").returncode == 0
    store = StateStore(world.home / "state.json")
    (key,) = store.load()
    store.update(key, state="job_created", job_id="job_0000000000000000", job_status="queued", result=None)
    run = world.encode("video0.mp4", "-o", "out", "--json")
    assert run.returncode == 7, run.stderr
    row = run.summary()["files"][0]
    assert row["reason"] == "job job_0000000000000000 does not exist on this server"
    assert row["next_step"] == "fresh_job"
    assert "1 file: the recorded job cannot be used; run again with --force for a fresh job" in run.stderr
    assert "1 of 1 file failed; fix the cause" in run.stderr  # cli.output.plural: not "1 files"


def test_a_recorded_upload_that_expired_is_uploaded_again_not_failed(make_server, tmp_path, clip_bank):
    """The cache says uploaded, but the server let the upload expire before a (new) job was made
    for it: the file is fine, so it is uploaded again and encoded (before: 'original kept')."""
    from sophon_cli.state import StateStore
    from tests.encode.conftest import Env
    from tests.helpers.store import expire_uploads

    world = Env(make_server(tmp_path / "srv"), tmp_path)
    place(clip_bank[:1], world.work)
    assert world.encode("video0.mp4", "-o", "out").returncode == 0
    store = StateStore(world.home / "state.json")
    (key,) = store.load()
    # a fresh intent (as --force makes) whose upload is the old one
    store.update(key, state="uploaded", nonce="n-expired", job_id=None, job_status=None, result=None)
    (world.work / "out" / "video0.sophon.mp4").unlink()
    assert expire_uploads(world.server) == 1
    run = world.encode("video0.mp4", "-o", "out", "--json")
    row = run.summary()["files"][0]
    assert run.returncode == 0, row
    assert row["result"] == "encoded", row
    assert (world.work / "out" / "video0.sophon.mp4").is_file()
    assert world.upload_count() == 2 and len(world.jobs()) == 2


def test_reruns_after_the_upload_expired_share_one_replacement_session(make_server, tmp_path, clip_bank):
    """Issue 11 item 12: once the content's completed session is past its expiry, runs that lost
    their cache (fresh SOPHON_HOME; --force: a fresh job each) all upload into the same replacement
    session (the next generation of its key), not a random one each."""
    from tests.encode.conftest import Env
    from tests.helpers.store import expire_uploads

    world = Env(make_server(tmp_path / "srv"), tmp_path)
    place(clip_bank[:1], world.work)
    assert world.encode("video0.mp4", "-o", "out0").returncode == 0
    assert world.upload_count() == 1
    assert expire_uploads(world.server) == 1
    for n in (1, 2):
        run = world.encode(
            "video0.mp4", "-o", f"out{n}", "--force", env={"SOPHON_HOME": str(tmp_path / f"h{n}")}
        )
        assert run.returncode == 0, run.stderr
        assert (world.work / f"out{n}" / "video0.sophon.mp4").is_file()
    assert world.upload_count() == 2  # the expired one and one replacement (before: one per run)


# -- issue 11 item 4: an output without a sha256 is checked by its size and said to be unverified --


def test_an_output_the_server_gave_no_sha256_for_is_said_to_be_unverified(world, clip_bank):
    import sqlite3

    place(clip_bank[:1], world.work / "v")
    first = world.encode("v", "-r", "-o", "out1", "--json")
    assert first.returncode == 0, first.stderr
    (f,) = first.summary()["files"]
    assert f["result"] == "encoded" and f["verified"] is True and "sha256 matches" in f["verification"]
    assert "not verified" not in first.stderr
    # the spec makes output.sha256 nullable: the server forgets it (the job itself is unchanged)
    con = sqlite3.connect(world.server.config.data_dir / "sophon.db", timeout=10)
    with con:
        con.execute("UPDATE jobs SET output = json_set(output, '$.sha256', json('null'))")
    con.close()

    run = world.encode("v", "-r", "-o", "out2", "--json")  # a new output: the same job, downloaded again
    assert run.returncode == 0, run.stderr
    (f,) = run.summary()["files"]
    assert f["result"] == "encoded" and f["verified"] is False and "size matches" in f["verification"]
    events = [e for e in run.events() if e.get("state") == "downloaded"]
    assert events and events[0]["verified"] is False
    warned = [line for line in run.stderr.splitlines() if "not verified" in line]
    assert len(warned) == 1 and "video0.sophon.mp4" in warned[0] and "size matches" in warned[0]
    assert (world.work / "out2" / "video0.sophon.mp4").read_bytes() == (
        world.work / "out1" / "video0.sophon.mp4"
    ).read_bytes()
