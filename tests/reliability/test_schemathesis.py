"""The local server under schemathesis (the spec in ../shared/), 0 failures, in two runs:

1. ``schemathesis run``: every operation, generated examples, coverage and fuzzing phases, with
   the auth header set, checked for server errors, status codes, content types and response
   schemas. Nothing is excluded: ``GET /v1/downloads/{token}`` can only answer 403 to generated
   tokens (a valid token is an HMAC the generator cannot forge), as the spec documents. A 503
   from ``POST /v1/uploads`` (documented: "Disk capacity exceeded") is no server error: generated
   sizes reach 100 GB, and which fit depends on the machine's free disk (the stateful run excuses
   only a 503 for a size that really does not fit).
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
   failed, held, canceled) are made from it first, for the links out of ``GET /v1/jobs``; the
   scenarios start once the jobs are in those states (the held one keeps the one worker busy for
   longer than any run, so the scenarios' own jobs stay queued), so that a loaded machine does not
   send the derandomized scenarios down other paths. The
   inferred links are computed before the added ones (explicit links switch inference off).
   Every scenario starts (hypothesis ``initialize`` rules, run through the machine's own step, so
   checked and recorded like the rest) with one job from the clip, one upload session and one
   webhook, each with a body the server must accept: left to generation, a scenario seldom
   creates a job at all (``createJob`` is reached only through the link from a generated upload
   that succeeded, schemathesis applies the link's body at random outside hypothesis' seed, the
   spec's CreateJobRequest has no ``type: object`` so null or [] are generated and refused, and
   derandomized Idempotency-Keys repeat across scenarios: 409), and a run could end with no job
   created. The test asserts the chains ran from what the scenarios made: their jobs read, asked
   for output and canceled, their uploads read and asked to complete, their webhooks deleted.
   A check failure is collected rather than raised (schemathesis raises a ``FailureGroup``, which
   is no ``Exception``), with the scenario's steps so far (requests without their headers, and the
   answers' statuses), so hypothesis does not replay a scenario against a server whose state has
   moved on and the report says how the failure was reached; a replay that still draws differently
   (``FlakyStrategyDefinition``) ends that run, and the scenarios run again, counted together.

   Spec gap, documented in tests/README.md and not checked: ``use_after_free`` expects a 404 after
   a DELETE, but the spec's DELETEs of an upload and of a job *cancel* it (the resource stays
   readable with status ``canceled``, as the spec's own descriptions and status enums say).

Counts: 15 examples per operation and 25 stateful scenarios of up to 12 steps (reduced), 100 and
100 with SOPHON_STRESS_FULL=1; fixed seeds. Both runs together take well under a minute.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from itertools import count as count_from
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
    # POST /v1/uploads may answer its documented 503 ("Disk capacity exceeded") to a generated
    # file_size (up to 100 GB) that does not fit on this machine's disk; which sizes fit depends on
    # the machine and on what else uses its disk, so there that 503 is not a server error (the
    # other checks still apply to it; every other 5xx still fails). The stateful run below excuses
    # only a 503 whose file_size really does not fit (_no_room).
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        '[[operations]]\ninclude-name = "POST /v1/uploads"\n'
        'checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]\n'
    )
    proc = subprocess.run(
        [
            _schemathesis(),
            "--config-file",
            str(config),
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


#: the operations every stateful scenario starts with, once each, with a body the server accepts
CREATES = ("POST /v1/jobs", "POST /v1/uploads", "POST /v1/webhooks")

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


def _step_line(case, response) -> str:
    """One step of a scenario as a failure report shows it: the request (path parameters, query,
    body; never the headers, which hold the key) and the answer's status."""
    from schemathesis.core import NotSet

    parts = [case.operation.label]
    if case.path_parameters:
        parts.append(f"path={case.path_parameters}")
    if case.query:
        parts.append(f"query={case.query}")
    if isinstance(case.body, (bytes, bytearray)):
        parts.append(f"body=<{len(case.body)} bytes>")
    elif not isinstance(case.body, NotSet):
        parts.append(f"body={json.dumps(case.body, default=repr)[:300]}")
    return " ".join(parts) + f" -> {response.status_code}"


