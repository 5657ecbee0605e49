"""GPTQ (Frantar et al. 2023): quantize a Linear's weight column by column, spreading each
column's rounding error over the columns not yet quantized, weighted by the inverse
Hessian of the layer's squared output error, H = 2/n X^T X on calibration inputs.

Layers are visited in execution order, each on inputs produced by the model with the
earlier layers already quantized (so later layers compensate for earlier errors). The
scales are the target's own (``Grid``), computed from the original weight and never
changed: symmetric, ``scale = max|w| / divisor`` per output channel or per group of
``group`` consecutive input channels. The element that defines each scale (the group's
largest |w|) is kept as it is, so the float weight written back (``representable``) is
quantized by the target's quantizer to exactly the integers GPTQ chose (the round trip is
tested against torchao's own quantize functions, ONNX Runtime's MatMulNBitsQuantizer and
ai-edge-quantizer). Each runtime names its grid (``weight_grid(recipe)`` in
``edgeq/runtimes/<rt>/schemes.py``); ``grid_of`` is the default (torchao / PT2E).
``act_order`` visits columns by decreasing H diagonal (the scales stay those of the
original groups: "static groups").
"""
from __future__ import annotations

from dataclasses import dataclass

DAMP = 0.01  # fraction of the mean Hessian diagonal added to it
BLOCK = 128  # columns per lazy-update block


@dataclass(frozen=True)
class Grid:
    """A symmetric integer weight grid as the targets' quantizers compute it:
    ``scale = max|w| / divisor`` over each group of ``group`` input channels (None: per
    output channel; -1: per tensor), integers ``round(w / scale)`` clamped to
    [qmin, qmax]; ``signed_peak`` and ``scale_dtype`` describe the variants below."""

    bits: int = 8
    group: int | None = None
    qmin: int = -127
    qmax: int = 127
    divisor: float = 127.0
    # True: the scale is signed, ``peak / qmin`` (so the group's peak maps to qmin): the
    # integers on the peak's side reach -qmin, the other side's qmax (divisor = -qmin).
    signed_peak: bool = False
    # "bfloat16": the scale is rounded to bfloat16, then float16, then float32.
    scale_dtype: str | None = None
    # True: the target's converter folds the scale (gamma) of a LayerNorm feeding a Linear
    # into the Linear's weight (W diag(gamma)) before quantizing it.
    folds_norm: bool = False

    @classmethod
    def restricted(cls, bits: int, group=None) -> "Grid":
        """[-(2^(b-1) - 1), 2^(b-1) - 1], scale max|w| / qmax: the PT2E static / dynamic
        quantizers of ExecuTorch and LiteRT and ONNX Runtime's symmetric weights."""
        q = 2 ** (bits - 1) - 1
        return cls(bits, group, -q, q, float(q))

    @classmethod
    def peak_to_min(cls, bits: int, group=None) -> "Grid":
        """[-2^(b-1), 2^(b-1) - 1] with the signed scale ``peak / -2^(b-1)``: the group's
        largest |w| maps to -2^(b-1), the other elements round half up (block quantizers
        with zero point 2^(b-1) on unsigned storage)."""
        lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
        return cls(bits, group, lo, hi, float(-lo), signed_peak=True)

    @classmethod
    def full(cls, bits: int, group=None) -> "Grid":
        """[-2^(b-1), 2^(b-1) - 1], scale max|w| / (2^b - 1) * 2: torchao's SYMMETRIC
        mapping (ExecuTorch's weight-only int4 / int8 path)."""
        lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
        return cls(bits, group, lo, hi, (hi - lo) / 2.0)


def grid_of(recipe) -> Grid:
    """The weight grid the recipe's quantizers use: weight-only recipes go through torchao's
    symmetric mapping, static and dynamic int8 through the restricted [-127, 127] grid."""
    group = recipe.group_size if recipe.weight_granularity == "per-group" else (
        -1 if recipe.weight_granularity == "per-tensor" else None)
    make = Grid.full if recipe.method == "weight-only" else Grid.restricted
    return make(recipe.weight_bits, group)


