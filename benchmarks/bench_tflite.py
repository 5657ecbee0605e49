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
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET = "tflite-xnnpack"
CALIB_BATCH = 32  # edgeq.quantize.pt2e.CALIB_BATCH: the vendor flow mirrors it
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
ARTIFACTS = ("edgeq_int8", "vendor_int8", "edgeq_fp32")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# -- data (as in bench_executorch.py, so both benchmarks see the same images) ---------------
def photo_crops(n: int, seed: int, size: int = 224) -> np.ndarray:
    """``n`` random square crops (side 40-100% of the short side) of scikit-learn's two
    sample photos, flipped at random, resized to ``size``, ImageNet-normalised."""
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
    """Give the random-init MobileNetV2 a trained network's BatchNorm statistics (with
    the default (0, 1) running stats every input yields the classifier's bias); the
    weights are untouched."""
    import dataclasses

    import torch

    from edgeq.models import model_hash

    m = model.module
    for bn in (b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)):
        bn.reset_running_stats()
        bn.momentum = None  # a plain cumulative average over the batches
    m.train()
    with torch.no_grad():
        for s in range(0, len(images), 16):
            m(torch.from_numpy(images[s:s + 16]))
    m.eval()
    return dataclasses.replace(model, sha256=model_hash(m))


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


# -- the two flows --------------------------------------------------------------------------
def edgeq_flow(model, recipe_name: str, calib, out_dir: Path) -> Path:
    """edgeq's library call, exactly as ``edgeq export`` makes it."""
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    manifest = export(model, get_target(TARGET), load_recipe(recipe_name), calib, None,
                      ExportOptions(out_dir, force=True))
    return Path(manifest["artifact"]["path"])


def vendor_flow(module, example: tuple, calib_x: np.ndarray, out_path: Path) -> Path:
    """litert-torch's PT2E int8 recipe by hand, with edgeq's settings: per-channel
    symmetric weights, the config's own (histogram) activation observer, calibration on a
    dynamic-batch export in batches of 32."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    with quiet():
        import litert_torch
        from litert_torch.quantize.pt2e_quantizer import (PT2EQuantizer,
                                                          get_symmetric_quantization_config)
        from litert_torch.quantize.quant_config import QuantConfig

    module = copy.deepcopy(module)  # export shares parameter storage with the module
    doubled = tuple(torch.cat([t, t]) for t in example)
    gm = torch.export.export(module, doubled,
                             dynamic_shapes=tuple({0: torch.export.Dim.AUTO} for _ in example)
                             ).module()
    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for s in range(0, len(calib_x), CALIB_BATCH):
            prepared(torch.from_numpy(np.ascontiguousarray(calib_x[s:s + CALIB_BATCH])))
    converted = convert_pt2e(prepared, fold_quantize=False)
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


def sqnr_db(out: np.ndarray, ref: np.ndarray) -> float:
    noise = float(((out.astype(np.float64) - ref) ** 2).sum())
    return float("inf") if noise == 0 else \
        10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / noise)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement in percent."""
    return float(np.mean(a.argmax(1) == b.argmax(1)) * 100)


def latency(paths: dict, x: np.ndarray, threads: int, rounds: int, warmup: int,
            round_s: float) -> dict:
    """Median of per-round medians (ms) for each artifact. Every round runs every artifact
    once, in a rotated order (A B C, B C A, ...), so drift of the machine lands on all."""
    models = {k: Model(p, threads) for k, p in paths.items()}
    for m in models.values():
        m.set(x)
        m.time_ms(warmup)
    # Size each round to ~round_s seconds of the slowest artifact: a digits-cnn call takes
    # microseconds, and a fixed run count would make its rounds too short to be stable.
    probe = max(statistics.median(m.time_ms(20)) for m in models.values())
    runs = int(min(max(10, round_s * 1000 / probe), 20000))
    names = list(models)
    per: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            per[name].append(statistics.median(models[name].time_ms(runs)))
    return {n: {"median_ms": statistics.median(v), "round_medians_ms": v}
            for n, v in per.items()} | {"runs_per_round": runs}


