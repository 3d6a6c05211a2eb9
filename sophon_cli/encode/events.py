"""What a run reports while it works: ``Event`` (one per state change of one file) and ``Progress``
(bytes or percent within a step). The library never prints; a renderer (the CLI's live display,
NDJSON, plain lines) subscribes through an ``EventSink``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = ["Event", "EventSink", "Progress"]

log = logging.getLogger(__name__)


@dataclass
class Event:
    """One state change of one file. ``state`` is a ``State`` value or one of the step events
    (``hashing``, ``downloading``, ``job_status``, ``job_reused``: a job an earlier run made, found
    through the cache or its idempotency key, with its status now, ``fallback``, ``cached``,
    ``timed_out``);
    ``detail`` holds plain JSON-able facts (never secrets)."""

    file: str
    state: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"event": "state", "file": self.file, "state": self.state, **self.detail}


@dataclass(frozen=True)
class Progress:
    """How far one file is within a step.

    ``phase`` is ``hashing``, ``uploading`` or ``downloading`` (``done``/``total`` in bytes; ``total``
    None when unknown) or ``encoding`` (``done``/``total`` = percent/100). For ``encoding``,
    ``status`` is the job's status (``queued``, ``processing``…) and ``fps`` / ``eta_seconds`` are the
    server's figures when it gives them.
    """

    file: str
    phase: str
    done: float
    total: float | None
    status: str | None = None
    fps: float | None = None
    eta_seconds: float | None = None


class EventSink:
    """Delivers events and progress to optional callbacks, one at a time (workers run in threads).

    A subscriber is a display: an exception it raises is not the file's (the step that emitted
    the event goes on). The first one is kept in :attr:`error` for the run to report at its end;
    every one is logged at debug level."""

    def __init__(
        self,
        on_event: Callable[[Event], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.on_event = on_event
        self.on_progress = on_progress
        self.error: Exception | None = None  # the first exception a subscriber raised
        self._lock = threading.Lock()

    def event(self, file: str, state: str, **detail: Any) -> None:
        if self.on_event is None:
            return
        with self._lock:
            self._deliver(self.on_event, Event(file, state, jsonable(detail)))

    def progress(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self._deliver(self.on_progress, progress)

    def _deliver(self, subscriber: Callable[[Any], None], what: Event | Progress) -> None:
        try:
            subscriber(what)
        except Exception as exc:
            log.debug("an event subscriber raised on %r", what, exc_info=True)
            if self.error is None:
                self.error = exc


def jsonable(detail: dict[str, Any]) -> dict[str, Any]:
    """``detail`` without None values, every value JSON-able (enums and paths as strings)."""
    out = {}
    for k, v in detail.items():
        if v is None:
            continue
        if isinstance(v, Path):
            v = str(v)
        elif isinstance(v, Enum):
            v = v.value
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            v = str(v)
        out[k] = v
    return out
