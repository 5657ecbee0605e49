"""Data-free passes on the float module (Nagel et al. 2019, "Data-Free Quantization", as in
AIMET): BatchNorm folding, cross-layer equalization, and the weight grid every target's
quantizer uses, so that a rewritten weight is quantized back to exactly the chosen integers.

The grid: int8 symmetric, ``scale = max|w| / 127`` per output channel (axis 0) or per
tensor. That is what PT2E's ``PerChannelMinMaxObserver`` / ``MinMaxObserver`` compute for
ExecuTorch and LiteRT (qmin -127, qmax 127; their ``eps`` floor is lowered to
``SCALE_FLOOR`` when passes run, see ``edgeq.quantize.passes.pt2e_weight_config``) and
what ONNX Runtime's ``quantize_static`` computes for ``WeightSymmetric`` int8 weights
(``compute_scale_zp``: (absmax - -absmax) / (127 - -127), reduce_range off). A rewritten
weight is ``q * scale`` everywhere except at each channel's largest element, which keeps
its original value so the scale the runtime recomputes is unchanged.
"""
from __future__ import annotations

QMAX = 127
# Smallest weight scale the passes leave (2**-20): channels with max |w| below
# 127 * SCALE_FLOOR get their largest element set to 127 * SCALE_FLOOR, so every runtime
# computes this same scale; far smaller scales would overflow the int32 bias
# (bias / (activation scale * weight scale)).
SCALE_FLOOR = 2.0 ** -20


def trace(module):
    """``torch.fx.symbolic_trace`` of ``module``; BadInput when it cannot be traced."""
    import torch

    from edgeq.errors import BadInput

    try:
        return torch.fx.symbolic_trace(module)
    except Exception as e:
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise BadInput("recipe passes (equalize, bias_correction, weight_rounding) need a "
                       f"model torch.fx can trace; tracing failed: {first[:200]}") from e


def _set(module, name: str, new) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, leaf, new)


def _single_module_user(node, modules, types, through=None):
    """The only user of ``node`` if it is a module of ``types`` (modules of ``through``,
    by default Identity such as folded BatchNorms, are looked through), else None."""
    from torch import nn

    through = through or (nn.Identity,)
    while True:
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            return None
        m = modules.get(users[0].target)
        if isinstance(m, types):
            return users[0]
        if not isinstance(m, through):
            return None
        node = users[0]


def fold_batchnorm(module) -> int:
    """Fold every BatchNorm that directly follows a conv (its only user) into that conv's
    weight and bias and replace it by Identity. In place; the float function is unchanged
    (eval mode). Returns how many were folded."""
    import torch
    from torch import nn

    gm = trace(module)
    modules = dict(module.named_modules())
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    bns = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    folded = 0
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), convs):
            continue
        bn_node = _single_module_user(node, modules, bns)
        if bn_node is None:
            continue
        conv, bn = modules[node.target], modules[bn_node.target]
        with torch.no_grad():
            std = torch.sqrt(bn.running_var + bn.eps)
            g = (bn.weight if bn.weight is not None else torch.ones_like(std)) / std
            beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
            b = conv.bias if conv.bias is not None else torch.zeros_like(std)
            conv.weight.mul_(g.reshape(-1, *[1] * (conv.weight.dim() - 1)))
            conv.bias = nn.Parameter((b - bn.running_mean) * g + beta)
        _set(module, bn_node.target, nn.Identity())
        folded += 1
    return folded


def _pairs(module, relu6: str):
    """(first, activation name or None, second) layer pairs CLE can scale: a conv (or
    linear) whose only user is a ReLU (or ReLU6 with ``relu6="relu"``) or nothing, whose
    only user is a conv with groups 1 or a depthwise conv (or a linear)."""
    from torch import nn

    gm = trace(module)
    modules = dict(module.named_modules())
    layers = (nn.Conv2d, nn.Linear)
    acts = (nn.ReLU,) + ((nn.ReLU6,) if relu6 == "relu" else ())
    # Zero padding and eval-mode dropout commute with a per-channel positive scale.
    through = (nn.Identity, nn.ZeroPad2d, nn.Dropout)
    calls: dict = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    out, act_uses = [], {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), layers):
            continue
        act = _single_module_user(node, modules, acts, through)
        nxt = _single_module_user(act if act is not None else node, modules, layers, through)
        if nxt is None:
            continue
        a, b = modules[node.target], modules[nxt.target]
        if isinstance(a, nn.Conv2d) and a.groups != 1 and not _depthwise(a):
            continue
        if isinstance(b, nn.Conv2d) and b.groups != 1 and not _depthwise(b):
            continue
        if isinstance(a, nn.Linear) != isinstance(b, nn.Linear):
            continue
        out.append((node.target, act.target if act is not None else None, nxt.target))
        if act is not None:
            act_uses[act.target] = act_uses.get(act.target, 0) + 1
    # A ReLU6 module called elsewhere too (one module shared by several layers) would turn
    # into ReLU there as well: leave its pairs alone.
    return [p for p in out if p[1] is None or not isinstance(modules[p[1]], nn.ReLU6)
            or act_uses[p[1]] == calls[p[1]]]


