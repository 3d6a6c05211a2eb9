"""The issue's "done when": a 12-file batch split with `--shard auto` across 3 simulated CI nodes
(three processes with the CI's variables set, run at once against one local server, each with its
own cache) covers every file exactly once, with exactly 12 jobs on the server."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.ci.conftest import place

NODE_VARS = (
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "CIRCLE_NODE_INDEX",
    "CIRCLE_NODE_TOTAL",
    "BUILDKITE_PARALLEL_JOB",
    "BUILDKITE_PARALLEL_JOB_COUNT",
    "JOB_COMPLETION_INDEX",
)


@pytest.mark.parametrize(
    ("system", "spec"),
    [
        ("gitlab", "auto"),  # CI_NODE_INDEX counts from 1
        ("kubernetes", "auto/3"),  # JOB_COMPLETION_INDEX counts from 0, the total comes from auto/N
    ],
)
def test_three_nodes_cover_a_twelve_file_batch_exactly_once(world, twelve_clips, system, spec):
    names = [f"v{i:02d}.mp4" for i in range(12)]
    place(twelve_clips, world.work / "videos", names)

    def node_env(n: int) -> dict:
        env = {k: "" for k in NODE_VARS}
        if system == "gitlab":
            env.update(CI_NODE_INDEX=str(n + 1), CI_NODE_TOTAL="3")
        else:
            env["JOB_COMPLETION_INDEX"] = str(n)
        env["SOPHON_HOME"] = str(world.root / f"node{n}" / "home")  # each node's cache is its own
        return env

    procs = []
    for n in range(3):
        args = ["videos/*.mp4", "-o", f"out{n}", "--shard", spec, "--report", f"report{n}.json", "--json"]
        procs.append(world.popen(*args, env=node_env(n)))
    done = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        done.append((p.returncode, stdout, stderr))
    for rc, _, stderr in done:
        assert rc == 0, stderr

    covered: list[str] = []
    shards = set()
    for n in range(3):
        doc = json.loads((world.work / f"report{n}.json").read_text())
        shards.add(doc["shard"])
        assert doc["shard_source"]
        for f in doc["files"]:
            assert f["result"] == "encoded", f
            assert os.path.exists(f["output"]) and f"/out{n}/" in f["output"]
            covered.append(f["file"])
    assert shards == {"1/3", "2/3", "3/3"}
    assert sorted(covered) == sorted(f"videos/{name}" for name in names)  # every file exactly once
    jobs = world.jobs()
    assert len(jobs) == 12
    assert len({j.id for j in jobs}) == 12
    assert world.upload_count() == 12
