"""The pseudo-terminal runner lives in tests/helpers/tty.py (one for every directory)."""

from tests.helpers.tty import Screen, run_in_terminal  # noqa: F401
