"""The SOPHON client library. Usable from Python without typer or rich.

from sophon_cli.client import SophonClient
with SophonClient(base_url, api_key) as c:
    job = c.jobs.get("job_...")
"""

from __future__ import annotations

__all__ = ["SophonClient"]


def __getattr__(name: str):
    if name == "SophonClient":
        from sophon_cli.client.http import SophonClient

        return SophonClient
    raise AttributeError(name)
