"""The stages of the flow as plain functions: export, evaluate, profile. The CLI and the
demo call these; each takes paths and plain options and returns dicts for report.json."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeq.artifacts import prepare_output_dir, read_manifest, write_manifest
from edgeq.errors import BadInput
from edgeq.progress import QUIET


@dataclass
class ExportOptions:
    """``calib_samples`` overrides the recipe's count when set; ``qat`` switches the static
    recipe from calibrated PTQ to QAT."""

    out_dir: Path
    force: bool = False
    calib_samples: int | None = None
    seed: int = 0


def model_stem(spec: str) -> str:
    base = spec.rpartition(":")[2] if ":" in spec else Path(spec).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base) or "model"


def artifact_name(model, recipe, target, qat: bool) -> str:
    tag = recipe.name + ("-qat" if qat else "")
    return f"{model_stem(model.spec)}.{tag}.{target.name}.{target.format}"


def supports_int16(target) -> tuple[bool, str]:
    """(can ``target``'s runtime build ``Recipe.int16_layers``, why not in a few words)."""
    from edgeq.runtimes import get_runtime

    runtime = get_runtime(target.runtime)
    return (bool(getattr(runtime, "supports_int16_activations", False)),
            str(getattr(runtime, "int16_unsupported", "")))


def check_int16(recipe, target) -> None:
    """BadInput naming the target when the recipe asks for 16-bit activations it lacks."""
    if not recipe.int16_layers:
        return
    ok, why = supports_int16(target)
    if not ok:
        raise BadInput(f"recipe '{recipe.name}': int16_layers (16-bit activations) is not "
                       f"supported by target '{target.name}'" + (f" ({why})" if why else "")
                       + "; keep those layers in float instead (keep_float / --keep-float)")


def check_dynamic_ops(recipe, target) -> None:
    """BadInput naming the target when the recipe lists ``dynamic_ops`` its runtime cannot
    run (``auto`` takes only what the runtime can)."""
    from edgeq.runtimes import get_runtime

    asked = recipe.dynamic_ops
    if asked in ("auto", None) or not asked or recipe.method != "static":
        return
    can = tuple(getattr(get_runtime(target.runtime), "dynamic_ops_supported", ()))
    missing = [k for k in asked if k not in can]
    if missing:
        raise BadInput(f"recipe '{recipe.name}': dynamic_ops {missing} is not available on "
                       f"target '{target.name}'" + (f" (it runs {list(can)})" if can else "")
                       + "; use dynamic_ops: auto or [] (float)")


def export(model, target, recipe, calib, qat, opts: ExportOptions, progress=QUIET) -> dict:
    """Quantize and lower ``model`` for ``target``; write the artifact and its manifest.
    ``calib`` is the full calibration Dataset (selection happens here). Returns the
    manifest, with ``artifact.path`` absolute."""
    from edgeq import data as data_mod
    from edgeq.artifacts import manifest_path
    from edgeq.runtimes import get_runtime
    from edgeq.runtimes.base import BuildRequest

    check_int16(recipe, target)
    check_dynamic_ops(recipe, target)
    name = artifact_name(model, recipe, target, qat is not None)
    out = Path(opts.out_dir) / name
    also = [out.with_suffix("." + f) for f in target.also]
    prepare_output_dir(Path(opts.out_dir), [name, manifest_path(out).name,
                                            *(p.name for p in also)], opts.force)
    selected, extra = None, {}
    # Dynamic / weight-only recipes need data only for a data-driven weight rounding.
    if recipe.quantized and qat is None and (recipe.needs_calibration or (
            calib is not None and (recipe.weight_rounding != "nearest"
                                   or recipe.smoothquant is not None))):
        if calib is None:
            raise BadInput(f"recipe '{recipe.name}' quantizes activations and needs "
                           "calibration data: pass --calib DATA (or --qat-data for QAT)")
        n = opts.calib_samples or recipe.calib_samples
        selected = data_mod.select(calib, n, opts.seed)
        extra["calibration"] = {"source": calib.source, "samples": len(selected),
                                "of": len(calib), "stratified": calib.labels is not None,
                                "seed": opts.seed}
        if len(selected) < 32:
            warning = (f"only {len(selected)} calibration samples: activation ranges "
                             "may not be representative (128-512 recommended)")
            extra["calibration"]["warning"] = warning
    if qat is not None:
        extra["qat"] = {"source": qat.data.source, "samples": len(qat.data),
                        "epochs": qat.epochs, "lr": qat.lr,
                        "loss": qat.loss if qat.loss != "auto" else
                        ("ce" if qat.data.labels is not None else "kd")}
    runtime = get_runtime(target.runtime)
    if qat is None:  # the recipe's float-model passes (equalize, rounding, bias correction)
        from edgeq.quantize import passes

        grid_of = getattr(runtime, "weight_grid", None)  # the runtime's own int4 / int8 grid
        model, facts = passes.apply(recipe, model, selected, progress,
                                    grid_of(recipe) if grid_of else None, runtime)
        if facts:
            extra["passes"] = facts
    delegation = runtime.build(BuildRequest(model, recipe, target, selected, qat, out, progress))
    if getattr(delegation, "costs", None):
        extra["costs"] = delegation.costs  # what `edgeq profile --estimate` works from
    from edgeq.artifacts import sha256_file

    extra["also"] = [{"path": p.name, "format": p.suffix[1:], "size_bytes": p.stat().st_size,
                      "sha256": sha256_file(p)} for p in also if p.is_file()]
    recipe_d = recipe.to_dict()
    if qat is not None:
        recipe_d["name"] = recipe.name + "-qat"
        recipe_d["method"] = "qat"
    manifest = write_manifest(
        out, target={"name": target.name, "runtime": target.runtime, "format": target.format,
                     "delegate": target.delegate},
        recipe=recipe_d, model=model.summary(), delegation=delegation.to_dict(),
        versions=runtime.versions(), extra=extra)
    manifest["artifact"]["path"] = str(out.resolve())
    return manifest


def artifact_info(path: Path) -> tuple[dict, object]:
    """(manifest or a minimal stand-in, target) for an artifact file."""
    from edgeq.artifacts import sha256_file
    from edgeq.targets import get_target, target_for_file

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"artifact '{path}' not found")
    manifest = read_manifest(path)
    if manifest:
        target = get_target(manifest["target"]["name"])
        if manifest["artifact"]["sha256"] != sha256_file(path):
            manifest = dict(manifest, stale_manifest=True)
    else:
        target = target_for_file(path.suffix)
        if target is None:
            raise BadInput(f"artifact '{path}': unknown kind of file '{path.suffix}'")
        manifest = {"target": {"name": target.name}, "recipe": {"name": "unknown"},
                    "delegation": None, "model": None}
    manifest = dict(manifest, artifact={"path": str(path.resolve()), "size_bytes": path.stat().st_size,
                                        "sha256": sha256_file(path)})
    return manifest, target


