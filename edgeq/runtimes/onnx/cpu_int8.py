"""Static int8 that ONNX Runtime's CPU execution provider runs fast: what edgeq changes in
the QDQ model for the ``cpu`` delegate (``onnx-cpu``), and why, by measurement.

ORT runs a QDQ model fast only where its graph optimizer fuses a ``DequantizeLinear -> op
-> QuantizeLinear`` unit into an integer kernel (QLinearConv, QLinearMatMul, QGemm,
MatMulIntegerToFloat, QLinearAdd, ...); an unfused unit runs the op in float *plus* the
Q / DQ, slower than fp32. Measured on this host (x86-64, AVX512-VNNI, 1 thread, ORT 1.32,
2 cores shared, load ~8; benchmarks/bench_onnx_int8_speed.py, results/onnx_int8_speed.json,
256 calibration samples), int8 speed-up over fp32 and fidelity to PyTorch, before -> after:

* EfficientNet-Lite0 (159 photos): 1.42x -> 1.61x (1.53x -> 1.81x on a quick run); before,
  14 of 49 convs ran in float with 105 Q/DQ nodes at run time, after, 49 QLinearConv +
  9 QLinearAdd and 4 Q/DQ. SQNR 17.81 -> 17.83 dB, top-1 agreement 91.8 -> 92.5%.
* MiniLM-L6 (256 sentences): 0.64x -> 1.65x (2.08x in a second run, load ~6) with the FFN
  down projection int8 (ORT's ``float_ops`` auto set now), mean cosine 0.9925 -> 0.9925;
  1.34x at 0.9957 with it float; SmoothQuant 0.5 (fixed here, see ``restore_metadata``)
  0.9991 at 1.33x with it float, 0.9873 with it int8 (0.9977 since SmoothQuant's
  per-Linear guard, ``smoothquant.choose_alpha``). Before, 18 of 36 Linears ran as
  float MatMuls on dequantized weights, 275 Q/DQ nodes at run time.

Per rule (MiniLM, 64 calibration / 64 eval sentences, exploratory runs): uint8 alone
0.65x -> 1.30x; + float attention / element-wise (rule 3) cosine 0.9903 -> 0.9917, faster;
rule 4 is what makes an int8 FFN down projection usable at all (0.94 -> 0.99).

1. **Activation dtype** (target option ``activation_dtype: auto``): ``uint8`` for the CPU
   provider. ORT's QDQ fusions are compiled with int8 activations disallowed except on Arm
   (``QDQIsInt8Allowed()`` in onnxruntime/core/optimizer/qdq_transformer/selectors_actions/
   qdq_selector_action_transformer.h is false unless ``MLAS_TARGET_ARM_ANY``): an int8
   model is fused on a phone and barely on an x86 host; uint8 (U8S8, ORT's recommended pair
   on x86-64) is fused on both. ``uint8`` for NNAPI (it rejects some int8 QDQ patterns),
   ``int8`` for XNNPACK (its QS8 kernels). An explicit ``int8`` / ``uint8`` is honoured.
2. **reduce_range** (target option, default false): 7-bit weights avoid the int16
   saturation of U8S8 on x86 CPUs *without* VNNI (AVX2's VPMADDUBSW); with VNNI it changed
   nothing in speed and cost accuracy (MiniLM cosine 0.9900 -> 0.9894). The manifest
   records whether the building host has VNNI.
3. **Attention graphs** (a Softmax in the graph): only the ops that carry a weight are
   quantized (``WEIGHT_OPS``: Conv, MatMul / Gemm with a constant operand, Gather on a
   constant table); attention's activation x activation MatMuls and the element-wise ops
   between Linears stay float. Each int8 element-wise unit needs its own Q / DQ and the
   softmax probabilities quantize badly (1/255 steps); keeping them float was both faster
   (float Q.K^T becomes FusedMatMul) and more accurate (MiniLM cosine 0.9903 -> 0.9917).
4. **Float outputs**: a MatMul / Gemm whose consumers all run in float (the recipe's float
   ops, data movement feeding only them, unquantized op types) keeps its output float:
   ORT runs it as MatMulIntegerToFloat / QGemm with float output instead of re-quantizing
   a tensor its consumers dequantize at once. This is what lets a transformer's FFN down
   projection be int8 at all: quantizing its *output* (where BERT's outlier dimensions are
   born, it feeds the residual add and LayerNorm) dropped MiniLM to cosine 0.94, int8
   inputs with a float output cost 0.0003. Data-movement nodes (Reshape, Transpose, ...)
   whose consumers are all float are kept float with them so the rule sees through them.
5. **Dedicated Q/DQ pairs** (``DedicatedQDQPair``) in attention graphs: a tensor read by
   int8 Linears and a float op (LayerNorm's output feeds Q, K, V and the residual add)
   reaches the float op unquantized (cosine +0.0008).

The graph ORT actually runs on this host is recorded in the manifest (``ort_cpu_kernels``:
op counts of the optimized graph), with the choices and the host's VNNI flag.
"""
from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import BadInput

