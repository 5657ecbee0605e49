"""Layer-by-layer weight rounding and empirical bias correction on calibration data.

Layers are visited in execution order. Each one sees the inputs the model produces with
all earlier layers already rewritten (so later layers compensate for earlier errors), and:

* ``rounding="adaround"``: chooses, per weight, rounding down or up so as to minimise
  AdaRound's layer objective E||(W_q - W) x||^2 = tr(D H D^T), H = E[x x^T] over the
  layer's input patches (Nagel et al. 2020, eq. 21-22). Instead of AdaRound's soft
  relaxation and annealed regulariser it is solved directly on the quadratic form by
  greedy coordinate descent from round-to-nearest (each accepted flip lowers the
  objective, so it never ends worse than nearest). A depthwise conv gets one small H per
  channel (9x9 for 3x3 kernels): the layers whose rounding error dominates MobileNet-class
  networks are solved best. Layers with more than ``MAX_DIM`` inputs per output, or
  fewer than ``ROWS_PER_DIM`` x that many calibration rows (a classifier on 32 pooled
  vectors would overfit), keep nearest rounding.
* ``rounding="nearest"``: round to nearest (what the target's quantizer would do anyway;
  written out so bias correction sees the weights that ship).
* ``bias_correction``: adds E[y_float] - E[y_rounded] per output channel to the bias,
  y_float from the float model on float inputs, y_rounded from this layer's rewritten
  weights on its current inputs.

The rewritten weights sit exactly on the target grid (``edgeq.quantize.dfq``).
"""
from __future__ import annotations

MAX_DIM = 2048  # inputs per output channel (Cin/groups * kernel area) solved by the greedy pass
ROWS_PER_DIM = 4
PATCHES_PER_SAMPLE = 256  # input positions per sample that enter H (random subset)
SWEEPS = 4


def quantizable_layers(module, skip=()) -> list[str]:
    """Names of the Conv1d/Conv2d/Linear modules not under a ``skip`` name."""
    from torch import nn

    from edgeq.quantize.pt2e import under

    out = []
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and not under(name, skip):
            out.append(name)
    return out


def _channel_mean(y):
    return y.transpose(0, 1).reshape(y.shape[1], -1).mean(1) if y.dim() > 2 else y.mean(0)


def float_output_means(module, names, batches) -> dict:
    """Per-channel mean output of each named layer over ``batches`` (lists of tensors)."""
    import torch

    sums: dict = {}

    def hook(m, a, y, n):
        sums[n] = sums.get(n, 0) + _channel_mean(y.detach()) * len(y)

    hooks = [module.get_submodule(n).register_forward_hook(
        lambda m, a, y, n=n: hook(m, a, y, n)) for n in names]
    total = 0
    try:
        with torch.no_grad():
            for xs in batches:
                module(*xs)
                total += len(xs[0])
    finally:
        for h in hooks:
            h.remove()
    return {n: s / total for n, s in sums.items()}


def _patches(layer, x, gen):
    """(groups, rows, inputs per output) patch matrix of one batch of layer inputs."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).unsqueeze(0)
    if isinstance(layer, nn.Conv1d):
        x = x.unsqueeze(2)
        k, st, pad, dil = ((1, layer.kernel_size[0]), (1, layer.stride[0]),
                           (0, layer.padding[0]), (1, layer.dilation[0]))
    else:
        k, st, pad, dil = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    if isinstance(pad, str) or layer.padding_mode != "zeros":
        return None
    g = layer.groups
    rows = []
    for xi in x:  # one sample at a time: unfolding a whole batch would not fit in memory
        cols = F.unfold(xi.unsqueeze(0), k, dil, pad, st)[0]  # (C*kk, L)
        if cols.shape[1] > PATCHES_PER_SAMPLE:
            cols = cols[:, torch.randperm(cols.shape[1], generator=gen)[:PATCHES_PER_SAMPLE]]
        rows.append(cols.reshape(g, -1, cols.shape[1]).transpose(1, 2))
    return torch.cat(rows, 1)


def input_hessian(layer, inputs, seed: int = 0):
    """(H = E[x x^T] per group, shape (groups, n, n), number of rows), or (None, 0)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    h, rows = None, 0
    for x in inputs:
        p = _patches(layer, x, gen)
        if p is None:
            return None, 0
        p = p.double()
        part = p.transpose(1, 2) @ p
        h = part if h is None else h + part
        rows += p.shape[1]
    return h / max(rows, 1), rows


