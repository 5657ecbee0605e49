"""Profile an artifact on a Device (local, adb, ssh): push the artifact, its inputs and a
runner; wait for the device to cool down; run pinned with ``taskset``; parse the runner's
own output; sample power and temperatures meanwhile; clean up. Returns the same profile
block as ``edgeq.stages.profile_local`` (latencies in ms, memory in bytes, energy in mJ
per inference, temperatures in °C, clocks in MHz).

Runners, by artifact format, named once per ABI in a runner config (YAML, default
``~/.config/edgeq/runners.yaml``, ``$EDGEQ_RUNNERS`` overrides the path)::

    arm64-v8a:
      pte: ~/android/edgeq-et-runner      # runner.cpp cross-built with the NDK
      tflite: ~/android/benchmark_model   # LiteRT's benchmark tool
      onnx: ~/android/onnxruntime_perf_test
    python: python3                       # the board's interpreter for scripts/edgeq_bench.py

Without an entry, ssh boards (and ``local``) run ``scripts/edgeq_bench.py`` with the
board's own pip runtimes, and ``local`` times ``.pte`` with the host build of runner.cpp.

Beyond profile_local's keys the block carries ``abi``, ``runtime``, ``pinned_cpus``,
``cooldown`` (when asked), ``energy`` (sensor, idle / active W, sample counts) and, when
the device went away mid-profile, ``status: failed`` and ``failure``."""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.devices import sysfs
from edgeq.devices.transport import DeviceDisconnected, normalize_abi
from edgeq.errors import BadInput, RuntimeFailure
from edgeq.profiling.stats import NOISY_CV, latency_summary
from edgeq.progress import QUIET

FORMAT_KEYS = {".pte": "pte", ".tflite": "tflite", ".onnx": "onnx", ".ort": "onnx"}
KINDS = {"pte": "native", "tflite": "benchmark_model", "onnx": "onnxruntime_perf_test"}
ELF_MACHINES = {0x03: "x86", 0x28: "armeabi-v7a", 0x3E: "x86_64", 0xB7: "arm64-v8a",
                0xF3: "riscv64"}
MEASURED = ("latency_ms", "peak_memory_bytes", "energy_mj_per_inference", "thermal")


class ProfileIncomplete(RuntimeFailure):
    """The device went away mid-profile. ``block`` holds what was measured; the rest is
    null with a reason and ``status`` is ``failed``. Exit 3."""

    def __init__(self, message: str, block: dict):
        super().__init__(message)
        self.block = block


@dataclass
class Runner:
    kind: str  # native | benchmark_model | onnxruntime_perf_test | python
    path: str  # host path of the binary or script
    python: str | None = None


@dataclass
class Parsed:
    times_ms: list[float] | None = None
    agg: dict | None = None  # aggregates when the runner prints no per-run times
    peak_bytes: int | None = None
    peak_reason: str | None = None
    threads_applied: bool | None = None
    notes: list[str] = field(default_factory=list)


# -- runner config --------------------------------------------------------------------------
def runners_config_path() -> Path:
    return Path(os.environ.get("EDGEQ_RUNNERS") or "~/.config/edgeq/runners.yaml").expanduser()


def load_runner_config(config=None) -> dict:
    """A dict as is; a path (or None: the default path, if the file exists) read as YAML.
    ABI keys are normalized (aarch64 -> arm64-v8a); ``_source`` names the file."""
    if isinstance(config, dict):
        raw, src = config, "runner config"
    else:
        path = Path(config).expanduser() if config else runners_config_path()
        if not path.is_file():
            if config:
                raise BadInput(f"runner config '{path}' not found")
            return {"_source": str(path)}
        import yaml

        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise BadInput(f"runner config '{path}' is not valid YAML: {e}") from None
        if not isinstance(raw, dict):
            raise BadInput(f"runner config '{path}': expected a mapping of ABI -> runners")
        src = str(path)
    out = {"_source": src}
    for k, v in raw.items():
        out[k if k in ("python", "_source") else normalize_abi(str(k))] = v
    return out


