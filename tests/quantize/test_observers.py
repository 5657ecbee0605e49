"""edgeq's PT2E activation observers on synthetic distributions with a known answer, their
bounded memory, their qparams (dtype / quant range / eps as the torchao base class), and
their use in a real PT2E prepare / convert."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgeq.quantize.observers import (EntropyObserver, MeanMinMaxObserver,  # noqa: E402
                                      MSEObserver, PercentileObserver, observed_range,
                                      observer_for)
from edgeq.recipes import PRESETS, observer_fields  # noqa: E402

N = 400_000


def make(cls, **kw):
    return cls(dtype=torch.int8, qscheme=torch.per_tensor_affine, quant_min=-128,
               quant_max=127, eps=2 ** -12, **kw)


def feed(obs, x: torch.Tensor, chunks: int = 16):
    for part in x.split(len(x) // chunks):
        obs(part)
    return obs


def true_mse(x: torch.Tensor, lo: float, hi: float) -> float:
    """Mean squared error of really fake-quantizing ``x`` on the int8 grid over [lo, hi]."""
    scale = (max(hi, 0) - min(lo, 0)) / 255
    zp = int(-128 - round(min(lo, 0) / scale))
    q = torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127)
    return float(((q - x) ** 2).mean())


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    lap = torch.distributions.Laplace(0.0, 1.0)
    torch.manual_seed(0)
    return {"normal": torch.randn(N, generator=g),
            "uniform": torch.rand(N, generator=g),
            "relu-laplace": torch.relu(lap.sample((N,))),
            "t2": torch.distributions.StudentT(2.0).sample((N,)),
            # a well-behaved bulk with a few far outliers (heavy tail)
            "outliers": torch.cat([torch.randn(N - 20, generator=g),
                                   torch.full((20,), 60.0)])[torch.randperm(N, generator=g)]}


def test_percentile_of_known_distributions(data):
    lo, hi = feed(make(PercentileObserver, percentile=99.0), data["normal"]).clip_range()
    assert lo == pytest.approx(-2.576, abs=0.03) and hi == pytest.approx(2.576, abs=0.03)
    # relu(Laplace(1)): half the values are 0; P(X > t) = exp(-t) / 2 = 0.5 % -> t = ln 100.
    _, hi = feed(make(PercentileObserver, percentile=99.0), data["relu-laplace"]).clip_range()
    assert hi == pytest.approx(np.log(100), abs=0.03)
    lo, hi = feed(make(PercentileObserver, percentile=99.0), data["uniform"]).clip_range()
    assert (lo, hi) == (pytest.approx(0.005, abs=2e-3), pytest.approx(0.995, abs=2e-3))
    lo, hi = feed(make(PercentileObserver, percentile=100.0), data["normal"]).clip_range()
    assert (lo, hi) == (pytest.approx(float(data["normal"].min()), abs=1e-5),
                        pytest.approx(float(data["normal"].max()), abs=1e-5))


def test_minmax_is_max_and_histograms_clip_outliers(data):
    x = data["outliers"]
    mm = observed_range(feed(observer_for(PRESETS["int8"].with_(
        activation_observer="minmax"))(dtype=torch.int8), x))
    assert mm[1] == pytest.approx(60.0, rel=0.01)
    # KL ignores 20 values in 400k: entropy clips them.
    _, hi = feed(make(EntropyObserver), x).clip_range()
    assert hi < 10
    # MSE clips a heavy tail (Student t, 2 degrees of freedom), not a handful of values
    # (clipping 20 values at 60 costs more than the coarser step).
    t2 = data["t2"]
    lo, hi = feed(make(MSEObserver), t2).clip_range()
    assert hi - lo < 0.9 * (float(t2.max()) - float(t2.min()))
    assert true_mse(t2, lo, hi) < true_mse(t2, float(t2.min()), float(t2.max()))
    # A uniform distribution has nothing worth clipping: both keep (nearly) all of it.
    for cls in (EntropyObserver, MSEObserver):
        _, hi = feed(make(cls), data["uniform"]).clip_range()
        assert hi > 0.97, cls


def test_mse_is_near_the_brute_force_optimum(data):
    """The histogram-based choice is within 3 % of the best of 200 ranges scored by
    really quantizing every value."""
    for key in ("normal", "relu-laplace", "outliers", "t2"):
        x = data[key]
        lo, hi = feed(make(MSEObserver), x).clip_range()
        xmin, xmax = float(x.min()), float(x.max())
        best = min(true_mse(x, xmin * t, xmax * t) for t in np.linspace(0.02, 1, 200))
        assert true_mse(x, lo, hi) <= 1.03 * best, key


def test_entropy_clips_a_heavy_tail_below_its_max(data):
    x = data["relu-laplace"]
    _, hi = feed(make(EntropyObserver), x).clip_range()
    assert 3.0 < hi < 0.8 * float(x.max())


def test_moving_average_is_the_mean_of_per_sample_ranges():
    obs = make(MeanMinMaxObserver)
    obs(torch.tensor([[0.0, 1.0], [-2.0, 3.0]]))  # two samples
    obs(torch.tensor([[-1.0, 2.0]]))  # a third, in a batch of its own
    assert float(obs.min_val) == pytest.approx(-1.0) and float(obs.max_val) == pytest.approx(2.0)
    scale, zp = obs.calculate_qparams()
    assert float(scale) == pytest.approx(3.0 / 255) and int(zp) == -128 + round(1.0 / (3 / 255))


def test_bounded_memory_and_growing_range():
    """A fixed bin count however much is fed; a later, wider batch re-bins the histogram."""
    obs = make(PercentileObserver, percentile=100.0, bins=256)
    obs(torch.rand(10_000))
    obs(torch.rand(10_000) * 10)
    assert obs.histogram.numel() == 256 and float(obs.histogram.sum()) == pytest.approx(20_000)
    assert float(obs.max_val) > 9.9
    state = {k: v.numel() for k, v in obs.state_dict().items()}
    assert max(state.values()) == 256


@pytest.mark.parametrize("cls", [PercentileObserver, EntropyObserver, MSEObserver,
                                 MeanMinMaxObserver])
def test_qparams_follow_the_base_class(cls):
    """uint8 / int8, a custom quant range, symmetric schemes and the eps floor behave as in
    torchao's observers."""
    x = torch.linspace(0, 1e-6, 1000)  # a range far below eps: the scale floor applies
    obs = cls(dtype=torch.int8, quant_min=-128, quant_max=127, eps=2 ** -12)
    obs(x)
    scale, zp = obs.calculate_qparams()
    assert float(scale) == 2 ** -12 and int(zp) == -128
    obs = cls(dtype=torch.uint8, qscheme=torch.per_tensor_symmetric)
    obs(torch.linspace(-1, 1, 1000))
    scale, zp = obs.calculate_qparams()
    assert int(zp) == 128 and obs.quant_max == 255
    obs = cls(dtype=torch.int8, quant_min=-64, quant_max=63)
    obs(torch.linspace(0, 1, 1000))
    lo, hi = observed_range(obs)
    assert lo == pytest.approx(0.0, abs=1e-6) and hi <= 1.0 + 1e-6 and hi > 0.9


