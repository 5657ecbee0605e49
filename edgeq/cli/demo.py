"""edgeq demo: the whole flow on the bundled digits CNN and real handwritten digits."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import force_option, json_option

DEMO_TARGETS = ["executorch-xnnpack", "onnx-xnnpack", "tflite-xnnpack"]
QAT_TARGETS = ["executorch-xnnpack", "tflite-xnnpack"]  # ONNX targets take PTQ only


@click.command()
@click.option("-o", "--out", "out_dir", default="edgeq-demo", show_default=True,
              type=click.Path(path_type=Path), help="Output folder.")
@click.option("--runs", default=200, show_default=True, help="Timed runs per artifact.")
@force_option
@json_option
def demo(out_dir, runs, force, as_json):
    """Run the whole flow on the bundled model and data.

    \b
    A small CNN trained on scikit-learn's handwritten digits (8x8, 10 classes) is
    exported for ExecuTorch, ONNX Runtime and LiteRT (XNNPACK) as fp32 and int8
    static PTQ (256 calibration samples), and as int8 QAT where the runtime takes
    it; each artifact is evaluated in its own runtime on 445 held-out digits,
    profiled on this machine, and checked against the bundled budgets. Writes
    report.json.
    """
    from edgeq.cli.output import budgets_table, emit_json, print_table, results_table, say
    from edgeq.data import load_dataset
    from edgeq.flow import REPORT_NAME, FlowOptions, evaluate_report, export_matrix, \
        profile_report
    from edgeq.progress import Progress
    from edgeq.report.budgets import check, load_budgets
    from edgeq.report.schema import save_report
    from edgeq.zoo import HERE

    progress = Progress()
    opts = FlowOptions(out_dir, calib="digits:train", qat_data="digits:train", qat_epochs=3,
                       lr=1e-3, force=force)
    model, report, failed = export_matrix("digits-cnn", DEMO_TARGETS, ["fp32", "int8"], opts,
                                          progress, qat_recipes=[])
    _, report, failed_qat = export_matrix("digits-cnn", QAT_TARGETS, ["int8"], opts, progress)
    failed = max(failed, failed_qat)
    evaluate_report(report, "digits:eval", model, opts, out_dir, progress)
    inputs = load_dataset("digits:eval").sample(0)
    profile_report(report, inputs, runs, 20, 1, out_dir, progress)
    report["budgets"] = check(report, load_budgets(HERE / "digits-budgets.yaml"))
    save_report(Path(out_dir) / REPORT_NAME, report)
    if as_json:
        emit_json(report)
    print_table(results_table(report, "edgeq demo: digits CNN, fp32 / int8 PTQ / int8 QAT on "
                                      "three runtimes"))
    print_table(budgets_table(report["budgets"]))
    bad = [b for b in report["budgets"] if not b["passed"]]
    say(f"report: {Path(out_dir) / REPORT_NAME}")
    if failed:
        raise SystemExit(failed)
    if bad:
        say(f"{len(bad)} budget(s) exceeded")
        raise SystemExit(1)
