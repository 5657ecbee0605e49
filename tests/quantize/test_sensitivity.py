"""Per-layer sensitivity by PT2E fake quantization: quantization points are found per layer,
the ranking puts the layers that really hurt first, and the numbers are consistent."""
from __future__ import annotations

import textwrap

import pytest

torch = pytest.importorskip("torch")

from helpers import TINY_MODEL, make_data  # noqa: E402

from edgeq.data import Dataset  # noqa: E402
from edgeq.models import load_model  # noqa: E402
from edgeq.progress import QUIET  # noqa: E402
from edgeq.quantize.sensitivity import analyze  # noqa: E402
from edgeq.recipes import PRESETS  # noqa: E402
from edgeq.targets import get_target  # noqa: E402

# fc1 writes 8 huge features (bias 3000) that fc2 ignores: one per-tensor int8 scale for
# fc1's output crushes the 24 small features fc2 reads. Only keeping BOTH fc1 and fc2 in
# float removes that edge's quantization (a float layer's neighbour still quantizes it).
OUTLIER_MODEL = textwrap.dedent("""
    import torch
    from torch import nn


    class Outlier(nn.Module):
        def __init__(self, add=False):
            super().__init__()
            torch.manual_seed(0)
            self.fc0 = nn.Linear(16, 32)
            self.fc1 = nn.Linear(32, 32)
            self.fc2 = nn.Linear(32, 10)
            self.add = add
            with torch.no_grad():
                self.fc1.weight[24:] *= 0
                self.fc1.bias[24:] = 3000.0
                self.fc2.weight[:, 24:] = 0
                self.fc2.weight[:] *= 4

        def forward(self, x):
            h = self.fc1(torch.relu(self.fc0(x)))
            if self.add:  # an op in no layer: its int8 output cannot be kept in float
                h = h + h
            return self.fc2(h)


    def build():
        return Outlier().eval(), (torch.randn(1, 16),)


    def build_add():
        return Outlier(add=True).eval(), (torch.randn(1, 16),)
""")


def outlier_data(seed: int, n: int = 64) -> dict:
    import numpy as np

    return {"x": np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)}


def _ds(d: dict, labels: bool = True) -> Dataset:
    return Dataset({"x": d["x"]}, d.get("y") if labels else None, "test")