def optimise_rounding(w, h, per_channel: bool, sweeps: int = SWEEPS):
    """Integers q (w's shape) on w's target grid minimising sum_rows d H d^T with
    d = q * s - w, each entry rounded down or up; ``h`` is (groups, n, n) with n =
    w[0].numel(). Starts from nearest; the pinned extreme of each row never moves."""
    import torch

    from edgeq.quantize import dfq

    wp, pinned = dfq.pin_extremes(w, per_channel)
    s = dfq.weight_scale(wp, per_channel)
    cout, n = w.shape[0], w[0].numel()
    groups = h.shape[0]
    W = wp.reshape(groups, cout // groups, n).double()
    S = (s.expand(cout) if s.numel() == 1 else s).reshape(groups, -1, 1).double()
    q = dfq.nearest(w, per_channel).reshape(W.shape).double()
    lo = torch.floor(W / S)
    frozen = torch.zeros_like(q, dtype=torch.bool).reshape(cout, n)
    if per_channel:
        frozen[torch.arange(cout), pinned] = True
    else:
        frozen.view(-1)[pinned[0]] = True
    frozen = frozen.reshape(W.shape)
    D = q * S - W
    G = D @ h  # (groups, cog, n): gradient / 2 of the objective wrt d
    diag = torch.diagonal(h, dim1=1, dim2=2)  # (groups, n)
    for _ in range(sweeps):
        changed = 0
        for j in range(n):
            alt = torch.where(q[:, :, j] == lo[:, :, j], lo[:, :, j] + 1, lo[:, :, j])
            delta = (alt - q[:, :, j]) * S[:, :, 0]
            gain = 2 * delta * G[:, :, j] + delta * delta * diag[:, j:j + 1]
            ok = (gain < -1e-18) & (alt.abs() <= dfq.QMAX) & ~frozen[:, :, j]
            if not ok.any():
                continue
            delta = torch.where(ok, delta, 0.0)
            q[:, :, j] = torch.where(ok, alt, q[:, :, j])
            G += delta.unsqueeze(2) * h[:, j, :].unsqueeze(1)
            changed += int(ok.sum())
        if not changed:
            break
    return q.reshape(w.shape).to(w.dtype)


def round_layers(module, batches, names: list[str], rounding: str = "nearest",
                 bias_correction: bool = False, per_channel: bool = True,
                 progress=None) -> dict:
    """Rewrite the weights of layers ``names`` of ``module`` (in place) onto the target
    grid, layer by layer (see the module doc). ``batches``: lists of input tensors; they
    are run as one batch, so that a single forward pass does the work: each layer is
    rewritten in a pre-forward hook, on the inputs the already-rewritten layers before it
    produce, and then runs with its new weights. Returns facts for the manifest."""
    import copy

    import torch
    from torch import nn

    from edgeq.quantize import dfq

    if rounding not in ("nearest", "adaround"):
        raise ValueError(f"rounding must be 'nearest' or 'adaround', not {rounding!r}")
    xs = [torch.cat(parts) for parts in zip(*batches)]
    means = (float_output_means(copy.deepcopy(module), names, [xs]) if bias_correction
             else {})
    done: list[str] = []
    optimised, kept_nearest = [0], []

    def rewrite(layer, name: str, x) -> None:
        w = layer.weight.detach()
        q = None
        if rounding == "adaround":
            h, rows = input_hessian(layer, [x], seed=len(done))
            n = w[0].numel()
            if h is not None and n <= MAX_DIM and rows >= ROWS_PER_DIM * n:
                q = optimise_rounding(w, h, per_channel)
                optimised[0] += 1
            else:
                kept_nearest.append(name)
        if q is None:
            q = dfq.nearest(w, per_channel)
        layer.weight.copy_(dfq.representable(w, q, per_channel))
        if bias_correction and name in means:
            fix = (means[name] - _channel_mean(layer(x))).to(w.dtype)
            if layer.bias is None:
                layer.bias = nn.Parameter(fix)
            else:
                layer.bias.add_(fix)

    def pre(layer, args, name):
        if name not in done:  # a layer called twice is rewritten on its first call
            done.append(name)  # first: bias correction calls the layer (and this hook)
            rewrite(layer, name, args[0].detach())
            if progress is not None:
                progress(1)

    hooks = [module.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: pre(m, a, n)) for n in names]
    try:
        with torch.no_grad():
            module(*xs)
    finally:
        for h in hooks:
            h.remove()
    return {"layers": len(done), "rounding": rounding, "optimised_layers": optimised[0],
            "nearest_layers": kept_nearest if rounding == "adaround" else None,
            "bias_correction": bias_correction}
