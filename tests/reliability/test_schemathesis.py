"""The local server under schemathesis (the spec in ../shared/), 0 failures, in two runs:

1. ``schemathesis run``: every operation, generated examples, coverage and fuzzing phases, with
   the auth header set, checked for server errors, status codes, content types and response
   schemas. Nothing is excluded: ``GET /v1/downloads/{token}`` can only answer 403 to generated
   tokens (a valid token is an HMAC the generator cannot forge), as the spec documents.
2. The stateful phase through schemathesis' Python API (``schema.as_state_machine()``), so it can
   be fed what a generator cannot make: scenarios chain real responses (create an upload, read,
   send a part, complete, cancel it; create a job, read it, ask for its output, cancel it; create
   and delete a webhook), checked as above plus ``ensure_resource_availability`` (what a create
   returned can be read at once).

   The spec has no ``links``; schemathesis infers 15 from its schemas. Two it cannot infer are
   added in memory (the spec file is untouched): an upload's id goes to ``uploadPart`` /
   ``completeUpload``, and to ``createJob``'s ``source.upload_id``. A generated upload has no
   video in it, so ``createJob`` always uses one real clip uploaded before the run (``before_call``
   swaps its id in; the rest of the body stays generated), and jobs in every state (completed,
   failed, held, canceled) are made from it first, for the links out of ``GET /v1/jobs``. The
   inferred links are computed before the added ones (explicit links switch inference off).
   A check failure is collected rather than raised, so hypothesis does not replay a scenario
   against a server whose state has moved on.

   Spec gap, documented in tests/README.md and not checked: ``use_after_free`` expects a 404 after
   a DELETE, but the spec's DELETEs of an upload and of a job *cancel* it (the resource stays
   readable with status ``canceled``, as the spec's own descriptions and status enums say).

Counts: 15 examples per operation and 25 stateful scenarios of up to 8 steps (reduced), 100 and
100 with SOPHON_STRESS_FULL=1; fixed seeds. Both runs together take well under a minute.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SPEC_PATH, TEST_KEY

from .stress import count

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    if exe.exists():
        return str(exe)
    found = shutil.which("schemathesis")
    if not found:
        pytest.skip("the schemathesis CLI is not installed (extra 'test')")
    return found


@pytest.mark.stress
def test_local_server_conforms_to_the_spec_under_schemathesis(make_server, tmp_path):
    if not SPEC_PATH.is_file():
        pytest.skip(f"API spec not found at {SPEC_PATH}")
    srv = make_server()
    proc = subprocess.run(
        [
            _schemathesis(),
            "run",
            str(SPEC_PATH),
            "--url",
            srv.url,
            "--header",
            f"Authorization: Bearer {TEST_KEY}",
            "--checks",
            CHECKS,
            "--max-examples",
            str(count(15, 100)),
            "--seed",
            "20261128",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "30",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=count(240, 1200),
        cwd=tmp_path,
    )
    report = proc.stdout[-8000:]
    assert proc.returncode == 0, report + proc.stderr[-2000:]
    m = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
    assert m, report
    generated, passed = int(m.group(1)), int(m.group(2))
    assert generated == passed > 100, report
    assert re.search(r"Operations:\s+17 selected / 17 total", proc.stdout), report
    assert not re.search(r"\d+ (failed|errored)|❌", proc.stdout), report


#: the checks of both runs, plus the stateful one that applies to this API
STATEFUL_CHECKS = [*CHECKS.split(","), "ensure_resource_availability"]

#: relationships the spec does not state and schemathesis cannot infer (added in memory only)
EXTRA_LINKS = {
    ("/v1/uploads", "post", "201"): {
        "UploadPart": {
            "operationId": "uploadPart",
            "parameters": {"id": "$response.body#/id", "part_number": 0},
        },
        "CompleteUpload": {"operationId": "completeUpload", "parameters": {"id": "$response.body#/id"}},
        "CreateJob": {
            "operationId": "createJob",
            "requestBody": {
                "source": {"type": "upload", "upload_id": "$response.body#/id"},
                "profile": "sophon-auto",
            },
        },
    },
}


def _upload_clip(srv, clip) -> str:
    import httpx

    data = clip.read_bytes()
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {TEST_KEY}"}, timeout=30) as c:
        up = c.post(
            "/v1/uploads",
            headers={"Idempotency-Key": "st-clip"},
            json={"file_name": "clip.mp4", "file_size": len(data), "mime_type": "video/mp4"},
        ).json()
        size = up["chunk_size"]
        for n in range(up["total_chunks"]):
            c.put(
                f"/v1/uploads/{up['id']}/parts/{n}", content=data[n * size : (n + 1) * size]
            ).raise_for_status()
        c.post(
            f"/v1/uploads/{up['id']}/complete", headers={"Idempotency-Key": "st-clip-c"}
        ).raise_for_status()
        # jobs in every state for the inferred links from `GET /v1/jobs` to follow: completed,
        # failed, queued or encoding (held), and canceled
        metadata = [
            {},
            {},
            {"sophon_local_fail": True},
            {"sophon_local_delay": 60},
            {"sophon_local_delay": 60},
        ]
        for n, meta in enumerate(metadata):
            body = {"source": {"type": "upload", "upload_id": up["id"]}, "profile": "sophon-espresso"}
            job = c.post(
                "/v1/jobs", headers={"Idempotency-Key": f"st-job-{n}"}, json={**body, "metadata": meta}
            )
            job.raise_for_status()
        c.delete(f"/v1/jobs/{job.json()['id']}").raise_for_status()
    return up["id"]


@pytest.mark.stress
def test_stateful_scenarios_chain_real_responses_and_conform(make_server, clip):
    if not SPEC_PATH.is_file():
        pytest.skip(f"API spec not found at {SPEC_PATH}")
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, settings

    srv = make_server()
    upload_id = _upload_clip(srv, clip)
    schema = schemathesis.openapi.from_path(str(SPEC_PATH))
    schema.config.update(
        base_url=srv.url, headers={"Authorization": f"Bearer {TEST_KEY}"}, request_timeout=30
    )
    schema.config.checks.update(included_check_names=STATEFUL_CHECKS)
    schema.apply_stateful_inference(None)  # the inferred links first: explicit ones would turn it off
    for (path, method, status), links in EXTRA_LINKS.items():
        response = schema.raw_schema["paths"][path][method]["responses"][status]
        response.setdefault("links", {}).update(links)
    seen: dict[tuple[str, int], int] = {}
    failures: list[str] = []

    class Scenarios(schema.as_state_machine()):
        def before_call(self, case):
            if case.operation.label == "POST /v1/jobs" and isinstance(case.body, dict):
                case.body["source"] = {"type": "upload", "upload_id": upload_id}

        def after_call(self, response, case):
            super().after_call(response, case)
            key = (case.operation.label, response.status_code)
            seen[key] = seen.get(key, 0) + 1

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # collected and reported at the end: hypothesis would replay a failing scenario, and a
            # live server's state makes the replay draw differently (FlakyStrategyDefinition)
            try:
                super().validate_response(response, case, additional_checks=additional_checks, **kwargs)
            except Exception as exc:
                failures.append(f"{case.operation.label} -> {response.status_code}:\n{exc}")

    Scenarios.run(
        settings=settings(
            max_examples=count(25, 100),
            stateful_step_count=8,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
            suppress_health_check=list(HealthCheck),
        )
    )
    assert failures == [], "\n\n".join(failures[:5])
    statuses = sorted(seen.items())
    # the chains really ran: jobs made from the real upload were read, asked for output, canceled
    for expected in [
        ("POST /v1/uploads", 201),
        ("GET /v1/uploads/{id}", 200),
        ("POST /v1/jobs", 201),
        ("GET /v1/jobs/{id}", 200),
        ("DELETE /v1/webhooks/{id}", 204),
    ]:
        assert expected in seen, statuses
    assert {k for k in seen if k[0] == "DELETE /v1/jobs/{id}"} & {
        ("DELETE /v1/jobs/{id}", 200),
        ("DELETE /v1/jobs/{id}", 409),
    }, statuses
    assert {k for k in seen if k[0] == "GET /v1/jobs/{id}/output"} & {
        ("GET /v1/jobs/{id}/output", 302),
        ("GET /v1/jobs/{id}/output", 409),
    }, statuses
    assert any(k[0] == "POST /v1/uploads/{id}/complete" for k in seen), statuses
    assert sum(seen.values()) > 100, statuses
