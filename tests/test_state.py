"""The local state cache: persistence, atomicity, corruption handling, concurrency, update cost."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from sophon_cli.state import STATE_VERSION, StateStore, default_state_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


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


def test_files_are_private_and_snapshot_is_versioned(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = StateStore(home / "state.json")
    store.update("a", state="done")
    store.compact()
    assert _mode(home) == 0o700
    assert _mode(home / "state.json") == 0o600
    assert _mode(home / "state.json.journal") == 0o600
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
    with open(path.with_name("state.json.journal"), "ab") as fh:
        fh.write(b'{"v":1,"op":"set","k":"a","f":{"state":"uplo')  # killed mid-append

    reader = StateStore(path)
    assert reader.load()["a"]["state"] == "hashed"
    assert reader.warnings == []

    reader.update("b", state="hashed")  # must not be glued onto the torn line
    again = StateStore(path)
    entries = again.load()
    assert entries["b"]["state"] == "hashed"
    assert entries["a"]["state"] == "hashed"
    assert len(again.warnings) == 1  # the torn line is now in the middle: skipped, reported
    assert "journal" in again.warnings[0]


def test_corrupt_snapshot_is_moved_aside_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "entries": {"a": ')
    seen: list[str] = []
    store = StateStore(path, on_warning=seen.append)
    assert store.load() == {}
    assert len(seen) == 1 and "moved it to state.json.corrupt-" in seen[0]
    asides = [p for p in tmp_path.iterdir() if p.name.startswith("state.json.corrupt-")]
    assert len(asides) == 1
    assert asides[0].read_text().startswith('{"version": 1')  # the bad bytes are kept for a human
    store.update("b", state="hashed")
    assert StateStore(path).load()["b"]["state"] == "hashed"


@pytest.mark.parametrize(
    "content",
    ['{"version": 99, "entries": {}}', "[1, 2]", '{"version": 1}', "\x00\x01garbage"],
)
def test_unusable_snapshots_never_crash(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    store = StateStore(path)
    assert store.load() == {}
    assert len(store.warnings) == 1
    assert not path.exists()


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


_WORKER = textwrap.dedent(
    """
    import sys
    from sophon_cli.state import StateStore
    path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = StateStore(path, compact_bytes=3000)  # small: compactions race with appends
    for i in range(n):
        store.update(f"w{worker}-{i}", state="hashed", worker=worker)
        store.update("shared", {f"w{worker}": i})
        if i % 7 == 0:
            store.load()  # readers interleave with writers too
    """
)


def test_eight_processes_lose_no_update(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    n = 30
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(path), str(w), str(n)], stderr=subprocess.PIPE)
        for w in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    store = StateStore(path)
    entries = store.load()
    assert store.warnings == []
    assert len(entries) == 8 * n + 1
    assert all(entries[f"w{w}-{i}"]["worker"] == w for w in range(8) for i in range(n))
    assert {k: v for k, v in entries["shared"].items() if k.startswith("w")} == {
        f"w{w}": n - 1 for w in range(8)
    }


def test_default_path_follows_sophon_home(tmp_path: Path) -> None:
    assert default_state_path({"SOPHON_HOME": str(tmp_path)}) == tmp_path / "state.json"
    other = default_state_path({})
    assert other.name == "state.json" and "sophon" in str(other)