def _no_room(case, response, data_dir) -> bool:
    """``POST /v1/uploads`` answered 503 ``capacity_exceeded`` (documented: "Disk capacity
    exceeded") for a ``file_size`` that really does not fit on the server's disk now (with 1 GiB
    of slack for what changed since). Generated sizes reach 100 GB; how many fit depends on the
    machine and on what else is using its disk, so such a 503 is no server error."""
    if case.operation.label != "POST /v1/uploads" or response.status_code != 503:
        return False
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return False
    size = case.body.get("file_size") if isinstance(case.body, dict) else None
    if code != "capacity_exceeded" or isinstance(size, bool) or not isinstance(size, (int, float)):
        return False
    from sophon_cli.server.routes.uploads import DISK_RESERVE

    return size > shutil.disk_usage(data_dir).free - DISK_RESERVE - (1 << 30)


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
        # failed, encoding (held for longer than any run: with the one worker busy, every job the
        # scenarios make stays queued), and canceled
        metadata = [
            {},
            {},
            {"sophon_local_fail": True},
            {"sophon_local_delay": 600},
            {"sophon_local_delay": 600},
        ]
        ids = []
        for n, meta in enumerate(metadata):
            body = {"source": {"type": "upload", "upload_id": up["id"]}, "profile": "sophon-espresso"}
            job = c.post(
                "/v1/jobs", headers={"Idempotency-Key": f"st-job-{n}"}, json={**body, "metadata": meta}
            )
            job.raise_for_status()
            ids.append(job.json()["id"])
        c.delete(f"/v1/jobs/{ids[-1]}").raise_for_status()
        # the scenarios start only once these states are reached, so every run (a loaded machine
        # included) starts from the same server state: the draws are derandomized, and a job
        # still encoding where it was completed in another run sent scenarios down other paths
        want = ["completed", "completed", "failed", "encoding", "canceled"]
        deadline = time.monotonic() + 180
        while (got := [c.get(f"/v1/jobs/{i}").json()["status"] for i in ids]) != want:
            assert time.monotonic() < deadline, f"the seeded jobs are {got}, not {want}"
            time.sleep(0.2)
    return up["id"]


