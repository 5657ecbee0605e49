"""edgeq check: budgets against report.json, exit 1 when exceeded, --json result."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import assert_bad_input


@pytest.fixture
def report(fp32_export, tmp_path) -> Path:
    """The fp32 export's report (size and top-1 accuracy measured; no profile)."""
    p = tmp_path / "report.json"
    shutil.copy(fp32_export[0] / "report.json", p)
    return p


def budgets(tmp_path, text: str) -> Path:
    p = tmp_path / "budgets.yaml"
    p.write_text(text)
    return p


def test_pass(run_cli, report, tmp_path):
    b = budgets(tmp_path, "budgets:\n  - max_size: 1MiB\n    max_accuracy_drop: 0.5\n")
    r = run_cli(["check", report, "--budgets", b, "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["passed"] is True
    assert [(x["name"], x["passed"]) for x in out["budgets"]] == \
        [("max_size", True), ("max_accuracy_drop", True)]
    assert out["budgets"][0]["limit"] == 1 << 20 and 5_000 < out["budgets"][0]["value"] < 20_000
    assert out["budgets"][1]["value"] == 0
    assert json.loads(report.read_text())["budgets"] == out["budgets"]
    assert "2/2 budgets passed" in r.stderr


def test_fail_exceeded_and_not_measured(run_cli, report, tmp_path):
    b = budgets(tmp_path, "max_size: 1KB\nmax_latency_p50_ms: 100\nmax_accuracy_drop: 5\n")
    r = run_cli(["check", report, "--budgets", b, "--json"])
    assert r.exit_code == 1, r.output
    out = r.json()
    assert out["passed"] is False
    got = {x["name"]: (x["passed"], x.get("reason")) for x in out["budgets"]}
    assert got == {"max_size": (False, None), "max_latency_p50_ms": (False, "not measured"),
                   "max_accuracy_drop": (True, None)}
    assert "1/3 budgets passed; 2 exceeded" in r.stderr


def test_no_budget_applies(run_cli, report, tmp_path):
    b = budgets(tmp_path, "budgets:\n  - target: onnx-*\n    max_size: 1MB\n")
    assert_bad_input(run_cli(["check", report, "--budgets", b]), "budgets.yaml",
                     "no budget applies")


def test_budgets_bad_unit(run_cli, report, tmp_path):
    b = budgets(tmp_path, "max_size: 2 parsecs\n")
    before = report.read_text()
    assert_bad_input(run_cli(["check", report, "--budgets", b]), "budgets.yaml", "max_size",
                     "'2 parsecs' is not a size")
    assert report.read_text() == before


@pytest.mark.parametrize("damage", ["truncate", "not-edgeq", "missing"])
def test_bad_report(run_cli, report, tmp_path, damage):
    b = budgets(tmp_path, "max_size: 1MB\n")
    if damage == "truncate":
        report.write_text(report.read_text()[:100])
    elif damage == "not-edgeq":
        report.write_text("[1, 2]")
    else:
        report.unlink()
    msg = {"truncate": "not valid JSON (truncated?)", "not-edgeq": "not an edgeq report",
           "missing": "not found"}[damage]
    assert_bad_input(run_cli(["check", report, "--budgets", b]), str(report), msg)


def test_budgets_plural_unit(run_cli, report, tmp_path):
    """The issue's wrong unit: one line naming the file, the key and what to write."""
    b = budgets(tmp_path, "max_size: 5 MiBs\n")
    line = assert_bad_input(run_cli(["check", report, "--budgets", b]))
    assert line == (f"edgeq: error: budgets '{b}': max_size: '5 MiBs' is not a size; write e.g. "
                    "500KB, 2MB or 1.5MiB (did you mean '5MiB'?)")


def test_against_itself_as_baseline(run_cli, report, tmp_path):
    """The real fp32 export's report compared with a copy of itself: every relative budget
    is judged (0% growth, 0 points lost) and absolute rows carry the baseline figure."""
    base = tmp_path / "main-report.json"
    shutil.copy(report, base)
    b = budgets(tmp_path, "max_size: 1MiB\nmax_size_growth_pct: 0\n"
                          "max_extra_accuracy_drop: 0\n")
    r = run_cli(["check", report, "--budgets", b, "--baseline", base, "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    rows = {x["name"]: x for x in out["budgets"]}
    size = json.loads(report.read_text())["results"][0]["artifact"]["size_bytes"]
    assert (rows["max_size_growth_pct"]["value"], rows["max_size_growth_pct"]["baseline"]) == \
        (0.0, size)
    assert rows["max_extra_accuracy_drop"]["value"] == 0.0
    assert rows["max_size"]["baseline"] == size and rows["max_size"]["delta"] == 0
    assert out["baseline"]["gone"] == [] and "3/3 budgets passed" in r.stderr


def _damaged_baseline(report: Path, tmp_path: Path, damage: str) -> Path:
    base = tmp_path / "main-report.json"
    data = json.loads(report.read_text())
    if damage == "truncated":
        base.write_text(report.read_text()[:200])
    elif damage == "schema":
        base.write_text(json.dumps(dict(data, schema_version=99)))
    elif damage == "model":
        data["model"] = dict(data["model"], spec="/src/other_model.py:build")
        base.write_text(json.dumps(data))
    return base


@pytest.mark.parametrize("damage,msg", [
    ("truncated", "--baseline: report '{base}' is not valid JSON (truncated?)"),
    ("schema", "--baseline: report '{base}' has schema_version 99"),
    ("model", "--baseline '{base}' is a report of model 'other_model.py:build', this report "
              "is of 'model.py:build'"),
    ("missing", "--baseline: report '{base}' not found"),
])
def test_bad_baseline(run_cli, report, tmp_path, damage, msg):
    base = _damaged_baseline(report, tmp_path, damage)
    b = budgets(tmp_path, "max_size_growth_pct: 10\n")
    before = report.read_text()
    assert_bad_input(run_cli(["check", report, "--budgets", b, "--baseline", base]),
                     msg.format(base=base))
    assert report.read_text() == before  # nothing written


def test_relative_budget_needs_baseline(run_cli, report, tmp_path):
    b = budgets(tmp_path, "max_size: 1MB\nmax_extra_accuracy_drop: 0.5\n")
    before = report.read_text()
    assert_bad_input(run_cli(["check", report, "--budgets", b]),
                     "key 'max_extra_accuracy_drop' needs --baseline")
    assert report.read_text() == before
    assert_bad_input(run_cli(["check", report, "--budgets", b, "--allow-no-baseline"]),
                     "--allow-no-baseline needs --baseline")
