"""`sophon encode` when the process, the server or the cache misbehave:

- SIGKILL at seeded random points of a multi-file batch (reduced 4 files / 3 kills; full 10 kills):
  every file ends done, the server has exactly one upload and one job per file;
- a batch through a faulty server (5% 503, 5% 429 + Retry-After, 2% resets mid-part, 200 ms
  latency; reduced 6 files, full 20) finishes 100% with no duplicate uploads or jobs and outputs
  whose sha256 equals the job's; every command's retries stay bounded;
- a truncated or garbage cache is set aside with a warning and the rerun creates no duplicate
  jobs; the cache the CLI writes is 0600 in a 0700 directory;
- Ctrl-C (SIGINT) mid-upload exits 130 with the state saved and the rerun completes with no
  duplicates.
"""

from __future__ import annotations

import json
import random
import signal
import stat
import subprocess
import time
from collections import Counter

import pytest

from sophon_cli.client.files import PART_SUFFIX

from .conftest import (
    api,
    count_jobs,
    count_uploads,
    db_rows,
    padded_video,
    popen_cli,
    read_log,
    run_cli,
    sha256_of,
    tiny_clips,
)
from .stress import MB, count

PROFILE = "sophon-espresso"  # always makes an encoded output (sophon-auto may keep tiny originals)