def elf_abi(path: Path) -> str | None:
    """The ABI an ELF executable was built for (None when it is not ELF)."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return ELF_MACHINES.get(machine, f"ELF machine {machine:#x}")


def bench_script() -> Path:
    from edgeq.resources import resource_dir

    try:
        return resource_dir("scripts") / "edgeq_bench.py"
    except FileNotFoundError:
        raise RuntimeFailure("this edgeq installation is missing scripts/edgeq_bench.py") from None


def resolve_runner(device, fmt: str, config: dict) -> Runner:
    """The runner for ``fmt`` (``.pte``...) on ``device``: the config's binary for the
    device's ABI, else the Python script (ssh, local), else the host-built native
    runner for ``.pte`` on ``local``. BadInput when the config is wrong or has none."""
    key = FORMAT_KEYS.get(fmt)
    if key is None:
        raise BadInput(f"cannot profile '{fmt}' files on a device (.pte, .tflite, .onnx, .ort)")
    abi, src = device.abi(), config.get("_source", "runner config")
    entry = (config.get(abi) or {}).get(key) if isinstance(config.get(abi), dict) else None
    if entry:
        path = Path(str(entry)).expanduser()
        if not path.is_file():
            raise BadInput(f"{src}: {abi}.{key} runner '{path}' does not exist")
        built = elf_abi(path)
        if built is not None and built != abi:
            raise BadInput(f"{src}: {abi}.{key} runner '{path}' is built for {built}, but "
                           f"{device.name} is {abi}")
        return Runner(KINDS[key], str(path))
    if device.kind == "local" and key == "pte":
        from edgeq.runtimes.executorch import native

        if native.compiler() is not None:
            return Runner("native", str(native.build_runner()))
    if device.kind in ("ssh", "local"):
        python = config.get("python") or (sys.executable if device.kind == "local" else "python3")
        return Runner("python", str(bench_script()), python=str(python))
    raise BadInput(f"no {key} runner for {device.name} ({abi}): name one in {src} as "
                   f"'{abi}: {{{key}: PATH}}' (see the README for the NDK build)")


def doctor_rows(config=None) -> list[tuple[str, bool, str]]:
    """(component, ok, detail or fix) rows for ``edgeq doctor``: the adb and ssh clients,
    the runner config and each runner it names (present, executable, right ABI)."""
    import shutil

    adb = os.environ.get("EDGEQ_ADB") or shutil.which("adb")
    rows = [("adb client", bool(adb), adb or "apt-get install adb (for --device adb)"),
            ("ssh / scp", bool(shutil.which("ssh") and shutil.which("scp")),
             "found" if shutil.which("scp") else "apt-get install openssh-client (for ssh://)")]
    try:
        cfg = load_runner_config(config)
    except BadInput as e:
        return rows + [("runner config", False, str(e))]
    src = cfg["_source"]
    abis = {k: v for k, v in cfg.items() if isinstance(v, dict)}
    rows.append(("runner config", True, f"{src}: {', '.join(abis) or 'no runners named'}"
                 if isinstance(config, dict) or Path(src).is_file() else f"{src} absent: ssh boards use "
                 "scripts/edgeq_bench.py; phones need runners named there"))
    for abi, entries in abis.items():
        for key, path in entries.items():
            p = Path(str(path)).expanduser()
            built = elf_abi(p) if p.is_file() else None
            why = ("missing" if not p.is_file() else "not executable" if not os.access(p, os.X_OK)
                   else f"built for {built}" if built and built != abi else "")
            rows.append((f"runner {abi}.{key}", not why, why and f"{p}: {why}" or str(p)))
    return rows


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


def _json_lines(lines: list[str]) -> list[dict]:
    out = []
    for ln in lines:
        ln = ln.strip()
        if ln.startswith("{"):
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
    return out


def _kv(line: str) -> dict:
    return {k: float(v) for k, v in re.findall(r"(\w+)=(-?[\d.]+(?:e[-+]?\d+)?)", line)}


def parse_output(kind: str, lines: list[str], stderr: str = "") -> Parsed:
    """Read a runner's own output: JSON lines (native, python); ``benchmark_model``'s
    log (µs aggregates); ``onnxruntime_perf_test``'s summary (ms average, s percentiles)."""
    text = "".join(lines) + "\n" + stderr
    if kind in ("native", "python"):
        objs = [o for o in _json_lines(lines) if "times_ns" in o]
        final = next((o for o in reversed(objs) if "chunk" not in o), None)
        if final is None:
            raise RuntimeFailure(f"the {kind} runner printed no result line")
        kb = final.get("vmhwm_kb")
        ok = isinstance(kb, int) and kb > 0
        return Parsed([t / 1e6 for t in final["times_ns"]], None, kb * 1024 if ok else None,
                      None if ok else "VmHWM of the runner process was not readable",
                      final.get("threads_applied"))
    if kind == "benchmark_model":
        stats = [ln for ln in text.splitlines() if "count=" in ln]
        summary = re.search(r"Inference \(avg\): ([\d.e+]+)", text)
        if not stats and not summary:
            raise RuntimeFailure("benchmark_model printed no timings")
        kv = _kv(stats[-1]) if stats else {}
        same = bool(stats) and "(all same)" in stats[-1]
        mean = kv.get("avg") or (kv.get("curr") if same else None) or float(summary.group(1))
        agg = {"mean": mean / 1e3, "std": kv.get("std", 0.0 if same else None),
               "min": kv.get("min", mean) / 1e3, "runs": int(kv.get("count", 0)) or None,
               "p50": kv["median"] / 1e3 if "median" in kv else None}
        if agg["std"] is not None:
            agg["std"] /= 1e3
        peak = re.search(r"peak memory footprint \(MB\)[^:]*:\s*([\d.]+)", text, re.I)
        return Parsed(None, agg, int(float(peak.group(1)) * 2**20) if peak else None,
                      None if peak else "benchmark_model reported no peak memory",
                      True, ["benchmark_model feeds random inputs; peak memory is its own "
                             "sampling every 50 ms, not VmHWM"] if peak else
                      ["benchmark_model feeds random inputs"])
    if kind == "onnxruntime_perf_test":
        avg = re.search(r"Average inference time cost[^:]*:\s*([\d.e+]+)\s*ms", text)
        if not avg:
            raise RuntimeFailure("onnxruntime_perf_test printed no average inference time")
        pct = {int(p): float(v) * 1e3 for p, v in
               re.findall(r"P(\d+) Latency(?: is)?:?\s*([\d.e+-]+)\s*s", text)}
        mn = re.search(r"Min Latency(?: is)?:?\s*([\d.e+-]+)\s*s", text)
        n = re.search(r"Total inference requests:\s*(\d+)", text)
        peak = re.search(r"Peak working set size:\s*(\d+)\s*bytes", text)
        agg = {"mean": float(avg.group(1)), "std": None, "min": float(mn.group(1)) * 1e3 if mn else None,
               "runs": int(n.group(1)) if n else None,
               "p50": pct.get(50), "p90": pct.get(90), "p99": pct.get(99)}
        return Parsed(None, agg, int(peak.group(1)) if peak else None,
                      None if peak else "onnxruntime_perf_test reported no peak working set",
                      True, ["onnxruntime_perf_test feeds random inputs (-I) and does one "
                             "warm-up run of its own"])
    raise RuntimeFailure(f"unknown runner kind {kind}")


