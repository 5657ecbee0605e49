"""edgeq eval: accuracy of an artifact, run in its own runtime."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.common import report_option
from edgeq.cli.options import (image_options, input_shape_option, json_option,
                               trust_pickle_option)


@click.command("eval")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--data", required=True, metavar="DATA",
              help="Evaluation data: .npz (x[, y]), .npy, image folder, module:function, "
                   "or digits:eval.")
@click.option("--reference", metavar="MODEL",
              help="The fp32 model (same MODEL forms as export): adds agreement, cosine, SQNR.")
@click.option("--metric", type=click.Choice(["top1", "agreement", "cosine", "sqnr"]),
              help="Headline metric. Default: top1 with labels, else agreement or cosine.")
@report_option
@input_shape_option
@trust_pickle_option
@image_options
@json_option
def evaluate(artifact, data, reference, metric, report_path, input_shape, trust_pickle,
             resize, crop, mean, std, grayscale, as_json):
    """Run ARTIFACT itself (.pte) over DATA in its runtime and report accuracy.

    \b
    Top-1 when DATA has labels; with --reference, fidelity to the fp32 model too:
    top-1 agreement (%), mean cosine similarity, and SQNR (dB) of the outputs.
    Example:
      edgeq eval out/model.int8.executorch-xnnpack.pte --data eval.npz --reference model.py:build
    """
    from edgeq import data as data_mod
    from edgeq.cli.common import check_report_path, merge_into_report
    from edgeq.cli.options import build_image_options
    from edgeq.cli.output import emit_json, fmt, say
    from edgeq.errors import BadInput
    from edgeq.models import load_model
    from edgeq.progress import Progress
    from edgeq.runtimes import get_runtime
    from edgeq.stages import artifact_info, evaluate as evaluate_stage

    _, target = artifact_info(artifact)
    report_path = check_report_path(artifact, report_path)
    if metric in ("agreement", "cosine", "sqnr") and not reference:
        raise BadInput(f"--metric {metric} compares with the fp32 model: pass --reference MODEL")
    ref = load_model(reference, input_shape, trust_pickle) if reference else None
    session = get_runtime(target.runtime).open(artifact)
    names = ref.input_names if ref else [f"input_{i}" for i in range(len(session.input_shapes))]
    ds = data_mod.load_dataset(data, names, build_image_options(resize, crop, mean, std,
                                                                grayscale))
    data_mod.check_against_model(ds, names, session.input_shapes)
    block = evaluate_stage(artifact, ds, ref, metric, Progress())
    block["data"] = ds.source
    path = merge_into_report(artifact, report_path, "accuracy", block,
                             ref.summary() if ref else None)
    if as_json:
        emit_json(block)
    unit = "%" if block["metric"] in ("top1", "agreement") else ""
    say(f"{Path(artifact).name}: {block['metric']} {fmt(block['value'], 3, unit)} on "
        f"{block['samples']} samples" + (f" (fp32 {fmt(block['reference_value'], 3, unit)}, "
                                         f"drop {fmt(block['drop'], 3)})"
                                         if block["reference_value"] is not None else ""))
    fid = block.get("fidelity")
    if fid:
        say(f"  fidelity to fp32: agreement {fmt(fid['agreement'], 2, '%')}, "
            f"cosine {fmt(fid['cosine'], 5)}, SQNR {fmt(fid['sqnr'], 2, ' dB')}")
    say(f"  written to {path}")
