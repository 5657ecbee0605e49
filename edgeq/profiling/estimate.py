"""The estimator: latency, energy, memory and a thermal trace of an artifact on a device
profile, computed rather than measured (every block says ``"mode": "estimated"``).

* ``graph_costs(program)``: a runtime-neutral cost model over a torch.fx graph of aten
  ops (an ExportedProgram before lowering, or an ExecuTorch edge program after it, whose
  delegate calls are walked into). One ``NodeCost`` per operator that runs: FLOPs (one
  multiply-add = 2) and bytes moved (activations and weights read, output written) at
  the precision it runs in: int8 when a delegate runs it on quantized tensors (its input
  comes from a ``dequantize``), else fp32. Inside a delegate, what the delegate fuses
  (batch norm or ReLU/clamp after a conv or linear, requantize after an int8 operator,
  weight dequantize) costs nothing; outside one every node is a portable kernel call
  and quantize/dequantize are real conversions. ``cost_summary`` makes the compact
  block stored in the manifest.
* ``estimate(costs, profile, threads)``: per operator ``max(flops / (peak x
  efficiency), bytes / bandwidth) + dispatch`` on the ``threads`` fastest cores, energy
  from the power constants and, for ``sustained_s``, a lumped RC thermal model.

Units: ms, us, bytes, GFLOP/s or GOP/s, GB/s (1e9 bytes/s), W, mJ, degC, J/degC.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass

COSTS_VERSION = 1
FIELDS = ("op", "kind", "precision", "flops", "bytes", "weight_bytes", "k", "delegated")

# Compute efficiency is a fraction of the rate a large GEMM reaches on the device (the
# "GEMM peak"): the probed peak of a measured profile, or GEMM_EFFICIENCY x the
# theoretical peak of a datasheet profile. Multiply-accumulate operators with K MACs per
# output reach K / (K + K_HALF) of it (normalised to 1 at the probe's K = 1024): each
# output pays a fixed cost (bias, requantize, store) worth K_HALF MACs. That cost is
# about the same time in either precision, so for int8 it is K_HALF["int8"] fp32 MACs x
# the device's int8/fp32 peak ratio; likewise int8 depthwise runs at the fp32 depthwise
# rate. Calibrated on the host (XNNPACK, 1 thread, int8/fp32 peak ratio 3.9) over 15
# single-operator networks: pointwise K 16-256, 3x3 K 144-1152, depthwise 32-960 ch.
GEMM_EFFICIENCY = 0.85  # assumption: XNNPACK big-GEMM rate / theoretical peak, Arm big cores
PROBE_K = 1024  # K of the probe's GEMM (edgeq.profiling.probe.GEMM_K)
K_HALF = {"fp32": 8.0, "fp16": 8.0, "int8": 13.0}  # in fp32 MACs; calibrated (host)
EFFICIENCY = {  # flat fractions of the fp32 GEMM peak (fp32, int8): calibrated / assumed
    "dwconv": (0.22, 0.22), "eltwise": (0.10, 0.40), "pool": (0.10, 0.40),
    "softmax": (0.05, 0.05), "norm": (0.05, 0.05), "move": (0.10, 0.40),
    "convert": (0.10, 0.40), "other": (0.05, 0.05)}
BANDWIDTH_EFFICIENCY = 0.7  # assumption: streaming reaches ~70% of datasheet DRAM bandwidth
CACHE_USABLE = 0.5  # assumption: share of a shared last-level cache one model keeps
PORTABLE_SLOWDOWN = 8.0  # assumption: portable (non-delegated) kernels are scalar C++
PORTABLE_DISPATCH = 2.0  # assumption: a portable kernel call costs 2 delegate dispatches
PARALLEL_EFFICIENCY = 0.85  # assumption: XNNPACK thread-pool scaling beyond one thread
INVOKE_DISPATCHES = 2.0  # assumption: one inference costs ~2 dispatches before any op
THROTTLED_POWER_EXP = 2.0  # assumption: active power ~ clock^2 (voltage drops with clock)

_MAC_KINDS = ("gemm", "pointwise", "conv")
_CONV = {"convolution", "conv2d", "conv1d", "conv3d", "_convolution", "conv_transpose2d"}
_GEMM = {"linear", "addmm", "mm", "bmm", "matmul", "baddbmm"}
_ACT = {"relu", "relu_", "hardtanh", "hardtanh_", "clamp", "relu6", "clamp_min"}
_BN = {"_native_batch_norm_legit_no_training", "batch_norm", "_native_batch_norm_legit",
       "native_batch_norm"}
_TRANSCENDENTAL = {"exp", "log", "sigmoid", "tanh", "gelu", "silu", "erf", "div", "sqrt",
                   "rsqrt", "pow", "hardswish", "hardsigmoid", "elu"}
_ELT = {"add", "sub", "mul", "rsub", "neg", "abs", "maximum", "minimum", "where", "square",
        "floor", "ceil", "round", "leaky_relu", "prelu", "_prelu_kernel"
        } | _ACT | _BN | _TRANSCENDENTAL
_POOL = {"max_pool2d", "avg_pool2d", "max_pool2d_with_indices", "adaptive_avg_pool2d",
         "_adaptive_avg_pool2d", "mean", "sum", "amax", "amin", "max_pool1d", "avg_pool1d"}
_WINDOWED = {"max_pool2d", "avg_pool2d", "max_pool2d_with_indices"}
_NORM = {"layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "rms_norm"}
_SOFTMAX = {"softmax", "_softmax", "log_softmax", "_log_softmax", "_safe_softmax"}
_MOVE = {"view", "view_copy", "reshape", "_unsafe_view", "flatten", "squeeze", "unsqueeze",
         "squeeze_copy", "unsqueeze_copy", "permute", "permute_copy", "transpose", "t",
         "t_copy", "transpose_copy", "cat", "concat", "slice", "slice_copy", "select",
         "select_copy", "clone", "_clone_dim_order", "_to_copy", "_to_dim_order_copy",
         "expand", "expand_copy", "contiguous", "pad", "constant_pad_nd", "split",
         "split_copy", "split_with_sizes", "split_with_sizes_copy", "alias", "alias_copy",
         "pixel_shuffle", "repeat", "upsample_nearest2d", "upsample_bilinear2d",
         "embedding", "index_select", "gather"}
# Operators a delegate (XNNPACK) runs on int8 tensors when their input is quantized.
_QUANT_CAPABLE = _CONV | _GEMM | _ACT | _POOL | _MOVE | {
    "add", "sub", "mul", "sigmoid", "tanh", "leaky_relu", "hardswish"}
_FUSE_INTO = _CONV | _GEMM | {"add", "sub", "mul"}
_KINDS = (("gemm", _GEMM), ("eltwise", _ELT), ("pool", _POOL), ("norm", _NORM),
          ("softmax", _SOFTMAX), ("move", _MOVE))
_OP = re.compile(r"([A-Za-z_]\w*)\.([A-Za-z_]\w*)\.([A-Za-z_]\w*)")


@dataclass
class NodeCost:
    """One operator that runs. ``flops``: operations (a multiply-add counts 2);
    ``bytes``: activations and weights read plus output written, at the precision it
    runs in (``weight_bytes`` of them weights); ``out_bytes``: its output tensor; ``k``:
    multiply-adds per output element (conv, gemm), else 0."""

    name: str
    op: str
    kind: str
    precision: str
    flops: int
    bytes: int
    delegated: bool
    weight_bytes: int = 0
    out_bytes: int = 0
    k: int = 0


def _val(n):
    v = n.meta.get("val") if hasattr(n, "meta") else None
    if isinstance(v, (tuple, list)):
        v = v[0] if v and hasattr(v[0], "shape") else None
    return v if hasattr(v, "shape") else None


def _numel(n) -> int:
    v = _val(n)
    return int(math.prod(int(d) for d in v.shape)) if v is not None else 0


def _itemsize(n) -> int:
    v = _val(n)
    return v.element_size() if v is not None else 4


def _kind(op: str, node) -> str:
    if op in _CONV:
        w = _val(node.args[1])
        groups = int(node.args[-1]) if op in ("convolution", "_convolution") else (
            int(node.args[6]) if len(node.args) > 6 else 1)
        if w is not None and groups > 1 and int(w.shape[1]) == 1:
            return "dwconv"
        if w is not None and groups == 1 and math.prod(int(d) for d in w.shape[2:]) == 1:
            return "pointwise"
        return "conv"
    return next((kind for kind, ops in _KINDS if op in ops), "other")


def _flops(op: str, kind: str, node) -> int:
    out = _numel(node)
    if kind in ("conv", "pointwise", "dwconv"):
        fan = math.prod(int(d) for d in _val(node.args[1]).shape[1:])  # Cin/groups x kernel
        if op == "conv_transpose2d" or (op in ("convolution", "_convolution")
                                        and bool(node.args[6])):
            return 2 * _numel(node.args[0]) * fan  # weight [Cin, Cout/g, k..]: per input
        return 2 * out * fan
    if kind == "gemm":
        a = _val(node.args[1] if op in ("addmm", "baddbmm") else node.args[0])
        return 2 * out * (int(a.shape[-1]) if a is not None else 0)
    if kind == "pool":
        if op in _WINDOWED:
            return out * math.prod(int(k) for k in node.args[1])
        return _numel(node.args[0])
    per = {"softmax": 5, "norm": 8, "move": 0}.get(kind)
    if per is None and kind == "eltwise":
        per = 4 if op in _TRANSCENDENTAL else 2 if op in _BN else 1
    return out * (1 if per is None else per)


def _program(obj):
    """(graph module, names of constant placeholders) for an ExportedProgram, an
    EdgeProgramManager or a plain GraphModule."""
    if hasattr(obj, "exported_program") and callable(obj.exported_program):
        obj = obj.exported_program()
    if not hasattr(obj, "graph_signature"):
        return obj, set()
    user = set(obj.graph_signature.user_inputs)
    gm = obj.graph_module
    return gm, {n.name for n in gm.graph.nodes if n.op == "placeholder" and n.name not in user}


def graph_costs(program, assume_delegated: bool = False) -> list[NodeCost]:
    """Per-operator costs of ``program`` (see the module docstring). Nodes inside
    ExecuTorch delegate calls are ``delegated``; top-level nodes are delegated only with
    ``assume_delegated`` (an un-lowered program whose delegate is expected to take all)."""
    gm, consts = _program(program)
    out: list[NodeCost] = []
    _walk(gm, consts, assume_delegated, out)
    return out


def _walk(gm, consts: set, delegated: bool, out: list) -> None:
    """Append the graph's NodeCosts to ``out``. ``info``: tensor node -> (element bytes,
    role), role ``const`` (weights), ``q8`` (an int8 tensor inside a delegate) or ``act``;
    ``root``: node -> the NodeCost that computes it (itself, or what it was fused into)."""
    info, root, converted = {}, {}, set()

    def read(a, as_float: bool) -> int:
        """Bytes read for input ``a``; an int8 tensor read by a float operator converts."""
        size, role = info.get(a, (4, "act"))
        if role == "q8" and as_float and a not in converted:
            converted.add(a)
            n = _numel(a)
            out.append(NodeCost(a.name, "dequantize", "convert", "int8", n, 5 * n, True,
                                0, 4 * n))
            return 4 * n
        return _numel(a) * size

    for n in gm.graph.nodes:
        if n.op in ("placeholder", "get_attr"):
            const = n.op == "get_attr" or n.name in consts
            info[n] = (_itemsize(n), "const" if const else "act")
            continue
        if n.op == "output":
            for a in n.all_input_nodes:
                read(a, True)
        if n.op != "call_function":
            continue
        if n.target is operator.getitem:
            info[n] = info.get(n.args[0], (4, "act"))
            if n.args[0] in root:
                root[n] = root[n.args[0]]
            continue
        if "executorch_call_delegate" in str(n.target):
            sub_gm, sub_consts = _program(getattr(gm, n.args[0].target).original_module)
            _walk(sub_gm, sub_consts, True, out)
            continue
        m = _OP.search(str(n.target))
        ns, op = (m.group(1), m.group(2)) if m else ("", getattr(n.target, "__name__", "?"))
        ins = list(n.all_input_nodes)
        first = ins[0] if ins else None
        role = info.get(first, (4, "act"))[1]
        producer = root.get(first)
        if ns == "quantized_decomposed" and op.startswith(("dequantize", "quantize")):
            quant = op.startswith("quantize")
            if role == "const":  # weights stored as int8
                info[n] = (1, "const")
            elif delegated and not quant and role == "q8":
                info[n] = (1, "q8")  # the int8 tensor itself: converts only if read as float
            elif delegated and quant and producer is not None and producer.precision == "int8":
                info[n], root[n] = (1, "q8"), producer  # the int8 operator's requantize
            else:  # a real conversion: the delegate's input quantize, or a portable kernel
                size = 1 if quant else 4
                c = NodeCost(n.name, op, "convert", "fp32", _numel(n), 5 * _numel(n),
                             delegated, 0, size * _numel(n))
                out.append(c)
                info[n], root[n] = (size, "q8" if delegated and quant else "act"), c
            continue
        if delegated and producer is not None and len(first.users) == 1 and (
                (op in _ACT and producer.op in _FUSE_INTO)
                or (op in _BN and producer.kind in ("conv", "pointwise", "dwconv"))):
            info[n], root[n] = info[first], producer  # fused into the producer
            continue
        kind = _kind(op, n)
        int8 = delegated and op in _QUANT_CAPABLE and role == "q8"
        out_size = 1 if int8 else _itemsize(n)
        c = NodeCost(n.name, op, kind, "int8" if int8 else "fp16" if out_size == 2 else "fp32",
                     _flops(op, kind, n), 0, delegated, out_bytes=_numel(n) * out_size)
        for a in ins:
            b = read(a, not int8)
            c.bytes += b
            c.weight_bytes += b if info.get(a, (4, "act"))[1] == "const" else 0
        c.bytes += c.out_bytes
        if kind in ("conv", "pointwise", "dwconv", "gemm") and _numel(n):
            c.k = round(c.flops / 2 / _numel(n))
        out.append(c)
        info[n], root[n] = (out_size, "q8" if int8 else "act"), c


def cost_summary(costs: list[NodeCost]) -> dict:
    """The compact ``costs`` block for the manifest: one row per operator (``fields``),
    totals, and the tensor sizes the memory estimate needs (bytes)."""
    return {"version": COSTS_VERSION, "fields": list(FIELDS),
            "nodes": [[c.op, c.kind, c.precision, int(c.flops), int(c.bytes),
                       int(c.weight_bytes), int(c.k), c.delegated] for c in costs],
            "total_flops": int(sum(c.flops for c in costs)),
            "total_bytes": int(sum(c.bytes for c in costs)),
            "weight_bytes": int(sum(c.weight_bytes for c in costs)),
            "largest_activation_bytes": int(max((c.out_bytes for c in costs), default=0))}


# -- the estimate -------------------------------------------------------------------------
def _summary(costs) -> dict:
    """Totals of a manifest block, a NodeCost list or plain rows (for rows, the largest
    activation is taken as half the largest non-weight traffic of an operator)."""
    if isinstance(costs, dict):
        return costs
    if costs and isinstance(costs[0], dict):
        return {"total_flops": int(sum(r["flops"] for r in costs)),
                "total_bytes": int(sum(r["bytes"] for r in costs)),
                "weight_bytes": int(sum(r.get("weight_bytes", 0) for r in costs)),
                "largest_activation_bytes": int(max(
                    (r["bytes"] - r.get("weight_bytes", 0)) // 2 for r in costs))}
    return cost_summary(costs)


def _rows(costs) -> list[dict]:
    if isinstance(costs, dict):
        return [dict(zip(costs.get("fields") or FIELDS, r)) for r in costs.get("nodes", [])]
    if costs and isinstance(costs[0], dict):
        return list(costs)
    return [dict(zip(FIELDS, row)) for row in cost_summary(costs)["nodes"]]


def efficiency(row: dict, int8_ratio: float = 4.0) -> float:
    """Fraction of the GEMM peak of the operator's precision it reaches (see EFFICIENCY
    and K_HALF); ``int8_ratio``: the device's int8 / fp32 peak ratio."""
    int8 = row["precision"] == "int8"
    scale = int8_ratio if int8 else 1.0  # fp32-MAC figures in units of int8 MACs
    if row["kind"] in _MAC_KINDS:
        k = max(1, row.get("k") or PROBE_K)
        half = K_HALF["int8" if int8 else "fp32"] * scale
        return min(1.0, k / (k + half) * (PROBE_K + half) / PROBE_K)
    return EFFICIENCY.get(row["kind"], EFFICIENCY["other"])[int8] / scale


