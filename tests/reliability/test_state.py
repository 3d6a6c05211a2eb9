"""The local state cache (``sophon_cli.state``): persistence, atomicity, corruption handling,
concurrency (threads and 8 processes through compactions), private files, update cost.
(The encode-level halves of these guarantees are in test_encode_resilience.py.)"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sophon_cli.state import STATE_VERSION, StateError, StateStore, default_state_path

from .stress import count

WRITER = r"""
import sys
from sophon_cli.state import StateStore
path, me, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = StateStore(path, compact_bytes=3000)  # small: compactions race with appends
for i in range(n):
    store.update(f"p{me}-k{i}", state="done", i=i, who=me)
    store.update("shared", {f"w{me}": i})
    if i % 7 == 0:
        store.update(f"p{me}-k{i}", state="uploaded", extra=i)  # a later patch of the same entry
        store.load()  # readers interleave with writers too
print("ok")
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_updates_persist_and_merge_fields(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "home" / "state.json")
    store.update("a", state="hashed", sha256="x")
    store.update("a", state="uploaded", upload_id="upl_1")
    store.update("b", {"state": "hashed"})

    fresh = StateStore(tmp_path / "home" / "state.json").load()
    assert fresh["a"]["state"] == "uploaded"
    assert fresh["a"]["sha256"] == "x"  # earlier fields survive a later merge
    assert fresh["a"]["upload_id"] == "upl_1"
    assert fresh["a"]["created_at"] <= fresh["a"]["updated_at"]
    assert fresh["b"]["state"] == "hashed"
    assert store.get("missing") is None


