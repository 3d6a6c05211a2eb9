"""sophon-cli: command-line tool, Python client and local server for the SOPHON encoding API.

Importing this package is cheap: the client library is loaded on first attribute access, so
``import sophon_cli`` (and the ``sophon`` entry point) never pulls in httpx or pydantic by itself.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "SophonClient", "SophonError", "APIError"]


def __getattr__(name: str):  # PEP 562: lazy public surface
    if name == "SophonClient":
        from sophon_cli.client.http import SophonClient

        return SophonClient
    if name in ("SophonError", "APIError"):
        from sophon_cli.client import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'sophon_cli' has no attribute {name!r}")
