"""edgeq demo: the whole flow on the bundled digits CNN (about 40 s)."""
from __future__ import annotations

import json


def test_demo(run_cli, tmp_path):
    r = run_cli(["demo", "-o", "demo", "--runs", "20"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    cells = {c["recipe"]: c for c in report["results"]}
    assert sorted(cells) == ["fp32", "int8", "int8-qat"]
    fp32, ptq, qat = cells["fp32"], cells["int8"], cells["int8-qat"]
    # int8 about 4x smaller than fp32 (a few KB of program overhead on top).
    assert ptq["artifact"]["size_bytes"] <= 0.33 * fp32["artifact"]["size_bytes"]
    assert qat["artifact"]["size_bytes"] <= 0.33 * fp32["artifact"]["size_bytes"]
    for c in cells.values():
        acc = c["accuracy"]
        assert acc["metric"] == "top1" and acc["samples"] == 445 and acc["value"] > 95
        assert c["profile"]["latency_ms"]["runs"] == 20 and c["profile"]["latency_ms"]["p50"] > 0
        assert c["delegation"]["delegated_share"] == 1.0
    assert fp32["accuracy"]["drop"] == 0
    assert qat["accuracy"]["drop"] <= ptq["accuracy"]["drop"] <= 1.0
    assert report["budgets"] and all(b["passed"] for b in report["budgets"])
    assert {b["recipe"] for b in report["budgets"]} == {"fp32", "int8", "int8-qat"}
    assert "report: demo/report.json" in r.stderr
