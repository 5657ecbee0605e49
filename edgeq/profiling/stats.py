"""Latency statistics over per-run samples (milliseconds)."""
from __future__ import annotations

import numpy as np

NOISY_CV = 0.15  # coefficient of variation above which a run is flagged as noisy


MAX_SAMPLES = 500


def latency_summary(times_ms: list[float]) -> dict:
    """p50/p90/p99/mean/std/min in ms, the coefficient of variation, the run count, and
    the per-run times themselves in run order (``samples``, every k-th run when there are
    more than MAX_SAMPLES, so a report stays small) for the HTML report's distributions."""
    a = np.asarray(times_ms, dtype=np.float64)
    if a.size == 0:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "std": None, "runs": 0}
    mean = float(a.mean())
    return {"p50": round(float(np.percentile(a, 50)), 4),
            "p90": round(float(np.percentile(a, 90)), 4),
            "p99": round(float(np.percentile(a, 99)), 4),
            "mean": round(mean, 4), "std": round(float(a.std()), 4),
            "min": round(float(a.min()), 4),
            "cv": round(float(a.std() / mean), 4) if mean > 0 else None,
            "runs": int(a.size),
            "samples": [round(float(x), 4) for x in a[::-(-a.size // MAX_SAMPLES)]]}
