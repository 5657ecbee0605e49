#!/usr/bin/env python3
"""edgeq device-side benchmark: time one model file with the board's own pip runtime.

Standalone (no edgeq import): edgeq copies it to a Linux board over scp and runs it with
the board's python. Needs numpy plus the runtime of the file:
  .pte         executorch (executorch.runtime; torch comes with it)
  .onnx/.ort   onnxruntime
  .tflite      ai-edge-litert (or the older tflite-runtime)

usage: edgeq_bench.py --model FILE --inputs INPUTS.npz [--runs N] [--warmup N]
                      [--threads N] [--sustained SECONDS] [--window SECONDS] [--out FILE]

stdout, one JSON object per line:
  {"chunk": k, "t_s": ..., "times_ns": [...]}   runs finished so far, about once per
      --window seconds; in --sustained mode one window of back-to-back runs, summarized:
      {"chunk": k, "t_s": ..., "runs": n, "mean_ns": ..., "p50_ns": ...}
  {"times_ns": [...], "vmhwm_kb": N, "runner": "python", "runtime": ..., "threads": N,
   "threads_applied": bool}                     last line, also written to --out (in
      --sustained mode "runs": total instead of "times_ns")
Times are per inference in ns; vmhwm_kb is this process's peak RSS from /proc.
exit status: 0 ok, 2 bad arguments or inputs, 3 the runtime failed (last stderr line says
what)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def vmhwm_kb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_pte(path, inputs, threads):
    import torch
    from executorch.runtime import Runtime

    applied = False
    try:  # the pybindings' thread pool, when this build exposes it
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        _unsafe_reset_threadpool(threads)
        applied = True
    except Exception:  # noqa: BLE001 - older builds: default pool size
        pass
    method = Runtime.get().load_program(path).load_method("forward")
    tensors = [torch.from_numpy(x) for x in inputs]
    return (lambda: method.execute(tensors)), "executorch", applied


def load_onnx(path, inputs, threads):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"the model takes {len(names)} inputs, got {len(inputs)}")
    feed = dict(zip(names, inputs))
    return (lambda: sess.run(None, feed)), "onnxruntime", True


def load_tflite(path, inputs, threads):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    details = interp.get_input_details()
    if len(details) != len(inputs):
        raise ValueError(f"the model takes {len(details)} inputs, got {len(inputs)}")

    def run():
        for d, x in zip(details, inputs):
            interp.set_tensor(d["index"], x.astype(d["dtype"], copy=False))
        interp.invoke()
    return run, "litert", True


LOADERS = {".pte": load_pte, ".onnx": load_onnx, ".ort": load_onnx, ".tflite": load_tflite}


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--inputs", required=True, help=".npz with arr_0, arr_1, ... in order")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sustained", type=float, default=None, help="seconds of back-to-back runs")
    ap.add_argument("--window", type=float, default=1.0, help="seconds per chunk / window")
    ap.add_argument("--out", default=None, help="also write the final JSON here")
    a = ap.parse_args(argv)
    ext = os.path.splitext(a.model)[1].lower()
    if ext not in LOADERS:
        print(f"edgeq_bench: unknown model kind '{ext}'", file=sys.stderr)
        return 2
    if a.runs < 1 or a.warmup < 0 or a.threads < 1 or a.window <= 0:
        print("edgeq_bench: need --runs >= 1, --warmup >= 0, --threads >= 1", file=sys.stderr)
        return 2
    try:
        import numpy as np
        with np.load(a.inputs) as z:
            inputs = [np.ascontiguousarray(z[k]) for k in
                      sorted(z.files, key=lambda s: int(s.split("_")[-1]))]
    except (OSError, ValueError) as e:
        print(f"edgeq_bench: cannot read inputs {a.inputs}: {e}", file=sys.stderr)
        return 2
    try:
        run, runtime, applied = LOADERS[ext](a.model, inputs, a.threads)
        for _ in range(a.warmup):
            run()
        times, chunk, k, total = [], [], 0, 0
        start = mark = time.perf_counter()
        while True:
            t0 = time.perf_counter_ns()
            run()
            chunk.append(time.perf_counter_ns() - t0)
            now = time.perf_counter()
            done = (now - start >= a.sustained) if a.sustained else len(times) + len(chunk) >= a.runs
            if now - mark >= a.window or done:
                if a.sustained:  # long runs: per-window summaries, not every sample
                    srt = sorted(chunk)
                    emit({"chunk": k, "t_s": round(now - start, 4), "runs": len(chunk),
                          "mean_ns": sum(chunk) / len(chunk), "p50_ns": srt[len(srt) // 2]})
                    total += len(chunk)
                else:
                    emit({"chunk": k, "t_s": round(now - start, 4), "times_ns": chunk})
                    times += chunk
                chunk, k, mark = [], k + 1, now
            if done:
                break
    except Exception as e:  # noqa: BLE001 - one line for the host to show
        msg = str(e).strip().splitlines()
        print(f"edgeq_bench: {type(e).__name__}: {msg[0][:300] if msg else ''}", file=sys.stderr)
        return 3
    final = {"vmhwm_kb": vmhwm_kb(), "runner": "python", "runtime": runtime,
             "threads": a.threads, "threads_applied": applied}
    if a.sustained:
        final["runs"] = total
    else:
        final["times_ns"] = times
    if a.out:
        with open(a.out, "w") as f:
            json.dump(final, f)
    emit(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