@pytest.mark.stress
def test_stateful_scenarios_chain_real_responses_and_conform(make_server, clip):
    if not SPEC_PATH.is_file():
        pytest.skip(f"API spec not found at {SPEC_PATH}")
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.errors import FlakyStrategyDefinition
    from hypothesis.stateful import Bundle, initialize
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.engine.errors import is_inconsistent_replay
    from schemathesis.generation.stateful.state_machine import StepInput

    srv = make_server()
    upload_id = _upload_clip(srv, clip)
    schema = schemathesis.openapi.from_path(str(SPEC_PATH))
    auth = {"Authorization": f"Bearer {TEST_KEY}"}
    schema.config.update(base_url=srv.url, headers=auth, request_timeout=30)
    schema.config.checks.update(included_check_names=STATEFUL_CHECKS)
    schema.apply_stateful_inference(None)  # the inferred links first: explicit ones would turn it off
    for (path, method, status), links in EXTRA_LINKS.items():
        response = schema.raw_schema["paths"][path][method]["responses"][status]
        response.setdefault("links", {}).update(links)
    seen: dict[tuple[str, int], int] = {}
    failures: list[str] = []
    no_room: list[int] = []  # file sizes refused for want of disk space (503 capacity_exceeded)
    # what the scenarios did to the jobs, uploads and webhooks they created, and why a POST /v1/jobs
    # was refused
    created: set[str] = set()
    on_created: set[tuple[str, int]] = set()
    refused: Counter[str] = Counter()
    create_job = schema["/v1/jobs"]["POST"]
    create_upload = schema["/v1/uploads"]["POST"]
    create_webhook = schema["/v1/webhooks"]["POST"]
    serial = count_from(1)
    scenarios: list[int] = []  # one entry per scenario started
    seeded: Counter[str] = Counter()  # the scenarios' own creates that succeeded

    class Scenarios(schema.as_state_machine()):
        def setup(self):
            # what this scenario sent, for the report of a failure in it
            scenarios.append(len(scenarios) + 1)
            self.scenario = scenarios[-1]
            self.steps: list[str] = []

        @initialize(target=Bundle("catch_all"))
        def create_a_job_from_the_clip(self):
            # every scenario starts with a job from the real clip, so the links from
            # `POST /v1/jobs -> 201` always have one to follow (generated creates seldom succeed:
            # see the module docstring)
            n = next(serial)
            case = create_job.Case(
                headers={**auth, "Idempotency-Key": f"st-scenario-job-{n}"},
                body={"source": {"type": "upload", "upload_id": upload_id}, "profile": "sophon-auto"},
                media_type="application/json",
            )
            return self._seeded_step(case)

        @initialize(target=Bundle("catch_all"))
        def create_an_upload(self):
            # and one upload session (most generated upload bodies are refused too), for the links
            # to its status, parts, complete, cancel and to a job made from it
            n = next(serial)
            case = create_upload.Case(
                headers={**auth, "Idempotency-Key": f"st-scenario-upload-{n}"},
                body={"file_name": f"scenario-{n}.mp4", "file_size": 31061, "mime_type": "video/mp4"},
                media_type="application/json",
            )
            return self._seeded_step(case)

        @initialize(target=Bundle("catch_all"))
        def create_a_webhook(self):
            # and one webhook (no job lists it, so nothing is delivered to the address)
            n = next(serial)
            case = create_webhook.Case(
                headers={**auth, "Idempotency-Key": f"st-scenario-webhook-{n}"},
                body={"url": f"https://hooks.example.com/scenario-{n}"},
                media_type="application/json",
            )
            return self._seeded_step(case)

        def _seeded_step(self, case):
            step = StepInput.initial(case)
            # as schemathesis' own root steps do: later links look their parent up in the recorder
            self.recorder.record_case(case=case)
            self.control.record_step(step, self.recorder)
            output = self.step(step)
            if output.response.status_code == 201:
                seeded[case.operation.label] += 1
            else:
                failures.append(
                    f"a valid {case.operation.label} was refused: "
                    f"{output.response.status_code} {output.response.text[:300]}"
                )
            return output

        def before_call(self, case):
            if case.operation.label == "POST /v1/jobs" and isinstance(case.body, dict):
                case.body["source"] = {"type": "upload", "upload_id": upload_id}

        def after_call(self, response, case):
            super().after_call(response, case)
            label = case.operation.label
            key = (label, response.status_code)
            seen[key] = seen.get(key, 0) + 1
            self.steps.append(_step_line(case, response))
            if label in CREATES and response.status_code == 201:
                created.add(response.json()["id"])
            elif label == "POST /v1/jobs":
                refused[f"{response.status_code} {response.text[:160]}"] += 1
            elif (case.path_parameters or {}).get("id") in created:
                on_created.add(key)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # collected and reported at the end: hypothesis would replay a failing scenario, and a
            # live server's state makes the replay draw differently (FlakyStrategyDefinition)
            try:
                if _no_room(case, response, srv.data_dir):
                    # a documented 503 the server was right to answer: checked like any other
                    # answer, except for being a 5xx
                    no_room.append(case.body["file_size"])
                    case.validate_response(
                        response,
                        additional_checks=additional_checks,
                        excluded_checks=[not_a_server_error],
                        transport_kwargs=kwargs or None,
                        recorder=self.recorder,
                    )
                else:
                    super().validate_response(response, case, additional_checks=additional_checks, **kwargs)
            except (Exception, FailureGroup) as exc:  # (a FailureGroup is no Exception, only a
                # BaseExceptionGroup: `except Exception` let every check failure through to hypothesis)
                failures.append(
                    f"{case.operation.label} -> {response.status_code}, step {len(self.steps)} of scenario"
                    f" {self.scenario} (of {len(scenarios)} started; replays so far: {flaky}):\n{exc}\n"
                    f"response body: {response.text[:600]}\nthe scenario's steps:\n  "
                    + "\n  ".join(self.steps)
                )

    flaky: list[str] = []
    for _ in range(4):
        try:
            Scenarios.run(
                settings=settings(
                    max_examples=count(25, 100),
                    stateful_step_count=12,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
                    suppress_health_check=list(HealthCheck),
                )
            )
            break
        except (FlakyStrategyDefinition, AssertionError) as exc:
            # A prefix hypothesis replayed took other rules: the server's state had moved on (a job
            # finished, a list grew) and schemathesis picks linked values outside hypothesis' seed.
            # schemathesis' own runner ends its stateful suite there as passed; this test runs the
            # scenarios again (the server keeps its state) and counts every run.
            if not isinstance(exc, FlakyStrategyDefinition) and not is_inconsistent_replay(exc):
                raise
            flaky.append(f"{type(exc).__name__} after {len(scenarios)} scenarios")
            if min(seeded[label] for label in CREATES) >= count(25, 100):
                break
    statuses = sorted(seen.items())
    why = (
        f"{statuses}\nPOST /v1/jobs refused: {refused.most_common(8)}\nreplays: {flaky}\n"
        f"uploads refused for disk space: {no_room}\n{len(scenarios)}"
        " scenarios; the draws are derandomized (hypothesis' fixed seed for this test), so what differs"
        " between two runs is the server's answers"
    )
    assert failures == [], "\n\n".join(failures[:5]) + "\n\n" + why
    # every scenario made its job, upload and webhook, and the chains really ran from what they
    # made: jobs read, asked for output, canceled (200 while queued or held, 409 once finished);
    # uploads read and asked to complete; webhooks deleted
    assert all(seeded[label] >= count(25, 100) for label in CREATES), (seeded, why)
    assert ("GET /v1/jobs/{id}", 200) in on_created, why
    assert on_created & {("GET /v1/jobs/{id}/output", 302), ("GET /v1/jobs/{id}/output", 409)}, why
    assert on_created & {("DELETE /v1/jobs/{id}", 200), ("DELETE /v1/jobs/{id}", 409)}, why
    assert ("GET /v1/uploads/{id}", 200) in on_created, why
    assert any(k[0] == "POST /v1/uploads/{id}/complete" for k in on_created), why
    assert ("DELETE /v1/webhooks/{id}", 204) in on_created, why
    assert sum(seen.values()) > 100, why
