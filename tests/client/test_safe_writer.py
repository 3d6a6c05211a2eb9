"""The one safe writer (client/files.py SafeWriter, copy_file) and the download path on it.

Against the real local server (planted .part links, symlink targets, existing files) and a small
real HTTP server in the test (a body larger than announced, a job without sha256, concurrent
writers of one target through the CLI).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from sophon_cli.cli.hints import hint_for
from sophon_cli.client.errors import InputError, IntegrityError, SizeExceededError, TargetExistsError
from sophon_cli.client.files import (
    PART_SUFFIX,
    UNCACHED_FILE_SYSTEMS,
    UNCACHED_MIN_SIZE,
    WRITEBACK_STEP,
    SafeWriter,
    copy_file,
    file_system_type,
    part_path,
    start_writeback,
)
from sophon_cli.client.http import SophonClient
from tests.client.hostile import FakeAPI
from tests.conftest import REPO_ROOT

KEY = "xt_live_WRITERKEY0123"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((PART_SUFFIX, ".part")))


# -- the writer on its own ---------------------------------------------------------------------


def test_writer_verifies_sha256_and_says_so(tmp_path):
    data = os.urandom(5000)
    target = tmp_path / "a.bin"
    with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
        assert not w.already_present and w.offset == 0
        w.write(data[:100])
        w.write(data[100:])
        result = w.commit()
    assert target.read_bytes() == data
    assert (result.verified, result.sha256, result.bytes) == (True, _sha(data), 5000)
    assert "sha256" in result.verification and not result.already_present
    assert _leftovers(tmp_path) == []


def test_writer_without_sha256_checks_the_size_and_says_it_is_unverified(tmp_path):
    with SafeWriter(tmp_path / "a.bin", expected_size=3) as w:
        w.write(b"abc")
        result = w.commit()
    assert result.verified is False and "size matches" in result.verification
    assert "no sha256" in result.verification
    with SafeWriter(tmp_path / "b.bin") as w:
        w.write(b"abc")
        result = w.commit()
    assert result.verified is False and result.verification.startswith("not verified")


def test_writer_never_writes_past_the_expected_size(tmp_path):
    target = tmp_path / "a.bin"
    with SafeWriter(target, expected_size=10) as w:
        w.write(b"12345")
        with pytest.raises(SizeExceededError) as info:
            w.write(b"678901")
        assert os.path.getsize(w.part) == 0  # nothing of the suspect body kept
    assert info.value.limit == 10 and not target.exists()


def test_existing_target_is_refused_without_force_and_kept(tmp_path):
    target = tmp_path / "mine.mp4"
    target.write_bytes(b"precious")
    with pytest.raises(TargetExistsError) as info:
        with SafeWriter(target, expected_size=3, expected_sha256=_sha(b"new")):
            pass
    assert target.read_bytes() == b"precious" and "--force" in hint_for(info.value)
    with pytest.raises(TargetExistsError):
        copy_file(tmp_path / "mine.mp4", target)
    src = tmp_path / "src.bin"
    src.write_bytes(b"new")
    result = copy_file(src, target, force=True, expected_sha256=_sha(b"new"))
    assert target.read_bytes() == b"new" and result.verified
    assert _leftovers(tmp_path) == []


def test_target_with_the_verified_bytes_is_already_present(tmp_path):
    target = tmp_path / "done.mp4"
    target.write_bytes(b"same")
    before = target.stat().st_mtime_ns
    with SafeWriter(target, expected_size=4, expected_sha256=_sha(b"same")) as w:
        assert w.already_present and w.result.already_present and w.result.verified
    assert target.stat().st_mtime_ns == before and _leftovers(tmp_path) == []


def test_dangling_symlink_target_is_refused_and_replaced_only_with_force(tmp_path):
    victim = tmp_path / "elsewhere" / "victim"
    target = tmp_path / "out.mp4"
    target.symlink_to(victim)  # dangling: the writer must not create the file it points at
    with pytest.raises(TargetExistsError) as info:
        with SafeWriter(target, expected_size=3) as w:
            w.write(b"abc")
            w.commit()
    assert info.value.kind == "symlink" and "symbolic link" in str(info.value)
    assert target.is_symlink() and not victim.exists()
    with SafeWriter(target, expected_size=3, force=True) as w:
        w.write(b"abc")
        w.commit()
    assert not target.is_symlink() and target.read_bytes() == b"abc" and not victim.exists()


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "directory"])
def test_anything_at_the_part_path_that_we_did_not_make_is_replaced(tmp_path, kind):
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * 100)
    target = tmp_path / "out.bin"
    part = part_path(target)
    if kind == "symlink":
        part.symlink_to(victim)
    elif kind == "hardlink":
        os.link(victim, part)
    elif kind == "fifo":
        os.mkfifo(part)
    else:
        part.mkdir()
    with SafeWriter(target, expected_size=3) as w:
        assert w.offset == 0  # the victim's 100 bytes are not "resumed"
        w.write(b"abc")
        w.commit()
    assert victim.read_bytes() == b"v" * 100
    assert target.read_bytes() == b"abc" and not target.is_symlink()
    assert _leftovers(tmp_path) == []


def test_an_interrupted_write_resumes_from_its_part(tmp_path):
    data = b"0123456789"
    target = tmp_path / "r.bin"
    with SafeWriter(target, expected_size=10, expected_sha256=_sha(data)) as w:
        w.write(data[:4])  # then the process "dies": no commit
    assert not target.exists() and part_path(target).stat().st_size == 4
    with SafeWriter(target, expected_size=10, expected_sha256=_sha(data)) as w:
        assert w.offset == 4
        w.write(data[4:])
        result = w.commit()
    assert result.resumed_from == 4 and result.verified and target.read_bytes() == data


def _dirty_pages(fd: int, offset: int, length: int) -> int:
    return _cachestat(fd, offset, length)[1]


def _cachestat(fd: int, offset: int, length: int) -> tuple[int, int]:
    """(cached, dirty) pages of the range: Linux cachestat(2) (6.5+), else skip."""
    import ctypes

    class Range(ctypes.Structure):
        _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]

    class Stat(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recent")]

    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        pytest.skip("cachestat is looked up by its x86_64 Linux syscall number")
    libc = ctypes.CDLL(None, use_errno=True)
    st, rng = Stat(), Range(offset, length)
    if libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(st), 0) != 0:
        pytest.skip(f"no cachestat(2) here ({os.strerror(ctypes.get_errno())})")
    return st.cache, st.dirty


def _uncached_here(directory) -> None:
    probe = directory / "probe"
    probe.write_bytes(b"")
    with open(probe, "rb") as fh:
        kind = file_system_type(fh.fileno())
    probe.unlink()
    if kind not in UNCACHED_FILE_SYSTEMS or not hasattr(os, "O_DIRECT"):
        pytest.skip(f"the test directory is on {kind}: large files are written through the page cache")


def _big(extra: int = 0) -> bytes:
    block = os.urandom(1 << 20)
    return block * (UNCACHED_MIN_SIZE // len(block)) + block[:extra]


def test_a_large_file_on_a_local_disk_is_written_around_the_page_cache(tmp_path):
    """O_DIRECT from an aligned stage: on a local ext4/xfs disk a large file's pages are not
    allocated in the page cache (on the VM measured that was most of a download's CPU); the
    unaligned tail goes through it. Bytes exact, verified, durable as before."""
    _uncached_here(tmp_path)
    data = _big(extra=12345)
    target = tmp_path / "big.bin"
    with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
        for start in range(0, len(data), 300_000):  # blocks that do not match the stage
            w.write(data[start : start + 300_000])
        assert w._fd is not None
        cached, _ = _cachestat(w._fd, 0, len(data))
        result = w.commit()
    assert cached <= 64, f"{cached} pages in the page cache"  # all 16,387 of them before
    assert result.verified and target.read_bytes() == data


def test_an_interrupted_large_write_keeps_every_byte_and_resumes(tmp_path):
    _uncached_here(tmp_path)
    data = _big(extra=777)
    target = tmp_path / "big.bin"
    cut = len(data) - (1 << 20) - 5000  # the stage holds a partial buffer when the process stops
    with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
        w.write(data[:cut])
    assert part_path(target).stat().st_size == cut  # nothing that was written is lost
    with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
        assert w.offset == cut  # unaligned: this run writes through the page cache
        w.write(data[cut:])
        result = w.commit()
    assert result.resumed_from == cut and result.verified and target.read_bytes() == data


def test_a_large_write_restarted_midway_holds_only_the_new_bytes(tmp_path):
    _uncached_here(tmp_path)
    data = _big()
    target = tmp_path / "big.bin"
    with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
        w.write(os.urandom(3 << 20) + b"x" * 100)
        w.restart()
        for start in range(0, len(data), 1 << 20):
            w.write(data[start : start + (1 << 20)])
        result = w.commit()
    assert result.verified and target.read_bytes() == data


def test_file_system_type_names_the_mount(tmp_path):
    with open(tmp_path / "f", "wb") as fh:
        kind = file_system_type(fh.fileno())
    assert kind is None or (kind and " " not in kind)
    if os.path.isdir("/dev/shm") and sys.platform.startswith("linux"):
        with open("/dev/shm/sophon-fs-probe", "wb") as fh:
            try:
                assert file_system_type(fh.fileno()) == "tmpfs"  # not one written around the cache
            finally:
                os.unlink("/dev/shm/sophon-fs-probe")


def test_a_large_write_is_handed_to_the_disk_as_it_goes(tmp_path):
    """Every WRITEBACK_STEP written starts its writeback at once (the fsync of commit() then has
    little left to do); a resumed .part carries on from its own end. The bytes stay exact."""
    block = os.urandom(1 << 20)
    steps = 3
    data = block * (steps * WRITEBACK_STEP // len(block))
    target = tmp_path / "big.bin"
    with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
        w.write(data[:1000])  # then the process "dies"
    with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
        assert w.offset == 1000
        for start in range(1000, len(data), len(block)):
            w.write(data[start : start + len(block)])
        assert w._fd is not None
        handed = (steps - 1) * WRITEBACK_STEP
        # without the writeback all of it would still be dirty here (nothing forces it out yet)
        assert _dirty_pages(w._fd, 0, handed) <= handed // 4096 // 20, "not handed to the disk"
        result = w.commit()
    assert result.verified and result.resumed_from == 1000 and target.read_bytes() == data


def test_start_writeback_takes_a_regular_file_and_refuses_a_pipe(tmp_path):
    with open(tmp_path / "f.bin", "wb") as fh:
        fh.write(b"x" * 65536)
        fh.flush()
        assert start_writeback(fh.fileno(), 0, 65536) is sys.platform.startswith("linux")
    r, w = os.pipe()
    try:
        assert start_writeback(w, 0, 1) is False  # ESPIPE: told, not raised
    finally:
        os.close(r)
        os.close(w)


def test_long_names_keep_the_temporary_name_short(tmp_path):
    target = tmp_path / ("x" * 240 + ".sophon.mp4")
    result = copy_file(__file__, target)
    assert target.stat().st_size == os.path.getsize(__file__) and result.bytes == target.stat().st_size
    assert len(part_path(target).name) < 40
    with pytest.raises(InputError) as info:
        copy_file(__file__, tmp_path / ("y" * 300 + ".mp4"))
    assert "too long" in str(info.value)


def test_wrong_sha256_keeps_nothing(tmp_path):
    src = tmp_path / "s.bin"
    src.write_bytes(b"abc")
    with pytest.raises(IntegrityError):
        copy_file(src, tmp_path / "d.bin", expected_sha256=_sha(b"abd"))
    assert not (tmp_path / "d.bin").exists() and _leftovers(tmp_path) == []


def test_concurrent_writers_of_one_target_wait_and_find_it_done(tmp_path):
    data = os.urandom(50_000)
    target = tmp_path / "c.bin"
    first_in = threading.Event()
    outcomes = []

    def first():
        with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
            first_in.set()
            w.write(data[:1000])
            time.sleep(0.5)  # the other writer arrives meanwhile and must wait
            w.write(data[1000:])
            outcomes.append(("first", w.commit()))

    def second():
        first_in.wait(5)
        with SafeWriter(target, expected_size=len(data), expected_sha256=_sha(data)) as w:
            outcomes.append(("second", w.result if w.already_present else w.commit()))

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    got = dict(outcomes)
    assert got["first"].already_present is False and got["second"].already_present is True
    assert target.read_bytes() == data and _leftovers(tmp_path) == []


# -- downloads on the writer: real local server ----------------------------------------------------


def test_download_never_writes_through_a_planted_part_link(client, completed_job, tmp_path):
    job, _ = completed_job
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"keep me")
    target = tmp_path / "out.mp4"
    part_path(target).symlink_to(victim)  # the writer's .part name
    (tmp_path / "out.mp4.part").symlink_to(victim)  # and the name an older writer used
    result = client.downloads.download(job.id, target, job=job)
    assert victim.read_bytes() == b"keep me"
    assert not target.is_symlink() and result.verified and result.sha256 == job.output.sha256
    assert hashlib.sha256(target.read_bytes()).hexdigest() == job.output.sha256
    assert not part_path(target).exists()


def test_download_refuses_a_symlink_target_without_force(client, completed_job, tmp_path, request_log):
    job, _ = completed_job
    victim = tmp_path / "not-yet"
    target = tmp_path / "out.mp4"
    target.symlink_to(victim)
    with pytest.raises(TargetExistsError):
        client.downloads.download(job.id, target, job=job)
    assert target.is_symlink() and not victim.exists()
    assert request_log.entries() == []  # refused before any request
    client.downloads.download(job.id, target, job=job, force=True)
    assert not target.is_symlink() and not victim.exists()
    assert hashlib.sha256(target.read_bytes()).hexdigest() == job.output.sha256


# -- hostile servers ---------------------------------------------------------------------------


def test_a_body_larger_than_the_job_says_is_cut_at_the_expected_size(tmp_path):
    body = os.urandom(300_000)
    with FakeAPI(body, size=10_000, sha256=_sha(body[:10_000]), chunk=4096) as api:
        with SophonClient(api.url, KEY, max_retries=0) as c:
            with pytest.raises(SizeExceededError) as info:
                c.downloads.download("job_1", tmp_path / "o.mp4")
    assert info.value.limit == 10_000 and "more than the expected 10000 bytes" in str(info.value)
    assert not (tmp_path / "o.mp4").exists()
    assert all(p.stat().st_size <= 10_000 for p in tmp_path.iterdir())


def _cli(url, *args, home):
    env = dict(os.environ, SOPHON_BASE_URL=url, SOPHON_API_KEY=KEY, SOPHON_HOME=str(home))
    env.pop("SOPHON_DEBUG", None)
    return [sys.executable, "-m", "sophon_cli", *map(str, args)], env


def test_a_job_without_sha256_is_downloaded_but_said_to_be_unverified(tmp_path):
    body = os.urandom(20_000)
    with FakeAPI(body, size=len(body), sha256=None) as api:
        cmd, env = _cli(api.url, "--json", "download", "job_1", "-o", tmp_path / "o.mp4", home=tmp_path / "h")
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["verified"] is False and "size matches" in data["verification"]
    assert "not verified" in res.stderr and (tmp_path / "o.mp4").read_bytes() == body


def test_concurrent_downloads_of_one_target_all_succeed_with_one_transfer(tmp_path):
    body = os.urandom(256 * 1024)
    target = tmp_path / "same.mp4"
    with FakeAPI(body, size=len(body), sha256=_sha(body), chunk=16 * 1024, delay=0.05) as api:
        procs = []
        for i in range(4):
            cmd, env = _cli(api.url, "--json", "download", "job_1", "-o", target, home=tmp_path / f"h{i}")
            procs.append(
                subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    for _out, err, code in results:
        assert code == 0, err
    docs = [json.loads(out) for out, _, _ in results]
    assert sorted(d["already_present"] for d in docs) == [False, True, True, True]
    assert all(d["verified"] for d in docs) and api.downloads == 1
    assert target.read_bytes() == body and _leftovers(tmp_path) == []
