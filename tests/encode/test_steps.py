"""The in-process seam: one file's steps (``sophon_cli.encode.steps``) run for real against the real
local server, without a subprocess, asserting each state transition, what the cache holds after
it, and the events a renderer sees."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path

import pytest

from sophon_cli.client.http import SophonClient
from sophon_cli.encode import EncodeOptions, Event, EventSink, FileEntry, Progress, Result, State, steps
from sophon_cli.encode.inputs import expand_inputs
from sophon_cli.encode.naming import entry_key, output_path_for
from sophon_cli.encode.scheduler import JobWatcher
from sophon_cli.state import StateStore
from tests.conftest import TEST_KEY


@pytest.fixture
def seam(make_server, clip, tmp_path):
    srv = make_server(tmp_path / "srv", chunk_size=8192)
    work = tmp_path / "work"
    work.mkdir()
    src = work / "a.mp4"
    shutil.copyfile(clip, src)
    events: list[Event] = []
    progress: list[Progress] = []
    client = SophonClient(srv.url, TEST_KEY)
    store = StateStore(tmp_path / "state.json")
    options = EncodeOptions(output_dir=work / "out")
    ctx = steps.Context(
        client=client,
        store=store,
        options=options,
        fingerprint=options.fingerprint(server=srv.url),
        sink=EventSink(events.append, progress.append),
        run_id="run-1",
        stop=threading.Event(),
    )
    (source,), _ = expand_inputs([str(src)], cwd=work)
    st = src.stat()
    out = output_path_for(source, options)
    key = entry_key(src, st.st_size, st.st_mtime_ns, ctx.fingerprint, out)
    item = steps.Item(source, key, out, st.st_size, FileEntry())
    item.server = srv  # type: ignore[attr-defined]
    yield ctx, item, events, progress, store
    client.close()


def _stored(store: StateStore, item: steps.Item) -> FileEntry:
    return FileEntry.from_dict(StateStore(store.path).load()[item.key])


def test_each_step_persists_its_state_before_the_next(seam):
    ctx, item, events, progress, store = seam
    src = item.source.path

    digest = steps.hash_source(ctx, item)
    assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
    assert progress[-1].phase == "hashing" and progress[-1].done == progress[-1].total == item.size
    ctx.save(item, State.HASHED, sha256=digest, source_bytes=item.size)
    assert _stored(store, item).state is State.HASHED
    assert _stored(store, item).sha256 == digest

    steps.upload(ctx, item)
    stored = _stored(store, item)
    assert stored.state is State.UPLOADED and stored.upload_id and stored.upload_id.startswith("upl_")
    states = [e.state for e in events]
    assert states[:3] == ["hashed", "uploading", "uploaded"]  # the session id is saved before any part
    assert any(p.phase == "uploading" and p.done == p.total == item.size for p in progress)

    steps.create_job(ctx, item)
    stored = _stored(store, item)
    assert stored.state in (State.JOB_CREATED, State.JOB_DONE) and stored.job_id.startswith("job_")

    # the watcher sees the job through to the end; observe records its facts
    watcher = JobWatcher(ctx.client)
    for _ in range(600):
        job = watcher.fetch_jobs([stored.job_id])[stored.job_id]
        steps.observe(ctx, item, job)
        if job.is_terminal:
            break
        threading.Event().wait(0.05)
    assert item.entry.state is State.JOB_DONE and item.entry.job_status == "completed"
    assert _stored(store, item).output_sha256

    result = steps.finish(ctx, item)
    assert result.result is Result.ENCODED
    out = Path(result.output)
    assert out == item.output and out.is_file()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == _stored(store, item).output_sha256
    final = _stored(store, item)
    assert final.state is State.DONE and final.result is Result.ENCODED
    assert final.output_bytes == out.stat().st_size and final.schema == 2
    assert [e.state for e in events][-2:] == ["downloaded", "done"]

    # a second advance is served from the entry: nothing is sent
    again = steps.advance(ctx, item)
    assert again.cached and again.result is Result.ENCODED
    assert events[-1].state == "cached"


def test_advance_waits_on_its_job_and_a_fresh_entry_resumes_from_the_cache(seam):
    import sqlite3

    ctx, item, events, _, store = seam
    outcome = steps.advance(ctx, item)
    assert isinstance(outcome, steps.Wait)  # the tiny job cannot be done before the first poll
    assert outcome.job_id == item.entry.job_id
    assert _stored(store, item).state is State.JOB_CREATED
    # a new run (a new Item from the stored entry) waits on the same job, then finishes it
    resumed = steps.Item(item.source, item.key, item.output, item.size, _stored(store, item))
    assert steps.advance(ctx, resumed) == steps.Wait(outcome.job_id)
    job = ctx.client.jobs.wait(outcome.job_id, timeout=60)
    steps.observe(ctx, resumed, job)
    result = steps.advance(ctx, resumed)
    assert result.result is Result.ENCODED and not result.cached
    db = sqlite3.connect(f"file:{item.server.config.data_dir / 'sophon.db'}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT COUNT(*) FROM uploads").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    finally:
        db.close()


def test_schema_1_entries_migrate(seam):
    ctx, item, *_ = seam
    old = {
        "state": "job_created",
        "path": str(item.source.path),
        "forced_in_run": "r0",
        "timed_out": True,
        "requests_saved": 3,
        "job_id": "job_x",
        "result": "original kept",
    }
    e = FileEntry.from_dict(old)
    assert e.state is State.JOB_CREATED and e.force_run == "r0" and e.job_id == "job_x"
    assert e.result is Result.ORIGINAL_KEPT
    assert "timed_out" not in e.to_dict() and "requests_saved" not in e.to_dict()
    assert FileEntry.from_dict({"state": "skipped"}).state is State.PENDING  # never a state


def _ctx_with(ctx, **changes):
    import dataclasses

    options = dataclasses.replace(ctx.options, **changes)
    return dataclasses.replace(ctx, options=options)


def _until_terminal(ctx, item) -> None:
    outcome = steps.advance(ctx, item)
    if isinstance(outcome, steps.Wait):
        steps.observe(ctx, item, ctx.client.jobs.wait(outcome.job_id, timeout=60))


def test_a_source_that_is_not_a_video_goes_to_failed_with_no_output(seam):
    ctx, item, events, _, store = seam
    item.source.path.write_bytes(bytes(range(256)) * 40)  # same path, not a video
    st = item.source.path.stat()
    item.size = st.st_size
    result = steps.advance(ctx, item)
    assert result.result is Result.FAILED and "not a usable video" in result.reason
    stored = _stored(store, item)
    assert stored.state is State.FAILED and stored.failed_at_state == "uploading"
    assert not item.output.exists() and not item.output.parent.exists()


def test_options_the_server_refuses_raise_for_the_batch_after_the_upload_is_saved(seam):
    ctx, item, events, _, store = seam
    ctx = _ctx_with(ctx, profile="sophon-none")
    with pytest.raises(steps.OptionsRejected, match="the server rejected the job options: unknown profile"):
        steps.advance(ctx, item)
    stored = _stored(store, item)
    assert stored.state is State.UPLOADED and stored.upload_id and stored.job_id is None


def test_a_file_in_the_way_fails_the_finish_step_and_force_replaces_it(seam):
    ctx, item, events, _, store = seam
    _until_terminal(ctx, item)
    item.output.parent.mkdir(parents=True, exist_ok=True)
    item.output.write_bytes(b"someone else's")
    result = steps.finish(ctx, item)
    assert result.result is Result.FAILED and result.next_step == "overwrite"
    assert item.output.read_bytes() == b"someone else's"
    assert _stored(store, item).state is State.FAILED
    forced = _ctx_with(ctx, force=True)
    result = steps.finish(forced, item)
    assert result.result is Result.ENCODED
    assert hashlib.sha256(item.output.read_bytes()).hexdigest() == _stored(store, item).output_sha256