def test_unrun_observer_returns_defaults():
    scale, zp = make(EntropyObserver).calculate_qparams()
    assert float(scale) == 1.0 and int(zp) == 0


def test_recipe_names_to_observers():
    r = PRESETS["int8"]
    assert observer_for(r)().__class__.__name__ == "HistogramObserver"
    pct = r.with_(**observer_fields("percentile:99.9", "--observer"), histogram_bins=512)
    obs = observer_for(pct)()
    assert isinstance(obs, PercentileObserver) and obs.percentile == 99.9 and obs.bins == 512
    assert float(obs.eps) == 2 ** -12
    for name in ("minmax", "moving-average", "entropy", "mse"):
        assert observer_for(r.with_(activation_observer=name))() is not None


@pytest.mark.parametrize("name", ["moving-average", "percentile", "entropy", "mse"])
def test_observers_in_a_real_pt2e_flow(name):
    """prepare_pt2e / calibrate / convert_pt2e with XNNPACKQuantizer and each observer:
    the output stays close to fp32 and the observer really chose the input's scale."""
    pytest.importorskip("executorch")
    from torch import nn

    from edgeq.quantize.pt2e import activation_observer, export
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import \
        QuantizationConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    import dataclasses

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    x = torch.randn(256, 64)
    recipe = PRESETS["int8"].with_(activation_observer=name, percentile=99.0)
    cfg = get_symmetric_quantization_config()
    act = dataclasses.replace(cfg.input_activation,
                              observer_or_fake_quant_ctr=activation_observer(recipe))
    cfg = QuantizationConfig(act, act, cfg.weight, cfg.bias, cfg.is_qat)
    gm, dynamic = export(net, (x[:1],), dynamic_batch=True)
    assert dynamic
    prepared = prepare_pt2e(gm, XNNPACKQuantizer().set_global(cfg))
    cls = {"moving-average": MeanMinMaxObserver, "percentile": PercentileObserver,
           "entropy": EntropyObserver, "mse": MSEObserver}[name]
    assert any(isinstance(m, cls) for m in prepared.modules())
    for part in x.split(32):
        prepared(part)
    q = convert_pt2e(prepared)
    with torch.no_grad():
        ref, out = net(x), q(x)
    cos = torch.nn.functional.cosine_similarity(ref.flatten(), out.flatten(), 0)
    # moving-average takes the mean of per-sample ranges: it clips by design (64 values a
    # sample here), the others keep the output within 1 %.
    assert float(cos) > (0.93 if name == "moving-average" else 0.99)
    scales = [float(n.args[1]) for n in q.graph.nodes
              if "quantize_per_tensor" in str(n.target) and n.args[0].op == "placeholder"]
    assert scales and scales[0] < (float(x.max()) - float(x.min())) / 255 * 1.001


