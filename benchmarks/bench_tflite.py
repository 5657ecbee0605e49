#!/usr/bin/env python
"""edgeq's LiteRT int8 flow against the vendor's own flow written by hand.

The vendor flow is litert-torch's documented PT2E recipe: PT2EQuantizer with the
per-channel symmetric config -> torch.export -> prepare_pt2e -> calibrate ->
convert_pt2e(fold_quantize=False) -> litert_torch.convert(..., quant_config=
QuantConfig(pt2e_quantizer=...)). It calibrates on the same samples in the same order and
in the same batches of 32 on a dynamic-batch export as edgeq's PT2E driver
(edgeq/quantize/pt2e.py), since histogram observers depend on batching. Every .tflite is
then measured with the same tools: file size, latency of ``Interpreter.invoke`` in the
ai-edge-litert interpreter (XNNPACK, rounds interleaved so drift hits all alike), and
outputs through the same interpreter, fed float inputs quantized with each model's own
input scale and zero point.

    python benchmarks/bench_tflite.py            # full: ~3 min on 2 cores
    python benchmarks/bench_tflite.py --quick    # smoke check: ~1 min

Prints a table with PASS/FAIL per goal and writes benchmarks/results/tflite.json
(tflite.quick.json with --quick). Exit status 1 when a goal fails.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

import common
from common import log

TARGET = "tflite-xnnpack"
ARTIFACTS = ("edgeq_int8", "vendor_int8", "edgeq_fp32")


@contextlib.contextmanager
def quiet():
    """The converter's progress tree (stdout), absl logs (fd 2) and pytree warnings."""
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# -- the vendor flow ------------------------------------------------------------------------
def vendor_flow(module, example: tuple, calib_x: np.ndarray, out_path: Path) -> Path:
    """litert-torch's PT2E int8 recipe by hand, with edgeq's settings: per-channel
    symmetric weights, the config's own (histogram) activation observer, calibration on a
    dynamic-batch export in batches of 32 (common.pt2e_calibrated)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    with quiet():
        import litert_torch
        from litert_torch.quantize.pt2e_quantizer import (PT2EQuantizer,
                                                          get_symmetric_quantization_config)
        from litert_torch.quantize.quant_config import QuantConfig

    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    converted = convert_pt2e(common.pt2e_calibrated(module, example, quantizer, calib_x),
                             fold_quantize=False)
    with quiet():
        edge = litert_torch.convert(converted, example,
                                    quant_config=QuantConfig(pt2e_quantizer=quantizer))
    out_path.write_bytes(edge.model_content())
    return out_path


# -- measurements ---------------------------------------------------------------------------
class Model:
    """A .tflite in the ai-edge-litert interpreter (XNNPACK, the default), fed float
    inputs quantized with its own input scale / zero point, outputs dequantized."""

    def __init__(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        with quiet():
            self.it = Interpreter(model_path=str(path), num_threads=threads)
            self.it.allocate_tensors()
        self.i, self.o = self.it.get_input_details()[0], self.it.get_output_details()[0]

    def set(self, x: np.ndarray) -> None:
        scale, zp = self.i["quantization"]
        if np.issubdtype(self.i["dtype"], np.integer):
            x = np.clip(np.round(x / scale) + zp, -128, 127)
        self.it.set_tensor(self.i["index"], x.astype(self.i["dtype"]))

    def get(self) -> np.ndarray:
        y = self.it.get_tensor(self.o["index"])
        scale, zp = self.o["quantization"]
        return (y.astype(np.float32) - zp) * scale if scale else y

    def outputs(self, xs: np.ndarray) -> np.ndarray:
        outs = []
        for i in range(len(xs)):
            self.set(xs[i:i + 1])
            self.it.invoke()
            outs.append(self.get())
        return np.concatenate(outs)

    def time_ms(self, runs: int) -> list[float]:
        """Wall time of ``invoke`` alone, per call (ms)."""
        times = []
        for _ in range(runs):
            t = time.perf_counter_ns()
            self.it.invoke()
            times.append((time.perf_counter_ns() - t) / 1e6)
        return times


def latency(paths: dict, x: np.ndarray, threads: int, cfg) -> dict:
    """Interleaved rounds (common.interleaved) of ``Interpreter.invoke``."""
    models = {k: Model(p, threads) for k, p in paths.items()}
    for m in models.values():
        m.set(x)
        m.time_ms(cfg.warmup)
    probe = max(statistics.median(m.time_ms(20)) for m in models.values())
    runs = common.runs_per_round(probe, 10, cfg.round_s)
    per = common.interleaved(list(models), lambda name: models[name].time_ms(runs), cfg.rounds)
    return per | {"runs_per_round": runs}


def bench_model(name: str, model, calib_ds, eval_x, eval_y, work: Path, cfg) -> dict:
    from edgeq.runtimes.tflite.coverage import read_ops

    paths, res = common.export_trio(name, model, calib_ds, TARGET, vendor_flow,
                                    work / f"{name}.vendor.int8.tflite", work, len(eval_x))
    res["ops"] = {k: dict(sorted(Counter(o.name for o in read_ops(p.read_bytes())).items()))
                  for k, p in paths.items()}

    log(f"{name}: outputs on {len(eval_x)} eval samples in the LiteRT interpreter")
    outs = {k: Model(p, 2).outputs(eval_x) for k, p in paths.items()}
    ref = common.reference(model.module, eval_x, 64)
    same = paths["edgeq_int8"].read_bytes() == paths["vendor_int8"].read_bytes()
    res["edgeq_vs_vendor"] = common.edgeq_vs_vendor(outs["edgeq_int8"], outs["vendor_int8"]) \
        | {"bit_identical_tflite": same}
    res |= common.fidelity(outs, ref, eval_y)

    res["latency"] = common.latency_by_threads(
        name, cfg, lambda threads: latency(paths, eval_x[:1], threads, cfg))
    return res


# -- goals and report -----------------------------------------------------------------------
def goals(name: str, r: dict) -> list[tuple[str, str, str, bool]]:
    s, lat, vs = r["size_bytes"], r["latency"], r["vs_pytorch_fp32"]
    same = r["edgeq_vs_vendor"]["bit_identical_tflite"]
    e, v = vs["edgeq_int8"], vs["vendor_int8"]
    rows = [common.size_ratio_row(s, "edgeq_int8", "vendor_int8",
                                  " (bit-identical files)" if same else ""),
            *common.latency_ratio_rows(lat, "edgeq_int8", "vendor_int8", same),
            (f"fidelity vs PyTorch: SQNR {e['sqnr_db']:.2f} vs {v['sqnr_db']:.2f} dB, "
             f"agree {e['top1_agreement_pct']:.1f} vs {v['top1_agreement_pct']:.1f}%",
             "edgeq >= vendor", e["sqnr_db"] >= v["sqnr_db"] - 0.01 and
             e["top1_agreement_pct"] >= v["top1_agreement_pct"]),
            common.int8_size_row(s, 0.35),
            *common.speedup_rows(lat),
            *common.top1_drop_rows(r)]
    return [(name, text, goal, ok) for text, goal, ok in rows]


def print_tables(results: dict, rows: list) -> None:
    for name, r in results["models"].items():
        print(f"\n== {name} ==  (calibration {r['calib_samples']}, eval {r['eval_samples']} "
              "samples)")
        common.table_line("", [k.replace("_", " ") for k in ARTIFACTS])
        common.table_line("size (bytes)", [r["size_bytes"][k] for k in ARTIFACTS], ",")
        for th, l in r["latency"].items():
            common.table_line("latency ms " + th, [l[k]["median_ms"] for k in ARTIFACTS], ".4f")
        common.fidelity_lines(r, ARTIFACTS)
        ops = r["ops"]
        common.table_line("ops", [sum(ops[k].values()) for k in ARTIFACTS])
        for k in ("edgeq_int8", "vendor_int8"):
            print(f"  {k} ops: " + ", ".join(f"{n} {c}" for n, c in ops[k].items()))
    common.print_goals(rows, 72)


def main() -> int:
    args = common.parse_args(__doc__, ".tflite files")
    cfg = argparse.Namespace(rounds=3, warmup=5, round_s=0.05, mnv2_calib=32, mnv2_eval=16) \
        if args.quick else \
        argparse.Namespace(rounds=9, warmup=10, round_s=0.3, mnv2_calib=256, mnv2_eval=128)

    warnings.filterwarnings("ignore", category=FutureWarning)
    from edgeq.runtimes.tflite import RUNTIME

    started = time.time()
    results = common.run_models(args, cfg, "edgeq-bench-", RUNTIME.versions(), bench_model)

    rows = [g for name, r in results["models"].items() for g in goals(name, r)]
    return common.finish(results, rows, "tflite", args.quick, started, print_tables)


if __name__ == "__main__":
    sys.exit(main())
