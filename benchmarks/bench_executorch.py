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
import copy
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
CALIB_BATCH = 32  # edgeq.quantize.pt2e.CALIB_BATCH: the vendor flow mirrors it
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# -- data ---------------------------------------------------------------------------------
def photo_crops(n: int, seed: int, size: int = 224) -> np.ndarray:
    """``n`` random square crops (side 40-100% of the short side) of scikit-learn's two
    sample photos (china.jpg, flower.jpg), flipped at random, resized to ``size`` and
    ImageNet-normalised: real photographic statistics, though only two scenes."""
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
    """Give the random-init MobileNetV2 a trained network's BatchNorm statistics.

    With PyTorch's default init and BN running stats of (0, 1), the built-in model's
    activations shrink layer after layer: its features are ~1e-8 and every input yields
    the classifier's bias as logits, so SQNR and top-1 agreement would only measure how
    a constant is rounded. Re-estimating the running mean/var on real images (weights
    untouched) makes every layer's output roughly unit-scale, as after training."""
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


# -- the two flows --------------------------------------------------------------------------
def edgeq_flow(model, recipe_name: str, calib, out_dir: Path) -> Path:
    """edgeq's library call, exactly as ``edgeq export`` makes it."""
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    manifest = export(model, get_target("executorch-xnnpack"), load_recipe(recipe_name),
                      calib, None, ExportOptions(out_dir, force=True))
    return Path(manifest["artifact"]["path"])


def vendor_flow(module, example: tuple, calib_x: np.ndarray, out_path: Path) -> Path:
    """The ExecuTorch docs' XNNPACK int8 recipe, by hand, with edgeq's settings: per-channel
    symmetric weights, the quantizer's default (histogram) activation observer, and
    calibration on a dynamic-batch export in batches of 32 (the observers' result depends
    on batching and order, so both must match for a like-for-like comparison)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = copy.deepcopy(module)  # export shares parameter storage with the module
    doubled = tuple(torch.cat([t, t]) for t in example)
    gm = torch.export.export(module, doubled,
                             dynamic_shapes=tuple({0: torch.export.Dim.AUTO} for _ in example)
                             ).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for s in range(0, len(calib_x), CALIB_BATCH):
            prepared(torch.from_numpy(np.ascontiguousarray(calib_x[s:s + CALIB_BATCH])))
    converted = convert_pt2e(prepared)
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


def sqnr_db(out: np.ndarray, ref: np.ndarray) -> float:
    noise = float(((out.astype(np.float64) - ref) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / noise)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement in percent."""
    return float(np.mean(a.argmax(1) == b.argmax(1)) * 100)


def latency(runner: Path, ptes: dict, x: np.ndarray, threads: int, rounds: int, runs: int,
            warmup: int, round_s: float) -> dict:
    """Median of per-round medians (ms) for each artifact. Every round runs every artifact
    once in a rotated order (A B C, B C A, ...), so slow drift of the machine (thermal,
    other load) lands on all of them rather than on whichever ran last."""
    from edgeq.runtimes.executorch import native

    names = list(ptes)
    per: dict[str, list[float]] = {n: [] for n in names}
    applied = True
    # A digits-cnn call takes ~6 us: a fixed run count would make its rounds far too short
    # to be stable. Size each round to ~round_s seconds of the slowest artifact instead.
    probe = max(statistics.median(native.run(runner, p, [x], 20, 5, threads).times_ms)
                for p in ptes.values())
    runs = int(min(max(runs, round_s * 1000 / probe), 20000))
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            res = native.run(runner, ptes[name], [x], runs, warmup, threads)
            per[name].append(statistics.median(res.times_ms))
            applied &= res.threads_applied
    return {n: {"median_ms": statistics.median(v), "round_medians_ms": v} for n, v in per.items()} | \
        {"threads_applied": applied, "runs_per_round": runs}


