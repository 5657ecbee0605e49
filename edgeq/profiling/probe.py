"""``edgeq device probe``: measure a device and write its profile.

What is measured (each value is written with a ``# measured:`` comment; what cannot be
measured is written with ``# assumption:`` and why):

* CPU: core count (os.cpu_count, /proc/cpuinfo), clusters grouped by max clock from
  ``/sys/devices/system/cpu/cpu*/cpufreq`` (null with the reason when it is missing, as
  in most VMs), the core's name (``model name`` or ARM ``CPU part``).
* Peak GEMM rate per core, fp32 and int8: the full probe times a [256x1024]x[1024x1024]
  linear layer lowered to ExecuTorch + XNNPACK (the library artifacts run in) in the
  native runner, one thread, pinned to a core of each cluster when there are several
  (on one cluster the scheduler picks the idlest core); ``quick`` uses torch.mm /
  torch._int_mm instead (seconds, but another library's kernels).
* Dispatch cost: a chain of 64 tiny XNNPACK adds, time per operator (full probe only).
* Memory: size from /proc/meminfo; DRAM bandwidth from a STREAM-style triad
  (``c = a + 2b``, 3 x 64 MiB per pass), one thread and all cores; the last-level cache
  size from /sys/devices/system/cpu/cpu0/cache and its one-thread bandwidth from the
  same triad over 3/8 of it. Power and thermal constants are not measurable here.

The microbenchmarks go through a bench object (``LocalBench`` here: ``read_text``,
``cpu_count``, ``machine``, ``pin``/``unpin``, ``time_pte``, ``torch_gemm``,
``triad_gbps``). Another transport (adb, ssh) can provide the same methods, reusing
``facts_from`` on the device's /proc and /sys text and ``gemm_programs`` /
``dispatch_program`` (built on the host, timed by the device's native runner).
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

GEMM_M, GEMM_K, GEMM_N = 256, 1024, 1024
DISPATCH_OPS = 64
TRIAD_FLOATS = 16 * 2 ** 20  # 64 MiB per array: well past any last-level cache here


def _best_of(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# -- device facts (read_text: a callable path -> text or None, so any transport works) --
def facts_from(read_text, cpu_count: int, machine: str) -> dict:
    """Cores, clusters, core names, clocks and memory from /proc and /sys text."""
    cpuinfo = read_text("/proc/cpuinfo") or ""
    names, parts = [], []
    for line in cpuinfo.splitlines():
        key, _, val = line.partition(":")
        if key.strip() == "model name":
            names.append(val.strip())
        elif key.strip() == "CPU part":
            parts.append(val.strip())
    freqs, reason = {}, None
    for cpu in range(cpu_count):
        khz = read_text(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq")
        if khz and khz.strip().isdigit():
            freqs[cpu] = int(khz) / 1e6
    if len(freqs) < cpu_count:
        freqs = {}
        reason = "/sys/devices/system/cpu/cpu*/cpufreq is missing (a VM or a locked-down kernel)"
    groups: dict = {}
    for cpu in range(cpu_count):
        groups.setdefault(freqs.get(cpu), []).append(cpu)
    order = sorted(groups, key=lambda g: -(g or 0))
    core = names[0] if names else (f"ARM part {parts[-1]}" if parts else platform.processor()
                                   or machine)
    clusters = [{"name": "big" if i == 0 else f"cluster{i}", "cpus": groups[g],
                 "max_ghz": None if g is None else round(g, 3), "core": core}
                for i, g in enumerate(order)]
    cache_kb, level = None, 0  # the last-level data/unified cache cpu0 sees
    for i in range(8):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{i}/"
        lv, size = (read_text(base + "level") or "").strip(), (read_text(base + "size") or "")
        size = size.strip().upper()
        if (not lv.isdigit() or size[-1:] not in ("K", "M") or not size[:-1].isdigit()
                or (read_text(base + "type") or "").strip() == "Instruction"):
            continue
        kb = int(size[:-1]) * (1024 if size.endswith("M") else 1)
        if int(lv) >= level:
            cache_kb, level = kb, int(lv)
    mem_kb = None
    for line in (read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    abi = {"x86_64": "x86_64", "AMD64": "x86_64", "aarch64": "arm64-v8a",
           "arm64": "arm64-v8a", "armv7l": "armeabi-v7a"}.get(machine, machine)
    return {"clusters": clusters, "clock_reason": reason, "abi": abi,
            "cache_mb": None if cache_kb is None else round(cache_kb / 1024, 3),
            "cache_level": level or None,
            "memory_gb": None if mem_kb is None else round(mem_kb * 1024 / 1e9, 2)}


# -- programs built on the host, run by any device's native runner --------------------
def gemm_programs(workdir: Path) -> dict:
    """fp32 and int8 ``.pte`` files of one ``[M,K] x [K,N]`` linear layer (XNNPACK)."""
    import torch

    from edgeq.models import LoadedModel
    from edgeq.profiling.estimate import _ExampleData
    from edgeq.progress import QUIET
    from edgeq.quantize import pt2e
    from edgeq.recipes import load_recipe
    from edgeq.runtimes import get_runtime

    rt = get_runtime("executorch")
    torch.manual_seed(0)
    module = torch.nn.Linear(GEMM_K, GEMM_N).eval()
    example = (torch.randn(GEMM_M, GEMM_K),)
    out = {}
    for prec in ("fp32", "int8"):
        m = module
        if prec == "int8":
            lm = LoadedModel("probe-gemm", module, example, ["x"], "", None)
            m = pt2e.ptq(lm, rt.quantizer(load_recipe("int8"), False, []),
                         _ExampleData(example), QUIET)
        program, _ = rt.lower(torch.export.export(m, example))
        out[prec] = workdir / f"gemm-{prec}.pte"
        out[prec].write_bytes(program)
    return out


def dispatch_program(workdir: Path) -> Path:
    """A ``.pte`` of DISPATCH_OPS chained adds on 8 floats: time per op ~ dispatch."""
    import torch

    from edgeq.runtimes import get_runtime

    class Chain(torch.nn.Module):
        def forward(self, x, y):
            for _ in range(DISPATCH_OPS):
                x = x + y
            return x

    ex = (torch.randn(1, 8), torch.randn(1, 8))
    program, _ = get_runtime("executorch").lower(torch.export.export(Chain(), ex))
    path = workdir / "dispatch.pte"
    path.write_bytes(program)
    return path


# -- the local bench --------------------------------------------------------------------
class LocalBench:
    """Microbenchmarks on this machine. ``pin(cpus)`` restricts the process (and the
    runner it starts) to those cpu ids."""

    name = "local"

    def read_text(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except OSError:
            return None

    def cpu_count(self) -> int:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)

    def machine(self) -> str:
        return platform.machine()

    def pin(self, cpus):
        if not hasattr(os, "sched_setaffinity"):
            return None
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, set(cpus))
        return before

    def unpin(self, before) -> None:
        if before is not None:
            os.sched_setaffinity(0, before)

    def time_pte(self, pte: Path, inputs, threads: int, runs: int) -> float:
        """Best time of one run, seconds."""
        from edgeq.runtimes.executorch import native

        r = native.run(native.build_runner(), pte, inputs, runs, 3, threads)
        return min(r.times_ms) / 1e3

    def torch_gemm(self, precision: str, threads: int, reps: int) -> float:
        import torch

        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            if precision == "int8":
                a = torch.randint(-128, 127, (GEMM_M * 2, GEMM_K), dtype=torch.int8)
                b = torch.randint(-128, 127, (GEMM_K, GEMM_N), dtype=torch.int8)
                t = _best_of(lambda: torch._int_mm(a, b), reps)
            else:
                a, b = torch.randn(GEMM_M * 2, GEMM_K), torch.randn(GEMM_K, GEMM_N)
                t = _best_of(lambda: torch.mm(a, b), reps)
        finally:
            torch.set_num_threads(saved)
        return 2 * GEMM_M * 2 * GEMM_K * GEMM_N / t / 1e9

    def triad_gbps(self, threads: int, reps: int, floats: int = TRIAD_FLOATS) -> float:
        """STREAM triad ``c = a + 2b`` on three arrays of ``floats`` fp32 values."""
        import torch

        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            a, b = torch.ones(floats), torch.ones(floats)
            c = torch.empty(floats)
            t = _best_of(lambda: torch.add(a, b, alpha=2.0, out=c), reps)
        finally:
            torch.set_num_threads(saved)
        return 3 * floats * 4 / t / 1e9


def _cluster_peaks(bench, cpu: int | None, programs: dict | None,
                   reps: int) -> tuple[dict, str]:
    """Per-core GEMM peaks {fp32: GFLOP/s, int8: GOP/s} on ``cpu`` (None: wherever the
    scheduler puts the one thread, which dodges a core busy with other work), and how."""
    saved = bench.pin([cpu]) if cpu is not None else None
    try:
        if programs is None:
            return ({p: bench.torch_gemm(p, 1, reps) for p in ("fp32", "int8")},
                    "torch.mm / torch._int_mm [512x1024]x[1024x1024], 1 thread (quick probe)")
        x = np.random.default_rng(0).standard_normal((GEMM_M, GEMM_K)).astype(np.float32)
        runs = 5 * reps
        peaks = {p: 2 * GEMM_M * GEMM_K * GEMM_N / bench.time_pte(programs[p], [x], 1, runs)
                 / 1e9 for p in ("fp32", "int8")}
        where = "" if cpu is None else f" on cpu {cpu}"
        return peaks, (f"XNNPACK linear [{GEMM_M}x{GEMM_K}]x[{GEMM_K}x{GEMM_N}] in the native "
                       f"ExecuTorch runner, 1 thread{where}, best of {runs}")
    finally:
        bench.unpin(saved)


def probe(bench=None, quick: bool = False, progress=None) -> dict:
    """Measure the device behind ``bench`` (default: this machine). Returns the profile
    as a dict plus ``_notes`` (field -> how it was obtained) for ``profile_yaml``."""
    import tempfile

    from edgeq.progress import QUIET

    bench, progress = bench or LocalBench(), progress or QUIET
    facts = facts_from(bench.read_text, bench.cpu_count(), bench.machine())
    notes: dict = {"clock_reason": facts["clock_reason"],
                   "dispatch_us": "assumption: the quick probe does not measure dispatch"}
    reps, clusters, dispatch = (3 if quick else 10), [], 1.0
    with tempfile.TemporaryDirectory(prefix="edgeq-probe-") as td:
        programs = None
        if not quick:
            with progress.task("building the GEMM and dispatch microbenchmarks"):
                programs = gemm_programs(Path(td))
                programs["dispatch"] = dispatch_program(Path(td))
        hetero = len(facts["clusters"]) > 1  # pin only to tell clusters apart
        for i, cl in enumerate(facts["clusters"]):
            with progress.task(f"timing GEMMs on {cl['name']} cores {cl['cpus']}"):
                peaks, how = _cluster_peaks(bench, cl["cpus"][0] if hetero else None,
                                            programs, reps)
            notes[f"clusters.{i}.fp32"] = notes[f"clusters.{i}.int8"] = f"measured: {how}"
            notes[f"clusters.{i}.cpus"] = cl["cpus"]
            clusters.append({"name": cl["name"], "cores": len(cl["cpus"]), "core": cl["core"],
                             "max_ghz": cl["max_ghz"], "big": i == 0,
                             "fp32_gflops_per_core": round(peaks["fp32"], 1),
                             "int8_gops_per_core": round(peaks["int8"], 1)})
        if programs:
            with progress.task("timing operator dispatch"):
                small = [np.ones((1, 8), np.float32)] * 2
                t = bench.time_pte(programs["dispatch"], small, 1, 200)
            dispatch = t / DISPATCH_OPS * 1e6
            notes["dispatch_us"] = (f"measured: {DISPATCH_OPS} chained XNNPACK adds on 8 "
                                    "floats, best of 200 runs / operators")
    n, first_cpu = bench.cpu_count(), facts["clusters"][0]["cpus"][0]
    with progress.task("timing memory bandwidth"):
        bw1 = bench.triad_gbps(1, reps)
        bwn = max(bw1, bench.triad_gbps(n, reps)) if n > 1 else bw1
        cache_bw = None
        if facts["cache_mb"]:  # 3 arrays filling 3/8 of the last-level cache: not L1/L2
            floats = int(facts["cache_mb"] * 2 ** 20 / 8 / 4)
            hetero = len(facts["clusters"]) > 1
            saved = bench.pin([first_cpu]) if hetero else None
            try:
                cache_bw = bench.triad_gbps(1, reps * 5, floats)
            finally:
                bench.unpin(saved)
            notes["cache_bw"] = (f"measured: triad over 3 x {floats * 4 / 2 ** 20:.1f} MiB "
                                 f"(3/8 of the L{facts['cache_level']}), 1 thread"
                                 f"{f' on cpu {first_cpu}' if hetero else ''}, best of {reps * 5}")
    notes["cache_mb"] = (f"measured: L{facts['cache_level']} size from /sys/devices/system/"
                         "cpu/cpu0/cache" if facts["cache_mb"] else
                         "unknown: /sys/devices/system/cpu/cpu0/cache is missing")
    notes["bandwidth"] = (f"measured: triad c = a + 2b over 3 x 64 MiB, {n} threads, "
                          f"best of {reps}")
    notes["bandwidth_1t"] = f"measured: the same triad, 1 thread, best of {reps}"
    big_cpus = facts["clusters"][0]["cpus"]
    return {
        "name": "host", "kind": "host",
        "description": f"this machine ({platform.node() or 'host'}), probed "
                       f"{time.strftime('%Y-%m-%d')}{' (quick)' if quick else ''}",
        "soc": clusters[0]["core"], "abi": facts["abi"], "peak_basis": "measured",
        "clusters": clusters,
        "big_cores": f"{big_cpus[0]}-{big_cpus[-1]}" if len(big_cpus) > 1 else str(big_cpus[0]),
        "memory": {"size_gb": facts["memory_gb"], "bandwidth_gbps": round(bwn, 1),
                   "bandwidth_1t_gbps": round(bw1, 1), "cache_mb": facts["cache_mb"],
                   "cache_bandwidth_1t_gbps": None if cache_bw is None else round(cache_bw, 1)},
        "delegates": ["xnnpack"], "dispatch_us": round(dispatch, 3), "_notes": notes,
    }


# -- writing the profile ----------------------------------------------------------------
# What a probe cannot measure: written as assumptions, to be edited with the device's data.
_UNMEASURED = {
    "power.idle_w": (2.0, "assumption: not measurable here (no power sensor); a server's "
                          "idle share for a few vCPUs"),
    "power.cpu_active_w": (3.5, "assumption: W per busy core, typical of x86 server and "
                                "big Arm cores at full clock (no power sensor here)"),
    "thermal.r_c_per_w": (0.3, "assumption: actively cooled (server / desktop heatsink)"),
    "thermal.c_j_per_c": (400.0, "assumption: heatsink of ~450 g aluminium x 0.9 J/(g C)"),
    "thermal.ambient_c": (25.0, "assumption: room temperature"),
    "thermal.throttle_c": (95.0, "assumption: typical CPU junction limit (Tj max)"),
    "thermal.throttled_clock_ratio": (0.8, "assumption: base clock / boost clock"),
}


def _y(v) -> str:
    import json

    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))


def profile_yaml(p: dict) -> str:
    """The profile as YAML, every value with a ``# measured:`` or ``# assumption:`` note."""
    n = p.get("_notes", {})
    lines = ["# Device profile written by `edgeq device probe`. Values marked 'measured' "
             "come from",
             "# microbenchmarks on the device; 'assumption' values were not measurable: "
             "edit them.",
             f"name: {_y(p['name'])}", f"description: {_y(p['description'])}",
             f"kind: {p['kind']}", f"soc: {_y(p['soc'])}  # measured: /proc/cpuinfo",
             f"abi: {p['abi']}  # measured: platform.machine()",
             f"peak_basis: {p['peak_basis']}  # peaks below are measured rates, not theory",
             "clusters:"]
    for i, c in enumerate(p["clusters"]):
        cpus = n.get(f"clusters.{i}.cpus", [])
        ghz_note = ("measured: cpufreq cpuinfo_max_freq" if c["max_ghz"] is not None else
                    f"unknown: {n.get('clock_reason')}")
        lines += [f"  - name: {_y(c['name'])}",
                  f"    cores: {c['cores']}  # measured: cpus {cpus} share this max clock",
                  f"    core: {_y(c['core'])}  # measured: /proc/cpuinfo",
                  f"    max_ghz: {_y(c['max_ghz'])}  # {ghz_note}",
                  f"    big: {_y(c['big'])}  # the fastest cluster",
                  f"    fp32_gflops_per_core: {c['fp32_gflops_per_core']}  "
                  f"# {n.get(f'clusters.{i}.fp32')}",
                  f"    int8_gops_per_core: {c['int8_gops_per_core']}  "
                  f"# {n.get(f'clusters.{i}.int8')}"]
    m = p["memory"]
    lines += [f"big_cores: {_y(p['big_cores'])}  # cpu ids of the fastest cluster",
              "memory:",
              f"  size_gb: {_y(m['size_gb'])}  # measured: /proc/meminfo MemTotal",
              f"  bandwidth_gbps: {m['bandwidth_gbps']}  # {n.get('bandwidth')}",
              f"  bandwidth_1t_gbps: {m['bandwidth_1t_gbps']}  # {n.get('bandwidth_1t')}",
              f"  cache_mb: {_y(m['cache_mb'])}  # {n.get('cache_mb')}",
              f"  cache_bandwidth_1t_gbps: {_y(m['cache_bandwidth_1t_gbps'])}  "
              f"# {n.get('cache_bw', 'unknown: no cache size to size the test')}",
              "delegates: [xnnpack]  # the CPU delegate edgeq runs on this host",
              f"dispatch_us: {p['dispatch_us']}  # {n.get('dispatch_us')}"]
    v, why = _UNMEASURED["power.idle_w"]
    lines += ["power:", f"  idle_w: {v}  # {why}", "  cpu_active_w:"]
    v, why = _UNMEASURED["power.cpu_active_w"]
    lines += [f"    {c['name']}: {v}  # {why}" for c in p["clusters"]]
    lines.append("thermal:")
    for key, (v, why) in _UNMEASURED.items():
        if key.startswith("thermal."):
            lines.append(f"  {key.split('.', 1)[1]}: {v}  # {why}")
    return "\n".join(lines) + "\n"


def write_profile(p: dict, out: Path, force: bool = False) -> Path:
    """Validate the probed profile and write it atomically to ``out``."""
    import yaml

    from edgeq.artifacts import atomic_write
    from edgeq.devices.profiles import from_dict
    from edgeq.errors import BadInput

    out = Path(out)
    if out.exists() and not force:
        raise BadInput(f"'{out}' already exists; pass --force to overwrite or choose another -o")
    if not out.parent.is_dir():
        raise BadInput(f"output folder '{out.parent}' does not exist")
    text = profile_yaml(p)
    from_dict(yaml.safe_load(text), str(out), out)  # never write a profile we cannot load
    atomic_write(out, text.encode())
    return out