def bench_model(name: str, model, calib_x, calib_ds, eval_x, eval_y, work: Path, cfg) -> dict:
    import torch

    log(f"{name}: edgeq int8 export ({len(calib_x)} calibration samples)")
    t = time.perf_counter()
    e_int8 = edgeq_flow(model, "int8", calib_ds, work / "edgeq")
    t_edgeq = time.perf_counter() - t
    log(f"{name}: vendor int8 export")
    t = time.perf_counter()
    v_int8 = vendor_flow(model.module, model.example_inputs, calib_x,
                         work / f"{name}.vendor.int8.tflite")
    t_vendor = time.perf_counter() - t
    log(f"{name}: edgeq fp32 export")
    e_fp32 = edgeq_flow(model, "fp32", None, work / "edgeq")
    paths = {"edgeq_int8": e_int8, "vendor_int8": v_int8, "edgeq_fp32": e_fp32}
    res: dict = {"calib_samples": len(calib_x), "eval_samples": len(eval_x),
                 "export_s": {"edgeq_int8": round(t_edgeq, 1), "vendor_int8": round(t_vendor, 1)},
                 "size_bytes": {k: p.stat().st_size for k, p in paths.items()}}
    from edgeq.runtimes.tflite.coverage import read_ops

    res["ops"] = {k: dict(sorted(Counter(o.name for o in read_ops(p.read_bytes())).items()))
                  for k, p in paths.items()}

    log(f"{name}: outputs on {len(eval_x)} eval samples in the LiteRT interpreter")
    outs = {k: Model(p, 2).outputs(eval_x) for k, p in paths.items()}
    with torch.no_grad():
        ref = np.concatenate([model.module(torch.from_numpy(eval_x[s:s + 64])).numpy()
                              for s in range(0, len(eval_x), 64)])
    res["edgeq_vs_vendor"] = {
        "max_abs_diff": float(np.abs(outs["edgeq_int8"] - outs["vendor_int8"]).max()),
        "top1_agreement_pct": agreement(outs["edgeq_int8"], outs["vendor_int8"]),
        "bit_identical_tflite": e_int8.read_bytes() == v_int8.read_bytes()}
    res["vs_pytorch_fp32"] = {k: {"sqnr_db": round(sqnr_db(o, ref), 2),
                                  "top1_agreement_pct": agreement(o, ref)}
                              for k, o in outs.items()}
    if eval_y is not None:
        res["top1_pct"] = {k: float(np.mean(o.argmax(1) == eval_y) * 100) for k, o in outs.items()}
        res["top1_pct"]["pytorch_fp32"] = float(np.mean(ref.argmax(1) == eval_y) * 100)

    res["latency"] = {}
    for threads in (1, 2):
        log(f"{name}: latency, threads={threads} ({cfg.rounds} rounds)")
        res["latency"][f"threads={threads}"] = latency(paths, eval_x[:1], threads, cfg.rounds,
                                                      cfg.warmup, cfg.round_s)
    return res


# -- goals and report -----------------------------------------------------------------------
def goals(name: str, r: dict) -> list[tuple[str, str, str, bool]]:
    s, lat, vs = r["size_bytes"], r["latency"], r["vs_pytorch_fp32"]
    same = r["edgeq_vs_vendor"]["bit_identical_tflite"]
    rows = [(f"size edgeq/vendor = {s['edgeq_int8'] / s['vendor_int8']:.4f}"
             + (" (bit-identical files)" if same else ""), "<= 1.0",
             s["edgeq_int8"] <= s["vendor_int8"])]
    for th, l in lat.items():
        ratio = l["edgeq_int8"]["median_ms"] / l["vendor_int8"]["median_ms"]
        # Identical bytes are the same program: any gap is timing noise, reported as such.
        rows.append((f"latency edgeq/vendor {th} = {ratio:.3f}"
                     + (" (identical files: noise)" if same else ""), "<= 1.05",
                     ratio <= 1.05 or same))
    e, v = vs["edgeq_int8"], vs["vendor_int8"]
    rows.append((f"fidelity vs PyTorch: SQNR {e['sqnr_db']:.2f} vs {v['sqnr_db']:.2f} dB, "
                 f"agree {e['top1_agreement_pct']:.1f} vs {v['top1_agreement_pct']:.1f}%",
                 "edgeq >= vendor", e["sqnr_db"] >= v["sqnr_db"] - 0.01 and
                 e["top1_agreement_pct"] >= v["top1_agreement_pct"]))
    q = s["edgeq_int8"] / s["edgeq_fp32"]
    rows.append((f"size int8/fp32 = {q:.3f}", "<= 0.35", q <= 0.35))
    for th, l in lat.items():
        sp = l["edgeq_fp32"]["median_ms"] / l["edgeq_int8"]["median_ms"]
        rows.append((f"int8 speed-up over fp32 {th} = {sp:.2f}x", "> 1", sp > 1))
    if "top1_pct" in r:
        drop = r["top1_pct"]["edgeq_fp32"] - r["top1_pct"]["edgeq_int8"]
        rows.append((f"top-1 fp32 {r['top1_pct']['edgeq_fp32']:.2f}% -> int8 "
                     f"{r['top1_pct']['edgeq_int8']:.2f}% (drop {drop:.2f} pt)", "<= 0.5 pt",
                     drop <= 0.5))
    return [(name, text, goal, ok) for text, goal, ok in rows]