def _summary(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        event = json.loads(line)
        if event.get("event") == "summary":
            return event
    raise AssertionError(f"no summary in {stdout!r}")


def _jobs(srv) -> list[dict]:
    jobs, cursor = [], None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = api(srv, "GET", "/v1/jobs", params=params).json()
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


def _check_outputs(srv, summary, n):
    files = summary["files"]
    assert len(files) == n
    assert {f["result"] for f in files} == {"encoded"}, files
    by_id = {j["id"]: j for j in _jobs(srv)}
    for f in files:
        job = by_id[f["job_id"]]
        assert job["status"] == "completed"
        assert sha256_of(f["output"]) == job["output"]["sha256"]


@pytest.mark.stress
def test_encode_batch_survives_sigkill(make_server, tmp_path):
    n = count(4, 8)
    kills = count(3, 10)
    rng = random.Random(42)
    srv = make_server(faults="*=latency:50ms")  # a slower link widens the window the kills land in
    tiny_clips(tmp_path / "in", n)
    home = tmp_path / "home"
    # each job also takes 0.5 s on the server, so the batch is still running when the kills land
    args = ["--json", "encode", "in/*.mp4", "-o", "out", "--profile", PROFILE]
    args += ["--metadata", "sophon_local_delay=0.5"]
    killed = 0
    for _ in range(kills):
        proc = popen_cli(*args, server=srv, home=home, cwd=tmp_path)
        # the kill point: after the k-th new step this run reports (k random), plus a random
        # moment inside the next step; steps of files already done ("cached") do not count
        target = rng.randint(1, 3)
        steps = 0
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("event") == "state" and event.get("state") != "cached":
                steps += 1
                if steps >= target:
                    time.sleep(rng.uniform(0.0, 0.3))
                    break
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
        # whatever sits at an output path is a complete, verified output, never a partial one
        outputs = {json.loads(o)["sha256"] for (o,) in db_rows(srv, "SELECT output FROM jobs")}
        for f in (tmp_path / "out").glob("*"):
            if not f.name.endswith(PART_SUFFIX):
                assert sha256_of(f) in outputs, f"{f.name} is not a finished output"
    assert killed == kills, (killed, kills)  # every kill landed mid-run
    final = run_cli(*args, server=srv, home=home, cwd=tmp_path, timeout=240)
    assert final.returncode == 0, final.stderr
    summary = _summary(final.stdout)
    _check_outputs(srv, summary, n)
    assert count_uploads(srv) == n
    assert count_jobs(srv) == n
    assert not list((tmp_path / "out").glob("*" + PART_SUFFIX))


@pytest.mark.stress
def test_encode_batch_through_faults_finishes_without_duplicates(make_server, tmp_path):
    n = count(6, 20)
    faults = ",".join(
        [
            "*=latency:200ms",
            "*=503:0.05",
            "*=429:0.05:retry-after=1",
            "PUT /v1/uploads/*/parts/*=reset:0.02",
        ]
    )
    srv = make_server(faults=faults, faults_seed=1234)
    tiny_clips(tmp_path / "in", n)
    proc = run_cli(
        "--json",
        "encode",
        "in/*.mp4",
        "-o",
        "out",
        "--profile",
        PROFILE,
        "-j",
        4,
        server=srv,
        home=tmp_path / "home",
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    summary = _summary(proc.stdout)
    _check_outputs(srv, summary, n)
    assert count_uploads(srv) == n  # no duplicate sessions
    assert count_jobs(srv) == n  # no duplicate jobs
    log = read_log(srv)
    statuses = Counter(r["status"] for r in log)
    assert statuses[503] + statuses[429] > 0, statuses  # the faults really fired
    # every POST's retries reuse one key, and no key was sent more than 1 + max_retries times
    per_key = Counter((r["route"], r.get("idempotency_key_hash")) for r in log if r["method"] == "POST")
    assert max(per_key.values()) <= 6, per_key.most_common(3)
    created = Counter(r["route"] for r in log if r["method"] == "POST" and r["status"] == 201)
    assert created["POST /v1/jobs"] >= n
    # 4xx (other than injected 429) never happened, so nothing was mis-sent
    assert not [r for r in log if 400 <= r["status"] < 500 and r["status"] != 429]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_cache_is_set_aside_and_rerun_creates_no_duplicate_jobs(make_server, tmp_path, damage):
    n = 3
    srv = make_server()
    tiny_clips(tmp_path / "in", n)
    home = tmp_path / "home"  # created by the CLI itself
    args = ["encode", "in/*.mp4", "-o", "out", "--profile", PROFILE]
    first = run_cli(*args, server=srv, home=home, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for f in home.iterdir():
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name
    snapshot = home / "state.json"
    journal = home / "state.json.journal"
    text = snapshot.read_text() if snapshot.exists() else ""
    bad = text[: max(1, len(text) // 2)] if damage == "truncated" and text else "\x00garbage{{{ not json"
    snapshot.write_text(bad)
    if journal.exists() and journal.stat().st_size:
        journal.write_text(journal.read_text()[: journal.stat().st_size // 2] + "\x00junk")
    jobs_before, uploads_before = count_jobs(srv), count_uploads(srv)
    again = run_cli("--json", *args, server=srv, home=home, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    warnings = [
        ln for ln in again.stderr.splitlines() if "corrupt" in ln.lower() or "set aside" in ln.lower()
    ]
    assert warnings, again.stderr
    assert list(home.glob("state.json.corrupt*"))
    assert count_jobs(srv) == jobs_before == n
    assert count_uploads(srv) == uploads_before == n
    summary = _summary(again.stdout)
    assert {f["result"] for f in summary["files"]} == {"encoded"}


def test_ctrl_c_mid_upload_exits_130_and_rerun_completes_without_duplicates(make_server, tmp_path):
    srv = make_server(chunk_size=1 * MB, faults="PUT /v1/uploads/*/parts/*=latency:150ms")
    src = padded_video(tmp_path / "in" / "big.mp4", 12 * MB, seed=3)
    home = tmp_path / "home"
    args = ["encode", "in/big.mp4", "-o", "out", "--profile", PROFILE]
    proc = popen_cli(*args, server=srv, home=home, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if db_rows(srv, "SELECT COUNT(*) FROM upload_parts")[0][0] >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the upload finished before Ctrl-C"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last.lower() and "Traceback" not in err
    from sophon_cli.state import StateStore

    entries = StateStore(home / "state.json").load()
    (entry,) = entries.values()  # the state was saved: the file, its session, how far it got
    assert str(entry.get("upload_id", "")).startswith("upl_"), entry
    assert entry.get("state") in ("uploading", "hashed"), entry
    received = db_rows(srv, "SELECT COUNT(*) FROM upload_parts")[0][0]
    assert 0 < received < 12
    final = run_cli(*args, server=srv, home=home, cwd=tmp_path, timeout=240)
    assert final.returncode == 0, final.stderr
    assert count_uploads(srv) == 1 and count_jobs(srv) == 1
    assert sha256_of(src) == db_rows(srv, "SELECT sha256 FROM uploads")[0][0]


@pytest.mark.stress
def test_concurrent_encodes_of_one_batch_share_cache_and_jobs(make_server, tmp_path):
    """Three `sophon encode` processes on the same batch with one cache at once: every run
    succeeds, the cache keeps one finished entry per file, the server one upload and one job each."""
    from sophon_cli.state import StateStore

    n = 4
    srv = make_server()
    tiny_clips(tmp_path / "in", n)
    home = tmp_path / "home"
    procs = [
        popen_cli(
            "--json",
            "encode",
            "in/*.mp4",
            "-o",
            "out",
            "--profile",
            PROFILE,
            server=srv,
            home=home,
            cwd=tmp_path,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert {f["result"] for f in _summary(out)["files"]} == {"encoded"}
    assert count_uploads(srv) == n
    assert count_jobs(srv) == n
    store = StateStore(home / "state.json")
    entries = store.load()
    assert not store.warnings
    assert len(entries) == n and {e.get("state") for e in entries.values()} == {"done"}
    _check_outputs(srv, _summary(results[0][0]), n)


def test_encode_gives_up_when_job_polling_keeps_failing(make_server, tmp_path):
    srv = make_server(faults="GET /v1/jobs*=500:1:retry-after=0.05")
    tiny_clips(tmp_path / "in", 2)
    # small client budgets: a bounded command gives up in seconds; an unbounded one never does
    env = {"SOPHON_MAX_RETRIES": "1", "SOPHON_RETRY_BUDGET": "3"}
    proc = popen_cli(
        "encode",
        "in/*.mp4",
        "-o",
        "out",
        "--profile",
        PROFILE,
        server=srv,
        home=tmp_path / "h",
        cwd=tmp_path,
        env=env,
    )
    try:
        out, err = proc.communicate(timeout=25)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        polls = sum(1 for r in read_log(srv) if r["route"].startswith("GET /v1/jobs"))
        raise AssertionError(f"encode still polling after 25 s ({polls} failed GETs)") from None
    # The server kept failing (5xx after the client's retries): the run stops with that error,
    # exit 1 (an API error; 7 is for files that failed, 8 for a server that cannot be reached).
    assert proc.returncode == 1, err
    assert "the server failed" in err
    assert "Traceback" not in err
