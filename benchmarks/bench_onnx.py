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
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
T0 = time.perf_counter()
FLOWS = ("edgeq_int8_minmax", "vendor_int8_minmax", "edgeq_int8_histogram", "edgeq_fp32")


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# -- data (as in bench_executorch.py) -------------------------------------------------------
def photo_crops(n: int, seed: int, size: int = 224) -> np.ndarray:
    """``n`` random square crops (40-100% of the short side) of scikit-learn's two sample
    photos, flipped at random, resized to ``size``, ImageNet-normalised, NCHW float32."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        img = photos[i % len(photos)]
        w, h = img.size
        side = int(rng.uniform(0.4, 1.0) * min(w, h))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        crop = img.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        a = np.asarray(crop, np.float32).transpose(2, 0, 1) / 255.0
        out[i] = (a - IMAGENET_MEAN) / IMAGENET_STD
    return out


def reestimate_bn(model, images: np.ndarray):
    """Give the random-init MobileNetV2 a trained network's BatchNorm statistics (running
    mean/var re-estimated on real images, weights untouched); with the default (0, 1)
    stats its activations vanish and every input gives the same logits."""
    import dataclasses

    import torch

    from edgeq.models import model_hash

    m = model.module
    for bn in (b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None
    m.train()
    with torch.no_grad():
        for s in range(0, len(images), 16):
            m(torch.from_numpy(images[s:s + 16]))
    m.eval()
    return dataclasses.replace(model, sha256=model_hash(m))


# -- the flows ------------------------------------------------------------------------------
def edgeq_flow(model, recipe, calib, out_dir: Path) -> Path:
    """edgeq's library call, exactly as ``edgeq export -t onnx-cpu`` makes it."""
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    manifest = export(model, get_target("onnx-cpu"), recipe, calib, None,
                      ExportOptions(out_dir, force=True))
    return Path(manifest["artifact"]["path"])


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


