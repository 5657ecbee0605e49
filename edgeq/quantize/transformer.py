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


def apply(recipe, module, batches, skip, progress=None, grid=None) -> dict:
    """Run the passes on ``module`` in place over calibration ``batches`` (lists of input
    tensors); ``skip``: module names kept float; ``grid``: the target's weight grid (None:
    ``gptq.grid_of(recipe)``). Returns facts for the manifest."""
    from edgeq.quantize import awq, gptq, smoothquant

    facts: dict = {}
    if recipe.smoothquant is not None:
        task = progress.task(f"SmoothQuant (alpha {recipe.smoothquant})") if progress else None
        if task is None:
            facts["smoothquant"] = smoothquant.smooth(module, batches, recipe.smoothquant, skip)
        else:
            with task:
                facts["smoothquant"] = smoothquant.smooth(module, batches, recipe.smoothquant,
                                                          skip)
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
