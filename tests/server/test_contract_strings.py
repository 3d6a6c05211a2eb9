"""The string fields of the request bodies, checked against their schemas in the published contract:
the local server accepts every string the contract allows and refuses (with a 400, never a 500)
what it does not."""

from __future__ import annotations

import pytest

from .helpers import Api


@pytest.fixture
def api(make_server):
    a = Api(make_server())
    yield a
    a.close()


def _post_raw(api: Api, path: str, raw: str):
    return api.post(path, headers={**api.ikey(), "Content-Type": "application/json"}, content=raw.encode())


@pytest.mark.parametrize("name", [" ", "\t", "   \n", "\u3000"])
def test_a_whitespace_only_file_name_is_a_name_the_contract_allows(api, name):
    """CreateUploadRequest.file_name: ``minLength: 1``, no pattern: whitespace is a name."""
    up = api.create_upload(name, 10)
    got = api.get(f"/v1/uploads/{up['id']}")
    assert got.status_code == 200 and got.json()["file_name"] == name


def test_an_empty_file_name_is_still_refused(api):
    r = api.post("/v1/uploads", headers=api.ikey(), json={"file_name": "", "file_size": 10, "mime_type": "v"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "validation_error" and "file_name" in r.json()["error"]["message"]


@pytest.mark.parametrize("mime", ["", " ", "not/a mime"])
def test_any_mime_type_string_is_accepted(api, mime):
    """CreateUploadRequest.mime_type is a bare ``type: string``."""
    api.create_upload("a.mp4", 10, mime=mime)


@pytest.mark.parametrize(
    "path,raw",
    [
        ("/v1/uploads", '{"file_name":"\\ud800","file_size":10,"mime_type":"video/mp4"}'),
        ("/v1/uploads", '{"file_name":"a.mp4","file_size":10,"mime_type":"\\udc00"}'),
        ("/v1/webhooks", '{"url":"https://example.com/h","name":"x\\ud800"}'),
        (
            "/v1/jobs",
            '{"source":{"type":"upload","upload_id":"upl_\\ud800"},"profile":"sophon-auto"}',
        ),
        (
            "/v1/jobs",
            '{"source":{"type":"upload","upload_id":"upl_x"},"profile":"sophon-auto","webhook_ids":["\\ud800"]}',
        ),
        (
            "/v1/jobs",
            '{"source":{"type":"upload","upload_id":"upl_x"},"profile":"sophon-auto","metadata":{"\\udfff":1}}',
        ),
    ],
)
def test_a_lone_surrogate_in_any_string_is_a_400_not_a_crash(api, path, raw):
    """A lone surrogate escape is not Unicode text, so no string schema allows it; it used to reach
    the store and answer 500 internal_error (retryable) for file_name, mime_type and a webhook name."""
    r = _post_raw(api, path, raw)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and "surrogate" in err["message"]
    assert api.get("/healthz").status_code == 200  # and the server still answers


def test_a_paired_surrogate_escape_is_ordinary_text(api):
    r = _post_raw(api, "/v1/uploads", '{"file_name":"\\ud83c\\udfac.mp4","file_size":10,"mime_type":"v"}')
    assert r.status_code == 201, r.text
    assert api.get(f"/v1/uploads/{r.json()['id']}").json()["file_name"] == "\U0001f3ac.mp4"
