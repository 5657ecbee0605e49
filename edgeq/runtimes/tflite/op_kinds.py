"""How a .tflite runs a transformer's op kinds (``edgeq.quantize.float_ops``): the
interpreter's op list with tensor types, and which ops the XNNPACK delegate took
(``edgeq.runtimes.tflite.coverage.delegated_ops``); each kind also counts ``delegated``
(how many XNNPACK runs; the rest run in LiteRT's builtin kernels)."""
from __future__ import annotations

from pathlib import Path

from edgeq.quantize.float_ops import FLOAT_OPS, op_entry

_QUANT = ("QUANTIZE", "DEQUANTIZE", "RESHAPE")


def inspect(path: Path) -> dict:
    import numpy as np

    from edgeq.runtimes.tflite.coverage import delegated_ops

    ops, delegated, it = delegated_ops(Path(path).read_bytes())
    dtype = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    producer = {int(t): n for n in ops for t in n["outputs"]}
    ints = (np.int8, np.uint8, np.int16)

    def typ(n, i: int):
        ins = [int(t) for t in n["inputs"]]
        return dtype.get(ins[i]) if len(ins) > i and ins[i] >= 0 else None

    def back(t: int, hops: int = 3, through=_QUANT):
        for _ in range(hops):
            p = producer.get(int(t))
            if p is None or p["op_name"] not in through:
                return p
            t = p["inputs"][0]
        return None

    counts = {k: [0, 0, 0, 0] for k in FLOAT_OPS}  # int8, float, dynamic, delegated

    def add(kind, n, dynamic=False):
        counts[kind][2 if dynamic else 0 if typ(n, 0) in ints else 1] += 1
        counts[kind][3] += n["index"] in delegated

    for n in ops:
        name = n["op_name"]
        if name == "SOFTMAX":
            add("softmax", n)
            p = back(n["inputs"][0])
            if p is not None and p["op_name"] == "ADD":
                add("mask_add", p)
            p = back(n["inputs"][0], 6, _QUANT + ("ADD", "MUL"))
            if p is not None and p["op_name"] == "BATCH_MATMUL":
                add("qk_matmul", p)
        elif name == "RSQRT":  # litert-torch decomposes LayerNorm: mean, var, rsqrt ...
            add("layer_norm", n)
        elif name == "FULLY_CONNECTED":
            p = back(n["inputs"][0], 4, _QUANT + ("MUL",))
            if p is not None and p["op_name"] == "GELU":  # (MUL: SmoothQuant's scale)
                add("ffn_down", n, typ(n, 0) not in ints and typ(n, 1) in ints)
    return {k: op_entry(a, b, c, delegated=d) for k, (a, b, c, d) in counts.items()}
