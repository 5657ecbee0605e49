"""`profile --estimate` on ONNX and LiteRT artifacts: their costs are read off the artifact's
own graph (edgeq/runtimes/onnx/costs.py, edgeq/runtimes/tflite/costs.py) and must agree with
ExecuTorch's for the same model, since the three run the same arithmetic."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import invoke

TARGETS = ("executorch-xnnpack", "onnx-cpu", "tflite-xnnpack")


@pytest.fixture(scope="module")
def exported(shared, tmp_path_factory) -> dict:
    """(recipe, target) -> (artifact path, manifest) for the tiny CNN."""
    out = tmp_path_factory.mktemp("est-rt")
    arts = {}
    for recipe in ("fp32", "int8"):
        args = ["export", shared.model, "-r", recipe, "-o", out, "--json"]
        for t in TARGETS:
            args += ["-t", t]
        if recipe == "int8":
            args += ["--calib", shared.calib, "--calib-samples", "32"]
        r = invoke(args)
        assert r.exit_code == 0, r.output
    for m in out.glob("*.manifest.json"):
        manifest = json.loads(m.read_text())
        art = m.with_name(m.name[: -len(".manifest.json")])
        arts[(manifest["recipe"]["name"], manifest["target"]["name"])] = (art, manifest)
    assert len(arts) == 6
    return arts


@pytest.mark.parametrize("recipe", ["fp32", "int8"])
def test_costs_agree_across_runtimes(exported, recipe):
    ref = exported[(recipe, "executorch-xnnpack")][1]["costs"]
    for target in TARGETS[1:]:
        costs = exported[(recipe, target)][1]["costs"]
        assert costs and costs["nodes"], target
        # The same convolutions and linears: MACs equal to within the converters' bookkeeping
        # (a quantize of the input counted per element, a reshape's shape constant).
        assert costs["total_flops"] == pytest.approx(ref["total_flops"], rel=0.01), target
        assert costs["weight_bytes"] == pytest.approx(ref["weight_bytes"], rel=0.02, abs=64), target
        rows = [dict(zip(costs["fields"], r)) for r in costs["nodes"]]
        macs = [r for r in rows if r["kind"] in ("conv", "pointwise", "dwconv", "gemm")]
        want = "int8" if recipe == "int8" else "fp32"
        assert macs and all(r["precision"] == want for r in macs), (target, macs)


@pytest.mark.parametrize("target", TARGETS[1:])
def test_cli_estimate_on_onnx_and_tflite(exported, target, run_cli):
    fp32 = run_cli(["profile", exported[("fp32", target)][0], "--estimate", "--profile",
                    "pixel-8", "--json"])
    int8 = run_cli(["profile", exported[("int8", target)][0], "--estimate", "--profile",
                    "pixel-8", "--json"])
    ref = run_cli(["profile", exported[("fp32", "executorch-xnnpack")][0], "--estimate",
                   "--profile", "pixel-8", "--json"])
    for r in (fp32, int8, ref):
        assert r.exit_code == 0, r.output
    a, b, c = fp32.json(), int8.json(), ref.json()
    assert a["mode"] == "estimated" and a["device"] == "pixel-8"
    # Same model, same kernels costed. The tiny CNN is dispatch-bound, and LiteRT's graph has
    # two more operators (a transpose and a reshape before the classifier), so allow 50%;
    # int8 moves under half the bytes.
    assert a["latency_ms"]["p50"] == pytest.approx(c["latency_ms"]["p50"], rel=0.5)
    assert b["estimate"]["total_bytes"] < a["estimate"]["total_bytes"] / 2


def test_existing_tflite_as_model_gets_costs(exported, tmp_path, run_cli):
    src: Path = exported[("fp32", "tflite-xnnpack")][0]
    r = run_cli(["export", src, "-t", "tflite-xnnpack", "-r", "fp32", "-o", tmp_path / "o",
                 "--json"])
    assert r.exit_code == 0, r.output
    manifest = json.loads(next((tmp_path / "o").glob("*.manifest.json")).read_text())
    assert manifest["costs"]["total_flops"] == exported[("fp32", "tflite-xnnpack")][1][
        "costs"]["total_flops"]
