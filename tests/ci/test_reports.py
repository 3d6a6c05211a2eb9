"""Reports of a batch run (sophon_cli.reports): JSON, CSV and JUnit XML read back with the formats'
own readers, the Markdown summary's layout, and the rules for writing them to files."""

from __future__ import annotations

import csv
import io
import json
import os
import xml.etree.ElementTree as ET

import pytest

from sophon_cli import reports
from sophon_cli.client.errors import InputError

try:  # the encode package (after the pipeline restructure) or the old module
    from sophon_cli.encode import FileResult
except ImportError:  # pragma: no cover
    from sophon_cli.pipeline import FileResult

HOSTILE = "bad | source <script>alert(1)</script> \x1b[31mred\x1b[0m\nsecond line & more"


def fr(file, result, **kw):
    kw.setdefault("profile", "sophon-auto")
    return FileResult(file=file, result=result, **kw)


def sample() -> list:
    return [
        fr(
            "a/one.mov",
            "encoded",
            output="/out/a/one.sophon.mp4",
            source_bytes=1000,
            output_bytes=400,
            saved_percent=60.0,
            effective_profile="hevc-balanced",
            job_id="job_1",
            upload_id="up_1",
        ),
        fr("two.mp4", "failed", reason=HOSTILE, source_bytes=2000, job_id="job_2", upload_id="up_2"),
        fr(
            "three.mp4",
            "original kept",
            reason="nothing smaller than the source was made",
            output="/out/three.sophon.mp4",
            source_bytes=500,
            output_bytes=500,
            saved_percent=0.0,
            job_id="job_3",
            upload_id="up_3",
        ),
        fr("four.mp4", "skipped", reason="job failed: boom", source_bytes=300, job_id="job_4"),
        fr(
            "five.mp4",
            "encoded",
            output="/out/five.sophon.mp4",
            source_bytes=800,
            output_bytes=200,
            saved_percent=75.0,
            job_id="job_5",
            upload_id="up_5",
            cached=True,
        ),
    ]


INFO = reports.RunInfo(version="1.2.3", shard="2/4", exit_code=7, duration_seconds=1.5)


def test_totals_count_each_result_and_the_bytes_saved():
    t = reports.totals_of(reports.rows_from(sample()))
    assert (t.files, t.encoded, t.original_kept, t.skipped, t.failed, t.cached) == (5, 2, 1, 1, 1, 1)
    assert t.source_bytes == 4600
    assert t.output_bytes == 400 + 500 + 200
    assert t.saved_bytes == 600 + 0 + 600
    assert t.saved_percent == round(100 * 1200 / 4600, 1)


def test_json_report_reads_back_with_every_file_in_order():
    doc = json.loads(reports.render_json(sample(), INFO))
    assert doc["sophon_report"] == reports.REPORT_SCHEMA
    assert doc["shard"] == "2/4" and doc["exit_code"] == 7 and doc["version"] == "1.2.3"
    assert [f["file"] for f in doc["files"]] == ["a/one.mov", "two.mp4", "three.mp4", "four.mp4", "five.mp4"]
    assert doc["totals"]["failed"] == 1 and doc["totals"]["saved_bytes"] == 1200
    one = doc["files"][0]
    assert one["saved_bytes"] == 600 and one["job_id"] == "job_1" and one["vmaf"] is None
    assert doc["files"][1]["reason"] == HOSTILE  # data formats keep the text exactly


def test_csv_report_reads_back_with_csv_module():
    text = reports.render_csv(sample(), INFO)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0].keys()) == list(reports.CSV_COLUMNS)
    assert [r["file"] for r in rows] == ["a/one.mov", "two.mp4", "three.mp4", "four.mp4", "five.mp4"]
    assert rows[1]["reason"] == HOSTILE  # a comma, quote or newline survives the round trip
    assert rows[0]["saved_bytes"] == "600" and rows[0]["output_bytes"] == "400"
    assert rows[1]["output_bytes"] == "" and rows[4]["cached"] == "true" and rows[0]["vmaf"] == ""


def _check_junit(text: str) -> ET.Element:
    """A structural check of the JUnit schema CIs read (no JUnit XSD ships in a wheel)."""
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert suites
    for suite in suites:
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
        assert int(suite.get("errors")) == sum(1 for c in cases if c.find("error") is not None)
        float(suite.get("time"))
        for c in cases:
            assert c.get("name") and c.get("classname")
            float(c.get("time"))
            assert len([x for x in c if x.tag in ("failure", "error", "skipped")]) <= 1
            for f in c.findall("failure"):
                assert f.get("message")
        for p in suite.findall("properties/property"):
            assert p.get("name") and p.get("value") is not None
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites)
    assert int(root.get("failures")) == sum(int(s.get("failures")) for s in suites)
    return root


