"""How an .onnx runs a transformer's op kinds (``edgeq.quantize.float_ops``): the graph
after ONNX Runtime's own optimizations at the session's level (``ORT_ENABLE_ALL``, as
``edgeq.runtimes.onnx.session`` opens it, CPU provider). A QDQ unit ORT fuses becomes a
quantized kernel (QLinearSoftmax, QLinearAdd, QGemm ...); one it does not stays
DequantizeLinear -> float op -> QuantizeLinear, i.e. float."""
from __future__ import annotations

import tempfile
from pathlib import Path

from edgeq.quantize.float_ops import FLOAT_OPS, op_entry

MATMULS = {"MatMul", "Gemm", "FusedMatMul", "QGemm", "QLinearMatMul", "MatMulInteger",
           "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits"}
NORMS = {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
         "SkipSimplifiedLayerNormalization"}
GELUS = {"Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Erf"}
PASS = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Cast", "Transpose", "Squeeze",
        "Unsqueeze"}
DYNAMIC = {"DynamicQuantizeMatMul"}  # MatMulIntegerToFloat: a static int8 input, float out


def _int8(op_type: str) -> bool:
    return op_type.startswith("QLinear") or op_type in {
        "QGemm", "MatMulInteger", "MatMulIntegerToFloat", "QAttention",
        "QEmbedLayerNormalization"}


def optimized(path: Path, out: Path):
    """The model as ORT's CPU provider runs it (ORT_ENABLE_ALL, one thread)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return onnx.load(str(out), load_external_data=False)


def inspect(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as d:
        model = optimized(Path(path), Path(d, "opt.onnx"))
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}

    def back(name: str, through=PASS, hops: int = 4):
        """The first producer of ``name`` not in ``through`` (Q / DQ / reshape-like)."""
        for _ in range(hops):
            p = producer.get(name)
            if p is None or p.op_type not in through or not p.input:
                return p
            name = p.input[0]
        return None

    def after_gelu(node) -> bool:
        frontier = [node.input[0]] if node.input else []
        for _ in range(20):  # x * 0.5 * (1 + erf(x / sqrt 2)), each op in its own Q/DQ
            nxt = []
            for name in frontier:
                p = producer.get(name)
                if p is None:
                    continue
                if p.op_type in GELUS:
                    return True
                if p.op_type in PASS | {"Mul", "Add", "Div"}:
                    nxt += list(p.input)
            frontier = nxt
        return False

    counts = {k: [0, 0, 0] for k in FLOAT_OPS}  # int8, float, dynamic

    def add(kind, op_type):
        counts[kind][2 if op_type in DYNAMIC else 0 if _int8(op_type) else 1] += 1

    for n in nodes:
        if n.op_type in ("Softmax", "QLinearSoftmax"):
            add("softmax", n.op_type)
            p = back(n.input[0])
            if p is not None and p.op_type in ("Add", "QLinearAdd"):
                add("mask_add", p.op_type)
            p = back(n.input[0], PASS | {"Add", "QLinearAdd", "Mul", "Div", "QLinearMul"}, 8)
            if p is not None and p.op_type in MATMULS:
                add("qk_matmul", p.op_type)
        elif n.op_type in NORMS:
            add("layer_norm", n.op_type)
        elif n.op_type in MATMULS and after_gelu(n):
            add("ffn_down", n.op_type)
    return {k: op_entry(*v) for k, v in counts.items()}
