#!/usr/bin/env python
"""edgeq's ONNX Runtime int8 flow against the vendor's own flow written by hand.

The vendor flow is ONNX Runtime's documented static-quantization recipe with edgeq's
settings: ``torch.onnx.export`` (dynamo) -> ``quant_pre_process`` -> ``quantize_static``
(QDQ, per-channel int8 symmetric weights, int8 activations, MinMax) with a
``CalibrationDataReader`` over the same samples in the same order, one sample a call.
edgeq runs ``edgeq export -t onnx-cpu --recipe int8 --observer minmax`` (like for like)
and its default ``--recipe int8`` (histogram observer) for reference, plus fp32.

Every artifact is then measured with the same tools: file size; latency with ONNX
Runtime's CPU provider in edgeq's benchmark subprocess (rounds interleaved, order rotated,
so drift hits all alike; median of round medians); outputs through onnxruntime against
PyTorch fp32 (top-1 agreement, SQNR) and, for digits, top-1 on the labels.

    python benchmarks/bench_onnx.py            # full: ~10 min on 2 cores
    python benchmarks/bench_onnx.py --quick    # smoke check: ~2 min

Prints a table with PASS/FAIL per goal and writes benchmarks/results/onnx.json
(onnx.quick.json with --quick). Exit status 1 when a goal fails.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import common
from common import log

TARGET = "onnx-cpu"
FLOWS = ("edgeq_int8_minmax", "vendor_int8_minmax", "edgeq_int8_histogram", "edgeq_fp32")


# -- the vendor flow ------------------------------------------------------------------------
def vendor_flow(module, example: tuple, input_name: str, calib_x: np.ndarray,
                work: Path) -> Path:
    """ONNX Runtime's static-quantization recipe by hand: export (the exporter's default
    opset; one file), pre-process, quantize_static in QDQ with per-channel MinMax."""
    import torch
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self, xs):
            self.it = iter(range(len(xs)))
            self.xs = xs

        def get_next(self):
            i = next(self.it, None)
            return None if i is None else {input_name: self.xs[i:i + 1]}

    fp32, pre, out = work / "vendor.fp32.onnx", work / "vendor.pre.onnx", work / "vendor.int8.onnx"
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress
        torch.onnx.export(module, example, str(fp32), dynamo=True, input_names=[input_name],
                          external_data=False)
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(calib_x), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return out


# -- measurements ---------------------------------------------------------------------------
def run_onnx(path: Path, xs: np.ndarray) -> np.ndarray:
    """First output for every sample (static batch 1) through an onnxruntime CPU session."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: xs[i:i + 1]})[0] for i in range(len(xs))])


def latency(paths: dict[str, Path], x: np.ndarray, threads: int, cfg) -> dict:
    """Interleaved rounds (common.interleaved), timed in edgeq's benchmark subprocess (the
    one ``edgeq profile`` uses: ONNX Runtime CPU provider, ``intra_op_num_threads``)."""
    import statistics

    from edgeq.profiling.worker import benchmark_in_subprocess

    probe = max(statistics.median(benchmark_in_subprocess("onnx", p, [x], 20, 5, threads)
                                  .times_ms) for p in paths.values())
    runs = common.runs_per_round(probe, cfg.runs, cfg.round_s)
    per = common.interleaved(list(paths), lambda name: benchmark_in_subprocess(
        "onnx", paths[name], [x], runs, cfg.warmup, threads).times_ms, cfg.rounds)
    return per | {"runs_per_round": runs}


