"""`sophon encode` end to end against the real local server (fresh server per test)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.encode.conftest import place

STEPS = ["uploading", "uploaded", "job_created", "job_done", "downloaded", "done"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _codec(path: Path) -> str:
    import av

    with av.open(str(path)) as f:
        return f.streams.video[0].codec_context.name


def test_glob_batch_end_to_end_then_rerun_does_nothing_new(world, clip_bank):
    sources = place(clip_bank[:4], world.work / "videos" / "day1")
    (world.work / "videos" / "notes.txt").write_text("not a video")

    run = world.encode("videos/**/*", "-o", "out", "--json")
    assert run.returncode == 0, run.stderr
    events = run.events()
    ignored = [e for e in events if e["event"] == "ignored"]
    assert [e["file"] for e in ignored] == ["videos/notes.txt"]

    summary = run.summary()
    assert summary["exit_code"] == 0
    assert summary["counts"] == {"encoded": 4}
    for src in sources:
        out = world.work / "out" / "day1" / f"{src.stem}.sophon.mp4"  # layout below the glob kept
        assert out.is_file()
        assert _codec(out) == "hevc"
        assert out.stat().st_size < src.stat().st_size
        row = next(f for f in summary["files"] if f["file"] == f"videos/day1/{src.name}")
        assert row["result"] == "encoded" and row["output"] == str(out)
        assert row["source_bytes"] == src.stat().st_size and row["output_bytes"] == out.stat().st_size
        assert 0 < row["saved_percent"] < 100
        assert row["effective_profile"]
        # one NDJSON event per state change, in state-machine order
        states = [e["state"] for e in events if e.get("file") == f"videos/day1/{src.name}"]
        assert [s for s in states if s in STEPS] == STEPS, states

    jobs = world.jobs()
    assert len(jobs) == 4 and len({j.id for j in jobs}) == 4
    assert world.upload_count() == 4

    # Waiting on several jobs costs one list request per tick, not one get per job.
    from sophon_cli.client.http import SophonClient
    from sophon_cli.encode import EncodeOptions, Pipeline
    from sophon_cli.state import StateStore
    from tests.conftest import TEST_KEY

    with SophonClient(world.server.url, TEST_KEY) as client:
        pipe = Pipeline(client, StateStore(world.root / "unused.json"), EncodeOptions())
        before = len(world.requests())
        tick = pipe.watcher.fetch_jobs([j.id for j in jobs])
        assert {k: v.status for k, v in tick.items()} == {j.id: "completed" for j in jobs}
        assert [r["route"] for r in world.requests()[before:]] == ["GET /v1/jobs"]
    outputs = {p: _sha(p) for p in (world.work / "out").rglob("*.mp4")}
    seen = len(world.requests())

    # The same command again: every file is skipped from the cache; not a single request is made.
    again = world.encode("videos/**/*", "-o", "out", "--json")
    assert again.returncode == 0, again.stderr
    assert {e["state"] for e in again.events() if e["event"] == "state"} == {"cached"}
    assert again.summary()["counts"] == {"encoded": 4}
    assert world.requests()[seen:] == []
    assert len(world.jobs()) == 4 and world.upload_count() == 4
    assert {p: _sha(p) for p in (world.work / "out").rglob("*.mp4")} == outputs


def test_plain_output_and_summary_table(world, clip_bank):
    place(clip_bank[:2], world.work)
    run = world.encode("*.mp4")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split("\t") == ["FILE", "SOURCE", "OUTPUT", "SAVED", "PROFILE", "RESULT"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == ["video0.mp4", "video1.mp4"]
    for r in rows:
        assert r[5] == "encoded"
        assert r[3].endswith("%") and float(r[3].rstrip("%")) > 0
        assert r[4].startswith("sophon-auto/")
    # stderr: plain lines on each state change, no progress animation
    assert "video0.mp4: job created (job_" in run.stderr
    assert "video1.mp4: done: encoded" in run.stderr
    assert "\r" not in run.stderr and "\x1b[" not in run.stderr
    assert "test-key" not in run.stderr + run.stdout
    # the outputs written next to the sources are not taken as inputs on the next run
    again = world.encode("*.mp4", "--json")
    assert again.returncode == 0
    files = [f["file"] for f in again.summary()["files"]]
    assert files == ["video0.mp4", "video1.mp4"]
    assert len(world.jobs()) == 2


def test_cache_deleted_then_rerun_creates_no_duplicates(world, clip_bank):
    place(clip_bank[:3], world.work / "v")
    first = world.encode("v/*.mp4", "-o", "out", "--json")
    assert first.returncode == 0, first.stderr
    job_ids = {f["job_id"] for f in first.summary()["files"]}
    assert len(job_ids) == 3

    for p in world.home.glob("state.json*"):
        p.unlink()
    for p in (world.work / "out").iterdir():
        p.unlink()

    second = world.encode("v/*.mp4", "-o", "out", "--json")
    assert second.returncode == 0, second.stderr
    assert {f["job_id"] for f in second.summary()["files"]} == job_ids  # replayed, not recreated
    assert len(world.jobs()) == 3
    assert world.upload_count() == 3
    assert len(list((world.work / "out").iterdir())) == 3


def test_force_starts_a_fresh_job(world, clip_bank):
    place(clip_bank[:1], world.work)
    first = world.encode("video0.mp4", "--json")
    assert first.returncode == 0, first.stderr
    forced = world.encode("video0.mp4", "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert forced.summary()["files"][0]["job_id"] != first.summary()["files"][0]["job_id"]
    assert len(world.jobs()) == 2
    assert world.upload_count() == 1  # the server's copy of the bytes is reused
    # and a plain rerun after that does nothing new
    again = world.encode("video0.mp4", "--json")
    assert again.summary()["files"][0]["job_id"] == forced.summary()["files"][0]["job_id"]
    assert len(world.jobs()) == 2


def test_dry_run_makes_no_post(world, clip_bank):
    place(clip_bank[:3], world.work)
    before = len(world.requests())
    plan = world.encode("*.mp4", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    assert world.requests()[before:] == []  # no POST (no request at all)
    actions = {e["file"]: e["action"] for e in plan.events() if e["event"] == "plan"}
    assert actions == {"video0.mp4": "upload", "video1.mp4": "upload", "video2.mp4": "upload"}
    assert world.jobs() == []

    assert world.encode("video0.mp4").returncode == 0
    before = len(world.requests())
    plan = world.encode("*.mp4", "--dry-run")
    assert plan.returncode == 0
    assert [r for r in world.requests()[before:] if r["method"] == "POST"] == []
    rows = {line.split("\t")[0]: line.split("\t")[1] for line in plan.stdout.splitlines()[1:]}
    assert rows == {"video0.mp4": "skip", "video1.mp4": "upload", "video2.mp4": "upload"}
    assert len(world.jobs()) == 1


def test_a_pattern_matching_nothing_exits_2_naming_it(world, clip_bank):
    place(clip_bank[:1], world.work)
    run = world.encode("video0.mp4", "missing/*.mov")
    assert run.returncode == 2
    assert run.stderr.startswith("error: ") and "missing/*.mov" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert world.requests() == []


def test_tty_shows_an_overall_bar_and_a_line_per_active_file(world, clip_bank):
    from tests.helpers.tty import pty_run

    place(clip_bank[:2], world.work)
    code, data = pty_run(["encode", "*.mp4"], world.env(), cwd=world.work, columns=100)
    assert code == 0
    text = data.decode("utf-8", "replace")
    assert "2 files" in text and "━" in text  # the overall bar
    import re

    # a line per active file, naming its current step
    assert re.search(
        r"video0\.mp4 +(hashing|uploading|uploaded|job created|queued|encoding|downloading)", text
    )
    assert "\x1b[" in text  # live display, not plain lines
    assert "video0.mp4: done" not in text
    assert "┃" in text and "saved" in text  # the summary as a rich table


def test_a_display_that_raises_fails_no_file(world, clip_bank):
    """The event and progress subscribers are the front end's display: an exception in one is a
    renderer bug, kept for the run to report at its end, never the failure of the user's file."""
    from sophon_cli.client.http import SophonClient
    from sophon_cli.encode import EncodeOptions, Pipeline, expand_inputs
    from sophon_cli.state import StateStore
    from tests.conftest import TEST_KEY

    place(clip_bank[:2], world.work / "v")
    seen: list[str] = []

    def broken_event(ev) -> None:
        seen.append(ev.state)
        raise BrokenPipeError(f"renderer bug on {ev.state}")  # an OSError: once a per-file failure

    def broken_progress(_p) -> None:
        raise ValueError("progress bar bug")

    sources, _ = expand_inputs([str(world.work / "v")], recursive=True, cwd=world.work)
    with SophonClient(world.server.url, TEST_KEY) as client:
        pipe = Pipeline(
            client,
            StateStore(world.root / "state.json"),
            EncodeOptions(output_dir=world.work / "out"),
            on_event=broken_event,
            on_progress=broken_progress,
        )
        report = pipe.run(sources)
    assert [r.result.value for r in report.results] == ["encoded", "encoded"], report.results
    assert all(Path(r.output).is_file() for r in report.results)  # type: ignore[arg-type]
    assert "done" in seen and "downloaded" in seen  # every event was still offered to it
    assert isinstance(report.display_error, (BrokenPipeError, ValueError))  # the first one, kept
