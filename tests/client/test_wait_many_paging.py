"""wait_many's list-page strategy with hundreds of jobs (a state too big to build on the real server in a
test): one list read per tick that stops at the oldest pending job, get only for ids the pages miss."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import httpx
import pytest

from sophon_cli.client.errors import WaitTimeoutError
from sophon_cli.client.http import SophonClient

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Fleet:
    """300 jobs, newest first (job_000 is the newest); ``job_lost`` only answers to GET by id."""

    def __init__(self, finish_at_tick: int):
        self.ids = [f"job_{i:03d}" for i in range(300)]
        self.created = {jid: T0 - timedelta(seconds=i) for i, jid in enumerate(self.ids)}
        self.created["job_lost"] = T0 + timedelta(seconds=5)
        self.finish_at_tick = finish_at_tick
        self.tick = 0
        self.log: list[tuple[int, str]] = []

    def doc(self, jid):
        status = "completed" if self.tick >= self.finish_at_tick else "encoding"
        return {
            "id": jid,
            "status": status,
            "created_at": self.created[jid].isoformat().replace("+00:00", "Z"),
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.log.append((self.tick, path))
        if path == "/v1/jobs":
            q = parse_qs(request.url.query.decode())
            limit = int(q["limit"][0])
            start = int(q.get("cursor", ["0"])[0])
            page = self.ids[start : start + limit]
            more = start + limit < len(self.ids)
            return httpx.Response(
                200,
                json={
                    "jobs": [self.doc(j) for j in page],
                    "has_more": more,
                    "next_cursor": str(start + limit) if more else None,
                },
            )
        return httpx.Response(200, json=self.doc(path.rsplit("/", 1)[1]))


def make(fleet):
    def sleep(_s):
        fleet.tick += 1

    return SophonClient(
        "http://api.test", "k" * 20, transport=httpx.MockTransport(fleet), sleep=sleep, rng=random.Random(1)
    )


def test_pages_stop_at_the_oldest_pending_job_and_missing_ids_use_get():
    fleet = Fleet(finish_at_tick=2)
    pending = ["job_005", "job_050", "job_lost"]
    finals = make(fleet).jobs.wait_many(pending)
    assert [j.id for j in finals] == pending and all(j.status == "completed" for j in finals)
    by_tick = {t: [p for tt, p in fleet.log if tt == t] for t in range(3)}
    # tick 0: ages unknown, so pages are read until the ids are found or the pages end (3 pages)
    assert by_tick[0] == ["/v1/jobs"] * 3 + ["/v1/jobs/job_lost"]
    # later ticks: job_050 is the oldest pending one and sits on the first page -> one page + one get
    assert by_tick[1] == ["/v1/jobs", "/v1/jobs/job_lost"]
    assert by_tick[2] == ["/v1/jobs", "/v1/jobs/job_lost"]


def test_single_job_uses_get_and_timeout_reports_pending_ids():
    fleet = Fleet(finish_at_tick=10**9)
    now = [0.0]

    def sleep(s):
        now[0] += s
        fleet.tick += 1

    client = SophonClient(
        "http://api.test", "k" * 20, transport=httpx.MockTransport(fleet), sleep=sleep, clock=lambda: now[0]
    )
    with pytest.raises(WaitTimeoutError) as info:
        client.jobs.wait("job_001", timeout=10)
    assert info.value.job_ids == ["job_001"] and "job_001 encoding" in str(info.value)
    assert {p for _, p in fleet.log} == {"/v1/jobs/job_001"}
    # backoff 0.5, 0.75, 1.125, ... capped at 5 s: never more than ~10 polls in 10 s, never overshooting
    assert 5 <= len(fleet.log) <= 10 and now[0] == pytest.approx(10.0)
