"""ONNX Runtime Mobile: the ORT-format (``.ort``) copy of an artifact, and which nodes each
execution provider would take. The desktop wheel has only the CPU provider, so XNNPACK and
NNAPI coverage is predicted, not observed: NNAPI with ORT's own mobile usability checker,
XNNPACK from the op table of ORT's XNNPACK provider below."""
from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

from edgeq.errors import RuntimeFailure
from edgeq.runtimes.base import Delegation

# What ORT's XNNPACK execution provider takes, from onnxruntime's source (main branch, as in
# the 1.2x/1.3x releases): onnxruntime/core/providers/xnnpack/xnnpack_execution_provider.cc
# (kernel registrations) and detail/node_support_checker.cc (IsNodeSupported). "float" is an
# fp32 node; "qdq" a DequantizeLinear -> op -> QuantizeLinear unit with int8/uint8 tensors
# (QLinearConv, QLinearConvTranspose, QLinearAveragePool, QLinearSoftmax and the u8/s8
# MaxPool/Resize kernels). Gemm and MatMul are fp32 only ("Enable Quant ops" is a TODO there).
XNNPACK_OPS: dict[str, set[str]] = {
    "Conv": {"float", "qdq"}, "ConvTranspose": {"float", "qdq"},
    "MaxPool": {"float", "qdq"}, "AveragePool": {"float", "qdq"},
    "Softmax": {"float", "qdq"}, "Resize": {"float", "qdq"},
    "Gemm": {"float"}, "MatMul": {"float"},
}
# Activations XNNPACK folds into the fp32 Conv / MaxPool / AveragePool that feeds them
# (ClipReluChecker in node_support_checker.cc); never into QDQ units.
XNNPACK_FUSES = {"Relu": {"Conv", "MaxPool", "AveragePool"},
                 "Clip": {"Conv", "MaxPool", "AveragePool"}}
_SPATIAL = {"Conv", "ConvTranspose", "MaxPool", "AveragePool"}  # 2-D (NCHW) only


def to_ort_format(onnx_path: Path, style: str, platform: str = "arm") -> bytes:
    """The ORT-format bytes of ``onnx_path``, converted by ORT's own
    ``convert_onnx_models_to_ort``. ``style``: ``fixed`` bakes all optimisations in (CPU
    provider), ``runtime`` applies the basic ones and saves the rest to be replayed at load
    time (ORT's advice for compiling providers such as NNAPI, so they see plain ONNX ops
    rather than CPU-only fused ones). ``platform`` ``arm`` allows int8 QDQ fusions (phones)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (OptimizationStyle,
                                                              convert_onnx_models_to_ort)

    from edgeq.runtimes.onnx.export import quiet

    styles = {"fixed": OptimizationStyle.Fixed, "runtime": OptimizationStyle.Runtime}
    if style not in styles:
        raise RuntimeFailure(f"target option ort_optimization '{style}' is not fixed or runtime")
    with tempfile.TemporaryDirectory(prefix="edgeq-ort-") as tmp:
        src = Path(tmp) / "in" / "model.onnx"
        src.parent.mkdir()
        shutil.copy(onnx_path, src)
        try:
            with quiet():
                convert_onnx_models_to_ort(src, output_dir=Path(tmp) / "out",
                                           optimization_styles=[styles[style]],
                                           target_platform=platform)
        except Exception as e:
            raise RuntimeFailure(f"ONNX Runtime could not convert the model to ORT format: "
                                 f"{str(e).splitlines()[0][:200]}") from e
        found = sorted((Path(tmp) / "out").glob("*.ort"))
        if not found:
            raise RuntimeFailure("ONNX Runtime's ORT-format conversion wrote no .ort file")
        return found[0].read_bytes()


def basic_optimized(onnx_path: Path, workdir: Path):
    """The model after ORT's basic optimisations (what an ORT-format model converted with
    the ``runtime`` style holds, and what the usability checker analyses), with shapes."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import optimize_model

    out = workdir / "basic.onnx"
    optimize_model(Path(onnx_path), out)
    return onnx.shape_inference.infer_shapes(onnx.load(str(out)))


def cpu_coverage(model) -> Delegation:
    """The CPU execution provider runs every node."""
    n = len(model.graph.node)
    return Delegation(n, n, {})


