"""An output the server gave no sha256 for ("unverified": checked by its size only) is still known
to be ours on a later run: the cache records the sha256 of the bytes written, and a file at the
output path that matches it (digest and size) is ours to replace or remove; one changed since is
still never touched without --force. Against the real local server, whose job loses its
``output.sha256`` (the spec makes it nullable) after a first, verified run made the job."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from tests.encode.conftest import place


def _forget_output_sha256(world) -> None:
    con = sqlite3.connect(world.server.config.data_dir / "sophon.db", timeout=10)
    with con:
        con.execute("UPDATE jobs SET output = json_set(output, '$.sha256', json('null'))")
    con.close()


@pytest.fixture
def unverified(world, clip_bank):
    """A job for v/video0.mp4 whose output has no sha256 any more (made by a first run to out0)."""
    place(clip_bank[:1], world.work / "v")
    first = world.encode("v", "-r", "-o", "out0", "--json")
    assert first.returncode == 0, first.stderr
    assert first.summary()["files"][0]["verified"] is True
    _forget_output_sha256(world)
    return world


def _entries(world) -> list[dict]:
    from sophon_cli.state import StateStore

    return list(StateStore(world.home / "state.json").entries().values())


def _touch(path) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_rerun_knows_an_unverified_output_it_wrote_and_leaves_a_changed_one_alone(unverified):
    world = unverified
    run = world.encode("v", "-r", "-o", "out", "--json")
    assert run.returncode == 0, run.stderr
    (f,) = run.summary()["files"]
    assert f["result"] == "encoded" and f["verified"] is False
    out = world.work / "out" / "video0.sophon.mp4"
    encoded = out.read_bytes()
    (entry,) = [e for e in _entries(world) if e.get("output") == str(out)]
    assert entry["written_sha256"] == hashlib.sha256(encoded).hexdigest()  # what was written

    # The same command after the source's mtime moved (a checkout, `touch`): a new cache entry,
    # the same job. What is at the output path is what the first run wrote: it is ours.
    _touch(world.work / "v" / "video0.mp4")
    again = world.encode("v", "-r", "-o", "out", "--json")
    assert again.returncode == 0, again.stderr
    (f,) = again.summary()["files"]
    assert f["result"] == "encoded", f
    assert out.read_bytes() == encoded

    # Someone changes the output afterwards: it is no longer ours, and stays as they left it.
    out.write_bytes(encoded + b"edited")
    _touch(world.work / "v" / "video0.mp4")
    third = world.encode("v", "-r", "-o", "out", "--json")
    assert third.returncode == 7, third.stderr
    (f,) = third.summary()["files"]
    assert f["result"] == "failed" and "not this file's output" in f["reason"]
    assert out.read_bytes() == encoded + b"edited"


@pytest.mark.encode
def test_an_unverified_encode_below_min_vmaf_is_replaced_by_the_original(unverified):
    """The gate removes the encode it downloaded and keeps the original there: that needs the
    file to be known as ours although the server gave no sha256 (before: exit 7, "it is not this
    file's output", the unvetted encode left at the output path, on every rerun)."""
    pytest.importorskip("av")
    world = unverified
    src = world.work / "v" / "video0.mp4"
    out = world.work / "out" / "video0.sophon.mp4"
    for _ in range(2):  # the rerun of the same command decides the same from the cache
        run = world.encode("v", "-r", "-o", "out", "--min-vmaf", "100", "--json")
        assert run.returncode == 0, run.stderr
        (f,) = run.summary()["files"]
        assert f["result"] == "original kept" and f["quality_below_threshold"] is True, f
        assert out.read_bytes() == src.read_bytes()


def _downloads(world) -> int:
    return sum(1 for r in world.requests() if r.get("route") == "GET /v1/downloads/{token}")


@pytest.mark.encode
def test_a_rerun_that_scores_an_unverified_output_does_not_download_it_again(unverified):
    """A rerun that must decide again (here: --check-quality added) finds the encode this entry
    wrote, unchanged, and scores it in place; its verification stays what it was ("size matches")."""
    pytest.importorskip("av")
    world = unverified
    first = world.encode("v", "-r", "-o", "out", "--json")
    assert first.returncode == 0, first.stderr
    downloads = _downloads(world)
    assert downloads >= 1
    run = world.encode("v", "-r", "-o", "out", "--check-quality", "--json")
    assert run.returncode == 0, run.stderr
    (f,) = run.summary()["files"]
    assert f["result"] == "encoded" and f["vmaf"] is not None
    assert f["verified"] is False and "size matches" in f["verification"]
    assert _downloads(world) == downloads
