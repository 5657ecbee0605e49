#!/usr/bin/env python
"""Rescuing depthwise-separable CNNs: ReLU6 fusion and the float-model passes, per runtime.

On the built-in ``efficientnet-lite0`` (ImageNet weights, ReLU6, depthwise convs) with the
built-in real photos (``photos:calib`` / ``photos:eval``), and on the built-in MobileNetV2
(random init, BN statistics re-estimated on photo crops, common.mobilenetv2), for
``executorch-xnnpack``, ``onnx-cpu`` and ``tflite-xnnpack``, one artifact per configuration:

- ``vendor``: the runtime's default static int8 flow by hand (bench_executorch /
  bench_onnx / bench_tflite ``vendor_flow``: XNNPACKQuantizer, ORT MinMax, litert-torch);
- ``int8-nofuse`` (PT2E runtimes): edgeq ``int8`` with the ReLU6 fusion switched off;
- ``int8``: edgeq's ``int8`` recipe (ReLU6 fused on the PT2E runtimes);
- ``+bc``, ``+adaround``, ``+adaround+bc``, ``+cle+adaround+bc``: ``int8`` with the recipe
  passes ``bias_correction``, ``weight_rounding: adaround``, ``equalize``;
- ``+adaround+bc+pct``: the same with the ``percentile`` (99.99) activation observer,
  where the runtime takes it.

Each artifact's outputs on the eval crops are compared with the fp32 PyTorch model (top-1
agreement, SQNR). The passes are target-neutral: they are computed once per model and
configuration and reused for the three runtimes (``passes_s`` is their wall time). Speed:
the ``+adaround+bc`` int8 artifact against edgeq's fp32 one, 1 thread, interleaved rounds.

    python benchmarks/bench_dfq.py                       # full
    python benchmarks/bench_dfq.py --quick               # smoke check (fewer crops)
    python benchmarks/bench_dfq.py --models efficientnet-lite0 --targets onnx-cpu

Writes benchmarks/results/dfq.json (dfq.quick.json with --quick); a run restricted with
--models / --targets merges into the existing file. Exit status 1 when a goal fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import bench_executorch
import bench_onnx
import bench_tflite
import common
from common import log

TARGETS = ("executorch-xnnpack", "onnx-cpu", "tflite-xnnpack")
MODELS = ("efficientnet-lite0", "mobilenetv2")
CONFIGS = {
    "int8-nofuse": {},
    "int8": {},
    "+bc": {"bias_correction": True},
    "+adaround": {"weight_rounding": "adaround"},
    "+adaround+bc": {"weight_rounding": "adaround", "bias_correction": True},
    "+cle+adaround+bc": {"equalize": True, "weight_rounding": "adaround",
                         "bias_correction": True},
    "+adaround+bc+pct": {"weight_rounding": "adaround", "bias_correction": True,
                         "activation_observer": "percentile", "percentile": 99.99},
}
# The default run leaves out +adaround (alone) and +cle: measured weight-only on
# EfficientNet-Lite0 (see the README), CLE finds no pair it may scale with ReLU6 kept, and
# swapping ReLU6 for ReLU (equalize_relu6: relu) breaks the float model (2.6 dB).
DEFAULT_CONFIGS = ("int8-nofuse", "int8", "+adaround+bc", "+adaround+bc+pct")
SPEED_CONFIG = "+adaround+bc"
GOAL_AGREE, GOAL_SQNR, GOAL_SPEEDUP = 90.0, 18.0, 1.5


def load(name: str, n_calib: int, n_eval: int):
    """(model, calib Dataset of exactly n_calib samples, eval images)."""
    from edgeq import data
    from edgeq.models import load_model

    if name == "mobilenetv2":
        model, calib, eval_x = common.mobilenetv2(n_calib, n_eval)
        return model, calib, eval_x
    model = load_model(name)
    calib = data.select(data.load_dataset("photos:calib", model.input_names), n_calib)
    eval_x = next(iter(data.load_dataset("photos:eval", model.input_names).inputs.values()))
    return model, calib, eval_x[:n_eval]


def cached_passes(timings: dict):
    """Memoise edgeq.quantize.passes.apply per (model, pass fields, target weight grid):
    the CNN passes benchmarked here (CLE, AdaRound, bias correction) do not depend on the
    target runtime otherwise (SmoothQuant, which does, is not used here). Their wall time
    goes to ``timings``."""
    from edgeq.quantize import passes

    original, memo = passes.apply, {}

    def apply(recipe, model, calib, progress=None, grid=None, runtime=None):
        key = (id(model.module), recipe.equalize, recipe.equalize_relu6,
               recipe.weight_rounding, recipe.bias_correction, recipe.weight_granularity,
               len(calib) if calib is not None else 0, repr(grid))
        if key not in memo:
            t = time.perf_counter()
            memo[key] = original(recipe, model, calib, progress, grid, runtime)
            timings[key] = round(time.perf_counter() - t, 1)
        return memo[key]

    passes.apply = apply
    return original


def vendor(target: str, model, calib_x: np.ndarray, work: Path) -> Path:
    ex = model.example_inputs
    if target == "executorch-xnnpack":
        return bench_executorch.vendor_flow(model.module, ex, calib_x, work / "vendor.pte")
    if target == "onnx-cpu":
        d = work / "vendor-onnx"
        d.mkdir(exist_ok=True)
        return bench_onnx.vendor_flow(model.module, ex, model.input_names[0], calib_x, d)
    return bench_tflite.vendor_flow(model.module, ex, calib_x, work / "vendor.tflite")


def outputs(target: str, path: Path, xs: np.ndarray) -> np.ndarray:
    if target == "executorch-xnnpack":
        return bench_executorch.run_pte(path, xs)
    if target == "onnx-cpu":
        return bench_onnx.run_onnx(path, xs)
    return bench_tflite.Model(path, 1).outputs(xs)


def latency(target: str, paths: dict, x: np.ndarray, cfg) -> dict:
    if target == "executorch-xnnpack":
        from edgeq.runtimes.executorch import native

        return bench_executorch.latency(native.build_runner(), paths, x, 1, cfg)
    if target == "onnx-cpu":
        return bench_onnx.latency(paths, x, 1, cfg)
    return bench_tflite.latency(paths, x, 1, cfg)


def export(model, target: str, recipe, calib, out: Path) -> tuple[Path, dict]:
    from edgeq.stages import ExportOptions, export as edgeq_export
    from edgeq.targets import get_target

    m = edgeq_export(model, get_target(target), recipe, calib, None,
                     ExportOptions(out, force=True))
    return Path(m["artifact"]["path"]), m


def bench_target(name, model, calib, eval_x, ref, target, configs, work: Path, cfg) -> dict:
    import edgeq.quantize.relu6 as relu6
    from edgeq.errors import EdgeqError
    from edgeq.recipes import PRESETS

    calib_x = next(iter(calib.inputs.values()))
    res: dict = {}
    paths: dict = {}
    pt2e = target != "onnx-cpu"
    for conf in ["vendor", "fp32", *configs]:
        if conf == "int8-nofuse" and not pt2e:
            continue
        out = work / f"{name}.{target}.{conf.replace('+', 'p')}"
        out.mkdir(parents=True, exist_ok=True)
        log(f"{name} / {target} / {conf}: export")
        t = time.perf_counter()
        entry: dict = {}
        try:
            if conf == "vendor":
                path = vendor(target, model, calib_x, out)
            else:
                recipe = PRESETS["fp32" if conf == "fp32" else "int8"].with_(
                    **CONFIGS.get(conf, {}), calib_samples=len(calib_x))
                fuse = relu6.fuse_relu6
                if conf == "int8-nofuse":
                    relu6.fuse_relu6 = lambda q: q
                try:
                    path, manifest = export(model, target, recipe, calib, out)
                finally:
                    relu6.fuse_relu6 = fuse
                entry["delegated_share"] = manifest["delegation"].get("delegated_share")
        except EdgeqError as e:  # e.g. an observer this runtime does not take
            res[conf] = {"error": str(e)}
            log(f"  skipped: {e}")
            continue
        entry["export_s"] = round(time.perf_counter() - t, 1)
        entry["size_bytes"] = path.stat().st_size
        if conf != "fp32":
            o = outputs(target, path, eval_x)
            entry["sqnr_db"] = round(common.sqnr_db(o, ref), 2)
            entry["top1_agreement_pct"] = round(common.agreement(o, ref), 2)
            log(f"  {entry['sqnr_db']:.2f} dB, {entry['top1_agreement_pct']:.1f} % agreement")
        paths[conf] = path
        res[conf] = entry
    if SPEED_CONFIG in paths and "fp32" in paths:
        log(f"{name} / {target}: latency {SPEED_CONFIG} vs fp32, 1 thread")
        lat = latency(target, {"int8": paths[SPEED_CONFIG], "fp32": paths["fp32"]},
                      eval_x[:1], cfg)
        res["speed"] = {"int8_config": SPEED_CONFIG, "threads": 1,
                        "int8_median_ms": lat["int8"]["median_ms"],
                        "fp32_median_ms": lat["fp32"]["median_ms"],
                        "fp32_over_int8": round(lat["fp32"]["median_ms"]
                                                / lat["int8"]["median_ms"], 3)}
    return res


def goals(results: dict) -> list:
    rows = []
    for name, r in results["models"].items():
        for target, t in r["targets"].items():
            best = max((c for c in t if c not in ("vendor", "fp32", "speed")
                        and "sqnr_db" in t[c]), key=lambda c: t[c]["sqnr_db"], default=None)
            if best is None:
                continue
            b, v = t[best], t.get("vendor", {})
            rows.append((name, f"{target} best {best}: agreement {b['top1_agreement_pct']:.1f} % "
                         f"(vendor {v.get('top1_agreement_pct', float('nan')):.1f})",
                         f">= {GOAL_AGREE:.0f} %", b["top1_agreement_pct"] >= GOAL_AGREE))
            rows.append((name, f"{target} best {best}: SQNR {b['sqnr_db']:.2f} dB "
                         f"(vendor {v.get('sqnr_db', float('nan')):.2f})",
                         f">= {GOAL_SQNR:.0f} dB", b["sqnr_db"] >= GOAL_SQNR))
            if "speed" in t:
                sp = t["speed"]["fp32_over_int8"]
                rows.append((name, f"{target} int8 speed-up over fp32 = {sp:.2f}x",
                             f">= {GOAL_SPEEDUP}x", sp >= GOAL_SPEEDUP))
    return rows


def print_tables(results: dict, rows: list) -> None:
    for name, r in results["models"].items():
        for target, t in r["targets"].items():
            print(f"\n{name} / {target}")
            for conf, e in t.items():
                if conf == "speed" or "sqnr_db" not in e:
                    continue
                print(f"  {conf:20} {e['sqnr_db']:7.2f} dB {e['top1_agreement_pct']:7.1f} % "
                      f" export {e['export_s']:6.1f} s  delegated {e.get('delegated_share')}")
    common.print_goals(rows, 72)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--out", type=Path, help="results file (default results/dfq.json); "
                    "runs of separate --targets in parallel each write their own, then "
                    "--merge FILES folds them into results/dfq.json")
    ap.add_argument("--merge", nargs="+", type=Path)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    ap.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                    choices=list(CONFIGS))
    args = ap.parse_args()
    cfg = argparse.Namespace(n_calib=32, n_eval=32, rounds=3, runs=10, warmup=3, round_s=0.1) \
        if args.quick else argparse.Namespace(n_calib=64, n_eval=159, rounds=5, runs=20,
                                               warmup=5, round_s=0.3)
    warnings.filterwarnings("ignore", category=FutureWarning)
    import tempfile

    from edgeq.runtimes.base import package_versions

    started = time.time()
    out = args.out or common.RESULTS / ("dfq.quick.json" if args.quick else "dfq.json")
    if args.merge:
        return merge(out, args.merge)
    results = json.loads(out.read_text()) if out.is_file() else {"models": {}}
    results.update({"mode": "quick" if args.quick else "full", "settings": vars(cfg),
                    "host": common.host(), "versions": package_versions(
                        ("torch", "torchao", "executorch", "onnxruntime", "litert-torch"))})
    timings: dict = {}
    cached_passes(timings)
    with tempfile.TemporaryDirectory(prefix="edgeq-dfq-") as td:
        work = args.work or Path(td)
        for name in args.models:
            model, calib, eval_x = load(name, cfg.n_calib, cfg.n_eval)
            ref = common.reference(model.module, eval_x, 16)
            r = results["models"].setdefault(name, {"targets": {}})
            r.update({"calib_samples": len(calib), "eval_samples": len(eval_x),
                      "data": "photos:calib / photos:eval" if name != "mobilenetv2"
                      else "sklearn photo crops (common.photo_crops)"})
            for target in args.targets:
                r["targets"][target] = bench_target(name, model, calib, eval_x, ref, target,
                                                    args.configs, work, cfg)
            r["passes_s"] = {f"eq={k[1]},{k[3]},bc={k[4]}": v for k, v in timings.items()
                             if k[0] == id(model.module)}
            if name == "mobilenetv2":
                r["weights"] = common.MNV2_WEIGHTS
    if args.out:
        results["host"]["loadavg_end"] = __import__("os").getloadavg()
        common.write_json(results, args.out)
        return 0
    return common.finish(results, goals(results), "dfq", args.quick, started, print_tables)


def merge(out: Path, parts: list[Path]) -> int:
    """Fold per-target result files into ``out`` and print the tables and goals."""
    results = json.loads(out.read_text()) if out.is_file() else {"models": {}}
    for p in parts:
        part = json.loads(p.read_text())
        for k in ("mode", "settings", "versions", "host"):
            results[k] = part[k]
        for name, r in part["models"].items():
            mine = results["models"].setdefault(name, {"targets": {}})
            mine["targets"].update(r["targets"])
            mine.update({k: v for k, v in r.items() if k not in ("targets", "passes_s")})
            mine.setdefault("passes_s", {}).update(r.get("passes_s", {}))
    return common.write_results(results, goals(results), out, print_tables)


if __name__ == "__main__":
    sys.exit(main())
