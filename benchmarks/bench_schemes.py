#!/usr/bin/env python
"""Quantization schemes side by side (issue #6): fp32, static int8, dynamic int8, int8
weight-only and int4 weight-only (group 32 / 64 / 128), on every runtime, so the user sees
the Pareto knee of size, fidelity and latency for a Linear-heavy model.

The model is the built-in ``minilm-l6`` (all-MiniLM-L6-v2 sentence encoder: 36 Linear
layers, 10.6 M of its 22.6 M parameters; the 11.7 M-entry token embedding stays float in
every scheme) on the built-in ``sentences:calib`` / ``sentences:eval``; without its pip
package (or with ``--quick``) a Linear-heavy MLP (384 -> 1536 -> 384, four blocks) on
random inputs. Every artifact comes from ``edgeq.stages.export`` exactly as ``edgeq export
-t T -r R`` makes it (static int8 calibrated on ``CALIB`` samples; the other schemes take
no data) and is measured with edgeq's own tools: file size (and the size the bits
predict: fp32 minus the Linear weights' fp32 bytes plus their quantized bytes and one fp32
scale per channel or group); fidelity to the PyTorch fp32 model (mean cosine of the
outputs, SQNR) run in the artifact's runtime; latency p50 from ``edgeq.stages.
profile_local`` (1 thread, the runtime's benchmark subprocess). What each runtime really
executes for a scheme (e.g. int4 on XNNPACK is int8-dynamic-activation x int4-weight) is
copied from the manifest.

The Pareto front is taken per runtime over (size, 1 - cosine) and over (latency,
1 - cosine); the "knee" is the smallest artifact whose cosine to fp32 is >= 0.99.

    python benchmarks/bench_schemes.py            # MiniLM-L6: ~30-40 min on 2 busy cores
    python benchmarks/bench_schemes.py --quick    # the MLP, fewer runs: ~5 min

Writes benchmarks/results/schemes.json (schemes.quick.json with --quick). Exit status 1
when a goal fails.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import common
from common import log

TARGETS = ("executorch-xnnpack", "onnx-cpu", "tflite-xnnpack")
RECIPES = ("fp32", "int8", "int8-dynamic", "int8-w", "int4-w-g32", "int4-w-g64",
           "int4-w-g128")
CALIB = 64  # static int8 calibration samples (sentences:calib)


def load(quick: bool):
    """(model, calib Dataset, eval Dataset, name)."""
    from edgeq.data import Dataset, load_dataset, select
    from edgeq.models import load_model

    if not quick:
        try:
            m = load_model("minilm-l6")
            calib = select(load_dataset("sentences:calib", m.input_names), CALIB, 0)
            ev = select(load_dataset("sentences:eval", m.input_names), 64, 0)
            return m, calib, ev, "minilm-l6"
        except Exception as e:  # its weights' pip package is missing
            log(f"minilm-l6 unavailable ({e}); using the MLP")
    work = Path(tempfile.mkdtemp(prefix="bench-schemes-"))
    (work / "mlp.py").write_text(MLP_SOURCE)
    m = load_model(f"{work / 'mlp.py'}:build")
    rng = np.random.default_rng(0)
    calib = Dataset({m.input_names[0]: rng.standard_normal((CALIB, 384)).astype(np.float32)},
                    None, "random normal (calib)")
    ev = Dataset({m.input_names[0]: rng.standard_normal((64, 384)).astype(np.float32)},
                 None, "random normal (eval)")
    return m, calib, ev, "mlp-384x1536"


MLP_SOURCE = '''
import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Sequential(
            torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384))
            for _ in range(4))
        self.head = torch.nn.Linear(384, 384)

    def forward(self, x):
        for b in self.blocks:
            x = x + b(x)
        return self.head(x)


def build():
    torch.manual_seed(0)
    return MLP().eval(), (torch.randn(1, 384),)
'''


def predicted_bytes(fp32_bytes: int, layers: list[dict], recipe) -> int | None:
    """fp32 size with the Linear weights at the recipe's bits plus one fp32 scale per output
    channel (or per group): what the bits alone predict, format overhead aside."""
    if recipe.method not in ("dynamic", "weight-only"):
        return None
    w = sum(x["in_features"] * x["out_features"] for x in layers)
    scales = sum(x["out_features"] * (x["in_features"] // recipe.group_size
                                      if recipe.weight_granularity == "per-group" else 1)
                 for x in layers)
    return int(fp32_bytes - 4 * w + w * recipe.weight_bits / 8 + 4 * scales)


def pareto(cells: list[dict], x: str) -> list[str]:
    """Recipes on the front of (``x`` lower, cosine higher) among measured cells."""
    ok = [c for c in cells if c.get(x) is not None and c.get("cosine") is not None]
    return [c["recipe"] for c in ok
            if not any(o is not c and o[x] <= c[x] and o["cosine"] >= c["cosine"]
                       and (o[x] < c[x] or o["cosine"] > c["cosine"]) for o in ok)]


def bench_cell(model, target: str, recipe_name: str, calib, ev, work: Path, runs: int,
               ref_out: np.ndarray) -> dict:
    from edgeq.errors import EdgeqError
    from edgeq.evaluate import fidelity, run_artifact
    from edgeq.progress import QUIET
    from edgeq.recipes import load_recipe
    from edgeq.runtimes import get_runtime
    from edgeq.stages import ExportOptions, export, profile_local
    from edgeq.targets import get_target

    recipe = load_recipe(recipe_name)
    cell = {"target": target, "recipe": recipe_name}
    t0 = time.time()
    try:
        manifest = export(model, get_target(target), recipe,
                          calib if recipe.needs_calibration else None, None,
                          ExportOptions(work / f"{target}-{recipe_name}", force=True))
    except EdgeqError as e:
        log(f"{target} {recipe_name}: {e}")
        return {**cell, "error": str(e)}
    cell["export_s"] = round(time.time() - t0, 1)
    path = Path(manifest["artifact"]["path"])
    cell["size_bytes"] = manifest["artifact"]["size_bytes"]
    q = manifest["delegation"].get("quantization") or {}
    cell.update({k: q.get(k) for k in ("executed_as", "activations", "layers_quantized",
                                       "weights_quantized") if k in q})
    cell["delegated_share"] = manifest["delegation"].get("delegated_share")
    session = get_runtime(get_target(target).runtime).open(path)
    fid = fidelity(run_artifact(session, ev, QUIET), ref_out)
    cell["cosine"], cell["sqnr_db"] = round(fid["cosine"], 6), round(fid["sqnr"], 2)
    prof = profile_local(path, [a[:1] for a in ev.inputs.values()], runs=runs,
                         warmup=max(2, runs // 10), threads=1)
    cell["latency_ms_p50"] = prof["latency_ms"]["p50"]
    cell["latency_runner"] = prof.get("runner")
    log(f"{target} {recipe_name}: {cell['size_bytes'] / 1e6:.2f} MB, cosine "
        f"{cell['cosine']:.4f}, p50 {cell['latency_ms_p50']:.2f} ms")
    return cell


def main() -> int:
    args = common.parse_args(__doc__, "artifacts")
    started = time.time()
    from edgeq.evaluate import run_reference
    from edgeq.quantize.schemes import linear_layers
    from edgeq.recipes import load_recipe
    from edgeq.runtimes import get_runtime

    model, calib, ev, name = load(args.quick)
    runs = 20 if args.quick else 50
    ref_out = run_reference(model, ev)
    layers = linear_layers(model.module)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-schemes-"))
    results = {"model": name, "eval_samples": len(ev), "calib_samples": len(calib),
               "linear_layers": len(layers),
               "linear_weights": sum(x["in_features"] * x["out_features"] for x in layers),
               "params": sum(p.numel() for p in model.module.parameters()),
               "latency": "p50 of %d runs, 1 thread, batch 1, this host" % runs,
               "versions": {**get_runtime("executorch").versions(),
                            **get_runtime("onnx").versions(),
                            **get_runtime("tflite").versions()},
               "host": common.host(), "targets": {}}
    rows = []
    for target in TARGETS:
        cells = [bench_cell(model, target, r, calib, ev, work, runs, ref_out) for r in RECIPES]
        fp32 = next((c for c in cells if c["recipe"] == "fp32" and "size_bytes" in c), None)
        for c in cells:
            if fp32 and "size_bytes" in c:
                c["size_vs_fp32"] = round(c["size_bytes"] / fp32["size_bytes"], 4)
                pred = predicted_bytes(fp32["size_bytes"], layers, load_recipe(c["recipe"]))
                if pred:
                    c["predicted_bytes"] = pred
                    c["size_vs_predicted"] = round(c["size_bytes"] / pred, 4)
        good = [c for c in cells if (c.get("cosine") or 0) >= 0.99]
        knee = min(good, key=lambda c: c["size_bytes"])["recipe"] if good else None
        results["targets"][target] = {
            "cells": cells, "pareto_size": pareto(cells, "size_bytes"),
            "pareto_latency": pareto(cells, "latency_ms_p50"), "knee": knee}
        by = {c["recipe"]: c for c in cells}
        for r, floor in (("int8-dynamic", 0.99), ("int8-w", 0.99), ("int4-w-g32", 0.95)):
            c = by.get(r, {})
            rows.append((target, f"{r} cosine to fp32", f">= {floor}",
                         (c.get("cosine") or 0) >= floor))
            if c.get("size_vs_predicted") is not None:
                rows.append((target, f"{r} size vs bits' prediction", "<= 1.10",
                             c["size_vs_predicted"] <= 1.10))
        if "size_bytes" in by.get("int4-w-g32", {}) and "size_bytes" in by.get("int8-w", {}):
            rows.append((target, "int4-w-g32 smaller than int8-w", "yes",
                         by["int4-w-g32"]["size_bytes"] < by["int8-w"]["size_bytes"]))

    def print_tables(res: dict, goal_rows: list) -> None:
        print(f"\n{res['model']}: {res['linear_layers']} Linear layers, "
              f"{res['linear_weights']:,} of {res['params']:,} parameters; {res['latency']}")
        for target, t in res["targets"].items():
            print(f"\n{target}  (knee: {t['knee']}; size front: {', '.join(t['pareto_size'])};"
                  f" latency front: {', '.join(t['pareto_latency'])})")
            print(f"  {'recipe':14}{'MB':>9}{'x fp32':>8}{'x pred':>8}{'cosine':>9}"
                  f"{'SQNR dB':>9}{'p50 ms':>9}")
            for c in t["cells"]:
                if "error" in c:
                    print(f"  {c['recipe']:14} error: {c['error'][:90]}")
                    continue
                print(f"  {c['recipe']:14}{c['size_bytes'] / 1e6:9.2f}"
                      f"{c.get('size_vs_fp32', float('nan')):8.3f}"
                      f"{c.get('size_vs_predicted', float('nan')):8.3f}{c['cosine']:9.4f}"
                      f"{c['sqnr_db']:9.2f}{c['latency_ms_p50']:9.2f}")
        common.print_goals(goal_rows, 36)

    return common.finish(results, rows, "schemes", args.quick, started, print_tables)


if __name__ == "__main__":
    raise SystemExit(main())
