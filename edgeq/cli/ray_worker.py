"""edgeq ray-worker: join a Ray cluster as a worker that advertises this host's devices."""
from __future__ import annotations

import click

from edgeq.cli.options import json_option


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--address", required=True, metavar="HOST:PORT",
              help="The head node's GCS address, as `ray start --head` printed it "
                   "(e.g. head:6379).")
@click.option("--device", "devices", multiple=True, metavar="NAME=SPEC",
              help="A device attached to this host, advertised as the Ray resource "
                   "device:NAME. SPEC: local (this host itself), adb, adb:SERIAL or "
                   "ssh://USER@HOST[:PORT]. Repeat for several devices.")
@click.option("--num-cpus", type=int, metavar="N",
              help="CPUs this host gives the cluster (each edgeq task takes one; default: "
                   "all of them).")
@click.option("--block/--no-block", default=True, show_default=True,
              help="Stay in the foreground (Ctrl-C takes the host out of the cluster) or "
                   "start the node in the background (`ray stop` ends it).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Check that every device answers before joining.")
@click.option("--dry-run", is_flag=True,
              help="Print the `ray start` command and its environment; run nothing.")
@json_option
@click.argument("ray_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- RAY_START_ARGS]")
def ray_worker(address, devices, num_cpus, block, check, dry_run, as_json, ray_args):
    """Join the Ray cluster at ADDRESS as a worker whose devices `edgeq run --ray` can
    profile on. Runs `ray start --address=ADDRESS --resources='{"device:NAME": 1, ...}'`
    with $EDGEQ_RAY_DEVICES (JSON, NAME -> SPEC) set for the node's processes: a profile
    task scheduled here for device:NAME reaches the device through this host's SPEC.

    \b
    The pipeline names the device by NAME (this host's SPEC replaces the file's):
      devices:
        - {device: adb, name: pixel-8}   # profiled on the host advertising device:pixel-8
    Each device has capacity 1: one profile at a time. Hosts without devices join with
    a plain `ray start --address HEAD:6379`. Every node needs the same Python, Ray and
    edgeq, and the run's output folder at the same path (a shared filesystem).
    Arguments after `--` go to `ray start` as they are.
    Examples:
      ray start --head --port=6379                   # on the head node
      edgeq ray-worker --address head:6379 --device pixel-8=adb:R58M123
      edgeq ray-worker --address head:6379 --device rpi5=local --num-cpus 2
      edgeq run edgeq.yaml --ray head:6379           # on a node of the cluster
    """
    import os
    import shlex
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from edgeq.cli.output import emit_json, say
    from edgeq.errors import BadInput, RuntimeFailure
    from edgeq.pipeline.ray_executor import parse_device, worker_command

    found: dict = {}
    for text in devices:
        name, spec = parse_device(text)
        if name in found:
            raise BadInput(f"--device '{text}': device '{name}' is given twice")
        found[name] = spec
    if num_cpus is not None and num_cpus < 0:
        raise BadInput(f"--num-cpus {num_cpus}: give 0 or more")
    beside = Path(sys.executable).parent / "ray"  # the venv's ray, not another one
    ray_exe = str(beside) if beside.is_file() else shutil.which("ray")
    if not ray_exe:
        raise BadInput("ray-worker needs the 'ray' package, which is not installed: "
                       "pip install 'edgeq[ray]'")
    argv, env = worker_command(ray_exe, address, found, num_cpus, block, tuple(ray_args))
    result = {"address": address, "devices": found,
              "resources": {f"device:{n}": 1 for n in found}, "command": argv, "env": env}
    if dry_run:
        if as_json:
            emit_json(result)
        else:
            click.echo(" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " "
                       + shlex.join(argv))
        return
    if check:
        from edgeq.devices.transport import open_device

        for name, spec in found.items():
            dev = open_device(spec)  # not attached / unreachable: exit 3 with its reason
            try:
                abi = dev.abi()
            finally:
                dev.close()
            say(f"edgeq: device {name} ({spec}) answers: {abi}")
    if as_json and block:
        emit_json(result)  # before blocking: the node runs until stopped
        sys.stdout.flush()
    say(f"edgeq: joining the Ray cluster at {address} with "
        f"{', '.join(result['resources']) or 'no devices'}")
    tail: list[str] = []
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        for line in proc.stdout:  # ray's own output, kept off stdout (--json)
            say(line.rstrip())
            tail = (tail + [line.strip()])[-5:] if line.strip() else tail
        code = proc.wait()
    except KeyboardInterrupt:
        try:  # ray start --block got the same Ctrl-C and is stopping its node
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code != 0:
        why = next((ln for ln in reversed(tail) if ln), "no output")
        raise RuntimeFailure(f"`ray start` failed (exit {code}): {why}")
    if as_json and not block:
        emit_json(result)
