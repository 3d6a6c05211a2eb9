"""Downloads against the real local server: 302 by hand, verification, Range resume, safety rules."""

from __future__ import annotations

import hashlib
import logging
import re

import pytest

from sophon_cli.cli.hints import hint_for
from sophon_cli.client.errors import AuthError, ConflictError, InputError, error_from_response
from sophon_cli.client.files import part_path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _downloads(log):
    return [e["status"] for e in log.entries("GET", "GET /v1/downloads/{token}")]


def test_download_to_a_file_is_verified_and_atomic(client, completed_job, tmp_path, request_log):
    job, _ = completed_job
    target = tmp_path / "out.mp4"
    progress = []
    result = client.downloads.download(job.id, target, on_progress=lambda d, t: progress.append((d, t)))
    assert result.path == str(target) and not result.skipped
    assert result.sha256 == job.output.sha256 == _sha(target)
    assert result.bytes == job.output.bytes == target.stat().st_size
    assert not part_path(tmp_path / "out.mp4").exists()
    assert progress[-1] == (job.output.bytes, job.output.bytes)
    assert request_log.entries("GET", "GET /v1/jobs/{id}/output")[0]["status"] == 302
    assert _downloads(request_log) == [200]


def test_download_into_a_directory_uses_the_sanitised_server_name(client, completed_job, tmp_path):
    job, up = completed_job
    result = client.downloads.download(job.id, str(tmp_path) + "/", job=job)
    # the server names the output after the upload's name (derived from its content)
    name = client.uploads.get(up.upload_id).file_name.rsplit(".", 1)[0] + ".sophon.mp4"
    assert result.path == str(tmp_path / name)
    assert _sha(tmp_path / name) == job.output.sha256
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_existing_target_needs_force(client, completed_job, tmp_path, request_log):
    job, _ = completed_job
    target = tmp_path / "out.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(InputError) as info:
        client.downloads.download(job.id, target, job=job)
    assert "--force" in hint_for(info.value) and target.read_bytes() == b"precious"
    assert request_log.entries() == []  # refused before any request
    client.downloads.download(job.id, target, job=job, force=True)
    assert _sha(target) == job.output.sha256


def test_truncated_part_is_resumed_with_range(client, completed_job, tmp_path, request_log, server):
    job, _ = completed_job
    whole = tmp_path / "whole.mp4"
    client.downloads.download(job.id, whole, job=job)
    data = whole.read_bytes()
    target = tmp_path / "resumed.mp4"
    part_path(tmp_path / "resumed.mp4").write_bytes(data[: len(data) // 2])
    request_log.mark()
    result = client.downloads.download(job.id, target, job=job)
    assert result.resumed_from == len(data) // 2
    assert target.read_bytes() == data
    assert _downloads(request_log) == [206]


def test_corrupt_part_is_discarded_and_refetched(client, completed_job, tmp_path, request_log):
    job, _ = completed_job
    target = tmp_path / "fixed.mp4"
    part_path(tmp_path / "fixed.mp4").write_bytes(b"\0" * 1000)  # wrong bytes from some other run
    result = client.downloads.download(job.id, target, job=job)
    assert _sha(target) == job.output.sha256 == result.sha256
    assert _downloads(request_log) == [206, 200]  # resumed, failed verification, restarted from zero
    assert not part_path(tmp_path / "fixed.mp4").exists()


def test_unfinished_job_surfaces_output_not_ready(client, server, clip, tmp_path):
    up = client.uploads.upload_file(clip)
    jobs = [client.jobs.create(up.upload_id, profile="sophon-espresso") for _ in range(3)]
    target = tmp_path / "early.mp4"
    with pytest.raises(ConflictError) as info:
        client.downloads.download(jobs[-1].id, target)
    assert info.value.code == "output_not_ready" and "wait" in hint_for(info.value)
    assert list(tmp_path.iterdir()) == []
    client.jobs.wait_many([j.id for j in jobs], timeout=180)


def test_original_artifact_is_not_downloaded(client, efficient_clip, tmp_path, request_log):
    up = client.uploads.upload_file(efficient_clip)
    job = client.jobs.wait(client.jobs.create(up.upload_id, profile="sophon-auto").id, timeout=120)
    assert job.status == "completed" and job.final_artifact == "original" and job.saved_percent == 0
    request_log.mark()
    result = client.downloads.download(job.id, tmp_path / "x.mkv", job=job)
    assert result.skipped and result.final_artifact == "original" and result.path is None
    assert list(tmp_path.iterdir()) == [] and request_log.entries() == []


def test_bad_token_maps_to_auth_error_without_the_token(client, completed_job):
    job, _ = completed_job
    url = client.downloads.output_url(job.id)
    token = url.rsplit("/", 1)[1]
    response = client.anon_client().get(url[:-4] + "AAAA")
    err = error_from_response(response)
    assert isinstance(err, AuthError) and err.status == 403
    assert "fresh link" in hint_for(err) and token[:-4] not in str(err)


def test_key_and_tokens_never_reach_the_logs(client, completed_job, tmp_path, caplog, server):
    job, _ = completed_job
    with caplog.at_level(logging.DEBUG):
        client.downloads.download(job.id, tmp_path / "logged.mp4", job=job)
        client.jobs.get(job.id)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "/v1/downloads/" in text  # the request was logged...
    assert not re.search(r"/v1/downloads/(?!\*\*\*)", text)  # ...with the token redacted
    assert server.api_keys[0] not in text
