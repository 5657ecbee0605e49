"""Timing an ``.onnx`` / ``.ort`` on a device with ONNX Runtime's own
``onnxruntime_perf_test``: its command line and its summary (ms average, s percentiles,
peak working set). Used by ``edgeq.profiling.runners`` through ``RUNTIME.runner_argv`` /
``parse_runner_output``."""
from __future__ import annotations

import re

from edgeq.errors import RuntimeFailure

RUNNER_KEY = "onnx"  # the runner config's key for this runtime's artifacts
RUNNER_KIND = "onnxruntime_perf_test"


def runner_argv(runner: str, model: str, runs: int, warmup: int, threads: int,
                delegate: str | None) -> list[str]:
    ep = {"nnapi": "nnapi", "xnnpack": "xnnpack"}.get(delegate or "", "cpu")
    return [runner, "-m", "times", "-r", str(runs), "-x", str(threads), "-e", ep, "-I", model]


def parse_runner_output(text: str):
    """``Parsed`` aggregates from onnxruntime_perf_test's summary."""
    from edgeq.profiling.runners import Parsed

    avg = re.search(r"Average inference time cost[^:]*:\s*([\d.e+]+)\s*ms", text)
    if not avg:
        raise RuntimeFailure("onnxruntime_perf_test printed no average inference time")
    pct = {int(p): float(v) * 1e3 for p, v in
           re.findall(r"P(\d+) Latency(?: is)?:?\s*([\d.e+-]+)\s*s", text)}
    mn = re.search(r"Min Latency(?: is)?:?\s*([\d.e+-]+)\s*s", text)
    n = re.search(r"Total inference requests:\s*(\d+)", text)
    peak = re.search(r"Peak working set size:\s*(\d+)\s*bytes", text)
    agg = {"mean": float(avg.group(1)), "std": None,
           "min": float(mn.group(1)) * 1e3 if mn else None,
           "runs": int(n.group(1)) if n else None,
           "p50": pct.get(50), "p90": pct.get(90), "p99": pct.get(99)}
    return Parsed(None, agg, int(peak.group(1)) if peak else None,
                  None if peak else "onnxruntime_perf_test reported no peak working set",
                  True, ["onnxruntime_perf_test feeds random inputs (-I) and does one "
                         "warm-up run of its own"])