def test_export_honours_the_percentile_shorthand(work, tmp_path):
    """``edgeq export --observer percentile:99`` on ExecuTorch: the recipe in the manifest
    carries both fields, and the artifact runs close to fp32."""
    pytest.importorskip("executorch")
    import json

    from helpers import invoke

    out = tmp_path / "o"
    r = invoke(["export", work.model, "-t", "executorch-xnnpack", "--calib", work.calib,
                "--observer", "percentile:99", "--data", work.eval, "--json", "-o", out])
    assert r.exit_code == 0, r.output
    pte = next(out.glob("*.pte"))
    m = json.loads(pte.with_name(pte.name + ".manifest.json").read_text())
    assert (m["recipe"]["activation_observer"], m["recipe"]["percentile"]) == \
        ("percentile", 99.0)
    acc = r.json()["results"][0]["accuracy"]
    assert acc["fidelity"]["cosine"] > 0.98


def test_entropy_keeps_a_saturated_relu6_top():
    """A ReLU6 output with a spike of saturated values at 6 (a quarter of them): KL alone
    folds the spike into the edge bin of [0, 0.75] (EfficientNet-Lite0 fell to 0.8 dB);
    a range may clip at most 0.1% of the values."""
    import torch

    from edgeq.quantize.observers import ENTROPY_MAX_CLIPPED, EntropyObserver

    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(200_000, generator=g)).clamp(max=6.0)
    x[:50_000] = 6.0
    obs = EntropyObserver(dtype=torch.int8, qscheme=torch.per_tensor_affine)
    obs(x)
    lo, hi = obs.clip_range()
    assert lo == 0.0 and hi >= 6.0 * (1 - 1 / 2048) - 1e-6
    assert float((x > hi).float().mean()) <= ENTROPY_MAX_CLIPPED
