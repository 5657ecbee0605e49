"""SmoothQuant (Xiao et al. 2023): migrate activation outliers into the weights.

For a Linear with input X and weight W, per input channel j:
``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``, then ``X' = X / s`` and ``W' = W * s``:
the product is unchanged, the activation's outlier channels shrink (its per-tensor int8
step with them) and the weight's columns grow by the same factor (per-channel int8 weights
absorb that easily). ``alpha`` is the migration strength (0.5 for most models).

Where the division can be folded into the producer (a pre-LN model's LayerNorm feeding only
Linears) the papers fold it; in a post-LN encoder like BERT the LayerNorm output also feeds
the residual, so here the division is an explicit per-channel multiply, ``Smooth``, in front
of the Linear (``SmoothedLinear``). Every target's quantizer keeps ``Smooth`` in float
(``edgeq.quantize.float_ops``) and quantizes the Linear's input, i.e. ``X'``. The float
function is unchanged up to rounding (1e-5). AWQ (``edgeq.quantize.awq``) reuses the same
wrapper for its scales. Runtime-neutral: plain PyTorch modules in, modules out.

**Per-Linear guard** (``choose_alpha``). Migration at the recipe's alpha can leave a Linear
*harder* to quantize: each guarded Linear's int8 output error is simulated on calibration
data (input per-tensor affine 8-bit over its min / max, weights per-channel symmetric
int8, ``int8_errors``) without smoothing, at the recipe's alpha and at the stronger
``STRONGER`` alphas. The recipe's alpha is kept unless it raises that error more than
``MARGIN``-fold; then the Linear gets the stronger alpha with the least error if that
beats no smoothing, else it is left unsmoothed. Which Linears are guarded depends on how
the target quantizes their input (``edgeq.quantize.transformer.smooth_plan``, from the
runtime's declared float / dynamic tables): statically, guarded; dynamically (per
inference), the recipe's alpha; kept float, not smoothed.

Why, measured on MiniLM-L6 (64 calibration / 64 eval sentences, mean cosine to fp32):
alpha 0.5 on the FFN down projection (its input: the GELU output, no channel outliers
of the LayerNorm kind, uneven weight columns) raised that Linear's simulated error
1.9-3.8x in 5 of 6 layers (0.75 or 1.0 lowered it 1.4-4.4x). ONNX Runtime's CPU provider
quantizes that input statically (uint8 per tensor, float output), so SmoothQuant 0.5 made
its int8 *worse*: 0.9928 -> 0.9876 (256 / 256: 0.9925 -> 0.9873); skipping those six
Linears: 0.9961; the guard (0.75 / 1.0 there, 0.5 elsewhere): 0.9978 (256 / 256:
0.9977). The Q / DQ graph
ORT runs was the same in every case (36 QGemm with float output, each ``Smooth`` a float
Mul, no extra Q / DQ): the scales were the cause, not the graph. LiteRT runs that Linear
as dynamic int8, where the guard's stronger alphas cost 0.0008 (0.9968 -> 0.9960), so
there it keeps the recipe's alpha (unchanged: 0.9968; 256 / 256: 0.9967).
"""
from __future__ import annotations

EPS = 1e-5
# Stronger migrations tried on a Linear that the recipe's alpha makes harder to quantize.
STRONGER = (0.75, 1.0)
# The recipe's alpha stands unless it raises the simulated (squared) error more than this:
# the simulation stands in for the targets' observers (min / max here, histogram there) on
# float inputs, so small differences are not to be trusted. MiniLM-L6: alpha 0.5 raised
# the FFN down projections' error 1.9-3.8x (replaced), layer 0's attention output 1.09x;
# replacing that one too (by 1.0) cost LiteRT 0.0009 mean cosine.
MARGIN = 1.25
ERROR_BATCHES = 1  # calibration batches the int8 error is simulated on (cost: 4 matmuls)


def _classes():
    from torch import nn

    class Smooth(nn.Module):
        """x * inv_scale, per last-axis channel (kept float by every target)."""

        def __init__(self, inv_scale):
            super().__init__()
            self.register_buffer("inv_scale", inv_scale.detach().clone().float())

        def forward(self, x):
            return x * self.inv_scale

    class SmoothedLinear(nn.Module):
        """Linear(x * inv_scale) with the Linear's columns already multiplied by scale."""

        def __init__(self, inv_scale, linear):
            super().__init__()
            self.smooth = Smooth(inv_scale)
            self.linear = linear

        def forward(self, x):
            return self.linear(self.smooth(x))

    return Smooth, SmoothedLinear


