"""The pseudo-terminal runner lives in tests/helpers/tty.py (shared by every directory)."""

from tests.helpers.tty import pty_run, run_in_pty, screen  # noqa: F401
