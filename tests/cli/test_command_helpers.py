"""Plain unit tests of the pure parts of the resource commands (no server, no subprocess)."""

from __future__ import annotations

import pytest

from sophon_cli.cli.jobview import (
    failed_error,
    failure_reason,
    job_line,
    progress_description,
    progress_text,
)
from sophon_cli.cli.output import rfc3339
from sophon_cli.cli.shared import build_metadata, check_height, parse_metadata_value
from sophon_cli.client.errors import InputError, JobFailedError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("1.5", 1.5),
        ("true", True),
        ("null", None),
        ('"7"', "7"),
        ('{"a": [1]}', {"a": [1]}),
        ("hello", "hello"),
        ("", ""),
        ("NaN", "NaN"),  # not JSON: kept as the string
        ("{broken", "{broken"),
    ],
)
def test_metadata_values_are_json_when_valid_else_strings(text, value):
    assert parse_metadata_value(text) == value


def test_build_metadata_merges_file_then_pairs():
    meta = build_metadata(["b=2", "c=x=y", " d =[1]"], '{"a": 1, "b": 1}', file_name="m.json")
    assert meta == {"a": 1, "b": 2, "c": "x=y", "d": [1]}
    assert build_metadata(None, None) is None
    assert build_metadata([], "{}") == {}


@pytest.mark.parametrize(
    ("pairs", "text", "needle"),
    [
        (["novalue"], None, "KEY=VALUE"),
        (["=1"], None, "KEY=VALUE"),
        (None, "[1]", "JSON object"),
        (None, "{oops", "not valid JSON"),
        (None, '{"x": NaN}', "not valid JSON"),
        (["big=" + "x" * 16400], None, "16384"),
    ],
)
def test_build_metadata_rejects(pairs, text, needle):
    with pytest.raises(InputError) as info:
        build_metadata(pairs, text, file_name="m.json")
    assert needle in str(info.value)


def test_metadata_limit_is_exactly_16_kib():
    filler = "x" * (16 * 1024 - len('{"k":""}'))
    assert build_metadata([f"k={filler}"], None) == {"k": filler}
    with pytest.raises(InputError):
        build_metadata([f"k={filler}x"], None)


@pytest.mark.parametrize("height", [144, 1080, 4320, None])
def test_height_in_range(height):
    assert check_height(height) == height


@pytest.mark.parametrize("height", [0, 143, 4321, -1])
def test_height_out_of_range(height):
    with pytest.raises(InputError, match="144 and 4320"):
        check_height(height)


def _job(**kw):
    base = {"id": "job_1", "status": "encoding", "progress": {"phase": "encoding", "percent": 42.4}}
    base.update(kw)
    return base


def test_job_rendering_helpers():
    assert job_line(_job(status="queued")) == "job_1  queued"
    assert job_line(_job(status="completed", final_artifact="original")).endswith(
        "no smaller output was made)"
    )
    assert job_line(_job(status="failed", error="boom", status_reason="encode_failed")) == (
        "job_1  failed  (boom (encode_failed))"
    )
    assert failure_reason(_job(status_reason="canceled_by_user")) == "canceled_by_user"
    assert progress_text(_job()) == "42%" and progress_text(_job(status="completed")) == "100%"
    desc = progress_description(
        _job(progress={"phase": "encoding", "percent": 5, "fps": 29.7, "eta_seconds": 12})
    )
    assert desc == "job_1 encoding 30 fps"  # the ETA is the progress display's one ETA column
    assert rfc3339("2026-01-02T03:04:05.123Z") == "2026-01-02T03:04:05Z"
    assert rfc3339(None) == ""


def test_failed_error_names_the_first_bad_job():
    assert failed_error([_job(status="completed")]) is None
    err = failed_error(
        [_job(status="completed"), _job(id="job_2", status="canceled"), _job(id="job_3", status="failed")]
    )
    assert isinstance(err, JobFailedError)
    assert "job job_2 ended canceled" in str(err) and "1 more" in str(err)
