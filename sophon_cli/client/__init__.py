"""The SOPHON client library. Usable from Python without typer or rich.

    from sophon_cli.client import SophonClient
    with SophonClient(base_url, api_key) as c:
        up = c.uploads.upload_file("talk.mov")                 # resumable, parallel, verified
        job = c.jobs.wait(c.jobs.create(up.upload_id).id, timeout=1800)
        if job.status == "completed":
            c.downloads.download(job.id, "out/")               # verified, atomic

    from sophon_cli.client import verify_signature          # webhook deliveries (pure)

Modules: ``http`` (SophonClient, retry policy), ``errors`` (exception tree), ``models``,
``idempotency``, ``uploads``, ``jobs``, ``downloads``, ``webhooks``. Attributes are loaded lazily so
importing this package does not import httpx or pydantic.
"""

from __future__ import annotations

__all__ = ["SophonClient", "verify_signature"]


def __getattr__(name: str):
    if name == "SophonClient":
        from sophon_cli.client.http import SophonClient

        return SophonClient
    if name == "verify_signature":
        from sophon_cli.client.webhooks import verify_signature

        return verify_signature
    raise AttributeError(name)
