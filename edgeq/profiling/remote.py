"""Profile an artifact on a Device (local, adb, ssh): push the artifact, its inputs and a
runner (see ``edgeq.profiling.runners`` for the runner config); wait for the device to
cool down; run pinned with ``taskset``; parse the runner's own output; sample power and
temperatures meanwhile; clean up. Returns the same profile block as
``edgeq.stages.profile_local`` (latencies in ms, memory in bytes, energy in mJ per
inference, temperatures in °C, clocks in MHz).

Without a runner config entry, ssh boards (and ``local``) run ``scripts/edgeq_bench.py``
with the board's own pip runtimes, and ``local`` times ``.pte`` with the host build of
runner.cpp.

Beyond profile_local's keys the block carries ``abi``, ``runtime``, ``pinned_cpus``,
``cooldown`` (when asked), ``energy`` (sensor, idle / active W, sample counts) and, when
the device went away mid-profile, ``status: failed`` and ``failure``."""
from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path

import numpy as np

from edgeq.devices import sysfs
from edgeq.devices.transport import DeviceDisconnected
from edgeq.errors import BadInput, RuntimeFailure
from edgeq.profiling.runners import (Parsed, Runner, json_lines, latency_block,
                                    load_runner_config, parse_output, resolve_runner,
                                    runner_argv)
from edgeq.profiling.stats import NOISY_CV, latency_summary
from edgeq.progress import QUIET

MEASURED = ("latency_ms", "peak_memory_bytes", "energy_mj_per_inference", "thermal")


class ProfileIncomplete(RuntimeFailure):
    """The device went away mid-profile. ``block`` holds what was measured; the rest is
    null with a reason and ``status`` is ``failed``. Exit 3."""

    def __init__(self, message: str, block: dict):
        super().__init__(message)
        self.block = block


# -- running and parsing ----------------------------------------------------------------------
def _execute(device, argv, timeout_s, on_line=None) -> tuple[int, list[str], str]:
    """Run on the device, handing each stdout line to ``on_line`` as it arrives."""
    proc = device.start(argv)
    err: list[str] = []
    drain = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    drain.start()
    fired: list[bool] = []
    timer = (threading.Timer(timeout_s, lambda: (fired.append(True), proc.kill()))
             if timeout_s else None)
    if timer:
        timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line)
        proc.wait()
    finally:
        if timer:
            timer.cancel()
        drain.join(timeout=30)
    stderr = "".join(err)
    if fired:
        raise RuntimeFailure(f"{device.name}: runner timed out after {timeout_s:g} s")
    device.check_transport(proc.returncode, stderr, thorough=True)
    return proc.returncode, lines, stderr


def _runner_error(device, runner: Runner, rc: int, out: list[str], err: str) -> RuntimeFailure:
    text = (err + "".join(out)).strip()
    last = (text.splitlines() or [f"exit {rc}"])[-1].strip()
    name = Path(runner.path).name if runner.kind != "python" else runner.python
    if rc in (126, 127) or re.search(r"exec format error|cannot execute|not executable|"
                                     r"syntax error|permission denied", text, re.I):
        return RuntimeFailure(f"runner {name} cannot run on {device.name} ({device.abi()}): {last}")
    hint = " (install the runtime's pip package on the board)" if "ModuleNotFound" in text else ""
    return RuntimeFailure(f"runner {name} failed on {device.name}: {last}{hint}")


def _busy_s(p: Parsed) -> float:
    if p.times_ms:
        return sum(p.times_ms) / 1e3
    return (p.agg["mean"] or 0) * (p.agg.get("runs") or 0) / 1e3