# Ops that carry a weight (their constant operand is what int8 shrinks and speeds up).
WEIGHT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Gather")
# Ops ORT can run with int8 inputs and a float output (MatMulIntegerToFloat, QGemm).
FLOAT_OUT_OPS = ("MatMul", "Gemm")
# Pure data movement: float when everything they feed is float.
MOVERS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
# Integer kernels ORT fuses QDQ units into (for the manifest's summary).
INT_KERNELS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat",
               "DynamicQuantizeMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
               "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
               "QLinearLeakyRelu", "QLinearSoftmax", "ConvInteger", "MatMulInteger")
ACTIVATION_AUTO = {"cpu": "uint8", "nnapi": "uint8", "xnnpack": "int8"}
LAYOUTS = ("auto", "default")


@dataclass
class Plan:
    """How ``quantize_static`` is called for one model, and what to do after it."""
    activation_dtype: str
    exclude: list[str]
    op_types: list[str] | None = None  # None: every op type ORT's quantizer knows
    extra_options: dict = field(default_factory=dict)
    float_outputs: bool = False  # drop output Q/DQ of MatMul / Gemm feeding float ops
    # Outputs of Relu / Clip: ORT's quantizer deletes such a node after a quantized op and
    # lets the output Q clamp instead, so that Q must stay.
    clamped: set = field(default_factory=set)
    facts: dict = field(default_factory=dict)  # for the manifest


def host_cpu() -> dict:
    """The building host's CPU architecture and whether it has VNNI (x86 int8 dot
    products), from /proc/cpuinfo where there is one."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    out = {"arch": platform.machine()}
    if out["arch"] in ("x86_64", "AMD64", "i686"):
        out["vnni"] = bool(flags & {"avx512_vnni", "avx_vnni"}) if flags else None
    return out


def activation_dtype(option: str, delegate: str | None) -> tuple[str, str]:
    """(int8 | uint8, why) for the target option ``activation_dtype`` (int8 | uint8 | auto)."""
    if option != "auto":
        return option, "target option activation_dtype"
    dtype = ACTIVATION_AUTO.get(delegate or "cpu", "uint8")
    why = {"cpu": "auto: ORT's CPU provider fuses uint8-activation QDQ units into integer "
                  "kernels on every CPU, int8 ones only on Arm (QDQIsInt8Allowed)",
           "nnapi": "auto: NNAPI rejects some int8 QDQ patterns that uint8 passes",
           "xnnpack": "auto: XNNPACK's signed (QS8) kernels"}
    return dtype, why.get(delegate or "cpu", why["cpu"])


def has_attention(model) -> bool:
    return any(n.op_type == "Softmax" for n in model.graph.node)


def activation_matmuls(model) -> list[str]:
    """MatMuls with no constant operand (attention's Q.K^T and probabilities x V)."""
    inits = {i.name for i in model.graph.initializer}
    consts = inits | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and not any(i in consts for i in n.input)]


