"""edgeq calib-check: is the calibration set representative of the evaluation data?"""
from __future__ import annotations

import click

from edgeq.cli.options import (calib_option, calib_samples_option, image_options,
                               input_shape_option, json_option, observer_option,
                               trust_pickle_option)


@click.command("calib-check")
@click.argument("model")
@calib_option(required=True)
@click.option("--data", required=True, metavar="EVAL",
              help="Evaluation data, or any data the deployed model will see.")
@click.option("--recipe", "-r", default="int8", show_default=True,
              help="Recipe whose observer, bins and calib_samples are checked.")
@observer_option
@calib_samples_option
@click.option("--strict", is_flag=True, help="Exit 1 when there is any warning.")
@input_shape_option
@trust_pickle_option
@image_options
@json_option
def calib_check(model, calib, data, recipe, observer, calib_samples, strict, input_shape,
                trust_pickle, resize, crop, mean, std, grayscale, as_json):
    """Compare the activation ranges MODEL shows on --calib with those on --data.

    \b
    Runs the fp32 PyTorch model over the calibration samples (as many as export would
    use) and then the evaluation samples, and reports per layer (leaf modules and
    inputs) the share of evaluation activations outside the calibration min / max
    (what static quantization would clip), and outside the range the recipe's
    observer picks (percentile and entropy clip by design). Warns when calibration is
    small (< 100 samples, < 2 per class), misses classes the evaluation data has, or
    lets a layer clip more than 1 %. Warnings exit 0 unless --strict (exit 1).
    Example:
      edgeq calib-check model.py:build --calib calib.npz --data eval.npz --observer entropy
    """
    from edgeq import data as data_mod
    from edgeq.cli.options import build_image_options
    from edgeq.cli.output import emit_json, print_table, say
    from edgeq.errors import BadInput, BudgetExceeded
    from edgeq.models import load_model, output_size
    from edgeq.progress import Progress
    from edgeq.quantize.calib_check import calib_check as check, table
    from edgeq.recipes import load_recipe, observer_fields

    r = load_recipe(recipe)
    if observer:
        r = r.with_(**observer_fields(observer, "--observer"))
    if calib_samples is not None and calib_samples < 1:
        raise BadInput("--calib-samples must be at least 1")
    m = load_model(model, input_shape, trust_pickle)
    opts = build_image_options(resize, crop, mean, std, grayscale)
    outputs = output_size(m)
    sets = []
    for source in (calib, data):
        ds = data_mod.load_dataset(source, m.input_names, opts)
        data_mod.check_against_model(ds, m.input_names, m.input_shapes, outputs)
        sets.append(ds)
    cal = data_mod.select(sets[0], calib_samples or r.calib_samples)
    result = check(m, cal, sets[1], r, Progress())
    if as_json:
        emit_json(result)
    print_table(table(result))
    for w in result["warnings"]:
        say(f"edgeq: warning: {w}")
    if not result["warnings"]:
        say(f"calibration looks representative: at most "
            f"{result['summary']['max_clipped_share']:.2%} of any layer's evaluation "
            "activations fall outside its calibration range")
    if strict and result["warnings"]:
        raise BudgetExceeded(f"calib-check --strict: {len(result['warnings'])} warning(s); "
                             "the first: " + result["warnings"][0])
