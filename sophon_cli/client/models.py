"""Pydantic models of the API's schemas, deliberately lenient.

* unknown fields are kept (``extra="allow"``) so a newer server never breaks parsing;
* enum-like fields (status, profile, phase, container, state) are plain ``str``;
* everything the client does not strictly need is optional with a ``None`` default.

Result models of the library's own operations (UploadResult, DownloadResult) live here too; the
jobs and webhooks models are in ``job_models`` and exported from here on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from sophon_cli.client.job_models import (
        Job as Job,
    )
    from sophon_cli.client.job_models import (
        JobList as JobList,
    )
    from sophon_cli.client.job_models import (
        JobOutputInfo as JobOutputInfo,
    )
    from sophon_cli.client.job_models import (
        JobProgress as JobProgress,
    )
    from sophon_cli.client.job_models import (
        JobSourceInfo as JobSourceInfo,
    )
    from sophon_cli.client.job_models import (
        Webhook as Webhook,
    )
    from sophon_cli.client.job_models import (
        WebhookEvent as WebhookEvent,
    )
    from sophon_cli.client.job_models import (
        WebhookItem as WebhookItem,
    )
    from sophon_cli.client.job_models import (
        WebhookList as WebhookList,
    )

# The jobs and webhooks models live in client/job_models.py and are imported on first use: the
# upload path (the process's first request) only needs the upload ones (~10 classes fewer to build).
_JOB_MODELS = frozenset(
    {
        "Job",
        "JobList",
        "JobOutputInfo",
        "JobProgress",
        "JobSourceInfo",
        "Webhook",
        "WebhookEvent",
        "WebhookItem",
        "WebhookList",
    }
)


def __getattr__(name: str) -> Any:
    if name in _JOB_MODELS:
        from sophon_cli.client import job_models

        return getattr(job_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
