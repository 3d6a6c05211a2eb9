"""safe_filename and Content-Disposition parsing: a server-chosen name can never escape the directory."""

from __future__ import annotations

import os

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sophon_cli.client.downloads import (
    filename_from_content_disposition,
    parse_content_range,
    safe_filename,
)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("clip.sophon.mp4", "clip.sophon.mp4"),
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows\\system32.dll", "system32.dll"),
        ("..", "job_1.mp4"),
        (".", "job_1.mp4"),
        ("", "job_1.mp4"),
        (None, "job_1.mp4"),
        ("a\x00b.mp4", "ab.mp4"),
        ("a\nb\r\t.mp4", "ab.mp4"),
        (".hidden", "hidden"),
        ("  spaced.mp4  ", "spaced.mp4"),
        ('what?<>:"|*.mp4', "what_______.mp4"),
        ("CON.mp4", "_CON.mp4"),
        ("evil\u202egnp.mp4", "evilgnp.mp4"),
        ("dir/", "job_1.mp4"),
    ],
)
def test_examples(name, expected):
    assert safe_filename(name, "job_1.mp4") == expected


def test_bad_fallback_falls_back_to_download():
    assert safe_filename("..", "../..") == "download"


def test_long_names_keep_their_extension_within_255_bytes():
    out = safe_filename("é" * 300 + ".mp4", "x.mp4")
    assert out.endswith(".mp4") and len(out.encode()) <= 255


@given(st.text(max_size=400), st.text(max_size=50))
@example("../" * 50 + "x", "")
@example("\x00", "\x00")
def test_property_result_is_one_safe_component(name, fallback):
    out = safe_filename(name, fallback)
    assert out and out not in (".", "..")
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in out)
    assert not out.startswith(".") and out == out.strip()
    assert len(out.encode("utf-8")) <= 255
    assert not os.path.isabs(out)
    assert os.path.basename(out) == out
    assert os.path.normpath(os.path.join("/base", out)).startswith("/base/")


@pytest.mark.parametrize(
    "header,expected",
    [
        ('attachment; filename="clip.sophon.mp4"', "clip.sophon.mp4"),
        ("attachment; filename=plain.mp4", "plain.mp4"),
        ("attachment; filename*=UTF-8''%E2%82%AC%20rates.mp4", "€ rates.mp4"),
        ("attachment", None),
        (None, None),
        ("", None),
    ],
)
def test_content_disposition(header, expected):
    assert filename_from_content_disposition(header) == expected


def test_content_range():
    assert parse_content_range("bytes 100-199/200") == (100, 200)
    assert parse_content_range("bytes 0-9/*") == (0, None)
    assert parse_content_range("bytes */200") is None
    assert parse_content_range(None) is None
