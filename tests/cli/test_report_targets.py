"""`sophon encode --report FILE` / `--summary FILE` given a path they cannot write: one line naming
the option the path came from (the library says which path and what is wrong, never a flag), exit 2,
before any work and with nothing touched."""

from __future__ import annotations

import pytest


def _line(res) -> str:
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize(("option", "other"), [("--report", "--summary"), ("--summary", "--report")])
def test_a_directory_names_the_option_it_was_given_to(cli, clip, tmp_path, option, other):
    reports = tmp_path / "reports.json"  # a directory, whatever its name says
    reports.mkdir()
    line = _line(cli("encode", clip, "-o", tmp_path / "out", option, reports))
    assert f"{option} {reports} is a directory" in line, line
    assert other not in line
    if option == "--summary":
        assert "report" not in line.replace(str(reports), ""), line  # a summary is not a report
    assert "give it a file name" in line, line
    assert list(reports.iterdir()) == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("option", ["--report", "--summary"])
def test_a_foreign_file_and_a_symlink_name_the_option(cli, clip, tmp_path, option):
    suffix = ".json" if option == "--report" else ".md"
    foreign = tmp_path / f"notes{suffix}"
    foreign.write_text("mine\n")
    line = _line(cli("encode", clip, "-o", tmp_path / "out", option, foreign))
    assert line.startswith(f"error: {option} {foreign} exists and is not an earlier sophon "), line
    link = tmp_path / f"link{suffix}"
    link.symlink_to(foreign)
    line = _line(cli("encode", clip, "-o", tmp_path / "out", option, link))
    assert line.startswith(f"error: {option} {link} is a symlink; a "), line
    assert foreign.read_text() == "mine\n" and not (tmp_path / "out").exists()


def test_an_unknown_report_extension_names_the_option(cli, clip, tmp_path):
    line = _line(cli("encode", clip, "-o", tmp_path / "out", "--report", tmp_path / "r.txt"))
    assert f"--report {tmp_path / 'r.txt'}: cannot tell the report format" in line, line
    assert "*.json, *.csv or *.xml" in line, line
