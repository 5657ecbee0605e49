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
* ``qk_matmul``: the attention scores, ``Q @ K^T`` and the scale on its output (recognised
  as a matmul whose output reaches a softmax through scales, adds and reshapes). Not an
  accuracy problem but a speed one: XNNPACK has no int8 batch matmul, so on LiteRT an
  int8 one runs in LiteRT's own kernel and cuts the delegated graph into one partition per
  layer (MiniLM-L6: 7 partitions, 1.87x fp32; with it float, one partition and 3.2x).

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
float output (0.9925, 1.4x faster, 10.6 MB smaller). ``qk_matmul`` int8 keeps 0.9935 but
is 1.45x slower on LiteRT (outside XNNPACK) and unchanged on ExecuTorch (XNNPACK's batch
matmul is fp32 either way). So ``auto`` keeps all five float on ExecuTorch and LiteRT and
quantizes ``ffn_down`` on ONNX Runtime.

One predicate per graph kind: ``pt2e_filter(value, runtime)`` for the PT2E quantizers
(ExecuTorch, LiteRT); ONNX graphs are matched in ``edgeq.runtimes.onnx.float_ops``.

**Dynamic int8 for a kept-float kind** (the recipe's ``dynamic_ops``). Keeping ``ffn_down``
float keeps a third of a BERT layer's multiply-adds in fp32. A runtime that can run that
Linear as dynamic int8 (int8 weights, its input quantized per inference, float output: no
int8 output where the outliers are born) gets most of the speed back at float's accuracy.
``dynamic_ops`` names the kinds (only ``ffn_down`` carries weights) that, when kept float,
run that way; ``auto`` takes the runtime's measured ``dynamic_ops_auto`` table, ``[]``
keeps them truly float. A layer kept float by ``keep_float`` stays float. Measured on
MiniLM-L6 (256 / 256 sentences, ``bench_float_ops.py``), every other kind float: LiteRT
4.38 -> 2.52 ms at cosine 0.9937 -> 0.9933, ExecuTorch 4.89 -> 3.03 ms at 0.9937 -> 0.9932,
10.6 MB smaller on both; static int8 on MiniLM is now 3.1x / 2.7x fp32 there
(``bench_transformer.py``; 1.15x / 1.75x before ``qk_matmul`` and ``dynamic_ops``).
"""
from __future__ import annotations

from edgeq.errors import BadInput

FLOAT_OPS = ("softmax", "layer_norm", "mask_add", "ffn_down", "qk_matmul")
DYNAMIC_OPS = ("ffn_down",)  # the kinds with weights, which can run as dynamic int8
SMOOTH_CLASS = "Smooth"  # edgeq.quantize.smoothquant.Smooth


def _check_kinds(value, where: str, field: str, allowed, hint: str):
    if value in ("auto", None):
        return "auto"
    if not isinstance(value, (str, list, tuple)):
        raise BadInput(f"recipe {where}: {field} must be 'auto' or a list of op kinds "
                       f"({', '.join(allowed)}), not {value!r}")
    items = (value,) if isinstance(value, str) else tuple(value or ())
    bad = [v for v in items if v not in allowed]
    if bad:
        raise BadInput(f"recipe {where}: {field} {bad} not among {', '.join(allowed)} "
                       f"({hint})")
    return items


def check(value, where: str):
    """The recipe field as ``"auto"`` or a tuple of known names."""
    return _check_kinds(value, where, "float_ops", FLOAT_OPS,
                        "or 'auto', or [] to quantize them")


def check_dynamic(value, where: str):
    """The recipe's ``dynamic_ops`` as ``"auto"`` or a tuple of known names."""
    return _check_kinds(value, where, "dynamic_ops", DYNAMIC_OPS,
                        "the float_ops kinds with weights; or 'auto', or [] for float")


def resolve_dynamic(value, floated, runtime=None, float_value="auto") -> tuple[str, ...]:
    """Of the kinds kept float (``floated``, resolved), those ``runtime`` runs as dynamic
    int8: the recipe's list, or with ``auto`` the runtime's ``dynamic_ops_auto`` table,
    and that only when ``float_value`` (the recipe's ``float_ops``) is ``auto`` too: a
    recipe that lists the float kinds itself keeps them float unless it lists
    ``dynamic_ops`` as well."""
    if value in ("auto", None):
        table = getattr(runtime, "dynamic_ops_auto", ()) if float_value in ("auto", None) \
            else ()
    else:
        table = value
    return tuple(k for k in DYNAMIC_OPS if k in table and k in (floated or ()))


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


def record_dynamic(value, resolved, runtime=None) -> dict:
    """The manifest's ``dynamic_ops`` entry: what the recipe asked and which kept-float
    kinds run as dynamic int8 (the runtime adds the layers and how they run)."""
    auto = value in ("auto", None)
    out = {"requested": "auto" if auto else list(value), "resolved": list(resolved),
           "from": f"auto ({getattr(runtime, 'name', 'default')} table)" if auto else "recipe"}
    if auto:
        out["auto_set"] = list(getattr(runtime, "dynamic_ops_auto", ()))
    return out


NO_FFN_DOWN = "no FFN down projection (a Linear fed by a GELU) was found in the graph"


def plan_dynamic(recipe, floated, runtime, qat: bool = False,
                 delegate: str | None = None) -> tuple[tuple[str, ...], dict]:
    """(the kinds to run as dynamic int8, the manifest's entry) for a static build: the
    recipe's ``dynamic_ops`` resolved (``resolve_dynamic``), none after QAT (the layers
    were trained float), and ``auto`` only on the delegates the runtime's table was
    measured on (``dynamic_ops_measured_on``); the entry says why when that drops any."""
    value = recipe.dynamic_ops
    kinds = resolve_dynamic(value, floated, runtime, recipe.float_ops)
    measured_on = getattr(runtime, "dynamic_ops_measured_on", None)
    why = None
    if kinds and qat:
        why = "not applied with QAT (the layers were trained float)"
    elif kinds and value in ("auto", None) and measured_on and delegate not in measured_on:
        why = (f"auto is measured on {', '.join(measured_on)} only; {delegate} keeps them "
               "float (list them in dynamic_ops to convert anyway)")
    if why:
        kinds = ()
    entry = record_dynamic(value, kinds, runtime)
    if why:
        entry["note"] = why
    return kinds, entry


def op_entry(int8: int, flt: int, dynamic: int = 0, **extra) -> dict:
    """How one kind runs in a built artifact (each runtime's ``op_kinds``, read from the
    artifact as the runtime executes it): ``runs`` is ``int8``, ``dynamic`` (int8 weights,
    input quantized per inference), ``float``, ``mixed`` or ``absent``, with the counts."""
    counts = {"int8": int8, "dynamic": dynamic, "float": flt}
    present = [k for k, v in counts.items() if v]
    runs = present[0] if len(present) == 1 else "mixed" if present else "absent"
    out = {"runs": runs, "int8": int8, "float": flt}
    if dynamic:
        out["dynamic"] = dynamic
    return {**out, **extra}


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
            "linear": _aten(["linear.default", "addmm.default", "mm.default"]),
            "matmul": _aten(["matmul.default", "bmm.default"]),
            "scale": _aten(["mul.Tensor", "div.Tensor"]),
            "view": _aten(["view.default", "reshape.default", "_unsafe_view.default",
                           "expand.default", "clone.default", "contiguous.default"]),
            "between": _aten(["dropout.default", "clone.default", "contiguous.default",
                              "alias.default", "detach.default"])}


