"""The one error boundary: exceptions -> (exit code, one-line message).

Every message is one line on stderr, names the next step, and carries the server's request id
when there is one. Tracebacks are shown only with ``SOPHON_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import traceback

from sophon_cli.exitcodes import ExitCode


def debug_enabled() -> bool:
    return os.environ.get("SOPHON_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def classify(exc: BaseException) -> tuple[int, str]:
    """Map an exception to its exit code and a one-line message (without the ``error:`` prefix)."""
    from sophon_cli.client import errors as e

    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, "interrupted; run the same command again to resume"
    if isinstance(exc, e.SophonError):
        exit_codes = (
            (e.InputError, ExitCode.USAGE),
            (e.ConfigError, ExitCode.AUTH),
            (e.AuthError, ExitCode.AUTH),
            (e.NotFoundError, ExitCode.NOT_FOUND),
            (e.TransportError, ExitCode.UNREACHABLE),
            (e.JobFailedError, ExitCode.JOB_FAILED),
            (e.WaitTimeoutError, ExitCode.TIMEOUT),
        )
        code = next((c for cls, c in exit_codes if isinstance(exc, cls)), ExitCode.ERROR)
        msg = str(exc)
        hint = getattr(exc, "hint", None) or _default_hint(exc)
        if hint:
            msg = f"{msg}; {hint}"
        request_id = getattr(exc, "request_id", None)
        if request_id:
            msg = f"{msg} (request id {request_id})"
        return code, one_line(msg)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        reason = exc.strerror or str(exc)
        return ExitCode.ERROR, one_line(
            f"{reason}:{where}; check the path, its permissions and free disk space"
        )
    return ExitCode.ERROR, one_line(
        f"unexpected {type(exc).__name__}: {exc}; run again with SOPHON_DEBUG=1 for details and report it"
    )


def _default_hint(exc: BaseException) -> str | None:
    from sophon_cli.client import errors as e

    if isinstance(exc, e.AuthError):
        return "check SOPHON_API_KEY or run `sophon config set-key`"
    if isinstance(exc, e.NotFoundError):
        return "check the id"
    if isinstance(exc, e.TransportError):
        return "check the URL and your network, or use --local"
    if isinstance(exc, e.APIError) and exc.retryable:
        return "try again later"
    return None


def one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def report(exc: BaseException, stderr=None) -> int:
    """Print ``exc`` as one line (plus a traceback with SOPHON_DEBUG=1); return the exit code."""
    stderr = stderr or sys.stderr
    code, msg = classify(exc)
    if debug_enabled():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stderr)
    stderr.write(f"error: {msg}\n" if code != ExitCode.INTERRUPTED else f"{msg}\n")
    stderr.flush()
    return int(code)
