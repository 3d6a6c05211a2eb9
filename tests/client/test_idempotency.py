"""Deterministic Idempotency-Keys: same intent -> same key, any change -> a new key, <= 128 chars."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sophon_cli.client.idempotency import (
    MAX_KEY_LENGTH,
    ROUTES,
    canonical_json,
    intent_key,
    new_nonce,
    route_key,
)

UPLOAD = {"sha256": "ab" * 32, "size": 1234, "name": "clip.mp4", "mime": "video/mp4"}


def test_same_intent_gives_same_key_regardless_of_field_order():
    a = intent_key("upload", **UPLOAD)
    b = intent_key("upload", **dict(reversed(list(UPLOAD.items()))))
    assert a == b
    assert a.startswith("sc1-upload-")


@pytest.mark.parametrize("field", ["sha256", "size", "name", "mime"])
def test_changing_any_body_field_changes_the_key(field):
    changed = dict(UPLOAD)
    changed[field] = "x" if isinstance(UPLOAD[field], str) else UPLOAD[field] + 1
    assert intent_key("upload", **changed) != intent_key("upload", **UPLOAD)


def test_nonce_makes_a_fresh_intent_and_none_is_ignored():
    base = intent_key("upload", **UPLOAD)
    assert intent_key("upload", **UPLOAD, nonce=None) == base
    n1, n2 = new_nonce(), new_nonce()
    assert n1 != n2
    assert intent_key("upload", **UPLOAD, nonce=n1) != base
    assert intent_key("upload", **UPLOAD, nonce=n1) != intent_key("upload", **UPLOAD, nonce=n2)


def test_kind_is_part_of_the_key():
    assert intent_key("upload", **UPLOAD) != intent_key("job", **UPLOAD)


def test_nested_options_are_canonical():
    a = intent_key("job", options={"profile": "sophon-auto", "output": {"a": 1, "b": 2}})
    b = intent_key("job", options={"output": {"b": 2, "a": 1}, "profile": "sophon-auto"})
    assert a == b
    assert canonical_json({"b": 1, "a": None, "c": [1, {"z": None, "y": 2}]}) == '{"b":1,"c":[1,{"y":2}]}'


def test_route_keys_differ_per_route_and_stay_within_limit():
    base = intent_key("upload", **UPLOAD)
    keys = {route_key(base, r) for r in ROUTES}
    assert len(keys) == len(ROUTES)
    assert all(len(k) <= MAX_KEY_LENGTH for k in keys)
    assert route_key(base, "create-upload") == f"{base}:create-upload"


def test_long_or_odd_base_is_hashed_not_truncated():
    long_a = "a" * 200
    long_b = "a" * 199 + "b"
    ka, kb = route_key(long_a, "create-job"), route_key(long_b, "create-job")
    assert len(ka) <= MAX_KEY_LENGTH and ka.endswith(":create-job")
    assert ka != kb  # truncation would have made these equal
    weird = route_key("héllo\nworld", "create-job")
    assert weird.isascii() and "\n" not in weird


def test_invalid_route_rejected():
    with pytest.raises(ValueError):
        route_key("base", "Not A Route!")


@given(
    kind=st.text(min_size=0, max_size=60),
    name=st.text(max_size=300),
    size=st.integers(min_value=0, max_value=2**63),
    route=st.sampled_from(sorted(ROUTES)),
)
def test_property_keys_are_short_ascii_and_deterministic(kind, name, size, route):
    base = intent_key(kind, name=name, size=size)
    key = route_key(base, route)
    assert 1 <= len(key) <= MAX_KEY_LENGTH
    assert key.isascii() and key.isprintable()
    assert key == route_key(intent_key(kind, size=size, name=name), route)