_CLASSES = None


def classes():
    """(Smooth, SmoothedLinear), created once per process."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _classes()
    return _CLASSES


def linear_layers(module, skip=()) -> list[str]:
    """Names of the nn.Linear modules not under a ``skip`` name, in registration order."""
    from torch import nn

    from edgeq.quantize.pt2e import under

    return [n for n, m in module.named_modules() if isinstance(m, nn.Linear) and
            not under(n, skip)]


def set_module(module, name: str, new) -> None:
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, new)


def wrap(module, name: str, scale) -> None:
    """Make the Linear ``name`` compute ``linear(x / scale)`` with weight columns * scale
    already applied by the caller: fold ``1 / scale`` into an existing ``Smooth`` in front
    of it (a SmoothedLinear parent), or wrap it in a new SmoothedLinear."""
    import torch

    _, SmoothedLinear = classes()
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    with torch.no_grad():
        if isinstance(parent, SmoothedLinear) and child == "linear":
            parent.smooth.inv_scale.div_(scale)
            return
        set_module(module, name, SmoothedLinear(1.0 / scale, module.get_submodule(name)))


class _Stop(Exception):
    pass


def capture_inputs(module, name: str, batches, reduce):
    """Run ``batches`` through ``module`` and call ``reduce(x2d)`` with every input batch
    of layer ``name`` as a (rows, in_features) float tensor; the forward stops at the layer."""
    import torch

    layer = module.get_submodule(name)

    def hook(m, args):
        reduce(args[0].detach().reshape(-1, args[0].shape[-1]).float())
        raise _Stop

    h = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for xs in batches:
                try:
                    module(*xs)
                except _Stop:
                    pass
    finally:
        h.remove()


def smooth_scales(x_absmax, w, alpha: float):
    """SmoothQuant's per-input-channel scales for activation maxima ``x_absmax`` (in,) and
    weight ``w`` (out, in); channels never active keep scale 1."""
    import torch

    w_absmax = w.detach().abs().amax(0).float()
    s = x_absmax.clamp(min=EPS).pow(alpha) / w_absmax.clamp(min=EPS).pow(1.0 - alpha)
    s = torch.where((x_absmax > 0) & (w_absmax > 0), s, torch.ones_like(s))
    return s.clamp(min=EPS)


def input_minmax(module, names, batches) -> dict:
    """Per-input-channel (min, max) of every named Linear, from one pass of ``batches``."""
    import torch

    stats: dict = {}

    def hook(m, args, n):
        x = args[0].detach()
        x = x.reshape(-1, x.shape[-1]).float()
        lo, hi = x.amin(0), x.amax(0)
        if n in stats:
            lo, hi = torch.minimum(stats[n][0], lo), torch.maximum(stats[n][1], hi)
        stats[n] = (lo, hi)

    run_hooked(module, names, hook, batches)
    return stats


def run_hooked(module, names, hook, batches) -> None:
    """Run ``batches`` through ``module`` with ``hook(submodule, args, name)`` called before
    each named submodule's forward."""
    import torch

    hooks = [module.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: hook(m, a, n)) for n in names]
    try:
        with torch.no_grad():
            for xs in batches:
                module(*xs)
    finally:
        for h in hooks:
            h.remove()


def _fake_int8_weight(w):
    """Per-output-channel symmetric int8 round trip of ``w`` (out, in)."""
    import torch

    step = w.abs().amax(1, keepdim=True).clamp(min=EPS) / 127
    return torch.clamp(torch.round(w / step), -127, 127) * step


def int8_errors(module, candidates: dict, ranges: dict, batches) -> dict:
    """{name: {key: squared output error}} of each named Linear under simulated static
    int8 for each candidate scale vector ``candidates[name][key]`` (``X / s`` per-tensor
    affine 8-bit over the range ``ranges[name]`` (per-channel min, max) implies, ``W * s``
    per-channel symmetric int8), summed over ``batches``."""
    import torch

    prepared: dict = {}
    for name, cands in candidates.items():
        w = module.get_submodule(name).weight.detach().float()
        lo, hi = ranges[name]
        prepared[name] = []
        for key, s in cands.items():
            rlo, rhi = float((lo / s).min().clamp(max=0)), float((hi / s).max().clamp(min=0))
            step = max(rhi - rlo, EPS) / 255
            prepared[name].append((key, s, step, round(-rlo / step), _fake_int8_weight(w * s)))
    errs = {name: {key: 0.0 for key in cands} for name, cands in candidates.items()}

    def hook(m, args, name):
        x = args[0].detach()
        x = x.reshape(-1, x.shape[-1]).float()
        ref = x @ m.weight.detach().float().T
        for key, s, step, zp, wq in prepared[name]:
            xq = (torch.clamp(torch.round(x / s / step) + zp, 0, 255) - zp) * step
            errs[name][key] += float((xq @ wq.T - ref).pow(2).sum())

    run_hooked(module, list(candidates), hook, batches)
    return errs