def nnapi_coverage(model) -> tuple[Delegation, dict]:
    """Nodes ORT's NNAPI provider would take, per ORT's mobile usability checker
    (``check_nnapi_partitions``: op support from nnapi_supported_ops.md plus fixed input
    shapes; per-op caveats, e.g. 2-D Conv only, are listed, not checked)."""
    from onnxruntime.tools.mobile_helpers.usability_checker import check_nnapi_partitions

    from edgeq.runtimes.onnx.export import quiet

    with quiet():
        info = check_nnapi_partitions(model, require_fixed_input_sizes=True)
    taken = {id(n) for group in info.supported_groups for n in group}
    fallback = Counter(n.op_type for n in model.graph.node if id(n) not in taken)
    details = {"predicted_by": "onnxruntime.tools.mobile_helpers.usability_checker",
               "partitions": info.num_partitions,
               "caveats": info.supported_ops_checker.get_caveats()}
    return Delegation(info.num_supported_nodes, info.num_nodes, dict(fallback)), details


def xnnpack_coverage(model) -> tuple[Delegation, dict]:
    """Nodes ORT's XNNPACK provider would take, from ``XNNPACK_OPS``: an fp32 node of a
    listed op, an activation folded into one, or a whole QDQ unit (its DequantizeLinear
    inputs, the op, its QuantizeLinear outputs) around an op listed for ``qdq``. Approximate:
    per-op attribute limits are checked only for rank (2-D), constant Gemm/MatMul weights
    and MaxPool's 1x1 / ceil_mode cases."""
    import onnx

    g = model.graph
    inits = {i.name for i in g.initializer}
    shapes = {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def rank(name):
        vi = shapes.get(name)
        return len(vi.type.tensor_type.shape.dim) if vi is not None else None

    def elem(name):
        vi = shapes.get(name)
        return vi.type.tensor_type.elem_type if vi is not None else None

    def attr(node, key, default=None):
        for a in node.attribute:
            if a.name == key:
                return onnx.helper.get_attribute_value(a)
        return default

    def op_ok(node) -> bool:
        if node.op_type in _SPATIAL and rank(node.input[0]) not in (4, None):
            return False
        if node.op_type == "MaxPool" and (attr(node, "ceil_mode", 0) or
                                          list(attr(node, "kernel_shape", [])) == [1, 1]):
            return False
        if node.op_type in ("Gemm", "MatMul"):
            b = node.input[1]
            b_const = b in inits or (b in producer and producer[b].op_type == "Constant")
            return b_const and elem(node.input[0]) == onnx.TensorProto.FLOAT
        return True

    taken: set[int] = set()
    for node in g.node:  # graph order is topological
        kinds = XNNPACK_OPS.get(node.op_type)
        if node.domain not in ("", "ai.onnx") or not kinds or not op_ok(node):
            continue
        data_inputs = [i for i in node.input if i and i not in inits]
        dqs = [producer.get(i) for i in data_inputs]
        qs = [c for o in node.output for c in consumers.get(o, [])]
        is_qdq = dqs and all(d is not None and d.op_type == "DequantizeLinear" for d in dqs) \
            and qs and all(q.op_type == "QuantizeLinear" for q in qs)
        if is_qdq and "qdq" in kinds:
            taken.update(id(n) for n in [node, *dqs, *qs])
        elif not is_qdq and "float" in kinds and elem(node.input[0]) == onnx.TensorProto.FLOAT:
            taken.add(id(node))
    for node in g.node:  # fp32 Relu / Clip fused into a taken fp32 producer
        src = producer.get(node.input[0]) if node.input else None
        if node.op_type in XNNPACK_FUSES and src is not None and id(src) in taken \
                and src.op_type in XNNPACK_FUSES[node.op_type] \
                and elem(node.input[0]) == onnx.TensorProto.FLOAT:
            taken.add(id(node))
    # A shared DequantizeLinear stays on the CPU unless every consumer went to XNNPACK.
    for node in g.node:
        if node.op_type == "DequantizeLinear" and id(node) in taken:
            if not all(id(c) in taken for c in consumers.get(node.output[0], [])):
                taken.discard(id(node))
    fallback = Counter(n.op_type for n in g.node if id(n) not in taken)
    details = {"predicted_by": "edgeq's table of ORT XNNPACK provider ops (onnxruntime "
                               "core/providers/xnnpack, main branch)"}
    return Delegation(len(taken), len(g.node), dict(fallback)), details
