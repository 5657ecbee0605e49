"""Dynamic and weight-only recipes on LiteRT (Linear layers, i.e. ``FULLY_CONNECTED`` ops;
see ``edgeq.quantize.schemes``): litert-torch converts the fp32 model, ai-edge-quantizer
rewrites its fully-connected weights.

* ``dynamic``: dynamic-range int8 (``add_dynamic_config``, 8 bits, per channel or per
  tensor): int8 weights, activations quantized at run time by the hybrid kernels. Only
  ``FULLY_CONNECTED`` ops are configured, so embedding tables stay float: LiteRT rejects a
  dynamic-range int8 embedding lookup at load time (non-zero zero point).
* ``weight-only`` int8 per channel: ``add_weight_only_config`` (int8 weights, an explicit
  DEQUANTIZE, float compute).
* ``weight-only`` per group (int4, or int8): ai-edge-quantizer 0.10's policy has no
  float-compute blockwise fully-connected ("Unsupported op for ComputePrecision.FLOAT"),
  so the blockwise weights go through its dynamic config (BLOCKWISE_32 / 64 / 128):
  int8 activations quantized at run time, as XNNPACK's qd8-f32-qb4w. The manifest says so.

NNAPI has no 4-bit ops: int4 is refused for an ``nnapi`` target.
"""
from __future__ import annotations

from edgeq.errors import BadInput
from edgeq.quantize import schemes
from edgeq.runtimes.base import BuildRequest


def build(req: BuildRequest) -> tuple[bytes, dict]:
    """(the quantized .tflite, the manifest's ``quantization`` block) for a dynamic /
    weight-only recipe."""
    from edgeq.runtimes.tflite import convert

    recipe = req.recipe
    schemes.check_request(recipe, req.qat)
    if recipe.weight_bits == 4 and req.target.delegate == "nnapi":
        raise BadInput(f"int4 weight-only is not available for {req.target.name}: NNAPI "
                       "has no 4-bit ops; use tflite-xnnpack or --recipe int8-w")
    if recipe.weight_granularity == "per-group" and recipe.weight_bits != 4:
        raise BadInput(f"int{recipe.weight_bits} per-group weights are not available for "
                       f"{req.target.name}: ai-edge-quantizer's fully-connected policy has "
                       "blockwise int4 only; use int8-w (per channel) or an int4-w-g* recipe")
    if recipe.keep_float:
        raise BadInput(f"--keep-float is not available with {recipe.method} recipes on "
                       "LiteRT yet (ai-edge-quantizer selects ops by tensor name); drop it "
                       "or use an executorch- / onnx- target")
    if req.model.module is None:
        raise BadInput(f"model '{req.model.spec}': {recipe.method} recipes on LiteRT need "
                       "the PyTorch model (an existing .tflite takes --recipe int8)")
    layers = schemes.linear_layers(req.model.module)
    schemes.check_group_size(recipe, layers)
    with req.progress.task(f"converting to LiteRT for {req.target.name}"):
        content = convert.convert(req.model.module, req.model)
    with req.progress.task(f"quantizing {len(layers)} Linear layers ({recipe.name}) with "
                           "ai-edge-quantizer"):
        content, executed, acts = _quantize(content, recipe)
    return content, schemes.describe(recipe, layers, executed, acts,
                                     tool="ai-edge-quantizer " + _version())


def _version() -> str:
    from edgeq.runtimes.base import package_versions

    return package_versions(("ai-edge-quantizer",))["ai-edge-quantizer"]


def _quantize(content: bytes, recipe) -> tuple[bytes, str, str]:
    from ai_edge_quantizer import qtyping, recipe_manager

    from edgeq.runtimes.tflite.convert import run_ai_edge_quantizer

    G = qtyping.QuantGranularity
    rm = recipe_manager.RecipeManager()  # its add_* calls check the config against a policy
    fc = qtyping.TFLOperationName.FULLY_CONNECTED
    what = f"apply {recipe.name}"
    try:
        executed, acts = _configure(rm, fc, G, recipe)
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()),
                     type(e).__name__)
        raise BadInput(f"ai-edge-quantizer could not {what}: {first[:300]}") from e
    return run_ai_edge_quantizer(content, rm, what), executed, acts


def _configure(rm, fc, G, recipe) -> tuple[str, str]:
    """Add the recipe's fully-connected config to ``rm``; (executed_as, activations)."""
    if recipe.weight_granularity == "per-group":
        gran = getattr(G, f"BLOCKWISE_{recipe.group_size}")
        rm.add_dynamic_config(regex=".*", operation_name=fc, num_bits=recipe.weight_bits,
                              granularity=gran)
        executed = (f"int{recipe.weight_bits} weights per block of {recipe.group_size}, int8 "
                    "activations quantized at run time (ai-edge-quantizer has no "
                    "float-compute blockwise fully-connected)")
        acts = "int8, quantized at run time"
    elif recipe.method == "dynamic":
        gran = G.CHANNELWISE if recipe.weight_granularity == "per-channel" else G.TENSORWISE
        rm.add_dynamic_config(regex=".*", operation_name=fc, num_bits=8, granularity=gran)
        executed = "dynamic-range int8: hybrid FULLY_CONNECTED, activations quantized at run time"
        acts = "int8, quantized at run time"
    else:
        rm.add_weight_only_config(regex=".*", operation_name=fc, num_bits=8,
                                  granularity=G.CHANNELWISE)
        executed = "int8 per-channel weights, DEQUANTIZE -> float FULLY_CONNECTED"
        acts = "float"
    return executed, acts


def weight_grid(recipe):
    """The weight grid (``edgeq.quantize.gptq.Grid``) ai-edge-quantizer rounds ``recipe``'s
    fully-connected weights on, so GPTQ / AWQ choose integers it reproduces
    (``uniform_quantize_tensor``): symmetric, scale max|w| / qmax with qmax = 2^(b-1) - 1,
    integers ``rint(w / scale)``; blockwise (int4 per group) scales rounded to bfloat16
    (then float16); int8 narrow range [-127, 127]. litert-torch's converter folds the gamma
    of a LayerNorm feeding a Linear into its weight first (measured on MiniLM-L6: the
    quantized integers are those of W diag(gamma)): ``folds_norm``."""
    from edgeq.quantize import gptq

    if not schemes.is_scheme(recipe):
        return gptq.grid_of(recipe)
    if recipe.weight_granularity == "per-group":
        return gptq.Grid(recipe.weight_bits, recipe.group_size, -2 ** (recipe.weight_bits - 1),
                         2 ** (recipe.weight_bits - 1) - 1,
                         float(2 ** (recipe.weight_bits - 1) - 1), scale_dtype="bfloat16",
                         folds_norm=True)
    return gptq.Grid.restricted(8, -1 if recipe.weight_granularity == "per-tensor" else None)
