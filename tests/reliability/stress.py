"""Counts for the reliability scenarios: reduced in CI, full with ``SOPHON_STRESS_FULL=1``.

count(reduced, full)  -> ``full`` when SOPHON_STRESS_FULL is set to a true value, else ``reduced``
"""

from __future__ import annotations

import os


def full() -> bool:
    return os.environ.get("SOPHON_STRESS_FULL", "").strip().lower() not in ("", "0", "false", "no")


def count(reduced, full_value):
    return full_value if full() else reduced


MB = 1024 * 1024
