"""edgeq run: a pipeline file -> the whole model x recipes x targets x devices matrix."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import force_option, json_option


@click.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", default="edgeq-run", show_default=True,
              type=click.Path(path_type=Path),
              help="Output folder: artifacts/, cache/ and report.json. Re-running into the "
                   "same folder reuses everything whose inputs did not change.")
@click.option("--jobs", "-j", default=1, show_default=True, metavar="N",
              help="Run builds, evaluations and estimates in N local worker processes "
                   "(measured local profiles still run one at a time).")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="Run the tasks on an existing Ray cluster (e.g. head:6379 or auto); "
                   "devices are the hosts that joined with `edgeq ray-worker`, `local` "
                   "profiles run on this host. Needs `pip install 'edgeq[ray]'`.")
@force_option
@json_option
def run(pipeline, out_dir, jobs, ray_address, force, as_json):
    """Run the matrix of PIPELINE (a YAML file): build every recipe x target, evaluate
    each artifact, profile it on every device, check the budgets, write one report.json.
    Exit 1 when a budget fails, else the worst cell failure (2 bad input, 3 runtime).

    \b
    PIPELINE (paths relative to the file's folder; only model, recipes, targets needed):
      model: digits-cnn                # any MODEL spec `edgeq export` accepts
      calib: digits:train              # calibration data (quantized recipes)
      calib_samples: 256               # optional: overrides the recipes' count
      data: digits:eval                # optional: evaluation data
      recipes: [fp32, int8]            # presets or recipe YAML files
      targets: [executorch-xnnpack, onnx-cpu]    # or [all]
      devices:                         # optional: profile every artifact on each
        - local                        #   measured on this host
        - {profile: pixel-8}           #   estimated for a device profile
        - {device: "adb:SERIAL", name: pixel-8-real}   # measured on a device
      profile: {runs: 50, warmup: 5, threads: 1}
      image: {resize: 256, crop: 224}  # optional: for image-folder data
      search: {max_accuracy_drop: 1.0, max_trials: 8, int16: true}  # optional, needs data:
      budgets:                         # the format of `edgeq check --budgets`
        - max_size: 2MB
        - target: executorch-*
          max_latency_p50_ms: 5
    \b
    Cache: an artifact is keyed by the model's sha256, the recipe, the target, the
    calibration data and the tool versions; evaluations and profiles by the artifact's
    sha256 and their settings. A re-run rebuilds only what changed ("cache": "hit" in the
    report), and a run interrupted half-way resumes without redoing finished work.
    \b
    search: for every quantized cell whose accuracy drop exceeds max_accuracy_drop,
    the search of `export --max-accuracy-drop` takes the most sensitive layers to 16-bit
    activations (where the target runs them; int16: false skips that) or float (within
    max_trials exports); the cell then holds the chosen artifact (profiled
    instead of the plain one), a "search" block and the chosen recipe as YAML beside it.
    A budget no configuration meets: the best found is kept and the run exits 1.
    Finished searches are cached like evaluations.
    Examples:
      edgeq run edgeq.yaml -o out/
      edgeq run edgeq.yaml -o out/ --jobs 2 --json
    """
    from edgeq.cli.output import budgets_table, emit_json, print_table, results_table, say
    from edgeq.errors import BadInput
    from edgeq.pipeline.matrix import run_pipeline
    from edgeq.pipeline.spec import load_spec

    spec = load_spec(pipeline)  # every bad key / unit / name: exit 2 before any work
    if jobs < 1:
        raise BadInput(f"--jobs {jobs}: give 1 or more worker processes")
    if ray_address and jobs != 1:
        raise BadInput("--jobs and --ray exclude each other: Ray schedules on its own workers")
    executor = _executor(jobs, ray_address)
    try:
        result = run_pipeline(spec, out_dir, executor, force, say)
    finally:
        executor.close()
    report = result.report
    if as_json:
        emit_json({"report": str(result.report_path), "passed": result.passed,
                   "exit_code": result.exit_code, **result.counts})
    print_table(results_table(report, f"edgeq run {pipeline}"))
    if report.get("budgets"):
        print_table(budgets_table(report["budgets"]))
    c = result.counts
    say(f"{c['cells']} cell(s): {c['built']} built, {c['cached']} from the cache; "
        f"{c['evaluated'] + c['profiled']} evaluation/profile task(s) run, "
        f"{c['tasks_cached']} from the cache; {c['failed']} failed")
    say(f"report: {result.report_path}")
    if not result.passed:
        failed = sum(1 for b in report["budgets"] if not b["passed"])
        say(f"{failed} budget(s) exceeded")
    if result.exit_code:
        raise SystemExit(result.exit_code)


def _executor(jobs: int, ray_address: str | None):
    from edgeq.errors import BadInput

    if ray_address:
        try:
            import importlib

            importlib.import_module("ray")  # only to say clearly when it is missing
        except ImportError:
            raise BadInput("--ray needs the 'ray' package, which is not installed: "
                           "pip install 'edgeq[ray]'") from None
        from edgeq.pipeline.ray_executor import RayExecutor

        return RayExecutor(ray_address)
    from edgeq.pipeline.executors import InProcessExecutor, PoolExecutor

    return PoolExecutor(jobs) if jobs > 1 else InProcessExecutor()
