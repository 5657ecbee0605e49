"""The recipe's ``dynamic_ops`` on LiteRT (``edgeq.quantize.float_ops``): FFN down
projections that static int8 kept float are given int8 weights and run as dynamic-range
(hybrid) FULLY_CONNECTED: the input is quantized per inference inside the op, the output
is float, and XNNPACK runs it with its qd8-f32-qc8w kernels.

The static model is converted first (litert-torch, PT2E), then ai-edge-quantizer rewrites
just those ops in the .tflite (it accepts a partly quantized model and leaves the
quantized tensors as they are). An op is picked by its scope (its output tensor names),
found structurally: a float FULLY_CONNECTED whose input comes from a GELU (through
SmoothQuant's MUL, reshapes or a dequantize). They are matched in order with the PyTorch
graph's FFN down projections, so a layer the recipe keeps in float (``keep_float``)
stays float; when the counts differ nothing is changed and the manifest says why.
"""
from __future__ import annotations

import re

EXECUTED = ("dynamic-range int8: int8 per-channel weights (whatever the recipe's "
            "granularity), input quantized per inference, float output (hybrid "
            "FULLY_CONNECTED)")
_THROUGH = ("MUL", "RESHAPE", "DEQUANTIZE", "QUANTIZE")


def ffn_down_scopes(content: bytes) -> list[str]:
    """Scopes (ai-edge-quantizer's op names: output tensor names joined by ``;``) of the
    float FULLY_CONNECTED ops fed by a GELU, in execution order."""
    from edgeq.runtimes.tflite.coverage import F32, read_ops

    ops = read_ops(content)
    producer = {t: op for op in ops for t in op.output_ids}
    out = []
    for op in ops:
        if op.name != "FULLY_CONNECTED" or len(op.inputs) < 2 or \
                not all(t is not None and t[0] == F32 for t in op.inputs[:2]):
            continue  # float input and float weights only
        src = producer.get(op.input_ids[0])
        for _ in range(4):
            if src is None or src.name not in _THROUGH:
                break
            src = producer.get(src.input_ids[0])
        if src is not None and src.name == "GELU":
            out.append(op.scope)
    return out


def select(scopes: list[str], modules: list[str], keep_float) -> tuple[list[str], list[str],
                                                                          str | None]:
    """(scopes to make dynamic, their module paths, why none when nothing matched): the
    .tflite's FFN down projections zipped in order with the PyTorch graph's, minus those
    under a ``keep_float`` module."""
    if not modules:
        return [], [], None
    if len(scopes) != len(modules):
        return [], [], (f"found {len(scopes)} float FFN down projections in the .tflite for "
                        f"{len(modules)} in the PyTorch graph; kept them float")
    from edgeq.quantize.pt2e import under

    pairs = [(s, m) for s, m in zip(scopes, modules) if not under(m, keep_float or ())]
    return [s for s, _ in pairs], [m for _, m in pairs], None


def apply(content: bytes, scopes: list[str]) -> bytes:
    """``content`` with the FULLY_CONNECTED ops named by ``scopes`` made dynamic-range int8
    (per-channel int8 weights)."""
    from ai_edge_quantizer import qtyping, recipe_manager

    from edgeq.errors import RuntimeFailure
    from edgeq.runtimes.tflite.convert import run_ai_edge_quantizer

    if not scopes:
        return content
    rm = recipe_manager.RecipeManager()
    regex = "^(?:" + "|".join(re.escape(s) for s in scopes) + ")$"
    rm.add_dynamic_config(regex=regex, operation_name=qtyping.TFLOperationName.FULLY_CONNECTED,
                          num_bits=8, granularity=qtyping.QuantGranularity.CHANNELWISE)
    return run_ai_edge_quantizer(content, rm, "make the FFN down projections dynamic int8 "
                                 "(set dynamic_ops: [] in the recipe to keep them float)",
                                 RuntimeFailure)


def hybrid_count(content: bytes, scopes: list[str]) -> int:
    """How many of ``scopes`` are now FULLY_CONNECTED with float input and int8 weights."""
    from edgeq.runtimes.tflite.coverage import F32, I8, read_ops

    want = set(scopes)
    return sum(1 for op in read_ops(content) if op.scope in want and len(op.inputs) >= 2
               and op.inputs[0][0] == F32 and op.inputs[1][0] == I8)
