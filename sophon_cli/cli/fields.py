"""The top-level field names of the JSON objects the CLI prints (API objects and its own records).

``sophon job get --json id,status`` is told apart from ``sophon job get --json job_123`` (a bare
``--json`` followed by an argument) before parsing, without loading pydantic: a single word after
``--json`` is a field list only when it is one of these names. A test keeps the set in step with
the models (``tests/cli/test_output_conventions.py``).
"""

from __future__ import annotations

#: the fields of the objects a command group prints, checked before the command does anything (so
#: ``job create --json colour`` creates no job); a test keeps them equal to the models
JOB_FIELDS = (
    "id", "status", "status_reason", "attempt", "retryable", "profile", "effective_profile_id",
    "source", "progress", "output", "metadata", "created_at", "started_at", "completed_at",
    "error", "final_artifact", "saved_percent",
)  # fmt: skip
UPLOAD_STATUS_FIELDS = (
    "id", "status", "file_name", "total_chunks", "received_chunks", "expires_at", "source_width",
    "source_height", "source_duration_seconds",
)  # fmt: skip
UPLOAD_RECORD_FIELDS = ("file", "upload_id", "sha256", "bytes")
FIELDS_BY_COMMAND = {"job": JOB_FIELDS, "uploads": UPLOAD_STATUS_FIELDS, "upload": UPLOAD_RECORD_FIELDS}


#: commands whose --json output is a stream of objects of several shapes (``encode``: one event
#: per state change, then a summary): a field list cannot apply to all of them, --jq can
STREAM_COMMANDS = frozenset({"encode"})


def check_fields(command: str | None, fields: list[str]) -> None:
    """Reject a field the command's objects do not have, before any work (exit 2, listing them)."""
    if command in STREAM_COMMANDS:
        from sophon_cli.client.errors import InputError

        raise InputError(
            f"`sophon {command} --json` streams events of several shapes and takes no field list",
            hint="use --json alone, and --jq to pick, e.g. --jq 'select(.event == \"summary\") | .counts'",
        )
    valid = FIELDS_BY_COMMAND.get(command or "")
    if valid is None:
        return  # checked against the object itself when it is printed
    unknown = [f for f in fields if f not in valid]
    if unknown:
        from sophon_cli.client.errors import InputError

        raise InputError(f"unknown JSON field {unknown[0]!r}", hint="valid fields: " + ", ".join(valid))


KNOWN_FIELDS = frozenset(
    {
        # Job
        "id", "status", "status_reason", "attempt", "retryable", "profile", "effective_profile_id",
        "source", "progress", "output", "metadata", "created_at", "started_at", "completed_at",
        "error", "final_artifact", "saved_percent",
        # uploads, upload sessions and `sophon upload` records
        "file", "file_name", "upload_id", "sha256", "bytes", "fingerprint", "parts_total", "parts_sent",
        "resumed", "chunk_size", "total_chunks", "received_chunks", "expires_at", "source_width",
        "source_height", "source_duration_seconds",
        # webhooks
        "url", "active", "name", "secret",
        # downloads, readiness, cache entries and command records
        "path", "skipped", "resumed_from", "ready", "checks_failed", "key", "state", "result", "job_id",
        "updated_at", "event", "pruned", "remaining", "state_file", "cleared", "deleted", "valid", "reason",
        "downloaded", "already_present", "verification", "verified",
    }
)  # fmt: skip