def evaluate(artifact: Path, ds, reference=None, metric: str | None = None,
             progress=QUIET) -> dict:
    """Run the artifact in its own runtime over ``ds``; the report's accuracy block.
    ``metric`` None: the one the reference model declares (``LoadedModel.metric``), else
    ``accuracy_block``'s default."""
    from edgeq import data as data_mod
    from edgeq.evaluate import accuracy_block, run_artifact, run_reference
    from edgeq.runtimes import get_runtime

    _, target = artifact_info(artifact)
    session = get_runtime(target.runtime).open(Path(artifact))
    ref = None
    if reference is not None:
        data_mod.check_against_model(ds, reference.input_names, reference.input_shapes)
        ref = run_reference(reference, ds)
        data_mod.check_against_model(ds, reference.input_names, reference.input_shapes,
                                     ref.reshape(len(ref), -1).shape[1])
    outs = run_artifact(session, ds, progress, f"evaluating {Path(artifact).name}")
    if ds.labels is not None and ref is None:
        data_mod.check_against_model(ds, list(ds.inputs), [a.shape for a in ds.inputs.values()],
                                     outs.reshape(len(outs), -1).shape[1])
    if metric is None and reference is not None:
        metric = reference.metric
    block = accuracy_block(outs, ds.labels, ref, metric)
    notes = list(getattr(session, "notes", []) or [])
    if notes:  # e.g. "ran on the CPU provider: this host has no NNAPI"
        block["notes"] = notes
    return block


def profile_local(artifact: Path, inputs, runs: int, warmup: int, threads: int,
                  progress=QUIET) -> dict:
    """Measure latency and peak memory on this machine: the report's profile block."""
    from edgeq.profiling.stats import NOISY_CV, latency_summary
    from edgeq.runtimes import get_runtime

    if runs < 1 or warmup < 0 or threads < 1:
        raise BadInput("--runs and --threads must be at least 1, --warmup at least 0")
    _, target = artifact_info(artifact)
    with progress.task(f"profiling {Path(artifact).name} ({warmup} warm-up + {runs} runs)"):
        bench = get_runtime(target.runtime).benchmark(Path(artifact), inputs, runs, warmup,
                                                      threads)
    lat = latency_summary(bench.times_ms)
    notes = list(bench.notes)
    if lat["cv"] is not None and lat["cv"] > NOISY_CV:
        notes.append(f"noisy run: coefficient of variation {lat['cv']:.0%} > {NOISY_CV:.0%}; "
                     "close other work or raise --runs before trusting it")
    return {"device": "local", "profile": "host", "mode": "measured", "runner": bench.runner,
            "threads": threads, "threads_applied": bench.threads_applied,
            "latency_ms": lat, "peak_memory_bytes": bench.peak_rss_bytes,
            **({} if bench.peak_rss_bytes else
               {"peak_memory_bytes_reason": "VmHWM of the runner process was not readable"}),
            "energy_mj_per_inference": None,
            "energy_mj_per_inference_reason": "no energy sensor is read on the local host yet",
            "thermal": None, "thermal_reason": "no --sustained run was asked for",
            "notes": notes}


def profile_estimate(artifact: Path, profile: str, threads: int = 1,
                     sustained_s: float | None = None) -> dict:
    """Estimate latency, energy and memory (and a thermal trace for ``sustained_s``) of
    the artifact on a device profile, from the cost summary in its manifest: the
    report's profile block, marked "mode": "estimated"."""
    from edgeq.devices.profiles import load_profile
    from edgeq.profiling.estimate import estimate

    manifest, _ = artifact_info(artifact)
    prof = load_profile(profile)
    costs = manifest.get("costs")
    if not costs:
        raise BadInput(f"artifact '{artifact}' has no cost summary in its manifest (its "
                       "runtime does not record one yet, or an older edgeq exported it): "
                       "re-export it with edgeq to use --estimate")
    return estimate(costs, prof, threads, sustained_s)
