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
    assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
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
    failed_part, rest = md.split("#### Failed budgets")[1].split("<details>")
    all_part = rest.split("#### All results")[1]
    assert "| max_size | onnx-cpu | int8 | local | 2.86 MiB | <= 976.56 KiB | ❌ exceeded " \
           "(+200%) |" in failed_part
    assert "| max_latency_p50_ms | tflite-xnnpack | int8 | - | - | <= 5 ms | ❌ not measured |" \
        in failed_part
    assert failed_part.count("\n| ") == 1 + 2  # header + the two failures only
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


# --- against a baseline: schema-valid JUnit, the five-second Markdown summary ---------------

DATA = Path(__file__).parent / "data"
SCHEMAS = ["junit-windyroad.xsd", "junit-10.xsd"]  # Windy Road JUnit.xsd, Jenkins junit-10


def baseline_files(tmp_path):
    """A baseline and a PR report: one cell 30% bigger and 2 points worse, one 20 ms slower on
    the phone, one new cell, one baseline cell gone."""
    base = make_report([cell("executorch-xnnpack", "int8", 100_000, drop=0.5),
                        cell("executorch-xnnpack", "int8", 100_000, p50=60.0, device="adb:R5C"),
                        cell("onnx-cpu", "int8", 120_000),
                        cell("tflite-xnnpack", "int8", 110_000)])
    new = make_report([cell("executorch-xnnpack", "int8", 130_000, drop=2.5),
                       cell("executorch-xnnpack", "int8", 100_000, p50=80.0, device="adb:R5C"),
                       cell("onnx-cpu", "int8", 120_000),
                       cell("onnx-cpu", "int8-qat", 120_000)])
    new["model"]["sha256"] = "cd" * 32
    paths = []
    for name, rep in (("base.json", base), ("report.json", new)):
        (tmp_path / name).write_text(json.dumps(rep))
        paths.append(tmp_path / name)
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("budgets:\n  - max_size: 1MB\n    max_size_growth_pct: 10\n"
                       "    max_extra_accuracy_drop: 1\n"
                       "  - device: adb:*\n    max_latency_p50_growth_pct: 20\n")
    return paths[0], paths[1], budgets


def test_check_against_baseline(tmp_path):
    base, report, budgets = baseline_files(tmp_path)
    x, m = tmp_path / "junit.xml", tmp_path / "summary.md"
    r = invoke(["check", report, "--budgets", budgets, "--baseline", base, "--junit", x,
                "--markdown", m, "--json"])
    assert r.exit_code == 1, r.output
    out = r.json()
    assert out["baseline"] == {"path": str(base), "sha256": "ab" * 32,
                               "created": "2026-11-22T10:00:00Z",
                               "gone": ["tflite-xnnpack / int8 on local"]}
    assert len(out["budgets"]) == 13  # 3 budgets x 4 cells + 1 on the phone
    failed = {(b["name"], b["device"]) for b in out["budgets"] if not b["passed"]}
    assert failed == {("max_size_growth_pct", "local"), ("max_extra_accuracy_drop", "local"),
                      ("max_latency_p50_growth_pct", "adb:R5C")}
    assert "baseline cell not in this report: tflite-xnnpack / int8 on local" in r.stderr
    assert "10/13 budgets passed (2 without a baseline); 3 exceeded" in r.stderr

    md = m.read_text()
    lines = md.splitlines()
    assert lines[0] == "### ❌ 3 of 13 budgets exceeded"
    assert "baseline `" + str(base) + "` (model changed: `abababababab` → `cdcdcdcdcdcd`)" \
        in lines[2]
    head, details = md.split("<details>")
    # the failures first, with the baseline and the change, and nothing that passed
    assert "| max_size_growth_pct | executorch-xnnpack | int8 | local | +30% | <= 10% | " \
           "97.66 KiB | +29.30 KiB (+30%) | ❌ exceeded |" in head
    assert "| max_extra_accuracy_drop | executorch-xnnpack | int8 | local | 2 points | " \
           "<= 1 points | 89.5 points | -2 points | ❌ exceeded |" in head
    assert "| max_latency_p50_growth_pct | executorch-xnnpack | int8 | adb:R5C | +33.3% | " \
           "<= 20% | 60 ms | +20 ms (+33%) | ❌ exceeded |" in head
    assert head.count("\n| ") == 1 + 3
    assert "🆕 1 new cell without a baseline (relative budgets pass): onnx-cpu / int8-qat on " \
           "local" in head
    assert "🗑️ 1 baseline cell not in this report: tflite-xnnpack / int8 on local" in head
    assert details.startswith("<summary>All 13 budgets (10 passed) and 4 results</summary>")
    assert details.rstrip().endswith("</details>")
    assert "| max_size_growth_pct | onnx-cpu | int8-qat | local | - | <= 10% | - | - | " \
           "🆕 new cell: no baseline |" in details

    root, suite = parse_junit(x)
    cases, failures = assert_junit_consistent(root, suite)
    assert len(cases) == 13 and len(failures) == 3
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert [(c.get("classname"), c.get("name"), c.find("skipped").get("message"))
            for c in skipped] == [
        ("edgeq.onnx-cpu.int8-qat.local", "max_size_growth_pct <= 10%", "new cell: no baseline"),
        ("edgeq.onnx-cpu.int8-qat.local", "max_extra_accuracy_drop <= 1 points",
         "new cell: no baseline")]
    assert suite.get("skipped") == "2"
    lat = next(c for c in cases if c.get("classname") == "edgeq.executorch-xnnpack.int8.adb:R5C"
               and c.get("name") == "max_latency_p50_growth_pct <= 20%")
    assert lat.find("failure").get("message") == \
        "value +33.3% exceeds limit 20% (baseline 60 ms, now 80 ms)"
    assert "baseline: 60 ms\ncurrent: 80 ms\nchange: +20 ms (+33%)" in lat.find("failure").text
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["baseline.path"] == str(base) and props["baseline.sha256"] == "ab" * 32
    system_out = suite.find("system-out").text.splitlines()
    assert len(system_out) == 13 + 1  # a line per test case, then the gone cell
    assert "edgeq.onnx-cpu.int8.local max_size <= 976.56 KiB: value 117.19 KiB -> pass " \
           "(baseline 117.19 KiB, change 0 B (+0%))" in system_out
    assert "edgeq.onnx-cpu.int8-qat.local max_size_growth_pct <= 10%: value - -> new cell: " \
           "no baseline (baseline -, change -)" in system_out
    assert system_out[-1] == \
        "baseline cell gone (not in this report): tflite-xnnpack / int8 on local"


