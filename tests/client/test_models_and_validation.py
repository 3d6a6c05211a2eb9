"""Lenient models, local validation of job options and upload inputs (pure, no server)."""

from __future__ import annotations

import os

import pytest

from sophon_cli.client.errors import InputError
from sophon_cli.client.jobs import (
    build_job_request,
    is_terminal,
    next_poll_interval,
    parse_time,
    validate_metadata,
    validate_target_height,
)
from sophon_cli.client.models import Job, JobList, UploadStatus, Webhook
from sophon_cli.client.uploads import check_local_file, file_sha256, guess_mime_type, part_range


def test_job_model_is_lenient_about_new_values_and_fields():
    job = Job.model_validate(
        {
            "id": "job_1",
            "status": "teleporting",  # a status this client has never heard of
            "profile": "sophon-future-hq",
            "progress": {"phase": "quantum", "percent": 12.5, "new_thing": 1},
            "output": {"container": "webm", "state": "pending", "audio": False},
            "brand_new_field": {"x": 1},
            "final_artifact": "original",
            "saved_percent": 0,
        }
    )
    assert job.status == "teleporting" and not job.is_terminal
    assert job.progress.phase == "quantum"
    assert job.model_extra["brand_new_field"] == {"x": 1}
    assert job.final_artifact == "original" and job.saved_percent == 0.0
    assert job.source.sha256 is None and job.error is None


def test_minimal_models_parse():
    assert JobList.model_validate({"jobs": []}).next_cursor is None
    assert UploadStatus.model_validate({"id": "u", "status": "uploading"}).received_chunks == []


def test_webhook_secret_not_in_repr():
    hook = Webhook.model_validate({"id": "wh_1", "url": "https://x", "secret": "s3cr3t" * 8, "active": True})
    assert hook.secret and "s3cr3t" not in repr(hook)


@pytest.mark.parametrize("status", ["completed", "failed", "canceled"])
def test_terminal(status):
    assert is_terminal(status)


@pytest.mark.parametrize(
    "status", ["queued", "probing", "encoding", "muxing", "uploading_output", None, "new"]
)
def test_not_terminal(status):
    assert not is_terminal(status)


def test_poll_interval_grows_and_caps():
    seq = [0.5]
    for _ in range(10):
        seq.append(next_poll_interval(seq[-1]))
    assert seq[1] == pytest.approx(0.75) and max(seq) == 5.0 and seq == sorted(seq)


@pytest.mark.parametrize("h", [144, 720, 4320, None])
def test_target_height_ok(h):
    assert validate_target_height(h) == h


@pytest.mark.parametrize("h", [143, 4321, 0, -1, 720.0, "720", True])
def test_target_height_rejected(h):
    with pytest.raises(InputError) as info:
        validate_target_height(h)
    assert "144" in info.value.hint and "4320" in info.value.hint


def test_metadata_limits():
    assert validate_metadata({"a": 1}) == {"a": 1}
    just_fits = {"k": "x" * (16 * 1024 - len('{"k":""}'))}
    assert validate_metadata(just_fits) is just_fits
    with pytest.raises(InputError, match="16384"):
        validate_metadata({"k": "x" * (16 * 1024)})
    with pytest.raises(InputError, match="object"):
        validate_metadata(["a"])
    with pytest.raises(InputError):
        validate_metadata({"f": float("nan")})
    with pytest.raises(InputError):
        validate_metadata({"o": object()})
    # multi-byte characters count as bytes
    with pytest.raises(InputError):
        validate_metadata({"k": "é" * (9 * 1024)})


def test_build_job_request_shapes_body():
    body = build_job_request(
        "upl_1",
        profile="sophon-espresso",
        container="mkv",
        audio=True,
        target_height=480,
        webhook_ids=["wh_1"],
        metadata={"a": 1},
    )
    assert body == {
        "source": {"type": "upload", "upload_id": "upl_1"},
        "profile": "sophon-espresso",
        "output": {"container": "mkv", "audio": True, "target_height": 480},
        "webhook_ids": ["wh_1"],
        "metadata": {"a": 1},
    }
    with pytest.raises(InputError):
        build_job_request("")


def test_parse_time():
    assert parse_time("2026-01-02T03:04:05Z").tzinfo is not None
    assert parse_time("2026-01-02T03:04:05.5+02:00") < parse_time("2026-01-02T03:04:05Z")
    assert parse_time("nope") is None and parse_time(None) is None


def test_local_file_checks(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputError) as info:
        check_local_file(missing)
    assert str(missing) in str(info.value) and info.value.hint
    with pytest.raises(InputError, match="directory"):
        check_local_file(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty") as info:
        check_local_file(empty)
    assert str(empty) in str(info.value)
    good = tmp_path / "ok.mp4"
    good.write_bytes(b"abc")
    assert check_local_file(good) == (good, 3)
    assert file_sha256(good) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file(tmp_path):
    locked = tmp_path / "locked.mp4"
    locked.write_bytes(b"abc")
    locked.chmod(0)
    try:
        with pytest.raises(InputError, match="permission") as info:
            check_local_file(locked)
        assert str(locked) in str(info.value)
    finally:
        locked.chmod(0o600)


@pytest.mark.parametrize(
    "name,mime",
    [
        ("a.mp4", "video/mp4"),
        ("a.MOV", "video/quicktime"),
        ("a.mkv", "video/x-matroska"),
        ("a.webm", "video/webm"),
        ("noext", "video/mp4"),
        ("a.weird-ext", "video/mp4"),
    ],
)
def test_guess_mime(name, mime):
    assert guess_mime_type(name) == mime


def test_part_range():
    assert part_range(0, 10, 25) == (0, 10)
    assert part_range(2, 10, 25) == (20, 5)
    assert part_range(3, 10, 25) == (30, 0)
