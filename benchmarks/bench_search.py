#!/usr/bin/env python
"""The accuracy-budget search (``edgeq export --max-accuracy-drop``) on real models and
three targets, with a budget plain int8 misses.

For each model and target: export plain int8 and measure its drop on the artifact; set
the budget to half that drop (so plain int8 misses it by construction); run the search
(sensitivity ranking simulated once per quantizer, every trial exported and evaluated on
the real artifact). Records per trial the float / 16-bit layers, drop and size, the chosen
recipe, whether the budget was met, and wall times. Where the target supports 16-bit
activations (``Recipe.int16_layers``: ONNX Runtime) the search tries them after the float search;
the same budget is then searched again float-only (``float_only`` in the row), so the
two choices' sizes can be compared. ``int16`` in the row says what the search did.

Models: digits-cnn (pretrained; digits:eval without labels so the metric is top-1
agreement with fp32; int8 is lossless there, so its budget is 0 and plain int8 meets it
in one trial), ``outlier`` (three linear layers, one writing a few huge features: int8
breaks it deterministically and only two layers in float fix it; the synthetic case of
the tests), efficientnet-lite0 (ImageNet-pretrained, real photos photos:calib /
photos:eval; mobilenetv2 with random weights if it is not available) and, with
``--models minilm-l6``, the pretrained sentence encoder on real sentences (its declared
metric is mean cosine to fp32, so the budget is half of 1 - cosine).

    python benchmarks/bench_search.py            # full: digits + the ImageNet model
    python benchmarks/bench_search.py --quick    # digits and outlier only
    python benchmarks/bench_search.py --models big --targets onnx-cpu --out search_int16.json

Writes benchmarks/results/search.json (search.quick.json with --quick). Exit status 1
when a search that should succeed did not meet its budget.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import common
from common import log

TARGETS = ("executorch-xnnpack", "onnx-cpu", "tflite-xnnpack")


OUTLIER = """
import torch
from torch import nn


