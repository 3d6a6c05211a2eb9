"""Fault injection for resilience tests.

A spec is a comma-separated list of rules ``PATTERN=FAULT[:PROB][:OPTION=VALUE...]``:

    PUT /v1/uploads/*/parts/*=reset:0.02      drop the connection after reading part of the body
    *=503:0.05                                answer 503 capacity_exceeded (retryable)
    *=429:0.05:retry-after=1                  answer 429 rate_limited with ``Retry-After: 1``
    *=429:1:retry-after=date:1                ... with ``Retry-After`` as an HTTP date 1 s ahead
    *=500:0.1                                 answer 500 internal_error
    GET /v1/jobs=401                          answer 401 unauthorized (every status carries the
                                              contract's code for it: see ``frame.FAULT_CODES``)
    *=latency:200ms[:PROB]                    sleep before handling (ms or s suffix)

PATTERN is ``*`` (every route), a path glob (``/v1/jobs*``) or ``METHOD path-glob``; ``*`` in a
path glob matches any characters including ``/``. PROB defaults to 1. Health routes
(``/healthz``, ``/readyz``, ``/metrics``) are never faulted unless a rule names them explicitly.
A seed (``--faults-seed``) makes the sequence of rolls repeatable.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import dataclass, field

HEALTH = ("/healthz", "/readyz", "/metrics")


class FaultSpecError(ValueError):
    pass


@dataclass
class Rule:
    method: str | None
    pattern: str
    kind: str  # "reset" | "status" | "latency"
    probability: float = 1.0
    status: int | None = None
    latency: float = 0.0
    options: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method != method.upper():
            return False
        if self.pattern == "*":
            return path not in HEALTH
        return fnmatch.fnmatchcase(path, self.pattern)


def _duration(text: str) -> float:
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            return float(t[:-2]) / 1000.0
        if t.endswith("s"):
            return float(t[:-1])
        return float(t) / 1000.0
    except ValueError as exc:
        raise FaultSpecError(f"bad latency {text!r}; use e.g. 200ms or 1.5s") from exc


def _prob(text: str) -> float:
    try:
        p = float(text)
    except ValueError as exc:
        raise FaultSpecError(f"bad probability {text!r}; use a number between 0 and 1") from exc
    if not 0.0 <= p <= 1.0:
        raise FaultSpecError(f"probability {text!r} is outside 0..1")
    return p


def parse_rule(text: str) -> Rule:
    if "=" not in text:
        raise FaultSpecError(f"fault rule {text!r} has no '='; use PATTERN=FAULT[:PROB][:opt=val]")
    target, _, fault = text.partition("=")
    target = target.strip()
    method: str | None = None
    if " " in target:
        method, _, target = target.partition(" ")
        method = method.strip().upper()
        target = target.strip()
    parts = [p for p in fault.strip().split(":")]
    kind_text, rest = parts[0].strip().lower(), parts[1:]
    options: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(rest):
        item = rest[i]
        if "=" in item:
            k, _, v = item.partition("=")
            # `retry-after=date:1` carries a colon inside its value
            if v == "date" and i + 1 < len(rest):
                v = f"date:{rest[i + 1]}"
                i += 1
            options[k.strip().lower()] = v.strip()
        else:
            positional.append(item)
        i += 1
    rule = Rule(method=method, pattern=target or "*", kind="status")
    if kind_text == "reset":
        rule.kind = "reset"
        if positional:
            rule.probability = _prob(positional[0])
    elif kind_text == "latency":
        rule.kind = "latency"
        if not positional:
            raise FaultSpecError("latency needs a duration, e.g. latency:200ms")
        rule.latency = _duration(positional[0])
        if len(positional) > 1:
            rule.probability = _prob(positional[1])
    elif kind_text.isdigit() and 400 <= int(kind_text) <= 599:
        rule.status = int(kind_text)
        if positional:
            rule.probability = _prob(positional[0])
    else:
        raise FaultSpecError(f"unknown fault {kind_text!r}; use reset, latency or an HTTP status")
    ra = options.get("retry-after")
    if ra is not None:
        value = ra[5:] if ra.startswith("date:") else ra
        try:
            float(value)
        except ValueError as exc:
            raise FaultSpecError(f"bad retry-after {ra!r}; use seconds or date:SECONDS") from exc
    rule.options = options
    return rule


def parse_faults(spec: str | None) -> list[Rule]:
    if not spec:
        return []
    return [parse_rule(p) for p in spec.split(",") if p.strip()]


class FaultInjector:
    def __init__(self, spec: str | None, seed: int | None = None) -> None:
        self.rules = parse_faults(spec)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.rules)

    def roll(self, method: str, path: str) -> list[Rule]:
        """The rules that fire for this request, in spec order (latency first is up to the spec)."""
        fired = []
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path) and self._rng.random() < rule.probability:
                    fired.append(rule)
        return fired
