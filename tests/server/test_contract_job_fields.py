"""``POST /v1/jobs`` and ``GET /v1/jobs`` are exactly as strict as the contract on what may be
null and what an integer is.

Before: ``output``, ``output.container``, ``output.audio``, ``webhook_ids`` and ``metadata`` given
as null (none of them is nullable in the spec) were taken as "the default", any falsy ``output``
(``[]``, ``false``, ``0``) as no output options, and ``limit`` was read with ``int()``, which also
takes ``" 5"``, ``"1_0"``, ``"+5"`` and other scripts' digits (``"٥"``)."""

from __future__ import annotations

import pytest

from .helpers import Api

HELD = {"sophon_local_delay": 600}  # never encodes: the jobs made here are canceled at the end


@pytest.fixture(scope="module")
def api(tmp_path_factory, clip):
    from sophon_cli.server.runner import LocalServer

    with LocalServer(tmp_path_factory.mktemp("srv"), api_keys=["k"]) as srv:
        a = Api(srv)
        a.upload_id = a.upload(clip)
        yield a
        for job in a.get("/v1/jobs", params={"limit": 100}).json()["jobs"]:
            if job["status"] not in ("completed", "failed", "canceled"):
                a.delete(f"/v1/jobs/{job['id']}")
        a.close()


def _schema(spec, name):
    return spec["components"]["schemas"][name]


def _nullable(spec, prop: dict) -> bool:
    if prop.get("nullable"):
        return True
    refs = [prop.get("$ref")] + [p.get("$ref") for p in prop.get("allOf", [])]
    return any(r and _schema(spec, r.rsplit("/", 1)[1]).get("nullable") for r in refs)


NULLS = {
    "output": ({"output": None}, "output must be an object, not null"),
    "output.container": ({"output": {"container": None}}, "output.container must be mp4 or mkv, not null"),
    "output.audio": ({"output": {"audio": None}}, "output.audio must be true or false, not null"),
    "webhook_ids": ({"webhook_ids": None}, "webhook_ids must be a list of webhook ids, not null"),
    "metadata": ({"metadata": None}, "metadata must be a JSON object, not null"),
}


def test_the_spec_makes_none_of_these_fields_nullable(spec):
    request = _schema(spec, "CreateJobRequest")["properties"]
    options = _schema(spec, "CreateJobOutputOptions")["properties"]
    fields = {
        "output": request["output"],
        "output.container": options["container"],
        "output.audio": options["audio"],
        "webhook_ids": request["webhook_ids"],
        "metadata": request["metadata"],
    }
    assert set(fields) == set(NULLS)
    assert [name for name, prop in fields.items() if _nullable(spec, prop)] == []
    assert _nullable(spec, options["target_height"])  # the one that is: still accepted below


@pytest.mark.parametrize("field", sorted(NULLS))
def test_a_null_where_the_contract_has_no_null_is_400(api, field):
    extra, message = NULLS[field]
    body = {"source": {"type": "upload", "upload_id": api.upload_id}, "profile": "sophon-espresso", **extra}
    r = api.post("/v1/jobs", headers=api.ikey(), json={**body, "metadata": body.get("metadata", HELD)})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and message in err["message"], err
    assert "leave it out for the default" in err["message"]


@pytest.mark.parametrize("output", [[], False, 0, "", "mp4"])
def test_an_output_that_is_not_an_object_is_400(api, output):
    body = {"source": {"type": "upload", "upload_id": api.upload_id}, "profile": "sophon-espresso"}
    r = api.post("/v1/jobs", headers=api.ikey(), json={**body, "output": output, "metadata": HELD})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "output must be an object"


def test_left_out_fields_and_a_null_target_height_still_get_the_defaults(api):
    body = {"source": {"type": "upload", "upload_id": api.upload_id}, "profile": "sophon-espresso"}
    job = api.create_job(api.upload_id, "sophon-espresso", metadata=HELD)
    assert job["output"]["container"] == "mp4" and job["output"]["target_height"] is None
    r = api.post(
        "/v1/jobs", headers=api.ikey(), json={**body, "output": {"target_height": None}, "metadata": HELD}
    )
    assert r.status_code == 201, r.text
    assert r.json()["output"]["target_height"] is None
    r = api.post(
        "/v1/jobs", headers=api.ikey(), json={**body, "output": {}, "webhook_ids": [], "metadata": {}}
    )
    assert r.status_code == 201, r.text
    assert api.delete(f"/v1/jobs/{r.json()['id']}").status_code in (200, 409)


@pytest.mark.parametrize("limit", [" 5", "5 ", "1_0", "+5", "\u0665", "5.0", "0", "101", "-1", "9" * 5000])
def test_a_limit_that_is_not_an_integer_from_1_to_100_is_400(api, limit):
    r = api.get("/v1/jobs", params={"limit": limit})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == "limit must be an integer from 1 to 100"


@pytest.mark.parametrize("limit", ["1", "05", "100"])
def test_a_limit_in_range_is_accepted(api, limit):
    r = api.get("/v1/jobs", params={"limit": limit})
    assert r.status_code == 200, r.text
    assert len(r.json()["jobs"]) <= int(limit)
