"""Per-operator costs of a ``.tflite`` for the estimator (``edgeq profile --estimate``).

Read from the flatbuffer (``coverage.read_ops``), so an existing ``.tflite`` given as MODEL
gets costs too. Each operator becomes one ``edgeq.profiling.estimate.NodeCost``: FLOPs (a
multiply-add counts 2), bytes read and written at the tensors' own types, weights being
the constant inputs. Fused activations live in the op's options in LiteRT, so there is
nothing to fuse here. LiteRT's built-in kernels are optimised (not scalar reference code),
so every operator is costed as a delegate kernel whether XNNPACK takes it or not."""
from __future__ import annotations

import math

from edgeq.runtimes.tflite.coverage import F16, I8, U8, read_ops

_GEMM = {"FULLY_CONNECTED", "BATCH_MATMUL"}
_POOL = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"}
_SOFTMAX = {"SOFTMAX", "LOG_SOFTMAX"}
_NORM = {"L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION"}
_CONVERT = {"QUANTIZE", "DEQUANTIZE", "CAST"}
_MOVE = {"RESHAPE", "TRANSPOSE", "CONCATENATION", "PAD", "PADV2", "SQUEEZE", "EXPAND_DIMS",
         "STRIDED_SLICE", "SLICE", "GATHER", "SPLIT", "SPLIT_V", "PACK", "UNPACK", "TILE",
         "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH",
         "BROADCAST_TO", "EMBEDDING_LOOKUP"}
_TRANSCENDENTAL = {"LOGISTIC", "TANH", "EXP", "LOG", "HARD_SWISH", "GELU", "SQRT", "RSQRT",
                   "DIV", "POW", "ELU"}
_ITEMSIZE = {F16: 2, I8: 1, U8: 1, 7: 2}  # int16 too; everything else 4 bytes


def _numel(t) -> int:
    return int(math.prod(int(d) for d in t[1])) if t is not None else 0


def _bytes(t) -> int:
    return _numel(t) * _ITEMSIZE.get(t[0], 4) if t is not None else 0


def _kind_flops_k(name: str, ins: list, out) -> tuple[str, int, int]:
    """(kind, flops, multiply-adds per output) of one operator."""
    n_out = _numel(out)
    w = ins[1] if len(ins) > 1 else None
    if name == "CONV_2D" and w is not None and len(w[1]) == 4:  # filter [O, kh, kw, I]
        k = int(math.prod(int(d) for d in w[1][1:]))
        return ("pointwise" if int(w[1][1]) * int(w[1][2]) == 1 else "conv"), 2 * n_out * k, k
    if name == "DEPTHWISE_CONV_2D" and w is not None and len(w[1]) == 4:  # [1, kh, kw, O]
        k = int(w[1][1]) * int(w[1][2])
        return "dwconv", 2 * n_out * k, k
    if name == "TRANSPOSE_CONV" and len(ins) > 2 and ins[1] is not None:  # weights, input
        wt, x = ins[1], ins[2]
        per_in = int(math.prod(int(d) for d in wt[1][:3]))  # O x kh x kw per input element
        flops = 2 * _numel(x) * per_in
        return "conv", flops, round(flops / 2 / max(1, n_out))
    if name in _GEMM and ins and ins[0] is not None and ins[0][1]:
        k = int(ins[0][1][-1])
        return "gemm", 2 * n_out * k, k
    if name in _POOL:
        return "pool", _numel(ins[0]) if ins else n_out, 0
    if name in _SOFTMAX:
        return "softmax", 5 * n_out, 0
    if name in _NORM:
        return "norm", 8 * n_out, 0
    if name in _CONVERT:
        return "convert", 5 * n_out, 0
    if name in _MOVE:
        return "move", 0, 0
    return "eltwise", (4 if name in _TRANSCENDENTAL else 1) * n_out, 0


def tflite_costs(content: bytes) -> dict:
    """The manifest's ``costs`` block (``estimate.cost_summary``) for a ``.tflite``."""
    from edgeq.profiling.estimate import NodeCost, cost_summary

    rows = []
    for i, op in enumerate(read_ops(content)):
        ins = [t for t in op.inputs]
        out = op.outputs[0] if op.outputs else None
        kind, flops, k = _kind_flops_k(op.name, ins, out)
        first = next((t for t in ins if t is not None and not t[2]), None)
        ty = first[0] if first is not None else (out[0] if out is not None else 0)
        if op.name == "QUANTIZE":  # precision of the conversion is the float side's
            ty = 0
        precision = "int8" if ty in (I8, U8) else "fp16" if ty == F16 else "fp32"
        weights = sum(_bytes(t) for t in ins if t is not None and t[2])
        out_bytes = sum(_bytes(t) for t in op.outputs)
        total = sum(_bytes(t) for t in ins if t is not None) + out_bytes
        rows.append(NodeCost(f"{op.name.lower()}_{i}", op.name.lower(), kind, precision,
                             int(flops), int(total), True, int(weights), int(out_bytes), k))
    return cost_summary(rows)
