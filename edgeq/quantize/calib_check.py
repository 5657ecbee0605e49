"""Is the calibration set representative? Run the fp32 model over the calibration samples
and then the evaluation samples, and report per layer how much of the evaluation
activations falls outside the ranges calibration saw (what static quantization would
clip), both for the raw min / max and for the range the recipe's observer picks (a
percentile or entropy observer clips on purpose: both are shown; a value within half a
quantization step of the observer's range only rounds, and is not counted).

Layers are the model's leaf modules (forward hooks) plus its inputs; memory holds one batch
of activations and one bounded observer per layer, whatever the data sets' sizes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import BadInput

CLIP_WARN = 0.01  # share of evaluation values outside the calibration range that warns
MIN_SAMPLES = 100  # fewer calibration samples than this warns
SAMPLES_PER_CLASS = 2  # ... and fewer than this many per class (when there are labels)
LABEL_SHIFT_WARN = 0.2  # total-variation distance between label distributions that warns
BATCH = 32


@dataclass
class _Layer:
    name: str
    op: str
    observer: object = None
    cmin: float = float("inf")
    cmax: float = float("-inf")
    emin: float = float("inf")
    emax: float = float("-inf")
    n: int = 0
    outside: int = 0
    outside_obs: int = 0
    orange: tuple = (0.0, 0.0)
    seen: bool = False


@dataclass
class _Hooks:
    """Forward hooks that hand each observed tensor to ``fn(layer, tensor)``."""

    layers: dict = field(default_factory=dict)
    fn: object = None
    handles: list = field(default_factory=list)

    def attach(self, module, input_names: list[str]):
        import torch

        for name in input_names:
            self.layers[f"input:{name}"] = _Layer(f"input:{name}", "input")
        for name, mod in module.named_modules():
            if name and not any(True for _ in mod.children()):
                self.layers[name] = _Layer(name, type(mod).__name__)

                def hook(_m, _inp, out, name=name):
                    if isinstance(out, torch.Tensor) and out.is_floating_point():
                        self.fn(self.layers[name], out.detach())

                self.handles.append(mod.register_forward_hook(hook))

    def detach(self):
        for h in self.handles:
            h.remove()


def _run(model, ds, hooks: _Hooks, fn, progress, what: str) -> None:
    """Feed ``ds`` through the model in batches (one sample at a time when the model
    insists on its example batch size), calling ``fn`` on every observed tensor."""
    import torch

    hooks.fn = fn
    names = model.input_names
    batch = BATCH
    with torch.no_grad(), progress.task(what, total=len(ds)) as advance:
        start = 0
        while start < len(ds):
            xs = [torch.from_numpy(np.ascontiguousarray(a[start:start + batch]))
                  for a in ds.inputs.values()]
            try:
                model.module(*xs)
            except Exception as e:
                if batch > 1 and start == 0:
                    batch = 1  # hard-coded batch size (an exported .pt2): sample by sample
                    continue
                raise BadInput(f"model '{model.spec}' failed on data '{ds.source}': "
                               f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
            for name, x in zip(names, xs):
                fn(hooks.layers[f"input:{name}"], x.float())
            advance(len(xs[0]))
            start += batch


def _observe(layer: _Layer, x) -> None:
    lo, hi = (float(v) for v in x.aminmax())
    layer.cmin, layer.cmax = min(layer.cmin, lo), max(layer.cmax, hi)
    layer.observer(x)
    layer.seen = True


def _count(layer: _Layer, x) -> None:
    if not layer.seen:
        return
    lo, hi = (float(v) for v in x.aminmax())
    layer.emin, layer.emax = min(layer.emin, lo), max(layer.emax, hi)
    layer.n += x.numel()
    layer.outside += int(((x < layer.cmin) | (x > layer.cmax)).sum())
    olo, ohi = layer.orange
    # Within half a step of the grid's end a value only rounds, as everywhere on the grid.
    half = (ohi - olo) / (layer.observer.quant_max - layer.observer.quant_min) / 2
    layer.outside_obs += int(((x < olo - half) | (x > ohi + half)).sum())


def _label_facts(calib, data, warnings: list[str]) -> dict | None:
    if calib.labels is None:
        return None
    classes = np.union1d(np.unique(calib.labels),
                         np.unique(data.labels) if data.labels is not None else [])
    cc = np.array([(calib.labels == c).sum() for c in classes]) / len(calib)
    facts = {"classes": int(len(classes)), "calib_classes": int((cc > 0).sum())}
    if len(calib) < SAMPLES_PER_CLASS * len(classes):
        warnings.append(f"calibration has {len(calib)} samples for {len(classes)} classes: "
                        f"use at least {SAMPLES_PER_CLASS} per class "
                        f"({SAMPLES_PER_CLASS * len(classes)})")
    if data.labels is not None:
        ec = np.array([(data.labels == c).sum() for c in classes]) / len(data)
        missing = [int(c) for c, a, b in zip(classes, cc, ec) if a == 0 and b > 0]
        tv = float(0.5 * np.abs(cc - ec).sum())
        facts.update({"eval_classes": int((ec > 0).sum()), "missing_in_calib": missing,
                      "label_distance": round(tv, 4)})
        if missing:
            warnings.append(f"calibration has no sample of {len(missing)} of the "
                            f"{int((ec > 0).sum())} classes in the evaluation data "
                            f"({', '.join(map(str, missing[:10]))}"
                            f"{', ...' if len(missing) > 10 else ''})")
        elif tv > LABEL_SHIFT_WARN:
            warnings.append(f"the calibration labels are distributed unlike the evaluation "
                            f"labels (total-variation distance {tv:.2f} > {LABEL_SHIFT_WARN})")
    return facts


def calib_check(model, calib, data, recipe, progress) -> dict:
    """Compare activation ranges on ``calib`` (already selected) and ``data`` (edgeq
    Datasets) for ``model`` (a LoadedModel with a PyTorch module), with the recipe's
    observer. Returns the result dict (layers sorted by clipped share, warnings)."""
    import torch

    from edgeq.quantize.observers import describe, observed_range, observer_for

    if model.module is None:
        raise BadInput(f"model '{model.spec}': calib-check runs the PyTorch model; give "
                       "file.py:factory, a .pt2 file or a built-in, not a runtime's file")
    ctr = observer_for(recipe)
    hooks = _Hooks()
    hooks.attach(model.module, model.input_names)
    for layer in hooks.layers.values():
        layer.observer = ctr(dtype=torch.int8, qscheme=torch.per_tensor_affine)
    try:
        _run(model, calib, hooks, _observe, progress,
             f"calibration activations ({recipe.activation_observer}), {len(calib)} samples")
        seen = [la for la in hooks.layers.values() if la.seen]
        for layer in seen:
            layer.orange = observed_range(layer.observer)
        _run(model, data, hooks, _count, progress,
             f"evaluation activations, {len(data)} samples")
    finally:
        hooks.detach()

    def r(v):
        return float(f"{v:.6g}")

    rows = [{"layer": la.name, "op": la.op,
             "calib_range": [r(la.cmin), r(la.cmax)], "eval_range": [r(la.emin), r(la.emax)],
             "clipped_share": la.outside / la.n,
             "observer_range": [r(la.orange[0]), r(la.orange[1])],
             "observer_clipped_share": la.outside_obs / la.n}
            for la in seen if la.n]
    rows.sort(key=lambda x: (-x["clipped_share"], -x["observer_clipped_share"]))
    warnings: list[str] = []
    if len(calib) < MIN_SAMPLES:
        warnings.append(f"calibration has only {len(calib)} samples: use at least "
                        f"{MIN_SAMPLES}")
    labels = _label_facts(calib, data, warnings)
    over = [x for x in rows if x["clipped_share"] > CLIP_WARN]
    if over:
        worst = over[0]
        warnings.append(f"{len(over)} of {len(rows)} layers would clip more than "
                        f"{CLIP_WARN:.0%} of the evaluation activations outside the "
                        f"calibration range (worst: {worst['layer']}, "
                        f"{worst['clipped_share']:.1%})")
    total = sum(la.n for la in seen)
    return {
        "model": model.spec,
        "calib": {"source": calib.source, "samples": len(calib),
                  "labels": calib.labels is not None},
        "eval": {"source": data.source, "samples": len(data),
                 "labels": data.labels is not None},
        "observer": {"name": recipe.activation_observer, "details": describe(recipe)},
        "labels": labels,
        "clip_warn_share": CLIP_WARN,
        "summary": {
            "layers": len(rows), "layers_over_threshold": len(over),
            "max_clipped_share": max((x["clipped_share"] for x in rows), default=0.0),
            "mean_clipped_share": (sum(la.outside for la in seen) / total) if total else 0.0,
            "max_observer_clipped_share": max((x["observer_clipped_share"] for x in rows),
                                              default=0.0)},
        "layers": rows,
        "warnings": warnings,
        "representative": not warnings,
    }


def table(result: dict, limit: int = 25):
    """The per-layer table (rich), worst first."""
    from rich.table import Table

    s = result["summary"]
    t = Table(title=f"calibration vs evaluation activations ({s['layers']} layers, "
                    f"observer {result['observer']['name']})", title_justify="left")
    for col in ("layer", "op", "calib range", "eval range", "clipped", "observer range",
                "clipped (observer)"):
        t.add_column(col, justify="right" if "clipped" in col else "left")

    def rng(v):
        return f"[{v[0]:.4g}, {v[1]:.4g}]"

    for x in result["layers"][:limit]:
        share = f"{x['clipped_share']:.2%}"
        if x["clipped_share"] > result["clip_warn_share"]:
            share = f"[red]{share}[/]"
        t.add_row(x["layer"], x["op"], rng(x["calib_range"]), rng(x["eval_range"]), share,
                  rng(x["observer_range"]), f"{x['observer_clipped_share']:.2%}")
    if len(result["layers"]) > limit:
        t.add_row(f"... {len(result['layers']) - limit} more (--json for all)", "", "", "",
                  "", "", "")
    return t
