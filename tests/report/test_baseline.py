"""Relative budgets against a baseline report: like-with-like pairing, growth in %, extra
accuracy drop, new and gone cells, and refusing a baseline of another schema or model."""
from __future__ import annotations

import copy
import json

import pytest

from edgeq.errors import BadInput
from edgeq.report.baseline import (NEW_CELL, cell_key, gone_cells, load_baseline, match,
                                   model_identity)
from edgeq.report.budgets import check, format_change, parse_budgets


def cell(target="executorch-xnnpack", recipe="int8", size=1_000_000, acc=90.0, p50=50.0,
         device="local", profile="host", energy=None, metric="top1"):
    return {"target": target, "recipe": recipe,
            "artifact": {"path": f"{target}.{recipe}", "size_bytes": size,
                         "sha256": f"{target}{recipe}{size}"},
            "accuracy": None if acc is None else {"metric": metric, "value": acc,
                                                  "reference_value": 91.0,
                                                  "drop": round(91.0 - acc, 4)},
            "profile": None if device is None else {
                "device": device, "profile": profile, "mode": "measured",
                "latency_ms": {"p50": p50, "p90": None if p50 is None else p50 * 1.1},
                "energy_mj_per_inference": energy}}


def report(cells, spec="/home/runner/work/app/model.py:build", sha="aa" * 32, version=1):
    return {"schema_version": version, "edgeq_version": "0.1.0",
            "created": "2026-11-22T10:00:00Z",
            "model": {"spec": spec, "sha256": sha, "params": 10}, "results": cells,
            "budgets": []}


PHONE = {"device": "adb:R5C", "profile": "galaxy-a14"}  # the low-end phone

BASE = report([cell(), cell(recipe="fp32", size=4_000_000, acc=91.0),
               cell(p50=80.0, **PHONE), cell(target="tflite-xnnpack")])


def rows_by(rows):
    return {(r["name"], r["target"], r["recipe"], r["device"]): r for r in rows}


def test_issue_scenario_bigger_less_accurate_slower():
    """A PR that makes the model 30% bigger, 2 points less accurate or 20 ms slower on the
    low-end phone turns the job red; an unchanged cell passes."""
    new = report([cell(size=1_300_000, acc=88.0), cell(recipe="fp32", size=4_000_000, acc=91.0),
                  cell(p50=100.0, **PHONE), cell(target="tflite-xnnpack")], sha="bb" * 32)
    budgets = parse_budgets({"budgets": [
        {"max_size_growth_pct": 10, "max_extra_accuracy_drop": 1.0},
        {"device": "galaxy-*", "max_latency_p50_growth_pct": "15%"}]}, "b")
    rows = check(new, budgets, load_baseline_obj(new))
    got = rows_by(rows)
    size = got[("max_size_growth_pct", "executorch-xnnpack", "int8", "local")]
    assert (size["passed"], size["value"], size["baseline"], size["current"], size["delta"]) == \
        (False, 30.0, 1_000_000, 1_300_000, 300_000)
    assert size["measure_unit"] == "bytes" and format_change(size) == "+292.97 KiB (+30%)"
    acc = got[("max_extra_accuracy_drop", "executorch-xnnpack", "int8", "local")]
    assert (acc["passed"], acc["value"], acc["baseline"], acc["current"], acc["delta"]) == \
        (False, 2.0, 90.0, 88.0, -2.0)
    lat = got[("max_latency_p50_growth_pct", "executorch-xnnpack", "int8", "adb:R5C")]
    assert (lat["passed"], lat["value"], lat["baseline"], lat["current"]) == \
        (False, 25.0, 80.0, 100.0)
    assert format_change(lat) == "+20 ms (+25%)"
    # the latency budget applies to the phone only; the unchanged cells pass
    assert [r["device"] for r in rows if r["name"] == "max_latency_p50_growth_pct"] == \
        ["adb:R5C"]
    failed = {(r["name"], r["recipe"], r["device"]) for r in rows if not r["passed"]}
    assert failed == {("max_size_growth_pct", "int8", "local"),
                      ("max_extra_accuracy_drop", "int8", "local"),
                      ("max_latency_p50_growth_pct", "int8", "adb:R5C")}


