"""Per-operator costs of an ``.onnx`` for the estimator (``edgeq profile --estimate``).

Walked on the ONNX graph with inferred shapes, so an existing ``.onnx`` given as MODEL gets
costs too. One ``edgeq.profiling.estimate.NodeCost`` per operator that runs, FLOPs counting
a multiply-add as 2. A QDQ model is costed as ONNX Runtime executes it: a
``DequantizeLinear -> op -> QuantizeLinear`` group is one int8 operator (QLinearConv,
QLinearMatMul, ...), weight ``DequantizeLinear`` nodes are folded away (the weights are
read as int8), and only the conversions at the edges of int8 regions cost anything.
A Relu / Clip right after a Conv or Gemm is fused into it, as ORT's optimiser does. ORT's
CPU kernels are optimised (MLAS), so every operator is costed as a delegate kernel."""
from __future__ import annotations

import math

_CONV = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose"}
_GEMM = {"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"}
_FUSABLE = {"Relu", "Clip", "LeakyRelu"}
_POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
         "ReduceSum", "ReduceMax", "ReduceMin"}
_SOFTMAX = {"Softmax", "LogSoftmax"}
_NORM = {"LayerNormalization", "GroupNormalization", "InstanceNormalization",
         "SimplifiedLayerNormalization", "SkipLayerNormalization"}
_MOVE = {"Reshape", "Transpose", "Concat", "Flatten", "Squeeze", "Unsqueeze", "Slice",
         "Gather", "Split", "Pad", "Expand", "Tile", "Identity", "Resize", "DepthToSpace",
         "SpaceToDepth", "Shape", "Constant", "ConstantOfShape", "Cast"}
_TRANSCENDENTAL = {"Sigmoid", "Tanh", "Exp", "Log", "Erf", "Gelu", "HardSwish", "Sqrt",
                   "Div", "Pow", "Elu", "Softplus", "HardSigmoid"}
_INT8 = {2, 3}  # TensorProto UINT8, INT8
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}


def onnx_costs(model) -> dict:
    """The manifest's ``costs`` block (``estimate.cost_summary``) for an ``onnx.ModelProto``."""
    import onnx

    from edgeq.profiling.estimate import NodeCost, cost_summary

    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    shapes: dict[str, tuple] = {}
    types: dict[str, int] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        types[vi.name] = tt.elem_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
    const = {i.name for i in g.initializer}
    for i in g.initializer:
        shapes[i.name], types[i.name] = tuple(int(d) for d in i.dims), i.data_type
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
        if n.op_type == "Constant":
            const.update(n.output)

    def numel(name) -> int:
        return int(math.prod(shapes[name])) if name in shapes else 0

    def nbytes(name, itemsize=None) -> int:
        return numel(name) * (itemsize or _ITEMSIZE.get(types.get(name, 1), 4))

    def weight_dq(n) -> bool:  # DequantizeLinear of a constant: folded, weights read as int8
        return n.op_type == "DequantizeLinear" and n.input[0] in const

    def int8_source(name) -> bool:  # an int8 tensor behind a DequantizeLinear (or int8 itself)
        p = producer.get(name)
        if p is not None and p.op_type == "DequantizeLinear":
            return True
        return types.get(name) in _INT8

    def real_input(name) -> str:  # through a folded weight DequantizeLinear to the initializer
        p = producer.get(name)
        return p.input[0] if p is not None and weight_dq(p) else name

    rows, fused, costed = [], set(), {}
    for n in g.node:
        if n.op_type in ("Constant", "Shape") or weight_dq(n) or n.name in fused:
            continue
        ins = [i for i in n.input if i]
        out = n.output[0] if n.output else ""
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            src = producer.get(ins[0]) if ins else None
            users = consumers.get(out, [])
            if n.op_type == "QuantizeLinear" and src is not None and \
                    costed.get(src.name) == "int8":
                continue  # the int8 operator's requantize
            if n.op_type == "DequantizeLinear" and users and all(
                    u.op_type not in ("QuantizeLinear",) and costed_int8(u, int8_source)
                    for u in users):
                continue  # read as int8 by the next operator
            rows.append(NodeCost(n.name or out, n.op_type, "convert", "fp32", 5 * numel(out),
                                 nbytes(ins[0]) + nbytes(out), True, 0, nbytes(out)))
            continue
        op = n.op_type
        int8 = costed_int8(n, int8_source)
        item = 1 if int8 else None
        kind, flops, k = _kind_flops_k(n, shapes, real_input, numel(out))
        # Fuse a following batch norm and activation (single consumer) into a conv / gemm.
        users = consumers.get(out, [])
        while kind in ("conv", "pointwise", "dwconv", "gemm") and len(users) == 1 and \
                users[0].op_type in _FUSABLE | {"BatchNormalization"} and users[0].output:
            fused.add(users[0].name)
            out = users[0].output[0]
            users = consumers.get(out, [])
        weights = sum(nbytes(real_input(i)) for i in ins if real_input(i) in const)
        acts = sum(nbytes(i, item) for i in ins if real_input(i) not in const)
        out_bytes = nbytes(out, item)
        costed[n.name] = "int8" if int8 else "fp32"
        rows.append(NodeCost(n.name or out, op, kind, "int8" if int8 else "fp32", int(flops),
                             int(weights + acts + out_bytes), True, int(weights),
                             int(out_bytes), k))
    return cost_summary(rows)


