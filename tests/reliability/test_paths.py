"""Paths: a Content-Disposition file name (from the server) or a --name-template (from the user)
with ``../``, absolute paths, NUL or control characters never writes outside the output directory.

The download test drives the real client download code; the server side is an
``httpx.MockTransport`` because the local server sanitises its own names and so cannot send
hostile ones (the odd edge a real server cannot produce).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sophon_cli.client.files import PART_SUFFIX

from .stress import count

SENTINEL = Path(tempfile.gettempdir()) / "sophon-rel-sentinel"
PIECES = [
    "..",
    ".",
    "/",
    "\\",
    "../",
    "..\\",
    "../../",
    f"{SENTINEL}/",
    str(SENTINEL),
    "/etc/",
    "C:\\",
    "\x00",
    "\x01",
    "\x1b[31m",
    "\x7f",
    "\n",
    "\r",
    "\t",
    "a",
    "out.mp4",
    "é",
    "\u202e",
    "%2e%2e%2f",
    " ",
    "~",
    "CON",
    ":",
    "*",
    ".hidden",
]
names = st.one_of(
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join),
    st.text(min_size=1, max_size=40),
)
BODY = b"not really a video, but the bytes the job says"


def _transport(disposition: str):
    import httpx

    sha = hashlib.sha256(BODY).hexdigest()
    job = {
        "id": "job_1",
        "status": "completed",
        "profile": "sophon-espresso",
        "final_artifact": "encoded",
        "output": {"state": "available", "container": "mp4", "bytes": len(BODY), "sha256": sha},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/jobs/job_1":
            return httpx.Response(200, json=job)
        if path == "/v1/jobs/job_1/output":
            return httpx.Response(302, headers={"Location": "/v1/downloads/tok123"})
        if path == "/v1/downloads/tok123":
            assert "authorization" not in request.headers
            headers = [
                (b"content-type", b"video/mp4"),
                (b"content-length", str(len(BODY)).encode()),
                (b"content-disposition", disposition.encode("latin-1")),
            ]
            return httpx.Response(200, headers=headers, content=BODY)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no", "retryable": False}})

    return httpx.MockTransport(handler)


def _dispositions(name: str) -> list[str]:
    out = [f"attachment; filename*=UTF-8''{quote(name, safe='')}"]
    if all(32 <= ord(c) < 127 and c not in '"\\' for c in name):
        out.append(f'attachment; filename="{name}"')
        out.append(f"attachment; filename={name}")
    return out


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]


@settings(
    max_examples=count(60, 500),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(name=names)
@example(name="../../evil.mp4")
@example(name=f"{SENTINEL}/abs.mp4")
@example(name="..")
@example(name="a\x00b.mp4")
@example(name="\r\nX-Evil: 1")
def test_content_disposition_never_writes_outside_output_dir(name):
    from sophon_cli.client.errors import SophonError
    from sophon_cli.client.http import SophonClient

    shutil.rmtree(SENTINEL, ignore_errors=True)
    SENTINEL.mkdir()
    root = Path(tempfile.mkdtemp(prefix="sophon-rel-paths-"))
    try:
        out = root / "sub" / "out"
        out.mkdir(parents=True)
        for disposition in _dispositions(name):
            with SophonClient(
                "http://api.test", "k", transport=_transport(disposition), sleep=lambda s: None
            ) as c:
                try:
                    result = c.downloads.download("job_1", f"{out}/", force=True)
                except SophonError:
                    continue  # refusing is fine; writing outside is not
            written = Path(result.path)
            assert written.parent == out, (name, disposition, written)
            assert written.name not in ("", ".", "..")
            assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in written.name)
            assert written.read_bytes() == BODY
        files = _all_files(root)
        assert all(out in f.parents for f in files), files
        assert not any(f.name.endswith(PART_SUFFIX) for f in files)
        assert not any(SENTINEL.iterdir()), list(SENTINEL.iterdir())
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(SENTINEL, ignore_errors=True)


# -- --name-template (user input) ------------------------------------------------------------------

templates = st.lists(
    st.sampled_from(
        [
            "{stem}",
            "{ext}",
            "{name}",
            "{suffix}",
            "{profile}",
            ".",
            "..",
            "/",
            "../",
            "x",
            "\x00",
            "\n",
            f"{SENTINEL}/",
        ]
    ),
    min_size=1,
    max_size=6,
).map("".join)
profiles = st.sampled_from(["sophon-auto", "sophon-espresso", "sophon-cortado-hq-10bit"])
hostile_profiles = st.sampled_from(["../../up", "/abs/p", "a/../../b", "x\x00"])
stems = st.sampled_from(["clip", "my clip", "..clip", "é", "a.b.c", "-x", "..."])


def _check_template(template, profile, stem):
    from sophon_cli.client.errors import InputError
    from sophon_cli.encode import EncodeOptions, Source, output_path_for

    out_dir = Path(tempfile.gettempdir()) / "sophon-rel-out"
    base = Path(tempfile.gettempdir()) / "sophon-rel-in"
    try:
        options = EncodeOptions(profile=profile, output_dir=out_dir, name_template=template)
    except InputError:
        return  # rejected up front: fine
    src = Source(path=base / f"{stem}.mov", base=base, display=f"{stem}.mov")
    try:
        target = output_path_for(src, options)
    except InputError:
        return
    resolved = Path(os.path.normpath(target))
    assert resolved == out_dir or out_dir in resolved.parents, (template, profile, resolved)


@settings(max_examples=count(300, 3000), deadline=None, derandomize=True)
@given(template=templates, profile=profiles, stem=stems)
@example(template="../{stem}.{ext}", profile="sophon-auto", stem="clip")
@example(template="{stem}/../../{ext}", profile="sophon-auto", stem="clip")
def test_name_template_never_escapes_output_dir(template, profile, stem):
    """A template the pipeline accepts gives a path inside the output directory for any source name."""
    _check_template(template, profile, stem)


@settings(max_examples=count(100, 1000), deadline=None, derandomize=True)
@given(template=templates, profile=hostile_profiles, stem=stems)
@example(template="{profile}.{ext}", profile="../../up", stem="clip")
def test_name_template_with_hostile_profile_never_escapes_output_dir(template, profile, stem):
    _check_template(template, profile, stem)


@pytest.mark.parametrize("template", ["/abs/{stem}", "../{stem}.{ext}", "{stem}/../../x", ""])
def test_name_template_escaping_is_rejected(template):
    from sophon_cli.client.errors import InputError
    from sophon_cli.encode import EncodeOptions

    with pytest.raises(InputError):
        EncodeOptions(name_template=template)


@pytest.mark.parametrize(
    "template", ["{stem}\x00.{ext}", "{stem}\n.{ext}", "{stem}\x1b[31m.{ext}", ".", "x/."]
)
def test_name_template_with_nul_control_or_dot_is_rejected(template):
    from sophon_cli.client.errors import InputError
    from sophon_cli.encode import EncodeOptions

    with pytest.raises(InputError):
        EncodeOptions(name_template=template)