# -- the flow -------------------------------------------------------------------------------------
def _stage(device, runner: Runner, artifact: Path, inputs, tmp: Path) -> dict:
    wd = device.workdir
    remote = {"model": f"{wd}/{artifact.name}", "runner": f"{wd}/{Path(runner.path).name}"}
    device.push(artifact, remote["model"])
    device.push(runner.path, remote["runner"])
    if runner.kind != "python":
        device.run(["chmod", "755", remote["runner"]])
    if runner.kind == "native":
        remote["inputs"] = []
        for i, x in enumerate(inputs):
            (tmp / f"in{i}.bin").write_bytes(np.ascontiguousarray(x).tobytes())
            remote["inputs"].append(f"{wd}/in{i}.bin")
            device.push(tmp / f"in{i}.bin", remote["inputs"][-1])
    elif runner.kind == "python":
        np.savez(tmp / "inputs.npz", *inputs)
        remote["inputs"] = f"{wd}/inputs.npz"
        device.push(tmp / "inputs.npz", remote["inputs"])
    return remote


def _parse_pin(device, pin) -> list[int] | None:
    if pin is None:
        return None
    if pin == "big":
        r = sysfs.big_cores(device)
        if r.value is None:
            raise RuntimeFailure(f"--pin big: cannot find the big cores on {device.name} ({r.reason})")
        return r.value
    if isinstance(pin, str):
        try:
            cpus = []
            for part in pin.split(","):
                lo, _, hi = part.partition("-")
                cpus += range(int(lo), int(hi or lo) + 1)
            return sorted(set(cpus))
        except ValueError:
            raise BadInput(f"--pin '{pin}': expected 'big' or CPU numbers like 4-7 or 0,2") from None
    return sorted(int(c) for c in pin)


def profile_on_device(device, artifact, runtime_name, inputs, runs, warmup, threads,
                      sustained_s=None, pin=None, runner_config=None, *, delegate=None,
                      device_profile=None, cooldown_c=None, cooldown_timeout_s=300.0,
                      energy=True, idle_s=3.0, window_s=1.0, energy_interval_s=0.25,
                      timeout_s=900.0, progress=QUIET) -> dict:
    """Measure ``artifact`` on ``device``: the report's profile block. ``inputs``: numpy
    arrays, one per model input; ``pin``: None, 'big', '4-7' or a list of CPU numbers;
    ``sustained_s``: seconds of back-to-back runs for the thermal trace, in windows of
    ``window_s``; ``cooldown_c``: first wait (at most ``cooldown_timeout_s``) until the
    hottest zone is below it; ``idle_s``: seconds of idle power sampling before the run.
    Raises ProfileIncomplete (exit 3, ``.block`` keeps what was measured) when the device
    disconnects, RuntimeFailure when the runner fails, BadInput on bad options."""
    if runs < 1 or warmup < 0 or threads < 1:
        raise BadInput("--runs and --threads must be at least 1, --warmup at least 0")
    if sustained_s is not None and sustained_s <= 0:
        raise BadInput("--sustained must be a positive number of seconds")
    artifact = Path(artifact)
    if not artifact.is_file():
        raise BadInput(f"artifact '{artifact}' not found")
    runner = resolve_runner(device, artifact.suffix.lower(), load_runner_config(runner_config))
    block = {"device": device.name, "profile": device_profile, "mode": "measured",
             "runner": runner.kind, "runtime": runtime_name, "abi": device.abi(),
             "threads": threads, "threads_applied": None, "pinned_cpus": None,
             "latency_ms": None, "peak_memory_bytes": None, "energy_mj_per_inference": None,
             "thermal": None, "thermal_reason": "no --sustained run was asked for", "notes": []}
    try:
        prefix, cpus = _pinning(device, pin, threads, block)
        with tempfile.TemporaryDirectory(prefix="edgeq-stage-") as td:
            with progress.task(f"pushing {artifact.name} and its runner to {device.name}"):
                remote = _stage(device, runner, artifact, inputs, Path(td))
            if cooldown_c is not None:
                with progress.task(f"waiting for {device.name} to cool below {cooldown_c:g} °C"):
                    cd = block["cooldown"] = sysfs.cool_down(device, cooldown_c, cooldown_timeout_s)
                if cd.get("reason"):
                    block["notes"].append(cd["reason"])
            sampler = _energy_sampler(device, block, energy, idle_s, energy_interval_s, progress)
            argv = prefix + runner_argv(runner, remote, runs, warmup, threads, delegate,
                                        window_s=window_s)
            with progress.task(f"profiling {artifact.name} on {device.name} "
                               f"({warmup} warm-up + {runs} runs)"):
                parsed = _main_run(device, runner, argv, remote, Path(td), sampler, runs,
                                   timeout_s, block)
            _fill(block, runner, parsed, sampler, device)
            if sustained_s:
                block.pop("thermal_reason")
                with progress.task(f"sustained run on {device.name} ({sustained_s:g} s)"):
                    block["thermal"] = _sustained(device, runner, remote, prefix, parsed, warmup,
                                                  threads, delegate, sustained_s, window_s,
                                                  timeout_s, cpus, block)
    except DeviceDisconnected as e:
        block["status"], block["failure"] = "failed", str(e)
        for key in MEASURED:
            if block.get(key) is None and f"{key}_reason" not in block:
                block[f"{key}_reason"] = f"not measured: {e}"
        raise ProfileIncomplete(str(e), block) from None
    finally:
        device.cleanup()
    return block


