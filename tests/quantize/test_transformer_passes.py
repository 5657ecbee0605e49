"""Transformer passes on a tiny encoder (edgeq.zoo.minilm's module, 2 layers, hidden 32):
SmoothQuant keeps the float function and tames activation outliers, GPTQ and AWQ beat
round-to-nearest at the same group size, their weights round-trip exactly through the
targets' own quantize functions, and the attention-aware float ops are found in PT2E and
ONNX graphs."""
from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import tiny_tokens  # noqa: E402
from edgeq.data import Dataset  # noqa: E402
from edgeq.errors import BadInput  # noqa: E402
from edgeq.models import LoadedModel  # noqa: E402
from edgeq.quantize import awq, float_ops, gptq, passes, smoothquant  # noqa: E402
from edgeq.runtimes.onnx import float_ops as onnx_float_ops  # noqa: E402
from edgeq.recipes import PRESETS, from_dict  # noqa: E402
from edgeq.zoo import minilm  # noqa: E402

SEQ = 16


def tiny(outliers: bool = True):
    """A 2-layer encoder with BERT-like outlier channels in its LayerNorm outputs."""
    torch.manual_seed(0)
    m = minilm.build(vocab=100, hidden=32, layers=2, heads=4, inner=64, positions=SEQ).eval()
    if outliers:
        with torch.no_grad():
            m.embeddings.LayerNorm.weight[3] = 25.0
            for layer in m.encoder.layer:
                layer.attention.output.LayerNorm.weight[7] = 15.0
                layer.output.LayerNorm.weight[11] = 20.0
    return m


def tokens(n: int = 64, seed: int = 0):
    return tiny_tokens(n, seed, SEQ)


def batches(ids, mask, size: int = 16):
    return [[ids[s:s + size], mask[s:s + size]] for s in range(0, len(ids), size)]


def cosine(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b).mean())


def w8a8(module, ids, mask):
    """The model's output with every Linear's weight per-channel int8 and its input
    per-tensor int8 (min/max over this very batch): a simulation of static int8."""
    from torch import nn

    m = copy.deepcopy(module)
    grid = gptq.Grid.restricted(8)

    def fq(mod, args):
        x = args[0]
        lo, hi = float(x.min()), float(x.max())
        s = max(hi - lo, 1e-8) / 255
        zp = round(-128 - lo / s)
        return (torch.clamp(torch.round(x / s) + zp, -128, 127) - zp) * s,

    for lin in [x for x in m.modules() if isinstance(x, nn.Linear)]:
        with torch.no_grad():
            lin.weight.copy_(gptq.representable(lin.weight, gptq.rtn(lin.weight, grid), grid))
        lin.register_forward_pre_hook(fq)
    with torch.no_grad():
        return m(ids, mask)


# -- SmoothQuant ---------------------------------------------------------------------------

def test_smoothquant_keeps_function_and_balances_outliers():
    m = tiny()
    ids, mask = tokens()
    with torch.no_grad():
        ref = m(ids, mask)
    sm = copy.deepcopy(m)
    facts = smoothquant.smooth(sm, batches(ids, mask), alpha=0.5)
    with torch.no_grad():
        out = sm(ids, mask)
    assert float((out - ref).abs().max()) < 1e-5
    assert facts["layers"] == 12  # q, k, v, out, up, down in each of 2 layers
    assert facts["outlier_ratio_before"] > 10 and \
        facts["outlier_ratio_after"] < facts["outlier_ratio_before"] / 3
    _, Smoothed = smoothquant.classes()
    assert isinstance(sm.encoder.layer[0].attention.self.query, Smoothed)
    # Per-tensor int8 activations lose less once the outliers moved into the weights.
    assert cosine(w8a8(sm, ids, mask), ref) > cosine(w8a8(m, ids, mask), ref)


def test_smoothquant_scales():
    x = torch.tensor([1.0, 100.0, 0.0])
    w = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.25, 2.0]])
    s = smoothquant.smooth_scales(x, w, 0.5)
    torch.testing.assert_close(s, torch.tensor([0.5, 10.0, 1.0]))  # sqrt(x / max|w|)


# -- GPTQ and AWQ vs round-to-nearest ------------------------------------------------------

