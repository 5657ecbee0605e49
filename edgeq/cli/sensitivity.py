"""edgeq sensitivity: which layers quantization hurts, ranked."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import (calib_option, calib_samples_option, force_option, image_options,
                               input_shape_option, json_option, metric_option,
                               trust_pickle_option)

DEFAULT_SAMPLES = 128


@click.command()
@click.argument("model")
@calib_option(required=True)
@click.option("--data", required=True, metavar="EVAL",
              help="Evaluation data: outputs are compared with the fp32 model's on it.")
@click.option("--target", "-t", default="executorch-xnnpack", show_default=True,
              help="Target whose quantizer is simulated.")
@click.option("--recipe", "-r", default="int8", show_default=True,
              help="Quantized preset or recipe YAML (its keep_float layers stay float).")
@click.option("--keep-float", multiple=True, metavar="PATTERN",
              help="Module names (fnmatch pattern) kept in fp32 throughout; repeatable.")
@click.option("--samples", default=DEFAULT_SAMPLES, show_default=True, metavar="N",
              help="Evaluation samples used (chosen deterministically, stratified by label).")
@calib_samples_option
@metric_option
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path),
              help="Folder whose report.json gets the 'sensitivity' block (created if needed).")
@input_shape_option
@trust_pickle_option
@force_option
@image_options
@json_option
def sensitivity(model, calib, data, target, recipe, keep_float, samples, calib_samples, metric,
                out_dir, input_shape, trust_pickle, force, resize, crop, mean, std, grayscale,
                as_json):
    """Per-layer quantization sensitivity of MODEL, ranked most sensitive first.

    \b
    For each quantizable layer (conv, linear): the output SQNR (dB) and metric drop when
    ONLY that layer is quantized, and what keeping ONLY that layer in float recovers
    (dB, metric points). Simulated in PyTorch with the target's PT2E quantizer (fake
    quantization, calibrated once), so it takes seconds to minutes, not an export per
    layer. Use the top rows with `export --keep-float`, or let
    `export --max-accuracy-drop X` search for you.
    Example:
      edgeq sensitivity digits-cnn --calib digits:train --data digits:eval -o out/
    """
    from edgeq import data as data_mod
    from edgeq.cli.options import build_image_options
    from edgeq.cli.output import emit_json, say
    from edgeq.errors import BadInput
    from edgeq.flow import FlowOptions, _load_data
    from edgeq.models import load_model
    from edgeq.progress import Progress
    from edgeq.quantize.sensitivity import analyze
    from edgeq.recipes import load_recipe
    from edgeq.targets import get_target

    if samples < 1:
        raise BadInput("--samples must be at least 1")
    if calib_samples is not None and calib_samples < 1:
        raise BadInput("--calib-samples must be at least 1")
    tgt = get_target(target)
    rec = load_recipe(recipe)
    if keep_float:
        rec = rec.with_(keep_float=tuple(rec.keep_float) + tuple(keep_float))
    opts = FlowOptions(out_dir or Path("."), calib, input_shape=input_shape,
                       trust_pickle=trust_pickle, force=force,
                       image_opts=build_image_options(resize, crop, mean, std, grayscale))
    loaded = load_model(model, input_shape, trust_pickle)
    report = None
    if out_dir is not None:  # another model's report there fails now, not after the work
        from edgeq.flow import open_report

        _check_out(out_dir)
        report = open_report(out_dir, loaded, force)
    if rec.quantized:
        from edgeq.quantize.pt2e import resolve_keep_float

        if loaded.module is not None:
            resolve_keep_float(loaded.module, rec.keep_float)  # a typo fails before work
    cal = data_mod.select(_load_data(calib, loaded, opts), calib_samples or rec.calib_samples)
    ev = data_mod.select(_load_data(data, loaded, opts), samples)
    progress = Progress()
    block = analyze(loaded, tgt, rec, cal, ev, progress, metric)
    block["data"], block["calib"] = ev.source, cal.source
    path = None
    if report is not None:
        path = write_block(out_dir, report, block)
    if as_json:
        emit_json(block)
    print_sensitivity(block)
    if path:
        say(f"  written to {path}")


def _check_out(out_dir: Path) -> None:
    import os

    from edgeq.errors import BadInput

    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(f"-o '{out_dir}' exists and is not a directory")
    parent = out_dir if out_dir.exists() else out_dir.parent
    if parent.exists() and not os.access(parent, os.W_OK):
        raise BadInput(f"-o '{out_dir}' is not writable")


def write_block(out_dir: Path, report: dict, block: dict) -> Path:
    """Put ``block`` as ``report["sensitivity"]`` in ``out_dir``/report.json."""
    from edgeq.flow import REPORT_NAME
    from edgeq.report.schema import save_report

    out_dir.mkdir(parents=True, exist_ok=True)
    report["sensitivity"] = block
    save_report(out_dir / REPORT_NAME, report)
    return out_dir / REPORT_NAME


def print_sensitivity(block: dict, limit: int = 40) -> None:
    from rich.table import Table

    from edgeq.cli.output import fmt, print_table, say

    m = block["metric"]
    t = Table(title=f"sensitivity on {block['target']} ({block['samples']} samples, {m}; "
                    f"simulated with {block['simulated_with']})", title_justify="left")
    for col in ("rank", "layer", "op", "params", "only it int8: SQNR dB", f"{m} drop",
                "float recovers dB", f"{m} points", "score"):
        t.add_column(col, justify="left" if col in ("layer", "op") else "right")
    for r in block["layers"][:limit]:
        t.add_row(str(r["rank"]), r["name"], r["op"], str(r["params"]), fmt(r["sqnr_db"]),
                  fmt(r["metric_drop"]), fmt(r["float_recovery_db"]),
                  fmt(r["float_recovery_points"]), fmt(r["score"], 3))
    print_table(t)
    if len(block["layers"]) > limit:
        say(f"  ... {len(block['layers']) - limit} more layers in --json / report.json")
    full = block["all_int8"]
    say(f"  everything int8: SQNR {fmt(full['sqnr_db'])} dB, {m} drop "
        f"{fmt(full['metric_drop'])}")
