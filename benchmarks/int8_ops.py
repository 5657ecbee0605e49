"""Does the runtime run a transformer's softmax, mask add, layer norm and FFN down
projection as int8 ops? Read from the artifact as the runtime will execute it:

* ExecuTorch (.pte): each XNNPACK delegate blob's serialized XNNGraph (decoded with the
  schema and flatc that the executorch wheel ships) gives every XNNPACK node and the datatype
  of its input values (qint8 vs fp32, with Convert nodes where int8 meets float); ops left
  outside the delegate (``aten::native_layer_norm``) run in ExecuTorch's float kernels.
* ONNX Runtime (.onnx): the graph after ORT's own optimizations at the session's level
  (``ORT_ENABLE_ALL``, as ``edgeq.runtimes.onnx.session`` opens it, CPU provider): a QDQ
  pattern ORT fuses becomes a quantized kernel (QLinearSoftmax, QLinearAdd, QGemm ...),
  one it does not stays DequantizeLinear -> float op -> QuantizeLinear.
* LiteRT (.tflite): the interpreter's op list with tensor types, and which ops the XNNPACK
  delegate took (``edgeq.runtimes.tflite.coverage``'s walk).

Each kind maps to ``{"runs": "int8" | "float" | "mixed" | "absent", "int8": n, "float": n}``
(plus ``"delegated"`` for LiteRT: how many of them XNNPACK runs; the rest run in LiteRT's
builtin kernels)."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

KINDS = ("softmax", "layer_norm", "mask_add", "ffn_down")


def verdict(int8: int, flt: int) -> str:
    return "int8" if int8 and not flt else "float" if flt and not int8 else \
        "mixed" if int8 else "absent"


def _entry(int8: int, flt: int, **extra) -> dict:
    return {"runs": verdict(int8, flt), "int8": int8, "float": flt, **extra}


def inspect(target: str, path: Path) -> dict:
    kind = target.split("-")[0]
    return {"executorch": inspect_pte, "onnx": inspect_onnx,
            "tflite": inspect_tflite}[kind](Path(path))


# -- ExecuTorch ------------------------------------------------------------------------------

def _xnn_graphs(path: Path) -> tuple[list, list[str]]:
    """(decoded XNNGraph dicts, names of the ops run outside any delegate)."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import (
        XNNHeader, _get_schema_bytes)
    from executorch.exir._serialize._flatbuffer import _get_flatc_path
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(path.read_bytes()).program
    plan = program.execution_plan[0]
    outside = []
    for chain in plan.chains:
        for ins in chain.instructions:
            op = getattr(ins.instr_args, "op_index", None)
            if op is not None and hasattr(ins.instr_args, "args"):
                outside.append(plan.operators[op].name)
    graphs = []
    with tempfile.TemporaryDirectory() as d:
        schema = Path(d, "schema.fbs")
        schema.write_bytes(_get_schema_bytes())
        for i, blob in enumerate(program.backend_delegate_data):
            b = blob.data
            h = XNNHeader.from_bytes(b[:XNNHeader.EXPECTED_LENGTH])
            Path(d, f"g{i}.bin").write_bytes(
                b[h.flatbuffer_offset:h.flatbuffer_offset + h.flatbuffer_size])
            subprocess.run([_get_flatc_path(), "--json", "--strict-json", "--raw-binary",
                            "-o", d, str(schema), "--", str(Path(d, f"g{i}.bin"))],
                           check=True, capture_output=True)
            text = Path(d, f"g{i}.json").read_text()  # flatc writes inf / nan bare
            text = re.sub(r"(?<![\w.\"])(-?)inf\b", r"\1Infinity", text)
            graphs.append(json.loads(re.sub(r"(?<![\w.\"])nan\b", "NaN", text)))
    return graphs, outside


def inspect_pte(path: Path) -> dict:
    graphs, outside = _xnn_graphs(path)
    counts = {k: [0, 0] for k in KINDS}  # [int8, float]
    for g in graphs:
        dtype = {}
        for v in g.get("xvalues", []):
            u = v["xvalue_union"]
            tv = u.get("tensor_value", u)
            dtype[tv.get("id_out", 0)] = tv.get("datatype", "xnn_datatype_fp32")
        nodes = [(n["xnode_union_type"], n["xnode_union"]) for n in g.get("xnodes", [])]
        producer = {u.get("output_id", 0): (t, u) for t, u in nodes}

        def src(u, key, skip=("XNNConvert",)):
            """The producer of ``u``'s input ``key``, past Converts (int8 <-> fp32) and,
            with ``skip`` naming it, SmoothQuant's per-channel Multiply."""
            p = producer.get(u.get(key, 0))
            for _ in range(3):
                if not p or p[0] not in skip:
                    return p
                p = producer.get(p[1].get("input_id", p[1].get("input1_id", 0)))
            return p

        def q(u, key) -> bool:
            return "qint8" in dtype.get(u.get(key, 0), "") or \
                "qcint8" in dtype.get(u.get(key, 0), "")

        for t, u in nodes:
            if t == "XNNSoftmax":
                counts["softmax"][0 if q(u, "input_id") else 1] += 1
                p = src(u, "input_id")
                if p and p[0] == "XNNAdd":
                    counts["mask_add"][0 if q(p[1], "input1_id") else 1] += 1
            elif t == "XNNFullyConnected":
                p = src(u, "input1_id", ("XNNConvert", "XNNMultiply"))
                if p and p[0] == "XNNGelu":
                    counts["ffn_down"][0 if q(u, "input1_id") else 1] += 1
    # XNNPACK has no layer norm: ExecuTorch's portable / optimized float kernel runs it.
    counts["layer_norm"][1] += sum(1 for n in outside if "layer_norm" in n)
    out = {k: _entry(*v) for k, v in counts.items()}
    out["layer_norm"]["where"] = "aten::native_layer_norm outside the XNNPACK delegate"
    return out


