"""Dynamic and weight-only recipes on ExecuTorch with the XNNPACK delegate (Linear layers,
see ``edgeq.quantize.schemes``).

* ``dynamic``: PT2E with ``XNNPACKQuantizer`` and
  ``get_symmetric_quantization_config(is_dynamic=True)``: int8 weights per channel (or per
  tensor), activations quantized per tensor at run time; XNNPACK's dynamic fully-connected
  kernels (qd8-f32-qc8w).
* ``weight-only``: torchao ``quantize_`` with ``Int8DynamicActivationIntxWeightConfig``
  (int8 per channel, or int4 / int8 per group), which XNNPACK runs as qd8-f32-qc8w /
  qb4w: int8 activations quantized per token at run time. Measured with executorch 1.5.1:
  XNNPACK has no float-activation quantized-weight linear; torchao's weight-only configs
  (``IntxWeightOnlyConfig``) lower to a .pte holding fp32 weights (no size win, 109 KB
  for a 104 KB fp32 MLP) and outputs that drift (cosine 0.85 to fp32). So ``int4-w-g32``
  here is "8da4w", and the manifest says it.
"""
from __future__ import annotations

import copy

from edgeq.errors import BadInput
from edgeq.quantize import schemes
from edgeq.runtimes.base import BuildRequest, Delegation

EXECUTED_AS = {
    "dynamic": "int8 weights, int8 activations quantized per tensor at run time "
               "(XNNPACK dynamic fully-connected)",
    "weight-only": "int{bits} weights {gran}, int8 activations quantized per token at run "
                   "time (XNNPACK {kernel}; it has no float-activation quantized-weight "
                   "linear)",
}


def build(rt, req: BuildRequest) -> Delegation:
    """Quantize ``req.model`` per the dynamic / weight-only recipe and lower it with XNNPACK
    (``rt`` is the ExecuTorch runtime); the artifact is written atomically."""
    from edgeq.artifacts import atomic_write

    recipe = req.recipe
    schemes.check_request(recipe, req.qat)
    if req.target.delegate != "xnnpack":
        raise BadInput(f"{recipe.name} ({recipe.method}) is not available for "
                       f"{req.target.name}; use executorch-xnnpack")
    if recipe.method == "dynamic" and recipe.weight_granularity == "per-tensor":
        # Measured: XNNPACK leaves per-tensor dynamic linears undelegated, and the portable
        # kernels have no out variant for their quantize ops: emission fails.
        raise BadInput(f"per-tensor dynamic weights are not available for {req.target.name}: "
                       "XNNPACK's dynamic linear is per channel; use --recipe int8-dynamic")
    if recipe.weight_granularity == "per-group" and recipe.weight_bits != 4:
        raise BadInput(f"int{recipe.weight_bits} per-group weights are not available for "
                       f"{req.target.name}: XNNPACK groups 4-bit weights only; use int8-w "
                       "(per channel) or an int4-w-g* recipe")
    if req.model.module is None:
        raise BadInput(f"model '{req.model.spec}': {recipe.method} recipes on ExecuTorch "
                       "need the PyTorch model")
    module = copy.deepcopy(req.model.module).eval()
    layers = schemes.linear_layers(module, recipe.keep_float)
    schemes.check_group_size(recipe, layers)
    names = {layer["name"] for layer in layers}
    with req.progress.task(f"quantizing {len(layers)} Linear layers ({recipe.name})"):
        if recipe.method == "dynamic":
            module = _dynamic(module, req.model.example_inputs, recipe, names)
            executed = EXECUTED_AS["dynamic"]
            activations = "int8, quantized per tensor at run time"
        else:
            _weight_only(module, recipe, names)
            per_group = recipe.weight_granularity == "per-group"
            executed = EXECUTED_AS["weight-only"].format(
                bits=recipe.weight_bits,
                gran=f"per group of {recipe.group_size}" if per_group else "per channel",
                kernel=f"qd8-f32-qb{recipe.weight_bits}w" if per_group
                else f"qd8-f32-qc{recipe.weight_bits}w")
            activations = "int8, quantized per token at run time"
    program, delegation = rt.export_and_lower(module, req, "xnnpack")
    delegation.details["quantization"] = schemes.describe(
        recipe, layers, executed, activations,
        tool="XNNPACKQuantizer (PT2E, is_dynamic)" if recipe.method == "dynamic" else
        "torchao quantize_ Int8DynamicActivationIntxWeightConfig")
    atomic_write(req.out_path, program)
    return delegation


def _dynamic(module, example_inputs, recipe, names: set[str]):
    """PT2E dynamic quantization of the Linear layers in ``names``; returns the converted
    graph module. No calibration: one pass over the example inputs fixes nothing but
    lets the observers see a tensor (the ranges are computed at run time)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgeq.quantize import pt2e

    cfg = get_symmetric_quantization_config(
        is_per_channel=recipe.weight_granularity == "per-channel", is_dynamic=True)
    q = XNNPACKQuantizer()
    for name in sorted(names):
        q.set_module_name(name, cfg)
    try:
        with pt2e.quiet_stderr():
            gm = torch.export.export(module, tuple(example_inputs)).module()
            gm = prepare_pt2e(gm, q)
            with torch.no_grad():
                gm(*example_inputs)
            return convert_pt2e(gm)
    except Exception as e:
        raise pt2e.describe_export_error(e, "dynamic quantization (PT2E)") from e


def _weight_only(module, recipe, names: set[str]) -> None:
    """torchao's int8-dynamic-activation / intx-weight config on the Linear layers in
    ``names``, in place."""
    import torch
    from torchao.quantization import quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig

    gran = (PerGroup(recipe.group_size) if recipe.weight_granularity == "per-group"
            else PerAxis(0))
    cfg = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4 if recipe.weight_bits == 4 else torch.int8,
        weight_granularity=gran)
    quantize_(module, cfg, filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear)
              and fqn in names)