def _pinning(device, pin, threads, block) -> tuple[list[str], list[int] | None]:
    cpus = _parse_pin(device, pin)
    if cpus is None:
        return [], None
    if not device.has_command("taskset"):
        block["notes"].append(f"taskset is not on {device.name}: ran unpinned")
        return [], cpus
    block["pinned_cpus"] = cpus
    if threads > len(cpus):
        block["notes"].append(f"{threads} threads on {len(cpus)} pinned CPUs")
    return ["taskset", sysfs.taskset_mask(cpus)], cpus


def _main_run(device, runner, argv, remote, tmp, sampler, runs, timeout_s, block) -> Parsed:
    chunks: list[dict] = []

    def collect(line):
        chunks.extend(o for o in json_lines([line]) if "chunk" in o)
    if sampler:
        sampler.start()
    try:
        rc, out, err = _execute(device, argv, timeout_s, collect)
    except DeviceDisconnected:
        done = [t / 1e6 for c in chunks for t in c["times_ns"]]
        if done:  # the Python runner streams its runs: keep those that came through
            block["latency_ms"] = dict(latency_summary(done), partial=True)
            block["notes"].append(f"device disconnected after {len(done)} of {runs} runs")
        raise
    finally:
        if sampler:
            sampler.stop()
    if rc != 0:
        raise _runner_error(device, runner, rc, out, err)
    if runner.kind == "python":
        _pull_result(device, remote, tmp, out)
    return parse_output(runner.kind, out, err)


def _fill(block, runner, parsed: Parsed, sampler, device) -> None:
    notes = block["notes"]
    lat = block["latency_ms"] = latency_block(parsed)
    block["threads_applied"] = parsed.threads_applied
    block["peak_memory_bytes"] = parsed.peak_bytes
    if parsed.peak_reason:
        block["peak_memory_bytes_reason"] = parsed.peak_reason
    notes.extend(parsed.notes)
    if lat.get("cv") is not None and lat["cv"] > NOISY_CV:
        notes.append(f"noisy run: coefficient of variation {lat['cv']:.0%} > {NOISY_CV:.0%}; "
                     "close other work or raise --runs before trusting it")
    if runner.kind == "python":
        notes.append("timed through the board's Python runtime: includes Python call overhead")
    if sampler:
        mj, why, detail = sampler.result(_busy_s(parsed), lat["runs"] or 0)
        block["energy_mj_per_inference"], block["energy"] = mj, detail
        if why:
            block["energy_mj_per_inference_reason"] = why
        _recheck_charging(device, block)


