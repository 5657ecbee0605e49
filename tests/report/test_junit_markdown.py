"""edgeq check --junit / --markdown: JUnit XML that CI parsers read, a Markdown summary
(also appended to $GITHUB_STEP_SUMMARY), bad output folders, and no torch import."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import assert_bad_input, invoke

from edgeq.report.budgets import check, parse_budgets
from edgeq.report.junit import junit_xml
from edgeq.report.markdown import markdown_summary


def cell(target, recipe, size, drop=0.2, p50=1.5, device="local"):
    return {"target": target, "recipe": recipe,
            "artifact": {"path": f"{target}-{recipe}.bin", "size_bytes": size,
                         "sha256": f"{target}{recipe}".ljust(64, "0")},
            "delegation": None,
            "accuracy": {"metric": "top1", "value": 90.0 - drop, "reference_value": 90.0,
                         "drop": drop, "samples": 64},
            "profile": None if p50 is None else {"device": device, "mode": "measured",
                                                  "latency_ms": {"p50": p50, "p90": p50 * 1.2}}}


def make_report(cells: list[dict]) -> dict:
    return {"schema_version": 1, "edgeq_version": "0.1.0", "created": "2026-11-22T10:00:00Z",
            "model": {"spec": "model.py:build", "sha256": "ab" * 32, "params": 1234},
            "results": cells, "budgets": []}


CELLS = [
    cell("executorch-xnnpack", "fp32", 40_000),
    cell("executorch-xnnpack", "int8", 12_000, drop=0.4),
    cell("onnx-cpu", "int8", 3_000_000, drop=0.3),     # max_size exceeded
    cell("tflite-xnnpack", "int8", 11_000, p50=None),  # latency not measured
]
BUDGETS = "max_size: 1MB\nmax_latency_p50_ms: 5\nmax_accuracy_drop: 1.0\n"


@pytest.fixture
def files(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(make_report([dict(c) for c in CELLS])))
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(BUDGETS)
    return report, budgets


@pytest.fixture(autouse=True)
def no_step_summary(monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def parse_junit(path: Path):
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return root, suites[0]


def assert_junit_consistent(root, suite):
    cases = suite.findall("testcase")
    failures = [c.find("failure") for c in cases if c.find("failure") is not None]
    assert root.attrib == {}  # the schema's <testsuites> has no attributes
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == len(failures)
    assert int(suite.get("errors")) == 0
    # Required by the schema: hostname, id, package; timestamp without a time zone.
    assert suite.get("hostname") and int(suite.get("id")) == 0 and suite.get("package")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp"))
    assert int(suite.get("skipped")) == 0
    assert float(suite.get("time")) == 0
    assert suite.get("name") == "edgeq budgets" and suite.get("timestamp")
    # The schema's order: properties, then test cases, then system-out / system-err.
    tags = [c.tag for c in suite]
    assert tags[0] == "properties" and tags[-2:] == ["system-out", "system-err"]
    assert set(tags[1:-2]) == {"testcase"}
    for c in cases:
        assert c.get("classname") and c.get("name")
        assert c.get("classname").startswith("edgeq.")
        float(c.get("time"))
        assert len(list(c)) <= 1
    for f in failures:
        assert f.get("message") and f.get("type") and f.text
    return cases, failures


def test_check_writes_junit_and_markdown_on_failure(files, tmp_path):
    report, budgets = files
    x, m = tmp_path / "out.xml", tmp_path / "out.md"
    r = invoke(["check", report, "--budgets", budgets, "--junit", x, "--markdown", m, "--json"])
    assert r.exit_code == 1, r.output
    out = r.json()  # --json unchanged: the result on stdout
    assert out["passed"] is False and len(out["budgets"]) == 12

    root, suite = parse_junit(x)
    cases, failures = assert_junit_consistent(root, suite)
    # 3 budgets x 4 cells: a budget on a figure nobody took still applies (and fails).
    assert len(cases) == len(out["budgets"]) == 12
    assert len(failures) == 2
    by_name = {(c.get("classname"), c.get("name")): c for c in cases}
    size_case = by_name[("edgeq.onnx-cpu.int8.local", "max_size <= 976.56 KiB")]
    f = size_case.find("failure")
    assert f.get("type") == "BudgetExceeded"
    assert f.get("message") == "value 2.86 MiB exceeds limit 976.56 KiB"
    lat = by_name[("edgeq.tflite-xnnpack.int8", "max_latency_p50_ms <= 5 ms")]
    assert lat.find("failure").get("message") == "not measured"
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["model.spec"] == "model.py:build" and props["model.sha256"] == "ab" * 32

    md = m.read_text()
    assert md.startswith("### ❌ 2 of 12 budgets failed (1 exceeded, 1 not measured)\n")
    failed_part, all_part = md.split("#### Failed budgets")[1].split("#### All results")
    assert "| max_size | onnx-cpu | int8 | local | 2.86 MiB | 976.56 KiB | ❌ exceeded (+200%) |" \
        in failed_part
    assert "| max_latency_p50_ms | tflite-xnnpack | int8 | - | - | 5 ms | ❌ not measured |" \
        in failed_part
    assert "executorch-xnnpack" not in failed_part
    assert "| executorch-xnnpack | int8 | 11.72 KiB | top1 89.60% | 0.40 | 1.5 ms | ✅ 3/3 |" \
        in all_part
    assert "| onnx-cpu | int8 | 2.86 MiB | top1 89.70% | 0.30 | 1.5 ms | ❌ max_size |" \
        in all_part
    assert all_part.count("\n| ") == 1 + 4  # header + one row per result


def test_check_passes_with_outputs(files, tmp_path):
    report, budgets = files
    budgets.write_text("budgets:\n  - max_size: 5MB\n    max_accuracy_drop: 1\n")
    x, m = tmp_path / "ok.xml", tmp_path / "ok.md"
    r = invoke(["check", report, "--budgets", budgets, "--junit", x, "--markdown", m])
    assert r.exit_code == 0, r.output
    cases, failures = assert_junit_consistent(*parse_junit(x))
    assert len(cases) == 8 and failures == []
    md = m.read_text()
    assert md.splitlines()[0] == "### ✅ 8/8 budgets passed"
    assert "#### Failed budgets" not in md and "#### All results" in md


def test_step_summary_appended(files, tmp_path, monkeypatch):
    report, budgets = files
    summary = tmp_path / "step_summary.md"
    summary.write_text("## earlier step\nkeep me\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    m = tmp_path / "out.md"
    r = invoke(["check", report, "--budgets", budgets, "--markdown", m])
    assert r.exit_code == 1, r.output
    text = summary.read_text()
    assert text.startswith("## earlier step\nkeep me\n")
    assert text.endswith(m.read_text())
    # Without --markdown the summary still goes to the job summary, appended again.
    r = invoke(["check", report, "--budgets", budgets])
    assert r.exit_code == 1, r.output
    text = summary.read_text()
    assert text.startswith("## earlier step\nkeep me\n")
    assert text.count("### ❌ 2 of 12 budgets failed") == 2


@pytest.mark.parametrize("flag", ["--junit", "--markdown"])
def test_bad_output_folder(files, tmp_path, flag):
    report, budgets = files
    before = report.read_text()
    missing = tmp_path / "nope" / "out.file"
    assert_bad_input(invoke(["check", report, "--budgets", budgets, flag, missing]),
                     flag, "does not exist", str(missing.parent))
    assert report.read_text() == before  # refused before any work
    assert_bad_input(invoke(["check", report, "--budgets", budgets, flag, tmp_path]),
                     flag, "is a directory")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can write anywhere")
def test_unwritable_output_folder(files, tmp_path):
    report, budgets = files
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert_bad_input(invoke(["check", report, "--budgets", budgets, "--junit",
                                 ro / "x.xml"]), "--junit", "not writable")
    finally:
        ro.chmod(0o700)


def test_bad_step_summary_folder(files, tmp_path, monkeypatch):
    report, budgets = files
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "gone" / "summary.md"))
    assert_bad_input(invoke(["check", report, "--budgets", budgets]),
                     "GITHUB_STEP_SUMMARY", "does not exist")


def test_junit_escapes_and_unit_functions():
    """Markup in names survives the round trip; pipes are escaped in Markdown."""
    rep = make_report([cell("a<b>&\"c", "int8|x", 5_000_000)])
    rows = check(rep, parse_budgets({"max_size": "1MB"}, "t"))
    root = ET.fromstring(junit_xml(rep, rows))
    case = root.find("testsuite/testcase")
    assert case.get("classname") == 'edgeq.a<b>&"c.int8|x.local'
    md = markdown_summary(rep, rows)
    assert "int8\\|x" in md and "| int8|x |" not in md


def test_no_torch_import():
    code = ("import edgeq.cli.check, edgeq.report.junit, edgeq.report.markdown, sys; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_hundred_cells(tmp_path):
    cells = [cell(f"target-{i % 5}", f"recipe-{i}", 10_000 + 1_000 * i,
                  p50=None if i % 10 == 0 else 0.5 + i / 100) for i in range(100)]
    report = tmp_path / "report.json"
    report.write_text(json.dumps(make_report(cells)))
    budgets = tmp_path / "b.yaml"
    budgets.write_text("max_size: 100KB\nmax_latency_p50_ms: 1\n")
    x, m = tmp_path / "x.xml", tmp_path / "m.md"
    r = invoke(["check", report, "--budgets", budgets, "--junit", x, "--markdown", m])
    assert r.exit_code == 1, r.output
    cases, failures = assert_junit_consistent(*parse_junit(x))
    assert len(cases) == 200
    # size > 100 KB for i >= 88 (12 cells), p50 > 1 ms for i > 50 or missing for i % 10 == 0
    size_fail = sum(1 for i in range(100) if 10_000 + 1_000 * i > 100_000)
    lat_fail = sum(1 for i in range(100) if i % 10 == 0 or 0.5 + i / 100 > 1)
    assert len(failures) == size_fail + lat_fail
    assert m.read_text().splitlines()[0] == \
        f"### ❌ {size_fail + lat_fail} of 200 budgets failed ({size_fail + lat_fail - 10} " \
        f"exceeded, 10 not measured)"
