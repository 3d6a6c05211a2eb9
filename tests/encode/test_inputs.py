"""Input expansion, sharding, output naming: pure functions, plain unit tests (plus one CLI check)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sophon_cli.client.errors import InputError
from sophon_cli.encode import (
    EncodeOptions,
    Source,
    drop_own_outputs,
    expand_inputs,
    output_path_for,
    parse_shard,
    select_shard,
    shard_of,
)
from sophon_cli.next_steps import Option, OptionError, Step


def _touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def test_globs_are_expanded_by_the_tool_with_duplicates_removed(tmp_path):
    _touch(
        tmp_path,
        "videos/a.mov",
        "videos/deep/b.MOV",
        "videos/deep/c.mkv",
        "videos/notes.txt",
        "videos/.hidden.mov",
    )
    videos, ignored = expand_inputs(
        ["videos/**/*.mov", "videos/a.mov", "./videos/a.mov", "videos/**/*.MOV", "videos/notes.txt"],
        cwd=tmp_path,
    )
    assert [v.display for v in videos] == ["videos/a.mov", "videos/deep/b.MOV"]
    assert ignored == ["videos/notes.txt"]
    assert all(v.base == tmp_path / "videos" for v in videos)


def test_directories_need_recursive_and_skip_hidden_and_partial_files(tmp_path):
    _touch(
        tmp_path, "d/x.mp4", "d/sub/y.webm", "d/.x.mp4.part", "d/z.mp4.part", "d/.git/q.mp4", "d/readme.md"
    )
    with pytest.raises(InputError, match="d is a directory") as info:
        expand_inputs(["d"], cwd=tmp_path)
    assert info.value.step == Step.RECURSE  # the CLI says "pass --recursive" (see the CLI check below)
    videos, ignored = expand_inputs(["d"], recursive=True, cwd=tmp_path)
    assert [v.display for v in videos] == ["d/x.mp4", "d/sub/y.webm"]
    assert ignored == ["d/readme.md"]


@pytest.mark.parametrize("pattern", ["nothing/*.mov", "missing.mp4", "*.avi"])
def test_a_pattern_matching_nothing_is_an_error_naming_it(tmp_path, pattern):
    _touch(tmp_path, "a.mp4")
    with pytest.raises(InputError) as info:
        expand_inputs(["a.mp4", pattern], cwd=tmp_path)
    assert pattern in str(info.value)


def test_output_paths_keep_the_layout_below_the_base(tmp_path):
    src = Source(tmp_path / "in" / "day1" / "a.mov", tmp_path / "in", "in/day1/a.mov")
    assert output_path_for(src, EncodeOptions()) == tmp_path / "in" / "day1" / "a.sophon.mp4"
    opts = EncodeOptions(output_dir=tmp_path / "out", container="mkv", name_template="{stem}-{profile}.{ext}")
    assert output_path_for(src, opts) == tmp_path / "out" / "day1" / "a-sophon-auto.mkv"
    with pytest.raises(OptionError, match="name_template") as info:
        EncodeOptions(name_template="{nope}.mp4")
    assert info.value.option == Option.NAME_TEMPLATE
    with pytest.raises(OptionError, match="fallback") as info:
        EncodeOptions(fallback="maybe")
    assert info.value.option == Option.FALLBACK


def test_outputs_of_other_inputs_are_not_inputs(tmp_path):
    a = Source(tmp_path / "a.mov", tmp_path, "a.mov")
    a_out = Source(tmp_path / "a.sophon.mp4", tmp_path, "a.sophon.mp4")
    a_copy = Source(tmp_path / "a.sophon.mov", tmp_path, "a.sophon.mov")  # a fallback copy
    b = Source(tmp_path / "b.sophon.mp4.mp4", tmp_path, "b.sophon.mp4.mp4")
    kept, dropped = drop_own_outputs([a, a_out, a_copy, b], EncodeOptions())
    assert kept == [a, b]
    assert [d[0] for d in dropped] == ["a.sophon.mp4", "a.sophon.mov"]


def _sources(n: int) -> list[Source]:
    return [
        Source(Path(f"/v/{i // 10}/clip{i}.mov"), Path("/v"), f"v/{i // 10}/clip{i}.mov") for i in range(n)
    ]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_shards_are_disjoint_complete_and_stable(count):
    sources = _sources(200)
    shards = [select_shard(sources, i, count) for i in range(1, count + 1)]
    for x, y in itertools.combinations(shards, 2):
        assert not {s.path for s in x} & {s.path for s in y}
    assert sorted(s.path for shard in shards for s in shard) == sorted(s.path for s in sources)
    # stable: independent of order and of the rest of the batch
    assert select_shard(list(reversed(sources)), 1, count) == list(reversed(shards[0]))
    assert all(shard_of(s.display, count) == 1 for s in select_shard(sources[:7], 1, count))
    if count > 1:
        assert all(len(shard) > 200 / count / 2 for shard in shards)  # roughly balanced


@pytest.mark.parametrize("bad", ["0/3", "4/3", "1/0", "x", "1-3", "1/3/4"])
def test_bad_shard_specs(bad):
    with pytest.raises(InputError, match="shard"):
        parse_shard(bad)


def test_cli_shards_split_one_batch_with_no_overlap(world, clip_bank):
    from tests.encode.conftest import place

    place(clip_bank[:1] * 6, world.work / "v", [f"f{i}.mp4" for i in range(6)])
    seen: list[str] = []
    for i in (1, 2):
        run = world.encode("v/*.mp4", "--shard", f"{i}/2", "--dry-run", "--json")
        assert run.returncode == 0, run.stderr
        seen += [e["file"] for e in run.events() if e["event"] == "plan"]
    assert sorted(seen) == [f"v/f{i}.mp4" for i in range(6)]
    assert world.requests() == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["d"], "error: d is a directory; pass --recursive to encode the videos inside it"),
        (["nothing/*.mp4"], "** needs no --recursive)"),
        (["v/a.mp4", "--fallback", "maybe"], "error: unknown --fallback 'maybe'; use copy, skip or fail"),
        (["v/a.mp4", "--name-template", "{nope}.mp4"], "error: bad --name-template '{nope}.mp4' ("),
        (
            ["v/a.mp4", "--name-template", "a.mp4"],
            "would overwrite it; pick another --name-template or -o directory",
        ),
        (
            ["v/a.mp4", "w/a.mp4", "-o", "out", "--name-template", "x.mp4"],
            "; use -o with the directory layout kept, or a --name-template with {name}",
        ),
    ],
)
def test_cli_words_the_librarys_options_and_next_steps_as_flags(world, clip_bank, args, line):
    """The library names options and next steps as data; the CLI's words for them name the flags."""
    from tests.encode.conftest import place

    place(clip_bank[:1], world.work / "v", ["a.mp4"])
    place(clip_bank[:1], world.work / "w", ["a.mp4"])
    (world.work / "d").mkdir()
    run = world.encode(*args, "--dry-run")
    assert run.returncode == 2, run.stderr
    assert line in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