def close_over_movers(model, exclude: list[str]) -> list[str]:
    """``exclude`` plus the data-movement nodes whose consumers are all excluded (to a
    fixed point), so a float op's input is not quantized by the Reshape in front of it."""
    g = model.graph
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    ex = set(exclude)
    changed = True
    while changed:
        changed = False
        for n in g.node:
            if n.name in ex or n.op_type not in MOVERS or any(o in outputs for o in n.output):
                continue
            us = [u for o in n.output for u in users.get(o, [])]
            if us and all(u.name in ex for u in us):
                ex.add(n.name)
                changed = True
    return list(exclude) + [n.name for n in g.node if n.name in ex and n.name not in exclude]


def plan(model, delegate: str | None, dtype_option: str, exclude: list[str],
         reduce_range: bool = False, extra_op_types=(), layout: str = "auto") -> Plan:
    """The quantization plan for ``model`` (the pre-processed ONNX graph) on ``delegate``.
    ``layout`` (target option ``qdq_layout``): ``auto`` gives the ``cpu`` delegate rules
    3-5 of the module docstring and the others ORT's default QDQ layout (which the NNAPI
    and XNNPACK partitioners expect); ``default`` gives everyone ORT's default layout.
    ``extra_op_types``: op types that must stay quantizable (16-bit layers)."""
    if layout not in LAYOUTS:
        raise BadInput(f"target option qdq_layout '{layout}' is not one of "
                       f"{', '.join(LAYOUTS)}")
    dtype, why = activation_dtype(dtype_option, delegate)
    cpu_rules = layout == "auto" and (delegate or "cpu") == "cpu"
    facts = {"activation_dtype": dtype, "activation_dtype_reason": why,
             "reduce_range": bool(reduce_range), "host_cpu": host_cpu(),
             "qdq_layout": "cpu" if cpu_rules else "default"}
    p = Plan(dtype, list(exclude), facts=facts)
    if not cpu_rules:
        return p
    attention = has_attention(model)
    if attention:
        bmm = [n for n in activation_matmuls(model) if n not in p.exclude]
        p.exclude += bmm
        present = {n.op_type for n in model.graph.node}
        p.op_types = sorted((set(WEIGHT_OPS) | set(extra_op_types)) & present)
        p.extra_options["DedicatedQDQPair"] = True
        facts["attention"] = {"quantized_op_types": p.op_types,
                              "activation_matmuls_float": len(bmm),
                              "dedicated_qdq_pairs": True}
    p.exclude = close_over_movers(model, p.exclude)
    p.float_outputs = True
    p.clamped = {o for n in model.graph.node if n.op_type in ("Relu", "Clip") for o in n.output}
    return p


def drop_float_only_qdq(path: Path, out: Path, p: Plan, protected=frozenset(),
                        producers=FLOAT_OUT_OPS) -> int:
    """Remove each QuantizeLinear -> DequantizeLinear pair on the output of a ``producers``
    node whose dequantized tensor only float nodes read (rule 4), writing ``out``. Float
    readers are excluded nodes, and for a Gemm also nodes of an op type left unquantized;
    a MatMul's output stays quantized when such a node (its bias Add) reads it, because
    ORT's MatMulAddFusion (which runs before the QDQ fusions) turns DQ -> MatMul -> Add
    into a float Gemm that dequantizes its weight on every run. Tensors in ``protected``
    (16-bit ones) and outputs of a Relu / Clip the quantizer folded into the Q (``clamped``)
    are left alone. Returns the number of pairs removed."""
    import onnx

    m = onnx.load(str(path))
    g = m.graph
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    inits = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}
    ex = set(p.exclude)
    dead: set[str] = set()  # first output names of the nodes to remove
    pairs = 0
    for q in g.node:
        src = q.input[0] if q.op_type == "QuantizeLinear" else None
        if src is None or src in inits or src in protected or src in p.clamped or \
                src not in producer or producer[src].op_type not in producers:
            continue
        dqs = users.get(q.output[0], [])
        if not dqs or any(d.op_type != "DequantizeLinear" or d.output[0] in outputs
                          for d in dqs):
            continue
        readers = [u for d in dqs for u in users.get(d.output[0], [])]
        gemm = producer[src].op_type == "Gemm"  # its bias is inside: no MatMulAddFusion
        if not readers or not all(u.name in ex or (gemm and p.op_types is not None and
                                                   u.op_type not in p.op_types)
                                  for u in readers):
            continue
        for d in dqs:
            for u in users.get(d.output[0], []):
                for k, name in enumerate(u.input):
                    if name == d.output[0]:
                        u.input[k] = src
            dead.add(d.output[0])
        dead.add(q.output[0])
        pairs += 1
    if dead:
        keep = [n for n in g.node if n.output[0] not in dead]
        del g.node[:]
        g.node.extend(keep)
        used = {i for n in g.node for i in n.input}
        kept = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(kept)
    onnx.save(m, str(out))
    return pairs


