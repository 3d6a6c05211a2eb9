"""GitHub CI runs the contract tests: the workflow fetches the API contract at the upstream commit
named in ../shared/sophon-api/SOURCE.md, checks its sha256 (the same file as the local copy), and
puts it where the tests read it, before the tests run (issue 16). The spec is never in the repo."""

from __future__ import annotations

import hashlib
import re
import subprocess

import pytest
import yaml

from tests.conftest import REPO_ROOT, SPEC_PATH

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "ci.yml"
SOURCE_MD = SPEC_PATH.parent / "SOURCE.md"


def _test_job() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["test"]


def test_the_fetch_url_is_the_pinned_upstream_file_of_source_md():
    if not SOURCE_MD.is_file():
        pytest.skip(f"{SOURCE_MD} not found")
    m = re.search(r"repository (\S+), file `([^`]+)`, commit ([0-9a-f]{40})", SOURCE_MD.read_text())
    assert m, "SOURCE.md no longer names repository, file and commit"
    repo, path, commit = m.groups()
    assert _test_job()["env"]["SPEC_URL"] == f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def test_the_checked_sha256_is_the_local_copy_s():
    if not SPEC_PATH.is_file():
        pytest.skip(f"{SPEC_PATH} not found")
    assert _test_job()["env"]["SPEC_SHA256"] == hashlib.sha256(SPEC_PATH.read_bytes()).hexdigest()


def test_the_spec_is_fetched_checked_and_placed_where_the_tests_read_it_before_they_run():
    steps = _test_job()["steps"]
    runs = [s.get("run", "") for s in steps]
    fetch = next(i for i, r in enumerate(runs) if "$SPEC_URL" in r)
    tests = next(i for i, r in enumerate(runs) if r.split("#")[0].split()[:1] == ["pytest"])
    assert fetch < tests
    script = runs[fetch]
    assert 'dest="$GITHUB_WORKSPACE/../shared/sophon-api"' in script
    assert (
        SPEC_PATH == REPO_ROOT.parent / "shared" / "sophon-api" / "openapi.yaml"
    )  # the checkout is REPO_ROOT
    # downloaded to a temporary name, verified, and only then moved into place
    assert "sha256sum --check --strict -" in script and "--fail" in script and "--proto '=https'" in script
    assert script.index("sha256sum --check") < script.index(
        'mv "$dest/openapi.yaml.part" "$dest/openapi.yaml"'
    )
    assert _test_job()["timeout-minutes"] <= 15


def test_the_spec_text_is_not_copied_into_the_repository():
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True, timeout=30
    ).stdout.split(b"\0")
    assert not [f for f in files if f.endswith(b"openapi.yaml") or f.endswith(b"openapi.json")]
    if SPEC_PATH.is_file():
        digest = hashlib.sha256(SPEC_PATH.read_bytes()).hexdigest()
        sizes = SPEC_PATH.stat().st_size
        for f in files:
            p = REPO_ROOT / f.decode()
            if f and p.is_file() and p.stat().st_size == sizes:
                assert hashlib.sha256(p.read_bytes()).hexdigest() != digest, p
