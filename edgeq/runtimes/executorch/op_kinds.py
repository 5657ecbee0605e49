"""How a .pte runs a transformer's op kinds (``edgeq.quantize.float_ops``): each XNNPACK
delegate blob's serialized XNNGraph (decoded with the schema and flatc that the executorch
wheel ships) gives every XNNPACK node and the datatype of its input values (qint8 vs fp32,
with Convert nodes where int8 meets float); ops left outside the delegate
(``aten::native_layer_norm``) run in ExecuTorch's float kernels."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from edgeq.quantize.float_ops import FLOAT_OPS, op_entry


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


def inspect(path: Path) -> dict:
    graphs, outside = _xnn_graphs(path)
    counts = {k: [0, 0, 0] for k in FLOAT_OPS}  # [int8, float, dynamic]
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
            for _ in range(6):
                if not p or p[0] not in skip:
                    return p
                p = producer.get(p[1].get("input_id", p[1].get("input1_id", 0)))
            return p if p and p[0] not in skip else None

        def q(u, key) -> bool:
            return "qint8" in dtype.get(u.get(key, 0), "") or \
                "qcint8" in dtype.get(u.get(key, 0), "")

        for t, u in nodes:
            if t == "XNNSoftmax":
                counts["softmax"][0 if q(u, "input_id") else 1] += 1
                p = src(u, "input_id")
                if p and p[0] == "XNNAdd":
                    counts["mask_add"][0 if q(p[1], "input1_id") else 1] += 1
                p = src(u, "input_id", ("XNNConvert", "XNNAdd", "XNNMultiply",
                                        "XNNStaticReshape"))
                if p and p[0] == "XNNBatchMatrixMultiply":
                    counts["qk_matmul"][0 if q(p[1], "input1_id") else 1] += 1
            elif t == "XNNFullyConnected":
                p = src(u, "input1_id", ("XNNConvert", "XNNMultiply"))
                if p and p[0] == "XNNGelu":  # qdint8: quantized per inference (dynamic)
                    dyn = "qdint8" in dtype.get(u.get("input1_id", 0), "")
                    counts["ffn_down"][2 if dyn else 0 if q(u, "input1_id") else 1] += 1
    # XNNPACK has no layer norm: ExecuTorch's portable / optimized float kernel runs it.
    counts["layer_norm"][1] += sum(1 for n in outside if "layer_norm" in n)
    out = {k: op_entry(*v) for k, v in counts.items()}
    out["layer_norm"]["where"] = "aten::native_layer_norm outside the XNNPACK delegate"
    return out
