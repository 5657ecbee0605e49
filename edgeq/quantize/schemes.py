"""Dynamic and weight-only quantization schemes, the runtime-neutral part: recipe checks,
which layers are quantized, the group-size check and the manifest block. Each runtime's
``schemes`` module (``edgeq.runtimes.<rt>.schemes``) does the quantizing and says what
its runtime really executes.

Layers: ``nn.Linear`` only (what issue #6 asks for: Linear-heavy models, the layers whose
weights dominate a transformer's size). Convolutions and embedding tables stay float;
``keep_float`` patterns leave chosen Linear layers float too.

* ``dynamic``: int8 symmetric weights (per channel, or per tensor), activations quantized
  to int8 at run time from each input's own range: no calibration data.
* ``weight-only``: int8 or int4 symmetric weights, per channel (int8) or per group of
  ``group_size`` input features (32, 64 or 128; the only granularity for int4); float
  activations where the runtime has such a kernel. Where it has not (XNNPACK, LiteRT),
  the runtime runs the same weights with int8 activations quantized at run time, and the
  manifest's ``quantization.executed_as`` says so.
"""
from __future__ import annotations

import dataclasses

from edgeq.errors import BadInput

SCHEME_METHODS = ("dynamic", "weight-only")


def check_recipe(r, where: str):
    """The dynamic / weight-only fields of recipe ``r`` checked (one-line BadInput naming
    ``where``); returns ``r`` with ``activation_bits`` set to what the method means (8 for
    dynamic, 32 for float activations)."""
    from edgeq.recipes import GROUP_SIZES

    def fail(msg: str) -> BadInput:
        return BadInput(f"recipe {where}: {msg}")

    if r.weight_bits not in (8, 4):
        raise fail(f"weight_bits {r.weight_bits} is not available for method {r.method}; "
                   "use 8 or 4")
    if r.method == "dynamic":
        if r.weight_bits != 8:
            raise fail("dynamic quantization has int8 weights; for 4-bit weights use method "
                       "weight-only (e.g. --recipe int4-w-g32)")
        if r.weight_granularity == "per-group":
            raise fail("dynamic int8 weights are per-channel or per-tensor; per-group is for "
                       "method weight-only")
    else:
        if r.weight_granularity == "per-tensor":
            raise fail("weight-only weights are per-channel (int8) or per-group; per-tensor "
                       "is not offered")
        if r.weight_bits == 4 and r.weight_granularity != "per-group":
            raise fail("int4 weights are per-group: set weight_granularity per-group and "
                       "group_size 32, 64 or 128 (or use --recipe int4-w-g32)")
    if r.weight_granularity == "per-group" and (isinstance(r.group_size, bool)
                                                or r.group_size not in GROUP_SIZES):
        raise fail(f"group_size {r.group_size} is not one of "
                   f"{', '.join(map(str, GROUP_SIZES))}")
    if r.equalize or r.bias_correction or r.weight_rounding == "adaround":
        raise fail(f"equalize, bias_correction and adaround are static-int8 passes; method "
                   f"{r.method} does not take them")
    if r.io_dtype == "int8":
        raise fail(f"io_dtype int8 needs static int8 activations; method {r.method} keeps "
                   "a float interface (use auto or float)")
    return dataclasses.replace(r, activation_bits=8 if r.method == "dynamic" else 32)


def is_scheme(recipe) -> bool:
    """Whether ``recipe`` is dynamic or weight-only (handled by a runtime's schemes)."""
    return getattr(recipe, "method", None) in SCHEME_METHODS


def check_request(recipe, qat) -> None:
    """QAT trains fake-quantized static int8; a dynamic / weight-only recipe cannot use it."""
    if qat is not None:
        raise BadInput(f"recipe '{recipe.name}' is {recipe.method} quantization, which needs "
                       "no training: drop --qat-data (QAT is for static int8 recipes)")


def linear_layers(module, keep_float=()) -> list[dict]:
    """``{"name", "in_features", "out_features"}`` of every ``nn.Linear`` in ``module`` not
    matched by the ``keep_float`` patterns (resolved: a pattern matching no module is
    BadInput). BadInput when none is left: nothing would be quantized."""
    import torch

    from edgeq.quantize.pt2e import resolve_keep_float, under

    keep = resolve_keep_float(module, keep_float)
    layers = [{"name": n, "in_features": m.in_features, "out_features": m.out_features}
              for n, m in module.named_modules()
              if isinstance(m, torch.nn.Linear) and not under(n, keep)]
    if not layers:
        raise BadInput("the model has no Linear layer to quantize" +
                       (" outside --keep-float" if keep else "") +
                       "; dynamic and weight-only recipes quantize Linear layers only "
                       "(use --recipe int8 for convolutions)")
    return layers


def check_group_size(recipe, layers: list[dict]) -> None:
    """BadInput naming the first layer whose ``in_features`` the recipe's group size does
    not divide (each group of input features shares one scale)."""
    if recipe.weight_granularity != "per-group":
        return
    gs = recipe.group_size
    for layer in layers:
        if layer["in_features"] % gs:
            fits = [g for g in (32, 64, 128) if layer["in_features"] % g == 0]
            raise BadInput(
                f"group size {gs} does not divide in_features {layer['in_features']} of "
                f"layer '{layer['name']}'; use " +
                (f"group_size {' or '.join(map(str, fits))}" if fits else
                 "int8-w (per channel)") + f" or --keep-float {layer['name']}")


def describe(recipe, layers: list[dict], executed_as: str, activations: str,
             **extra) -> dict:
    """The manifest's ``quantization`` block for a dynamic / weight-only artifact: the
    scheme asked for, what the runtime executes, and the layers quantized."""
    block = {"scheme": recipe.method, "weight_bits": recipe.weight_bits,
             "weight_granularity": recipe.weight_granularity,
             "group_size": recipe.group_size if recipe.weight_granularity == "per-group"
             else None,
             "weight_symmetric": True, "activations": activations,
             "executed_as": executed_as, "layers_quantized": len(layers),
             "layers": [layer["name"] for layer in layers],
             "weights_quantized": sum(layer["in_features"] * layer["out_features"]
                                      for layer in layers)}
    block.update(extra)
    return block
