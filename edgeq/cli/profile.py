"""edgeq profile: latency, memory, energy and thermal behaviour of an artifact on a device."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.common import report_option
from edgeq.cli.options import json_option, runs_options


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--device", default="local", show_default=True,
              help="Where to run: local, adb, adb:SERIAL or ssh://USER@HOST[:PORT].")
@click.option("--data", metavar="DATA",
              help="Take the input from the first sample of DATA (default: random normal "
                   "in the artifact's input shapes).")
@runs_options
@click.option("--sustained", type=float, metavar="SECONDS",
              help="Run without pause for SECONDS and record a thermal trace per window "
                   "(latency, temperatures, clocks): throttled?, time to throttle, "
                   "sustained/peak throughput.")
@click.option("--window", default=5.0, show_default=True, metavar="SECONDS",
              help="Window length of the --sustained trace.")
@click.option("--pin", metavar="big|CPUS",
              help="Pin the runner with taskset: 'big' (the device's big cores) or a CPU list "
                   "such as 4-7.")
@click.option("--cooldown-c", type=float, metavar="°C",
              help="Before measuring, wait until every thermal zone is below this temperature.")
@click.option("--cooldown-timeout", default=300.0, show_default=True, metavar="SECONDS",
              help="Give up waiting for --cooldown-c after this long (and say so).")
@click.option("--idle", default=3.0, show_default=True, metavar="SECONDS",
              help="Idle power sampling before the run (energy = active - idle).")
@click.option("--no-energy", is_flag=True, help="Do not sample power sensors.")
@click.option("--runners", type=click.Path(path_type=Path),
              help="Runner config YAML naming device runners per ABI (default: $EDGEQ_RUNNERS "
                   "or ~/.config/edgeq/runners.yaml).")
@click.option("--estimate", is_flag=True,
              help="Estimate instead of measuring: roofline + thermal model of the artifact's "
                   "graph on --profile (marked \"mode\": \"estimated\").")
@click.option("--profile", "profile_name", metavar="NAME|FILE",
              help="Device profile for --estimate: a name from `edgeq devices` or a YAML "
                   "file (default: host).")
@report_option
@json_option
def profile(artifact, device, data, runs, warmup, threads, sustained, window, pin, cooldown_c,
            cooldown_timeout, idle, no_energy, runners, estimate, profile_name, report_path,
            as_json):
    """Measure ARTIFACT's latency (p50/p90/p99/mean/std), peak memory, energy per
    inference and thermal throttling on a device.

    \b
    local: in a separate process on this machine; for .pte a native runner built once
      from the executorch wheel (no Python overhead, as on a phone).
    adb[:SERIAL]: pushes artifact and runner to /data/local/tmp, runs, pulls, cleans up;
      energy from the battery's current_now/voltage_now (refused while charging).
    ssh://USER@HOST[:PORT]: Linux boards; scripts/edgeq_bench.py with the board's
      runtimes, or a native runner from the runner config.
    A figure that cannot be measured is null with its reason.
    Examples:
      edgeq profile out/model.int8.executorch-xnnpack.pte --runs 200 --threads 2
      edgeq profile model.pte --device adb --pin big --sustained 60 --cooldown-c 40
    """
    import numpy as np

    from edgeq.cli.common import check_report_path, merge_into_report
    from edgeq.cli.output import emit_json, fmt_bytes, fmt_ms, say
    from edgeq.progress import Progress
    from edgeq.runtimes import get_runtime
    from edgeq.stages import artifact_info, profile_local

    _, target = artifact_info(artifact)
    report_path = check_report_path(artifact, report_path)
    if profile_name and not estimate:
        from edgeq.errors import BadInput

        raise BadInput("--profile is for --estimate (a measured run profiles --device)")
    if estimate:
        return _estimate(artifact, profile_name or "host", threads, sustained, report_path,
                         as_json)
    session = get_runtime(target.runtime).open(artifact)
    if data:
        from edgeq import data as data_mod

        names = [f"input_{i}" for i in range(len(session.input_shapes))]
        ds = data_mod.load_dataset(data, names)
        data_mod.check_against_model(ds, names, session.input_shapes)
        inputs = ds.sample(0)
    else:
        rng = np.random.default_rng(0)
        dtypes = getattr(session, "input_dtypes", None) or ["float32"] * len(
            session.input_shapes)
        inputs = [rng.standard_normal(s).astype(d) for s, d in zip(session.input_shapes, dtypes)]
    if device == "local" and not (sustained or pin or cooldown_c):
        block = profile_local(artifact, inputs, runs, warmup, threads, Progress())
    else:
        from edgeq.devices.transport import open_device
        from edgeq.profiling.remote import ProfileIncomplete, profile_on_device

        dev = open_device(device)
        try:
            block = profile_on_device(
                dev, artifact, target.runtime, inputs, runs, warmup, threads,
                sustained_s=sustained, pin=pin, runner_config=runners, delegate=target.delegate,
                cooldown_c=cooldown_c, cooldown_timeout_s=cooldown_timeout,
                energy=not no_energy, idle_s=idle, window_s=window, progress=Progress())
        except ProfileIncomplete as e:  # keep what was measured, then exit 3
            merge_into_report(artifact, report_path, "profile", e.block)
            if as_json:
                emit_json(e.block)
            raise
        finally:
            dev.close()
    path = merge_into_report(artifact, report_path, "profile", block)
    if as_json:
        emit_json(block)
    lat = block["latency_ms"]
    say(f"{Path(artifact).name} on {block['device']} ({block.get('runner')} runner, {threads} "
        f"thread(s), {lat['runs']} runs): p50 {fmt_ms(lat['p50'])} ms, p90 {fmt_ms(lat['p90'])} "
        f"ms, p99 {fmt_ms(lat['p99'])} ms, mean {fmt_ms(lat['mean'])} ± {fmt_ms(lat['std'])} "
        f"ms; peak memory {fmt_bytes(block['peak_memory_bytes'])}")
    if lat.get("percentiles_reason"):
        say(f"  percentiles: {lat['percentiles_reason']}")
    energy = block.get("energy_mj_per_inference")
    say(f"  energy: {energy:.3f} mJ/inference" if energy is not None else
        f"  energy: not measured ({block.get('energy_mj_per_inference_reason')})")
    thermal = block.get("thermal")
    if thermal:
        say(f"  thermal: {thermal.get('duration_s')} s sustained, throttled "
            f"{thermal.get('throttled')}, time to throttle {thermal.get('time_to_throttle_s')} "
            f"s, sustained/peak {thermal.get('sustained_over_peak')}")
    for note in block.get("notes", []):
        say(f"  note: {note}")
    say(f"  written to {path}")


def _estimate(artifact, profile_name, threads, sustained, report_path, as_json):
    from edgeq.cli.common import merge_into_report
    from edgeq.cli.output import emit_json, fmt_bytes, fmt_ms, say
    from edgeq.stages import profile_estimate

    block = profile_estimate(artifact, profile_name, threads, sustained)
    path = merge_into_report(artifact, report_path, "profile", block)
    if as_json:
        emit_json(block)
    say(f"{Path(artifact).name} on {block['device']} (estimated, {block['threads']} "
        f"thread(s)): {fmt_ms(block['latency_ms']['p50'])} ms, "
        f"{block['energy_mj_per_inference']:.3g} mJ/inference, memory "
        f"{fmt_bytes(block['peak_memory_bytes'])} (tensor sizes)")
    thermal = block.get("thermal")
    if thermal:
        say(f"  thermal (estimated): throttled {thermal['throttled']}, time to throttle "
            f"{thermal['time_to_throttle_s']} s, sustained/peak {thermal['sustained_over_peak']}")
    say(f"  written to {path}")
