"""Options, output names and keys of ``sophon encode``.

``EncodeOptions`` holds everything a run was asked for; ``job_options()`` is the part that shapes the
job request, and every key (cache entry, job Idempotency-Key) is derived from it. ``output_path_for``
is the one place an output name is made (``--name-template`` rendered, the layout below a directory
or glob kept under ``-o``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sophon_cli.client.errors import InputError
from sophon_cli.encode.inputs import Source
from sophon_cli.next_steps import Option, OptionError

__all__ = [
    "CONTAINERS",
    "DEFAULT_TEMPLATE",
    "FALLBACKS",
    "TEMPLATE_FIELDS",
    "EncodeOptions",
    "check_output_location",
    "check_template",
    "drop_own_outputs",
    "entry_key",
    "fallback_path_for",
    "job_idempotency_key",
    "output_path_for",
    "render_name",
]

FALLBACKS = ("copy", "skip", "fail")
CONTAINERS = ("mp4", "mkv")
DEFAULT_CONTAINER = "mp4"  # the API's default (OutputContainer)
DEFAULT_TEMPLATE = "{stem}.sophon.{ext}"
TEMPLATE_FIELDS = ("stem", "ext", "name", "suffix", "profile")


@dataclass(frozen=True)
class EncodeOptions:
    profile: str = "sophon-auto"
    container: str | None = None  # None: the API's default (mp4)
    audio: bool | None = None  # None: the API's default (no audio)
    height: int | None = None
    webhook_ids: tuple[str, ...] = ()
    metadata: tuple[tuple[str, Any], ...] = ()
    output_dir: Path | None = None
    name_template: str = DEFAULT_TEMPLATE
    concurrency: int = 2
    part_concurrency: int = 4
    fallback: str = "copy"
    force: bool = False
    timeout: float | None = None
    min_vmaf: float | None = None  # keep the original when the encode's mean VMAF is below this
    check_quality: bool = False  # score every output (implied by min_vmaf); never part of a key

    def __post_init__(self) -> None:
        # One canonical form of the job options, from which every key is derived: a value equal
        # to the API's default is the same as none (``--container mp4`` is the same job as no
        # flag; stored as "not given", so keys made before this rule still match), webhooks
        # de-duplicated and sorted (order and repeats do not change what is notified), metadata
        # in key order.
        object.__setattr__(self, "container", None if self.container == DEFAULT_CONTAINER else self.container)
        object.__setattr__(self, "audio", True if self.audio else None)
        object.__setattr__(self, "webhook_ids", tuple(sorted(set(self.webhook_ids))))
        object.__setattr__(self, "metadata", tuple(sorted(dict(self.metadata).items())))
        if self.min_vmaf is not None and not 0 <= self.min_vmaf <= 100:
            raise OptionError(
                Option.MIN_VMAF, f" {self.min_vmaf:g} is out of range", hint="use a score from 0 to 100"
            )
        if self.fallback not in FALLBACKS:
            raise OptionError(
                Option.FALLBACK, f" {self.fallback!r}", before="unknown ", hint="use copy, skip or fail"
            )
        if self.container is not None and self.container not in CONTAINERS:
            raise OptionError(
                Option.CONTAINER, f" {self.container!r}", before="unknown ", hint="use mp4 or mkv"
            )
        if self.concurrency < 1:
            raise OptionError(Option.CONCURRENCY, " must be at least 1", hint="use 1 or more, e.g. 2")
        check_template(self.name_template, self.profile)

    def job_options(self) -> dict[str, Any]:
        """Everything that shapes the job request besides the upload id, in canonical form."""
        return {
            "profile": self.profile,
            "container": self.container,
            "audio": self.audio,
            "target_height": self.height,
            "webhook_ids": list(self.webhook_ids) or None,
            "metadata": dict(self.metadata) or None,
        }

    def fingerprint(self, server: str | None = None) -> str:
        """Identifies the job options (and the server) in cache keys."""
        from sophon_cli.client.idempotency import canonical_json

        data = {"options": self.job_options(), "server": server}
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]


def _field_value(value: str) -> str:
    """A template field's value may never add a directory level or a control character."""
    return "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in value)


