"""Fixtures for the CLI command tests: things made once per module through the client library
(the CLI under test runs in subprocesses through the shared ``cli`` fixture)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def api(server):
    from sophon_cli.client.http import SophonClient

    with SophonClient(server.url, server.api_keys[0]) as client:
        yield client


@pytest.fixture(scope="module")
def uploaded(api, clip):
    """The session clip, uploaded (an UploadResult)."""
    return api.uploads.upload_file(clip)


@pytest.fixture(scope="module")
def done_job(api, uploaded):
    """A completed job of the session clip."""
    job = api.jobs.create(uploaded.upload_id, profile="sophon-espresso")
    final = api.jobs.wait(job.id, timeout=90)
    assert final.status == "completed", final
    return final
