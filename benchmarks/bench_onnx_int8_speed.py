"""ONNX Runtime (CPU provider): static int8 speed-up over fp32 and fidelity, before and after
edgeq's CPU layout (``edgeq.runtimes.onnx.cpu_int8``), on a CNN and a transformer.

Models: EfficientNet-Lite0 (ImageNet weights; photos:calib / photos:eval) and MiniLM-L6
(all-MiniLM-L6-v2; sentences:calib / sentences:eval, 64 tokens). Every artifact is built by
edgeq's own export (``stages.export``) for ``onnx-cpu``, with target options varied:

* ``fp32``: the fp32 artifact;
* ``int8-before``: the flow before this change (``activation_dtype: int8``,
  ``qdq_layout: default``: ORT's own QDQ layout);
* ``int8``: edgeq's default int8 recipe on the onnx-cpu target as shipped;
* MiniLM only: ``int8-ffn-int8`` (``float_ops: [softmax, layer_norm, mask_add]``: the FFN
  down projection int8 with a float output) and ``int8-sq`` (SmoothQuant 0.5; it was broken
  on ONNX Runtime before this change: pre-processing dropped the node metadata that marks
  its float multiplies).

Fidelity against the fp32 PyTorch model (``edgeq.evaluate.fidelity``: SQNR, top-1 agreement,
mean cosine); latency in ORT InferenceSessions at 1 thread, all variants of a model in
interleaved rounds (``common.interleaved``); op counts of the graph ORT runs (optimized
model). The machine may be shared: the load average is recorded.

    python benchmarks/bench_onnx_int8_speed.py [--quick] [--models M,M] [--variants V,V]
        [--merge]   # re-measure some models, keep the others' rows of the results file

Writes benchmarks/results/onnx_int8_speed.json (onnx_int8_speed.quick.json with --quick).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import log  # noqa: E402

TARGET = "onnx-cpu"
MODELS = {"efficientnet-lite0": ("photos:calib", "photos:eval"),
          "minilm-l6": ("sentences:calib", "sentences:eval")}
BEFORE = {"activation_dtype": "int8", "qdq_layout": "default"}
# name -> (recipe changes on top of the int8 preset | None for fp32, target options, models)
VARIANTS = {
    "fp32": (None, {}, None),
    "int8-before": ({}, BEFORE, None),
    "int8": ({}, {}, None),
    "int8-ffn-int8": ({"float_ops": ("softmax", "layer_norm", "mask_add")}, {},
                      ("minilm-l6",)),
    "int8-sq": ({"smoothquant": 0.5}, {}, ("minilm-l6",)),
}
GOAL_SPEEDUP = 1.5
GOAL_COSINE = 0.99
# EfficientNet-Lite0 int8 on ORT before this change (benchmarks/results/pretrained.json).
CNN_BEFORE = {"sqnr_db": 17.81, "agreement_pct": 91.8}
KERNELS = ("QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "QLinearAdd",
           "QLinearMul", "Conv", "Gemm", "MatMul", "FusedMatMul", "QuantizeLinear",
           "DequantizeLinear")


def build(model, name: str, calib, out: Path, n_calib: int) -> Path:
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    changes, opts, _ = VARIANTS[name]
    target = get_target(TARGET)
    target = dataclasses.replace(target, options={**target.options, **opts})
    recipe = load_recipe("fp32") if changes is None else load_recipe("int8").with_(
        name=name, calib_samples=n_calib, **changes)
    manifest = export(model, target, recipe, None if changes is None else calib, None,
                      ExportOptions(out / name, force=True))
    return Path(manifest["artifact"]["path"])


def session(path: Path, optimized: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def kernels(path: Path, work: Path) -> dict:
    """Op counts (of ``KERNELS``) in the graph ORT's CPU provider runs for ``path``."""
    import onnx

    opt = work / (path.stem + ".optimized.onnx")
    session(path, opt)
    ops = Counter(n.op_type for n in onnx.load(str(opt)).graph.node)
    return {k: ops[k] for k in KERNELS if ops.get(k)}


def latency(paths: dict, feeds: dict, cfg) -> dict:
    """Median of per-round medians (ms) per artifact, 1 thread, interleaved rounds."""
    sessions = {k: session(p) for k, p in paths.items()}
    for s in sessions.values():
        for _ in range(cfg.warmup):
            s.run(None, feeds)
    slowest = max(statistics.median(_times(s, feeds, 5)) for s in sessions.values())
    runs = common.runs_per_round(slowest, cfg.runs, cfg.round_s)
    res = common.interleaved(list(paths), lambda k: _times(sessions[k], feeds, runs),
                             cfg.rounds)
    res["runs_per_round"] = runs
    return res