def _groups(w, grid: Grid):
    """w (out, in) as (out, n_groups, group); ``group -1`` is one group per tensor."""
    out, inp = w.shape
    if grid.group == -1:
        return w.reshape(1, 1, -1)
    g = grid.group or inp
    if inp % g:
        raise ValueError(f"in_features {inp} is not a multiple of the group size {g}")
    return w.reshape(out, inp // g, g)


def pin(w, grid: Grid):
    """(w with each group's largest |w| floored at divisor * SCALE_FLOOR, per-element scales
    of w's shape, boolean mask of the element that defines each group's scale)."""
    import torch

    from edgeq.quantize.dfq import SCALE_FLOOR

    g = _groups(w.detach().clone().float(), grid)
    idx = g.abs().argmax(-1, keepdim=True)
    peak = g.gather(-1, idx)
    floor = grid.divisor * SCALE_FLOOR
    sign = torch.where(peak < 0, -1.0, 1.0)
    g.scatter_(-1, idx, torch.where(peak.abs() < floor, sign * floor, peak))
    scale = g.abs().amax(-1, keepdim=True) / grid.divisor
    if grid.scale_dtype == "bfloat16":  # as numpy / ml_dtypes round it (to nearest even)
        scale = scale.to(torch.bfloat16).to(torch.float16).to(torch.float32)
    scale = scale.expand_as(g)
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, idx, True)
    return g.reshape(w.shape), scale.reshape(w.shape), mask.reshape(w.shape)


def limits(wp, grid: Grid):
    """(lowest, highest) integer of each element of the pinned weight ``wp``, as tensors of
    its shape: [qmin, qmax], or on a ``signed_peak`` grid [-qmax, -qmin] in groups whose
    peak is positive (the integers here are those of the positive scale max|w| / divisor)."""
    import torch

    lo = torch.full_like(wp, float(grid.qmin))
    hi = torch.full_like(wp, float(grid.qmax))
    if grid.signed_peak:
        g = _groups(wp, grid)  # the peak's sign as MLAS picks it: the min on a tie
        pos = g.amax(-1, keepdim=True).abs() > g.amin(-1, keepdim=True).abs()
        pos = pos.expand_as(g).reshape(wp.shape)
        lo = torch.where(pos, -hi, lo)
        hi = torch.where(pos, float(-grid.qmin), hi)
    return lo, hi


def _round(x, grid: Grid, lo=None, hi=None):
    """Integers for the elements other than the scale-defining one: kept within
    +-divisor too, so that none of them outgrows the group's max |w| (torchao's int4 grid
    reaches -8, i.e. -8/7.5 of it), and within the element's ``limits`` (lo, hi)."""
    import math

    import torch

    lim = math.floor(grid.divisor)
    q = torch.clamp(torch.round(x), max(grid.qmin, -lim) if lo is None else -lim,
                    min(grid.qmax, lim) if hi is None else lim)
    if lo is not None:
        q = torch.maximum(torch.minimum(q, hi.to(q.dtype)), lo.to(q.dtype))
    return q


def _peak_q(wp, scale, grid: Grid):
    """The integers the target's own rounding gives every element (used for the
    scale-defining ones, at +-divisor: for torchao's int4 grid that is +-7.5, which
    torchao rounds after multiplying by the float32 reciprocal of the scale; done the same
    way here so the tie goes the same way)."""
    import torch

    q = torch.round(wp * (1.0 / scale))
    if not grid.signed_peak:
        return torch.clamp(q, grid.qmin, grid.qmax)
    lo, hi = limits(wp, grid)
    return torch.maximum(torch.minimum(q, hi), lo)


def rtn(w, grid: Grid):
    """Round-to-nearest integers of w on its grid (what the target's quantizer computes)."""
    import torch

    wp, scale, mask = pin(w, grid)
    lo, hi = limits(wp, grid) if grid.signed_peak else (None, None)
    return torch.where(mask, _peak_q(wp, scale, grid), _round(wp / scale, grid, lo, hi))


def representable(w, q, grid: Grid):
    """The float weight the targets quantize to exactly ``q``: ``q * scale``, except each
    group's scale-defining element, kept at the group's max |w| (so the scale a target
    recomputes is the same float; its integer is what ``rtn`` gives it), and integers at
    +-divisor, written as +-max|w| so no element outgrows it by a rounding error."""
    import torch

    wp, scale, mask = pin(w, grid)
    out = q.float() * scale
    g = _groups(wp, grid)
    amax = g.abs().amax(-1, keepdim=True).expand_as(g).reshape(w.shape)
    out = torch.where(q.abs() == grid.divisor, torch.sign(q.float()) * amax, out)
    out = torch.where(mask, wp, out)
    return out.to(w.dtype)


