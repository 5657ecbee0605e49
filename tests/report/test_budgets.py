"""Budgets: size units, selectors, not-measured fails, file errors."""
from __future__ import annotations

import pytest

from edgeq.errors import BadInput
from edgeq.report.budgets import check, load_budgets, parse_budgets, parse_size


@pytest.mark.parametrize("text,n", [("2MB", 2_000_000), ("500KB", 500_000),
                                    ("1.5MiB", 1_572_864), ("64 KiB", 65_536), ("100", 100),
                                    (1024, 1024), ("3b", 3)])
def test_parse_size(text, n):
    assert parse_size(text, "x") == n


@pytest.mark.parametrize("text", ["2 parsecs", "MB", "-1MB", "1.2.3KB", ""])
def test_parse_size_bad(text):
    with pytest.raises(BadInput, match="is not a size; write e.g. 500KB"):
        parse_size(text, "budgets 'b.yaml': max_size")


def cell(target="executorch-xnnpack", recipe="int8", size=1000, p50=2.0, drop=0.5):
    return {"target": target, "recipe": recipe, "artifact": {"size_bytes": size},
            "accuracy": None if drop is None else {"drop": drop},
            "profile": None if p50 is None else {"device": "local",
                                                  "latency_ms": {"p50": p50}}}


def test_check_pass_fail_and_not_measured():
    report = {"results": [cell(size=1000), cell(recipe="fp32", size=4000, p50=None, drop=None),
                          {"target": "t", "recipe": "int8", "error": "boom"}]}
    rows = check(report, parse_budgets({"max_size": "2KB", "max_latency_p50_ms": 3,
                                        "max_accuracy_drop": 1}, "b"))
    got = {(r["name"], r["recipe"]): (r["passed"], r["value"]) for r in rows}
    assert got == {("max_size", "int8"): (True, 1000), ("max_size", "fp32"): (False, 4000),
                   ("max_latency_p50_ms", "int8"): (True, 2.0),
                   ("max_latency_p50_ms", "fp32"): (False, None),
                   ("max_accuracy_drop", "int8"): (True, 0.5),
                   ("max_accuracy_drop", "fp32"): (False, None)}
    assert all(r["reason"] == "not measured" for r in rows if r["value"] is None)


def test_limit_is_inclusive_and_selectors():
    report = {"results": [cell(recipe="int8", size=2000), cell(recipe="fp32", size=9000),
                          cell(target="onnx-cpu", recipe="int8-qat", size=2001)]}
    b = parse_budgets({"budgets": [{"recipe": "int8*", "target": "executorch-*",
                                    "max_size": "2KB"},
                                   {"device": "adb*", "max_size": 1}]}, "b")
    rows = check(report, b)
    assert [(r["recipe"], r["passed"]) for r in rows] == [("int8", True)]


@pytest.mark.parametrize("data,msg", [
    ({"max_sise": "2MB"}, "unknown key 'max_sise' (did you mean 'max_size'?)"),
    ({"max_latency_p50_ms": "fast"}, "'fast' is not a number"),
    ({"max_size": "2 parsecs"}, "is not a size"),
    ([], "expected a mapping"),
    ({"budgets": ["max_size"]}, "entry 1 is not a mapping"),
])
def test_parse_budgets_bad(data, msg):
    with pytest.raises(BadInput) as e:
        parse_budgets(data, "'b.yaml'")
    assert msg in str(e.value)


def test_load_budgets_file(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text("budgets:\n  - max_size: 1.5MiB\n    target: executorch-*\n")
    assert load_budgets(p) == [{"key": "max_size", "limit": 1_572_864, "unit": "bytes",
                                "target": "executorch-*", "recipe": None, "device": None}]
    p.write_text("max_size: [1\n")
    with pytest.raises(BadInput, match="not valid YAML"):
        load_budgets(p)
    with pytest.raises(BadInput, match="not found"):
        load_budgets(tmp_path / "none.yaml")