@pytest.mark.parametrize("xsd", SCHEMAS)
def test_junit_validates_against_schema(tmp_path, xsd):
    """The common JUnit schemas CI systems read, checked by a real XSD validator."""
    xmlschema = pytest.importorskip("xmlschema")
    schema = xmlschema.XMLSchema(str(DATA / xsd))
    base, report, budgets = baseline_files(tmp_path)
    budgets.write_text(budgets.read_text() + "  - max_energy_mj: 5\n"
                       "    min_sustained_over_peak: 0.8\n    max_latency_p90_ms: 1ms\n")
    x = tmp_path / "junit.xml"
    r = invoke(["check", report, "--budgets", budgets, "--baseline", base, "--junit", x])
    assert r.exit_code == 1, r.output
    schema.validate(str(x))  # raises with the offending element when invalid
    root, suite = parse_junit(x)
    kinds = {c[0].tag if len(c) else "pass" for c in suite.findall("testcase")}
    assert kinds == {"pass", "failure", "skipped"}  # every case shape was validated
    # and the plain report without a baseline, plus names that need escaping
    rep = make_report([cell("a<b>&\"c", "int8|x", 5_000_000)])
    rows = check(rep, parse_budgets({"max_size": "1MB", "min_sustained_over_peak": 0.5}, "t"))
    schema.validate(junit_xml(rep, rows).decode("utf-8"))
    assert not schema.is_valid("<testsuites><testsuite name='x'/></testsuites>")


def test_missing_baseline_allowed(tmp_path):
    base, report, budgets = baseline_files(tmp_path)
    m = tmp_path / "m.md"
    gone = tmp_path / "no-such" / "report.json"
    r = invoke(["check", report, "--budgets", budgets, "--baseline", gone,
                "--allow-no-baseline", "--markdown", m, "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["baseline"] == {"path": str(gone), "missing": True, "gone": []}
    rel = [b for b in out["budgets"] if b["name"].endswith(("_pct", "extra_accuracy_drop"))]
    assert rel and all(b["passed"] and b["note"] == "new cell: no baseline" for b in rel)
    md = m.read_text()
    assert f"⚠️ no baseline (`{gone}` not found): relative budgets not compared" in md
    assert "new cell without" not in md and "| baseline |" not in md
    assert "relative budgets were not compared" in r.stderr


def test_hundred_cells_in_a_subprocess_without_torch(tmp_path):
    """`edgeq check` on a 100-cell report (and its baseline) never imports torch, and is
    quick: measured with -X importtime in a real process."""
    import time

    cells = [cell(f"target-{i % 5}", f"recipe-{i}", 10_000 + 1_000 * i,
                  p50=None if i % 10 == 0 else 0.5 + i / 100) for i in range(100)]
    (tmp_path / "base.json").write_text(json.dumps(make_report(cells)))
    grown = [dict(c, artifact=dict(c["artifact"], size_bytes=c["artifact"]["size_bytes"] * 1.2))
             for c in cells]
    (tmp_path / "report.json").write_text(json.dumps(make_report(grown)))
    (tmp_path / "b.yaml").write_text("max_size: 100KB\nmax_latency_p50_ms: 1\n"
                                     "max_size_growth_pct: 10\n")
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgeq", "check",
                        "report.json", "--budgets", "b.yaml", "--baseline", "base.json",
                        "--junit", "j.xml", "--markdown", "m.md", "--json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    elapsed = time.perf_counter() - t0
    assert p.returncode == 1, p.stderr[-2000:]
    imported = [ln.rsplit("|", 1)[-1].strip() for ln in p.stderr.splitlines()
                if ln.startswith("import time:")]
    assert len(imported) > 50  # -X importtime did report
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]
    out = json.loads(p.stdout)
    assert len(out["budgets"]) == 300
    assert sum(1 for b in out["budgets"] if b["name"] == "max_size_growth_pct"
               and not b["passed"]) == 100
    assert elapsed < 30, elapsed


def test_markdown_fits_a_pull_request_comment():
    cells = [cell(f"target-{i % 5}", f"recipe-{i}", 10_000 + 1_000 * i) for i in range(100)]
    rep = make_report(cells)
    rows = check(rep, parse_budgets({"max_size": "50KB", "max_latency_p50_ms": 1,
                                     "max_accuracy_drop": 0.1, "max_peak_memory": "1MB"}, "t"))
    md = markdown_summary(rep, rows)
    assert len(md) < 65_536 and "400 budget rows left out" in md
    assert md.count("\n| max_size | ") == sum(1 for r in rows if r["name"] == "max_size"
                                             and not r["passed"])  # failures still listed
    small = markdown_summary(make_report(cells[:3]), rows[:3])
    assert "left out" not in small and "#### All budgets" in small