def test_junit_report_is_valid_and_shows_failed_files_as_failed_tests():
    root = _check_junit(reports.render_junit(sample(), INFO))
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"a/one.mov", "two.mp4", "three.mp4", "four.mp4", "five.mp4"}
    failure = cases["two.mp4"].find("failure")
    assert "\x1b" not in failure.get("message") and "bad | source" in failure.get("message")
    assert cases["four.mp4"].find("skipped").get("message") == "job failed: boom"
    assert cases["three.mp4"].find("failure") is None  # the original kept is a pass
    assert "nothing smaller" in cases["three.mp4"].find("system-out").text
    assert "shard 2/4" in root.find("testsuite").get("name")


def test_junit_escapes_names_that_look_like_xml():
    r = fr('we<i>rd "&" name.mp4', "failed", reason="x\x00y\x07z", source_bytes=1)
    root = _check_junit(reports.render_junit([r]))
    case = root.find("testsuite/testcase")
    assert case.get("name") == 'we<i>rd "&" name.mp4'
    assert case.find("failure").get("message") == "x y z"


def test_markdown_summary_has_totals_failures_first_and_a_row_per_file():
    md = reports.render_markdown(sample(), INFO)
    assert md.startswith(reports.MARKDOWN_MARKER)
    assert "shard 2/4" in md and "2 encoded, 1 original kept, 1 skipped, 1 failed" in md
    assert "**5 files**" in md and "saved 1.2 KiB" in md
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| source"))
    assert lines[header] == "| source | output | saved | profile | result | job id |"
    table = lines[header + 2 : header + 7]
    assert len(table) == 5
    # failures first, then skipped, original kept, encoded (input order within each)
    assert [row.split(" | ")[0] for row in table] == [
        "| two.mp4",
        "| four.mp4",
        "| three.mp4",
        "| a/one.mov",
        "| five.mp4",
    ]
    # every row has exactly the header's cells: the server's '|' is escaped, not a new cell
    for row in table:
        cells = [c for c in _split_cells(row)]
        assert len(cells) == 6, row
    # the failure is also listed with its reason above the table
    failed_list = md.index("**Failed (1):**")
    assert failed_list < header_pos(md) and "two.mp4" in md[failed_list : header_pos(md)]
    # server text is inert: no HTML, no escape sequence, no line break inside a row
    assert "<script>" not in md and "\x1b" not in md and "&lt;script&gt;" in md
    assert "`job_2`" in md and "hevc-balanced" in md
    assert "VMAF" not in md  # no scores: no column


def header_pos(md: str) -> int:
    return md.index("| source")


def _split_cells(row: str) -> list[str]:
    cells, cur, i = [], "", 1
    body = row.strip()
    assert body.startswith("|") and body.endswith("|")
    body = body[1:-1]
    while i <= len(body):
        ch = body[i - 1]
        if ch == "\\" and i < len(body):
            cur += body[i - 1 : i + 1]
            i += 2
            continue
        if ch == "|":
            cells.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    cells.append(cur)
    return cells


def test_reports_show_a_vmaf_score_when_a_file_has_one():
    results = sample()
    results[0].vmaf = 95.4321  # the quality helper adds this field to FileResult
    md = reports.render_markdown(results, INFO)
    assert "| VMAF |" in md and "95.43" in md
    assert json.loads(reports.render_json(results))["files"][0]["vmaf"] == 95.4321
    assert next(csv.DictReader(io.StringIO(reports.render_csv(results))))["vmaf"] == "95.4321"
    assert "vmaf: 95.43" in reports.render_junit(results)
    assert json.loads(reports.render_json(results))["files"][0]["quality_below_threshold"] is False
    results[1].vmaf, results[1].quality_below_threshold = 71.5, True
    files = json.loads(reports.render_json(results))["files"]
    assert files[1]["quality_below_threshold"] is True and files[1]["vmaf"] == 71.5
    rows = list(csv.DictReader(io.StringIO(reports.render_csv(results))))
    assert [r["quality_below_threshold"] for r in rows[:2]] == ["false", "true"]


def test_an_empty_run_still_renders_every_format():
    assert json.loads(reports.render_json([]))["totals"]["files"] == 0
    assert list(csv.reader(io.StringIO(reports.render_csv([])))) == [list(reports.CSV_COLUMNS)]
    _check_junit(reports.render_junit([]))
    assert "**0 files**" in reports.render_markdown([])


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("r.json", "JSON"), ("R.CSV", "CSV"), ("junit.xml", "JUNIT"), ("out/report.junit.xml", "JUNIT")],
)
def test_format_is_chosen_by_extension(name, fmt):
    assert reports.format_for(name) is reports.ReportFormat[fmt]