def costed_int8(n, int8_source) -> bool:
    """Whether ORT runs ``n`` on int8 tensors: its first activation input is dequantized
    int8 (QDQ) and it is an operator with int8 kernels."""
    if n.op_type in ("QuantizeLinear", "DequantizeLinear") or not n.input:
        return False
    if n.op_type in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"):
        return True
    return n.op_type in (_CONV | _GEMM | _POOL | _MOVE | {
        "Add", "Mul", "Sigmoid", "LeakyRelu", "Relu", "Clip", "Softmax"}) and \
        int8_source(n.input[0])


def _kind_flops_k(n, shapes, real_input, n_out) -> tuple[str, int, int]:
    """(kind, flops, multiply-adds per output element) of one ONNX node."""
    op = n.op_type
    ins = list(n.input)
    if op in _CONV and len(ins) > 1:
        w = shapes.get(real_input(ins[3] if op == "QLinearConv" else ins[1]))
        if w is None or len(w) < 3:
            return "conv", 0, 0
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        spatial = int(math.prod(w[2:]))
        if op == "ConvTranspose":
            x = shapes.get(ins[0])
            per_in = int(w[1]) * spatial  # weight [Cin, Cout/g, k...]
            flops = 2 * int(math.prod(x)) * per_in if x else 0
            return "conv", flops, round(flops / 2 / max(1, n_out))
        k = int(w[1]) * spatial
        kind = "dwconv" if group > 1 and int(w[1]) == 1 else (
            "pointwise" if group == 1 and spatial == 1 else "conv")
        return kind, 2 * n_out * k, k
    if op in _GEMM and ins:
        a = shapes.get(real_input(ins[0]))
        k = int(a[-1]) if a else 0
        if op == "Gemm" and any(x.name == "transA" and x.i for x in n.attribute) and a:
            k = int(a[0])
        return "gemm", 2 * n_out * k, k
    if op in _POOL:
        x = shapes.get(ins[0]) if ins else None
        return "pool", int(math.prod(x)) if x else n_out, 0
    if op in _SOFTMAX:
        return "softmax", 5 * n_out, 0
    if op in _NORM:
        return "norm", 8 * n_out, 0
    if op == "BatchNormalization":
        return "eltwise", 2 * n_out, 0
    if op in _MOVE:
        return "move", 0, 0
    return "eltwise", (4 if op in _TRANSCENDENTAL else 1) * n_out, 0
