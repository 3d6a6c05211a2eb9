"""The environment of every child process sophon starts (the background ``--local`` server, the
server's ffmpeg encodes): the parent's, without any ``SOPHON_*`` variable.

``SOPHON_*`` variables carry the user's secrets (``SOPHON_API_KEY``, ``SOPHON_WEBHOOK_SECRET``,
``SOPHON_SERVER_API_KEYS``) and settings meant for this process only; a child gets what it needs
on its command line or from files in its data dir, never from them. Dropping the whole prefix
covers any secret variable added later. ``SOPHON_DEBUG`` (a switch, not a secret) is kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

PREFIX = "SOPHON_"
KEPT = frozenset({"SOPHON_DEBUG"})


def child_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: ``os.environ``) without the ``SOPHON_*`` variables, except :data:`KEPT`."""
    env = os.environ if base is None else base
    return {k: v for k, v in env.items() if not k.upper().startswith(PREFIX) or k in KEPT}