class Outlier(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc0, self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        with torch.no_grad():
            self.fc1.weight[24:] *= 0
            self.fc1.bias[24:] = 3000.0
            self.fc2.weight[:, 24:] = 0
            self.fc2.weight[:] *= 4

    def forward(self, x):
        return self.fc2(self.fc1(torch.relu(self.fc0(x))))


def build():
    return Outlier().eval(), (torch.randn(1, 16),)
"""


def prepare_data(model_name: str, work: Path, calib_n: int, eval_n: int) -> tuple[str, str]:
    """Calibration and eval .npz files for the model (eval without labels)."""
    from edgeq import data as data_mod

    work.mkdir(parents=True, exist_ok=True)
    if model_name.endswith("outlier.py:build"):
        rng = np.random.default_rng(0)
        for name, n in (("calib", calib_n), ("eval", eval_n)):
            np.savez(work / f"{name}.npz", x=rng.standard_normal((n, 16)).astype(np.float32))
        return str(work / "calib.npz"), str(work / "eval.npz")
    if model_name == "digits-cnn":
        calib, ev = data_mod.load_dataset("digits:train"), data_mod.load_dataset("digits:eval")
    elif model_name == "minilm-l6":
        calib, ev = (data_mod.load_dataset("sentences:calib"),
                     data_mod.load_dataset("sentences:eval"))
        calib, ev = data_mod.select(calib, calib_n), data_mod.select(ev, eval_n)
        cpath, epath = work / "calib.npz", work / "eval.npz"
        np.savez(cpath, **calib.inputs)  # input_ids, attention_mask: one array per input
        np.savez(epath, **ev.inputs)
        return str(cpath), str(epath)
    else:
        calib, ev = data_mod.load_dataset("photos:calib"), data_mod.load_dataset("photos:eval")
    calib, ev = data_mod.select(calib, calib_n), data_mod.select(ev, eval_n)
    cpath, epath = work / "calib.npz", work / "eval.npz"
    np.savez(cpath, x=calib.inputs[next(iter(calib.inputs))])
    np.savez(epath, x=ev.inputs[next(iter(ev.inputs))])
    return str(cpath), str(epath)


def _summary(report: dict, before: set) -> tuple[dict, dict]:
    """(the cell the latest search chose, its search block): a cell not searched before,
    else (both searches chose the same configuration) the last searched one."""
    searched = [c for c in report["results"] if c.get("search")]
    cell = ([c for c in searched if id(c) not in before] or searched)[-1]
    return cell, cell["search"]


def run_cell(model_name: str, target: str, calib: str, ev: str, work: Path, max_trials: int,
             sens_samples: int, rankings: dict) -> dict:
    from edgeq.flow import FlowOptions, evaluate_report, export_matrix
    from edgeq.progress import Progress
    from edgeq.quantize.search import SearchOptions, search_report

    out = work / target
    shutil.rmtree(out, ignore_errors=True)  # an earlier run's report.json holds its cells
    opts = FlowOptions(out, calib, force=True)
    t0 = time.perf_counter()
    model, report, failed = export_matrix(model_name, [target], ["int8"], opts, Progress())
    evaluate_report(report, ev, model, opts, out, Progress())
    plain = next(c for c in report["results"] if c["recipe"] == "int8")
    if plain.get("error") or not plain.get("accuracy"):
        return {"target": target, "error": plain.get("error") or plain.get("accuracy_reason")}
    t_plain = time.perf_counter() - t0
    drop = plain["accuracy"]["drop"]
    budget = round(drop / 2, 3) if drop > 0 else 0.0
    log(f"{model_name} {target}: plain int8 drop {drop:.3f} -> budget {budget}")
    t1 = time.perf_counter()
    missed = search_report(report, model, "int8", [target], opts, ev,
                           SearchOptions(budget, max_trials, sens_samples), Progress(),
                           rankings)
    t_search = time.perf_counter() - t1
    cell, s = _summary(report, set())
    float_only = None
    if s["int16"] == "tried after float":  # the same budget, float layers only
        before = {id(c) for c in report["results"] if c.get("search")}
        cell["search"] = None  # so the plain cell is searched again, not skipped
        plain.pop("search", None)
        t2 = time.perf_counter()
        missed_f = search_report(report, model, "int8", [target], opts, ev,
                                 SearchOptions(budget, max_trials, sens_samples, int16=False),
                                 Progress(), rankings)
        fcell, fs = _summary(report, before)
        cell["search"] = s
        float_only = {"met": fs["met"], "missed_reason": missed_f[0] if missed_f else None,
                      "chosen_recipe": fs["chosen_recipe"], "chosen_drop": fs["chosen_drop"],
                      "chosen_keep_float": fs["chosen_keep_float"],
                      "chosen_size_bytes": fcell["artifact"]["size_bytes"],
                      "trials": [{k: t[k] for k in ("float_layers", "drop", "size_bytes",
                                                    "passed")} for t in fs["trials"]],
                      "search_s": round(time.perf_counter() - t2, 1)}
    return {"target": target, "metric": s["metric"], "plain_drop": drop, "int16": s["int16"],
            "chosen_int16_layers": s["chosen_int16_layers"], "float_only": float_only,
            "plain_size_bytes": plain["artifact"]["size_bytes"], "budget": budget,
            "met": s["met"], "missed_reason": missed[0] if missed else None,
            "chosen_recipe": s["chosen_recipe"], "chosen_keep_float": s["chosen_keep_float"],
            "chosen_drop": s["chosen_drop"], "chosen_size_bytes": cell["artifact"]["size_bytes"],
            "trials": [{k: t[k] for k in ("float_layers", "int16_layers", "drop",
                                          "size_bytes", "passed")} for t in s["trials"]],
            "ranking_simulated_with": (s.get("ranking") or {}).get("simulated_with"),
            "ranking_samples": (s.get("ranking") or {}).get("samples"),
            "ranking_seconds": (s.get("ranking") or {}).get("seconds"),
            "plain_export_eval_s": round(t_plain, 1), "search_s": round(t_search, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits-cnn only")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edgeq-bench-search"))
    ap.add_argument("--max-trials", type=int, default=6)
    ap.add_argument("--targets", nargs="*", default=list(TARGETS))
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--out", help="result file name in benchmarks/results (default "
                    "search.json, search.quick.json with --quick)")
    args = ap.parse_args()
    from edgeq.cli import quiet_libraries

    quiet_libraries()
    from edgeq.models import load_model

    models = args.models or (["digits-cnn", "outlier"] if args.quick else
                             ["digits-cnn", "outlier", "big"])
    rows = []
    for name in models:
        if name == "outlier":
            (args.work / "outlier").mkdir(parents=True, exist_ok=True)
            (args.work / "outlier" / "outlier.py").write_text(OUTLIER)
            name = f"{args.work / 'outlier' / 'outlier.py'}:build"
        if name == "big":
            try:
                load_model("efficientnet-lite0", None, False)
                name = "efficientnet-lite0"
            except Exception as e:  # engineer A's built-in is not installed here
                log(f"efficientnet-lite0 unavailable ({e}); using mobilenetv2")
                name = "mobilenetv2"
        big = name in ("efficientnet-lite0", "mobilenetv2", "minilm-l6")
        label = "outlier" if name.endswith("outlier.py:build") else name
        work = args.work / Path(name.split(":")[0]).stem
        calib, ev = prepare_data(name, work, 128 if big else 256, 64 if big else 200)
        rankings: dict = {}
        for target in args.targets:
            log(f"{label} on {target}")
            t0 = time.perf_counter()
            try:
                row = run_cell(name, target, calib, ev, work, args.max_trials,
                               16 if big else 64, rankings)
            except Exception as e:  # record and go on: one target must not hide the others
                row = {"target": target, "error": f"{type(e).__name__}: {e}"[:300]}
            row.update(model=label, total_s=round(time.perf_counter() - t0, 1))
            rows.append(row)
            log(json.dumps(row)[:400])
    result = {"host": common.host(),
              "max_trials": args.max_trials,
              "budget_rule": "half the plain int8 drop measured on the artifact",
              "eval": "digits:eval (200, labels dropped) / photos:eval (64 crops); metric: "
                      "top-1 agreement with fp32, in points",
              "results": rows}
    out = common.RESULTS / (args.out or ("search.quick.json" if args.quick else
                                         "search.json"))
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {out}")
    bad = [r for r in rows if r.get("error") or (r.get("met") is False and r["budget"] > 0
                                                  and r["plain_drop"] > 0)]
    for r in rows:
        print(f"{r['model']:20s} {r['target']:20s} "
              + (f"ERROR {r['error']}" if r.get("error") else
                 f"plain {r['plain_drop']:.2f} budget {r['budget']:.2f} -> "
                 f"{r['chosen_recipe']} drop {r['chosen_drop']:.2f} "
                 f"{'met' if r['met'] else 'MISSED'} in {len(r['trials'])} trials, "
                 f"{r['chosen_size_bytes']} B, {r['total_s']:.0f} s; int16: {r['int16']}"
                 + (f"; float-only: {r['float_only']['chosen_recipe']} drop "
                    f"{r['float_only']['chosen_drop']:.2f}, "
                    f"{r['float_only']['chosen_size_bytes']} B" if r.get("float_only")
                    else "")))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
