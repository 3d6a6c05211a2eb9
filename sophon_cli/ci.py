"""Which shard of a batch this process is, read from the CI system's (or the cluster's) own
parallelism variables.

A CI that fans one job out into N copies tells each copy its place in the environment; the copies
then split the inputs with ``encode.select_shard`` (stable by path), so together they cover every
file exactly once. The service's idempotency keys keep a shard that is retried from duplicating work.

- GitLab CI: ``CI_NODE_INDEX`` (counts from 1) of ``CI_NODE_TOTAL``
- CircleCI: ``CIRCLE_NODE_INDEX`` (from 0) of ``CIRCLE_NODE_TOTAL``
- Buildkite: ``BUILDKITE_PARALLEL_JOB`` (from 0) of ``BUILDKITE_PARALLEL_JOB_COUNT``
- Kubernetes Indexed Jobs: ``JOB_COMPLETION_INDEX`` (from 0) of the N of ``auto/N``

GitHub Actions has no such variables: a matrix passes its own ``I/N`` (see ``action.yml``).

The spec is ``auto`` or ``auto/N``. With ``auto/N`` and a CI that states its own total, the two must
agree (a mismatch would silently skip or repeat files). This module reads only the mapping it is
given, never prints, and imports nothing from the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from sophon_cli.client.errors import InputError

__all__ = ["PROVIDERS", "Provider", "Shard", "detect_shard", "is_auto", "resolve_shard"]


@dataclass(frozen=True)
class Provider:
    name: str
    index_var: str
    total_var: str | None  # None: the total comes from ``auto/N``
    first: int  # the index of the first node: 1 (GitLab) or 0 (the others)


PROVIDERS: tuple[Provider, ...] = (
    Provider("GitLab CI", "CI_NODE_INDEX", "CI_NODE_TOTAL", 1),
    Provider("CircleCI", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", 0),
    Provider("Buildkite", "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", 0),
    Provider("Kubernetes Indexed Job", "JOB_COMPLETION_INDEX", None, 0),
)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``; ``source`` says where it came from."""

    index: int
    count: int
    source: str = "given"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def is_auto(spec: str | None) -> bool:
    return spec is not None and (spec == "auto" or spec.startswith("auto/"))


def _int(value: str, what: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise InputError(
            f"{what} is {value!r}, not a whole number",
            hint="check the CI's parallelism settings (or give the shard as I/N)",
        ) from None


def _auto_total(spec: str) -> int | None:
    if spec == "auto":
        return None
    text = spec.split("/", 1)[1]
    try:
        total = int(text)
    except ValueError:
        total = 0
    if total < 1:
        raise InputError(f"bad shard {spec!r}", hint="use auto, auto/N with N >= 1, or I/N")
    return total


def detect_shard(spec: str, env: Mapping[str, str] | None = None) -> Shard:
    """The shard for ``auto`` / ``auto/N`` from ``env`` (default: ``os.environ``).

    Raises InputError when no supported variable is set, when a value is not a number or out of
    range, or when ``auto/N`` disagrees with the total the CI states.
    """
    env = os.environ if env is None else env
    wanted = _auto_total(spec)
    for p in PROVIDERS:
        raw = env.get(p.index_var)
        if raw is None or not raw.strip():
            continue
        position = _int(raw, p.index_var)
        if p.total_var is not None:
            raw_total = env.get(p.total_var)
            if raw_total is None or not raw_total.strip():
                if wanted is None:
                    raise InputError(
                        f"{p.index_var} is set but {p.total_var} is not",
                        hint=f"set {p.total_var}, or give the total as auto/N",
                    )
                total = wanted
                where = f"{p.name} ({p.index_var}, total from auto/{wanted})"
            else:
                total = _int(raw_total, p.total_var)
                where = f"{p.name} ({p.index_var}/{p.total_var})"
                if wanted is not None and wanted != total:
                    raise InputError(
                        f"shard auto/{wanted} disagrees with {p.total_var}={total}",
                        hint=f"use auto (or auto/{total}) so every node splits the batch the same way",
                    )
        else:
            if wanted is None:
                raise InputError(
                    f"{p.index_var} is set but the total number of shards is unknown",
                    hint="give it as auto/N, e.g. auto/4 for a Job with completions: 4",
                )
            total = wanted
            where = f"{p.name} ({p.index_var}, total from auto/{wanted})"
        index = position - p.first + 1
        if total < 1 or not 1 <= index <= total:
            counted = "from 1" if p.first == 1 else "from 0"
            raise InputError(
                f"{p.index_var}={position} is out of range for {total} shards ({p.name} counts {counted})",
                hint="check the CI's parallelism settings",
            )
        return Shard(index, total, where)
    gitlab_total = env.get("CI_NODE_TOTAL", "").strip()
    if gitlab_total == "1" and wanted in (None, 1):
        # GitLab sets CI_NODE_TOTAL=1 (and no index) in a job without `parallel:`: the whole batch.
        return Shard(1, 1, "GitLab CI (CI_NODE_TOTAL=1: not parallel)")
    names = ", ".join(f"{p.name} {p.index_var}" for p in PROVIDERS)
    raise InputError(
        f"shard {spec}: no CI parallelism variable is set (looked for {names})",
        hint="run it in a parallel CI job or an Indexed Job, or give the shard as I/N, e.g. 2/4",
    )


def resolve_shard(spec: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``None`` -> None, ``I/N`` -> that shard, ``auto`` / ``auto/N`` -> ``detect_shard``."""
    if not spec:
        return None
    from sophon_cli.encode.inputs import parse_shard

    if is_auto(spec):
        return detect_shard(spec, env)
    parsed = parse_shard(spec)
    assert parsed is not None
    return Shard(*parsed)
