"""The ids of recent jobs, for tab completion (``sophon job get <Tab>``).

The job commands add the ids they create or show to ``recent-jobs`` in the state directory: plain
text, one id per line, newest first, at most :data:`MAX_IDS`. The completion scripts read the file
with the shell alone (no Python at completion time). Losing or failing to write it costs nothing but
the completion, so errors are only debug notices.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FILE_NAME = "recent-jobs"
MAX_IDS = 100
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
