"""The server's malloc settings (server/memtune.py): freed receive-sized blocks are reused, so a
stream of 64-256 KiB bodies does not fault in fresh pages for every chunk."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

CHURN = r"""
import resource, sys
if sys.argv[1] == "tuned":
    from sophon_cli.server.memtune import tune_malloc
    assert tune_malloc()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
sizes = [65536 * k for k in (1, 4, 2, 3, 4, 1, 4, 4)]  # what recv and httptools hand out
held = []
before = faults()
for i in range(400):  # ~1 MiB held at a time, like a few chunks queued for the disk
    held.append(b"x" * sizes[i % len(sizes)])
    if len(held) > 6:
        held.pop(0)
print(faults() - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or "libc" not in (ctypes.util.find_library("c") or ""),
    reason="mallopt is glibc's",
)
def test_tuned_malloc_reuses_freed_chunks_instead_of_faulting_in_new_pages():
    default, tuned = _faults("default"), _faults("tuned")
    assert default > 2000  # the cost being removed: fresh pages for most chunks
    assert tuned * 5 < default, (tuned, default)
