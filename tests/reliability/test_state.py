"""Local state: 8 concurrent processes updating the cache lose no update (through compactions);
a truncated or garbage cache is set aside with a warning; files are 0600 in a 0700 directory.
(The encode-level halves of these guarantees are in test_encode_resilience.py.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sophon_cli.state import StateStore

from .stress import count

WRITER = r"""
import sys
from sophon_cli.state import StateStore
path, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = StateStore(path, compact_bytes=4096)
for i in range(n):
    store.update(f"p{me}-k{i}", state="done", i=i, who=me)
    store.update("shared", {f"w{me}": i})
    if i % 7 == 0:
        store.update(f"p{me}-k{i}", state="uploaded", extra=i)  # a later patch of the same entry
print("ok")
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.stress
def test_8_concurrent_processes_lose_no_update(tmp_path):
    n = count(40, 400)
    path = tmp_path / "home" / "state.json"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(me), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in range(8)
    ]
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0 and out.strip() == "ok", err
    fresh = StateStore(path)
    entries = fresh.load()
    assert not fresh.warnings
    assert len(entries) == 8 * n + 1
    for me in range(8):
        for i in range(n):
            e = entries[f"p{me}-k{i}"]
            assert e["who"] == me and e["i"] == i
            assert e["state"] == ("uploaded" if i % 7 == 0 else "done")
            if i % 7 == 0:
                assert e["extra"] == i
    assert entries["shared"] == {**entries["shared"], **{f"w{me}": n - 1 for me in range(8)}}
    # the journal really was folded into the snapshot while the writers ran
    assert json.loads(path.read_text())["entries"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda t: t[: len(t) // 2], id="truncated"),
        pytest.param(lambda t: "\x00\xff garbage {{{", id="garbage"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: json.dumps({"version": 999, "entries": {}}), id="future-version"),
        pytest.param(lambda t: "[1, 2, 3]", id="not-an-object"),
    ],
)
def test_damaged_cache_is_set_aside_with_a_warning(tmp_path, damage):
    path = tmp_path / "state.json"
    store = StateStore(path)
    for i in range(20):
        store.update(f"k{i}", state="done", job_id=f"job_{i}")
    store.compact()
    original = path.read_text()
    path.write_text(damage(original))
    warnings: list[str] = []
    again = StateStore(path, on_warning=warnings.append)
    entries = again.load()
    if damage(original) == "":
        # an empty snapshot may be read as "no cache yet"; it must not crash either way
        assert entries == {} or entries
        return
    assert entries == {}
    assert warnings and all("\n" not in w for w in warnings)
    aside = [
        p
        for p in tmp_path.iterdir()
        if p.name.startswith("state.json.corrupt") and not p.name.endswith(".journal")
    ]
    assert len(aside) == 1
    assert aside[0].read_text() == damage(original)  # nothing is lost: the bytes are kept
    assert str(aside[0].name) in " ".join(warnings) or "corrupt" in " ".join(warnings)
    again.update("new", state="pending")
    assert set(StateStore(path).load()) == {"new"}


def test_torn_journal_line_loses_only_that_line(tmp_path):
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.update("a", state="done")
    store.update("b", state="done")
    with open(store.journal_path, "a") as fh:
        fh.write('{"v": 1, "op": "set", "k": "c", "f": {"sta')  # a writer killed mid-append
    entries = StateStore(path).load()
    assert set(entries) == {"a", "b"}


def test_cache_files_are_0600_in_a_0700_directory(tmp_path):
    old = os.umask(0o022)
    try:
        home = tmp_path / "fresh" / "home"
        store = StateStore(home / "state.json", compact_bytes=256)
        for i in range(30):
            store.update(f"k{i}", state="done", pad="x" * 20)
        store.compact()
    finally:
        os.umask(old)
    assert _mode(home) == 0o700
    files = [p for p in home.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"state.json", "state.json.journal", "state.json.lock"}
    for p in files:
        assert _mode(p) == 0o600, (p.name, oct(_mode(p)))
