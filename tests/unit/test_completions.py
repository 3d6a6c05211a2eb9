"""The static completion scripts match the command tree (real shells complete with them:
tests/cli/test_completion_shells.py)."""

from __future__ import annotations

from pathlib import Path

from sophon_cli.cli.completions import _all, build_tree, render_all

ROOT = Path(__file__).resolve().parents[2]
COMPLETIONS = ROOT / "completions"


def test_completion_files_match_the_command_tree():
    rendered = render_all()
    for name, text in rendered.items():
        path = COMPLETIONS / name
        assert path.exists(), f"{path} missing; run python scripts/gen_completions.py"
        assert path.read_text() == text, (
            f"{name} drifted from the command tree; run python scripts/gen_completions.py"
        )


def test_every_command_path_and_option_is_in_every_script():
    tree = build_tree()
    texts = {name: (COMPLETIONS / name).read_text() for name in render_all()}
    for node in _all(tree):
        for text in texts.values():
            if node.path:
                assert node.path[-1] in text
            for opt in node.options:
                assert opt.lstrip("-") in text


def test_tree_has_the_documented_commands():
    tree = build_tree()
    paths = {node.key for node in _all(tree)}
    for expected in [
        "/upload",
        "/uploads/get",
        "/uploads/cancel",
        "/job/create",
        "/job/get",
        "/job/list",
        "/job/cancel",
        "/job/wait",
        "/download",
        "/webhooks/create",
        "/webhooks/list",
        "/webhooks/delete",
        "/webhooks/verify",
        "/webhooks/listen",
        "/encode",
        "/server",
        "/health",
        "/config/show",
        "/config/set",
        "/config/set-key",
    ]:
        assert expected in paths