def peak_rss_of_export(model_spec: str, observer: str, calib_npz: Path, out: Path) -> dict:
    """Wall time and peak RSS (VmHWM, bytes) of ``edgeq export`` in its own process."""
    code = ("import json,sys,time\n"
            "from edgeq.profiling.worker import read_vmhwm_kb\n"
            "from edgeq.flow import FlowOptions, export_matrix\n"
            "t=time.time()\n"
            f"export_matrix({model_spec!r}, ['onnx-cpu'], ['int8'], FlowOptions("
            f"{str(out)!r}, calib={str(calib_npz)!r}, observer={observer!r}, force=True))\n"
            "print(json.dumps({'wall_s': time.time()-t, 'peak_rss_bytes': "
            "read_vmhwm_kb()*1024}))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def entropy_export(model, calib_ds, r: dict, work: Path) -> None:
    """r["entropy_export"]: wall time and peak memory of ``edgeq export --observer
    entropy``. Entropy on MobileNetV2 is where ORT's one-shot calibrator held ~8.6 GB for
    128 images; edgeq feeds it in chunks. Measured in a fresh process (VmHWM)."""
    import torch

    log("mobilenetv2: edgeq --observer entropy export, peak memory")
    cx = next(iter(calib_ds.inputs.values()))
    spec_file, torch_state = work / "mnv2_bn.py", work / "mnv2_bn.pt"
    torch.save(model.module.state_dict(), torch_state)
    spec_file.write_text(
        "import torch\nfrom edgeq.zoo.nets import mobilenet_v2\n"
        "def build():\n    m, ex = mobilenet_v2()\n"
        f"    m.load_state_dict(torch.load({str(torch_state)!r}))\n"
        "    return m.eval(), ex\n")
    np.savez(work / "mnv2_calib.npz", x=cx[:128])
    r["entropy_export"] = dict(peak_rss_of_export(
        f"{spec_file}:build", "entropy", work / "mnv2_calib.npz", work / "entropy"),
        calib_samples=min(128, len(cx)))


def bench_model(name: str, model, calib_ds, eval_x, eval_y, work: Path, cfg) -> dict:
    from edgeq.recipes import load_recipe

    calib_x = next(iter(calib_ds.inputs.values()))
    int8 = load_recipe("int8")
    paths: dict[str, Path] = {}
    times: dict[str, float] = {}
    for key, recipe, calib in (
            ("edgeq_int8_minmax", int8.with_(name="int8-minmax", activation_observer="minmax"),
             calib_ds),
            ("edgeq_int8_histogram", int8, calib_ds),
            ("edgeq_fp32", load_recipe("fp32"), None)):
        log(f"{name}: edgeq {key}")
        paths[key], times[key] = common.timed(common.edgeq_export, model, TARGET, recipe, calib,
                                              work / name / key)
    log(f"{name}: vendor int8 (MinMax)")
    (work / name / "vendor").mkdir(parents=True, exist_ok=True)
    paths["vendor_int8_minmax"], times["vendor_int8_minmax"] = common.timed(
        vendor_flow, model.module, model.example_inputs, model.input_names[0], calib_x,
        work / name / "vendor")
    paths = {k: paths[k] for k in FLOWS}
    res: dict = {"calib_samples": len(calib_x), "eval_samples": len(eval_x),
                 "export_s": times, "size_bytes": {k: p.stat().st_size for k, p in paths.items()}}

    log(f"{name}: outputs on {len(eval_x)} eval samples through onnxruntime")
    outs = {k: run_onnx(p, eval_x) for k, p in paths.items()}
    ref = common.reference(model.module, eval_x, 32)
    res["edgeq_vs_vendor"] = common.edgeq_vs_vendor(outs["edgeq_int8_minmax"],
                                                    outs["vendor_int8_minmax"])
    res |= common.fidelity(outs, ref, eval_y)
    res["latency"] = common.latency_by_threads(
        name, cfg, lambda threads: latency(paths, eval_x[:1], threads, cfg))
    return res


# -- goals and report -----------------------------------------------------------------------
def goals(name: str, r: dict) -> list[tuple[str, str, str, bool]]:
    s, lat, fid = r["size_bytes"], r["latency"], r["vs_pytorch_fp32"]
    e, v = "edgeq_int8_minmax", "vendor_int8_minmax"
    rows = [common.size_ratio_row(s, e, v), *common.latency_ratio_rows(lat, e, v),
            (f"SQNR vs fp32: edgeq {fid[e]['sqnr_db']:.2f} dB, vendor "
             f"{fid[v]['sqnr_db']:.2f} dB", ">= vendor - 0.05 dB",
             fid[e]["sqnr_db"] >= fid[v]["sqnr_db"] - 0.05),
            (f"top-1 agreement vs fp32: edgeq {fid[e]['top1_agreement_pct']:.2f}%, vendor "
             f"{fid[v]['top1_agreement_pct']:.2f}%", ">= vendor",
             fid[e]["top1_agreement_pct"] >= fid[v]["top1_agreement_pct"]),
            *common.speedup_rows(lat, e, report_only=" (int8 is SLOWER on ORT's CPU provider here)")]
    return [(name, text, goal, ok) for text, goal, ok in rows]


def print_tables(results: dict, rows: list) -> None:
    heads = {"edgeq_int8_minmax": "edgeq mm", "vendor_int8_minmax": "vendor mm",
             "edgeq_int8_histogram": "edgeq hist", "edgeq_fp32": "edgeq fp32"}
    for name, r in results["models"].items():
        print(f"\n== {name} ==  (calibration {r['calib_samples']}, eval {r['eval_samples']} "
              "samples; int8 = QDQ per-channel, mm = MinMax, hist = edgeq's histogram default)")
        common.table_line("", [heads[k] for k in FLOWS])
        common.table_line("size (bytes)", [r["size_bytes"][k] for k in FLOWS], ",")
        common.table_line("export (s)", [r["export_s"][k] for k in FLOWS], ".1f")
        for th, l in r["latency"].items():
            common.table_line("latency ms " + th, [l[k]["median_ms"] for k in FLOWS], ".4f")
        common.fidelity_lines(r, FLOWS)
        if "entropy_export" in r:
            m = r["entropy_export"]
            print(f"edgeq --observer entropy export: {m.get('wall_s', 0):.0f} s, peak RSS "
                  f"{m.get('peak_rss_bytes', 0) / 2**20:.0f} MiB {m.get('error', '')}")
    common.print_goals(rows, 78)


def main() -> int:
    args = common.parse_args(__doc__, "artifacts")
    cfg = argparse.Namespace(rounds=3, runs=10, warmup=3, round_s=0.05, mnv2_calib=32,
                             mnv2_eval=8, entropy=False) if args.quick else \
        argparse.Namespace(rounds=9, runs=40, warmup=5, round_s=0.3, mnv2_calib=256,
                           mnv2_eval=128, entropy=True)
    warnings.filterwarnings("ignore")
    from edgeq.runtimes.onnx import RUNTIME

    started = time.time()
    results = common.run_models(
        args, cfg, "edgeq-bench-onnx-", RUNTIME.versions(), bench_model,
        after_mnv2=entropy_export if cfg.entropy else None,
        note="this onnxruntime wheel has only the CPU execution provider: every artifact ran on it")

    rows = [g for name, r in results["models"].items() for g in goals(name, r)]
    return common.finish(results, rows, "onnx", args.quick, started, print_tables)


if __name__ == "__main__":
    sys.exit(main())
