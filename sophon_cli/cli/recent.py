"""The ids of recent jobs, for tab completion (``sophon job get <Tab>``), and the local files recent
uploads and jobs were made from, for the SOURCE column of ``sophon job list``.

The job commands add the ids they create or show to ``recent-jobs`` in the state directory: plain
text, one id per line, newest first, at most :data:`MAX_IDS`. The completion scripts read the file
with the shell alone (no Python at completion time). Losing or failing to write it costs nothing but
the completion, so errors are only debug notices.

``upload`` and ``job create`` add ``<id>\t<local path>`` lines to ``recent-sources`` (newest first,
at most :data:`MAX_SOURCES`): an upload's own file name is derived from its content (the same bytes
under two names are one upload), so it cannot tell the user which file a job came from. The same
rule holds: losing the file costs only the column, which then shows ``-`` (jobview.source_label).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FILE_NAME = "recent-jobs"
MAX_IDS = 100
SOURCES_FILE_NAME = "recent-sources"
MAX_SOURCES = 1000
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def read(state_dir: Path) -> list[str]:
    try:
        text = path(state_dir).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return [line for line in text.splitlines() if _ID.fullmatch(line)]


def remember(state_dir: Path, job_ids: Iterable[Any], *, on_error: Any = None) -> None:
    """Put ``job_ids`` first (newest first among themselves), keep at most :data:`MAX_IDS`."""
    from sophon_cli.client.files import write_private_file

    new = [str(j) for j in job_ids if j and _ID.fullmatch(str(j))]
    if not new:
        return
    known = read(state_dir)
    ids = list(dict.fromkeys([*new, *known]))[:MAX_IDS]
    if ids == known:
        return  # nothing changed: no write
    try:
        write_private_file(path(state_dir), ("\n".join(ids) + "\n").encode(), private_dir=True, durable=False)
    except OSError as exc:
        if on_error is not None:
            on_error(f"could not update {path(state_dir)}: {exc.strerror or exc}")


def sources_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOURCES_FILE_NAME


def sources(state_dir: Path) -> dict[str, str]:
    """Upload or job id -> the local path it was made from (newest line wins)."""
    try:
        text = sources_path(state_dir).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        ident, sep, name = line.partition("\t")
        if sep and name and _ID.fullmatch(ident) and ident not in found:
            found[ident] = name
    return found


def remember_sources(state_dir: Path, pairs: Iterable[tuple[Any, Any]], *, on_error: Any = None) -> None:
    """Put the (id, local path) ``pairs`` first; a path holding a tab or a line break is not kept."""
    from sophon_cli.client.files import write_private_file

    new = {
        str(i): str(n)
        for i, n in pairs
        if i and n and _ID.fullmatch(str(i)) and not any(c in str(n) for c in "\t\r\n")
    }
    if not new:
        return
    known = sources(state_dir)
    if all(known.get(i) == n for i, n in new.items()):
        return  # nothing changed: no write
    merged = list({**new, **{i: n for i, n in known.items() if i not in new}}.items())[:MAX_SOURCES]
    text = "".join(f"{i}\t{n}\n" for i, n in merged)
    try:
        write_private_file(sources_path(state_dir), text.encode(), private_dir=True, durable=False)
    except OSError as exc:
        if on_error is not None:
            on_error(f"could not update {sources_path(state_dir)}: {exc.strerror or exc}")