def test_an_unknown_extension_is_an_input_error():
    with pytest.raises(InputError, match="report format"):
        reports.format_for("report.txt")


def test_write_report_replaces_its_own_earlier_report_but_never_another_file(tmp_path):
    path = tmp_path / "sub" / "report.json"
    reports.write_report(path, reports.render_json(sample()[:1]), reports.ReportFormat.JSON)
    reports.write_report(path, reports.render_json(sample()), reports.ReportFormat.JSON)
    assert len(json.loads(path.read_text())["files"]) == 5
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left

    foreign = tmp_path / "package.json"
    foreign.write_text('{"name": "mine"}')
    with pytest.raises(InputError, match="not an earlier sophon report"):
        reports.write_report(foreign, reports.render_json(sample()), reports.ReportFormat.JSON)
    assert foreign.read_text() == '{"name": "mine"}'

    for fmt, render in (
        (reports.ReportFormat.CSV, reports.render_csv),
        (reports.ReportFormat.JUNIT, reports.render_junit),
        (reports.ReportFormat.MARKDOWN, reports.render_markdown),
    ):
        own = tmp_path / f"own.{fmt.value}"
        reports.write_report(own, render(sample()[:1]), fmt)
        reports.write_report(own, render(sample()), fmt)  # an earlier report of its kind: replaced
        other = tmp_path / f"other.{fmt.value}"
        other.write_text("someone else's notes\n")
        with pytest.raises(InputError):
            reports.write_report(other, render(sample()), fmt)
        assert other.read_text() == "someone else's notes\n"

    empty = tmp_path / "empty.csv"  # e.g. made by mktemp for us
    empty.write_text("")
    reports.write_report(empty, reports.render_csv(sample()), reports.ReportFormat.CSV)
    assert empty.read_text().startswith("file,result,")


def test_write_report_never_writes_through_a_symlink(tmp_path):
    victim = tmp_path / "victim.json"
    victim.write_text(reports.render_json([]))  # even a file that looks like a report
    link = tmp_path / "report.json"
    link.symlink_to(victim)
    with pytest.raises(InputError, match="symlink"):
        reports.write_report(link, reports.render_json(sample()), reports.ReportFormat.JSON)
    assert json.loads(victim.read_text())["files"] == []
    with pytest.raises(InputError, match="directory"):
        reports.write_report(tmp_path, "x", reports.ReportFormat.JSON)


def test_append_summary_appends_and_refuses_symlinks(tmp_path):
    path = tmp_path / "step_summary.md"
    path.write_text("# earlier step\n")
    reports.append_summary(path, reports.render_markdown(sample()[:1]))
    reports.append_summary(path, reports.render_markdown(sample()[1:2]))
    text = path.read_text()
    assert text.startswith("# earlier step\n") and text.count(reports.MARKDOWN_MARKER) == 2
    link = tmp_path / "link.md"
    link.symlink_to(path)
    with pytest.raises(InputError, match="symlink"):
        reports.append_summary(link, "x")
    assert path.read_text() == text
    assert os.path.islink(link)


def test_write_report_goes_through_the_safe_writer(tmp_path):
    """Same bytes: the file is left alone (same inode); an earlier report is replaced by a new
    file moved into place; no temporary file is left either way."""
    path = tmp_path / "r.json"
    first = reports.render_json(sample())
    reports.write_report(path, first, reports.ReportFormat.JSON)
    inode = path.stat().st_ino
    reports.write_report(path, first, reports.ReportFormat.JSON)
    assert path.stat().st_ino == inode
    second = reports.render_json(sample()[:1])
    reports.write_report(path, second, reports.ReportFormat.JSON)
    assert path.read_text(encoding="utf-8") == second and path.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_the_step_summary_counts_sizes_in_the_terminals_unit():
    # one size unit everywhere: 7066 bytes is "6.9 KiB" on the terminal, so in the summary too
    from sophon_cli.cli.output import human_bytes as terminal_size

    r = fr(
        "one.mp4", "encoded", output="/o/one.mp4", source_bytes=7066, output_bytes=5222, saved_percent=26.1
    )
    md = reports.render_markdown([r], INFO)
    assert terminal_size(7066) == "6.9 KiB"
    assert "6.9 KiB → 5.1 KiB" in md and " KB" not in md and " MB" not in md