def print_tables(results: dict, rows: list) -> None:
    for name, r in results["models"].items():
        print(f"\n== {name} ==  (calibration {r['calib_samples']}, eval {r['eval_samples']} "
              "samples)")
        print(f"{'':24}" + "".join(f"{k.replace('_', ' '):>14}" for k in ARTIFACTS))
        print(f"{'size (bytes)':24}" + "".join(f"{r['size_bytes'][k]:>14,}" for k in ARTIFACTS))
        for th, l in r["latency"].items():
            print(f"{'latency ms ' + th:24}" +
                  "".join(f"{l[k]['median_ms']:>14.4f}" for k in ARTIFACTS))
        vs = r["vs_pytorch_fp32"]
        print(f"{'SQNR vs PyTorch (dB)':24}" + "".join(f"{vs[k]['sqnr_db']:>14.2f}"
                                                       for k in ARTIFACTS))
        print(f"{'agree w/ PyTorch (%)':24}" + "".join(f"{vs[k]['top1_agreement_pct']:>14.2f}"
                                                       for k in ARTIFACTS))
        if "top1_pct" in r:
            print(f"{'top-1 (%)':24}" + "".join(f"{r['top1_pct'][k]:>14.2f}" for k in ARTIFACTS))
        ops = r["ops"]
        print(f"{'ops':24}" + "".join(f"{sum(ops[k].values()):>14}" for k in ARTIFACTS))
        for k in ("edgeq_int8", "vendor_int8"):
            print(f"  {k} ops: " + ", ".join(f"{n} {c}" for n, c in ops[k].items()))
    print("\nGOALS")
    for model, text, goal, ok in rows:
        print(f"  {'PASS' if ok else 'FAIL'}  {model:12} {text:72} goal {goal}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and runs (smoke check)")
    ap.add_argument("--work", type=Path, help="keep the .tflite files here (default: temp dir)")
    args = ap.parse_args()
    cfg = argparse.Namespace(rounds=3, warmup=5, round_s=0.05, mnv2_calib=32, mnv2_eval=16) \
        if args.quick else \
        argparse.Namespace(rounds=9, warmup=10, round_s=0.3, mnv2_calib=256, mnv2_eval=128)

    warnings.filterwarnings("ignore", category=FutureWarning)
    from edgeq import data
    from edgeq.models import load_model
    from edgeq.runtimes.tflite import RUNTIME

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as td:
        work = args.work or Path(td)
        work.mkdir(parents=True, exist_ok=True)
        results: dict = {"mode": "quick" if args.quick else "full", "settings": vars(cfg),
                         "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                                  "python": platform.python_version()},
                         "versions": RUNTIME.versions(), "models": {}}

        # digits-cnn: 256 stratified samples of the built-in calibration split. edgeq's
        # export selects recipe.calib_samples (256) from them, which returns this very set
        # unchanged, so both flows see the same samples in the same order.
        digits = load_model("digits-cnn")
        calib = data.select(data.load_dataset("digits:train"), 256)
        ev = data.load_dataset("digits:eval")
        results["models"]["digits-cnn"] = bench_model(
            "digits-cnn", digits, calib.inputs["x"], calib, ev.inputs["x"], ev.labels, work, cfg)

        # MobileNetV2, random init (no ImageNet weights offline) with BatchNorm statistics
        # re-estimated on 64 photo crops; calibration, eval and BN crops use different seeds.
        mnv2 = reestimate_bn(load_model("mobilenetv2"), photo_crops(64, seed=2))
        cx = photo_crops(cfg.mnv2_calib, seed=0)
        cds = data.Dataset({mnv2.input_names[0]: cx}, None, "sklearn sample photos, crops")
        results["models"]["mobilenetv2"] = bench_model(
            "mobilenetv2", mnv2, cx, cds, photo_crops(cfg.mnv2_eval, seed=1), None, work, cfg)
        results["models"]["mobilenetv2"]["weights"] = \
            "random init (torch.manual_seed(0)), BN running stats re-estimated on 64 photo crops"

    rows = [g for name, r in results["models"].items() for g in goals(name, r)]
    results["goals"] = [{"model": m, "what": t, "goal": g, "passed": ok} for m, t, g, ok in rows]
    results["wall_s"] = round(time.time() - started, 1)
    print_tables(results, rows)
    out = HERE / "results" / ("tflite.quick.json" if args.quick else "tflite.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\nwrote {out.relative_to(HERE.parent)} ({results['wall_s']} s)")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
