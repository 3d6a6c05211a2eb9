"""Inputs of ``sophon encode``: files, directories and globs expanded to ``Source``s, and shards.

A glob is expanded here (not only by the shell) so a quoted pattern works where no shell expands
it. Nothing here talks to the server.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sophon_cli.client.errors import InputError
from sophon_cli.next_steps import Step, StepInputError

__all__ = [
    "VIDEO_EXTENSIONS",
    "Source",
    "expand_inputs",
    "parse_shard",
    "select_shard",
    "shard_of",
]

VIDEO_EXTENSIONS = frozenset(
    {
        ".3g2",
        ".3gp",
        ".asf",
        ".avi",
        ".dv",
        ".f4v",
        ".flv",
        ".h264",
        ".h265",
        ".hevc",
        ".m2t",
        ".m2ts",
        ".m2v",
        ".m4v",
        ".mkv",
        ".mov",
        ".mp4",
        ".mpeg",
        ".mpg",
        ".mts",
        ".mxf",
        ".ogv",
        ".qt",
        ".ts",
        ".vob",
        ".webm",
        ".wmv",
        ".y4m",
    }
)


@dataclass(frozen=True)
class Source:
    """One input file. ``base`` is the directory outputs are laid out relative to (the directory
    argument, the fixed part of a glob, or the file's own directory)."""

    path: Path
    base: Path
    display: str


def _display(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def _is_candidate(path: Path) -> bool:
    name = path.name
    return not name.startswith(".") and not name.endswith((".part", ".tmp"))


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def expand_inputs(
    patterns: Sequence[str],
    *,
    recursive: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    skipped_dirs: list[str] | None = None,
) -> tuple[list[Source], list[str]]:
    """Expand files, directories (with ``recursive``) and globs (``**`` included) ourselves, so a
    quoted pattern works where no shell expands it. Returns (videos, ignored non-video files).

    Duplicates are removed (first occurrence wins). A pattern that matches nothing raises
    InputError naming it; so does a directory without ``recursive``, unless the caller passes a
    ``skipped_dirs`` list and other inputs were given: then the directory is skipped (and named
    in the list), as a glob skips the directories it matches, so ``vids/*`` expanded by the shell
    means what the quoted ``"vids/*"`` means.
    """
    dirs: list[str] = []
    root = Path(cwd) if cwd is not None else Path.cwd()
    seen: set[str] = set()
    videos: list[Source] = []
    ignored: list[str] = []

    def add(path: Path, base: Path) -> None:
        absolute = Path(os.path.abspath(root / path))
        real = os.path.realpath(absolute)
        if real in seen:
            return
        seen.add(real)
        if absolute.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(Source(absolute, Path(os.path.abspath(root / base)), _display(absolute, root)))
        else:
            ignored.append(_display(absolute, root))

    def walk(directory: Path, base: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(root / directory):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if _is_candidate(p):
                    add(p, base)

    for pattern in patterns:
        if not pattern:
            raise InputError("an empty input pattern was given", hint="pass files, directories or globs")
        expanded = os.path.expanduser(pattern)
        target = root / expanded
        if glob.has_magic(expanded) and not target.exists():
            base = _glob_base(expanded)
            matches = sorted(glob.glob(str(target), recursive=True))
            found = False
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    if recursive:
                        walk(mp, mp)
                        found = True
                    continue
                if mp.is_file() and _is_candidate(mp):
                    add(mp, base)
                    found = True
            if not found:
                raise StepInputError(
                    f"no files match {pattern!r}",
                    step=Step.CHECK_PATTERN,
                    hint="check the pattern (quote it so the shell does not expand it; ** needs no recursion)",
                )
        elif target.is_dir():
            if not recursive:
                dirs.append(pattern)
                continue
            walk(Path(expanded), Path(expanded))
        elif target.is_file():
            add(Path(expanded), Path(expanded).parent)
        else:
            raise InputError(f"no such file: {pattern}", hint="check the path or the glob pattern")
    if dirs and (skipped_dirs is None or not (videos or ignored)):
        raise StepInputError(
            f"{dirs[0]} is a directory",
            step=Step.RECURSE,
            hint="recurse into it to encode the videos inside it",
        )
    if skipped_dirs is not None:
        skipped_dirs.extend(dirs)
    return videos, ignored


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N) -> (I, N): the one parser of a shard given as numbers
    (``ci.resolve_shard`` adds ``auto``)."""
    if not text:
        return None
    try:
        left, right = text.split("/", 1)
        index, count = int(left), int(right)
    except ValueError:
        raise InputError(
            f"bad shard {text!r}", hint="give it as I/N with I counting from 1, e.g. 1/4"
        ) from None
    if count < 1 or not 1 <= index <= count:
        raise InputError(f"bad shard {text!r}", hint="give it as I/N with 1 <= I <= N, e.g. 2/4")
    return index, count


def shard_of(path_key: str, count: int) -> int:
    """The 1-based shard a path belongs to: stable across runs, machines and Python versions."""
    digest = hashlib.sha256(path_key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def select_shard(sources: Iterable[Source], index: int, count: int) -> list[Source]:
    """The sources of shard ``index`` of ``count``, keyed on the path as displayed (relative to the
    working directory when inside it), so CI jobs in differently-named checkouts agree."""
    return [s for s in sources if shard_of(s.display.replace(os.sep, "/"), count) == index]
