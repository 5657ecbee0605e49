"""The float ops of a recipe (``edgeq.quantize.float_ops``: softmax, the attention-mask
add, the residual add + LayerNorm, the FFN down-projection, the Q.K^T scores and their scale,
SmoothQuant / AWQ scales)
found in an ONNX graph, as ``nodes_to_exclude`` for ``quantize_static``."""
from __future__ import annotations

from edgeq.quantize.float_ops import SMOOTH_CLASS, resolve


def resolved_ops(model, value, runtime=None) -> tuple[str, ...]:
    """The op kinds kept float in an ONNX model (``auto``: ``runtime``'s table when the
    graph has a Softmax)."""
    return resolve(value, any(n.op_type == "Softmax" for n in model.graph.node), runtime)


def onnx_nodes(model, value, runtime=None) -> list[str]:
    """Names of the nodes of an ONNX model to pass as ``nodes_to_exclude``."""
    nodes = list(model.graph.node)
    ops = resolved_ops(model, value, runtime)
    softmax_inputs = {i for n in nodes if n.op_type == "Softmax" for i in n.input}
    users: dict = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    producer = {o: n for n in nodes for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    down = [n.name for n in nodes if n.op_type in ("MatMul", "Gemm") and
            _after_gelu(n, producer)] if "ffn_down" in ops else []
    # ... and the bias Add the exporter splits off it: its output carries the outliers.
    down_out = {o for n in nodes if n.name in down for o in n.output}
    # ... and the GELU's last op and the Reshape between: with both its input and output
    # edges quantized, ORT's optimizer (WeightBiasQuantization) quantizes a float Gemm's
    # weight itself and runs it as QGemm.
    down += [t for n in nodes if n.name in down for t in _input_tail(n, producer)]
    down += [n.name for n in nodes if n.op_type == "Add" and any(i in down_out for i in n.input)
             and any(i in inits for i in n.input)]
    qk = _qk_nodes(nodes, users, inits) if "qk_matmul" in ops else set()
    out = []
    for n in nodes:
        if n.name in down or n.name in qk:
            out.append(n.name)
            continue
        scopes = _onnx_scopes(n)
        if n.op_type == "Mul" and any(s.rsplit(".", 1)[-1] == "smooth" or
                                      s == SMOOTH_CLASS for s in scopes):
            out.append(n.name)
        elif "softmax" in ops and n.op_type == "Softmax":
            out.append(n.name)
        elif "layer_norm" in ops and n.op_type == "LayerNormalization":
            out.append(n.name)
        elif "mask_add" in ops and n.op_type == "Add" and \
                any(o in softmax_inputs for o in n.output):
            out.append(n.name)
        elif "layer_norm" in ops and n.op_type == "Add" and _only_feeds(
                users.get(n.output[0], []) if n.output else [], "LayerNormalization"):
            out.append(n.name)
    return out


def _qk_nodes(nodes, users, inits, hops: int = 5) -> set[str]:
    """The attention scores: MatMuls of two activations (no initializer) whose output
    reaches a Softmax through Mul / Div / Add / reshapes, and those Mul / Div (the scale)."""
    through = {"Mul", "Div", "Add", "Reshape", "Transpose", "Cast", "Squeeze", "Unsqueeze"}
    out: set[str] = set()
    for n in nodes:
        if n.op_type != "MatMul" or any(i in inits for i in n.input):
            continue
        path, frontier = [], [n]
        for _ in range(hops):
            nxt = [u for m in frontier for o in m.output for u in users.get(o, [])]
            if any(u.op_type == "Softmax" for u in nxt):
                out |= {n.name} | {m.name for m in path if m.op_type in ("Mul", "Div")}
                break
            frontier = [u for u in nxt if u.op_type in through]
            path += frontier
    return out


def _after_gelu(node, producer, hops: int = 6) -> bool:
    """Whether the node's first input is a GELU's output (a Gelu op, or the exporter's
    erf / tanh decomposition within ``hops`` producers: ORT's pre-processing puts a
    Reshape between, x * 0.5 * (1 + erf(x / sqrt 2)) -> Reshape -> Gemm), not walking
    back past a MatMul / Gemm / LayerNormalization / Softmax."""
    frontier = [node.input[0]] if node.input else []
    for _ in range(hops):
        nxt = []
        for name in frontier:
            p = producer.get(name)
            if p is None:
                continue
            if p.op_type in ("Gelu", "FastGelu", "Erf", "Tanh"):
                return True
            if p.op_type not in ("MatMul", "Gemm", "LayerNormalization", "Softmax"):
                nxt += list(p.input)  # not past the previous layer
        frontier = nxt
    return False


def _input_tail(node, producer, through=("Reshape", "Transpose", "Cast", "Squeeze",
                                         "Unsqueeze")) -> list[str]:
    """Names of the node's first-input producers up to and including the first one that
    is not a reshape-like op (for the FFN down projection: the GELU's final Mul)."""
    out, name = [], node.input[0] if node.input else None
    while name is not None and name in producer:
        p = producer[name]
        out.append(p.name)
        if p.op_type not in through or not p.input:
            break
        name = p.input[0]
    return out


def _only_feeds(users, op_type: str) -> bool:
    return bool(users) and all(u.op_type == op_type for u in users)


def _onnx_scopes(node) -> list[str]:
    """Module paths and class names the dynamo exporter records on a node."""
    import ast

    out = []
    for prop in node.metadata_props:
        if prop.key in ("pkg.torch.onnx.name_scopes", "pkg.torch.onnx.class_hierarchy"):
            try:
                out += [str(s).rsplit(".", 1)[-1] if prop.key.endswith("hierarchy") else str(s)
                        for s in ast.literal_eval(prop.value)]
            except (ValueError, SyntaxError):
                pass
    return out