def node_time_us(row: dict, profile, threads: int, clock: float = 1.0,
                 weights_hit: float = 0.0) -> tuple[float, str]:
    """Roofline time of one operator in us and what bounds it (compute | memory |
    dispatch), on ``threads`` cores at ``clock`` x their max clock. Activations come from
    the last-level cache when the operator's fit in its usable part, a share
    ``weights_hit`` of the weights too (``weights_cache_hit``), the rest from DRAM."""
    par = PARALLEL_EFFICIENCY if threads > 1 else 1.0
    peak = profile.cpu_peak(row["precision"], threads) * clock * par * (
        1.0 if profile.peak_basis == "measured" else GEMM_EFFICIENCY)
    eff = efficiency(row, profile.cpu_peak("int8", 1) / profile.cpu_peak("fp32", 1))
    dispatch = profile.dispatch_us
    if not row["delegated"]:
        eff, dispatch = eff / PORTABLE_SLOWDOWN, dispatch * PORTABLE_DISPATCH
    # A datasheet all-core DRAM figure is derated; per-core figures are achieved rates.
    dram = min(profile.bandwidth_gbps * (BANDWIDTH_EFFICIENCY if profile.peak_basis ==
                                         "theoretical" else 1.0),
               profile.bandwidth_1t_gbps * threads)
    cache = max(dram, (profile.cache_bandwidth_1t_gbps or 0.0) * threads * par)
    usable = (profile.cache_mb or 0.0) * 2 ** 20 * CACHE_USABLE
    weights = row.get("weight_bytes", 0)
    acts = row["bytes"] - weights
    t_m = (acts / (cache if acts <= usable else dram)
           + weights * weights_hit / cache + weights * (1 - weights_hit) / dram) / 1e3
    t_c = row["flops"] / (peak * eff * 1e3)
    bound = "dispatch" if dispatch > max(t_c, t_m) else (
        "compute" if t_c >= t_m else "memory")
    return max(t_c, t_m) + dispatch, bound


