"""tests/unit stays in-process: no test module here starts a child process (those live in
tests/cli and the other directories), so this directory runs fast and needs nothing installed
beyond the package."""

from __future__ import annotations

import ast
from pathlib import Path

UNIT = Path(__file__).resolve().parent
SPAWNING = {"subprocess", "pty", "multiprocessing", "pexpect"}
SPAWNING_CALLS = {"system", "popen", "spawnv", "spawnl", "fork", "execv", "execvp", "posix_spawn"}


def test_no_unit_test_module_starts_a_process():
    offenders = []
    for path in sorted(UNIT.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                names = {"os"} if node.value.id == "os" and node.attr in SPAWNING_CALLS else set()
                if names:
                    offenders.append(f"{path.name}:{node.lineno} os.{node.attr}")
                continue
            else:
                continue
            for name in names & SPAWNING:
                offenders.append(f"{path.name}:{node.lineno} imports {name}")
    assert offenders == [], "move these tests out of tests/unit (see tests/README.md): " + ", ".join(
        offenders
    )