def _energy_sampler(device, block, energy: bool, idle_s: float, interval_s: float, progress):
    if not energy:
        block["energy_mj_per_inference_reason"] = "energy was not asked for"
        return None
    src = sysfs.find_power_source(device)
    if src.value is None:
        block["energy_mj_per_inference_reason"] = src.reason
        return None
    if isinstance(src.value, sysfs.BatteryPower):
        ch = sysfs.charging(device)
        if ch.value is not False:
            block["energy_mj_per_inference_reason"] = (
                f"refused: the phone is charging ({ch.reason}); the battery current is then "
                "the charger's, not the SoC's draw: unplug USB power (use wireless adb)"
                if ch.value else f"refused: cannot tell whether the phone is charging ({ch.reason})")
            return None
    sampler = sysfs.EnergySampler(device, src.value, interval_s)
    with progress.task(f"sampling idle power on {device.name} ({idle_s:g} s)"):
        sampler.idle(idle_s)
    return sampler


def _recheck_charging(device, block) -> None:
    if block.get("energy", {}).get("source", "").startswith("battery"):
        ch = sysfs.charging(device)
        if ch.value:
            block["energy_mj_per_inference"] = None
            block["energy_mj_per_inference_reason"] = (f"refused: the phone started charging "
                                                       f"during the run ({ch.reason})")


def _pull_result(device, remote, tmp: Path, out: list[str]) -> None:
    """The Python runner also writes its result on the device: pull it (authoritative
    when the stdout stream was cut or mangled)."""
    local = tmp / "result.json"
    try:
        device.pull(f"{Path(remote['model']).parent}/result.json", local)
    except DeviceDisconnected:
        raise
    except RuntimeFailure:
        return  # stdout still has the result line
    out.append(local.read_text().strip() + "\n")


def _sustained(device, runner, remote, prefix, parsed, warmup, threads, delegate, seconds,
               window_s, timeout_s, cpus, block) -> dict:
    trace = sysfs.ThermalTrace(device, cpus)
    if runner.kind == "python":
        def on_line(line):
            for o in json_lines([line]):
                if "chunk" in o:
                    trace.add_window(o["mean_ns"] / 1e6 if o.get("runs") else None,
                                     o.get("runs", 0), o.get("t_s"))
        argv = prefix + runner_argv(runner, remote, 1, warmup, threads, delegate, seconds, window_s)
        try:
            rc, out, err = _execute(device, argv, seconds + timeout_s, on_line)
        except DeviceDisconnected:
            if trace.trace:
                block["thermal"] = dict(trace.summary(), partial=True)
            raise
        if rc != 0:
            raise _runner_error(device, runner, rc, out, err)
        return dict(trace.summary(), windows="back-to-back runs in one process")
    # Binary runners take a run count: one invocation per window, sized from the main run
    # at first, then from each window's own wall time (process start included).
    mean_ms = (sum(parsed.times_ms) / len(parsed.times_ms)) if parsed.times_ms else parsed.agg["mean"]
    per = max(1, min(100_000, round(window_s * 500 / max(mean_ms, 1e-3))))
    try:
        while trace.clock() - trace.t0 < seconds:
            argv = prefix + runner_argv(runner, remote, per, 0, threads, delegate)
            t0 = trace.clock()
            rc, out, err = _execute(device, argv, timeout_s)
            if rc != 0:
                raise _runner_error(device, runner, rc, out, err)
            trace.add_window(latency_block(parse_output(runner.kind, out, err))["mean"], per)
            wall = max(trace.clock() - t0, 1e-3)
            per = max(1, min(100_000, 4 * per, round(per * window_s / wall)))
    except DeviceDisconnected:
        if trace.trace:
            block["thermal"] = dict(trace.summary(), partial=True)
        raise
    return dict(trace.summary(), windows=f"one runner process per window of about {window_s:g} s "
                                         "(the model is reloaded between windows)")
