"""Time an artifact with its runtime's Python session, in a separate process, so that
peak memory (VmHWM) is that of the inference process alone and the parent's imports do
not skew it. Runtime-neutral: it goes through ``edgeq.runtimes.get_runtime``.

``python -m edgeq.profiling.worker RUNTIME ARTIFACT INPUTS.npz RUNS WARMUP THREADS``
prints one JSON line: ``{"times_ns": [...], "vmhwm_kb": N}``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeq.errors import RuntimeFailure
from edgeq.runtimes.base import Bench


def read_vmhwm_kb(status_path: str = "/proc/self/status") -> int | None:
    """Peak resident set size in kB from a ``/proc/<pid>/status`` file, None if unreadable."""
    try:
        for line in Path(status_path).read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def benchmark_in_subprocess(runtime: str, artifact: Path, inputs: list[np.ndarray], runs: int,
                            warmup: int, threads: int, timeout_s: float | None = None,
                            threads_applied: bool = False) -> Bench:
    """Time the artifact with its runtime's Python session in a child process.
    ``threads_applied``: whether that session honours ``threads`` (runtime-specific)."""
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as tmp:
        npz = Path(tmp) / "inputs.npz"
        np.savez(npz, *inputs)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        cmd = [sys.executable, "-m", "edgeq.profiling.worker", runtime, str(artifact), str(npz),
               str(runs), str(warmup), str(threads)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise RuntimeFailure(f"benchmark of '{artifact}' timed out after {timeout_s} s") from e
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeFailure(f"benchmark process for '{artifact}' failed: {last}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    kb = r.get("vmhwm_kb")
    return Bench([t / 1e6 for t in r["times_ns"]], kb * 1024 if kb else None, "python",
                 threads_applied,
                 ["timed through the Python runtime: includes Python call overhead"])


def _main(argv: list[str]) -> int:
    from edgeq.runtimes import get_runtime

    runtime, artifact, npz, runs, warmup, threads = argv
    with np.load(npz) as z:
        inputs = [z[k] for k in sorted(z.files, key=lambda s: int(s.split("_")[1]))]
    session = get_runtime(runtime).open(Path(artifact), threads=int(threads))
    for _ in range(int(warmup)):
        session.run(inputs)
    times = []
    for _ in range(int(runs)):
        t0 = time.perf_counter_ns()
        session.run(inputs)
        times.append(time.perf_counter_ns() - t0)
    print(json.dumps({"times_ns": times, "vmhwm_kb": read_vmhwm_kb(), "threads": int(threads)}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
