"""The output rules as pure functions: timestamps, --since, table fitting, --json FIELDS and the
argument rewriting that tells `--json FIELDS` from a bare `--json` (issue 13)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sophon_cli.cli.main import hoist_global_flags
from sophon_cli.cli.output import fit_columns, plural, relative_time, rfc3339, select_fields
from sophon_cli.cli.shared import metadata_matches, parse_since
from sophon_cli.client.errors import InputError

NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("2026-01-31T11:59:58Z", "just now"),
        ("2026-01-31T11:59:18Z", "42 s ago"),
        ("2026-01-31T11:57:00+00:00", "3 min ago"),
        ("2026-01-31T07:00:00Z", "5 h ago"),
        ("2026-01-29T12:00:00Z", "2 d ago"),
        ("2026-01-31T15:00:00Z", "in 3 h"),
        ("2025-10-01T00:00:00Z", "2025-10-01"),
        (NOW.timestamp() - 90, "1 min ago"),  # epoch seconds (the cache's updated_at)
    ],
)
def test_relative_time(value, text):
    assert relative_time(value, now=NOW) == text


def test_rfc3339_always_has_its_zone():
    assert rfc3339("2026-01-31T12:00:00.123Z") == "2026-01-31T12:00:00Z"
    assert rfc3339("2026-01-31T13:00:00+01:00") == "2026-01-31T12:00:00Z"
    assert rfc3339("2026-01-31 12:00:00") == "2026-01-31T12:00:00Z"  # zone-less = UTC
    assert rfc3339(NOW.timestamp()) == "2026-01-31T12:00:00Z"
    assert rfc3339(None) == "" and rfc3339("not a time") == "not a time"


def test_since_takes_durations_and_dates():
    assert parse_since("2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_since("90s", now=NOW) == NOW - timedelta(seconds=90)
    assert parse_since("1w", now=NOW) == NOW - timedelta(days=7)
    assert parse_since("2026-01-30T00:00:00Z") == datetime(2026, 1, 30, tzinfo=timezone.utc)
    assert parse_since("2026-01-30") == datetime(2026, 1, 30, tzinfo=timezone.utc)
    with pytest.raises(InputError, match="--since"):
        parse_since("last tuesday")


def test_metadata_filter_compares_json_or_text():
    assert metadata_matches({"n": 1, "c": "acme"}, {"n": 1})
    assert metadata_matches({"n": 1}, {"n": "1"})
    assert not metadata_matches({"n": 2}, {"n": 1})
    assert not metadata_matches(None, {"n": 1}) and metadata_matches(None, {})


def test_fit_columns_drops_by_priority_then_cuts_long_cells():
    header = [2, 6, 6, 7]  # id status source profile
    rows = [[21, 9, 30, 15]]
    assert fit_columns(header, rows, 200, [0, 1, 2, 3]) == {0: 21, 1: 9, 2: 30, 3: 15}
    narrow = fit_columns(header, rows, 60, [0, 1, 2, 3])
    assert list(narrow) == [0, 1, 2] and narrow[0] == 21 and narrow[1] == 9  # profile dropped first
    assert sum(narrow.values()) + 3 * len(narrow) - 1 <= 60  # and what is left fits
    assert list(fit_columns(header, rows, 10, [0, 1, 2, 3])) == [0]  # the id always stays


def test_json_fields_select_in_order_and_name_the_valid_ones():
    assert select_fields({"id": 1, "status": "x", "output": {}}, ["status", "id"]) == {"status": "x", "id": 1}
    with pytest.raises(InputError) as err:
        select_fields({"id": 1, "status": "x"}, ["id", "colour"])
    assert "'colour'" in str(err.value) and err.value.hint == "valid fields: id, status"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["job", "get", "job_1", "--json", "id,status"],
            ["--json-fields", "id,status", "job", "get", "job_1"],
        ),
        (["job", "list", "--json", "id"], ["--json-fields", "id", "job", "list"]),
        (["job", "get", "--json", "job_1"], ["--json", "job", "get", "job_1"]),  # an id, not a field
        (["--json", "job", "list"], ["--json", "job", "list"]),  # a command name, not a field
        (["job", "list", "--json=id"], ["--json-fields", "id", "job", "list"]),
        (["job", "list", "--jq", ".id"], ["--jq", ".id", "job", "list"]),
        (["upload", "--", "--json"], ["upload", "--", "--json"]),
    ],
)
def test_json_fields_are_told_from_a_bare_json(args, expected):
    assert hoist_global_flags(args) == expected


def test_plural():
    assert plural(1, "file") == "1 file" and plural(2, "file") == "2 files"
    assert plural(1, "entry", "entries") == "1 entry" and plural(0, "entry", "entries") == "0 entries"