def test_files_are_0600_in_a_0700_directory_and_snapshot_is_versioned(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        home = tmp_path / "fresh" / "home"
        store = StateStore(home / "state.json", compact_bytes=256)
        for i in range(30):
            store.update(f"k{i}", state="done", pad="x" * 20)
        store.update("a", state="done")
        store.compact()
    finally:
        os.umask(old)
    assert _mode(home) == 0o700
    files = [p for p in home.iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"state.json", "state.json.journal", "state.json.lock"}
    for p in files:
        assert _mode(p) == 0o600, (p.name, oct(_mode(p)))
    doc = json.loads((home / "state.json").read_text())
    assert doc["version"] == STATE_VERSION == 1
    assert doc["entries"]["a"]["state"] == "done"
    assert (home / "state.json.journal").stat().st_size == 0  # folded into the snapshot
    assert not [p for p in home.iterdir() if p.name.endswith(".tmp")]


def test_delete_survives_reload(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.update("a", state="done")
    store.update("b", state="done")
    store.delete("a")
    assert set(StateStore(path).load()) == {"b"}


def test_torn_last_journal_line_is_ignored_and_next_append_still_lands(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.update("a", state="hashed")
    store.update("b", state="done")
    with open(path.with_name("state.json.journal"), "ab") as fh:
        fh.write(b'{"v":1,"op":"set","k":"c","f":{"state":"uplo')  # a writer killed mid-append

    reader = StateStore(path)
    assert set(reader.load()) == {"a", "b"}  # only the torn line is lost
    assert reader.load()["a"]["state"] == "hashed"
    assert reader.warnings == []

    reader.update("d", state="hashed")  # must not be glued onto the torn line
    again = StateStore(path)
    entries = again.load()
    assert entries["d"]["state"] == "hashed"
    assert entries["a"]["state"] == "hashed"
    assert set(entries) == {"a", "b", "d"}
    assert len(again.warnings) == 1  # the torn line is now in the middle: skipped, reported
    assert "journal" in again.warnings[0]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda t: t[: len(t) // 2], id="truncated"),
        pytest.param(lambda t: "\x00\xff garbage {{{", id="garbage"),
        pytest.param(lambda t: "\x00\x01garbage", id="control-bytes"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: json.dumps({"version": 999, "entries": {}}), id="future-version"),
        pytest.param(lambda t: '{"version": 99, "entries": {}}', id="version-99"),
        pytest.param(lambda t: '{"version": 1}', id="no-entries"),
        pytest.param(lambda t: "[1, 2, 3]", id="not-an-object"),
        pytest.param(lambda t: '{"version": 1, "entries": {"a": ', id="cut-mid-entry"),
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
    assert len(warnings) == 1 and all("\n" not in w for w in warnings)
    assert again.warnings == warnings
    assert "moved it to state.json.corrupt-" in warnings[0]
    assert not path.exists()
    aside = [
        p
        for p in tmp_path.iterdir()
        if p.name.startswith("state.json.corrupt") and not p.name.endswith(".journal")
    ]
    assert len(aside) == 1
    assert aside[0].read_text() == damage(original)  # nothing is lost: the bytes are kept
    assert str(aside[0].name) in " ".join(warnings)
    again.update("new", state="pending")
    assert set(StateStore(path).load()) == {"new"}
    assert StateStore(path).load()["new"]["state"] == "pending"


def test_replaying_a_journal_twice_is_harmless(tmp_path: Path) -> None:
    """A crash between 'replace snapshot' and 'empty journal' leaves the old journal in place."""
    path = tmp_path / "state.json"
    journal = path.with_name("state.json.journal")
    store = StateStore(path)
    store.update("a", state="hashed", n=1)
    store.delete("a")
    store.update("a", state="uploaded")
    store.update("b", state="done", x=[1, 2])
    saved = journal.read_bytes()
    before = StateStore(path).load()
    store.compact()
    journal.write_bytes(saved)  # as if the truncate never happened
    assert StateStore(path).load() == before
    assert "n" not in before["a"]


def test_compaction_happens_when_journal_outgrows_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    journal = path.with_name("state.json.journal")
    store = StateStore(path, compact_bytes=2000)
    for i in range(100):
        store.update(f"k{i % 10}", state="hashed", i=i)
        assert journal.stat().st_size <= max(2000, path.stat().st_size if path.exists() else 0) + 200
    assert path.exists()  # compaction ran
    entries = StateStore(path).load()
    assert len(entries) == 10
    assert entries["k9"]["i"] == 99


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full for a real ENOSPC")
def test_compaction_on_a_full_disk_warns_and_keeps_the_journal(tmp_path: Path) -> None:
    """Compaction is optional: a snapshot that cannot be written (a real ENOSPC: the temp file
    is a link to /dev/full) is one warning, the journal stays, updates go on and lose nothing."""
    path = tmp_path / "state.json"
    journal = path.with_name("state.json.journal")
    warnings: list[str] = []
    store = StateStore(path, on_warning=warnings.append)
    for i in range(10):
        store.update(f"k{i % 5}", state="uploaded", i=i)
    tmp = path.with_name(f".state.json.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.symlink_to("/dev/full")
    size = journal.stat().st_size
    assert store.compact(optional=True) is False
    assert len(warnings) == 1 and "kept the journal" in warnings[0] and "space" in warnings[0].lower()
    assert not path.exists() and journal.stat().st_size == size  # the journal is the cache still
    assert not tmp.exists() and not tmp.is_symlink()  # no debris
    with pytest.raises(StateError):  # a compaction the caller requires still says it failed
        tmp.symlink_to("/dev/full")
        store.compact()
    store.update("k0", state="done")
    entries = StateStore(path).load()
    assert {k: e["i"] for k, e in entries.items()} == {f"k{i}": 5 + i for i in range(5)}
    assert entries["k0"]["state"] == "done"
    assert store.compact(optional=True) is True and path.exists()


def test_a_temp_file_left_by_a_writer_killed_mid_compaction_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    StateStore(path).update("k", state="done")
    code = (
        "import os, sys\n"
        "from sophon_cli.state import StateStore\n"
        "s = StateStore(sys.argv[1])\n"
        "real = os.write\n"
        "def dying(fd, data):\n"
        "    real(fd, bytes(data)[:10])\n"
        "    os.kill(os.getpid(), 9)\n"
        "os.write = dying\n"
        "s.compact()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    left = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".state.json."), left  # SIGKILL mid-compaction
    store = StateStore(path)
    assert store.load()["k"]["state"] == "done"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_prune_drops_only_old_finished_entries(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.update("old-done", state="done", updated_at=1000.0)
    store.update("old-failed", state="failed", updated_at=1000.0)
    store.update("old-running", state="uploaded", updated_at=1000.0)
    store.update("new-done", state="done", updated_at=1_000_000.0)
    dropped = store.prune(older_than=86400, now=1_000_000.0 + 10)
    assert sorted(dropped) == ["old-done", "old-failed"]
    assert set(StateStore(path).load()) == {"old-running", "new-done"}


def test_clear_empties_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path)
    store.update("a", state="done")
    store.update("b", state="hashed")
    assert store.clear() == 2
    assert StateStore(path).load() == {}
    assert len(store) == 0


def test_update_cost_does_not_depend_on_entry_count(tmp_path: Path) -> None:
    """At 10,000 entries an update appends one short line and leaves the snapshot untouched."""
    path = tmp_path / "state.json"
    entries = {
        f"/videos/clip{i:05d}.mov": {
            "state": "done",
            "sha256": "ab" * 32,
            "job_id": f"job_{i}",
            "updated_at": 1.0,
        }
        for i in range(10_000)
    }
    path.write_text(json.dumps({"version": 1, "entries": entries}))
    before = os.stat(path)
    store = StateStore(path)
    assert len(store) == 10_000
    journal = path.with_name("state.json.journal")
    sizes = []
    for i in range(5):
        store.update(f"/videos/clip{i:05d}.mov", state="uploaded", upload_id=f"upl_{i}")
        sizes.append(journal.stat().st_size)
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    per_update = [b - a for a, b in zip([0, *sizes[:-1]], sizes, strict=True)]
    assert max(per_update) < 200
    assert StateStore(path).load()["/videos/clip00004.mov"]["upload_id"] == "upl_4"


def test_threads_sharing_one_store_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = StateStore(path, compact_bytes=1500)

    def work(t: int) -> None:
        for i in range(25):
            store.update(f"t{t}-{i}", state="done")
            store.update("shared", {f"t{t}": i})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    entries = StateStore(path).load()
    assert len(entries) == 4 * 25 + 1
    assert entries["shared"] == {**entries["shared"], "t0": 24, "t1": 24, "t2": 24, "t3": 24}


@pytest.mark.stress
def test_8_concurrent_processes_lose_no_update(tmp_path):
    n = count(30, 400)
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
    assert {k: v for k, v in entries["shared"].items() if k.startswith("w")} == {
        f"w{me}": n - 1 for me in range(8)
    }
    # the journal really was folded into the snapshot while the writers ran
    assert json.loads(path.read_text())["entries"]


def test_default_path_follows_sophon_home(tmp_path: Path) -> None:
    assert default_state_path({"SOPHON_HOME": str(tmp_path)}) == tmp_path / "state.json"
    other = default_state_path({})
    assert other.name == "state.json" and "sophon" in str(other)