def render_name(template: str, *, stem: str, ext: str, name: str, suffix: str, profile: str) -> str:
    """Fill the name template; raise InputError unless the result is a safe relative file name."""
    fields = {"stem": stem, "ext": ext, "name": name, "suffix": suffix, "profile": profile}
    try:
        result = template.format(**{k: _field_value(v) for k, v in fields.items()})
    except (KeyError, IndexError, ValueError) as exc:
        raise OptionError(
            Option.NAME_TEMPLATE,
            f" {template!r} ({exc})",
            before="bad ",
            hint="use the fields {" + "}, {".join(TEMPLATE_FIELDS) + "}",
        ) from None
    components = result.replace("\\", "/").split("/")
    if (
        not result
        or os.path.isabs(result)
        or any(c in ("", ".", "..") for c in components)
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in result)
    ):
        raise OptionError(
            Option.NAME_TEMPLATE,
            f" {template!r}: it gives {result!r}",
            before="bad ",
            hint="it must give a relative file name without '..' or control characters, e.g. {stem}.sophon.{ext}",
        )
    return result


def check_template(template: str, profile: str = "sophon-auto") -> None:
    render_name(template, stem="x", ext="mp4", name="x.mov", suffix="mov", profile=profile)


def output_path_for(source: Source, options: EncodeOptions) -> Path:
    p = source.path
    name = render_name(
        options.name_template,
        stem=p.stem,
        ext=options.container or DEFAULT_CONTAINER,
        name=p.name,
        suffix=p.suffix.lstrip("."),
        profile=options.profile,
    )
    if options.output_dir is None:
        return p.parent / name
    try:
        rel = p.parent.relative_to(source.base)
    except ValueError:
        rel = Path()
    return Path(os.path.abspath(options.output_dir)) / rel / name


def drop_own_outputs(
    sources: Sequence[Source], options: EncodeOptions
) -> tuple[list[Source], list[tuple[str, str]]]:
    """Leave out inputs that are another input's output or fallback copy (a rerun whose glob
    matches the first run's results). Returns (kept, [(file, reason), ...])."""
    produced: dict[Path, Source] = {}
    for s in sources:
        out = output_path_for(s, options)
        produced.setdefault(out, s)
        produced.setdefault(fallback_path_for(out, s.path), s)
    kept: list[Source] = []
    dropped: list[tuple[str, str]] = []
    for s in sources:
        origin = produced.get(s.path)
        if origin is not None and origin.path != s.path:
            dropped.append((s.display, f"it is the output of {origin.display}"))
        else:
            kept.append(s)
    return kept, dropped


def fallback_path_for(output: Path, source: Path) -> Path:
    """Where a copy of the original goes: the output path with the source's extension."""
    if output.suffix.lower() == source.suffix.lower():
        return output
    return output.with_suffix(source.suffix)


def entry_key(path: Path, size: int, mtime_ns: int, fingerprint: str, output: Path) -> str:
    """The cache key of one file's intent: the source as it is now, the job options (and server)
    and the resolved output path, so a new ``-o`` or name template is a new entry (whose upload
    and job are still found again through their deterministic idempotency keys)."""
    return f"{path}|{size}|{mtime_ns}|{fingerprint}|{output}"


def job_idempotency_key(
    sha256: str, size: int, upload_id: str, options: EncodeOptions, nonce: str | None
) -> str:
    """The create-job key of one file's intent: its content, its upload (itself deterministic from
    the content and name, so the same after the cache is lost), the job options and the nonce."""
    from sophon_cli.client.idempotency import intent_key, route_key

    base = intent_key(
        "encode-job",
        sha256=sha256,
        size=size,
        upload_id=upload_id,
        options=options.job_options(),
        nonce=nonce,
    )
    return route_key(base, "create-job")


def check_output_location(out: Path, display: str) -> None:
    """Refuse, before anything is sent, an output that could never be written: a name longer
    than the file system allows, or a parent that is a regular file (not a directory)."""
    parent = out.parent
    existing = parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(
            f"cannot write the output of {display} to {out}: {existing} is a file, not a directory",
            hint="choose another output directory, or move that file away",
        )
    try:
        limit = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    length = len(os.fsencode(out.name))
    if length > limit:
        raise InputError(
            f"the output name for {display} is {length} bytes long; this file system allows {limit}",
            hint="use a shorter name template, e.g. {stem:.100}.sophon.{ext}, or rename the source",
        )
