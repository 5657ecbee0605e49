"""Device runners: which program times an artifact on a device, how it is called, and how
its own output is read. Runners, by artifact format, are named once per ABI in a runner
config (YAML, default ``~/.config/edgeq/runners.yaml``, ``$EDGEQ_RUNNERS`` overrides)::

    arm64-v8a:
      pte: ~/android/edgeq-et-runner      # runner.cpp cross-built with the NDK
      tflite: ~/android/benchmark_model   # LiteRT's benchmark tool
      onnx: ~/android/onnxruntime_perf_test
    python: python3                       # the board's interpreter for scripts/edgeq_bench.py
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.devices.transport import normalize_abi
from edgeq.errors import BadInput, RuntimeFailure
from edgeq.profiling.stats import latency_summary

ELF_MACHINES = {0x03: "x86", 0x28: "armeabi-v7a", 0x3E: "x86_64", 0xB7: "arm64-v8a",
                0xF3: "riscv64"}

@dataclass
class Runner:
    """``kind``: ``native`` and ``python`` speak edgeq's runner protocol (JSON lines);
    any other kind is a runtime's own tool (LiteRT's ``benchmark_model``...), whose
    command line and output the runtime ``runtime`` knows (its ``device_runner()``)."""

    kind: str
    path: str  # host path of the binary or script
    python: str | None = None
    runtime: str | None = None

@dataclass
class Parsed:
    times_ms: list[float] | None = None
    agg: dict | None = None  # aggregates when the runner prints no per-run times
    peak_bytes: int | None = None
    peak_reason: str | None = None
    threads_applied: bool | None = None
    notes: list[str] = field(default_factory=list)

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

def _device_runner(fmt: str):
    """(runtime name, its device_runner module) for an artifact extension; None if none."""
    from edgeq.runtimes import get_runtime
    from edgeq.targets import target_for_file

    target = target_for_file(fmt)
    if target is None:
        return None, None
    return target.runtime, get_runtime(target.runtime).device_runner()


def _runner_for_kind(kind: str):
    """The device_runner module of the runtime whose own tool is ``kind``."""
    from edgeq.runtimes import get_runtime
    from edgeq.targets import all_targets

    for name in dict.fromkeys(t.runtime for t in all_targets().values()):
        dr = get_runtime(name).device_runner()
        if dr.RUNNER_KIND == kind:
            return dr
    raise RuntimeFailure(f"unknown runner kind {kind}")


def resolve_runner(device, fmt: str, config: dict) -> Runner:
    """The runner for ``fmt`` (``.pte``...) on ``device``: the config's binary for the
    device's ABI, else the Python script (ssh, local), else the runtime's host-built
    runner on ``local``. BadInput when the config is wrong or has none."""
    runtime, dr = _device_runner(fmt)
    if dr is None:
        raise BadInput(f"cannot profile '{fmt}' files on a device (.pte, .tflite, .onnx, .ort)")
    key = dr.RUNNER_KEY
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
        return Runner(dr.RUNNER_KIND, str(path), runtime=runtime)
    if device.kind == "local" and hasattr(dr, "local_runner"):
        local = dr.local_runner()
        if local is not None:
            return Runner(dr.RUNNER_KIND, local, runtime=runtime)
    if device.kind in ("ssh", "local"):
        python = config.get("python") or (sys.executable if device.kind == "local" else "python3")
        return Runner("python", str(bench_script()), python=str(python), runtime=runtime)
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

def json_lines(lines: list[str]) -> list[dict]:
    out = []
    for ln in lines:
        ln = ln.strip()
        if ln.startswith("{"):
            try:
                out.append(json.loads(ln))
            except ValueError:
                pass
    return out

def parse_output(kind: str, lines: list[str], stderr: str = "") -> Parsed:
    """Read a runner's own output: JSON lines (``native``, ``python``: edgeq's protocol),
    else the parser of the runtime whose tool ``kind`` is (benchmark_model's log...)."""
    if kind in ("native", "python"):
        objs = [o for o in json_lines(lines) if "times_ns" in o]
        final = next((o for o in reversed(objs) if "chunk" not in o), None)
        if final is None:
            raise RuntimeFailure(f"the {kind} runner printed no result line")
        kb = final.get("vmhwm_kb")
        ok = isinstance(kb, int) and kb > 0
        return Parsed([t / 1e6 for t in final["times_ns"]], None, kb * 1024 if ok else None,
                      None if ok else "VmHWM of the runner process was not readable",
                      final.get("threads_applied"))
    return _runner_for_kind(kind).parse_runner_output("".join(lines) + "\n" + stderr)

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
    return _runner_for_kind(runner.kind).runner_argv(r, m, runs, warmup, threads, delegate)
