"""Jobs against the real local server: create/get/list/iter/cancel/wait/wait_many."""

from __future__ import annotations

import pytest

from sophon_cli.cli.hints import hint_for
from sophon_cli.client.errors import ConflictError, InputError, NotFoundError, WaitTimeoutError
from sophon_cli.client.idempotency import intent_key, route_key
from sophon_cli.client.jobs import is_terminal


@pytest.fixture(scope="module")
def upload_id(server, clip):
    from sophon_cli.client.http import SophonClient

    with SophonClient(server.url, server.api_keys[0]) as c:
        return c.uploads.upload_file(clip).upload_id


def test_create_get_and_wait(client, upload_id):
    job = client.jobs.create(
        upload_id, profile="sophon-espresso", container="mkv", metadata={"case": "wait"}, target_height=144
    )
    assert job.id.startswith("job_") and job.profile == "sophon-espresso"
    assert client.jobs.get(job.id).id == job.id
    seen = []
    final = client.jobs.wait(job.id, timeout=120, on_progress=seen.append)
    assert final.status == "completed" and is_terminal(final.status)
    assert seen and seen[-1].status == "completed"
    assert final.metadata == {"case": "wait"}
    assert final.output.container == "mkv" and final.output.sha256 and final.output.bytes
    assert final.output.target_height == 144 and final.output.height == 120  # never upscaled


def test_create_replays_with_the_same_key(client, upload_id):
    key = route_key(intent_key("job", upload=upload_id, profile="sophon-espresso", n=1), "create-job")
    a = client.jobs.create(upload_id, profile="sophon-espresso", idempotency_key=key)
    b = client.jobs.create(upload_id, profile="sophon-espresso", idempotency_key=key)
    assert a.id == b.id
    with pytest.raises(ConflictError) as info:  # same key, different body
        client.jobs.create(upload_id, profile="sophon-cortado", idempotency_key=key)
    assert info.value.code == "conflict" and "--new" in hint_for(info.value)
    client.jobs.wait(a.id, timeout=120)


def test_local_validation_happens_before_any_request(client, upload_id, request_log):
    with pytest.raises(InputError):
        client.jobs.create(upload_id, target_height=100)
    with pytest.raises(InputError):
        client.jobs.create(upload_id, metadata={"big": "x" * 20000})
    assert request_log.entries() == []


def test_cancel_a_queued_job_and_cancel_again_conflicts(client, upload_id):
    # one worker: the third job queues behind the first two
    jobs = [client.jobs.create(upload_id, profile="sophon-espresso") for _ in range(3)]
    canceled = client.jobs.cancel(jobs[-1].id)
    assert canceled.status == "canceled"
    with pytest.raises(ConflictError) as info:
        client.jobs.cancel(jobs[-1].id)
    assert info.value.code == "job_not_cancelable" and hint_for(info.value)
    finals = client.jobs.wait_many([j.id for j in jobs], timeout=120)
    assert [j.id for j in finals] == [j.id for j in jobs]
    assert finals[-1].status == "canceled"  # returned, not raised: the caller decides
    assert all(j.status == "completed" for j in finals[:2])


def test_wait_times_out_with_the_pending_ids(client, upload_id):
    job = client.jobs.create(upload_id, profile="sophon-espresso")
    with pytest.raises(WaitTimeoutError) as info:
        client.jobs.wait(job.id, timeout=0)
    assert info.value.job_ids == [job.id] and hint_for(info.value)
    client.jobs.wait(job.id, timeout=120)


def test_wait_many_polls_with_list_pages_not_one_get_per_job(client, upload_id, request_log):
    ids = [client.jobs.create(upload_id, profile="sophon-espresso").id for _ in range(4)]
    request_log.mark()
    progress = []
    finals = client.jobs.wait_many(ids + [ids[0]], timeout=180, on_progress=progress.append)
    assert [j.id for j in finals] == ids and all(j.status == "completed" for j in finals)
    entries = request_log.entries("GET")
    lists = [e for e in entries if e["route"] == "GET /v1/jobs"]
    gets = [e for e in entries if e["route"] == "GET /v1/jobs/{id}"]
    assert entries[0]["route"] == "GET /v1/jobs", "with 4 pending jobs the first tick reads a list page"
    # one get per pending job per tick would cost len(progress) requests (one callback each)
    assert len(lists) + len(gets) < len(progress)
    assert {j.id for j in progress} == set(ids)


def test_list_and_iter_follow_cursors(client, upload_id, request_log):
    made = [client.jobs.create(upload_id, profile="sophon-espresso").id for _ in range(3)]
    page = client.jobs.list(limit=2)
    assert len(page.jobs) == 2 and page.has_more and page.next_cursor
    assert [j.id for j in page.jobs] == made[::-1][:2]  # newest first
    request_log.mark()
    seen = [j.id for j in client.jobs.iter(page_size=2)]
    assert seen[:3] == made[::-1]
    assert len(seen) == len(set(seen))
    assert len(request_log.entries("GET", "GET /v1/jobs")) == -(-len(seen) // 2)
    client.jobs.wait_many(made, timeout=180)
    assert all(j.status == "completed" for j in client.jobs.iter(status="completed"))


def test_unknown_job_is_not_found(client):
    with pytest.raises(NotFoundError) as info:
        client.jobs.get("job_nope")
    assert info.value.status == 404 and info.value.request_id and "sophon job list" in hint_for(info.value)


def test_poll_is_one_round_of_reads_in_the_order_asked(client, upload_id, request_log):
    ids = [client.jobs.create(upload_id, profile="sophon-espresso").id for _ in range(3)]
    request_log.mark()
    few = client.jobs.poll(ids[:2])  # below the list threshold: one get per id
    assert [j.id for j in few] == ids[:2]
    assert len(request_log.entries("GET", "GET /v1/jobs/{id}")) == 2
    request_log.mark()
    many = client.jobs.poll(list(reversed(ids)) + [ids[0]])  # duplicates asked once
    assert [j.id for j in many] == list(reversed(ids))
    entries = request_log.entries("GET")
    assert [e["route"] for e in entries] == ["GET /v1/jobs"], "three ids: one list page, no gets"
    client.jobs.wait_many(ids, timeout=180)
    assert all(is_terminal(j.status) and j.is_terminal for j in client.jobs.poll(ids))
