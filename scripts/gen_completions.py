#!/usr/bin/env python3
"""Regenerate completions/ (the shell scripts and the man page sophon.1) from the command tree:
python scripts/gen_completions.py [--check]."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sophon_cli.cli.completions import render_all  # noqa: E402
from sophon_cli.cli.manpage import render as render_man  # noqa: E402


def main() -> int:
    check = "--check" in sys.argv[1:]
    out_dir = ROOT / "completions"
    out_dir.mkdir(exist_ok=True)
    stale = []
    for name, text in {**render_all(), "sophon.1": render_man()}.items():
        path = out_dir / name
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(name)
            if not check:
                path.write_text(text)
    if check and stale:
        print(
            f"completions out of date: {', '.join(stale)}; run python scripts/gen_completions.py",
            file=sys.stderr,
        )
        return 1
    print("completions up to date" if not stale else f"wrote {', '.join(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