def ffn_down_layers(module, names, batch) -> tuple[list[str], bool]:
    """(the Linears among ``names`` whose input is a GELU's output, i.e. the FFN down
    projections, float_ops kind ``ffn_down``; whether the model calls a softmax), from one
    forward pass of ``batch`` watching torch functions (``nn.GELU`` or ``F.gelu`` alike)."""
    import torch
    from torch.nn import functional as F
    from torch.overrides import TorchFunctionMode

    gelu_out, keep, fed = set(), [], []
    softmax = {F.softmax, torch.softmax, torch.Tensor.softmax}
    found = {"softmax": False}

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is F.gelu:
                gelu_out.add(id(out))
                keep.append(out)  # no id reuse during the pass
            elif func in softmax:
                found["softmax"] = True
            return out

    hooks = [module.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: fed.append(n) if id(a[0]) in gelu_out else None) for n in names]
    try:
        with torch.no_grad(), Watch():
            module(*batch)
    finally:
        for h in hooks:
            h.remove()
    return [n for n in names if n in fed], found["softmax"]


def choose_alpha(errors: dict, alpha: float):
    """The alpha for one Linear from its simulated int8 errors ``{None (no smoothing) or
    alpha: error}``: the recipe's ``alpha`` unless it raises the error more than
    ``MARGIN``-fold; then the stronger alpha with the least error if that beats no
    smoothing; else None (leave it)."""
    if errors[alpha] <= MARGIN * errors[None]:
        return alpha
    stronger = [a for a in errors if a is not None and a > alpha]
    best = min(stronger, key=errors.get, default=None)
    return best if best is not None and errors[best] < errors[None] else None


def smooth(module, batches, alpha: float, skip=(), guarded=None) -> dict:
    """SmoothQuant the Linears of ``module`` (in place) on calibration ``batches`` (lists of
    input tensors): those in ``guarded`` (None: all; the ones whose input the target
    quantizes statically per tensor) at the alpha ``choose_alpha`` picks, the others at
    ``alpha``. Returns facts for the manifest: layers smoothed, alpha, the Linears given a
    stronger alpha or left alone, and the largest activation channel max over the median
    before and after (the outlier ratio)."""
    import torch

    names = linear_layers(module, skip)
    ranges = input_minmax(module, names, batches)
    names = [n for n in names if n in ranges]  # others never called on these batches
    tried = (alpha, *(a for a in STRONGER if a > alpha))
    absmax = {n: torch.maximum(-ranges[n][0], ranges[n][1]).clamp(min=0) for n in names}
    guard = [n for n in names if guarded is None or n in guarded]
    candidates = {n: {None: torch.ones_like(absmax[n]), **{
        a: smooth_scales(absmax[n], module.get_submodule(n).weight, a)
        for a in (tried if n in guard else (alpha,))}} for n in names}
    errors = int8_errors(module, {n: candidates[n] for n in guard}, ranges,
                         batches[:ERROR_BATCHES])
    before, after, stronger, unsmoothed = [], [], {}, []
    for name in names:
        chosen = choose_alpha(errors[name], alpha) if name in errors else alpha
        if chosen is None:
            unsmoothed.append(name)
            continue
        if chosen != alpha:
            stronger[name] = chosen
        lin = module.get_submodule(name)
        s = candidates[name][chosen]
        with torch.no_grad():
            lin.weight.mul_(s.to(lin.weight.dtype))
        wrap(module, name, s)
        x = absmax[name]
        before.append(float(x.max() / x.median().clamp(min=EPS)))
        xs = x / s
        after.append(float(xs.max() / xs.median().clamp(min=EPS)))
    return {"alpha": alpha, "layers": len(before), "stronger_alpha": stronger,
            "unsmoothed": unsmoothed,
            "outlier_ratio_before": round(max(before), 2) if before else None,
            "outlier_ratio_after": round(max(after), 2) if after else None}
