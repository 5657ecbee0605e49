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
"""
from __future__ import annotations

EPS = 1e-5


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

    return [n for n, m in module.named_modules() if isinstance(m, nn.Linear) and
            not any(n == k or n.startswith(k + ".") for k in skip)]


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


def input_absmax(module, names, batches) -> dict:
    """Per-input-channel max |x| of every named Linear, from one pass of ``batches``."""
    import torch

    stats: dict = {}

    def hook(m, args, n):
        x = args[0].detach()
        a = x.reshape(-1, x.shape[-1]).abs().amax(0).float()
        stats[n] = a if n not in stats else torch.maximum(stats[n], a)

    hooks = [module.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: hook(m, a, n)) for n in names]
    try:
        with torch.no_grad():
            for xs in batches:
                module(*xs)
    finally:
        for h in hooks:
            h.remove()
    return stats


def smooth_scales(x_absmax, w, alpha: float):
    """SmoothQuant's per-input-channel scales for activation maxima ``x_absmax`` (in,) and
    weight ``w`` (out, in); channels never active keep scale 1."""
    import torch

    w_absmax = w.detach().abs().amax(0).float()
    s = x_absmax.clamp(min=EPS).pow(alpha) / w_absmax.clamp(min=EPS).pow(1.0 - alpha)
    s = torch.where((x_absmax > 0) & (w_absmax > 0), s, torch.ones_like(s))
    return s.clamp(min=EPS)


def smooth(module, batches, alpha: float, skip=()) -> dict:
    """SmoothQuant every Linear of ``module`` (in place) on calibration ``batches`` (lists of
    input tensors). Returns facts for the manifest: layers smoothed, alpha, and the largest
    activation channel max over the median before and after (the outlier ratio)."""
    import torch

    names = linear_layers(module, skip)
    stats = input_absmax(module, names, batches)
    before, after = [], []
    for name in names:
        if name not in stats:
            continue  # never called on these batches
        lin = module.get_submodule(name)
        s = smooth_scales(stats[name], lin.weight, alpha)
        with torch.no_grad():
            lin.weight.mul_(s.to(lin.weight.dtype))
        wrap(module, name, s)
        x = stats[name]
        before.append(float(x.max() / x.median().clamp(min=EPS)))
        xs = x / s
        after.append(float(xs.max() / xs.median().clamp(min=EPS)))
    return {"alpha": alpha, "layers": len(before),
            "outlier_ratio_before": round(max(before), 2) if before else None,
            "outlier_ratio_after": round(max(after), 2) if after else None}
