"""edgeq export: quantize and lower a model for one or more targets."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import (calib_option, calib_samples_option, force_option, image_options,
                               input_shape_option, json_option, metric_option,
                               observer_option, trust_pickle_option)


@click.command()
@click.argument("model")
@click.option("--target", "-t", "targets", multiple=True, required=True,
              help="Target name from `edgeq targets` (repeatable; `all` for every one).")
@click.option("--recipe", "-r", "recipes", multiple=True, default=["int8"], show_default=True,
              help="Preset (fp32, int8, int8-per-tensor, int8-dfq, int8-dynamic, int8-w, "
                   "int4-w-g32 / -g64 / -g128) or a recipe YAML file; repeatable: every "
                   "target is built with every recipe.")
@calib_option()
@calib_samples_option
@observer_option
@click.option("--keep-float", multiple=True, metavar="PATTERN",
              help="Module names (fnmatch pattern) kept in fp32; repeatable.")
@click.option("--qat-data", metavar="DATA", help="Fine-tune with fake quantization (QAT) on DATA "
              "before converting; labels -> cross-entropy, none -> distillation from fp32.")
@click.option("--qat-epochs", default=3, show_default=True, help="QAT epochs.")
@click.option("--lr", default=1e-3, show_default=True, help="QAT learning rate (SGD, momentum 0.9).")
@click.option("--qat-loss", type=click.Choice(["auto", "ce", "kd"]), default="auto",
              show_default=True, help="QAT loss: cross-entropy, distillation, or auto.")
@click.option("--data", metavar="DATA", help="Evaluation data: each artifact is evaluated "
              "against labels and the fp32 model after export.")
@metric_option
@click.option("--max-accuracy-drop", type=float, metavar="X",
              help="Accuracy budget in the --metric's unit (points of top-1 or agreement; "
                   "cosine: e.g. 0.01 for >= 0.99; needs --data): take the most sensitive layers to 16-bit "
                   "activations (where supported) or float until the "
                   "drop is at most X; the chosen recipe is written as YAML. Exit 1 if none can.")
@click.option("--max-trials", default=8, show_default=True, metavar="N",
              help="--max-accuracy-drop: exports tried per target, the plain recipe included.")
@click.option("--try-int16/--no-try-int16", default=True, show_default=True,
              help="--max-accuracy-drop: try the most sensitive layers at 16-bit activations "
                   "(int8 weights, recipe int16_layers) once the float search is done, "
                   "where the target supports it: smaller than float when it passes.")
@click.option("--profile-runs", default=0, show_default=True, metavar="N",
              help="Also profile every artifact on this machine with N timed runs (0: skip), "
                   "for a side-by-side latency column.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder for artifacts, manifests and report.json.")
@input_shape_option
@trust_pickle_option
@force_option
@image_options
@json_option
def export(model, targets, recipes, calib, calib_samples, observer, keep_float, qat_data,
           qat_epochs, lr, qat_loss, data, metric, max_accuracy_drop, max_trials, try_int16, profile_runs,
           out_dir, input_shape, trust_pickle, force, resize,
           crop, mean, std, grayscale, as_json):
    """Quantize MODEL and lower it to deployable artifacts.

    \b
    MODEL is one of:
      path/to/file.py:factory     factory() returns (module, example_inputs) or a module
      package.module:factory      the same, importable
      model.pt2                   saved by torch.export.save
      digits-cnn | mobilenetv2 | efficientnet-lite0 | minilm-l6   built-ins
    \b
    Examples:
      edgeq export model.py:build --target executorch-xnnpack --recipe int8 \\
          --calib calib.npz -o out/
      edgeq export digits-cnn -t executorch-xnnpack --qat-data digits:train \\
          --data digits:eval -o out/
      edgeq export model.py:build -t executorch-xnnpack -t onnx-xnnpack -t tflite-xnnpack \\
          --calib calib.npz --data eval.npz --profile-runs 100 -o out/
    """
    from edgeq.cli.options import build_image_options
    from edgeq.cli.output import emit_json, print_table, results_table
    from edgeq.flow import FlowOptions, evaluate_report, export_matrix
    from edgeq.progress import Progress

    from edgeq.errors import BadInput

    recipes = list(dict.fromkeys(recipes))
    search = None
    if metric and not data:
        raise BadInput(f"--metric {metric} needs --data: the metric is measured on the "
                       "evaluation data")
    if max_accuracy_drop is not None:
        from edgeq.quantize.search import check_options
        from edgeq.recipes import load_recipe

        if len(recipes) > 1:
            raise BadInput(f"--max-accuracy-drop searches from one recipe; got --recipe "
                           f"{', '.join(recipes)}: pass one")
        recipe = recipes[0]
        search = check_options(max_accuracy_drop, max_trials, data, qat_data,
                               load_recipe(recipe), try_int16)
    progress = Progress()
    opts = FlowOptions(out_dir, calib, calib_samples, observer, tuple(keep_float), qat_data,
                       qat_epochs, lr, qat_loss, input_shape, trust_pickle, force,
                       build_image_options(resize, crop, mean, std, grayscale), metric)
    loaded, report, failed = export_matrix(model, list(targets), recipes, opts, progress)
    if data:
        evaluate_report(report, data, loaded, opts, out_dir, progress)
    missed = []
    if search is not None:
        from edgeq.quantize.search import search_report
        from edgeq.recipes import load_recipe

        missed = search_report(report, loaded, load_recipe(recipe).name, list(targets), opts,
                               data, search, progress)
    if profile_runs > 0:
        from edgeq.flow import profile_inputs, profile_report

        profile_report(report, profile_inputs(loaded, data or calib, opts), profile_runs,
                       max(1, profile_runs // 10), 1, out_dir, progress)
    if as_json:
        emit_json(report)
    print_table(results_table(report, f"exported to {out_dir}"))
    if missed:
        from edgeq.errors import BudgetExceeded

        raise BudgetExceeded("; ".join(missed))
    if failed:
        raise SystemExit(failed)
