"""Budgets: units (sizes, ms, mJ, ratios, points, %), selectors (target, recipe, device and
device profile), min and max budgets, not-measured fails with its reason, file errors."""
from __future__ import annotations

import pytest

from edgeq.errors import BadInput
from edgeq.report.budgets import (BUDGETS, check, format_limit, load_budgets, parse_budgets,
                                  parse_quantity, parse_size)


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
    assert all("baseline" not in r for r in rows)  # no --baseline: no baseline columns


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
    ({"max_latency_p50_ms": "fast"}, "'fast' is not a time; write milliseconds, e.g. 5, 5ms"),
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


@pytest.mark.parametrize("text", ["5 MiBs", "5MBs", "5 KBs"])
def test_plural_size_unit_teaches(text):
    """The issue's example: a wrong unit names the key, the value and what to write."""
    with pytest.raises(BadInput) as e:
        parse_budgets({"max_size": text}, "'b.yaml'")
    fixed = text[:-1].replace(" ", "")
    assert str(e.value) == (f"budgets 'b.yaml': max_size: '{text}' is not a size; write e.g. "
                            f"500KB, 2MB or 1.5MiB (did you mean '{fixed}'?)")


@pytest.mark.parametrize("kind,text,value", [
    ("ms", 5, 5.0), ("ms", "5", 5.0), ("ms", "5ms", 5.0), ("ms", "5 ms", 5.0),
    ("ms", "0.5s", 500.0), ("ms", "250us", 0.25), ("ms", "250µs", 0.25), ("ms", "1e1", 10.0),
    ("mJ", "2.5", 2.5), ("mJ", "2.5mJ", 2.5), ("mJ", "0.002J", 2.0), ("mJ", "500uJ", 0.5),
    ("ratio", 0.8, 0.8), ("ratio", "80%", 0.8), ("ratio", 1, 1.0),
    ("points", 1, 1.0), ("points", "0.5 points", 0.5), ("points", "2pp", 2.0),
    ("pct", 10, 10.0), ("pct", "10%", 10.0), ("pct", "2.5 %", 2.5),
])
def test_parse_quantity(kind, text, value):
    assert parse_quantity(text, kind, "x") == pytest.approx(value)


@pytest.mark.parametrize("key,text,msg", [
    ("max_latency_p50_ms", "5 MB", "'5 MB' is not a time; write milliseconds, e.g. 5, 5ms or "
                                   "0.005s"),
    ("max_latency_p90_ms", "5 min", "is not a time"),
    ("max_latency_p50_ms", True, "'True' is not a time"),
    ("max_latency_p50_ms", ".nan", "is not a time"),
    ("max_energy_mj", "5 MJ", "'5 MJ' is not an energy; write millijoules per inference"),
    ("max_energy_mj", "5 W", "is not an energy"),
    ("min_sustained_over_peak", "fast", "'fast' is not a ratio; write sustained / peak"),
    ("min_sustained_over_peak", 1.5, "'1.5' is not a ratio between 0 and 1"),
    ("min_sustained_over_peak", "0%", "is not a ratio between 0 and 1"),
    ("max_accuracy_drop", "1%", "'1%' is not a number of points"),
    ("max_size_growth_pct", "10 MB", "'10 MB' is not a percentage; write e.g. 10 or 10%"),
    ("max_extra_accuracy_drop", "lots", "is not a number of points"),
    ("max_peak_memory", "-5MB", "is not a size"),
])
def test_bad_limits_name_the_key(key, text, msg):
    with pytest.raises(BadInput) as e:
        parse_budgets({key: text}, "'b.yaml'")
    assert str(e.value).startswith(f"budgets 'b.yaml': {key}: ")
    assert msg in str(e.value)


def test_bad_selector():
    with pytest.raises(BadInput, match="device '3' must be a pattern"):
        parse_budgets({"device": 3, "max_size": 1}, "'b.yaml'")


def test_ms_key_accepts_units_consistently(tmp_path):
    """A latency limit is in ms whatever unit it was written in: 5, 5ms, 0.005s agree."""
    limits = {parse_budgets({"max_latency_p50_ms": t}, "b")[0]["limit"]
              for t in (5, "5", "5ms", "0.005s", "5000us")}
    assert limits == {5.0}