# -- ONNX Runtime ---------------------------------------------------------------------------

MATMULS = {"MatMul", "Gemm", "FusedMatMul", "QGemm", "QLinearMatMul", "MatMulInteger",
           "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulNBits"}
NORMS = {"LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
         "SkipSimplifiedLayerNormalization"}
GELUS = {"Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Erf"}
PASS = {"QuantizeLinear", "DequantizeLinear", "Reshape", "Cast", "Transpose", "Squeeze",
        "Unsqueeze"}


def _int8_onnx(op_type: str) -> bool:
    return op_type.startswith("QLinear") or op_type in {
        "QGemm", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
        "QAttention", "QEmbedLayerNormalization"}


def optimized_onnx(path: Path, out: Path):
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


def inspect_onnx(path: Path) -> dict:
    with tempfile.TemporaryDirectory() as d:
        model = optimized_onnx(path, Path(d, "opt.onnx"))
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}

    def back(name: str, through=PASS, hops: int = 4):
        """The first producer of ``name`` that is not a Q / DQ / reshape-like op."""
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

    counts = {k: [0, 0] for k in KINDS}
    for n in nodes:
        q = 0 if _int8_onnx(n.op_type) else 1
        if n.op_type in ("Softmax", "QLinearSoftmax"):
            counts["softmax"][q] += 1
            p = back(n.input[0])
            if p is not None and p.op_type in ("Add", "QLinearAdd"):
                counts["mask_add"][0 if _int8_onnx(p.op_type) else 1] += 1
        elif n.op_type in NORMS:
            counts["layer_norm"][q] += 1
        elif n.op_type in MATMULS and after_gelu(n):
            counts["ffn_down"][q] += 1
    return {k: _entry(*v) for k, v in counts.items()}


# -- LiteRT ---------------------------------------------------------------------------------

def inspect_tflite(path: Path) -> dict:
    import numpy as np

    from edgeq.runtimes.tflite.session import load_interpreter

    it = load_interpreter(model_content=path.read_bytes(), num_threads=1)
    nodes = it._get_ops_details()
    dtype = {t["index"]: t["dtype"] for t in it.get_tensor_details()}
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    ops = [n for n in nodes if n["op_name"] != "DELEGATE"]
    producer = {int(t): n for n in ops for t in n["outputs"]}
    by_index = {n["index"]: n for n in ops}
    delegated: set = set()  # as edgeq.runtimes.tflite.coverage.xnnpack_delegation walks it
    for d in delegates:
        boundary = {int(t) for t in d["inputs"]}
        stack = [producer[int(t)]["index"] for t in d["outputs"] if int(t) in producer]
        while stack:
            idx = stack.pop()
            if idx in delegated:
                continue
            delegated.add(idx)
            stack += [producer[int(t)]["index"] for t in by_index[idx]["inputs"]
                      if int(t) >= 0 and int(t) not in boundary and int(t) in producer]

    def is_int8(n) -> bool:
        ins = [int(t) for t in n["inputs"] if int(t) >= 0]
        return bool(ins) and dtype.get(ins[0]) in (np.int8, np.uint8, np.int16)

    def back(t: int, hops: int = 3, through=("QUANTIZE", "DEQUANTIZE", "RESHAPE")):
        for _ in range(hops):
            p = producer.get(int(t))
            if p is None or p["op_name"] not in through:
                return p
            t = p["inputs"][0]
        return None

    counts = {k: [0, 0, 0] for k in KINDS}  # int8, float, delegated

    def add(kind, n):
        counts[kind][0 if is_int8(n) else 1] += 1
        counts[kind][2] += n["index"] in delegated

    for n in ops:
        name = n["op_name"]
        if name == "SOFTMAX":
            add("softmax", n)
            p = back(n["inputs"][0])
            if p is not None and p["op_name"] == "ADD":
                add("mask_add", p)
        elif name == "RSQRT":  # litert-torch decomposes LayerNorm: mean, var, rsqrt ...
            add("layer_norm", n)
        elif name == "FULLY_CONNECTED":
            p = back(n["inputs"][0], 4, ("QUANTIZE", "DEQUANTIZE", "RESHAPE", "MUL"))
            if p is not None and p["op_name"] == "GELU":  # (MUL: SmoothQuant's scale)
                add("ffn_down", n)
    return {k: _entry(a, b, delegated=c) for k, (a, b, c) in counts.items()}
