"""`sophon cache list|prune|clear`, --state-file, a corrupt cache, and the README's first command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sophon_cli.state import StateStore
from tests.conftest import REPO_ROOT
from tests.encode.conftest import place


def test_cache_list_prune_clear(world, clip_bank):
    place(clip_bank[:2], world.work)
    assert world.encode("*.mp4").returncode == 0

    table = world.sophon("cache", "list")
    assert table.returncode == 0, table.stderr
    lines = [line.split("\t") for line in table.stdout.splitlines()]
    assert lines[0] == ["FILE", "STATE", "RESULT", "JOB", "OUTPUT", "UPDATED"]
    assert sorted(Path(row[0]).name for row in lines[1:]) == ["video0.mp4", "video1.mp4"]
    assert all(row[1] == "done" and row[2] == "encoded" and row[3].startswith("job_") for row in lines[1:])

    pruned = world.sophon("cache", "prune", "--older-than", "0", "--json")
    assert pruned.returncode == 0 and pruned.events() == [
        {"pruned": 2, "remaining": 0, "state_file": str(world.home / "state.json")}
    ]

    assert world.encode("video0.mp4").returncode == 0  # replays: no new job
    cleared = world.sophon("cache", "clear")
    assert cleared.returncode == 0 and "cleared 1 entry from" in cleared.stdout
    assert StateStore(world.home / "state.json").load() == {}
    assert len(world.jobs()) == 2


def test_state_file_option_and_corrupt_cache(world, clip_bank):
    place(clip_bank[:1], world.work)
    ci_state = world.root / "ci-cache" / "state.json"
    run = world.encode("video0.mp4", "--state-file", ci_state)
    assert run.returncode == 0, run.stderr
    assert ci_state.exists() and not (world.home / "state.json.journal").exists()
    assert oct(ci_state.parent.stat().st_mode & 0o777) == "0o700"
    assert oct(ci_state.with_name("state.json.journal").stat().st_mode & 0o777) == "0o600"

    ci_state.write_text("{ this is not json")
    again = world.encode("video0.mp4", "--state-file", ci_state, "--json")
    assert again.returncode == 0, again.stderr
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "moved it to state.json.corrupt-" in warnings[0]
    assert "Traceback" not in again.stderr
    assert len(list(ci_state.parent.glob("state.json.corrupt-*"))) >= 1
    assert len(world.jobs()) == 1  # the lost cache cost nothing on the server


def test_readme_first_command_encodes_the_shipped_sample(tmp_path):
    """`sophon encode --local examples/sample.mp4` on a fresh machine: no key, no server set up."""
    sample = REPO_ROOT / "examples" / "sample.mp4"
    assert sample.stat().st_size < 1_000_000
    work = tmp_path / "work"
    (work / "examples").mkdir(parents=True)
    shutil.copyfile(sample, work / "examples" / "sample.mp4")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHON_")}
    env["SOPHON_HOME"] = str(home)
    try:
        p = subprocess.run(
            [sys.executable, "-m", "sophon_cli", "encode", "--local", "examples/sample.mp4"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        info = home / "server" / "server.json"
        for _ in range(50):
            if info.exists():
                break
            time.sleep(0.1)
        if info.exists():
            os.kill(json.loads(info.read_text())["pid"], signal.SIGTERM)
    assert p.returncode == 0, p.stderr
    header, row = p.stdout.splitlines()[:2]
    assert header.split("\t") == ["FILE", "SOURCE", "OUTPUT", "SAVED", "PROFILE", "RESULT"]
    cells = row.split("\t")
    assert cells[0] == "examples/sample.mp4" and cells[5] == "encoded"
    assert float(cells[3].rstrip("%")) > 10  # a real saving
    out = work / "examples" / "sample.sophon.mp4"
    assert 0 < out.stat().st_size < sample.stat().st_size
