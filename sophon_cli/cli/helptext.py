"""The help screens' last touches, applied to the built command tree in one place.

typer's plain help has rough edges this fixes for every command at once (whoever defines it):

- usage lines name arguments as written in the docs: ``PATTERN...``, ``[FILE]``, ``KEY VALUE``
  (typer prints ``{PATTERN}...``, ``[[FILE]]``, ``{key} {value}``), and no ``<list[str]>`` types;
- command summaries in listings are the whole first line of the help, never cut at "...";
- an option whose help already states its default (``[default: stdin]``) does not get typer's own
  ``[default: -]`` after it;
- each command's help ends with 1-3 examples (:data:`EXAMPLES`, checked by a test for every
  command of the tree).

The man page (``cli/manpage.py``) and the completions are generated from the same polished tree.
"""

from __future__ import annotations

from typing import Any

#: command path -> example command lines (1-3 each; a test runs over the whole tree)
EXAMPLES: dict[str, list[str]] = {
    "": ["sophon encode --local clip.mp4", "sophon job list --json id,status", "sophon job create --help"],
    "upload": ["sophon upload clip.mp4", "sophon upload -j 8 *.mov", "sophon --json upload clip.mp4 --new"],
    "uploads": ["sophon uploads get upl_123", "sophon uploads cancel upl_123 --yes"],
    "uploads get": ["sophon uploads get upl_123", "sophon uploads get upl_123 --json status,expires_at"],
    "uploads cancel": ["sophon uploads cancel upl_123", "sophon uploads cancel upl_123 --yes"],
    "job": ["sophon job create clip.mp4 --wait", "sophon job list --watch", "sophon job wait job_123"],
    "job create": [
        "sophon job create clip.mp4 --wait",
        "sophon job create --upload upl_123 --profile sophon-espresso --height 720",
        "sophon job create clip.mp4 --metadata customer=acme --webhook wh_123",
    ],
    "job get": [
        "sophon job get job_123",
        "sophon job get job_123 --watch",
        "sophon job get job_123 --jq .status",
    ],
    "job list": [
        "sophon job list --status failed --since 1d",
        "sophon job list --metadata customer=acme --json id,status,output",
        "sophon job list --all --jq '.[] | select(.status == \"failed\") | .id'",
    ],
    "job cancel": ["sophon job cancel job_123"],
    "job wait": ["sophon job wait job_123", "sophon job wait job_1 job_2 --timeout 600"],
    "download": [
        "sophon download job_123",
        "sophon download job_123 -o out/",
        "sophon download job_123 -o a.mp4 --force",
    ],
    "encode": [
        "sophon encode --local clip.mp4",
        'sophon encode "videos/**/*.mov" -o encoded/',
        "sophon encode -r videos/ -j 4 --report results.xml",
    ],
    "compare": [
        "sophon compare clip.mp4 clip.sophon.mp4",
        "sophon compare clip.mp4 clip.sophon.mp4 --subsample 5",
    ],
    "webhooks": ["sophon webhooks create https://example.com/hook --save-secret", "sophon webhooks list"],
    "webhooks create": [
        "sophon webhooks create https://example.com/hook",
        "sophon webhooks create https://example.com/hook --name prod --save-secret",
    ],
    "webhooks list": ["sophon webhooks list", "sophon webhooks list --json id,url"],
    "webhooks delete": ["sophon webhooks delete wh_123"],
    "webhooks verify": [
        "sophon webhooks verify --signature sha256=ab12... --timestamp 2026-01-31T12:00:00Z < body.json"
    ],
    "webhooks listen": [
        "sophon webhooks listen",
        "sophon webhooks listen --forward-to http://127.0.0.1:3000/hook",
    ],
    "health": ["sophon health", "sophon --local health"],
    "doctor": ["sophon doctor", "sophon --local doctor"],
    "server": ["sophon server", "sophon server --port 9000 --data-dir /tmp/sophon"],
    "server status": ["sophon server status", "sophon --json server status --data-dir ./srv"],
    "server stop": ["sophon server stop", "sophon server stop --data-dir ./srv"],
    "config": ["sophon config show", "sophon config set-key"],
    "config show": [
        "sophon config show",
        "sophon --profile staging config show",
        "sophon config show --jq .sources",
    ],
    "config set": [
        "sophon config set base_url https://staging.example.com --profile staging",
        "sophon config set timeout 60",
    ],
    "config set-key": ["sophon config set-key", "sophon config set-key --profile staging < key.txt"],
    "config path": ["sophon config path"],
    "cache": ["sophon cache list", "sophon cache prune --older-than 7"],
    "cache list": ["sophon cache list", "sophon cache list --json key,state,job_id"],
    "cache prune": ["sophon cache prune", "sophon cache prune --older-than 0"],
    "cache clear": ["sophon cache clear", "sophon cache clear --yes"],
    "completions": [
        "sophon completions bash > ~/.local/share/bash-completion/completions/sophon",
        "sophon completions --man > sophon.1",
    ],
    "version": ["sophon version", "sophon -V"],
}


def examples_epilog(lines: list[str]) -> str:
    # "\b" keeps click from re-wrapping the paragraph
    return "\b\nExamples:\n" + "\n".join(f"  $ {line}" for line in lines)


def first_line(text: str | None) -> str:
    text = (text or "").strip()
    return text.splitlines()[0].replace("\b", "").strip() if text else ""


def walk(cmd: Any, path: tuple[str, ...] = ()):
    """(path, command) for the command and every visible subcommand, depth first."""
    yield path, cmd
    commands = getattr(cmd, "commands", None) or {}
    for name, sub in commands.items():
        if not getattr(sub, "hidden", False):
            yield from walk(sub, (*path, name))


def polish(root: Any) -> Any:
    """Apply the fixes above to every command below ``root`` (in place); returns ``root``."""
    from typer.core import TyperArgument

    argument_cls = _clean_argument_class(TyperArgument)
    for path, cmd in walk(root):
        if cmd.help and not cmd.short_help:
            cmd.short_help = first_line(cmd.help)
        examples = EXAMPLES.get(" ".join(path))
        if examples and "Examples:" not in (cmd.epilog or ""):
            epilog = examples_epilog(examples)
            cmd.epilog = f"{epilog}\n\n{cmd.epilog}" if cmd.epilog else epilog
        for param in getattr(cmd, "params", []):
            if type(param) is TyperArgument:
                param.__class__ = argument_cls
            if "[default" in (getattr(param, "help", None) or ""):
                param.show_default = False
    return root


_CLEAN: dict[type, type] = {}


def _clean_argument_class(base: type) -> type:
    """A subclass of typer's argument that names itself as the docs do."""
    if base in _CLEAN:
        return _CLEAN[base]

    class CleanArgument(base):  # type: ignore[misc, valid-type]
        def _usage_display_name(self) -> str:
            name = self.metavar or self.name.upper()
            if self.nargs != 1:
                name += "..."
            return name if self.required else f"[{name}]"

        def _rich_display_name(self) -> str:
            name = self.metavar or self.name.upper()
            return name + "..." if self.nargs != 1 else name

        def display_type_rich(self, ctx: Any) -> str | None:
            return None

        def get_error_hint(self) -> str:
            return f"'{self.metavar or self.name.upper()}'"

    _CLEAN[base] = CleanArgument
    return CleanArgument
