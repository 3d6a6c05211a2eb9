"""docs/ARCHITECTURE.md names only what exists: every module of its layout tree, every file path
and test it cites, every ``sophon_cli.…`` module or attribute, and every ``from sophon_cli… import``
in its code blocks."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGE = ROOT / "sophon_cli"
TOP_DIRS = ("sophon_cli/", "tests/", "benchmarks/", "scripts/", "docs/", "completions/", "examples/", ".ci/")
_TREE_LINE = re.compile(r"^(?P<indent> *)(?P<name>[\w.-]+(?:\.py|/))(?:\s|$)")
_TICKED = re.compile(r"`([^`\n]+)`")
_PATH = re.compile(
    r"^(?P<path>[\w./-]+?\.(?:py|md|toml|ya?ml|json|bash|fish|txt)|[\w./-]+/)(?:::(?P<test>\w+))?$"
)
_DOTTED = re.compile(r"\bsophon_cli(?:\.\w+)+")
_FROM_IMPORT = re.compile(r"^\s*from (sophon_cli[\w.]*) import ([\w, ]+)", re.M)


def _text() -> str:
    return DOC.read_text(encoding="utf-8")


def _tree() -> list[str]:
    """The paths of the layout block (the first code block that starts with ``sophon_cli/``)."""
    blocks = re.findall(r"```\n(sophon_cli/\n.*?)```", _text(), re.S)
    assert blocks, "docs/ARCHITECTURE.md has no layout block starting with `sophon_cli/`"
    stack: list[tuple[int, str]] = []
    paths = []
    for line in blocks[0].splitlines():
        m = _TREE_LINE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = parent + m["name"]
        paths.append(path)
        if path.endswith("/"):
            stack.append((indent, path))
    return paths


def test_every_module_of_the_layout_exists():
    missing = [p for p in _tree() if not (ROOT / p).exists()]
    assert missing == [], f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"


def _resolve(path: str) -> Path | None:
    for base in (ROOT, PACKAGE):
        candidate = base / path
        if candidate.exists():
            return candidate
    return None


def _cited_paths() -> list[tuple[str, str | None]]:
    found = []
    for token in _TICKED.findall(_text()):
        m = _PATH.match(token.strip())
        if not m:
            continue
        path = m["path"]
        if path.endswith(".py") or path.startswith(TOP_DIRS) or "/" in path.rstrip("/"):
            found.append((path, m["test"]))
    return found


def test_every_cited_file_and_test_exists():
    cited = _cited_paths()
    assert len(cited) > 10  # the doc cites files; an empty list means the pattern broke
    problems = []
    for path, test in cited:
        where = _resolve(path)
        if where is None:
            problems.append(path)
        elif test is not None:
            tree = ast.parse(where.read_text(encoding="utf-8"))
            names = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            if test not in names:
                problems.append(f"{path}::{test}")
    assert problems == [], f"docs/ARCHITECTURE.md cites what does not exist: {problems}"


def _check_dotted(name: str) -> str | None:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return name
            obj = getattr(obj, attr)
        return None
    return name


def test_every_dotted_name_and_import_resolves():
    text = _text()
    problems = [n for n in sorted(set(_DOTTED.findall(text))) if _check_dotted(n)]
    for module_name, names in _FROM_IMPORT.findall(text):
        for attr in (n.strip() for n in names.split(",")):
            if attr and _check_dotted(f"{module_name}.{attr}"):
                problems.append(f"from {module_name} import {attr}")
    assert problems == [], f"docs/ARCHITECTURE.md names what cannot be imported: {problems}"


@pytest.mark.parametrize("bad", ["sophon_cli/nope.py", "tests/nowhere/test_x.py"])
def test_a_missing_path_would_be_caught(bad):
    assert _resolve(bad) is None
