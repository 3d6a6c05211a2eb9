"""tests/README.md cites only tests that exist: every ``path.py::test_name`` and ``::test_name`` it
names is a test function defined under tests/ (in that file, when the file is named with it), and
every ``tests/….py`` path it names is a file. A rewrite that drops tests the README still promises
(as 090138b once dropped four `config show` tests) turns this red."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "tests" / "README.md"
_DEF = re.compile(r"^(?:async )?def (test_\w+)", re.M)
_CITED = re.compile(r"(?P<path>tests/[\w/]+\.py)?::(?P<name>test_\w+)")
_PATH = re.compile(r"(?<!former `)\btests/[\w/]+\.py\b")  # "the former `x.py`" is history


def _defined() -> dict[str, set[str]]:
    return {
        str(p.relative_to(ROOT)): set(_DEF.findall(p.read_text(encoding="utf-8")))
        for p in (ROOT / "tests").rglob("test_*.py")
    }


def test_every_cited_test_function_exists():
    defined = _defined()
    everywhere = set().union(*defined.values())
    text = README.read_text(encoding="utf-8")
    missing = []
    for m in _CITED.finditer(text):
        path, name = m.group("path"), m.group("name")
        if path is not None and path in defined:
            if name not in defined[path]:
                missing.append(f"{path}::{name}")
        elif name not in everywhere:
            missing.append(m.group(0))
    assert missing == [], "tests/README.md cites tests that do not exist: " + ", ".join(missing)


def test_every_cited_test_file_exists():
    text = " ".join(README.read_text(encoding="utf-8").split())  # a mention may wrap
    missing = sorted({p for p in _PATH.findall(text) if not (ROOT / p).is_file()})
    assert missing == [], "tests/README.md names files that do not exist: " + ", ".join(missing)