def test_tiny_ranked_and_consistent(tmp_path):
    (tmp_path / "m.py").write_text(TINY_MODEL)
    model = load_model(f"{tmp_path / 'm.py'}:build", None, False)
    block = analyze(model, get_target("executorch-xnnpack"), PRESETS["int8"],
                    _ds(make_data(seed=0)), _ds(make_data(seed=2)), QUIET)
    assert block["metric"] == "top1" and block["target"] == "executorch-xnnpack"
    assert block["simulated_with"] == "executorch-xnnpack" and block["samples"] == 64
    rows = block["layers"]
    assert sorted(r["name"] for r in rows) == ["conv1", "conv2", "fc"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1
    full = block["all_int8"]["sqnr_db"]
    assert 15 < full < 60
    for r in rows:
        assert set(r) >= {"name", "sqnr_db", "metric_drop", "float_recovery_db",
                          "float_recovery_points", "op", "params", "score", "rank"}
        # One layer alone adds less noise than all of them together.
        assert r["sqnr_db"] > full
        assert r["float_recovery_db"] > -1.0
    assert {r["name"]: r["params"] for r in rows} == {"conv1": 40, "conv2": 296, "fc": 1290}
    assert {r["name"]: r["op"] for r in rows}["fc"] == "Linear"


def test_outlier_edge_ranked_first(tmp_path):
    (tmp_path / "o.py").write_text(OUTLIER_MODEL)
    model = load_model(f"{tmp_path / 'o.py'}:build", None, False)
    # onnx-cpu quantizes its own format: simulated with a PT2E quantizer as a proxy.
    block = analyze(model, get_target("onnx-cpu"), PRESETS["int8"],
                    _ds(outlier_data(0), False), _ds(outlier_data(1), False), QUIET)
    assert block["metric"] == "agreement" and block["simulated_with"] != "onnx-cpu"
    rows = {r["name"]: r for r in block["layers"]}
    assert [r["name"] for r in block["layers"]][2] == "fc0"
    assert block["all_int8"]["sqnr_db"] < 3 and block["all_int8"]["metric_drop"] > 50
    for name in ("fc1", "fc2"):  # alone, each quantizes the crushed edge
        assert rows[name]["sqnr_db"] < 3 and rows[name]["metric_drop"] > 50
        assert rows[name]["score"] > 0.9
        # Alone in float, each leaves the edge quantized by its neighbour: no recovery.
        assert abs(rows[name]["float_recovery_db"]) < 1
    assert rows["fc0"]["sqnr_db"] > 20 and rows["fc0"]["score"] < 0.1


def test_base_keep_float_is_excluded(tmp_path):
    (tmp_path / "m.py").write_text(TINY_MODEL)
    model = load_model(f"{tmp_path / 'm.py'}:build", None, False)
    block = analyze(model, get_target("tflite-xnnpack"),
                    PRESETS["int8"].with_(keep_float=("conv*",)),
                    _ds(make_data(seed=0)), _ds(make_data(seed=2, n=32)), QUIET)
    assert [r["name"] for r in block["layers"]] == ["fc"]
    assert block["simulated_with"] == "tflite-xnnpack" and block["samples"] == 32


def test_fp32_recipe_refused(tmp_path):
    from edgeq.errors import BadInput

    (tmp_path / "m.py").write_text(TINY_MODEL)
    model = load_model(f"{tmp_path / 'm.py'}:build", None, False)
    with pytest.raises(BadInput, match="quantizes nothing"):
        analyze(model, get_target("executorch-xnnpack"), PRESETS["fp32"],
                _ds(make_data()), _ds(make_data()), QUIET)


def test_fake_quant_matches_torch():
    """The simulator's in-place fake quantization is torch's, bit for bit."""
    import torch

    from edgeq.quantize.sensitivity import _fake_quant_class

    class Obs:
        quant_min, quant_max = -128, 127

        def calculate_qparams(self):
            return torch.tensor([0.0371]), torch.tensor([-5])

    fq = _fake_quant_class()(Obs())
    x = torch.randn(4, 8, 16, 16) * 4
    want = torch.fake_quantize_per_tensor_affine(x, 0.0371, -5, -128, 127)
    assert torch.equal(fq(x), want)
    assert torch.equal(fq(x.contiguous(memory_format=torch.channels_last)), want)


def test_dynamic_input_fake_quant_is_per_row():
    """A dynamic observer (recipe dynamic_ops, int8-dynamic) has no calibrated range: the
    simulator quantizes each row (token) over its own min / max, as XNNPACK's dynamic
    linear does at run time."""
    import torch

    from edgeq.quantize.sensitivity import _fake_quant_class

    class Obs:
        quant_min, quant_max, is_dynamic = -128, 127, True

        def calculate_qparams(self):
            raise AssertionError("a dynamic observer has no calibrated qparams")

    fq = _fake_quant_class()(Obs())
    x = torch.randn(3, 5, 7) * torch.tensor([1.0, 10.0, 100.0]).reshape(3, 1, 1)
    y = fq(x)
    for i in range(3):
        for r in range(5):
            lo, hi = min(float(x[i, r].min()), 0.0), max(float(x[i, r].max()), 0.0)
            scale = (hi - lo) / 255
            zp = -128 - round(lo / scale)
            want = torch.fake_quantize_per_tensor_affine(x[i, r], scale, zp, -128, 127)
            assert torch.allclose(y[i, r], want, atol=1e-5 * scale), (i, r)


def test_sensitivity_runs_with_dynamic_ffn_down():
    """ExecuTorch's int8 runs a transformer's FFN down projections as dynamic int8
    (``dynamic_ops: auto``): the simulation handles their dynamic inputs and ranks every
    Linear."""
    from helpers import tiny_tokens
    from edgeq.models import LoadedModel
    from edgeq.zoo import minilm

    torch.manual_seed(0)
    m = minilm.build(vocab=100, hidden=32, layers=2, heads=4, inner=64, positions=16).eval()
    ids, mask = tiny_tokens(1, 0, 16)
    model = LoadedModel("tiny", m, (ids, mask), ["input_ids", "attention_mask"], "0", 1)

    def ds(n, seed):
        i, k = tiny_tokens(n, seed, 16)
        return Dataset({"input_ids": i.numpy(), "attention_mask": k.numpy()})

    import edgeq.quantize.sensitivity as sens

    made = []
    real = sens._fake_quant_class

    def spy():
        cls = real()

        class Spy(cls):
            def __init__(self, obs):
                super().__init__(obs)
                made.append(self)
        return Spy

    sens._fake_quant_class = spy
    try:
        out = analyze(model, get_target("executorch-xnnpack"), PRESETS["int8"], ds(16, 1),
                      ds(8, 2), QUIET, metric="cosine")
    finally:
        sens._fake_quant_class = real
    names = {r["name"] for r in out["layers"]}
    assert "encoder.layer.0.output.dense" in names and len(names) == 12, names
    assert sum(f.dynamic for f in made) == 2, "one dynamic input per FFN down projection"