def _feeds_softmax(node, t, hops: int = 5) -> bool:
    """Whether ``node``'s output reaches a softmax through scales, adds (the mask) and
    reshapes only: the attention scores."""
    frontier = [node]
    for _ in range(hops):
        nxt = []
        for n in frontier:
            for u in n.users:
                if u.target in t["softmax"]:
                    return True
                if u.target in t["scale"] | t["add"] | t["view"]:
                    nxt.append(u)
        frontier = nxt
    return False


def _is_qk(node, t) -> bool:
    """The attention scores' Q.K^T matmul, or the scale applied to its output."""
    if node.target in t["matmul"]:
        return _feeds_softmax(node, t)
    if node.target in t["scale"]:
        src = node.args[0] if node.args else None
        while getattr(src, "target", None) in t["view"]:
            src = src.args[0]
        return getattr(src, "target", None) in t["matmul"] and _feeds_softmax(node, t)
    return False


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
    order: dict = {}  # graph id -> (graph, {node: position})

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
        if "qk_matmul" in ops and _is_qk(node, t):
            return True
        if "ffn_down" in ops and node.target in t["linear"]:
            src = node.args[0] if node.args else None
            # SmoothQuant / AWQ's scale, an eval-mode dropout (timm Mlp, T5) or a copy may
            # sit between the GELU and the Linear
            while src is not None and getattr(src, "op", None) == "call_function" and (
                    _in_smooth(src) or src.target in t["between"]):
                src = src.args[0]
            if getattr(src, "target", None) in t["gelu"]:
                if key not in order:  # the graph is kept too: its id cannot be reused
                    order[key] = (node.graph, {n: i for i, n in enumerate(node.graph.nodes)})
                keep.ffn_down[node.name] = (order[key][1].get(node, -1), module_path(node))
                return True
            return False
        if node.target in t["add"]:
            return ("mask_add" in ops and any(u.target in soft for u in node.users)) or (
                "layer_norm" in ops and all(u.target in t["layer_norm"] for u in node.users))
        return False

    keep.resolved = None
    keep.ffn_down = {}  # node name -> (position in its graph, module path), as kept float
    return keep


def ffn_down_modules(keep) -> list[str]:
    """Module paths of the FFN down projections ``keep`` (a ``pt2e_filter``) kept float, in
    graph order (the order a converter emits them in)."""
    return [path for _, path in sorted(getattr(keep, "ffn_down", {}).values())]


def module_path(node) -> str:
    """The module path (``encoder.layer.0.output.dense``) of an exported graph's node."""
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    return str(stack[-1][0]).replace("L['self'].", "") if stack else ""
