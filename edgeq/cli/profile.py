"""edgeq profile: latency and memory of an artifact on a device."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.common import report_option
from edgeq.cli.options import json_option, runs_options


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--device", default="local", show_default=True,
              help="Where to run: local (this machine).")
@click.option("--data", metavar="DATA",
              help="Take the input from the first sample of DATA (default: random normal "
                   "in the artifact's input shapes).")
@runs_options
@report_option
@json_option
def profile(artifact, device, data, runs, warmup, threads, report_path, as_json):
    """Measure ARTIFACT's latency (p50/p90/p99/mean/std) and peak memory.

    \b
    Runs in a separate process: for .pte a native runner built once from the
    executorch wheel with the system C++ compiler (no Python overhead, as on a
    phone), else the Python runtime; the report says which.
    Example:
      edgeq profile out/model.int8.executorch-xnnpack.pte --runs 200 --threads 2
    """
    import numpy as np

    from edgeq.cli.common import check_report_path, merge_into_report
    from edgeq.cli.output import emit_json, fmt_bytes, fmt_ms, say
    from edgeq.errors import BadInput
    from edgeq.progress import Progress
    from edgeq.runtimes import get_runtime
    from edgeq.stages import artifact_info, profile_local

    if device != "local":
        raise BadInput(f"--device '{device}': only 'local' is supported in this version")
    _, target = artifact_info(artifact)
    report_path = check_report_path(artifact, report_path)
    session = get_runtime(target.runtime).open(artifact)
    if data:
        from edgeq import data as data_mod

        names = [f"input_{i}" for i in range(len(session.input_shapes))]
        ds = data_mod.load_dataset(data, names)
        data_mod.check_against_model(ds, names, session.input_shapes)
        inputs = ds.sample(0)
    else:
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal(s).astype(np.float32) for s in session.input_shapes]
    block = profile_local(artifact, inputs, runs, warmup, threads, Progress())
    path = merge_into_report(artifact, report_path, "profile", block)
    if as_json:
        emit_json(block)
    lat = block["latency_ms"]
    say(f"{Path(artifact).name} on {device} ({block['runner']} runner, {threads} thread(s), "
        f"{lat['runs']} runs): p50 {fmt_ms(lat['p50'])} ms, p90 {fmt_ms(lat['p90'])} ms, "
        f"p99 {fmt_ms(lat['p99'])} ms, mean {fmt_ms(lat['mean'])} ± {fmt_ms(lat['std'])} ms; "
        f"peak memory {fmt_bytes(block['peak_memory_bytes'])}")
    for note in block["notes"]:
        say(f"  note: {note}")
    say(f"  written to {path}")