def sqnr_db(out: np.ndarray, ref: np.ndarray) -> float:
    noise = float(((out.astype(np.float64) - ref) ** 2).sum())
    return float("inf") if noise == 0 else \
        10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / noise)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement in percent."""
    return float(np.mean(a.argmax(1) == b.argmax(1)) * 100)


def latency(paths: dict[str, Path], x: np.ndarray, threads: int, cfg) -> dict:
    """Median of per-round medians (ms) per artifact, timed in edgeq's benchmark subprocess
    (the one ``edgeq profile`` uses: ONNX Runtime CPU provider, ``intra_op_num_threads``).
    Each round runs every artifact once, in an order rotated round by round."""
    from edgeq.profiling.worker import benchmark_in_subprocess

    names = list(paths)
    probe = max(statistics.median(benchmark_in_subprocess("onnx", p, [x], 20, 5, threads)
                                  .times_ms) for p in paths.values())
    runs = int(min(max(cfg.runs, cfg.round_s * 1000 / probe), 20000))
    per: dict[str, list[float]] = {n: [] for n in names}
    for r in range(cfg.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            b = benchmark_in_subprocess("onnx", paths[name], [x], runs, cfg.warmup, threads)
            per[name].append(statistics.median(b.times_ms))
    return {n: {"median_ms": statistics.median(v), "round_medians_ms": v}
            for n, v in per.items()} | {"runs_per_round": runs}


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


def bench_model(name: str, model, calib_ds, eval_x, eval_y, work: Path, cfg) -> dict:
    import torch

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
        t = time.perf_counter()
        paths[key] = edgeq_flow(model, recipe, calib, work / name / key)
        times[key] = round(time.perf_counter() - t, 1)
    log(f"{name}: vendor int8 (MinMax)")
    t = time.perf_counter()
    (work / name / "vendor").mkdir(parents=True, exist_ok=True)
    paths["vendor_int8_minmax"] = vendor_flow(model.module, model.example_inputs,
                                              model.input_names[0], calib_x,
                                              work / name / "vendor")
    times["vendor_int8_minmax"] = round(time.perf_counter() - t, 1)
    paths = {k: paths[k] for k in FLOWS}
    res: dict = {"calib_samples": len(calib_x), "eval_samples": len(eval_x),
                 "export_s": times, "size_bytes": {k: p.stat().st_size for k, p in paths.items()}}

    log(f"{name}: outputs on {len(eval_x)} eval samples through onnxruntime")
    outs = {k: run_onnx(p, eval_x) for k, p in paths.items()}
    with torch.no_grad():
        ref = np.concatenate([model.module(torch.from_numpy(eval_x[s:s + 32])).numpy()
                              for s in range(0, len(eval_x), 32)])
    res["edgeq_vs_vendor"] = {
        "max_abs_diff": float(np.abs(outs["edgeq_int8_minmax"] -
                                     outs["vendor_int8_minmax"]).max()),
        "top1_agreement_pct": agreement(outs["edgeq_int8_minmax"], outs["vendor_int8_minmax"])}
    res["vs_pytorch_fp32"] = {k: {"sqnr_db": round(sqnr_db(o, ref), 2),
                                  "top1_agreement_pct": agreement(o, ref)}
                              for k, o in outs.items()}
    if eval_y is not None:
        res["top1_pct"] = {k: float(np.mean(o.argmax(1) == eval_y) * 100)
                           for k, o in outs.items()}
        res["top1_pct"]["pytorch_fp32"] = float(np.mean(ref.argmax(1) == eval_y) * 100)
    res["latency"] = {}
    for threads in (1, 2):
        log(f"{name}: latency, threads={threads} ({cfg.rounds} rounds)")
        res["latency"][f"threads={threads}"] = latency(paths, eval_x[:1], threads, cfg)
    return res


# -- goals and report -----------------------------------------------------------------------
def goals(name: str, r: dict) -> list[tuple[str, str, str, bool]]:
    s, lat, fid = r["size_bytes"], r["latency"], r["vs_pytorch_fp32"]
    e, v = "edgeq_int8_minmax", "vendor_int8_minmax"
    rows = [(f"size edgeq/vendor = {s[e] / s[v]:.4f}", "<= 1.0", s[e] <= s[v])]
    for th, l in lat.items():
        ratio = l[e]["median_ms"] / l[v]["median_ms"]
        rows.append((f"latency edgeq/vendor {th} = {ratio:.3f}", "<= 1.05", ratio <= 1.05))
    rows.append((f"SQNR vs fp32: edgeq {fid[e]['sqnr_db']:.2f} dB, vendor "
                 f"{fid[v]['sqnr_db']:.2f} dB", ">= vendor - 0.05 dB",
                 fid[e]["sqnr_db"] >= fid[v]["sqnr_db"] - 0.05))
    rows.append((f"top-1 agreement vs fp32: edgeq {fid[e]['top1_agreement_pct']:.2f}%, vendor "
                 f"{fid[v]['top1_agreement_pct']:.2f}%", ">= vendor",
                 fid[e]["top1_agreement_pct"] >= fid[v]["top1_agreement_pct"]))
    for th, l in lat.items():
        sp = l["edgeq_fp32"]["median_ms"] / l[e]["median_ms"]
        rows.append((f"int8 speed-up over fp32 {th} = {sp:.2f}x"
                     + ("" if sp > 1 else " (int8 is SLOWER on ORT's CPU provider here)"),
                     "report", True))
    return [(name, text, goal, ok) for text, goal, ok in rows]


def print_tables(results: dict, rows: list) -> None:
    heads = {"edgeq_int8_minmax": "edgeq mm", "vendor_int8_minmax": "vendor mm",
             "edgeq_int8_histogram": "edgeq hist", "edgeq_fp32": "edgeq fp32"}
    for name, r in results["models"].items():
        print(f"\n== {name} ==  (calibration {r['calib_samples']}, eval {r['eval_samples']} "
              "samples; int8 = QDQ per-channel, mm = MinMax, hist = edgeq's histogram default)")
        print(f"{'':24}" + "".join(f"{heads[k]:>14}" for k in FLOWS))
        print(f"{'size (bytes)':24}" + "".join(f"{r['size_bytes'][k]:>14,}" for k in FLOWS))
        print(f"{'export (s)':24}" + "".join(f"{r['export_s'][k]:>14.1f}" for k in FLOWS))
        for th, l in r["latency"].items():
            print(f"{'latency ms ' + th:24}" + "".join(f"{l[k]['median_ms']:>14.4f}"
                                                       for k in FLOWS))
        vs = r["vs_pytorch_fp32"]
        print(f"{'SQNR vs PyTorch (dB)':24}" + "".join(f"{vs[k]['sqnr_db']:>14.2f}"
                                                       for k in FLOWS))
        print(f"{'agree w/ PyTorch (%)':24}" + "".join(f"{vs[k]['top1_agreement_pct']:>14.2f}"
                                                       for k in FLOWS))
        if "top1_pct" in r:
            print(f"{'top-1 (%)':24}" + "".join(f"{r['top1_pct'][k]:>14.2f}" for k in FLOWS))
        if "entropy_export" in r:
            m = r["entropy_export"]
            print(f"edgeq --observer entropy export: {m.get('wall_s', 0):.0f} s, peak RSS "
                  f"{m.get('peak_rss_bytes', 0) / 2**20:.0f} MiB {m.get('error', '')}")
    print("\nGOALS")
    for model, text, goal, ok in rows:
        print(f"  {'PASS' if ok else 'FAIL'}  {model:12} {text:78} goal {goal}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and runs (smoke check)")
    ap.add_argument("--work", type=Path, help="keep the artifacts here (default: a temp dir)")
    args = ap.parse_args()
    cfg = argparse.Namespace(rounds=3, runs=10, warmup=3, round_s=0.05, mnv2_calib=32,
                             mnv2_eval=8, entropy=False) if args.quick else \
        argparse.Namespace(rounds=9, runs=40, warmup=5, round_s=0.3, mnv2_calib=256,
                           mnv2_eval=128, entropy=True)
    warnings.filterwarnings("ignore")
    from edgeq import data
    from edgeq.models import load_model
    from edgeq.runtimes.onnx import RUNTIME

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-onnx-") as td:
        work = args.work or Path(td)
        work.mkdir(parents=True, exist_ok=True)
        results: dict = {"mode": "quick" if args.quick else "full", "settings": vars(cfg),
                         "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                                  "python": platform.python_version(),
                                  "loadavg_start": os.getloadavg()},
                         "versions": RUNTIME.versions(), "models": {},
                         "note": "this onnxruntime wheel has only the CPU execution provider: "
                                 "every artifact ran on it"}

        # digits-cnn: 256 stratified samples of the built-in train split; edgeq's export
        # selects recipe.calib_samples (256) from them, which returns the same set in the
        # same order, so both flows calibrate on identical data.
        digits = load_model("digits-cnn")
        calib = data.select(data.load_dataset("digits:train"), 256)
        ev = data.load_dataset("digits:eval")
        results["models"]["digits-cnn"] = bench_model(
            "digits-cnn", digits, calib, ev.inputs["x"], ev.labels, work, cfg)

        # MobileNetV2, random init with BatchNorm statistics re-estimated on photo crops;
        # calibration and evaluation are other crops of the same two photos.
        mnv2 = reestimate_bn(load_model("mobilenetv2"), photo_crops(64, seed=2))
        cx = photo_crops(cfg.mnv2_calib, seed=0)
        cds = data.Dataset({mnv2.input_names[0]: cx}, None, "sklearn sample photos, crops")
        r = bench_model("mobilenetv2", mnv2, cds, photo_crops(cfg.mnv2_eval, seed=1), None,
                        work, cfg)
        r["weights"] = "random init (seed 0), BN running stats re-estimated on 64 photo crops"
        if cfg.entropy:
            # Entropy on MobileNetV2 is where ORT's one-shot calibrator held ~8.6 GB for 128
            # images; edgeq feeds it in chunks. Measured in a fresh process (VmHWM).
            log("mobilenetv2: edgeq --observer entropy export, peak memory")
            spec_file = work / "mnv2_bn.py"
            torch_state = work / "mnv2_bn.pt"
            import torch
            torch.save(mnv2.module.state_dict(), torch_state)
            spec_file.write_text(
                "import torch\nfrom edgeq.zoo.nets import mobilenet_v2\n"
                "def build():\n    m, ex = mobilenet_v2()\n"
                f"    m.load_state_dict(torch.load({str(torch_state)!r}))\n"
                "    return m.eval(), ex\n")
            np.savez(work / "mnv2_calib.npz", x=cx[:128])
            r["entropy_export"] = dict(peak_rss_of_export(
                f"{spec_file}:build", "entropy", work / "mnv2_calib.npz", work / "entropy"),
                calib_samples=min(128, len(cx)))
        results["models"]["mobilenetv2"] = r

    rows = [g for name, r in results["models"].items() for g in goals(name, r)]
    results["goals"] = [{"model": m, "what": t, "goal": g, "passed": ok} for m, t, g, ok in rows]
    results["wall_s"] = round(time.time() - started, 1)
    results["host"]["loadavg_end"] = os.getloadavg()
    print_tables(results, rows)
    out = HERE / "results" / ("onnx.quick.json" if args.quick else "onnx.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\nwrote {out.relative_to(HERE.parent)} ({results['wall_s']} s)")
    start, end = results["host"]["loadavg_start"][0], results["host"]["loadavg_end"][0]
    if start > 1.0 or end > 3.0:
        print(f"WARNING: load average {start:.1f} at start, {end:.1f} at end on "
              f"{os.cpu_count()} cores: other processes competed for the CPU, so latencies "
              "are inflated (the interleaved ratios much less so)")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
