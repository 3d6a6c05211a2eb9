"""files.WriteBehind: a large body received into aligned buffers, hashed and written by helper
threads into a real SafeWriter on a real file system. Exact bytes whatever the sizes handed in;
a write that fails on the helper thread comes back to the caller, and the writer then refuses to
commit (its hash already counts bytes that never reached the .part)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

from sophon_cli.client.files import UNCACHED_MIN_SIZE, WRITE_BEHIND_BLOCK, SafeWriter

SIZE = UNCACHED_MIN_SIZE + 3 * WRITE_BEHIND_BLOCK // 2 + 12345  # O_DIRECT, and a ragged end


def _data() -> bytes:
    block = os.urandom(1 << 20)
    return (block * (SIZE // len(block) + 1))[:SIZE]


def test_received_into_buffers_and_copied_in_the_file_is_exact(tmp_path):
    data = _data()
    sha = hashlib.sha256(data).hexdigest()
    target = tmp_path / "out.bin"
    with SafeWriter(target, expected_size=len(data), expected_sha256=sha) as w:
        with w.write_behind() as sink:
            view, pos, step = memoryview(data), 0, 1_000_003  # never a whole buffer at once
            while pos < len(data) // 2:
                dst = sink.buffer()
                k = min(len(dst), step, len(data) - pos)
                dst[:k] = view[pos : pos + k]
                del dst
                sink.received(k)
                pos += k
            sink.write(view[pos : pos + 77])  # bytes from elsewhere, mixed in
            sink.write(view[pos + 77 :])
        assert w.offset == len(data)
        result = w.commit()
    assert result.verified and result.bytes == len(data)
    with open(target, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == sha


def test_an_interrupted_body_keeps_every_byte_received_in_the_part(tmp_path):
    data = _data()
    target = tmp_path / "out.bin"
    cut = 2 * WRITE_BEHIND_BLOCK + 4321  # mid-buffer
    with SafeWriter(target, expected_size=len(data)) as w:
        try:
            with w.write_behind() as sink:
                sink.write(data[:cut])
                raise ConnectionResetError("dropped")
        except ConnectionResetError:
            pass
        assert w.offset == cut
    assert not target.exists()
    (part,) = [p for p in tmp_path.iterdir() if p.name.endswith(".sophon-part")]
    assert part.read_bytes() == data[:cut]
    with SafeWriter(target, expected_size=len(data), expected_sha256=hashlib.sha256(data).hexdigest()) as w:
        assert w.offset == cut  # a rerun resumes from all of it
        with w.write_behind() as sink:
            sink.write(data[cut:])
        assert w.commit().verified


CHILD = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    from sophon_cli.client.errors import InputError
    from sophon_cli.client.files import SafeWriter
    target, limit = sys.argv[1], int(sys.argv[2])
    data = sys.stdin.buffer.read()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    out = {}
    with SafeWriter(target, expected_size=len(data)) as w:
        try:
            with w.write_behind() as sink:
                view = memoryview(data)
                for i in range(0, len(data), 1 << 20):
                    sink.write(view[i : i + (1 << 20)])
            out["stream"] = "finished"
        except InputError as exc:
            out["stream"] = str(exc)
        try:
            w.commit()
            out["commit"] = "committed"
        except InputError as exc:
            out["commit"] = str(exc)
    print(json.dumps(out))
    """
)


def test_a_failed_write_behind_comes_back_and_the_writer_refuses_to_commit(tmp_path):
    data = _data()
    target = tmp_path / "out.bin"
    limit = 24 << 20  # the file system refuses the .part beyond this (RLIMIT_FSIZE: EFBIG)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(target), str(limit)],
        input=data,
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["stream"].startswith(f"cannot write {target}"), out
    assert out["commit"].startswith(f"cannot write {target}"), out  # not "committed"
    assert not target.exists()
    (part,) = [p for p in tmp_path.iterdir() if p.name.endswith(".sophon-part")]
    kept = part.read_bytes()
    assert 0 < len(kept) <= limit and kept == data[: len(kept)]  # a prefix: a rerun resumes from it
