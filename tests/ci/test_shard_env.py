"""`--shard auto` reads the CI's own parallelism (sophon_cli.ci): each system's variables, its
counting base, and a clear error when nothing is set or the values disagree."""

from __future__ import annotations

import pytest

from sophon_cli.ci import Shard, detect_shard, resolve_shard
from sophon_cli.client.errors import InputError


@pytest.mark.parametrize(
    ("env", "spec", "expected"),
    [
        # GitLab counts from 1
        ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"}, "auto", (1, 3)),
        ({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "3"}, "auto", (3, 3)),
        ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4"}, "auto/4", (2, 4)),
        # a GitLab job without `parallel:` has CI_NODE_TOTAL=1 and no index: the whole batch
        ({"CI_NODE_TOTAL": "1"}, "auto", (1, 1)),
        # CircleCI and Buildkite count from 0
        ({"CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "2"}, "auto", (1, 2)),
        ({"CIRCLE_NODE_INDEX": "1", "CIRCLE_NODE_TOTAL": "2"}, "auto", (2, 2)),
        ({"BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "5"}, "auto", (1, 5)),
        ({"BUILDKITE_PARALLEL_JOB": "4", "BUILDKITE_PARALLEL_JOB_COUNT": "5"}, "auto", (5, 5)),
        # Kubernetes Indexed Jobs: index from 0, total from auto/N
        ({"JOB_COMPLETION_INDEX": "0"}, "auto/4", (1, 4)),
        ({"JOB_COMPLETION_INDEX": "3"}, "auto/4", (4, 4)),
    ],
)
def test_each_system_maps_to_a_one_based_shard(env, spec, expected):
    shard = detect_shard(spec, env)
    assert (shard.index, shard.count) == expected
    assert shard.source  # says where it came from


def test_every_node_of_a_fan_out_gets_a_distinct_shard():
    gitlab = {
        detect_shard("auto", {"CI_NODE_INDEX": str(i), "CI_NODE_TOTAL": "4"}).index for i in range(1, 5)
    }
    circle = {
        detect_shard("auto", {"CIRCLE_NODE_INDEX": str(i), "CIRCLE_NODE_TOTAL": "4"}).index for i in range(4)
    }
    k8s = {detect_shard("auto/4", {"JOB_COMPLETION_INDEX": str(i)}).index for i in range(4)}
    assert gitlab == circle == k8s == {1, 2, 3, 4}


@pytest.mark.parametrize(
    ("env", "spec", "words"),
    [
        (
            {},
            "auto",
            ["CI_NODE_INDEX", "CIRCLE_NODE_INDEX", "BUILDKITE_PARALLEL_JOB", "JOB_COMPLETION_INDEX"],
        ),
        ({"JOB_COMPLETION_INDEX": "1"}, "auto", ["auto/N"]),
        ({"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "3"}, "auto", ["out of range", "from 1"]),
        ({"CIRCLE_NODE_INDEX": "2", "CIRCLE_NODE_TOTAL": "2"}, "auto", ["out of range", "from 0"]),
        ({"JOB_COMPLETION_INDEX": "4"}, "auto/4", ["out of range"]),
        ({"CI_NODE_INDEX": "x", "CI_NODE_TOTAL": "3"}, "auto", ["not a whole number"]),
        ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3"}, "auto/4", ["disagrees", "CI_NODE_TOTAL=3"]),
        ({"CIRCLE_NODE_INDEX": "1"}, "auto", ["CIRCLE_NODE_TOTAL"]),
        ({}, "auto/0", ["bad shard"]),
        ({}, "auto/x", ["bad shard"]),
    ],
)
def test_bad_or_missing_variables_are_one_clear_input_error(env, spec, words):
    with pytest.raises(InputError) as info:
        detect_shard(spec, env)
    text = f"{info.value}; {info.value.hint}"  # how the CLI prints it: one line
    assert "\n" not in text
    for w in words:
        assert w in text
    assert info.value.hint


def test_first_system_wins_and_empty_values_count_as_unset():
    env = {
        "CI_NODE_INDEX": "",
        "CIRCLE_NODE_INDEX": "1",
        "CIRCLE_NODE_TOTAL": "3",
        "JOB_COMPLETION_INDEX": "0",
    }
    assert detect_shard("auto", env) == Shard(2, 3, detect_shard("auto", env).source)
    assert "CircleCI" in detect_shard("auto", env).source


def test_resolve_shard_takes_i_of_n_auto_or_nothing():
    assert resolve_shard(None) is None
    assert resolve_shard("") is None
    assert (resolve_shard("2/4").index, resolve_shard("2/4").count) == (2, 4)
    assert resolve_shard("auto", {"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "2"}).index == 2
    for bad in ("0/4", "5/4", "x", "1/0", "autox"):
        with pytest.raises(InputError):
            resolve_shard(bad, {})
