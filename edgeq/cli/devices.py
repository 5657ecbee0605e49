"""edgeq devices / edgeq device probe: the device profiles, and measuring a new one."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import json_option


def _cores(p) -> str:
    return " + ".join(f"{c.cores}x {c.core.replace('Cortex-', '')}"
                      for c in p.clusters if c.big)


@click.command()
@json_option
def devices(as_json):
    """List the device profiles (device_profiles/*.yaml) usable with
    `edgeq profile --estimate --profile NAME`.

    \b
    Peaks are for all big cores together: int8 in GOP/s (1 MAC = 2 ops), memory
    bandwidth in GB/s. Every value in a profile file carries its source or says
    it is an assumption; `edgeq device probe` measures a device of your own.
    """
    from rich.table import Table

    from edgeq.cli.output import emit_json, print_table
    from edgeq.devices.profiles import all_profiles

    profiles = all_profiles()
    if as_json:
        emit_json([p.summary() for p in profiles.values()])
        return
    table = Table(title="device profiles", title_justify="left")
    for col in ("name", "kind", "soc", "big cores", "int8 GOP/s", "fp32 GFLOP/s", "GB/s",
                "delegates"):
        table.add_column(col, justify="right" if "/" in col else "left")
    for p in profiles.values():
        table.add_row(p.name, p.kind, p.soc, _cores(p), f"{p.big_peak('int8'):.0f}",
                      f"{p.big_peak('fp32'):.0f}", f"{p.bandwidth_gbps:g}",
                      ", ".join(p.delegates))
    print_table(table)


@click.group()
def device():
    """Measure devices: `edgeq device probe --device local -o profile.yaml`."""


@device.command()
@click.option("--device", "device_spec", default="local", show_default=True,
              help="The device to measure: local (this machine), adb, adb:SERIAL or "
                   "ssh://USER@HOST[:PORT].")
@click.option("--runners", "runner_config", type=click.Path(path_type=Path), default=None,
              help="Runner config naming the device's native .pte runner per ABI "
                   "(default ~/.config/edgeq/runners.yaml; phones need one).")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Profile YAML to write.")
@click.option("--quick", is_flag=True,
              help="Seconds instead of ~1 min: on local, torch GEMMs instead of XNNPACK "
                   "programs and no dispatch measurement; on adb / ssh, fewer runs and a "
                   "3 x 32 MiB bandwidth test.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@json_option
def probe(device_spec, runner_config, out, quick, force, as_json):
    """Measure a device's peak GEMM rate (fp32, int8) per core, operator dispatch cost,
    memory and cache bandwidth, and write a profile usable with --profile OUTPUT.

    \b
    Values the probe cannot measure (power, thermal constants) are written as
    assumptions, marked as such: edit them with the device's own data.
    On adb / ssh devices the facts come from the device's /proc and /sys and the
    GEMM, dispatch and bandwidth programs (built here) run in the device's runner.
    Examples:
      edgeq device probe --device local -o host.yaml
      edgeq device probe --device adb:R58M123 --runners runners.yaml -o phone.yaml
      edgeq device probe --device ssh://pi@board.local -o board.yaml
    """
    from edgeq.cli.output import emit_json, say
    from edgeq.devices.profiles import read_profile
    from edgeq.errors import BadInput
    from edgeq.profiling import probe as probe_mod
    from edgeq.progress import Progress

    out = Path(out)
    if out.exists() and not force:  # fail before a minute of measuring
        raise BadInput(f"'{out}' already exists; pass --force to overwrite or choose another -o")
    if out.suffix not in (".yaml", ".yml"):
        raise BadInput(f"-o '{out}': a profile is a .yaml file")
    if device_spec.strip() == "local":
        data = probe_mod.probe(quick=quick, progress=Progress())
    else:
        from edgeq.devices.transport import open_device
        from edgeq.profiling.runners import load_runner_config

        config = load_runner_config(runner_config)  # a bad config fails before connecting
        dev = open_device(device_spec)  # no device attached: exit 3, as for `profile`
        try:
            data = probe_mod.probe(probe_mod.DeviceBench(dev, config), quick=quick,
                                   progress=Progress())
        finally:
            dev.cleanup()
            dev.close()
    probe_mod.write_profile(data, out, force=force)
    prof = read_profile(out)
    if as_json:
        emit_json(prof.summary())
    c = prof.clusters[0]
    say(f"{prof.name}: {prof.total_cores} cores ({c.core}), per core {c.fp32_gflops_per_core:g} "
        f"GFLOP/s fp32, {c.int8_gops_per_core:g} GOP/s int8; memory {prof.bandwidth_gbps:g} "
        f"GB/s, dispatch {prof.dispatch_us:g} us")
    say(f"  written to {out}")
