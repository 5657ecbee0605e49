"""Dynamic int8, weight-only int8 and int4 group-wise (issue #6) on every runtime, with the
real ExecuTorch, ONNX Runtime and LiteRT: each artifact builds without calibration data,
runs in its runtime, stays close to fp32 and is as small as its bits say; and the bad
inputs (a group size that does not divide a layer, int4 where NNAPI would run it) are one
line, exit 2."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from helpers import assert_bad_input, invoke

torch = pytest.importorskip("torch")
pytest.importorskip("executorch")
pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_quantizer")

MLP = textwrap.dedent("""
    import torch
    from torch import nn


    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, 128)
            self.fc2 = nn.Linear(128, 128)
            self.head = nn.Linear(128, 10)

        def forward(self, x):
            return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


    def build():
        torch.manual_seed(0)
        return MLP().eval(), (torch.randn(1, 64),)
""")
TARGETS = ("executorch-xnnpack", "onnx-cpu", "tflite-xnnpack")
RECIPES = ("fp32", "int8-dynamic", "int8-w", "int4-w-g32")
WEIGHTS = 64 * 128 + 128 * 128 + 128 * 10  # Linear weights of the MLP (25,856)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("schemes-in")
    (root / "mlp.py").write_text(MLP)
    rng = np.random.default_rng(0)
    np.savez(root / "eval.npz", x=rng.standard_normal((32, 64)).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def mlp(work):
    from edgeq.models import load_model

    return load_model(f"{work / 'mlp.py'}:build")


@pytest.fixture(scope="module")
def built(mlp, tmp_path_factory) -> dict:
    """(target, recipe) -> manifest of every cell, exported with no calibration data."""
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    out = tmp_path_factory.mktemp("schemes-built")
    return {(t, r): export(mlp, get_target(t), load_recipe(r), None, None,
                           ExportOptions(out / f"{t}-{r}"))
            for t in TARGETS for r in RECIPES}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("recipe,min_cosine,max_ratio", [
    ("int8-dynamic", 0.99, 0.34), ("int8-w", 0.99, 0.34), ("int4-w-g32", 0.95, 0.21)])
def test_scheme_builds_runs_and_shrinks(built, mlp, work, target, recipe, min_cosine,
                                        max_ratio):
    from edgeq.data import load_dataset
    from edgeq.stages import evaluate

    m = built[(target, recipe)]
    q = m["delegation"]["quantization"]
    assert q["scheme"] == ("dynamic" if recipe == "int8-dynamic" else "weight-only")
    assert q["layers"] == ["fc1", "fc2", "head"] and q["weights_quantized"] == WEIGHTS
    assert q["weight_bits"] == (4 if recipe.startswith("int4") else 8)
    assert q["group_size"] == (32 if recipe.startswith("int4") else None)
    assert q["executed_as"] and q["activations"]
    assert "calibration" not in m  # no data asked for, none used
    assert m["delegation"]["delegated_share"] == 1.0
    # Size: int8 weights are 1/4 of fp32, int4 1/8, plus scales and the format's overhead.
    fp32 = built[(target, "fp32")]["artifact"]["size_bytes"]
    size = m["artifact"]["size_bytes"]
    assert fp32 > 4 * WEIGHTS
    assert size < max_ratio * fp32, (size, fp32)
    if recipe == "int4-w-g32":
        assert size < 0.7 * built[(target, "int8-w")]["artifact"]["size_bytes"]
    ds = load_dataset(str(work / "eval.npz"), mlp.input_names)
    block = evaluate(m["artifact"]["path"], ds, reference=mlp, metric="cosine")
    assert block["samples"] == 32 and block["value"] > min_cosine, block
    assert block["value"] < 1.0  # it really is quantized


def test_what_each_runtime_runs(built):
    """The manifest names the kernel honestly where the runtime has no float-activation
    int4 path (XNNPACK in ExecuTorch, ai-edge-quantizer's blockwise)."""
    q = {t: built[(t, "int4-w-g32")]["delegation"]["quantization"] for t in TARGETS}
    assert "qd8-f32-qb4w" in q["executorch-xnnpack"]["executed_as"]
    assert q["executorch-xnnpack"]["activations"].startswith("int8")
    assert q["onnx-cpu"]["executed_as"].startswith("MatMulNBits (bits=4, block_size=32")
    assert q["onnx-cpu"]["activations"] == "float"
    assert q["tflite-xnnpack"]["activations"].startswith("int8")
    assert built[("tflite-xnnpack", "int8-w")]["delegation"]["quantization"][
        "activations"] == "float"


def test_profile_int4_artifact(built):
    from edgeq.stages import profile_local

    m = built[("onnx-cpu", "int4-w-g32")]
    p = profile_local(m["artifact"]["path"], [np.zeros((1, 64), np.float32)], runs=5,
                      warmup=1, threads=1)
    assert p["latency_ms"]["runs"] == 5 and p["latency_ms"]["p50"] > 0


@pytest.mark.parametrize("target", TARGETS)
def test_group_size_not_dividing_names_the_layer(work, tmp_path, target):
    out = tmp_path / "out"
    r = invoke(["export", f"{work / 'mlp.py'}:build", "-t", target, "-r", "int4-w-g128",
                "-o", out])
    assert_bad_input(r, "group size 128 does not divide in_features 64 of layer 'fc1'",
                     out_dir=out)


@pytest.mark.parametrize("target,recipe,needle", [
    ("onnx-nnapi", "int4-w-g32", "int4 weight-only is not available for onnx-nnapi: NNAPI "
                                 "has no 4-bit ops; use onnx-cpu or --recipe int8"),
    ("tflite-nnapi", "int4-w-g64", "int4 weight-only is not available for tflite-nnapi: "
                                   "NNAPI has no 4-bit ops"),
    ("executorch-vulkan", "int8-dynamic", "int8-dynamic is not available for "
                                          "executorch-vulkan"),
])
def test_scheme_a_target_cannot_run(work, tmp_path, target, recipe, needle):
    out = tmp_path / "out"
    r = invoke(["export", f"{work / 'mlp.py'}:build", "-t", target, "-r", recipe, "-o", out])
    assert_bad_input(r, needle, out_dir=out)


def test_qat_with_a_dynamic_recipe(work, tmp_path):
    out = tmp_path / "out"
    r = invoke(["export", f"{work / 'mlp.py'}:build", "-t", "executorch-xnnpack", "-r",
                "int8-dynamic", "--qat-data", work / "eval.npz", "-o", out])
    assert_bad_input(r, "needs no training: drop --qat-data", out_dir=out)


@pytest.mark.parametrize("target,body,needle", [
    ("executorch-xnnpack", "base: int8-w\nweight_granularity: per-group\ngroup_size: 64\n",
     "int8 per-group weights are not available for executorch-xnnpack: XNNPACK groups "
     "4-bit weights only"),
    ("tflite-xnnpack", "base: int8-w\nweight_granularity: per-group\ngroup_size: 64\n",
     "int8 per-group weights are not available for tflite-xnnpack"),
    ("executorch-xnnpack", "base: int8-dynamic\nweight_granularity: per-tensor\n",
     "per-tensor dynamic weights are not available for executorch-xnnpack"),
])
def test_scheme_variant_a_runtime_lacks(work, tmp_path, target, body, needle):
    (tmp_path / "r.yaml").write_text(body)
    out = tmp_path / "out"
    r = invoke(["export", f"{work / 'mlp.py'}:build", "-t", target, "-r", tmp_path / "r.yaml",
                "-o", out])
    assert_bad_input(r, needle, out_dir=out)


def test_onnx_int8_per_group_is_matmul_nbits(work, mlp, tmp_path):
    """ONNX Runtime alone runs int8 per-group weights (MatMulNBits bits=8), via the CLI
    with no --calib."""
    (tmp_path / "w8g64.yaml").write_text("base: int8-w\nweight_granularity: per-group\n"
                                         "group_size: 64\n")
    out = tmp_path / "out"
    r = invoke(["export", f"{work / 'mlp.py'}:build", "-t", "onnx-cpu", "-r",
                tmp_path / "w8g64.yaml", "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    res = r.json()["results"][0]
    q = res["delegation"]["quantization"]
    assert q["executed_as"].startswith("MatMulNBits (bits=8, block_size=64")
    assert res["artifact"]["size_bytes"] < 0.35 * 4 * WEIGHTS
    r = invoke(["eval", res["artifact"]["path"], "--data", work / "eval.npz", "--reference",
                f"{work / 'mlp.py'}:build", "--metric", "cosine", "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["metric"] == "cosine" and r.json()["value"] > 0.999