def weights_cache_hit(costs, profile) -> float:
    """Share of the weights still in the last-level cache at the next inference: all when
    weights + 2 x the largest activation fit in its usable part, else the share that fits."""
    s = _summary(costs)
    resident = s.get("weight_bytes", 0) + 2 * s.get("largest_activation_bytes", 0)
    usable = (profile.cache_mb or 0.0) * 2 ** 20 * CACHE_USABLE
    return 1.0 if resident <= usable else usable / resident


def latency_ms(costs, profile, threads: int = 1, clock: float = 1.0,
               weights_hit: float | None = None) -> float:
    """Estimated latency of one inference, ms."""
    if weights_hit is None:
        weights_hit = weights_cache_hit(costs, profile)
    us = sum(node_time_us(r, profile, threads, clock, weights_hit)[0] for r in _rows(costs))
    return (us + INVOKE_DISPATCHES * profile.dispatch_us) / 1e3


def thermal_model(profile, lat_ms_at, active_w: float, duration_s: float,
                  points: int = 60) -> dict:
    """Back-to-back inference for ``duration_s`` on a lumped RC model of the device,
    ``C dT/dt = P - (T - T_ambient) / R`` from the idle equilibrium. At ``throttle_c`` the
    clock drops to ``throttled_clock_ratio`` (``lat_ms_at(ratio)`` is the latency then;
    active power falls ~ clock^2) and recovers below ``throttle_c - hysteresis_c``.
    ``sustained_over_peak``: inferences/s over the last quarter over the unthrottled rate."""
    th, idle = profile.thermal, profile.power.idle_w
    r, c, low = th.r_c_per_w, th.c_j_per_c, th.throttled_clock_ratio
    lat = {1.0: lat_ms_at(1.0), low: lat_ms_at(low)}
    dt = max(1e-3, min(1.0, r * c / 50, duration_s / 400))
    temp, clock, t, done, late, first, trace, next_at = (
        th.ambient_c + idle * r, 1.0, 0.0, 0.0, 0.0, None, [], 0.0)
    hottest = temp

    def sample():  # temps_c as in a measured trace (edgeq.devices.sysfs.ThermalTrace)
        trace.append({"t_s": round(t, 2), "temp_c": round(temp, 2), "clock_ratio": clock,
                      "latency_ms": round(lat[clock], 4), "temps_c": {"model": round(temp, 2)}})

    while t < duration_s - 1e-9:
        if t >= next_at - 1e-9:
            sample()
            next_at += duration_s / points
        step = min(dt, duration_s - t)
        temp += step * (idle + active_w * clock ** THROTTLED_POWER_EXP
                        - (temp - th.ambient_c) / r) / c
        t += step
        hottest = max(hottest, temp)
        rate = 1e3 / lat[clock]
        done += rate * step
        late += rate * max(0.0, min(step, t - 0.75 * duration_s))
        if clock == 1.0 and temp >= th.throttle_c:
            clock, first = low, t if first is None else first
        elif clock < 1.0 and temp < th.throttle_c - th.hysteresis_c:
            clock = 1.0
    sample()
    out = {"duration_s": duration_s, "throttled": first is not None,
           "time_to_throttle_s": None if first is None else round(first, 2),
           "sustained_over_peak": round(min(1.0, late / (0.25 * duration_s) * lat[1.0] / 1e3),
                                        4),
           "peak_throughput_ips": round(1e3 / lat[1.0], 3),
           "sustained_throughput_ips": round(late / (0.25 * duration_s), 3),
           "max_temp_c": round(hottest, 2),
           "inferences": int(done), "throttle_c": th.throttle_c,
           "steady_state_c": round(th.ambient_c + (idle + active_w) * r, 2),
           "model": "lumped RC (estimated)", "trace": trace}
    if first is None:
        out["time_to_throttle_s_reason"] = "the steady-state temperature stays below throttle_c"
    return out


