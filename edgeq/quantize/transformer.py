"""The recipe's transformer passes, run by ``edgeq.quantize.passes.apply`` on the float
module before any runtime builds the artifact: SmoothQuant (``smoothquant: alpha``), then
GPTQ or AWQ on every Linear (``weight_rounding: gptq | awq``) on the target runtime's
weight grid (else the recipe's, ``edgeq.quantize.gptq.grid_of``). Layers other than Linear
are left to the other passes.
"""
from __future__ import annotations

import dataclasses

GPTQ_AWQ = ("gptq", "awq")


def wanted(recipe) -> bool:
    return recipe.smoothquant is not None or recipe.weight_rounding in GPTQ_AWQ


def smooth_plan(recipe, module, batches, skip, runtime) -> tuple[tuple, list | None, dict]:
    """(names SmoothQuant skips, names it guards, facts) from how ``runtime`` quantizes each
    Linear's input under ``recipe`` (``edgeq.quantize.float_ops``: the runtime's declared
    ``float_ops_auto`` / ``dynamic_ops_auto`` tables or the recipe's lists). The FFN down
    projection kept float: not smoothed (its ``Smooth`` would be a float multiply for
    nothing); run as dynamic int8 (input quantized per inference): the recipe's alpha
    unguarded (the guard simulates static per-tensor int8; MiniLM-L6 on LiteRT, 64 / 64
    sentences: its stronger alphas there cost 0.0008 mean cosine); quantized statically
    (ONNX Runtime) like every other Linear: guarded (``smoothquant.choose_alpha``). No
    runtime: every Linear guarded."""
    from edgeq.quantize import float_ops, smoothquant

    if runtime is None:
        return tuple(skip), None, {}
    names = smoothquant.linear_layers(module, skip)
    down, attention = smoothquant.ffn_down_layers(module, names, batches[0])
    floated = float_ops.resolve(recipe.float_ops, attention, runtime)
    how = "static"
    if "ffn_down" in floated:
        dynamic = float_ops.resolve_dynamic(recipe.dynamic_ops, floated, runtime,
                                            recipe.float_ops)
        how = "dynamic" if "ffn_down" in dynamic else "float"
    guarded = [n for n in names if how != "dynamic" or n not in down]
    extra = tuple(down) if how == "float" else ()
    return tuple(skip) + extra, guarded, {"ffn_down_input": how, "ffn_down_layers": len(down)}


def apply(recipe, module, batches, skip, progress=None, grid=None, runtime=None) -> dict:
    """Run the passes on ``module`` in place over calibration ``batches`` (lists of input
    tensors); ``skip``: module names kept float; ``grid``: the target's weight grid (None:
    ``gptq.grid_of(recipe)``); ``runtime``: the target's (which Linears it quantizes how,
    ``smooth_plan``). Returns facts for the manifest."""
    from edgeq.quantize import awq, gptq, smoothquant

    facts: dict = {}
    if recipe.smoothquant is not None:
        task = progress.task(f"SmoothQuant (alpha {recipe.smoothquant})") if progress else None
        sq_skip, guarded, plan = smooth_plan(recipe, module, batches, skip, runtime)
        if task is None:
            facts["smoothquant"] = smoothquant.smooth(module, batches, recipe.smoothquant,
                                                      sq_skip, guarded)
        else:
            with task:
                facts["smoothquant"] = smoothquant.smooth(module, batches, recipe.smoothquant,
                                                          sq_skip, guarded)
        facts["smoothquant"].update(plan)
    if recipe.weight_rounding in GPTQ_AWQ:
        names = smoothquant.linear_layers(module, skip)
        grid = grid or gptq.grid_of(recipe)
        run = (lambda adv=None: gptq.gptq(module, batches, names, grid, advance=adv)) \
            if recipe.weight_rounding == "gptq" else \
            (lambda adv=None: awq.awq(module, batches, names, grid, advance=adv))
        if progress is None:
            facts["weights"] = run()
        else:
            with progress.task(f"{recipe.weight_rounding.upper()} on {len(names)} linear "
                               "layers", total=len(names)) as advance:
                facts["weights"] = run(advance)
        facts["weights"]["grid"] = dataclasses.asdict(grid)  # the target's, as rounded on
    return facts
