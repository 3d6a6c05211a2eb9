"""Pydantic models of the API's schemas, deliberately lenient.

* unknown fields are kept (``extra="allow"``) so a newer server never breaks parsing;
* enum-like fields (status, profile, phase, container, state) are plain ``str``;
* everything the client does not strictly need is optional with a ``None`` default.

Result models of the library's own operations (UploadResult, DownloadResult) live here too.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from sophon_cli.client.jobs import TERMINAL_STATUSES


class _Model(BaseModel):
    # defer_build: validators are built on a model's first use, not for all ~20 models at import
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)


# -- uploads -------------------------------------------------------------------------------------


class UploadSession(_Model):
    """``CreateUploadResponse``."""

    id: str
    chunk_size: int
    total_chunks: int
    expires_at: str | None = None


class UploadStatus(_Model):
    """``UploadStatusResponse``."""

    id: str
    status: str
    file_name: str | None = None
    total_chunks: int | None = None
    received_chunks: list[int] = Field(default_factory=list)
    expires_at: str | None = None
    source_width: int | None = None
    source_height: int | None = None
    source_duration_seconds: float | None = None


class UploadPart(_Model):
    """``UploadPartResponse``."""

    part_number: int
    received: bool = True


class CompletedUpload(_Model):
    """``CompleteUploadResponse``."""

    id: str
    status: str = "completed"
    sha256: str | None = None
    bytes: int | None = None


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


# -- health / errors -----------------------------------------------------------------------------


class Ready(_Model):
    ready: bool
    checks_failed: list[str] = Field(default_factory=list)


class ErrorBody(_Model):
    code: str | None = None
    message: str | None = None
    retryable: bool | None = None
    request_id: str | None = None


# -- results of the library's own operations ----------------------------------------------------


class UploadResult(_Model):
    """What ``uploads.upload_file`` did. ``resumed`` is True when the server already had some parts
    (or the whole upload) from an earlier run. ``sha256`` is the full digest of the file's bytes
    (checked against the server's); ``fingerprint`` the content fingerprint that keyed the session
    (pass both back to ``upload_file`` to skip reading an unchanged file)."""

    file: str
    upload_id: str
    sha256: str
    fingerprint: str | None = None
    bytes: int
    parts_total: int
    parts_sent: int
    resumed: bool = False


class DownloadResult(_Model):
    """What ``downloads.download`` did. ``skipped`` is True (and ``path`` None) when the job's
    ``final_artifact`` is ``"original"``: the source was already the best file, nothing to fetch."""

    path: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    final_artifact: str | None = None
    skipped: bool = False
    resumed_from: int = 0
    #: True only when the bytes matched the job's sha256; ``verification`` says how they were checked
    verified: bool = False
    verification: str = ""
    #: the target already held exactly this output: nothing was downloaded
    already_present: bool = False


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], response_or_data: Any) -> M:
    """Validate a response body (an httpx.Response or decoded JSON) into ``model``; a body that does
    not fit becomes a ServerError naming the model (never a pydantic traceback)."""
    from sophon_cli.client.errors import malformed

    data = response_or_data
    response = None
    if hasattr(response_or_data, "status_code"):
        from sophon_cli.client.errors import decode_json

        response = response_or_data
        data = decode_json(response)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()[:3])
        err = malformed(f"a response that does not fit the {model.__name__} shape ({fields})", response)
        if response is None:
            err.status = 200
        raise err from None
