"""Canceling a job is one conditional UPDATE: the canceled job keeps the progress stored at that
moment, with ``phase`` and ``stage`` ``canceled``, and the answer is the stored row.

Before, ``cancel_job`` read the job, then wrote the progress it had read back with the canceled
phase: a worker's progress write between the read and the write was lost (the progress went back).
The race is made deterministic here: the test holds SQLite's write lock (``BEGIN IMMEDIATE``) with
a progress write of its own pending, sends the cancel, waits until the server's handler is blocked
on that lock inside ``Store.tx`` (its thread's Python frames say so), then commits. Whatever the
handler read before taking the lock, the progress it stores must be the committed one."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from .helpers import Api

HELD = {"sophon_local_delay": 600}  # waits in its encoding phase until canceled


def _handler_waits_for_the_write_lock(handler: str) -> bool:
    """Some thread is in ``Store.tx`` (taking the write lock) called from route ``handler``."""
    for frame in sys._current_frames().values():
        if frame.f_code.co_name != "tx" or not frame.f_code.co_filename.endswith("store.py"):
            continue
        f = frame.f_back
        while f is not None:
            if f.f_code.co_name == handler:
                return True
            f = f.f_back
    return False


def _wait_until(cond, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.timeout(180)
def test_cancel_keeps_the_progress_written_just_before_it(make_server, clip):
    srv = make_server()
    api = Api(srv)
    try:
        job = api.create_job(api.upload(clip), "sophon-espresso", metadata=HELD)
        jid = job["id"]
        _wait_until(lambda: api.get(f"/v1/jobs/{jid}").json()["status"] == "encoding", "encoding")
        before = api.get(f"/v1/jobs/{jid}").json()["progress"]
        assert before["phase"] == "encoding" and before["percent"] != 42.5

        db = sqlite3.connect(Path(srv.data_dir) / "sophon.db", timeout=30, isolation_level=None)
        answer: list = []
        try:
            db.execute("BEGIN IMMEDIATE")
            # a worker's progress write, not yet committed (invisible to the handler's reads)
            db.execute(
                "UPDATE jobs SET progress=json_set(progress, '$.percent', 42.5, '$.phase_percent', 50.0,"
                " '$.frames_done', 7) WHERE id=?",
                (jid,),
            )
            t = threading.Thread(target=lambda: answer.append(api.delete(f"/v1/jobs/{jid}")))
            t.start()
            _wait_until(lambda: _handler_waits_for_the_write_lock("cancel_job"), "the cancel to wait")
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
        t.join(60)
        assert answer, "the cancel did not answer"
        r = answer[0]
        assert r.status_code == 200, r.text
        canceled = r.json()
        progress = canceled["progress"]
        assert canceled["status"] == "canceled"
        assert progress["phase"] == "canceled" and progress["stage"] == "canceled"
        assert (progress["percent"], progress["phase_percent"], progress["frames_done"]) == (42.5, 50.0, 7)
        stored = api.get(f"/v1/jobs/{jid}").json()
        assert stored == canceled  # the answer is the stored row
    finally:
        api.close()


def test_a_terminal_job_always_has_its_status_as_progress_phase(make_server, clip):
    """Every way a job ends stores ``progress.phase`` = ``stage`` = its status (cancel from queued
    too: no read of the job first)."""
    srv = make_server(workers=1)
    api = Api(srv)
    try:
        up = api.upload(clip)
        held = api.create_job(up, "sophon-espresso", metadata=HELD)  # keeps the one worker busy
        queued = api.create_job(up, "sophon-espresso")
        r = api.delete(f"/v1/jobs/{queued['id']}")
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["status"] == "canceled"
        assert (got["progress"]["phase"], got["progress"]["stage"]) == ("canceled", "canceled")
        assert api.get(f"/v1/jobs/{queued['id']}").json() == got
        again = api.delete(f"/v1/jobs/{queued['id']}")
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancelable"
        missing = api.delete("/v1/jobs/job_doesnotexist")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert api.delete(f"/v1/jobs/{held['id']}").status_code == 200
    finally:
        api.close()