def _times(s, feeds: dict, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        s.run(None, feeds)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def bench_model(name: str, variants: list[str], cfg, work: Path) -> dict:
    from edgeq.data import load_dataset, select
    from edgeq.models import load_model
    from edgeq.stages import evaluate

    calib_src, eval_src = MODELS[name]
    model = load_model(name)
    calib = select(load_dataset(calib_src), cfg.calib)
    ev = load_dataset(eval_src)
    ev = ev.subset(range(min(cfg.eval, len(ev))))
    names = [v for v in variants if VARIANTS[v][2] is None or name in VARIANTS[v][2]]
    paths, rows = {}, {}
    for v in names:
        log(f"{name}: export {v}")
        paths[v], export_s = common.timed(build, model, v, calib, work / name, cfg.calib)
        log(f"{name}: evaluate {v} on {len(ev)} samples")
        fid = evaluate(paths[v], ev, model)["fidelity"]
        rows[v] = {"export_s": export_s, "size_bytes": paths[v].stat().st_size,
                   "cosine": round(fid["cosine"], 5), "sqnr_db": round(fid["sqnr"], 2),
                   "agreement_pct": None if fid["agreement"] is None else
                   round(fid["agreement"], 2), "ort_kernels": kernels(paths[v], work)}
        from edgeq.artifacts import read_manifest

        q = ((read_manifest(paths[v]) or {}).get("delegation") or {}).get("quantization") or {}
        if q:
            rows[v]["activation_dtype"] = q.get("activation_dtype")
            rows[v]["qdq_layout"] = (q.get("ort_layout") or {}).get("qdq_layout")
    log(f"{name}: latency, 1 thread, {cfg.rounds} interleaved rounds")
    feeds = dict(zip([i.name for i in session(paths["fp32"]).get_inputs()], ev.sample(0)))
    lat = latency(paths, feeds, cfg)
    for v in names:
        rows[v]["latency_ms"] = lat[v]["median_ms"]
        rows[v]["round_medians_ms"] = [round(x, 3) for x in lat[v]["round_medians_ms"]]
        rows[v]["speedup_vs_fp32"] = round(lat["fp32"]["median_ms"] / lat[v]["median_ms"], 3)
    return {"calib_samples": cfg.calib, "eval_samples": len(ev), "data": [calib_src, eval_src],
            "runs_per_round": lat["runs_per_round"], "variants": rows}


def goals(models: dict) -> list:
    rows = []
    for name, r in models.items():
        v = r["variants"]
        if "int8" not in v:
            continue
        sp = v["int8"]["speedup_vs_fp32"]
        rows.append((name, f"int8 speed-up over fp32 (1 thread) {sp:.2f}x",
                     f">= {GOAL_SPEEDUP}x", sp >= GOAL_SPEEDUP))
        if name == "minilm-l6":
            c = v["int8"]["cosine"]
            rows.append((name, f"int8 mean cosine {c:.4f}", f">= {GOAL_COSINE}",
                         c >= GOAL_COSINE))
        elif "int8-before" in v:
            b, a = v["int8-before"], v["int8"]
            rows.append((name, f"int8 SQNR {a['sqnr_db']:.2f} dB vs before {b['sqnr_db']:.2f}",
                         ">= before - 0.05", a["sqnr_db"] >= b["sqnr_db"] - 0.05))
            rows.append((name, f"int8 top-1 agreement {a['agreement_pct']:.1f}% vs before "
                         f"{b['agreement_pct']:.1f}%", ">= before",
                         a["agreement_pct"] >= b["agreement_pct"]))
    return rows


def print_tables(results: dict, rows: list) -> None:
    for name, r in results["models"].items():
        print(f"\n{name} ({r['calib_samples']} calib / {r['eval_samples']} eval, onnx-cpu, "
              "1 thread)")
        print(f"{'variant':16}{'ms':>9}{'x fp32':>8}{'cosine':>9}{'SQNR dB':>9}{'agree %':>9}"
              f"{'MB':>7}  kernels ORT runs")
        for v, x in r["variants"].items():
            agree = "-" if x["agreement_pct"] is None else f"{x['agreement_pct']:.1f}"
            ks = ", ".join(f"{k} {n}" for k, n in x["ort_kernels"].items())
            print(f"{v:16}{x['latency_ms']:9.2f}{x['speedup_vs_fp32']:8.2f}{x['cosine']:9.4f}"
                  f"{x['sqnr_db']:9.2f}{agree:>9}{x['size_bytes'] / 1e6:7.1f}  {ks}")
    common.print_goals(rows, 50)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 calibration / 64 eval samples")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", type=Path, help="keep the artifacts here (default: a temp dir)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other models' results of an earlier results file")
    args = ap.parse_args()
    cfg = argparse.Namespace(calib=64 if args.quick else 256, eval=64 if args.quick else 256,
                             rounds=7 if args.quick else 15, runs=10, warmup=3,
                             round_s=0.3 if args.quick else 0.5)
    variants = [v for v in args.variants.split(",") if v]
    for v in ("fp32",):
        if v not in variants:
            variants.insert(0, v)
    started = time.time()
    import onnxruntime

    from edgeq.runtimes.onnx.cpu_int8 import host_cpu

    results = {"mode": "quick" if args.quick else "full", "settings": vars(cfg),
               "target": TARGET, "host": {**common.host(), "cpu": host_cpu()},
               "versions": {"onnxruntime": onnxruntime.__version__},
               "cnn_before_full_run": CNN_BEFORE, "models": {}}
    previous = common.RESULTS / f"onnx_int8_speed{'.quick' if args.quick else ''}.json"
    if args.merge and previous.is_file():  # models measured earlier, not re-measured now
        import json

        old = json.loads(previous.read_text())
        results["models"] = {k: {**v, "measured_in_earlier_run": old["host"]}
                             for k, v in old.get("models", {}).items()}
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-ort-int8-") as td:
        work = args.work or Path(td)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            results["models"][name] = bench_model(name, variants, cfg, work)
    return common.finish(results, goals(results["models"]), "onnx_int8_speed", args.quick,
                         started, print_tables)


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
