#!/usr/bin/env python
"""edgeq's ExecuTorch/XNNPACK int8 flow against the vendor's own flow written by hand.

Both flows run in this process, on the same model, with the same quantizer settings and
the same calibration samples in the same order and batching. Each resulting .pte is then
measured with the same tools: file size, latency in edgeq's native C++ runner (rounds
interleaved so drift hits both alike), and outputs through ``executorch.runtime``.

    python benchmarks/bench_executorch.py            # full: ~5-10 min on 2 cores
    python benchmarks/bench_executorch.py --quick    # smoke check: < 2 min

Prints a table with PASS/FAIL per goal and writes benchmarks/results/executorch.json
(executorch.quick.json with --quick). Exit status 1 when a goal fails.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import common
from common import log

TARGET = "executorch-xnnpack"
COLS = ("edgeq_int8", "vendor_int8", "edgeq_fp32")


# -- the vendor flow ------------------------------------------------------------------------
def vendor_flow(module, example: tuple, calib_x: np.ndarray, out_path: Path) -> Path:
    """The ExecuTorch docs' XNNPACK int8 recipe, by hand, with edgeq's settings: per-channel
    symmetric weights, the quantizer's default (histogram) activation observer, and
    calibration on a dynamic-batch export in batches of 32 (common.pt2e_calibrated)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    converted = convert_pt2e(common.pt2e_calibrated(module, example, quantizer, calib_x))
    ep = torch.export.export(converted, example)
    program = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    out_path.write_bytes(program.buffer)
    return out_path


# -- measurements ---------------------------------------------------------------------------
def run_pte(path: Path, xs: np.ndarray) -> np.ndarray:
    """First output for every sample (the programs have a static batch of 1), through
    ``executorch.runtime`` directly: the same runtime for every artifact."""
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return np.concatenate([method.execute([torch.from_numpy(xs[i:i + 1].copy())])[0].numpy()
                           for i in range(len(xs))])


def latency(runner: Path, ptes: dict, x: np.ndarray, threads: int, cfg) -> dict:
    """Interleaved rounds (common.interleaved) in edgeq's native C++ runner."""
    from edgeq.runtimes.executorch import native

    probe = max(statistics.median(native.run(runner, p, [x], 20, 5, threads).times_ms)
                for p in ptes.values())
    runs = common.runs_per_round(probe, cfg.runs, cfg.round_s)
    applied = [True]

    def time_ms(name):
        res = native.run(runner, ptes[name], [x], runs, cfg.warmup, threads)
        applied[0] &= res.threads_applied
        return res.times_ms

    per = common.interleaved(list(ptes), time_ms, cfg.rounds)
    return per | {"threads_applied": applied[0], "runs_per_round": runs}


def bench_model(name: str, model, calib_ds, eval_x, eval_y, work: Path, cfg) -> dict:
    from edgeq.runtimes.executorch import native

    ptes, res = common.export_trio(name, model, calib_ds, TARGET, vendor_flow,
                                   work / f"{name}.vendor.int8.pte", work, len(eval_x))

    log(f"{name}: outputs on {len(eval_x)} eval samples through executorch.runtime")
    outs = {k: run_pte(p, eval_x) for k, p in ptes.items()}
    ref = common.reference(model.module, eval_x, 64)
    same = ptes["edgeq_int8"].read_bytes() == ptes["vendor_int8"].read_bytes()
    res["edgeq_vs_vendor"] = common.edgeq_vs_vendor(outs["edgeq_int8"], outs["vendor_int8"]) \
        | {"bit_identical_pte": same}
    res |= common.fidelity(outs, ref, eval_y)

    runner = native.build_runner()
    res["latency"] = common.latency_by_threads(
        name, cfg, lambda threads: latency(runner, ptes, eval_x[:1], threads, cfg))
    return res


def cli_checks(n: int) -> dict:
    """``edgeq --help`` wall time (median of ``n``) and whether importing the CLI pulls torch."""
    exe = Path(sys.executable).with_name("edgeq")
    cmd = [str(exe), "--help"] if exe.is_file() else [sys.executable, "-m", "edgeq", "--help"]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append((time.perf_counter() - t) * 1000)
    probe = subprocess.run([sys.executable, "-c",
                            "import edgeq.cli, sys; assert 'torch' not in sys.modules"],
                           capture_output=True, text=True)
    bare = []
    for _ in range(n):  # the interpreter's own start-up, to put the figure in context
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append((time.perf_counter() - t) * 1000)
    return {"help_ms_median": statistics.median(times), "python_startup_ms_median":
            statistics.median(bare), "runs": n, "cli_imports_torch": probe.returncode != 0}


# -- goals and report -----------------------------------------------------------------------
def goals(name: str, r: dict) -> list[tuple[str, str, str, bool]]:
    s, lat, ev = r["size_bytes"], r["latency"], r["edgeq_vs_vendor"]
    rows = [common.size_ratio_row(s, "edgeq_int8", "vendor_int8"),
            *common.latency_ratio_rows(lat, "edgeq_int8", "vendor_int8"),
            (f"outputs edgeq vs vendor: max|diff| {ev['max_abs_diff']:.3g}, top-1 agree "
             f"{ev['top1_agreement_pct']:.1f}%", "<= 1e-4, 100%",
             ev["max_abs_diff"] <= 1e-4 and ev["top1_agreement_pct"] == 100),
            common.int8_size_row(s, 0.30),
            *common.speedup_rows(lat),
            *common.top1_drop_rows(r)]
    return [(name, text, goal, ok) for text, goal, ok in rows]


def print_tables(results: dict, rows: list) -> None:
    for name, r in results["models"].items():
        print(f"\n== {name} ==  (calibration {r['calib_samples']}, eval {r['eval_samples']} samples;"
              f" edgeq and vendor .pte byte-identical: {r['edgeq_vs_vendor']['bit_identical_pte']})")
        common.table_line("", ("edgeq int8", "vendor int8", "edgeq fp32"), "", 22)
        common.table_line("size (bytes)", [r["size_bytes"][k] for k in COLS], ",", 22)
        for th, lat in r["latency"].items():
            common.table_line(f"latency ms {th}", [lat[k]["median_ms"] for k in COLS], ".4f", 22)
        common.fidelity_lines(r, COLS, 22)
    c = results["cli"]
    print(f"\nedgeq --help: {c['help_ms_median']:.0f} ms median of {c['runs']} "
          f"(bare python start-up {c['python_startup_ms_median']:.0f} ms)")
    common.print_goals(rows, 70)


def main() -> int:
    args = common.parse_args(__doc__, ".pte files")
    cfg = argparse.Namespace(rounds=3, runs=10, warmup=3, round_s=0.05, mnv2_calib=32,
                             mnv2_eval=8, help_runs=3) if args.quick else \
        argparse.Namespace(rounds=15, runs=40, warmup=5, round_s=0.3, mnv2_calib=256,
                           mnv2_eval=128, help_runs=10)

    # torch.export's pytree code warns (FutureWarning) on every copy of a graph module.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from edgeq.runtimes.executorch import RUNTIME

    started = time.time()
    results = common.run_models(args, cfg, "edgeq-bench-", RUNTIME.versions(), bench_model)

    log("CLI start-up")
    results["cli"] = cli_checks(cfg.help_runs)
    rows = [g for name, r in results["models"].items() for g in goals(name, r)]
    rows.append(("cli", "`import edgeq.cli` leaves torch unimported", "no torch",
                 not results["cli"]["cli_imports_torch"]))
    return common.finish(results, rows, "executorch", args.quick, started, print_tables)


if __name__ == "__main__":
    sys.exit(main())
