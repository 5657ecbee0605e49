"""Accuracy-budget search (``export --max-accuracy-drop X``): find the recipe that meets an
accuracy budget at the smallest size by taking the most sensitive layers to 16-bit
activations (where the target's runtime supports ``Recipe.int16_layers``) or to float.

Every candidate is exported and evaluated on the real artifact in its own runtime
(``edgeq.stages``): the simulation (``edgeq.quantize.sensitivity``) only orders the layers.
The plain recipe is trial 0 (the export already measured it); when it misses, the number
k of changed layers (the k most sensitive) is doubled (1, 2, 4, ...) until a trial meets
the budget and then bisected, within ``max_trials`` trials. Where the target supports
16-bit activations, each k of the doubling is tried first with those layers at 16-bit
(int8 weights: about int8's size) and, only when that misses, with them in float, until
float does at least as well as 16-bit at some k (then float only: on EfficientNet-Lite0
16-bit trials never beat float and would spend half the trials); the bisection stays in
the mode that met the budget. Elsewhere only float is tried. The passing trial with the smallest artifact wins
(tie: fewer float, then fewer 16-bit layers); its recipe is written as YAML beside its
artifact for reuse."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import BadInput
from edgeq.progress import QUIET

DEFAULT_MAX_TRIALS = 8
SENSITIVITY_SAMPLES = 64


@dataclass(frozen=True)
class SearchOptions:
    """``budget``: the largest accepted drop, in the accuracy metric's own unit (points of
    top-1 with labels, else of top-1 agreement with fp32). ``max_trials`` counts the plain
    recipe. ``sensitivity_samples``: eval samples used to rank the layers. ``int16``: try
    layers at 16-bit activations after the float search, where the target supports it."""

    budget: float
    max_trials: int = DEFAULT_MAX_TRIALS
    sensitivity_samples: int = SENSITIVITY_SAMPLES
    int16: bool = True


def check_options(budget: float, max_trials: int, data: str | None, qat_data: str | None,
                  recipe, int16: bool = True) -> SearchOptions:
    """Refuse unusable search flags before any work is done."""
    if data is None:
        raise BadInput("--max-accuracy-drop measures accuracy on the artifacts: pass "
                       "--data EVAL")
    if budget != budget or budget < 0:
        raise BadInput(f"--max-accuracy-drop {budget}: give a drop of 0 or more (points of the "
                       "metric, e.g. 1.0 for one point of top-1)")
    if max_trials < 1:
        raise BadInput(f"--max-trials {max_trials}: give at least 1")
    if qat_data is not None:
        raise BadInput("--max-accuracy-drop searches PTQ recipes; it cannot be combined with "
                       "--qat-data yet")
    if not recipe.quantized:
        raise BadInput(f"--max-accuracy-drop: recipe '{recipe.name}' quantizes nothing; use a "
                       "quantized recipe such as int8")
    return SearchOptions(float(budget), int(max_trials), int16=bool(int16))


def _recipe_of(manifest: dict):
    """The exact recipe an artifact was built with, from its manifest."""
    import dataclasses

    from edgeq.recipes import Recipe

    fields = {f.name for f in dataclasses.fields(Recipe)}
    d = {k: v for k, v in manifest["recipe"].items() if k in fields}
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return Recipe(**d)


def search_report(report: dict, model, recipe_name: str, target_names: list[str], opts,
                  data_source: str, sopts: SearchOptions, progress=QUIET,
                  rankings: dict | None = None) -> list[str]:
    """Run the search for every successfully exported and evaluated cell of
    ``recipe_name`` on ``target_names`` in ``report`` (from ``flow.export_matrix`` and
    ``flow.evaluate_report``); saves the report. Returns one line per cell whose budget no
    configuration met (empty: every budget met). ``rankings`` caches sensitivity rankings
    (by simulated target) across calls."""
    from edgeq.flow import REPORT_NAME, _load_data, _targets
    from edgeq.report.schema import save_report

    names = {t.name for t in _targets(target_names)}
    cells = [c for c in report["results"] if c.get("target") in names and
             c.get("recipe") == recipe_name and c.get("artifact") and not c.get("error")]
    calib = _load_data(opts.calib, model, opts)
    eval_ds = _load_data(data_source, model, opts)
    missed = []
    rankings = {} if rankings is None else rankings
    for cell in cells:
        line = search_cell(report, cell, model, calib, eval_ds, opts, sopts, rankings, progress)
        if line:
            missed.append(line)
    save_report(Path(opts.out_dir) / REPORT_NAME, report)
    return missed


def search_cell(report, cell, model, calib, eval_ds, opts, sopts: SearchOptions,
                rankings: dict, progress=QUIET) -> str | None:
    """Search one cell; the chosen (or best) configuration's cell in ``report`` gets the
    ``search`` block. Returns None when the budget is met, else the one-line reason."""
    from edgeq.artifacts import read_manifest
    from edgeq.cli.output import fmt_bytes, say
    from edgeq.stages import supports_int16
    from edgeq.targets import get_target

    artifact = Path(cell["artifact"]["path"])
    manifest = read_manifest(artifact) or {}
    target = get_target(cell["target"])
    recipe = _recipe_of(manifest)
    acc = cell.get("accuracy") or {}
    ok16, why16 = supports_int16(target)
    use16 = sopts.int16 and ok16
    block = {"budget": sopts.budget, "metric": acc.get("metric"), "max_trials": sopts.max_trials,
             "met": False, "trials": [], "chosen_keep_float": None,
             "chosen_int16_layers": None, "recipe_file": None,
             "int16": "tried after float" if use16 else
             f"not supported by {target.name}" + (f": {why16}" if why16 else "") if not ok16
             else "off (--no-try-int16)"}
    if acc.get("drop") is None:
        reason = cell.get("accuracy_reason") or acc.get("value_reason") or \
            "the accuracy drop of the plain recipe could not be measured"
        cell["search"] = dict(block, reason=reason)
        return f"{target.name}: accuracy budget not searched: {reason}"
    metric, unit = acc["metric"], " points" if acc["metric"] in ("top1", "agreement") else ""
    out_dir = Path(opts.out_dir)
    trial_dir = out_dir / f".search-{target.name}"
    tried: dict = {}  # _key(k, mode) -> trial

    def record(k: int, mode: str, drop, size, path, error=None) -> dict:
        t = {"trial": len(tried), "float_layers": k if mode == "float" else 0,
             "int16_layers": k if mode == "int16" else 0,
             "keep_float": list(_variant(recipe, order[:k], mode).keep_float),
             "int16": list(_variant(recipe, order[:k], mode).int16_layers),
             "drop": drop, "size_bytes": size,
             "passed": drop is not None and drop <= sopts.budget + 1e-9,
             "artifact": None if path is None else Path(path).name}
        if error:
            t["error"] = error
        tried[_key(k, mode)] = t
        verdict = "error: " + error if error else ("meets the budget" if t["passed"]
                                                   else "over the budget")
        say(f"edgeq: search {target.name}: trial {t['trial'] + 1}/{sopts.max_trials}: "
            f"{_what(k, mode)}: {metric} drop "
            f"{'-' if drop is None else f'{drop:.2f}'}{unit} (budget {sopts.budget:g}), "
            f"{fmt_bytes(size)}: {verdict}")
        return t

    order: list[str] = []
    record(0, "float", acc["drop"], cell["artifact"]["size_bytes"], artifact)
    results: dict = {}  # _key(k, mode) -> (manifest, accuracy) of exported trials
    try:
        if not tried[0]["passed"] and sopts.max_trials > 1:
            ranking = _ranking(model, target, recipe, calib, eval_ds, sopts, rankings, progress)
            order[:] = [r["name"] for r in ranking["layers"]]
            block["ranking"] = {"simulated_with": ranking["simulated_with"],
                                "samples": ranking["samples"], "seconds": ranking["seconds"],
                                "layers": list(order)}
            for k, mode in _schedule(len(order), sopts.max_trials, tried, use16):
                try:
                    m, a = _trial(model, target, _variant(recipe, order[:k], mode), calib,
                                  eval_ds, metric, trial_dir, opts, progress)
                    results[_key(k, mode)] = (m, a)
                    record(k, mode, a["drop"], m["artifact"]["size_bytes"],
                           m["artifact"]["path"])
                except BadInput as e:  # a configuration the runtime refuses: try others
                    record(k, mode, None, None, None, str(e))
        passing = [t for t in tried.values() if t["passed"]]
        block["trials"] = sorted(tried.values(), key=lambda t: t["trial"])
        if passing:
            best = min(passing, key=lambda t: (t["size_bytes"], t["float_layers"],
                                               t["int16_layers"]))
        else:
            measured = [t for t in tried.values() if t["drop"] is not None]
            best = min(measured, key=lambda t: (t["drop"], t["size_bytes"], t["float_layers"],
                                                t["int16_layers"]))
        mode = "int16" if best["int16_layers"] else "float"
        k = best["int16_layers"] or best["float_layers"]
        chosen = recipe if k == 0 else _variant(recipe, order[:k], mode)
        if k == 0:
            target_cell, path = cell, artifact
        else:
            path = _keep(Path(results[_key(k, mode)][0]["artifact"]["path"]), out_dir)
            target_cell = _add_cell(report, path, results[_key(k, mode)][1], eval_ds)
    finally:
        shutil.rmtree(trial_dir, ignore_errors=True)
    for t in block["trials"]:
        if t is not best and t["trial"] != 0:
            t["artifact"] = None  # measured, then deleted: only the chosen one is kept
    from edgeq.recipes import save_recipe

    recipe_file = path.with_name(path.name[:-len(path.suffix)] + ".recipe.yaml")
    save_recipe(chosen, recipe_file)
    block.update(met=bool(passing), chosen_keep_float=list(chosen.keep_float),
                 chosen_int16_layers=list(chosen.int16_layers),
                 chosen_recipe=chosen.name, chosen_drop=best["drop"],
                 recipe_file=str(recipe_file.resolve()),
                 choice="the passing trial with the smallest artifact (tie: fewer float, then "
                        "fewer 16-bit layers); latency is not measured during the search")
    n_layers = len(order) if order else None
    if passing:
        say(f"edgeq: search {target.name}: chosen {chosen.name} ({_what(k, mode)}): "
            f"{metric} drop {best['drop']:.2f}{unit} <= {sopts.budget:g}; recipe "
            f"written to {recipe_file}")
        target_cell["search"] = block
        return None
    if n_layers and n_layers in tried:
        why = f"even with all {n_layers} quantizable layers in float"
    elif n_layers and _key(n_layers, "int16") in tried:
        why = f"even with all {n_layers} quantizable layers at 16-bit"
    elif len(tried) >= sopts.max_trials:
        why = f"within --max-trials {sopts.max_trials}"
    else:
        why = "in the configurations tried"
    line = (f"{target.name}: no configuration meets --max-accuracy-drop {sopts.budget:g} "
            f"{why}; best found: {chosen.name} with {_what(k, mode)}, {metric} drop "
            f"{best['drop']:.2f}{unit} (recipe {recipe_file})")
    block["reason"] = line
    target_cell["search"] = block
    return line


def _key(k: int, mode: str):
    """Key of a trial: k for k layers in float (0: the plain recipe), (k, "int16") for k
    layers at 16-bit."""
    return k if mode == "float" else (k, mode)


def _what(k: int, mode: str) -> str:
    return f"{k} layer(s) " + ("at 16-bit" if mode == "int16" else "in float")


def _variant(recipe, layers: list[str], mode: str):
    """``recipe`` with ``layers`` also in float, or also at 16-bit activations."""
    if not layers:
        return recipe
    if mode == "int16":
        return recipe.with_(name=f"{recipe.name}-int16x{len(layers)}",
                            int16_layers=tuple(recipe.int16_layers) + tuple(layers))
    return recipe.with_(name=f"{recipe.name}-float{len(layers)}",
                        keep_float=tuple(recipe.keep_float) + tuple(layers))


def _schedule(n: int, max_trials: int, tried: dict, int16: bool = False):
    """(k, mode) pairs to try after the plain recipe (``tried[0]``) failed: float first, k
    doubling until a pass, then bisection, exactly as without 16-bit, so trying 16-bit
    never costs the float search its result. With ``int16``, the trials left then go to
    16-bit: at the smallest passing float k (16-bit keeps those layers' int8 weights, so a
    passing 16-bit configuration is about int8's size, smaller than any float one), then
    bisecting down while 16-bit passes. (Measured on EfficientNet-Lite0, onnx-cpu, budget
    3.9 points, 6 trials: 16-bit first spent two trials on 16-bit that missed (9.4, 6.25
    points against float's 4.7 at k = 2) and missed the budget that float alone meets
    at k = 6.) The generator reads ``tried`` (``_key(k, mode)`` -> trial) as the caller
    fills it in."""
    lo, hi = 0, None

    def passed(k, mode) -> bool:
        return bool(tried.get(_key(k, mode), {}).get("passed"))

    while len(tried) < max_trials and n > 0:
        if hi is None:
            k = 1 if lo == 0 else min(n, 2 * lo)
            if k == lo:  # all layers changed already failed
                return
        else:
            if hi - lo <= 1:
                break
            k = (lo + hi) // 2
        yield k, "float"
        if passed(k, "float"):
            hi = k
        else:
            lo = k
    if not int16 or hi is None:
        return
    lo16, hi16 = 0, None
    k = hi
    while len(tried) < max_trials:
        yield k, "int16"
        if passed(k, "int16"):
            hi16 = k
        elif hi16 is None:
            return  # 16-bit misses where float passes: fewer 16-bit layers will too
        else:
            lo16 = k
        if hi16 - lo16 <= 1:
            return
        k = (lo16 + hi16) // 2


def _ranking(model, target, recipe, calib, eval_ds, sopts, cache: dict, progress) -> dict:
    """Layers ordered most sensitive first (simulated; shared by targets simulated alike)."""
    from edgeq import data as data_mod
    from edgeq.quantize.sensitivity import analyze, simulation_quantizer

    from edgeq.quantize.pt2e import resolve_keep_float

    _, sim = simulation_quantizer(target, recipe,
                                  resolve_keep_float(model.module, recipe.keep_float))
    if sim not in cache:
        calib_sel = data_mod.select(calib, recipe.calib_samples)
        ev = data_mod.select(eval_ds, sopts.sensitivity_samples)
        cache[sim] = analyze(model, target, recipe, calib_sel, ev, progress)
    return cache[sim]


def _trial(model, target, recipe, calib, eval_ds, metric, trial_dir: Path, opts, progress):
    """Export and evaluate one candidate ``recipe``: (manifest, accuracy)."""
    from edgeq.stages import ExportOptions, evaluate, export

    manifest = export(model, target, recipe, calib, None,
                      ExportOptions(trial_dir, True, opts.calib_samples), progress)
    acc = evaluate(Path(manifest["artifact"]["path"]), eval_ds, model, metric, progress)
    return manifest, acc


def _keep(artifact: Path, out_dir: Path) -> Path:
    """Move the chosen trial's artifact, its manifest and its sibling formats to ``out_dir``."""
    import os

    dest = out_dir / artifact.name
    stem = artifact.name[:-len(artifact.suffix)]
    for p in artifact.parent.iterdir():
        if p.name.startswith(stem + "."):
            os.replace(p, out_dir / p.name)
    return dest


def _add_cell(report: dict, path: Path, accuracy: dict, eval_ds) -> dict:
    from edgeq.report.schema import result_from_manifest, upsert_result
    from edgeq.stages import artifact_info

    manifest, _ = artifact_info(path)
    cell = result_from_manifest(manifest, str(path.resolve()))
    cell["accuracy"] = dict(accuracy, data=eval_ds.source)
    return upsert_result(report, cell)