def estimate(costs, profile, threads: int = 1, sustained_s: float | None = None) -> dict:
    """The report's profile block for ``costs`` (a manifest ``costs`` block, NodeCosts or
    rows) on ``profile`` (a DeviceProfile) with ``threads`` CPU threads.

    Deterministic: ``latency_ms.p50`` equals ``mean``; p90, p99 and std are null (a
    roofline has no run-to-run spread), the reason beside them. Energy per inference
    (mJ) = (idle W + active W of the busy cores) x latency (ms). ``peak_memory_bytes`` =
    weights + 2 x the largest activation (tensor sizes only)."""
    from edgeq.errors import BadInput

    rows = _rows(costs)
    if not rows:
        raise BadInput("the artifact has no cost summary to estimate from: re-export it "
                       "with this edgeq version")
    if threads < 1:
        raise BadInput("--threads must be at least 1")
    if sustained_s is not None and sustained_s <= 0:
        raise BadInput("--sustained must be a positive number of seconds")
    used = min(threads, profile.total_cores)
    summary, hit = _summary(costs), weights_cache_hit(costs, profile)
    lat = latency_ms(rows, profile, used, 1.0, hit)
    active = sum(profile.power.cpu_active_w[c.name]
                 for c in profile.cores_fastest_first()[:used])
    by_kind, bounds = {}, {}
    for r in rows:
        us, bound = node_time_us(r, profile, used, 1.0, hit)
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + us / 1e3
        bounds[bound] = bounds.get(bound, 0) + 1
    weights, largest = summary.get("weight_bytes"), summary.get("largest_activation_bytes")
    block = {
        "device": profile.name, "profile": profile.name, "mode": "estimated", "threads": used,
        "latency_ms": {"p50": round(lat, 4), "mean": round(lat, 4), "p90": None, "p99": None,
                       "std": None, "runs": None,
                       "spread_reason": "a roofline estimate has no run-to-run spread"},
        "peak_memory_bytes": None if weights is None else int(weights + 2 * (largest or 0)),
        "peak_memory_basis": "estimated: weights + 2 x largest activation, tensor sizes "
                             "only (no runtime code or allocator overhead)",
        "energy_mj_per_inference": round((profile.power.idle_w + active) * lat, 4),
        "energy_detail": {"idle_w": profile.power.idle_w, "active_w": round(active, 3),
                          "active_mj": round(active * lat, 4)},
        "thermal": None, "thermal_reason": "no --sustained duration was asked for",
        "estimate": {"total_flops": summary.get("total_flops"),
                     "total_bytes": summary.get("total_bytes"), "operators": len(rows),
                     "bound": bounds, "weights_cache_hit": round(hit, 3),
                     "ms_by_kind": {k: round(v, 4) for k, v in sorted(by_kind.items())},
                     "model": "roofline per operator + dispatch (edgeq.profiling.estimate)"},
        "notes": [] if used == threads else
                 [f"{threads} threads asked, {profile.name} has {used} cores: used {used}"],
    }
    if sustained_s is not None:
        block["thermal"] = thermal_model(
            profile, lambda clk: latency_ms(rows, profile, used, clk, hit), active, sustained_s)
        del block["thermal_reason"]
    return block


def model_costs(model, recipe, calib=None, runtime: str = "executorch") -> dict:
    """The cost summary of a LoadedModel under ``recipe`` without writing an artifact:
    quantize with the runtime's PT2E quantizer (``calib``: a Dataset; None: the example
    inputs, as scales do not change costs), ``torch.export``, and cost the graph as if
    the delegate took every operator."""
    import torch

    module = model.module
    if recipe.quantized:
        from edgeq.progress import QUIET
        from edgeq.quantize import pt2e
        from edgeq.runtimes import get_runtime

        quantizer = get_runtime(runtime).quantizer(recipe, False, [])
        module = pt2e.ptq(model, quantizer, calib or _ExampleData(model.example_inputs), QUIET)
    ep = torch.export.export(module, model.example_inputs)
    return cost_summary(graph_costs(ep, assume_delegated=True))


class _ExampleData:
    """Example inputs as a one-sample calibration set (a Dataset's ``batches``)."""

    def __init__(self, inputs):
        self.inputs = [t.numpy() for t in inputs]

    def __len__(self):
        return 1

    def batches(self, size):
        yield self.inputs, None