def layer_inputs(n=512, d=128, seed=0):
    """Correlated inputs with a few large channels, as a transformer's are."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g) @ torch.randn(16, d, generator=g)
    x += 0.3 * torch.randn(n, d, generator=g)
    x[:, :4] *= 8
    return x


@pytest.mark.parametrize("grid", [gptq.Grid.full(4, 32), gptq.Grid.restricted(8)])
def test_gptq_and_awq_beat_round_to_nearest(grid):
    x = layer_inputs()
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1)) * 0.1
    ref = x @ w.T

    def err(wq):
        return float(((x @ wq.T - ref) ** 2).mean())

    _, scale, _ = gptq.pin(w, grid)
    e_rtn = err(gptq.rtn(w, grid) * scale)
    q = gptq.quantize_weight(w, 2 * x.T.double() @ x.double() / len(x), grid)
    e_gptq = err(gptq.representable(w, q, grid))
    s, a, e_awq, e_base = awq.search_scale(x, w, grid)
    assert e_base == pytest.approx(e_rtn, rel=1e-4)  # a = 0 is plain rounding
    assert e_gptq < 0.7 * e_rtn
    assert a > 0 and e_awq < 0.9 * e_rtn


def test_gptq_and_awq_on_the_model_beat_rtn_int4():
    m = tiny()
    ids, mask = tokens()
    calib = batches(*tokens(32, seed=1))
    with torch.no_grad():
        ref = m(ids, mask)
    grid = gptq.Grid.full(4, 32)
    rtn = copy.deepcopy(m)
    with torch.no_grad():
        for n in smoothquant.linear_layers(rtn):
            lin = rtn.get_submodule(n)
            lin.weight.copy_(gptq.representable(lin.weight, gptq.rtn(lin.weight, grid), grid))
    by_gptq, by_awq = copy.deepcopy(m), copy.deepcopy(m)
    f = gptq.gptq(by_gptq, calib, smoothquant.linear_layers(by_gptq), grid)
    a = awq.awq(by_awq, calib, smoothquant.linear_layers(by_awq), grid)
    assert f["layers"] == a["layers"] == 12
    with torch.no_grad():
        c_rtn = cosine(rtn(ids, mask), ref)
        c_gptq, c_awq = cosine(by_gptq(ids, mask), ref), cosine(by_awq(ids, mask), ref)
    assert c_gptq > c_rtn + 0.01 and c_awq > c_rtn + 0.01


# -- exact round trip through the targets' own quantize functions --------------------------

@pytest.mark.parametrize("grid", [gptq.Grid.full(4, 32), gptq.Grid.full(4, 128),
                                  gptq.Grid.full(8, 64), gptq.Grid.full(8)])
def test_round_trip_torchao_groupwise(grid):
    from torchao.quantization.quant_primitives import (MappingType, choose_qparams_affine,
                                                       quantize_affine)

    x = layer_inputs()
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(2)) * torch.rand(48, 1)
    q = gptq.quantize_weight(w, x.T @ x / len(x), grid)
    assert not torch.equal(q, gptq.rtn(w, grid))  # GPTQ chose other integers than RTN
    wo = gptq.representable(w, q, grid)
    block = (1, grid.group or w.shape[1])
    scale, zp = choose_qparams_affine(wo, MappingType.SYMMETRIC, block, torch.int8,
                                      grid.qmin, grid.qmax, eps=1e-30,
                                      scale_dtype=torch.float32, zero_point_dtype=torch.int8)
    _, expected_scale, _ = gptq.pin(w, grid)
    assert torch.equal(scale.reshape(-1), expected_scale[:, ::block[1]].reshape(-1))
    got = quantize_affine(wo, block, scale, zp, torch.int8, grid.qmin, grid.qmax)
    assert torch.equal(got.float(), q)


def test_round_trip_int8_per_channel_pt2e_and_onnxruntime():
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data
    from torchao.quantization.pt2e import PerChannelMinMaxObserver

    from edgeq.quantize.dfq import SCALE_FLOOR

    grid = gptq.Grid.restricted(8)
    x = layer_inputs()
    w = torch.randn(32, 128, generator=torch.Generator().manual_seed(3))
    s, *_ = awq.search_scale(x, w, grid)
    chosen = {"gptq": (w, gptq.quantize_weight(w, x.T @ x, grid)),
              "awq": (w * s, gptq.rtn(w * s, grid))}
    for base, q in chosen.values():
        wo = gptq.representable(base, q, grid)
        obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.int8, quant_min=-127,
                                       quant_max=127, qscheme=torch.per_channel_symmetric,
                                       eps=SCALE_FLOOR)  # ExecuTorch's and LiteRT's
        obs(wo)
        scale, _ = obs.calculate_qparams()
        assert torch.equal(torch.clamp(torch.round(wo / scale[:, None]), -127, 127), q)
        for row, qrow in zip(wo.numpy(), q.numpy()):  # ONNX Runtime's symmetric int8
            assert np.array_equal(quantize_data(row, TensorProto.INT8, True)[-1], qrow)


# -- through the recipe and passes.apply ---------------------------------------------------

def loaded(m):
    ids, mask = tokens(1)
    return LoadedModel("tiny", m, (ids, mask), ["input_ids", "attention_mask"], "0", 1)


def calib_set():
    ids, mask = tokens(64, seed=1)
    return Dataset({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})


def test_passes_apply_runs_the_recipe():
    m = tiny()
    ids, mask = tokens()
    with torch.no_grad():
        ref = m(ids, mask)
    recipe = from_dict({"smoothquant": 0.5, "weight_rounding": "gptq"}, "t")
    assert passes.active(recipe)
    out, facts = passes.apply(recipe, loaded(m), calib_set())
    assert facts["smoothquant"]["layers"] == 12 and facts["weights"]["algorithm"] == "gptq"
    assert facts["weights"]["bits"] == 8 and facts["samples"] == 32
    lin = out.module.encoder.layer[1].output.dense.linear
    grid = gptq.Grid.restricted(8)
    assert torch.equal(gptq.representable(lin.weight, gptq.rtn(lin.weight, grid), grid),
                       lin.weight)  # on the int8 grid already
    with torch.no_grad():
        assert cosine(out.module(ids, mask), ref) > 0.999
    assert m.encoder.layer[0].attention.self.query.__class__.__name__ == "Linear"  # a copy


def test_passes_apply_int4_weight_only_awq():
    recipe = from_dict({"base": "int4-w-g32", "weight_rounding": "awq"}, "t")
    assert gptq.grid_of(recipe) == gptq.Grid.full(4, 32)
    out, facts = passes.apply(recipe, loaded(tiny()), calib_set())
    assert facts["weights"]["algorithm"] == "awq" and facts["weights"]["group"] == 32
    assert facts["weights"]["mean_error_ratio_rtn_over_awq"] > 1.0


def test_recipe_fields_are_checked():
    assert PRESETS["int8"].float_ops == "auto" and PRESETS["int8"].smoothquant is None
    r = from_dict({"float_ops": ["softmax", "mask_add"], "smoothquant": 0.8}, "t")
    assert r.float_ops == ("softmax", "mask_add") and r.to_dict()["float_ops"] == \
        ["softmax", "mask_add"]
    assert from_dict({"float_ops": []}, "t").float_ops == ()
    with pytest.raises(BadInput, match="float_ops"):
        from_dict({"float_ops": ["softmax", "gelu"]}, "t")
    with pytest.raises(BadInput, match="smoothquant"):
        from_dict({"smoothquant": 1.5}, "t")
    with pytest.raises(BadInput, match="calibration data"):
        passes.apply(from_dict({"smoothquant": 0.5}, "t"), loaded(tiny()), None)


# -- attention-aware float ops -------------------------------------------------------------

def exported_graph(m):
    ids, mask = tokens(2)
    return torch.export.export(m, (ids, mask)).module().graph


def test_pt2e_float_ops_found():
    graph = exported_graph(tiny(outliers=False))
    kinds = float_ops._targets()

    def kept(value):
        keep = float_ops.pt2e_filter(value)
        nodes = [n for n in graph.nodes if keep(n)]
        return (sum(n.target in kinds["softmax"] for n in nodes),
                sum(n.target in kinds["layer_norm"] for n in nodes),
                sum(n.target in kinds["add"] and any(u.target in kinds["softmax"]
                                                     for u in n.users) for n in nodes))

    assert kept("auto") == (2, 5, 2)  # 2 layers: softmax, mask add; 1 + 2 x 2 layer norms
    keep = float_ops.pt2e_filter("auto")
    residual = [n for n in graph.nodes if keep(n) and n.target in kinds["add"] and
                all(u.target in kinds["layer_norm"] for u in n.users)]
    assert len(residual) == 5  # each layer norm's input add (embeddings: word + position)
    down = [n for n in graph.nodes if keep(n) and n.target in kinds["linear"]]
    assert len(down) == 2 and all(n.args[0].target in kinds["gelu"] for n in down)
    assert kept(("mask_add",)) == (0, 0, 2)
    assert kept(()) == (0, 0, 0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    g = torch.export.export(mlp, (torch.randn(2, 4),)).module().graph
    keep = float_ops.pt2e_filter("auto")  # no attention: nothing kept float
    assert not any(keep(n) for n in g.nodes)


def test_pt2e_smooth_scales_stay_float():
    m = tiny(outliers=False)
    ids, mask = tokens()
    smoothquant.smooth(m, batches(ids, mask), 0.5)
    graph = exported_graph(m)
    keep = float_ops.pt2e_filter(())
    muls = [n for n in graph.nodes if keep(n)]
    assert len(muls) == 12 and all("mul" in str(n.target) for n in muls)
    keep = float_ops.pt2e_filter("auto")  # the FFN down projection is still found
    linear = float_ops._targets()["linear"]
    assert sum(1 for n in graph.nodes if keep(n) and n.target in linear) == 2


def test_onnx_float_ops_found():
    from onnx import TensorProto, helper

    f = TensorProto.FLOAT
    nodes = [helper.make_node("MatMul", ["q", "k"], ["s"], name="scores"),
             helper.make_node("Add", ["s", "mask"], ["sm"], name="mask_add"),
             helper.make_node("Softmax", ["sm"], ["p"], name="softmax", axis=-1),
             helper.make_node("Add", ["p", "r"], ["h"], name="residual"),
             helper.make_node("LayerNormalization", ["h", "g", "b"], ["y"], name="ln")]
    smooth = helper.make_node("Mul", ["y", "inv"], ["z"], name="node_mul_7")
    smooth.metadata_props.add(key="pkg.torch.onnx.name_scopes",
                              value="['', 'encoder.layer.0.output.dense', "
                                    "'encoder.layer.0.output.dense.smooth', 'mul']")
    nodes.append(smooth)
    nodes += [helper.make_node("Erf", ["z"], ["e"], name="erf"),
              helper.make_node("Add", ["e", "one"], ["e1"], name="erf_plus_one"),
              helper.make_node("Mul", ["z", "e1"], ["gelu"], name="gelu"),
              helper.make_node("MatMul", ["gelu", "w"], ["d"], name="down"),
              helper.make_node("Add", ["d", "bias"], ["o"], name="down_bias"),
              helper.make_node("MatMul", ["o", "w"], ["o2"], name="other")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, f, [1, 4])
                                           for n in ("q", "k", "mask", "r", "g", "b", "inv")],
                              [helper.make_tensor_value_info("o2", f, [1, 4])],
                              [helper.make_tensor(n, f, [4] if n != "w" else [4, 4],
                                                  [0.5] * (16 if n == "w" else 4))
                               for n in ("one", "bias", "w")])
    model = helper.make_model(graph)
    assert onnx_float_ops.onnx_nodes(model, "auto") == [
        "scores", "mask_add", "softmax", "residual", "ln", "node_mul_7", "gelu", "down",
        "down_bias"]  # "scores": qk_matmul, a MatMul of two activations feeding the softmax
    assert onnx_float_ops.onnx_nodes(model, ("qk_matmul",)) == ["scores", "node_mul_7"]
    assert onnx_float_ops.onnx_nodes(model, ("softmax",)) == ["softmax", "node_mul_7"]
    assert onnx_float_ops.onnx_nodes(model, ()) == ["node_mul_7"]


def test_executorch_quantizer_keeps_mask_add_float():
    """Static int8 of the tiny encoder through ExecuTorch's XNNPACKQuantizer (converted
    PT2E graph run in PyTorch): with the mask add quantized, padding's -1e4 sets the step
    of the scores; kept float, the outputs stay close to fp32."""
    pytest.importorskip("executorch")
    from edgeq.progress import QUIET
    from edgeq.quantize import pt2e
    from edgeq.runtimes.executorch import ExecuTorchRuntime

    m = tiny(outliers=False)
    with torch.no_grad():  # peaked attention, as a trained model's: scores span ~+-10
        for layer in m.encoder.layer:
            layer.attention.self.query.weight.mul_(6.0)
    ids, mask = tokens(32)
    with torch.no_grad():
        ref = m(ids, mask)
    calib = calib_set().subset(range(16))
    got = {}
    for value in ((), "auto"):
        recipe = from_dict({"float_ops": list(value) if value != "auto" else value,
                            "activation_observer": "minmax"}, "t")
        q = ExecuTorchRuntime().quantizer(recipe, False, [])
        qm = pt2e.ptq(loaded(m), q, calib, QUIET)
        with torch.no_grad():
            got[value] = cosine(qm(ids, mask), ref)
    assert got[()] < 0.995 and got["auto"] > 0.9995  # measured: 0.988 and 0.99997
    assert 1 - got["auto"] < (1 - got[()]) / 20
