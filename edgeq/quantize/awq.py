"""AWQ (Lin et al. 2024): activation-aware per-input-channel weight scales.

A weight column that meets large activations matters more: scaling it up by ``s_j`` before
rounding (and the activation down by the same factor) shrinks its relative rounding error.
Per Linear, ``s = mean|X_j| ** a`` (normalised so max * min = 1) with the exponent ``a``
chosen by grid search over ``GRID`` points in [0, 1] to minimise the layer's output error
``||X Q(W s)^T / s - X W^T||^2`` on calibration inputs, Q being round-to-nearest on the
target grid (``edgeq.quantize.gptq.Grid``); ``a = 0`` is plain round-to-nearest, so AWQ
never does worse than it on the calibration data. The chosen ``1 / s`` goes in front of the
Linear as a float ``Smooth`` (``edgeq.quantize.smoothquant``), and the weight is written as
the float values of its rounded integers, so every target reproduces them exactly.
Layers are visited in order, each on the inputs of the partly quantized model.
"""
from __future__ import annotations

GRID = 20
MAX_ROWS = 4096  # input rows (tokens) per layer the search evaluates on


def search_scale(x, w, grid_spec, points: int = GRID):
    """(best per-channel scale (in,), its exponent, its error, the error at a = 0) for input
    rows ``x`` (rows, in) and weight ``w`` (out, in)."""
    import torch

    from edgeq.quantize.gptq import pin, rtn

    x, w = x.float(), w.detach().float()
    ref = x @ w.T
    mag = x.abs().mean(0).clamp(min=1e-4)
    best = (None, 0.0, float("inf"))
    base = None
    for a in torch.linspace(0, 1, points + 1).tolist():
        s = mag.pow(a)
        s = s / (s.max() * s.min()).sqrt()
        ws = w * s
        _, scale, _ = pin(ws, grid_spec)
        wq = rtn(ws, grid_spec) * scale / s
        err = float(((x @ wq.T - ref) ** 2).mean())
        if a == 0:
            base = err
        if err < best[2]:
            best = (s, a, err)
    return best[0], best[1], best[2], base


def awq(module, batches, names, grid_spec, advance=None) -> dict:
    """AWQ the named Linears of ``module`` in place. Returns facts for the manifest."""
    import torch

    from edgeq.quantize.gptq import representable, rtn
    from edgeq.quantize.smoothquant import capture_inputs, wrap

    scaled, errs = 0, []
    for name in names:
        rows: list = []

        def keep(x):
            if sum(len(r) for r in rows) < MAX_ROWS:
                rows.append(x)

        capture_inputs(module, name, batches, keep)
        if rows:
            x = torch.cat(rows)[:MAX_ROWS]
            lin = module.get_submodule(name)
            s, a, err, base = search_scale(x, lin.weight, grid_spec)
            with torch.no_grad():
                ws = lin.weight.detach().float() * s
                lin.weight.copy_(representable(ws, rtn(ws, grid_spec), grid_spec))
            if a > 0:
                wrap(module, name, s)
                scaled += 1
            else:  # a = 0 is s = 1: nothing to put in front
                pass
            errs.append((err, base))
        if advance is not None:
            advance(1)
    gain = [b / e for e, b in errs if e > 0]
    return {"algorithm": "awq", "layers": len(errs), "layers_scaled": scaled,
            "bits": grid_spec.bits, "group": grid_spec.group,
            "mean_error_ratio_rtn_over_awq": round(sum(gain) / len(gain), 3) if gain else None}
