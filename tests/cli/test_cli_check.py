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
