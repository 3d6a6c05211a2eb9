"""Pydantic models of the jobs and webhooks schemas (see :mod:`sophon_cli.client.models`, which
exports them: they are built when first asked for, so an upload never pays for their classes)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr

from sophon_cli.client.jobs import TERMINAL_STATUSES
from sophon_cli.client.models import _Model

# -- jobs ----------------------------------------------------------------------------------------


class JobSourceInfo(_Model):
    name: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    duration_seconds: float | None = None
    resolution: str | None = None
    frame_rate: str | None = None


class JobProgress(_Model):
    stage: str | None = None
    phase: str | None = None
    percent: float | None = None
    phase_percent: float | None = None
    fps: float | None = None
    eta_seconds: float | None = None
    frames_done: int | None = None
    frames_total: int | None = None


class JobOutputInfo(_Model):
    state: str | None = None
    container: str | None = None
    audio: bool | None = None
    target_height: int | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    retention_expires_at: str | None = None


class Job(_Model):
    """``JobResponse`` plus ``final_artifact`` / ``saved_percent`` (documented beyond the schema)."""

    id: str
    status: str
    status_reason: str | None = None
    attempt: int | None = None
    retryable: bool | None = None
    profile: str | None = None
    effective_profile_id: str | None = None
    source: JobSourceInfo = Field(default_factory=JobSourceInfo)
    progress: JobProgress = Field(default_factory=JobProgress)
    output: JobOutputInfo = Field(default_factory=JobOutputInfo)
    metadata: Any = None
    created_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    final_artifact: str | None = None
    saved_percent: float | None = None
    #: set by ``jobs.create`` when the answer was a replay (``Idempotent-Replayed: true``)
    _replayed: bool = PrivateAttr(default=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def replayed(self) -> bool:
        """``jobs.create`` found the job already made (an idempotent replay): this is the answer
        from when it was created, its status included (never read from the body)."""
        return self._replayed


class JobList(_Model):
    """``ListJobsResponse``."""

    jobs: list[Job] = Field(default_factory=list)
    next_cursor: str | None = None
    has_more: bool | None = None


# -- webhooks ------------------------------------------------------------------------------------


class Webhook(_Model):
    """``WebhookResponse``: ``secret`` is only ever returned here, at creation."""

    id: str
    url: str
    secret: str | None = Field(default=None, repr=False)
    active: bool | None = None
    created_at: str | None = None
    name: str | None = None


class WebhookItem(_Model):
    """``WebhookListItem``."""

    id: str
    url: str
    active: bool | None = None
    created_at: str | None = None
    name: str | None = None


class WebhookList(_Model):
    webhooks: list[WebhookItem] = Field(default_factory=list)


class WebhookEvent(_Model):
    """``WebhookDeliveryPayload`` (parse only after verify_signature succeeded)."""

    event_id: str
    type: str | None = None
    timestamp: str | None = None
    job_id: str | None = None
    status: str | None = None
    metadata: Any = None