def load_baseline_obj(new):
    """BASE, checked against ``new`` as the CLI does (same model, other sha)."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as td:
        p = Path(td) / "base.json"
        p.write_text(json.dumps(BASE))
        return load_baseline(p, new)


def test_new_cell_passes_with_note_and_gone_cell_listed():
    new = report([cell(size=900_000), cell(target="onnx-xnnpack", size=5_000_000)])
    rows = check(new, parse_budgets({"max_size_growth_pct": 5, "max_size": "4MB"}, "b"), BASE)
    got = rows_by(rows)
    fresh = got[("max_size_growth_pct", "onnx-xnnpack", "int8", "local")]
    assert fresh["passed"] is True and fresh["note"] == NEW_CELL == "new cell: no baseline"
    assert fresh["value"] is None and fresh["baseline"] is None and fresh["new_cell"] is True
    # the absolute budget on the new cell is judged as usual (and fails), marked new too
    absolute = got[("max_size", "onnx-xnnpack", "int8", "local")]
    assert absolute["passed"] is False and absolute["new_cell"] is True
    assert "note" not in absolute
    shrunk = got[("max_size_growth_pct", "executorch-xnnpack", "int8", "local")]
    assert shrunk["passed"] is True and shrunk["value"] == -10.0
    assert got[("max_size", "executorch-xnnpack", "int8", "local")]["delta"] == -100_000
    gone = gone_cells(new, BASE)
    assert [(c["target"], c["recipe"], c["profile"]["device"]) for c in gone] == [
        ("executorch-xnnpack", "fp32", "local"), ("executorch-xnnpack", "int8", "adb:R5C"),
        ("tflite-xnnpack", "int8", "local")]


def test_like_with_like_only():
    """Host-measured and phone-estimated cells of one target and recipe are never paired;
    duplicates pair in order."""
    est = cell(device="galaxy-a14", profile="galaxy-a14", p50=70.0)
    base = report([cell(p50=1.0), est, cell(p50=2.0)])
    new = report([cell(p50=10.0), cell(p50=20.0), cell(device="galaxy-a14",
                                                       profile="galaxy-a14", p50=77.0)])
    pairs, gone = match(new["results"], base)
    assert [pairs[i]["profile"]["latency_ms"]["p50"] for i in range(3)] == [1.0, 2.0, 70.0]
    assert gone == []
    assert cell_key(est) == ("executorch-xnnpack", "int8", "galaxy-a14", "galaxy-a14", None)
    rows = check(new, parse_budgets({"max_latency_p50_growth_pct": 20}, "b"), base)
    assert [(r["value"], r["passed"]) for r in rows] == [(900.0, False), (900.0, False),
                                                         (10.0, True)]


def test_not_measured_and_not_comparable():
    base = report([cell(energy=None), cell(recipe="b", energy=2.0),
                   cell(recipe="c", metric="cosine", acc=0.99), cell(recipe="d", size=0)])
    new = report([cell(energy=3.0), cell(recipe="b", energy=None),
                  cell(recipe="c", acc=89.0), cell(recipe="d", size=10)])
    rows = check(new, parse_budgets({"max_energy_growth_pct": 10, "max_extra_accuracy_drop": 1,
                                     "max_size_growth_pct": 10}, "b"), base)
    got = {(r["name"], r["recipe"]): (r["passed"], r.get("note") or r.get("reason"))
           for r in rows if (r["name"], r["recipe"]) in {
               ("max_energy_growth_pct", "int8"), ("max_energy_growth_pct", "b"),
               ("max_extra_accuracy_drop", "c"), ("max_size_growth_pct", "d")}}
    assert got == {
        # the baseline did not measure it: nothing to compare with, passes and says so
        ("max_energy_growth_pct", "int8"): (True, "baseline not measured"),
        # this report did not measure it: fails, like any unmeasured budget
        ("max_energy_growth_pct", "b"): (False, "not measured"),
        ("max_extra_accuracy_drop", "c"): (
            False, "not comparable: metric cosine in the baseline, top1 now"),
        ("max_size_growth_pct", "d"): (False, "baseline figure is 0: growth in % is unbounded"),
    }


@pytest.mark.parametrize("spec,identity", [
    ("/home/runner/work/app/model.py:build", "model.py:build"),
    ("model.py:build", "model.py:build"),
    ("digits-cnn", "digits-cnn"),
    ("mypkg.models:mobilenet", "mypkg.models:mobilenet"),
    ("/tmp/exported/model.pt2", "model.pt2"),
])
def test_model_identity(spec, identity):
    assert model_identity(report([], spec=spec)) == identity
    named = report([], spec=spec)
    named["model"]["name"] = "my-model"
    assert model_identity(named) == "my-model"
    assert model_identity({"model": None}) is None


def test_load_baseline_accepts_changed_weights(tmp_path):
    p = tmp_path / "main-report.json"
    p.write_text(json.dumps(BASE))
    new = report([cell()], spec="./model.py:build", sha="cc" * 32)
    assert load_baseline(p, new)["model"]["sha256"] == "aa" * 32
    unknown = copy.deepcopy(new)
    unknown["model"] = None  # a report built without a model summary: cannot compare
    assert load_baseline(p, unknown)["results"] == BASE["results"]


@pytest.mark.parametrize("damage,msg", [
    ("truncated", "--baseline: report '{p}' is not valid JSON (truncated?)"),
    ("schema", "--baseline: report '{p}' has schema_version 2; this edgeq reads 1"),
    ("model", "--baseline '{p}' is a report of model 'other.py:build', this report is of "
              "'model.py:build': give a baseline of the same model"),
    ("missing", "--baseline: report '{p}' not found"),
])
def test_load_baseline_refuses(tmp_path, damage, msg):
    p = tmp_path / "main-report.json"
    text = json.dumps(BASE)
    if damage == "truncated":
        p.write_text(text[: len(text) // 2])
    elif damage == "schema":
        p.write_text(json.dumps(dict(BASE, schema_version=2)))
    elif damage == "model":
        p.write_text(json.dumps(report([], spec="/x/other.py:build")))
    new = report([cell()])
    with pytest.raises(BadInput) as e:
        load_baseline(p, new)
    assert str(e.value).startswith(msg.format(p=p))
