"""What the benchmarks share: the data, the edgeq export call, PT2E calibration, interleaved
timing rounds, fidelity metrics, goal rows, host info and result writing.

Each ``bench_*.py`` keeps its own vendor flow and its own runtime's measurements; this
module is imported as ``common`` (the scripts' directory is on ``sys.path`` when one of
them runs).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CALIB_BATCH = 32  # edgeq.quantize.pt2e.CALIB_BATCH: the PT2E vendor flows mirror it
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
MNV2_WEIGHTS = "random init (torch.manual_seed(0)), BN running stats re-estimated on 64 photo crops"
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench {time.perf_counter() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# -- data -----------------------------------------------------------------------------------
def photo_crops(n: int, seed: int, size: int = 224) -> np.ndarray:
    """``n`` random square crops (side 40-100% of the short side) of scikit-learn's two
    sample photos (china.jpg, flower.jpg), flipped at random, resized to ``size`` and
    ImageNet-normalised, NCHW float32: real photographic statistics, though two scenes."""
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
    """Give the random-init MobileNetV2 BatchNorm statistics from real images.

    ``edgeq.zoo.nets.mobilenet_v2()`` already re-estimates them on 4 random-normal images
    (otherwise activations vanish and every input yields the classifier's bias). This
    resets them and re-estimates on photo crops instead (weights untouched), so that
    calibration and eval crops see the statistics of photos: the benchmarks' numbers
    depend on it, it is not redundant with the library's pass."""
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


def digits():
    """(model, calib Dataset, eval Dataset) for digits-cnn. Calibration is 256 stratified
    samples of the built-in train split; edgeq's export selects recipe.calib_samples (256)
    from them, which returns this very set in the same order, so edgeq's and the vendor's
    flows calibrate on identical data. Eval is ``digits:eval`` (445 labelled samples)."""
    from edgeq import data
    from edgeq.models import load_model

    return (load_model("digits-cnn"), data.select(data.load_dataset("digits:train"), 256),
            data.load_dataset("digits:eval"))


def mobilenetv2(n_calib: int, n_eval: int):
    """(model, calib Dataset, eval images) for MobileNetV2: random init (no ImageNet
    weights available offline) with BatchNorm statistics re-estimated on 64 photo crops.
    BN (seed 2), calibration (seed 0) and eval (seed 1) crops differ, but all three are
    crops of the same two photos."""
    from edgeq import data
    from edgeq.models import load_model

    model = reestimate_bn(load_model("mobilenetv2"), photo_crops(64, seed=2))
    cx = photo_crops(n_calib, seed=0)
    cds = data.Dataset({model.input_names[0]: cx}, None, "sklearn sample photos, random crops")
    return model, cds, photo_crops(n_eval, seed=1)


def bench_models(bench_model: Callable, cfg, work: Path, after_mnv2: Callable | None = None
                 ) -> dict:
    """``bench_model(name, model, calib_ds, eval_x, eval_y, work, cfg)`` on digits-cnn and
    MobileNetV2 (``cfg.mnv2_calib`` / ``cfg.mnv2_eval`` crops). ``after_mnv2(model,
    calib_ds, result, work)`` may add to MobileNetV2's result while its model is at hand."""
    model, calib, ev = digits()
    models = {"digits-cnn": bench_model("digits-cnn", model, calib, ev.inputs["x"], ev.labels,
                                        work, cfg)}
    model, calib, eval_x = mobilenetv2(cfg.mnv2_calib, cfg.mnv2_eval)
    r = bench_model("mobilenetv2", model, calib, eval_x, None, work, cfg)
    r["weights"] = MNV2_WEIGHTS
    if after_mnv2:
        after_mnv2(model, calib, r, work)
    models["mobilenetv2"] = r
    return models


def run_models(args, cfg, prefix: str, versions: dict, bench_model: Callable,
               after_mnv2: Callable | None = None, **extra) -> dict:
    """The results skeleton (mode, settings, host, versions, models, ``extra``), with both
    models benchmarked (bench_models) in ``--work`` or a temporary directory."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix=prefix) as td:
        work = args.work or Path(td)
        work.mkdir(parents=True, exist_ok=True)
        results: dict = {"mode": "quick" if args.quick else "full", "settings": vars(cfg),
                         "host": host(), "versions": versions, "models": {}, **extra}
        results["models"] = bench_models(bench_model, cfg, work, after_mnv2)
    return results


# -- flows ----------------------------------------------------------------------------------
def edgeq_export(model, target: str, recipe, calib, out_dir: Path) -> Path:
    """edgeq's library call, exactly as ``edgeq export -t <target>`` makes it. ``recipe``
    is a recipe name or a Recipe."""
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    manifest = export(model, get_target(target), recipe, calib, None,
                      ExportOptions(out_dir, force=True))
    return Path(manifest["artifact"]["path"])


def pt2e_calibrated(module, example: tuple, quantizer, calib_x: np.ndarray):
    """The PT2E front half of the vendors' recipes, with edgeq's batching: export with a
    dynamic batch, ``prepare_pt2e``, calibrate in batches of 32 in order (the observers'
    result depends on batching and order, so both flows must match). Returns the prepared
    module, ready for ``convert_pt2e``."""
    import copy

    import torch
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    module = copy.deepcopy(module)  # export shares parameter storage with the module
    doubled = tuple(torch.cat([t, t]) for t in example)
    gm = torch.export.export(module, doubled,
                             dynamic_shapes=tuple({0: torch.export.Dim.AUTO} for _ in example)
                             ).module()
    prepared = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for s in range(0, len(calib_x), CALIB_BATCH):
            prepared(torch.from_numpy(np.ascontiguousarray(calib_x[s:s + CALIB_BATCH])))
    return prepared


def export_trio(name: str, model, calib_ds, target: str, vendor_flow: Callable,
                vendor_out: Path, work: Path, n_eval: int) -> tuple[dict, dict]:
    """edgeq int8, the vendor's int8 (``vendor_flow(module, example, calib_x, vendor_out)``)
    and edgeq fp32: the artifacts' paths and the result's first fields (samples, export
    wall time, sizes)."""
    calib_x = next(iter(calib_ds.inputs.values()))
    log(f"{name}: edgeq int8 export ({len(calib_x)} calibration samples)")
    e_int8, t_edgeq = timed(edgeq_export, model, target, "int8", calib_ds, work / "edgeq")
    log(f"{name}: vendor int8 export")
    v_int8, t_vendor = timed(vendor_flow, model.module, model.example_inputs, calib_x,
                             vendor_out)
    log(f"{name}: edgeq fp32 export")
    e_fp32 = edgeq_export(model, target, "fp32", None, work / "edgeq")
    paths = {"edgeq_int8": e_int8, "vendor_int8": v_int8, "edgeq_fp32": e_fp32}
    return paths, {"calib_samples": len(calib_x), "eval_samples": n_eval,
                   "export_s": {"edgeq_int8": t_edgeq, "vendor_int8": t_vendor},
                   "size_bytes": {k: p.stat().st_size for k, p in paths.items()}}


def timed(fn: Callable, *args):
    """(fn(*args), wall seconds rounded to 0.1)."""
    t = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - t, 1)


# -- measurements ---------------------------------------------------------------------------
def runs_per_round(probe_ms: float, min_runs: int, round_s: float) -> int:
    """Runs that make a round last ~``round_s`` seconds of the slowest artifact (a
    digits-cnn call takes microseconds: a fixed count would give rounds too short to be
    stable), at least ``min_runs``, at most 20,000."""
    return int(min(max(min_runs, round_s * 1000 / probe_ms), 20000))


def interleaved(names: list, time_ms: Callable[[str], list], rounds: int) -> dict:
    """Median of per-round medians (ms) per artifact. Every round runs every artifact once
    in a rotated order (A B C, B C A, ...), so slow drift of the machine (thermal, other
    load) lands on all of them rather than on whichever ran last. ``time_ms(name)`` times
    one batch of runs and returns the per-run times."""
    names = list(names)
    per: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            per[name].append(statistics.median(time_ms(name)))
    return {n: {"median_ms": statistics.median(v), "round_medians_ms": v} for n, v in per.items()}


def latency_by_threads(name: str, cfg, latency: Callable[[int], dict]) -> dict:
    """``{"threads=1": latency(1), "threads=2": latency(2)}``, logged."""
    out = {}
    for threads in (1, 2):
        log(f"{name}: latency, threads={threads} ({cfg.rounds} interleaved rounds)")
        out[f"threads={threads}"] = latency(threads)
    return out


def reference(module, xs: np.ndarray, batch: int) -> np.ndarray:
    """The fp32 PyTorch model's output over ``xs`` in batches of ``batch``."""
    import torch

    with torch.no_grad():
        return np.concatenate([module(torch.from_numpy(xs[s:s + batch])).numpy()
                               for s in range(0, len(xs), batch)])


def sqnr_db(out: np.ndarray, ref: np.ndarray) -> float:
    """SQNR in dB, inf for identical outputs. (``edgeq.evaluate.fidelity`` does the same
    math but reports 999.0 for inf; the results files keep inf.)"""
    noise = float(((out.astype(np.float64) - ref) ** 2).sum())
    return float("inf") if noise == 0 else \
        10 * np.log10(float((ref.astype(np.float64) ** 2).sum()) / noise)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement in percent."""
    return float(np.mean(a.argmax(1) == b.argmax(1)) * 100)


def fidelity(outs: dict, ref: np.ndarray, labels=None) -> dict:
    """``vs_pytorch_fp32`` (SQNR, top-1 agreement) per artifact and, with labels,
    ``top1_pct`` per artifact and for PyTorch fp32."""
    from edgeq.evaluate import top1

    res: dict = {"vs_pytorch_fp32": {k: {"sqnr_db": round(sqnr_db(o, ref), 2),
                                         "top1_agreement_pct": agreement(o, ref)}
                                     for k, o in outs.items()}}
    if labels is not None:
        res["top1_pct"] = {k: top1(o, labels) for k, o in outs.items()}
        res["top1_pct"]["pytorch_fp32"] = top1(ref, labels)
    return res


def edgeq_vs_vendor(a: np.ndarray, b: np.ndarray) -> dict:
    return {"max_abs_diff": float(np.abs(a - b).max()), "top1_agreement_pct": agreement(a, b)}


# -- goals ----------------------------------------------------------------------------------
def size_ratio_row(s: dict, e: str, v: str, note: str = "") -> tuple:
    return (f"size edgeq/vendor = {s[e] / s[v]:.4f}{note}", "<= 1.0", s[e] <= s[v])


def latency_ratio_rows(lat: dict, e: str, v: str, same: bool = False) -> list:
    """edgeq/vendor latency per thread count, goal <= 1.05. ``same``: the two files are
    byte-identical, so any gap is timing noise and reported as such."""
    rows = []
    for th, l in lat.items():
        ratio = l[e]["median_ms"] / l[v]["median_ms"]
        rows.append((f"latency edgeq/vendor {th} = {ratio:.3f}"
                     + (" (identical files: noise)" if same else ""), "<= 1.05",
                     ratio <= 1.05 or same))
    return rows


def int8_size_row(s: dict, limit: float, int8: str = "edgeq_int8") -> tuple:
    q = s[int8] / s["edgeq_fp32"]
    return (f"size int8/fp32 = {q:.3f}", f"<= {limit:.2f}", q <= limit)


def speedup_rows(lat: dict, int8: str = "edgeq_int8", report_only: str = "") -> list:
    """fp32/int8 latency per thread count: goal > 1, or only reported (always passes)
    with ``report_only`` appended to the text when int8 is slower."""
    rows = []
    for th, l in lat.items():
        sp = l["edgeq_fp32"]["median_ms"] / l[int8]["median_ms"]
        if report_only:
            rows.append((f"int8 speed-up over fp32 {th} = {sp:.2f}x"
                         + ("" if sp > 1 else report_only), "report", True))
        else:
            rows.append((f"int8 speed-up over fp32 {th} = {sp:.2f}x", "> 1", sp > 1))
    return rows


def top1_drop_rows(r: dict) -> list:
    if "top1_pct" not in r:
        return []
    t = r["top1_pct"]
    drop = t["edgeq_fp32"] - t["edgeq_int8"]
    return [(f"top-1 fp32 {t['edgeq_fp32']:.2f}% -> int8 {t['edgeq_int8']:.2f}% "
             f"(drop {drop:.2f} pt)", "<= 0.5 pt", drop <= 0.5)]


# -- command line and report ---------------------------------------------------------------------------------
def parse_args(doc: str, artifacts: str):
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and runs (smoke check)")
    ap.add_argument("--work", type=Path, help=f"keep the {artifacts} here (default: a temp dir)")
    return ap.parse_args()


def table_line(label: str, values, fmt: str = "", label_w: int = 24) -> None:
    print(f"{label:{label_w}}" + "".join(format(v, fmt).rjust(14) for v in values))


def fidelity_lines(r: dict, cols, label_w: int = 24) -> None:
    vs = r["vs_pytorch_fp32"]
    table_line("SQNR vs PyTorch (dB)", [vs[k]["sqnr_db"] for k in cols], ".2f", label_w)
    table_line("agree w/ PyTorch (%)", [vs[k]["top1_agreement_pct"] for k in cols], ".2f",
               label_w)
    if "top1_pct" in r:
        table_line("top-1 (%)", [r["top1_pct"][k] for k in cols], ".2f", label_w)


def print_goals(rows: list, text_w: int) -> None:
    print("\nGOALS")
    for model, text, goal, ok in rows:
        print(f"  {'PASS' if ok else 'FAIL'}  {model:12} {text:{text_w}} goal {goal}")


def host() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # other work on the machine skews timings: keep the load
            "loadavg_start": os.getloadavg()}


def load_warning(host_info: dict) -> None:
    # Load before we start is all someone else's; at the end ours is up to ~2 (threads=2).
    start, end = host_info["loadavg_start"][0], host_info["loadavg_end"][0]
    if start > 1.0 or end > 3.0:
        print(f"WARNING: load average {start:.1f} at start, {end:.1f} at end on "
              f"{os.cpu_count()} cores: other processes competed for the CPU, so latencies "
              "are inflated (the interleaved ratios much less so)")


def write_json(obj: dict, out: Path, indent: int = 1) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(obj, indent=indent, default=float) + "\n")
    return out


def finish(results: dict, rows: list, name: str, quick: bool, started: float,
           print_tables: Callable[[dict, list], None]) -> int:
    """Record goals, wall time and end load in ``results``, print the tables, write
    results/<name>.json (<name>.quick.json with --quick), warn on a busy machine. Returns
    the exit status: 1 when a goal failed."""
    results["wall_s"] = round(time.time() - started, 1)
    results["host"]["loadavg_end"] = os.getloadavg()
    status = write_results(results, rows, RESULTS / (f"{name}.quick.json" if quick else
                                                     f"{name}.json"),
                           print_tables, f"({results['wall_s']} s)")
    load_warning(results["host"])
    return status


def row_cells(r: dict) -> tuple[str, str, str]:
    """A MiniLM row's cosine, size (MB) and p50 (ms) as table cells; n/a / - when absent."""
    return (f"{r['cosine']:.4f}" if r.get("cosine") is not None else "n/a",
            f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else "-",
            f"{r['latency_ms_p50']:.2f}" if r.get("latency_ms_p50") else "-")


def write_results(results: dict, rows: list, out: Path,
                  print_tables: Callable[[dict, list], None], what: str = "") -> int:
    """Record the goal ``rows`` in ``results``, print the tables, write ``out``; the exit
    status: 1 when a goal failed. (``finish`` for a run; alone to re-score or merge.)"""
    results["goals"] = [{"model": m, "what": t, "goal": g, "passed": ok} for m, t, g, ok in rows]
    print_tables(results, rows)
    out = write_json(results, out)
    shown = out.relative_to(HERE.parent) if out.is_relative_to(HERE.parent) else out
    print(f"\nwrote {shown}" + (f" {what}" if what else ""))
    return 0 if all(ok for *_, ok in rows) else 1
