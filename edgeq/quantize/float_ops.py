"""Attention-aware static int8: the operations that collapse under per-tensor int8 and are
kept in float by every target's quantizer (the recipe's ``float_ops``).

* ``softmax``: its output spans [0, 1] with the information in tiny probabilities.
* ``mask_add``: ``scores + mask`` where the additive mask is about -1e4 on padding: one int8
  scale for [-1e4, 20] leaves the real scores a single step (recognised as an add feeding a
  softmax, whatever builds the mask).
* ``layer_norm``: a few outlier channels (BERT's are ~10x the rest) set the scale of all;
  the residual add feeding it carries the same outliers and stays float with it (measured
  on MiniLM through ExecuTorch's quantizer: mean cosine 0.86 with only the layer norm
  float, 0.94 with its input add too).
* ``ffn_down``: the feed-forward block's down projection (the Linear after the GELU),
  whole: BERT's outlier dimensions are born in its output (Bondarenko et al. 2021), and
  per-tensor int8 there costs MiniLM more than all the other Linears together (mean cosine
  0.94 -> 0.994 when it alone stays float).

``auto`` (the default) keeps all four float when the model has attention (a softmax in
its graph) and none otherwise; a list names them; ``[]`` is the vendors' default (quantize
whatever the runtime's quantizer annotates). The per-channel scales that SmoothQuant and
AWQ insert (``edgeq.quantize.smoothquant.Smooth``) are always float: quantizing the
constant operand would undo them.

Measured on MiniLM-L6 (benchmarks/bench_transformer.py, 64 real sentences): with ``[]``
every runtime collapses (mean cosine 0.31 ExecuTorch, 0.30 ONNX Runtime, 0.31 LiteRT); with
``auto`` 0.993 / 0.990 / 0.993. No runtime runs these ops well in int8, so ``auto`` is the
same on all three; keeping them float costs ExecuTorch and LiteRT some of int8's speed
(the float FFN projections) and ONNX Runtime's CPU provider nothing it had.

One predicate per graph kind: ``pt2e_keep_float(node, ops)`` for the PT2E quantizers
(ExecuTorch, LiteRT); ONNX graphs are matched in ``edgeq.runtimes.onnx.float_ops``.
"""
from __future__ import annotations

from edgeq.errors import BadInput

FLOAT_OPS = ("softmax", "layer_norm", "mask_add", "ffn_down")
SMOOTH_CLASS = "Smooth"  # edgeq.quantize.smoothquant.Smooth


def check(value, where: str):
    """The recipe field as ``"auto"`` or a tuple of known names."""
    if value in ("auto", None):
        return "auto"
    items = (value,) if isinstance(value, str) else tuple(value or ())
    bad = [v for v in items if v not in FLOAT_OPS]
    if bad:
        raise BadInput(f"recipe {where}: float_ops {bad} not among {', '.join(FLOAT_OPS)} "
                       "(or 'auto', or [] to quantize them)")
    return items


def resolve(value, has_attention: bool) -> tuple[str, ...]:
    """The op kinds to keep float for a model."""
    if value in ("auto", None):
        return FLOAT_OPS if has_attention else ()
    return tuple(value)


# -- PT2E graphs (ExecuTorch, LiteRT) ----------------------------------------------------

def _aten(names):
    import torch

    out = set()
    for n in names:
        pkt, _, overload = n.partition(".")
        op = getattr(torch.ops.aten, pkt, None)
        if op is not None and hasattr(op, overload):
            out.add(getattr(op, overload))
    return out


def _targets():
    return {"softmax": _aten(["softmax.int", "_softmax.default", "_safe_softmax.default"]),
            "layer_norm": _aten(["layer_norm.default", "native_layer_norm.default"]),
            "add": _aten(["add.Tensor", "add_.Tensor"]),
            "gelu": _aten(["gelu.default"]),
            "linear": _aten(["linear.default", "addmm.default", "mm.default"])}


def graph_has_attention(graph) -> bool:
    """Whether an exported (aten) graph has a softmax."""
    soft = _targets()["softmax"]
    return any(n.op == "call_function" and n.target in soft for n in graph.nodes)


def _in_smooth(node) -> bool:
    for _, cls in (node.meta.get("nn_module_stack") or {}).values():
        name = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
        if name.rsplit(".", 1)[-1] == SMOOTH_CLASS:
            return True
    return False


def pt2e_filter(value):
    """``keep(node) -> bool``: True for the nodes to leave unannotated (float) per the
    recipe's ``float_ops`` value; ``auto`` is resolved on the node's own graph."""
    t = _targets()
    soft = t["softmax"]
    resolved: dict = {}

    def keep(node) -> bool:
        if node.op != "call_function":
            return False
        if _in_smooth(node):
            return True
        key = id(node.graph)
        if key not in resolved:
            resolved[key] = resolve(value, graph_has_attention(node.graph))
        ops = resolved[key]
        if "softmax" in ops and node.target in soft:
            return True
        if "layer_norm" in ops and node.target in t["layer_norm"]:
            return True
        if "ffn_down" in ops and node.target in t["linear"]:
            src = node.args[0] if node.args else None
            while src is not None and getattr(src, "op", None) == "call_function" and \
                    _in_smooth(src):  # SmoothQuant / AWQ put a scale in between
                src = src.args[0]
            return getattr(src, "target", None) in t["gelu"]
        if node.target in t["add"]:
            return ("mask_add" in ops and any(u.target in soft for u in node.users)) or (
                "layer_norm" in ops and all(u.target in t["layer_norm"] for u in node.users))
        return False

    return keep
