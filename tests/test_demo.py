"""edgeq demo: the whole flow on the bundled digits CNN, on three runtimes (about 60 s)."""
from __future__ import annotations

import json


def test_demo(run_cli, tmp_path):
    r = run_cli(["demo", "-o", "demo", "--runs", "20"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    cells = {(c["target"], c["recipe"]): c for c in report["results"]}
    runtimes = ("executorch-xnnpack", "onnx-xnnpack", "tflite-xnnpack")
    expected = {(t, r) for t in runtimes for r in ("fp32", "int8")}
    expected |= {("executorch-xnnpack", "int8-qat"), ("tflite-xnnpack", "int8-qat")}
    assert set(cells) == expected
    for c in cells.values():
        acc = c["accuracy"]
        assert acc["metric"] == "top1" and acc["samples"] == 445 and acc["value"] > 95
        assert acc["drop"] <= 1.0
        assert c["profile"]["latency_ms"]["runs"] == 20 and c["profile"]["latency_ms"]["p50"] > 0
    for t in runtimes:
        fp32, ptq = cells[(t, "fp32")], cells[(t, "int8")]
        assert fp32["accuracy"]["drop"] == 0
        # int8 about 4x smaller than fp32 (a few KB of program overhead on top).
        assert ptq["artifact"]["size_bytes"] <= 0.36 * fp32["artifact"]["size_bytes"]
    for t in ("executorch-xnnpack", "tflite-xnnpack"):
        # QAT must not lose more accuracy than PTQ on the demo (issue requirement).
        assert cells[(t, "int8-qat")]["accuracy"]["drop"] <= cells[(t, "int8")]["accuracy"]["drop"]
        assert cells[(t, "int8")]["delegation"]["delegated_share"] == 1.0
    assert cells[("executorch-xnnpack", "int8")]["profile"]["runner"] in ("native", "python")
    assert report["budgets"] and all(b["passed"] for b in report["budgets"])
    assert "report: demo/report.json" in r.stderr
