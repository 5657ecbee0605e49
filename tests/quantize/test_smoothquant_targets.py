"""SmoothQuant's per-Linear guard (``edgeq.quantize.smoothquant.choose_alpha``): the recipe's
alpha is kept where it does not raise a Linear's simulated int8 error (beyond ``MARGIN``),
a stronger alpha or none is used where it does. On
MiniLM-L6, alpha 0.5 on the FFN down projection made ONNX Runtime's int8 (which quantizes
that Linear's input) worse than no SmoothQuant at all; here a tiny encoder whose FFN down
projection has the same trouble is built for ``onnx-cpu`` with and without the guard."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from helpers import tiny_tokens  # noqa: E402
from edgeq.data import Dataset  # noqa: E402
from edgeq.models import LoadedModel  # noqa: E402
from edgeq.quantize import smoothquant  # noqa: E402
from edgeq.recipes import from_dict  # noqa: E402
from edgeq.stages import ExportOptions, evaluate, export  # noqa: E402
from edgeq.targets import get_target  # noqa: E402
from edgeq.zoo import minilm  # noqa: E402

SEQ = 16
DOWN0 = "encoder.layer.0.output.dense"  # the FFN down projection of the first layer


def tiny(hard_down: bool = True):
    """The 2-layer encoder of the float_ops tests (peaked attention); ``hard_down``: one
    GELU channel always on (~10) and its down-projection column 10x, so that alpha 0.5
    on the FFN down projection raises its int8 error (as on MiniLM-L6)."""
    torch.manual_seed(0)
    m = minilm.build(vocab=100, hidden=32, layers=2, heads=4, inner=64, positions=SEQ).eval()
    with torch.no_grad():
        for layer in m.encoder.layer:
            layer.attention.self.query.weight.mul_(6.0)
            if hard_down:
                layer.intermediate.dense.bias[5] = 10.0
                layer.output.dense.weight[:, 5] *= 10.0
    return m


def batches(n: int = 64, seed: int = 0):
    ids, mask = tiny_tokens(n, seed, SEQ)
    return [[ids[s:s + 16], mask[s:s + 16]] for s in range(0, n, 16)]


def test_choose_alpha():
    choose = smoothquant.choose_alpha
    assert choose({None: 1.0, 0.5: 0.4, 0.75: 0.1, 1.0: 0.2}, 0.5) == 0.5  # recipe's helps
    assert smoothquant.STRONGER == (0.75, 1.0) and smoothquant.MARGIN == 1.25
    # within the margin the recipe's alpha stands (the simulation is a stand-in)
    assert choose({None: 1.0, 0.5: 1.2, 0.75: 0.1}, 0.5) == 0.5
    assert choose({None: 1.0, 0.5: 1.5, 0.75: 0.6, 1.0: 0.3}, 0.5) == 1.0  # stronger
    assert choose({None: 1.0, 0.5: 1.5, 0.75: 1.1, 1.0: 1.5}, 0.5) is None  # leave it
    assert choose({None: 1.0, 1.0: 1.5}, 1.0) is None  # nothing stronger to try


def test_int8_errors_is_the_simulated_static_int8_error():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    module = torch.nn.Sequential(lin)
    x = torch.randn(64, 8) * torch.tensor([1.0] * 7 + [20.0])  # one outlier channel
    ranges = smoothquant.input_minmax(module, ["0"], [[x]])
    torch.testing.assert_close(ranges["0"][0], x.amin(0))
    torch.testing.assert_close(ranges["0"][1], x.amax(0))
    s = smoothquant.smooth_scales(x.abs().amax(0), lin.weight, 0.5)
    errs = smoothquant.int8_errors(module, {"0": {None: torch.ones(8), 0.5: s}}, ranges,
                                   [[x]])["0"]
    # The same simulation written out: uint8 affine input over its min / max, per-row
    # symmetric int8 weights, error against the float product (bias cancels).
    for key, sc in ((None, torch.ones(8)), (0.5, s)):
        xs, w = x / sc, lin.weight.detach() * sc
        lo, hi = min(float(xs.min()), 0.0), max(float(xs.max()), 0.0)
        step = (hi - lo) / 255
        zp = round(-lo / step)
        xq = (torch.clamp(torch.round(xs / step) + zp, 0, 255) - zp) * step
        wstep = w.abs().amax(1, keepdim=True) / 127
        wq = torch.round(w / wstep) * wstep
        want = float((xq @ wq.T - x @ lin.weight.detach().T).pow(2).sum())
        assert errs[key] == pytest.approx(want, rel=1e-4)
    assert errs[0.5] < errs[None] / 3  # the outlier channel moved into the weight


def test_guard_keeps_each_linear_int8_error_within_the_margin(monkeypatch):
    # On this tiny encoder alpha 0.5 raises DOWN0's simulated error 1.1x (MiniLM-L6's FFN
    # down projections: 1.9-3.8x): a strict margin makes the guard act on it.
    monkeypatch.setattr(smoothquant, "MARGIN", 1.0)
    m = tiny()
    cal = batches()
    seen = {}
    choose = smoothquant.choose_alpha

    def spy(errors, alpha):
        seen[len(seen)] = (errors, choose(errors, alpha))
        return seen[len(seen) - 1][1]

    monkeypatch.setattr(smoothquant, "choose_alpha", spy)
    sm = copy.deepcopy(m)
    facts = smoothquant.smooth(sm, cal, 0.5)
    names = smoothquant.linear_layers(m)
    assert len(seen) == len(names) == 12
    for errors, chosen in seen.values():
        assert errors[chosen] <= smoothquant.MARGIN * errors[None]
    by_name = {n: seen[i] for i, n in enumerate(names)}
    errors, chosen = by_name[DOWN0]
    assert errors[0.5] > smoothquant.MARGIN * errors[None] and chosen is None  # 0.5 hurts
    assert facts["unsmoothed"] == [n for n, (_, c) in by_name.items() if c is None]
    assert DOWN0 in facts["unsmoothed"]
    assert facts["stronger_alpha"] == {n: c for n, (_, c) in by_name.items()
                                       if c not in (None, 0.5)}
    assert facts["layers"] == 12 - len(facts["unsmoothed"])
    Smooth, Smoothed = smoothquant.classes()
    assert type(sm.get_submodule(DOWN0)) is torch.nn.Linear  # left as it was
    assert isinstance(sm.encoder.layer[0].attention.self.query, Smoothed)
    ids, mask = tiny_tokens(8, 3, SEQ)
    with torch.no_grad():
        assert float((sm(ids, mask) - m(ids, mask)).abs().max()) < 1e-4  # same function


@pytest.fixture(scope="module")
def onnx_built(tmp_path_factory):
    """The hard tiny encoder built for onnx-cpu, plain int8 and with SmoothQuant 0.5:
    {name: (mean cosine to fp32, manifest)}."""
    m = tiny()
    ids, mask = tiny_tokens(1, 0, SEQ)
    model = LoadedModel("tiny", m, (ids, mask), ["input_ids", "attention_mask"], "0", 1)
    cids, cmask = tiny_tokens(64, 1, SEQ)
    calib = Dataset({"input_ids": cids.numpy(), "attention_mask": cmask.numpy()})
    eids, emask = tiny_tokens(64, 2, SEQ)
    ev = Dataset({"input_ids": eids.numpy(), "attention_mask": emask.numpy()})
    out = {}
    for name, spec in (("int8", {}), ("sq", {"smoothquant": 0.5})):
        recipe = from_dict({**spec, "name": name, "activation_observer": "minmax"}, "t")
        manifest = export(model, get_target("onnx-cpu"), recipe, calib, None,
                          ExportOptions(tmp_path_factory.mktemp(name), force=True))
        acc = evaluate(Path(manifest["artifact"]["path"]), ev, model)
        out[name] = (acc["fidelity"]["cosine"], manifest)
    return out


def test_onnx_smoothquant_plans_static_and_is_not_worse_than_plain_int8(onnx_built):
    # ONNX Runtime quantizes the FFN down projection's input statically: every Linear is
    # guarded. (The tiny model quantizes almost losslessly, ~0.99999 either way; MiniLM-L6's
    # numbers are in edgeq.quantize.smoothquant's docstring.)
    (c8, _), (csq, manifest) = onnx_built["int8"], onnx_built["sq"]
    sq = manifest["passes"]["smoothquant"]
    assert sq["ffn_down_input"] == "static" and sq["ffn_down_layers"] == 2
    assert sq["layers"] + len(sq["unsmoothed"]) == 12
    assert csq >= c8 > 0.999


class Runtime:
    """A runtime stand-in with its own float / dynamic tables."""

    name = "fake"

    def __init__(self, floated, dynamic=()):
        self.float_ops_auto, self.dynamic_ops_auto = floated, dynamic


def test_ffn_down_layers_found_by_their_gelu_input():
    m = tiny()
    names = smoothquant.linear_layers(m)
    down, attention = smoothquant.ffn_down_layers(m, names, batches()[0])
    assert down == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    assert attention
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    assert smoothquant.ffn_down_layers(mlp, ["0", "2"], [torch.randn(3, 4)]) == ([], False)


@pytest.mark.parametrize("floated, dynamic, how", [
    (("softmax",), (), "static"),  # ONNX Runtime: int8 input, float output
    (("softmax", "ffn_down"), ("ffn_down",), "dynamic"),  # ExecuTorch, LiteRT
    (("softmax", "ffn_down"), (), "float")])
def test_ffn_down_smoothed_per_how_the_target_quantizes_it(floated, dynamic, how):
    from edgeq.quantize import transformer

    m = tiny()
    recipe = from_dict({"smoothquant": 0.5}, "t")
    guarded = []
    real = smoothquant.int8_errors

    def spy(module, candidates, ranges, bs):
        guarded.extend(candidates)
        return real(module, candidates, ranges, bs)

    smoothquant.int8_errors = spy
    try:
        facts = transformer.apply(recipe, m, batches(), (), runtime=Runtime(floated, dynamic))
    finally:
        smoothquant.int8_errors = real
    sq = facts["smoothquant"]
    assert sq["ffn_down_input"] == how and sq["ffn_down_layers"] == 2
    _, Smoothed = smoothquant.classes()
    down = m.get_submodule(DOWN0)
    others = [n for n in smoothquant.linear_layers(tiny()) if not n.endswith("output.dense")
              or "attention" in n]
    if how == "static":  # every Linear guarded (choose_alpha)
        assert sorted(guarded) == sorted(smoothquant.linear_layers(tiny()))
    elif how == "dynamic":  # the recipe's alpha, unguarded
        assert sorted(guarded) == sorted(others)
        assert isinstance(down, Smoothed) and DOWN0 not in sq["stronger_alpha"]
        torch.testing.assert_close(down.smooth.inv_scale, 1 / smoothquant.smooth_scales(
            *_down_stats(), 0.5))
    else:  # float: a Smooth would be a float multiply for nothing
        assert sorted(guarded) == sorted(others)
        assert type(down) is torch.nn.Linear and sq["layers"] + len(sq["unsmoothed"]) == 10
    assert isinstance(m.encoder.layer[0].attention.self.query, Smoothed)


def _down_stats():
    """(input absmax, weight) of DOWN0 in the unsmoothed tiny encoder."""
    m = tiny()
    lo, hi = smoothquant.input_minmax(m, [DOWN0], batches())[DOWN0]
    return torch.maximum(-lo, hi), m.get_submodule(DOWN0).weight
