"""The flow over several cells: one model, several recipes and targets, one report.
Used by ``edgeq export`` and ``edgeq demo`` (and later by ``edgeq run``). A cell that fails
is recorded with its one-line reason and does not stop the others."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import BadInput, CannotRunHere, EdgeqError
from edgeq.progress import QUIET
from edgeq.report.schema import load_report, new_report, save_report, upsert_result

REPORT_NAME = "report.json"


@dataclass
class FlowOptions:
    """Everything ``export`` needs beyond model, targets and recipes."""

    out_dir: Path
    calib: str | None = None
    calib_samples: int | None = None
    observer: str | None = None
    keep_float: tuple[str, ...] = ()
    qat_data: str | None = None
    qat_epochs: int = 3
    lr: float = 1e-3
    qat_loss: str = "auto"
    input_shape: str | None = None
    trust_pickle: bool = False
    force: bool = False
    image_opts: object = None
    metric: str | None = None  # accuracy headline; None: the model's, else top1 / agreement


def _targets(names: list[str]):
    from edgeq.targets import all_targets, get_target

    if "all" in names:
        return list(all_targets().values())
    return [get_target(n) for n in dict.fromkeys(names)]


def _load_data(source: str, model, opts):
    from edgeq import data as data_mod
    from edgeq.models import output_size

    ds = data_mod.load_dataset(source, model.input_names, opts.image_opts)
    data_mod.check_against_model(ds, model.input_names, model.input_shapes, output_size(model))
    return ds


def open_report(out_dir: Path, model, force: bool = False) -> dict:
    """The report in ``out_dir`` when it is about the same model; a new one when there is
    none (or with ``force``). Another model's report is not silently replaced."""
    path = Path(out_dir) / REPORT_NAME
    existing = load_report(path, must_exist=False)
    if existing and (existing.get("model") or {}).get("sha256") == model.sha256:
        return existing
    if existing and not force:
        other = (existing.get("model") or {}).get("spec", "another model")
        raise BadInput(f"'{path}' is the report of model '{other}'; pass --force to replace "
                       "it or choose another -o")
    return new_report(model.summary())


def export_matrix(model_spec: str, target_names: list[str], recipe_specs: list[str],
                  opts: FlowOptions, progress=QUIET, qat_recipes: list[str] | None = None):
    """Export every (recipe, target) cell. With ``qat_recipes`` None, quantized recipes
    are QAT when ``opts.qat_data`` is set and PTQ otherwise; with a list, every quantized
    recipe is PTQ and those named are exported with QAT too. Returns (model, report, exit code: 0 or the worst
    failure's)."""
    from edgeq.models import load_model
    from edgeq.quantize.pt2e import QatConfig
    from edgeq.recipes import load_recipe
    from edgeq.report.schema import result_from_manifest
    from edgeq.stages import ExportOptions, export

    targets = _targets(target_names)
    recipes = [load_recipe(r) for r in recipe_specs]
    if opts.observer:
        from edgeq.recipes import observer_fields

        obs = observer_fields(opts.observer, "--observer")
        recipes = [r.with_(**obs) if r.quantized else r for r in recipes]
    if opts.keep_float:
        recipes = [r.with_(keep_float=tuple(opts.keep_float)) if r.quantized else r
                   for r in recipes]
    model = load_model(model_spec, opts.input_shape, opts.trust_pickle)
    calib = _load_data(opts.calib, model, opts) if opts.calib else None
    qat = None
    if opts.qat_data:
        if opts.qat_epochs < 1 or opts.lr <= 0:
            raise BadInput("--qat-epochs must be at least 1 and --lr positive")
        qat = QatConfig(_load_data(opts.qat_data, model, opts),
                        epochs=opts.qat_epochs, lr=opts.lr, loss=opts.qat_loss)
    cells = []
    for r in recipes:
        if not r.quantized:
            cells.append((r, None))
            continue
        if qat_recipes is None:
            cells.append((r, qat))
        else:  # PTQ for every quantized recipe, plus QAT for those named
            cells.append((r, None))
            if qat and r.name in qat_recipes:
                cells.append((r, qat))
    if any(r.needs_calibration and q is None for r, q in cells) and calib is None and qat is None:
        raise BadInput("quantized recipes need calibration data: pass --calib DATA "
                       "(or --qat-data DATA for QAT)")
    report = open_report(opts.out_dir, model, opts.force)
    eopts = ExportOptions(Path(opts.out_dir), opts.force, opts.calib_samples)
    worst = 0
    for recipe, q in cells:
        for target in targets:
            try:
                manifest = export(model, target, recipe, calib, q, eopts, progress)
                upsert_result(report, result_from_manifest(manifest,
                                                           manifest["artifact"]["path"]))
            except EdgeqError as e:
                if len(cells) * len(targets) == 1:
                    raise
                worst = max(worst, e.exit_code)
                report["results"].append({"target": target.name,
                                          "recipe": recipe.name + ("-qat" if q else ""),
                                          "artifact": None, "error": str(e)})
    save_report(Path(opts.out_dir) / REPORT_NAME, report)
    return model, report, worst


def evaluate_report(report: dict, data_source: str, model, opts: FlowOptions,
                    out_dir: Path, progress=QUIET) -> dict:
    """Evaluate every artifact in the report on ``data_source``, against ``model``."""
    from edgeq.stages import evaluate

    ds = _load_data(data_source, model, opts)
    for cell in report["results"]:
        if cell.get("artifact") and not cell.get("error"):
            try:
                cell["accuracy"] = evaluate(Path(cell["artifact"]["path"]), ds, model, opts.metric,
                                            progress)
            except CannotRunHere as e:  # exported fine; it runs on a device only
                cell["accuracy"], cell["accuracy_reason"] = None, str(e)
                continue
            cell["accuracy"]["data"] = ds.source
    save_report(Path(out_dir) / REPORT_NAME, report)
    return report


def profile_inputs(model, data_source: str | None, opts: FlowOptions) -> list:
    """One real sample to time with (some kernels take data-dependent paths), else the
    model's example inputs."""
    import numpy as np

    if data_source:
        return _load_data(data_source, model, opts).sample(0)
    return [np.asarray(t) for t in model.example_inputs]


def profile_report(report: dict, inputs, runs: int, warmup: int, threads: int,
                   out_dir: Path, progress=QUIET) -> dict:
    """Profile every artifact in the report on this machine with ``inputs``."""
    from edgeq.stages import profile_local

    for cell in report["results"]:
        if cell.get("artifact") and not cell.get("error"):
            try:
                cell["profile"] = profile_local(Path(cell["artifact"]["path"]), inputs, runs,
                                                warmup, threads, progress)
            except CannotRunHere as e:  # exported fine; it runs on a device only
                cell["profile"], cell["profile_reason"] = None, str(e)
    save_report(Path(out_dir) / REPORT_NAME, report)
    return report
