"""Timing a ``.tflite`` on a device with LiteRT's own ``benchmark_model``: its command line
and its log (µs aggregates, peak memory sampled every 50 ms). Used by
``edgeq.profiling.runners`` through ``RUNTIME.runner_argv`` / ``parse_runner_output``."""
from __future__ import annotations

import re

from edgeq.errors import RuntimeFailure

RUNNER_KEY = "tflite"  # the runner config's key for this runtime's artifacts
RUNNER_KIND = "benchmark_model"


def runner_argv(runner: str, model: str, runs: int, warmup: int, threads: int,
                delegate: str | None) -> list[str]:
    flag = {"xnnpack": ["--use_xnnpack=true"], "nnapi": ["--use_nnapi=true"],
            "gpu": ["--use_gpu=true"]}.get(delegate or "", [])
    return [runner, f"--graph={model}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
            "--min_secs=0", "--warmup_min_secs=0", "--max_secs=100000",
            f"--num_threads={threads}", "--report_peak_memory_footprint=true", *flag]


def _kv(line: str) -> dict:
    return {k: float(v) for k, v in re.findall(r"(\w+)=(-?[\d.]+(?:e[-+]?\d+)?)", line)}


def parse_runner_output(text: str):
    """``Parsed`` aggregates from benchmark_model's log (it logs to stderr)."""
    from edgeq.profiling.runners import Parsed

    stats = [ln for ln in text.splitlines() if "count=" in ln]
    summary = re.search(r"Inference \(avg\): ([\d.e+]+)", text)
    if not stats and not summary:
        raise RuntimeFailure("benchmark_model printed no timings")
    kv = _kv(stats[-1]) if stats else {}
    same = bool(stats) and "(all same)" in stats[-1]
    mean = kv.get("avg") or (kv.get("curr") if same else None) or float(summary.group(1))
    agg = {"mean": mean / 1e3, "std": kv.get("std", 0.0 if same else None),
           "min": kv.get("min", mean) / 1e3, "runs": int(kv.get("count", 0)) or None,
           "p50": kv["median"] / 1e3 if "median" in kv else None}
    if agg["std"] is not None:
        agg["std"] /= 1e3
    peak = re.search(r"peak memory footprint \(MB\)[^:]*:\s*([\d.]+)", text, re.I)
    return Parsed(None, agg, int(float(peak.group(1)) * 2**20) if peak else None,
                  None if peak else "benchmark_model reported no peak memory",
                  True, ["benchmark_model feeds random inputs; peak memory is its own "
                         "sampling every 50 ms, not VmHWM"] if peak else
                  ["benchmark_model feeds random inputs"])