def quantize_weight(w, H, grid: Grid, damp: float = DAMP, act_order: bool = True):
    """GPTQ integers for weight ``w`` (out, in) given the input Hessian ``H`` (in, in)."""
    import torch

    wp, scale, mask = pin(w, grid)
    W = wp.double().clone()
    S, M = scale.double(), mask
    H = H.double().clone()
    n = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n)
    W, S, M, H = W[:, perm], S[:, perm], M[:, perm], H[perm][:, perm]
    lo, hi = (t.double()[:, perm] for t in limits(wp, grid)) if grid.signed_peak else \
        (None, None)
    fixed = _peak_q(wp, scale, grid).double()[:, perm]  # the scale-defining elements' q
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, n, BLOCK):
        i2 = min(i1 + BLOCK, n)
        W1, Err = W[:, i1:i2].clone(), torch.zeros_like(W[:, i1:i2])
        Hb = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col, s, d = W1[:, i], S[:, i1 + i], Hb[i, i]
            q = _round(col / s, grid, None if lo is None else lo[:, i1 + i],
                       None if hi is None else hi[:, i1 + i])
            q = torch.where(M[:, i1 + i], fixed[:, i1 + i], q)
            Q[:, i1 + i] = q
            err = (col - q * s) / d
            W1[:, i:] -= err.unsqueeze(1) * Hb[i, i:].unsqueeze(0)
            Err[:, i] = err
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    out = torch.empty_like(Q)
    out[:, perm] = Q
    return out.float()


def hessian(module, name: str, batches):
    """H = 2/n X^T X over the inputs of layer ``name`` on ``batches``."""
    import torch

    from edgeq.quantize.smoothquant import capture_inputs

    acc = {"H": None, "n": 0}

    def reduce(x):
        x = x.double()
        acc["H"] = (x.T @ x) if acc["H"] is None else acc["H"] + x.T @ x
        acc["n"] += len(x)

    capture_inputs(module, name, batches, reduce)
    if acc["H"] is None:
        return None
    return acc["H"] * (2.0 / acc["n"]) if acc["n"] else torch.zeros_like(acc["H"])


def gptq(module, batches, names, grid: Grid, damp: float = DAMP, act_order: bool = True,
         advance=None) -> dict:
    """GPTQ the named Linears of ``module`` in place, in order, each on the inputs the
    partly quantized model gives it. Returns facts for the manifest."""
    import torch

    done = 0
    gammas = norm_scales(module, batches, names) if grid.folds_norm else {}
    for name in names:
        H = hessian(module, name, batches)
        if H is not None:
            lin = module.get_submodule(name)
            w, g = lin.weight.detach(), gammas.get(name)
            if g is not None:  # quantize what the target quantizes: W diag(gamma)
                w = w * g
                H = H / (g.double()[:, None] * g.double()[None, :])
            q = quantize_weight(w, H, grid, damp, act_order)
            with torch.no_grad():
                out = representable(w, q, grid)
                lin.weight.copy_(out if g is None else out / g)
            done += 1
        if advance is not None:
            advance(1)
    return {"algorithm": "gptq", "layers": done, "bits": grid.bits,
            "group": grid.group, "damp": damp, "act_order": act_order}


def norm_scales(module, batches, names) -> dict:
    """{Linear name: gamma} for each Linear in ``names`` whose input is the output of a
    LayerNorm (found by running the first batch), with a non-unit gamma."""
    import torch

    seen, found = {}, {}

    def norm_hook(mod, args, out):
        seen[id(out)] = (out, mod.weight.detach().clone())

    def lin_hook(name):
        def hook(mod, args):
            hit = seen.get(id(args[0]))
            if hit is not None and hit[0] is args[0] and hit[1] is not None:
                found[name] = hit[1].float()
        return hook

    handles = [m.register_forward_hook(norm_hook) for m in module.modules()
               if isinstance(m, torch.nn.LayerNorm) and m.weight is not None]
    handles += [module.get_submodule(n).register_forward_pre_hook(lin_hook(n)) for n in names]
    try:
        with torch.no_grad():
            module(*batches[0])
    finally:
        for h in handles:
            h.remove()
    return {n: g for n, g in found.items() if not torch.all(g == 1) and torch.all(g != 0)}
