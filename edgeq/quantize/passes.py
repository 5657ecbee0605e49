"""The recipe's float-model passes, applied once before any runtime builds the artifact.

``apply(recipe, model, calib, progress)`` returns a copy of the LoadedModel whose module is
rewritten so that every target's own int8 quantizer reproduces the chosen weights: BN
folded, optionally cross-layer equalized (``equalize``), weights rounded on the targets'
int8 grid (``weight_rounding``: nearest or adaround) and biases corrected layer by layer
(``bias_correction``). See ``edgeq.quantize.dfq`` and ``edgeq.quantize.adaround``.
"""
from __future__ import annotations

import dataclasses

from edgeq.errors import BadInput

PASS_SAMPLES = 32  # calibration samples the data-driven passes run on
PASS_BATCH = 16


def active(recipe) -> bool:
    """Whether the recipe asks for any pass that rewrites weights."""
    return bool(recipe.quantized and (recipe.equalize or recipe.bias_correction
                                      or recipe.weight_rounding != "nearest"
                                      or recipe.smoothquant is not None))


def pt2e_weight_config(cfg, recipe):
    """A PT2E quantizer config whose weight observer floors scales at ``dfq.SCALE_FLOOR``
    instead of 2**-12 when the recipe's passes ran (they leave small channels on that finer
    grid; the 2**-12 floor would re-quantize them). Unchanged otherwise."""
    if not active(recipe) or cfg.weight is None:
        return cfg
    from edgeq.quantize.dfq import SCALE_FLOOR

    part = getattr(cfg.weight.observer_or_fake_quant_ctr, "p", None)  # torchao PartialWrapper
    if part is None or not hasattr(part.func, "with_args"):
        return cfg
    ctr = part.func.with_args(**{**part.keywords, "eps": SCALE_FLOOR})
    weight = dataclasses.replace(cfg.weight, observer_or_fake_quant_ctr=ctr)
    return dataclasses.replace(cfg, weight=weight)


def apply(recipe, model, calib, progress=None, grid=None, runtime=None):
    """(LoadedModel with the rewritten module, facts for the manifest), or (model, None)
    when the recipe asks for no pass. ``calib``: the selected calibration Dataset;
    ``grid``: the target's weight grid for GPTQ / AWQ (``edgeq.quantize.gptq.Grid``; None:
    ``gptq.grid_of(recipe)``); ``runtime``: the target's, for SmoothQuant
    (``edgeq.quantize.transformer.smooth_plan``)."""
    if not active(recipe):
        return model, None
    import copy

    import numpy as np
    import torch

    from edgeq.quantize import adaround, dfq
    from edgeq.quantize.pt2e import resolve_keep_float

    if model.module is None:
        raise BadInput(f"recipe '{recipe.name}': equalize / bias_correction / weight_rounding "
                       "rewrite a PyTorch model; this model is an existing "
                       f"{model.source_file.suffix if model.source_file else 'file'}")
    module = copy.deepcopy(model.module).eval()
    facts: dict = {"bn_folded": dfq.fold_batchnorm(module)}
    label = "data-free passes"
    if recipe.equalize:
        facts["equalized_pairs"] = dfq.equalize(module, relu6=recipe.equalize_relu6)
        facts["equalize_relu6"] = recipe.equalize_relu6
    skip = resolve_keep_float(module, recipe.keep_float)
    names = adaround.quantizable_layers(module, skip)
    n = min(len(calib), PASS_SAMPLES) if calib is not None else 0
    if n == 0 and (recipe.bias_correction or recipe.weight_rounding != "nearest"
                   or recipe.smoothquant is not None):
        raise BadInput(f"recipe '{recipe.name}': bias_correction / weight_rounding / "
                       "smoothquant need calibration data: pass --calib DATA")
    if calib is not None and n:
        cols = [np.ascontiguousarray(a[:n]) for a in calib.inputs.values()]
    else:
        cols = [t.detach().numpy() for t in model.example_inputs]
    batches = [[torch.from_numpy(c[s:s + PASS_BATCH]) for c in cols]
               for s in range(0, len(cols[0]), PASS_BATCH)]
    from edgeq.quantize import transformer  # SmoothQuant, GPTQ / AWQ on Linear layers

    rounding = recipe.weight_rounding
    if transformer.wanted(recipe):
        facts.update(transformer.apply(recipe, module, batches, skip, progress, grid,
                                       runtime))
        names = adaround.quantizable_layers(module, skip)  # SmoothQuant wrapped Linears
        if rounding in transformer.GPTQ_AWQ:  # done: the rest (convs) keep nearest
            names = [k for k in names if not isinstance(module.get_submodule(k),
                                                        torch.nn.Linear)]
            rounding = "nearest"
        if not names or (rounding == "nearest" and not recipe.bias_correction):
            facts["samples"] = n
            return dataclasses.replace(model, module=module), facts
    label = (f"weight passes ({rounding} rounding"
             + (", bias correction" if recipe.bias_correction else "")
             + f") on {n or 1} samples")
    task = progress.task(label, total=len(names)) if progress is not None else None
    if task is None:
        facts.update(adaround.round_layers(module, batches, names, rounding,
                                           recipe.bias_correction,
                                           recipe.weight_granularity == "per-channel"))
    else:
        with task as advance:
            facts.update(adaround.round_layers(
                module, batches, names, rounding, recipe.bias_correction,
                recipe.weight_granularity == "per-channel", advance))
    facts["samples"] = n
    return dataclasses.replace(model, module=module), facts
