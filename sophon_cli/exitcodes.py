"""The process exit codes of ``sophon``: one enum, documented in the README and ``sophon --help``."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # API error or unexpected failure
    USAGE = 2  # bad command-line usage or bad local input
    NOT_FOUND = 3  # the job / upload / webhook does not exist
    AUTH = 4  # missing, wrong or insufficient API key (401/403)
    JOB_FAILED = 5  # a job ended failed or canceled
    TIMEOUT = 6  # gave up waiting
    PARTIAL = 7  # some files of a batch failed
    UNREACHABLE = 8  # server unreachable after retries
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODE_HELP = (
    "Exit codes: 0 ok, 1 error, 2 usage or bad input, 3 not found, 4 auth or missing key, "
    "5 job failed or canceled, 6 timed out, 7 files of a batch failed, "
    "8 server unreachable, 130 interrupted."
)