def optimized_ops(path: Path, workdir: Path) -> Counter:
    """Op counts of the graph ORT's CPU provider runs for ``path`` on this host (all
    optimizations, the optimized model saved and read back). Raises what ORT raises."""
    import onnx
    import onnxruntime as ort

    opt = Path(workdir) / "ort_optimized.onnx"
    so = ort.SessionOptions()
    so.log_severity_level = 4
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(opt)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(str(opt), load_external_data=False).graph.node)


def finish(path: Path, p: Plan, workdir: Path, protected=frozenset()) -> dict:
    """Apply rule 4 to the quantized model at ``path`` (in place) when the plan asks, keep
    the result only if ORT loads it (ORT 1.32's MatMulAddFusion fails on some float-output
    layouts: then only MatMul outputs, then none, are made float), and return the plan's
    facts with the kernels ORT runs."""
    import shutil

    facts = dict(p.facts)
    if p.float_outputs:
        original = Path(workdir) / "qdq_before_float_outputs.onnx"
        shutil.copy(path, original)
        for producers in (FLOAT_OUT_OPS, ("MatMul",), ()):
            n = drop_float_only_qdq(original, path, p, protected, producers) if producers \
                else 0
            if not producers:
                shutil.copy(original, path)
            try:
                ops = optimized_ops(path, workdir)
            except Exception as e:
                facts.setdefault("float_outputs_retries", []).append(
                    {"producers": list(producers), "error": str(e).splitlines()[0][:200]})
                continue
            facts["float_outputs"] = {"producers": list(producers), "nodes": n}
            break
        else:
            ops = None
    else:
        try:
            ops = optimized_ops(path, workdir)
        except Exception as e:
            ops, facts["ort_cpu_kernels_reason"] = None, str(e).splitlines()[0][:200]
    if ops is not None:
        facts["ort_cpu_kernels"] = dict(sorted(ops.items()))
        facts["ort_cpu_kernels_host"] = facts["host_cpu"]["arch"]
        q = sum(ops.get(k, 0) for k in ("QuantizeLinear", "DequantizeLinear"))
        facts["runtime_qdq_nodes"] = q
    return facts


def restore_metadata(src_path, dst_path) -> int:
    """Copy the exporter's per-node ``metadata_props`` (module scopes, class hierarchy) that
    ``quant_pre_process`` drops back onto the pre-processed model's nodes of the same name
    (a node ORT fused, ``name/MatMulAddFusion``, takes its first part's), so scope-based
    matching (``--keep-float``, SmoothQuant's float ``Smooth`` multiplies: without this
    they were quantized on ONNX Runtime and SmoothQuant lost MiniLM cosine, 0.9732 instead
    of 0.9948) still works. Returns how many nodes got their metadata back."""
    import onnx

    src = onnx.load(str(src_path), load_external_data=False)
    props = {n.name: list(n.metadata_props) for n in src.graph.node if n.metadata_props}
    if not props:
        return 0
    dst = onnx.load(str(dst_path))
    done = 0
    for node in dst.graph.node:
        found = None if node.metadata_props else (
            props.get(node.name) or props.get(node.name.split("/", 1)[0]))
        if found:
            node.metadata_props.extend(found)
            done += 1
    if done:
        onnx.save(dst, str(dst_path))
    return done
