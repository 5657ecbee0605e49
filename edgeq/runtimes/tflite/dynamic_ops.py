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
    from ai_edge_litert import schema_py_generated as fb

    m = fb.Model.GetRootAs(content, 0)
    sg = m.Subgraphs(0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    producer: dict[int, tuple[str, object]] = {}
    out = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        c = m.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "")
        ins = [int(t) for t in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
        for t in outs:
            producer[t] = (name, op)
        if name != "FULLY_CONNECTED" or len(ins) < 2 or sg.Tensors(ins[0]).Type() != 0 \
                or sg.Tensors(ins[1]).Type() != 0:  # float input and float weights
            continue
        src = producer.get(ins[0])
        for _ in range(4):
            if src is None or src[0] not in _THROUGH:
                break
            src = producer.get(int(src[1].Inputs(0)))
        if src is not None and src[0] == "GELU":
            out.append(";".join(sg.Tensors(t).Name().decode() for t in outs) + ";")
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
    kept = tuple(keep_float or ())
    pairs = [(s, m) for s, m in zip(scopes, modules)
             if not any(m == k or m.startswith(k + ".") for k in kept)]
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
    from ai_edge_litert import schema_py_generated as fb

    m = fb.Model.GetRootAs(content, 0)
    sg = m.Subgraphs(0)
    want, n = set(scopes), 0
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        outs = [int(t) for t in op.OutputsAsNumpy()] if op.OutputsLength() else []
        if ";".join(sg.Tensors(t).Name().decode() for t in outs) + ";" in want \
                and op.InputsLength() >= 2:
            n += (sg.Tensors(int(op.Inputs(0))).Type() == 0
                  and sg.Tensors(int(op.Inputs(1))).Type() == 9)
    return n
