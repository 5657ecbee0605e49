"""Profiling overhead: does edgeq's local profile (the native runner, in its own process)
report the same latency as a plain timing loop written directly against the runtime?

For each model, an int8 .pte is exported with edgeq; then, interleaved over several
rounds in the same run: (A) `edgeq.stages.profile_local` (what `edgeq profile --device
local` reports: the native runner built from the executorch wheel), and (B) a plain loop
of `method.execute` on `executorch.runtime` in this process, timed with perf_counter_ns.
Goal: median(A) / median(B) within 1 +- 0.05 on a network where per-call Python overhead
(a few microseconds in B) is negligible. Writes benchmarks/results/profiler_overhead.json.

    python benchmarks/bench_profiler_overhead.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def plain_loop(pte: Path, x: np.ndarray, runs: int, warmup: int) -> float:
    """Median ms of ``runs`` calls to the runtime's own Python API."""
    import torch
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
    from executorch.runtime import Runtime

    # The same single thread as the runner is given; set before the method loads, when
    # the XNNPACK delegate takes its threadpool.
    _unsafe_reset_threadpool(1)
    method = Runtime.get().load_program(str(pte)).load_method("forward")
    inp = [torch.from_numpy(x)]
    for _ in range(warmup):
        method.execute(inp)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        method.execute(inp)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds and runs")
    args = ap.parse_args()
    from edgeq.data import load_dataset, select
    from edgeq.models import load_model
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export, profile_local
    from edgeq.targets import get_target

    rounds, runs = (3, 30) if args.quick else (7, 100)
    target, recipe = get_target("executorch-xnnpack"), load_recipe("int8")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("digits-cnn", "mobilenetv2"):
            model = load_model(name)
            if name == "digits-cnn":
                calib = select(load_dataset("digits:train"), 256)
            else:  # the data does not matter for timing: a few random images calibrate
                from edgeq.data import Dataset

                rng = np.random.default_rng(0)
                calib = Dataset({"x": rng.standard_normal((16, 3, 224, 224), np.float32)})
            m = export(model, target, recipe, calib, None, ExportOptions(Path(tmp) / name))
            pte = Path(m["artifact"]["path"])
            x = np.asarray(calib.inputs["x"][:1])
            a, b = [], []
            for _ in range(rounds):  # interleave so drift hits both sides alike
                a.append(profile_local(pte, [x], runs, 10, 1)["latency_ms"]["p50"])
                b.append(plain_loop(pte, x, runs, 10))
            ratio = statistics.median(a) / statistics.median(b)
            # The plain loop pays a few microseconds of Python per call: on a model that
            # itself runs in microseconds that, not the runner, sets the ratio.
            goal = statistics.median(b) > 0.5
            results[name] = {"edgeq_profile_p50_ms": a, "plain_loop_p50_ms": b,
                             "ratio": round(ratio, 4),
                             "passed": abs(ratio - 1) <= 0.05 if goal else None}
            verdict = ("PASS" if results[name]["passed"] else "FAIL") if goal else \
                "info only: the loop's Python call overhead is the size of the model"
            print(f"{name:12s} edgeq profile {statistics.median(a):.4f} ms   plain loop "
                  f"{statistics.median(b):.4f} ms   ratio {ratio:.3f}   {verdict}"
                  + (" (goal 1 +- 0.05)" if goal else ""))
    out = Path(__file__).parent / "results" / (
        "profiler_overhead.quick.json" if args.quick else "profiler_overhead.json")
    out.write_text(json.dumps({"mode": "quick" if args.quick else "full", "rounds": rounds,
                               "runs": runs, "loadavg": os.getloadavg(),
                               "models": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