def _depthwise(conv) -> bool:
    return conv.groups == conv.in_channels == conv.out_channels


def equalize(module, relu6: str = "keep", iterations: int = 20) -> int:
    """Cross-layer equalization: for each pair of consecutive layers joined by a ReLU (or
    nothing), scale output channel i of the first by 1/s_i and input channel i of the
    second by s_i, s_i = sqrt(r1_i / r2_i), so both have range sqrt(r1_i * r2_i). ReLU
    is positively homogeneous, so the float function is unchanged; ReLU6 is not:
    ``relu6="relu"`` replaces the ReLU6 between a pair by ReLU first (AIMET's choice,
    which changes the float function where activations exceed 6: measured on
    EfficientNet-Lite0 it drops the float model to 2.6 dB SQNR against the original),
    ``"keep"`` (default) leaves those pairs alone. Run BN folding first. In place; returns the number of pairs."""
    import torch
    from torch import nn

    if relu6 not in ("relu", "keep"):
        raise ValueError(f"relu6 must be 'relu' or 'keep', not {relu6!r}")
    pairs = _pairs(module, relu6)
    for _, act, _ in pairs:
        if act is not None and isinstance(module.get_submodule(act), nn.ReLU6):
            _set(module, act, nn.ReLU())
    with torch.no_grad():
        for _ in range(iterations):
            for first, _, second in pairs:
                a, b = module.get_submodule(first), module.get_submodule(second)
                r1 = a.weight.abs().reshape(a.weight.shape[0], -1).amax(1)
                if isinstance(b, nn.Conv2d) and _depthwise(b):
                    r2 = b.weight.abs().reshape(b.weight.shape[0], -1).amax(1)
                else:
                    r2 = b.weight.abs().transpose(0, 1).reshape(b.weight.shape[1], -1).amax(1)
                ok = (r1 > 0) & (r2 > 0)
                s = torch.where(ok, torch.sqrt(r1 / torch.where(ok, r2, 1.0)), 1.0)
                a.weight.div_(s.reshape(-1, *[1] * (a.weight.dim() - 1)))
                if a.bias is not None:
                    a.bias.div_(s)
                if isinstance(b, nn.Conv2d) and _depthwise(b):
                    b.weight.mul_(s.reshape(-1, 1, 1, 1))
                else:
                    b.weight.mul_(s.reshape(1, -1, *[1] * (b.weight.dim() - 2)))
    return len(pairs)


def weight_scale(w, per_channel: bool = True):
    """The int8 symmetric scale(s) the targets compute for ``w``: max|w| / 127 over each
    output channel (shape ``(C,)``) or the whole tensor (shape ``(1,)``), at least
    ``SCALE_FLOOR``."""
    import torch

    amax = (w.abs().reshape(w.shape[0], -1).amax(1) if per_channel
            else w.abs().amax().reshape(1))
    return torch.clamp(amax / QMAX, min=SCALE_FLOOR)


def pin_extremes(w, per_channel: bool = True):
    """(w with each channel's (or the tensor's) largest |w| raised to 127 * SCALE_FLOOR
    where it was below, flat index of that element per row). The pinned element is the
    one a rewrite must leave unchanged."""
    import torch

    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    rows = rows.clone()
    idx = rows.abs().argmax(1)
    r = torch.arange(rows.shape[0])
    peak = rows[r, idx]
    floor = QMAX * SCALE_FLOOR
    sign = torch.where(peak < 0, -1.0, 1.0)
    rows[r, idx] = torch.where(peak.abs() < floor, sign * floor, peak)
    return rows.reshape(w.shape), idx


def representable(w, q, per_channel: bool = True):
    """The float weight whose quantization is ``q`` (integers, w's shape): ``q * scale``,
    with each row's largest element kept as in ``w`` (it defines the scale)."""
    w, idx = pin_extremes(w, per_channel)
    s = weight_scale(w, per_channel)
    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    qr = q.reshape(rows.shape).to(w.dtype)
    out = qr * s.reshape(-1, 1)
    r = range(rows.shape[0])
    out[list(r), idx] = rows[list(r), idx]
    return out.reshape(w.shape)


def nearest(w, per_channel: bool = True):
    """Round-to-nearest integers of ``w`` on its target grid (after pinning)."""
    import torch

    w, _ = pin_extremes(w, per_channel)
    s = weight_scale(w, per_channel)
    shape = (-1,) + (1,) * (w.dim() - 1) if per_channel else (1,) * w.dim()
    return torch.clamp(torch.round(w / s.reshape(shape)), -QMAX, QMAX)