def latency_block(p: Parsed) -> dict:
    """latency_summary of per-run times, or the runner's aggregates in the same keys."""
    if p.times_ms is not None:
        return latency_summary(p.times_ms)
    a = p.agg
    out = {k: None if a.get(k) is None else round(a[k], 4)
           for k in ("p50", "p90", "p99", "mean", "std", "min")}
    out["cv"] = round(a["std"] / a["mean"], 4) if a.get("std") is not None and a["mean"] else None
    out["runs"] = a.get("runs")
    if None in (out["p50"], out["p90"], out["p99"]):
        out["percentiles_reason"] = ("the runner prints only aggregates (count, min, max, avg, "
                                     "std), no per-run times")
    return out


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


def runner_argv(runner: Runner, remote: dict, runs: int, warmup: int, threads: int,
                delegate: str | None = None, sustained_s=None, window_s=1.0) -> list[str]:
    m, r = remote["model"], remote["runner"]
    if runner.kind == "native":
        return [r, "--model", m, "--runs", str(runs), "--warmup", str(warmup),
                "--threads", str(threads), *(a for p in remote["inputs"] for a in ("--input", p))]
    if runner.kind == "python":
        argv = [runner.python, r, "--model", m, "--inputs", remote["inputs"], "--runs", str(runs),
                "--warmup", str(warmup), "--threads", str(threads), "--window", str(window_s),
                "--out", f"{Path(m).parent}/result.json"]
        return argv + (["--sustained", str(sustained_s)] if sustained_s else [])
    if runner.kind == "benchmark_model":
        flag = {"xnnpack": ["--use_xnnpack=true"], "nnapi": ["--use_nnapi=true"],
                "gpu": ["--use_gpu=true"]}.get(delegate or "", [])
        return [r, f"--graph={m}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
                "--min_secs=0", "--warmup_min_secs=0", "--max_secs=100000",
                f"--num_threads={threads}", "--report_peak_memory_footprint=true", *flag]
    ep = {"nnapi": "nnapi", "xnnpack": "xnnpack"}.get(delegate or "", "cpu")
    return [r, "-m", "times", "-r", str(runs), "-x", str(threads), "-e", ep, "-I", m]


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
        chunks.extend(o for o in _json_lines([line]) if "chunk" in o)
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
            for o in _json_lines([line]):
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
