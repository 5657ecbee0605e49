"""edgeq export: quantize and lower a model for one or more targets."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import (force_option, image_options, input_shape_option, json_option,
                               trust_pickle_option)


@click.command()
@click.argument("model")
@click.option("--target", "-t", "targets", multiple=True, required=True,
              help="Target name from `edgeq targets` (repeatable; `all` for every one).")
@click.option("--recipe", "-r", default="int8", show_default=True,
              help="Preset (fp32, int8, int8-per-tensor) or a recipe YAML file.")
@click.option("--calib", metavar="DATA",
              help="Calibration data: .npz (x[, y]), .npy, image folder, module:function, "
                   "or digits:train.")
@click.option("--calib-samples", type=int, metavar="N",
              help="Calibration samples, chosen deterministically (stratified by label). "
                   "Default: the recipe's (256).")
@click.option("--observer", type=click.Choice(["minmax", "histogram", "entropy", "percentile"]),
              help="Activation observer (overrides the recipe; default histogram).")
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
def export(model, targets, recipe, calib, calib_samples, observer, keep_float, qat_data,
           qat_epochs, lr, qat_loss, data, profile_runs, out_dir, input_shape, trust_pickle, force, resize,
           crop, mean, std, grayscale, as_json):
    """Quantize MODEL and lower it to deployable artifacts.

    \b
    MODEL is one of:
      path/to/file.py:factory     factory() returns (module, example_inputs) or a module
      package.module:factory      the same, importable
      model.pt2                   saved by torch.export.save
      digits-cnn | mobilenetv2    built-in models
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

    progress = Progress()
    opts = FlowOptions(out_dir, calib, calib_samples, observer, tuple(keep_float), qat_data,
                       qat_epochs, lr, qat_loss, input_shape, trust_pickle, force,
                       build_image_options(resize, crop, mean, std, grayscale))
    loaded, report, failed = export_matrix(model, list(targets), [recipe], opts, progress)
    if data:
        evaluate_report(report, data, loaded, opts, out_dir, progress)
    if profile_runs > 0:
        from edgeq.flow import profile_inputs, profile_report

        profile_report(report, profile_inputs(loaded, data or calib, opts), profile_runs,
                       max(1, profile_runs // 10), 1, out_dir, progress)
    if as_json:
        emit_json(report)
    print_table(results_table(report, f"exported to {out_dir}"))
    if failed:
        raise SystemExit(failed)