def profiled(target="executorch-xnnpack", recipe="int8", device="local", profile="host",
             energy=None, sustained=None, p50=2.0, p90=None, **extra):
    block = {"device": device, "profile": profile, "mode": "measured",
             "latency_ms": {"p50": p50, "p90": p90}, "energy_mj_per_inference": energy,
             "thermal": None if sustained is None else {"sustained_over_peak": sustained}}
    if energy is None:
        block["energy_mj_per_inference_reason"] = "no energy sensor is read on the local host"
    if sustained is None:
        block["thermal_reason"] = "no --sustained run was asked for"
    return {"target": target, "recipe": recipe, "artifact": {"size_bytes": 1000},
            "accuracy": None, "profile": dict(block, **extra)}


def test_energy_and_sustained_min_budget():
    report = {"results": [profiled(device="adb:R5C", profile="pixel-8", energy=4.0,
                                   sustained=0.8),
                          profiled(device="adb:R5C", profile="pixel-8", recipe="fp32",
                                   energy=9.0, sustained=0.79),
                          profiled()]}
    rows = check(report, parse_budgets({"max_energy_mj": "5mJ",
                                        "min_sustained_over_peak": "80%"}, "b"))
    got = {(r["name"], r["recipe"], r["device"]): (r["passed"], r["value"], r.get("reason"))
           for r in rows}
    assert got == {
        ("max_energy_mj", "int8", "adb:R5C"): (True, 4.0, None),
        ("max_energy_mj", "fp32", "adb:R5C"): (False, 9.0, None),
        ("max_energy_mj", "int8", "local"): (
            False, None, "not measured: no energy sensor is read on the local host"),
        # A minimum: 0.8 >= 0.8 passes (inclusive), 0.79 fails.
        ("min_sustained_over_peak", "int8", "adb:R5C"): (True, 0.8, None),
        ("min_sustained_over_peak", "fp32", "adb:R5C"): (False, 0.79, None),
        ("min_sustained_over_peak", "int8", "local"): (
            False, None, "not measured: no --sustained run was asked for"),
    }
    assert {format_limit(r) for r in rows} == {"<= 5 mJ", ">= 0.8"}
    assert {r["direction"] for r in rows if r["name"].startswith("min_")} == {"min"}


def test_missing_profile_and_spread_reasons():
    est = profiled(device="pixel-8", profile="pixel-8")
    est["profile"]["latency_ms"]["spread_reason"] = "a roofline estimate has no run-to-run spread"
    none = profiled()
    none["profile"] = None
    none["profile_reason"] = "cannot run here: vulkan"
    rows = check({"results": [est, none]}, parse_budgets({"max_latency_p90_ms": 5}, "b"))
    assert [r["reason"] for r in rows] == [
        "not measured: a roofline estimate has no run-to-run spread",
        "not measured: cannot run here: vulkan"]


@pytest.mark.parametrize("pattern,expected", [
    ("pixel-8", ["adb:R5C", "pixel-8"]),          # the device profile name, measured or est.
    ("adb:*", ["adb:R5C"]),                       # the device itself
    ("local", ["local"]),
    ("host", ["local"]),                          # the host's profile name
    ("pixel-8-real", ["adb:R5C"]),                # a pipeline's own name for the device
    (["local", "pixel-*"], ["adb:R5C", "pixel-8", "local"]),
    ("galaxy-*", []),
])
def test_device_selector_matches_device_and_profile(pattern, expected):
    report = {"results": [profiled(device="adb:R5C", profile="pixel-8", name="pixel-8-real"),
                          profiled(device="pixel-8", profile="pixel-8"),
                          profiled()]}
    rows = check(report, parse_budgets({"device": pattern, "max_size": "1MB"}, "b"))
    assert [r["device"] for r in rows] == expected


def test_relative_key_needs_baseline():
    b = parse_budgets({"max_size": "1MB", "max_latency_p50_growth_pct": 10}, "b")
    with pytest.raises(BadInput) as e:
        check({"results": [profiled()]}, b)
    assert str(e.value).startswith("budgets: key 'max_latency_p50_growth_pct' needs --baseline")


def test_every_key_documented_in_check_help():
    from edgeq.cli.check import check as command

    assert all(key in command.help for key in BUDGETS)
