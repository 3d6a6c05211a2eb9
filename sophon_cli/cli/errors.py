"""The one error boundary: exceptions -> (exit code, one-line message).

Every message is one line on stderr, names the next step (worded by the ``cli/hints.py`` table),
and carries the server's request id when there is one. Every part of it is stripped of control
characters (server-supplied text) and redacted. Tracebacks are shown only with ``SOPHON_DEBUG=1``.
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
    from sophon_cli.cli.hints import INTERRUPTED, hint_for, message_for, not_the_api
    from sophon_cli.client import errors as e

    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, INTERRUPTED
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
        if isinstance(exc, e.NotFoundError) and not_the_api(exc):
            code = ExitCode.ERROR  # a 404 page that is not the API's: nothing says the id is unknown
        msg = message_for(exc)
        hint = hint_for(exc)
        if hint:
            msg = f"{msg}; {hint}"
        request_id = getattr(exc, "request_id", None)
        if request_id:
            msg = f"{msg} (request id {request_id})"
        return code, one_line(msg)
    own = own_dir_error(exc)
    if own is not None:
        return own
    if isinstance(exc, OSError):
        import errno

        from sophon_cli.cli.hints import NAME_TOO_LONG

        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        if exc.errno == errno.ENAMETOOLONG:  # bad input, not a local failure: exit 2
            path = exc.filename if isinstance(exc.filename, (str, bytes)) else ""
            name = os.path.basename(os.fsdecode(path)) or "?"
            shown = name if len(name) <= 40 else f"{name[:40]}…"
            return ExitCode.USAGE, one_line(f"{shown}: {NAME_TOO_LONG}")
        reason = exc.strerror or str(exc)
        return ExitCode.ERROR, one_line(f"{reason}:{where}; {os_error_hint(exc)}")
    return ExitCode.ERROR, one_line(
        f"unexpected {type(exc).__name__}: {exc}; run again with SOPHON_DEBUG=1 for details and report it"
    )


def _own_dirs() -> list:
    """sophon's own directories: SOPHON_HOME (which holds them all), else the config, state and
    data dirs (the local server's data dir is ``server`` in the data dir)."""
    from sophon_cli.local import default_data_dir
    from sophon_cli.settings import config_dir, sophon_home, state_dir

    home = sophon_home()
    if home is not None:
        return [home.absolute()]
    return [d.absolute() for d in (config_dir(), state_dir(), default_data_dir().parent)]


def own_dir_error(exc: BaseException) -> tuple[int, str] | None:
    """A file error on a path in one of sophon's own directories (raised by anything: the config,
    the cache, the recent jobs, the local server's data dir) as one line that names that
    directory, the reason and the next step: fix it, or point SOPHON_HOME elsewhere. Exit 2 (the
    setup is bad local input), 1 for a full disk. None for any other error."""
    import errno
    from pathlib import Path

    from sophon_cli.cli.hints import OWN_DIR_STEPS
    from sophon_cli.state import StateError

    # the file error itself, or the one under the cache's own error (errors that word their own
    # file, such as the webhook secrets store's, keep their words)
    cause = exc if isinstance(exc, OSError) else exc.__cause__ if isinstance(exc, StateError) else None
    filename = getattr(cause, "filename", None)
    if not isinstance(cause, OSError) or not isinstance(filename, (str, bytes, os.PathLike)):
        return None
    if cause.errno == errno.ENAMETOOLONG:
        return None
    path = Path(os.fsdecode(filename)).absolute()
    try:
        root = next(d for d in _own_dirs() if d == path or d in path.parents)
    except StopIteration:
        return None
    except Exception:  # the directories themselves cannot be worked out: say it as before
        return None
    # what is in the way: the file where a directory should be; else the deepest part that exists
    obstacle = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    where = next((p for p in (path, *path.parents) if p.exists()), path)
    if cause.errno in (errno.ENOTDIR, errno.EEXIST) and obstacle is not None:
        step = "not_a_directory"
    elif cause.errno == errno.EROFS:
        step = "read_only"
    elif cause.errno in (errno.EACCES, errno.EPERM):
        step = "permissions"
    elif cause.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        step = "full"
    else:
        step = "other"
    what = "SOPHON_HOME" if os.environ.get("SOPHON_HOME") else "its directory"
    reason = cause.strerror or str(cause)
    at = "" if where == root else f" at {where}"
    words = OWN_DIR_STEPS[step].format(where=where, obstacle=obstacle)
    code = ExitCode.ERROR if step == "full" else ExitCode.USAGE
    return code, one_line(f"sophon cannot use {what} {root}: {reason}{at}; {words}")


def os_error_hint(exc: OSError) -> str:
    """The next step for a local file error, by its errno (disk space only when it is the cause)."""
    import errno

    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return "check the path: does the file or its directory exist?"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check its permissions"
    if exc.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "free some disk space or choose another location"
    return "check the path, its permissions and free disk space"


def one_line(msg: str) -> str:
    """One terminal-safe line: control characters stripped, every known secret (the API keys the
    clients of this process were given, download tokens) redacted, whitespace folded."""
    from sophon_cli.client.text import redact, terminal_safe

    return " ".join(redact(terminal_safe(msg)).split())


def report(exc: BaseException, stderr=None) -> int:
    """Print ``exc`` as one line (plus a traceback with SOPHON_DEBUG=1); return the exit code."""
    stderr = stderr or sys.stderr
    code, msg = classify(exc)
    if debug_enabled():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=stderr)
    stderr.write(f"error: {msg}\n" if code != ExitCode.INTERRUPTED else f"{msg}\n")
    stderr.flush()
    return int(code)
