"""The local server under schemathesis: every operation of the spec in ../shared/, generated
examples, coverage, fuzzing and stateful phases, with the auth header set, checked for server
errors, status codes, content types and response schemas: 0 failures.

Nothing is excluded: ``GET /v1/downloads/{token}`` can only answer 403 to generated tokens (a valid
token is an HMAC the generator cannot forge), which the spec documents, so it still runs and passes.
Counts: 20 examples per operation (reduced), 100 with SOPHON_STRESS_FULL=1; fixed seed.
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
            str(count(20, 100)),
            "--seed",
            "20261128",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing,stateful",
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
