"""Per-layer quantization sensitivity, simulated in PyTorch: one PT2E prepare with the
target runtime's quantizer, one calibration, then every observer is swapped for a
fake-quantizer that can be switched on and off. For each quantizable layer L (a module
owning a quantized weight: conv, linear) two configurations are run on the eval data:

* only L quantized: L's weights, and the activations on its input and output edges;
* all but L quantized: everything except L's weights and the edges only L touches
  (an edge between L and a quantized neighbour stays quantized, as it does in the real
  artifact when L is in ``keep_float``: the neighbour's annotation quantizes it).

Output SQNR against fp32 and the metric drop say how much L hurts alone and how much
keeping it in float recovers. The simulation is runtime-neutral and fast (no lowering);
the accuracy-budget search (``edgeq.quantize.search``) uses its ranking and then measures
every candidate on the real artifact."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import BadInput

EVAL_BATCH = 32


@dataclass
class _Point:
    """One quantization point (an observer module): a weight of ``layers`` or an
    activation edge between the layers in ``layers`` (empty: between unweighted ops)."""

    module: str
    weight: bool
    layers: set = field(default_factory=set)


def _fake_quant_class():
    import torch

    class FakeQuant(torch.nn.Module):
        """An observer's calibrated scale and zero point, applied as fake quantization
        when ``enabled``; identity otherwise."""

        def __init__(self, obs):
            super().__init__()
            self.qmin, self.qmax = int(obs.quant_min), int(obs.quant_max)
            self.enabled = True
            # A dynamic input (recipe dynamic_ops, int8-dynamic): XNNPACK quantizes each
            # row (token) over its own min / max at run time, and so does this.
            self.dynamic = bool(getattr(obs, "is_dynamic", False))
            if self.dynamic:
                self.axis = None
                return
            scale, zp = obs.calculate_qparams()
            self.register_buffer("scale", scale.detach().float().reshape(-1))
            self.register_buffer("zero_point", zp.detach().to(torch.int32).reshape(-1))
            self.axis = getattr(obs, "ch_axis", None) if self.scale.numel() > 1 else None

        def forward(self, x):
            if not self.enabled:
                return x
            if self.dynamic:
                lo = x.amin(-1, keepdim=True).clamp(max=0)
                hi = x.amax(-1, keepdim=True).clamp(min=0)
                scale = ((hi - lo) / (self.qmax - self.qmin)).clamp(min=1e-12)
                zp = (self.qmin - torch.round(lo / scale)).clamp(self.qmin, self.qmax)
                return (torch.round(x / scale) + zp).clamp(self.qmin, self.qmax).sub(zp) \
                    .mul(scale)
            if self.axis is not None:
                return torch.fake_quantize_per_channel_affine(
                    x, self.scale, self.zero_point, self.axis, self.qmin, self.qmax)
            # torch.fake_quantize_per_tensor_affine's arithmetic, bit for bit, in place on
            # one copy: its kernel also builds a gradient mask and costs 1.9x this.
            scale, zp = float(self.scale[0]), int(self.zero_point[0])
            y = torch.mul(x, 1.0 / scale)
            return y.round_().add_(zp).clamp_(self.qmin, self.qmax).sub_(zp).mul_(scale)

    return FakeQuant


def _layer_of(node) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path, *_ = list(stack.values())[-1]
    return str(path).replace("L['self'].", "")


def _is_observer(gm, node) -> bool:
    if node.op != "call_module":
        return False
    mod = gm.get_submodule(node.target)
    return hasattr(mod, "calculate_qparams") and hasattr(mod, "quant_min")


def quant_points(gm) -> tuple[list[str], list[_Point]]:
    """(layer names in graph order, quantization points) of a prepared graph."""
    import torch

    obs_nodes = [n for n in gm.graph.nodes if _is_observer(gm, n)]
    weighted: dict = {}  # op node -> layer name
    for n in obs_nodes:
        if n.args and getattr(n.args[0], "op", None) == "get_attr":
            for user in n.users:
                name = _layer_of(user)
                if name:
                    weighted[user] = name
    layers = list(dict.fromkeys(weighted[n] for n in gm.graph.nodes if n in weighted))
    obs_set = set(obs_nodes)

    def walk(start, step) -> set:
        found, seen, todo = set(), set(), list(start)
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in weighted:
                found.add(weighted[n])
            elif n not in obs_set and n.op == "call_function":
                todo += step(n)
        return found

    def inputs(n):
        return [a for a in n.all_input_nodes]

    points: dict[str, _Point] = {}
    for n in obs_nodes:
        mod = gm.get_submodule(n.target)
        if getattr(mod, "dtype", None) not in (torch.int8, torch.uint8, torch.int16):
            continue  # int32 bias or float placeholders: nothing to simulate
        src = n.args[0]
        is_weight = getattr(src, "op", None) == "get_attr"
        p = points.setdefault(n.target, _Point(n.target, is_weight))
        if is_weight:
            p.layers |= {weighted[u] for u in n.users if u in weighted}
        else:
            p.layers |= walk([src], inputs) | walk(list(n.users), lambda m: list(m.users))
    return layers, list(points.values())


class Simulator:
    """A calibrated fake-quantized copy of the model whose layers can be switched."""

    def __init__(self, model, quantizer, calib, progress):
        import torch
        from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

        from edgeq.quantize import pt2e

        gm, self.dynamic = pt2e.export(model.module, model.example_inputs, dynamic_batch=True)
        try:
            prepared = prepare_pt2e(gm, quantizer)
        except Exception as e:
            raise pt2e.describe_export_error(e, "quantizer preparation") from e
        with torch.no_grad(), progress.task(f"calibrating on {len(calib)} samples",
                                            total=len(calib)) as advance:
            for xs, _ in pt2e._batches(calib, pt2e.CALIB_BATCH, self.dynamic):
                prepared(*xs)
                advance(len(xs[0]))
        self.layers, self.points = quant_points(prepared)
        fq = _fake_quant_class()
        with progress.task("computing quantization parameters"):
            self.fakes = {}
            for p in self.points:
                self.fakes[p.module] = fq(prepared.get_submodule(p.module))
                setattr(prepared, p.module, self.fakes[p.module])
        prepared.recompile()
        self.gm = prepared

    def configure(self, quantized: set, rest_on: bool) -> None:
        """Switch on the points of the layers in ``quantized``; ``rest_on`` says what
        points touching no layer do (on for mostly-quantized configurations)."""
        for p in self.points:
            self.fakes[p.module].enabled = bool(p.layers & quantized) if p.layers else rest_on

    def run(self, ds) -> np.ndarray:
        import torch

        def tensor(x):
            t = torch.from_numpy(np.ascontiguousarray(x))
            # NHWC: oneDNN's depthwise and 1x1 convs run ~1.5x faster on EfficientNet-Lite0
            return t.contiguous(memory_format=torch.channels_last) \
                if t.dim() == 4 and t.is_floating_point() else t

        outs = []
        with torch.inference_mode():
            for xs, _ in ds.batches(EVAL_BATCH if self.dynamic else 1):
                out = self.gm(*[tensor(x) for x in xs])
                out = out[0] if isinstance(out, (tuple, list)) else out
                outs.append(out.detach().numpy())
        return np.concatenate(outs)


def simulation_quantizer(target, recipe, keep_float: list[str]):
    """(quantizer, target name) to simulate ``target`` with: its runtime's PT2E quantizer,
    or, for runtimes that quantize their own format (ONNX Runtime), the first target's
    whose runtime has one (a proxy, named in the result)."""
    from edgeq.runtimes import get_runtime
    from edgeq.targets import all_targets

    candidates = [target] + [t for t in all_targets().values() if t.name != target.name]
    for t in candidates:
        rt = get_runtime(t.runtime)
        if hasattr(rt, "quantizer") and t.delegate != "vulkan":
            try:
                return rt.quantizer(recipe, False, keep_float), t.name
            except BadInput:
                continue
    raise BadInput(f"no runtime with a PT2E quantizer is installed to simulate {target.name}")


def _noise_share(sqnr_a: float | None, sqnr_b: float | None) -> float:
    """Noise power of configuration a over that of b (dB -> linear), capped at 1."""
    if sqnr_a is None or sqnr_b is None:
        return 0.0
    return float(min(1.0, 10 ** ((sqnr_b - sqnr_a) / 10)))


def analyze(model, target, recipe, calib, eval_ds, progress, metric: str | None = None) -> dict:
    """The sensitivity block: per layer SQNR (dB) and metric drop when only it is
    quantized, and what keeping only it in float recovers (dB, metric points), ranked most
    sensitive first. ``score`` (0..1) is the larger of the share of the all-int8 output
    noise the layer causes alone and the share removed by keeping it in float."""
    import time

    from edgeq.evaluate import accuracy_block, run_reference

    start = time.perf_counter()
    if not recipe.quantized:
        raise BadInput(f"recipe '{recipe.name}' quantizes nothing: sensitivity needs a "
                       "quantized recipe such as int8")
    if model.module is None:
        raise BadInput(f"model '{model.spec}' is a runtime file; sensitivity needs the "
                       "PyTorch model")
    from edgeq.quantize.pt2e import resolve_keep_float

    metric = metric or model.metric
    kept = resolve_keep_float(model.module, recipe.keep_float)
    # The base recipe's float layers stay float in every configuration.
    quantizer, sim_target = simulation_quantizer(target, recipe, kept)
    sim = Simulator(model, quantizer, calib, progress)
    if not sim.layers:
        raise BadInput(f"model '{model.spec}' has no quantizable layer (conv, linear) for "
                       f"{target.name}")
    ref = run_reference(model, eval_ds)
    labels = eval_ds.labels

    def measure(quantized: set, rest_on: bool) -> dict:
        sim.configure(quantized, rest_on)
        return accuracy_block(sim.run(eval_ds), labels, ref, metric)

    everything = set(sim.layers)
    full = measure(everything, True)
    metric = full["metric"]
    rows = []
    with progress.task(f"sensitivity of {len(sim.layers)} layers on {len(eval_ds)} samples",
                       total=len(sim.layers)) as advance:
        mods = dict(model.module.named_modules())
        for name in sim.layers:
            alone = measure({name}, False)
            without = measure(everything - {name}, True)
            m = mods.get(name)
            s_alone, s_without = alone["fidelity"]["sqnr"], without["fidelity"]["sqnr"]
            s_full = full["fidelity"]["sqnr"]
            rec_db = None if s_without is None or s_full is None else s_without - s_full
            share_removed = 1.0 - _noise_share(s_full, s_without) if rec_db else 0.0
            rows.append({
                "name": name, "op": type(m).__name__ if m is not None else "?",
                "params": int(sum(p.numel() for p in m.parameters())) if m is not None else None,
                "sqnr_db": _r(s_alone), "metric_drop": _r(alone["drop"]),
                "float_recovery_db": _r(rec_db),
                "float_recovery_points": _r(None if without["drop"] is None or full["drop"] is None
                                            else full["drop"] - without["drop"]),
                "score": round(max(_noise_share(s_alone, s_full), share_removed), 4)})
            advance(1)
    rows.sort(key=lambda r: (-r["score"], -(r["float_recovery_points"] or 0),
                             r["sqnr_db"] if r["sqnr_db"] is not None else 0.0))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return {"metric": metric, "target": target.name, "simulated_with": sim_target,
            "method": "PT2E fake quantization, calibrated once, per-layer switching",
            "recipe": recipe.name, "samples": len(eval_ds), "calib_samples": len(calib),
            "all_int8": {"sqnr_db": _r(full["fidelity"]["sqnr"]), "metric_drop": _r(full["drop"]),
                         "value": full["value"], "reference_value": full["reference_value"]},
            "seconds": round(time.perf_counter() - start, 2), "layers": rows}


def _r(v, digits: int = 3):
    return None if v is None else round(float(v), digits)
