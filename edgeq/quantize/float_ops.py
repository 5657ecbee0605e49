"""Attention-aware static int8: the operations that collapse under per-tensor int8 and are
kept in float by the target's quantizer (the recipe's ``float_ops``).

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

``auto`` (the default), when the model has attention (a softmax in its graph), keeps
float the kinds the target's runtime lists in its ``float_ops_auto`` table
(``edgeq/runtimes/<rt>/__init__.py``, read here through the runtime; every kind for a
runtime without a table), and none without attention; a list names them and overrides the
table; ``[]`` is the vendors' default (quantize whatever the runtime's quantizer
annotates). The per-channel scales that SmoothQuant and AWQ insert
(``edgeq.quantize.smoothquant.Smooth``) are always float: quantizing the constant operand
would undo them. The manifest records the resolved set and where it came from
(``record``).

The rule that fills a runtime's table, applied to ``benchmarks/bench_float_ops.py`` on
MiniLM-L6 with real sentences (results/float_ops.json): from every kind float, each kind is
quantized in turn (the others float), with SmoothQuant 0.5 too where it moves outliers off
the op. A kind leaves the table (``auto`` quantizes it) only when that artifact keeps mean
cosine to fp32 >= 0.99, AND the runtime really runs the op in int8 (read from the lowered
artifact, not dequantize -> float op -> quantize), AND the artifact is at least 10% faster
(p50, 1 thread, interleaved rounds; identical artifacts timed up to 7% apart on a shared
host) or smaller than with every kind float. Otherwise the kind stays float: quantizing it
costs accuracy or buys nothing on that runtime. Each table's numbers are beside it.

Measured (256 calibration / 256 eval sentences): with ``[]`` every runtime collapses (mean
cosine 0.30 ExecuTorch, 0.30 LiteRT; ONNX Runtime quantizes only weight ops in attention
graphs, so 0.9925 there). Quantizing softmax changes nothing anywhere (XNNPACK's softmax is
fp32-only and the quantizers leave it float); quantizing layer norm (with its residual
add) drops to 0.85, the mask add to 0.38. ``ffn_down`` splits the runtimes: XNNPACK runs it
with an int8 output, where BERT's outlier dimensions are born (0.946 / 0.946, SmoothQuant
does not help: 0.941), while ONNX Runtime's CPU provider runs it with int8 inputs and a
float output (0.9925, 1.4x faster, 10.6 MB smaller). So ``auto`` keeps all four float on
ExecuTorch and LiteRT and quantizes ``ffn_down`` on ONNX Runtime.

One predicate per graph kind: ``pt2e_filter(value, runtime)`` for the PT2E quantizers
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


def auto_set(runtime=None) -> tuple[str, ...]:
    """The op kinds ``auto`` keeps float on ``runtime`` (its ``float_ops_auto`` table, chosen
    by measurement); every kind for a runtime without one."""
    table = getattr(runtime, "float_ops_auto", None)
    return FLOAT_OPS if table is None else tuple(k for k in FLOAT_OPS if k in table)


def resolve(value, has_attention: bool, runtime=None) -> tuple[str, ...]:
    """The op kinds to keep float for a model on ``runtime``: an explicit list as given;
    ``auto``: the runtime's table when the model has attention, none otherwise."""
    if value in ("auto", None):
        return auto_set(runtime) if has_attention else ()
    return tuple(value)


def record(value, resolved, runtime=None) -> dict:
    """The manifest's ``float_ops`` entry: what the recipe asked, what was kept float, and
    whether that came from the runtime's ``auto`` table or from the recipe."""
    auto = value in ("auto", None)
    out = {"requested": "auto" if auto else list(value),
           "resolved": None if resolved is None else list(resolved),
           "from": f"auto ({getattr(runtime, 'name', 'default')} table)" if auto else "recipe"}
    if auto:
        out["auto_set"] = list(auto_set(runtime))
    if resolved is None:
        out["resolved_reason"] = "no graph was quantized with this filter"
    return out


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


def pt2e_filter(value, runtime=None):
    """``keep(node) -> bool``: True for the nodes to leave unannotated (float) per the
    recipe's ``float_ops`` value; ``auto`` is resolved on the node's own graph with
    ``runtime``'s table. ``keep.resolved`` is the last set resolved (None before any node),
    for the manifest (``record``)."""
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
            resolved[key] = resolve(value, graph_has_attention(node.graph), runtime)
            keep.resolved = resolved[key]
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

    keep.resolved = None
    return keep