def bench_model(name: str, model, calib_x, calib_ds, eval_x, eval_y, work: Path, cfg) -> dict:
    import torch

    from edgeq.runtimes.executorch import native

    log(f"{name}: edgeq int8 export ({len(calib_x)} calibration samples)")
    t = time.perf_counter()
    e_int8 = edgeq_flow(model, "int8", calib_ds, work / "edgeq")
    t_edgeq = time.perf_counter() - t
    log(f"{name}: vendor int8 export")
    t = time.perf_counter()
    v_int8 = vendor_flow(model.module, model.example_inputs, calib_x, work / f"{name}.vendor.int8.pte")
    t_vendor = time.perf_counter() - t
    log(f"{name}: edgeq fp32 export")
    e_fp32 = edgeq_flow(model, "fp32", None, work / "edgeq")
    ptes = {"edgeq_int8": e_int8, "vendor_int8": v_int8, "edgeq_fp32": e_fp32}
    res: dict = {"calib_samples": len(calib_x), "eval_samples": len(eval_x),
                 "export_s": {"edgeq_int8": round(t_edgeq, 1), "vendor_int8": round(t_vendor, 1)},
                 "size_bytes": {k: p.stat().st_size for k, p in ptes.items()}}

    log(f"{name}: outputs on {len(eval_x)} eval samples through executorch.runtime")
    outs = {k: run_pte(p, eval_x) for k, p in ptes.items()}
    with torch.no_grad():
        ref = np.concatenate([model.module(torch.from_numpy(eval_x[s:s + 64])).numpy()
                              for s in range(0, len(eval_x), 64)])
    res["edgeq_vs_vendor"] = {
        "max_abs_diff": float(np.abs(outs["edgeq_int8"] - outs["vendor_int8"]).max()),
        "top1_agreement_pct": agreement(outs["edgeq_int8"], outs["vendor_int8"]),
        "bit_identical_pte": e_int8.read_bytes() == v_int8.read_bytes()}
    res["vs_pytorch_fp32"] = {k: {"sqnr_db": round(sqnr_db(o, ref), 2),
                                  "top1_agreement_pct": agreement(o, ref)} for k, o in outs.items()}
    if eval_y is not None:
        res["top1_pct"] = {k: float(np.mean(o.argmax(1) == eval_y) * 100) for k, o in outs.items()}
        res["top1_pct"]["pytorch_fp32"] = float(np.mean(ref.argmax(1) == eval_y) * 100)

    runner = native.build_runner()
    res["latency"] = {}
    for threads in (1, 2):
        log(f"{name}: latency, threads={threads} ({cfg.rounds} interleaved rounds)")
        res["latency"][f"threads={threads}"] = latency(runner, ptes, eval_x[:1], threads,
                                                      cfg.rounds, cfg.runs, cfg.warmup, cfg.round_s)
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
def goals(name: str, r: dict) -> list[tuple[str, str, bool]]:
    s, lat = r["size_bytes"], r["latency"]
    ev = r["edgeq_vs_vendor"]
    rows = [(f"size edgeq/vendor = {s['edgeq_int8'] / s['vendor_int8']:.4f}", "<= 1.0",
             s["edgeq_int8"] <= s["vendor_int8"])]
    for th, l in lat.items():
        ratio = l["edgeq_int8"]["median_ms"] / l["vendor_int8"]["median_ms"]
        rows.append((f"latency edgeq/vendor {th} = {ratio:.3f}", "<= 1.05", ratio <= 1.05))
    rows.append((f"outputs edgeq vs vendor: max|diff| {ev['max_abs_diff']:.3g}, top-1 agree "
                 f"{ev['top1_agreement_pct']:.1f}%", "<= 1e-4, 100%",
                 ev["max_abs_diff"] <= 1e-4 and ev["top1_agreement_pct"] == 100))
    q = s["edgeq_int8"] / s["edgeq_fp32"]
    rows.append((f"size int8/fp32 = {q:.3f}", "<= 0.30", q <= 0.30))
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
    cols = ("edgeq_int8", "vendor_int8", "edgeq_fp32")

    def line(label: str, values, fmt: str) -> None:
        print(f"{label:22}" + "".join(format(v, fmt).rjust(14) for v in values))

    for name, r in results["models"].items():
        print(f"\n== {name} ==  (calibration {r['calib_samples']}, eval {r['eval_samples']} samples;"
              f" edgeq and vendor .pte byte-identical: {r['edgeq_vs_vendor']['bit_identical_pte']})")
        line("", ("edgeq int8", "vendor int8", "edgeq fp32"), "")
        line("size (bytes)", [r["size_bytes"][k] for k in cols], ",")
        for th, lat in r["latency"].items():
            line(f"latency ms {th}", [lat[k]["median_ms"] for k in cols], ".4f")
        vs = r["vs_pytorch_fp32"]
        line("SQNR vs PyTorch (dB)", [vs[k]["sqnr_db"] for k in cols], ".2f")
        line("agree w/ PyTorch (%)", [vs[k]["top1_agreement_pct"] for k in cols], ".2f")
        if "top1_pct" in r:
            line("top-1 (%)", [r["top1_pct"][k] for k in cols], ".2f")
    c = results["cli"]
    print(f"\nedgeq --help: {c['help_ms_median']:.0f} ms median of {c['runs']} "
          f"(bare python start-up {c['python_startup_ms_median']:.0f} ms)")
    print("\nGOALS")
    for model, text, goal, ok in rows:
        print(f"  {'PASS' if ok else 'FAIL'}  {model:12} {text:70} goal {goal}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and runs (smoke check)")
    ap.add_argument("--work", type=Path, help="keep the .pte files here (default: a temp dir)")
    args = ap.parse_args()
    cfg = argparse.Namespace(rounds=3, runs=10, warmup=3, round_s=0.05, mnv2_calib=32,
                             mnv2_eval=8, help_runs=3) if args.quick else \
        argparse.Namespace(rounds=15, runs=40, warmup=5, round_s=0.3, mnv2_calib=256,
                           mnv2_eval=128, help_runs=10)

    # torch.export's pytree code warns (FutureWarning) on every copy of a graph module.
    warnings.filterwarnings("ignore", category=FutureWarning)
    from edgeq import data
    from edgeq.models import load_model

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as td:
        work = args.work or Path(td)
        work.mkdir(parents=True, exist_ok=True)
        results: dict = {"mode": "quick" if args.quick else "full", "settings": vars(cfg),
                         "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                                  "python": platform.python_version(),
                                  # other work on the machine skews timings: keep the load
                                  "loadavg_start": os.getloadavg()}, "models": {}}
        from edgeq.runtimes.executorch import RUNTIME
        results["versions"] = RUNTIME.versions()

        # digits-cnn: the built-in calibration split, 256 stratified samples. edgeq's export
        # selects recipe.calib_samples (256) from what it is given, which returns this very
        # set unchanged, so both flows see the same samples in the same order.
        digits = load_model("digits-cnn")
        calib = data.select(data.load_dataset("digits:train"), 256)
        ev = data.load_dataset("digits:eval")
        results["models"]["digits-cnn"] = bench_model(
            "digits-cnn", digits, calib.inputs["x"], calib, ev.inputs["x"], ev.labels, work, cfg)

        # MobileNetV2, random init (no ImageNet weights available offline) with BatchNorm
        # statistics re-estimated on 64 photo crops. Calibration, eval and BN crops come
        # from different seeds, but all three are crops of the same two photos.
        mnv2 = reestimate_bn(load_model("mobilenetv2"), photo_crops(64, seed=2))
        cx = photo_crops(cfg.mnv2_calib, seed=0)
        cds = data.Dataset({mnv2.input_names[0]: cx}, None, "sklearn sample photos, random crops")
        results["models"]["mobilenetv2"] = bench_model(
            "mobilenetv2", mnv2, cx, cds, photo_crops(cfg.mnv2_eval, seed=1), None, work, cfg)
        results["models"]["mobilenetv2"]["weights"] = \
            "random init (torch.manual_seed(0)), BN running stats re-estimated on 64 photo crops"

    log("CLI start-up")
    results["cli"] = cli_checks(cfg.help_runs)
    rows = [g for name, r in results["models"].items() for g in goals(name, r)]
    rows.append(("cli", "`import edgeq.cli` leaves torch unimported", "no torch",
                 not results["cli"]["cli_imports_torch"]))
    results["goals"] = [{"model": m, "what": t, "goal": g, "passed": ok} for m, t, g, ok in rows]
    results["wall_s"] = round(time.time() - started, 1)
    results["host"]["loadavg_end"] = os.getloadavg()
    print_tables(results, rows)
    out = HERE / "results" / ("executorch.quick.json" if args.quick else "executorch.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\nwrote {out.relative_to(HERE.parent)} ({results['wall_s']} s)")
    # Load before we start is all someone else's; at the end ours is up to ~2 (threads=2).
    start, end = results["host"]["loadavg_start"][0], results["host"]["loadavg_end"][0]
    if start > 1.0 or end > 3.0:
        print(f"WARNING: load average {start:.1f} at start, {end:.1f} at end on "
              f"{os.cpu_count()} cores: other processes competed for the CPU, so latencies "
              "are inflated (the interleaved ratios much less so)")
    return 0 if all(ok for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
