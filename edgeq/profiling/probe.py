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
``triad_gbps``).

Other devices (``adb``, ``adb:SERIAL``, ``ssh://USER@HOST[:PORT]``) go through
``DeviceBench(device, runner_config)``: the same ``facts_from`` on the device's /proc and
/sys text (read with ``device.read_files``; an unreadable value is null with the device's
reason: missing, permission denied); the same GEMM and dispatch programs plus an
``add_program`` (``c = a + b``, 3 x 64 MiB, the bandwidth test: a numpy triad cannot run
on a phone), built on the host once (cached under ``$EDGEQ_CACHE/probe``) and timed on
the device by ``edgeq.profiling.remote.profile_on_device`` (pushed with the runner config's
native runner for the device's ABI, or scripts/edgeq_bench.py with an ssh board's
Python), pinned with taskset to a core of each cluster. ``quick`` there means fewer runs,
a 3 x 32 MiB bandwidth test, and no 1-thread or cache bandwidth (null, said so).
The memory size is required by a profile: when the device's /proc/meminfo is unreadable
the probe fails rather than guess. Power and thermal constants are assumptions typical
of a phone (adb) or a board (ssh), marked as such.
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
def facts_from(read_text, cpu_count: int, machine: str, reason_of=None) -> dict:
    """Cores, clusters, core names, clocks and memory from /proc and /sys text.
    ``reason_of`` (path -> why it was unreadable, for a remote device) words the reasons
    for the values left null; without it the host's platform fills a missing core name."""
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
        reason = "/sys/devices/system/cpu/cpu*/cpufreq is missing (a VM or a locked-down kernel)"
        if reason_of is not None:
            path = next(f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq"
                        for c in range(cpu_count) if c not in freqs)
            reason = f"{path}: {reason_of(path) or 'not a number'}"
        freqs = {}
    groups: dict = {}
    for cpu in range(cpu_count):
        groups.setdefault(freqs.get(cpu), []).append(cpu)
    order = sorted(groups, key=lambda g: -(g or 0))
    host_name = platform.processor() if reason_of is None else ""
    core = names[0] if names else (f"ARM part {parts[-1]}" if parts else host_name
                                   or f"unknown {machine} core")
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
    why = reason_of or (lambda path: "missing")
    return {"clusters": clusters, "clock_reason": reason, "abi": abi,
            "core_named": bool(names or parts),
            "memory_reason": None if mem_kb is not None else
            f"/proc/meminfo: {why('/proc/meminfo') or 'no MemTotal line'}",
            "cache_reason": None if cache_kb is not None else
            f"/sys/devices/system/cpu/cpu0/cache: "
            f"{why('/sys/devices/system/cpu/cpu0/cache/index0/size') or 'no data cache listed'}",
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
    if isinstance(bench, DeviceBench):
        return _probe_device(bench, quick, progress)
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


# -- a device reached through edgeq.devices.transport (adb, ssh) ------------------------------
PROGRAMS_VERSION = "probe-programs-v1"
COPY_FLOATS = TRIAD_FLOATS          # bandwidth program: 3 x 64 MiB per run
COPY_FLOATS_QUICK = 8 * 2 ** 20     # quick probe: 3 x 32 MiB per run


def _programs_dir() -> Path:
    """Host cache of the microbenchmark programs, keyed by the torch / executorch versions
    (lowering them costs ~15 s; they do not depend on the device)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        key = f"{PROGRAMS_VERSION}-torch{version('torch')}-et{version('executorch')}"
    except PackageNotFoundError:
        key = PROGRAMS_VERSION
    base = Path(os.environ.get("EDGEQ_CACHE", "~/.cache/edgeq")).expanduser() / "probe"
    d = base / key
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached(names: list[str], build) -> list[Path]:
    """``names`` in the program cache, made by ``build(tmpdir) -> {name: path}`` when any
    is missing; files are moved in atomically so concurrent probes never see half a file."""
    import tempfile

    d = _programs_dir()
    if not all((d / n).is_file() for n in names):
        with tempfile.TemporaryDirectory(prefix="edgeq-probe-build-", dir=d) as td:
            built = build(Path(td))
            for n in names:
                os.replace(built[n], d / n)
    return [d / n for n in names]


def add_program(workdir: Path, floats: int) -> Path:
    """A ``.pte`` of one XNNPACK add ``c = a + b`` over ``floats`` fp32 values per array:
    streams 3 x floats x 4 bytes per run (the device-side bandwidth test)."""
    import torch

    from edgeq.runtimes import get_runtime

    class Add(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    shape = (floats // 1024, 1024)
    ex = (torch.ones(shape), torch.ones(shape))
    program, _ = get_runtime("executorch").lower(torch.export.export(Add(), ex))
    path = workdir / f"add-{floats}.pte"
    path.write_bytes(program)
    return path


def device_programs(quick: bool) -> dict:
    """The GEMM (fp32, int8), dispatch and bandwidth programs, from the host cache."""
    fp32, int8 = _cached(["gemm-fp32.pte", "gemm-int8.pte"],
                         lambda td: {f"gemm-{k}.pte": v for k, v in gemm_programs(td).items()})
    (disp,) = _cached(["dispatch.pte"], lambda td: {"dispatch.pte": dispatch_program(td)})
    floats = COPY_FLOATS_QUICK if quick else COPY_FLOATS
    (copy,) = _cached([f"add-{floats}.pte"],
                      lambda td: {f"add-{floats}.pte": add_program(td, floats)})
    return {"fp32": fp32, "int8": int8, "dispatch": disp, "copy": copy, "copy_floats": floats}


class DeviceBench:
    """Microbenchmarks on a ``Device`` (``edgeq.devices.transport``: adb, ssh, local):
    facts through ``device.read_files``; programs built on the host, pushed and timed by
    the device's runner through ``edgeq.profiling.remote.profile_on_device`` (the runner
    config's native runner for the ABI; on ssh boards without one, scripts/edgeq_bench.py
    with the board's Python)."""

    def __init__(self, device, runner_config=None):
        self.device, self.name = device, device.name
        self.runner_config = runner_config
        self._reads: dict = {}
        self.runner_kind: str | None = None

    @property
    def kind(self) -> str:
        return {"adb": "phone", "ssh": "board"}.get(self.device.kind, "host")

    def prefetch(self, paths: list[str]) -> None:
        """Read many small files in one round trip."""
        self._reads.update(self.device.read_files([p for p in paths if p not in self._reads]))

    def _read(self, path: str):
        if path not in self._reads:
            self._reads[path] = self.device.read_file(path)
        return self._reads[path]

    def read_text(self, path: str) -> str | None:
        return self._read(path).text

    def reason(self, path: str) -> str | None:
        return self._read(path).reason

    def cpu_count(self) -> int:
        """CPU ids the kernel knows (``possible``, else ``online``), else ``nproc``."""
        for f in ("possible", "online"):
            text = (self.read_text(f"/sys/devices/system/cpu/{f}") or "").strip()
            try:
                ids = [int(x) for part in text.split(",") if part
                       for x in range(int(part.partition("-")[0]),
                                      int(part.partition("-")[2] or part.partition("-")[0]) + 1)]
            except ValueError:
                ids = []
            if ids:
                return max(ids) + 1
        rc, out, _ = self.device.shell("nproc --all 2>/dev/null || getconf _NPROCESSORS_CONF")
        if rc == 0 and out.strip().isdigit():
            return int(out.strip())
        from edgeq.errors import RuntimeFailure

        raise RuntimeFailure(f"{self.name}: cannot count the CPUs (no /sys/devices/system/"
                             "cpu/possible or online, no nproc)")

    def machine(self) -> str:
        return self.device.abi()

    def model(self) -> str:
        """The device's own name for itself (Android model, board model or hostname)."""
        if self.device.kind == "adb":
            rc, out, _ = self.device.run(["getprop", "ro.product.model"])
            if rc == 0 and out.strip():
                return out.strip()
        text = (self.read_text("/proc/device-tree/model") or "").strip("\x00\n ")
        if text:
            return text
        rc, out, _ = self.device.run(["uname", "-n"])
        return out.strip() if rc == 0 and out.strip() else self.name

    def time_pte(self, pte: Path, inputs, threads: int, runs: int,
                 cpu: int | None = None) -> float:
        """Best time of one run on the device, seconds (pinned to ``cpu`` when given)."""
        from edgeq.profiling.remote import profile_on_device

        b = profile_on_device(self.device, pte, "executorch", inputs, runs, 2, threads,
                              pin=None if cpu is None else [cpu],
                              runner_config=self.runner_config, energy=False)
        self.runner_kind = b["runner"]
        return b["latency_ms"]["min"] / 1e3


def _fact_paths(n: int) -> list[str]:
    paths = ["/proc/cpuinfo", "/proc/meminfo"]
    paths += [f"/sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq" for c in range(n)]
    for i in range(8):
        base = f"/sys/devices/system/cpu/cpu0/cache/index{i}/"
        paths += [base + "level", base + "size", base + "type"]
    return paths


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "device"


def _probe_device(bench: DeviceBench, quick: bool, progress) -> dict:
    """``probe`` for a DeviceBench: the same facts and programs, timed on the device."""
    from edgeq.errors import RuntimeFailure

    dev = bench.device
    n = bench.cpu_count()
    with progress.task(f"reading {dev.name}'s /proc and /sys"):
        bench.prefetch(["/sys/devices/system/cpu/possible", *_fact_paths(n)])
        facts = facts_from(bench.read_text, n, bench.machine(), bench.reason)
        model = bench.model()
    if facts["memory_gb"] is None:  # a required field of the profile: never guessed
        raise RuntimeFailure(f"{dev.name}: cannot read the memory size "
                             f"({facts['memory_reason']}); a profile needs it")
    abi_src = "getprop ro.product.cpu.abi" if dev.kind == "adb" else "uname -m"
    notes: dict = {"clock_reason": facts["clock_reason"],
                   "abi": f"measured: {abi_src} on the device",
                   "soc": ("measured: the device's /proc/cpuinfo" if facts["core_named"] else
                           "unknown: the device's /proc/cpuinfo names no core; its ABI instead"),
                   "size_gb": "measured: the device's /proc/meminfo MemTotal",
                   "delegates": "the CPU delegate the probe's programs ran in on the device"}
    with progress.task("building the GEMM, dispatch and bandwidth programs (cached)"):
        programs = device_programs(quick)
    rng = np.random.default_rng(0)
    reps = 3 if quick else 10
    hetero = len(facts["clusters"]) > 1
    clusters = []
    x = rng.standard_normal((GEMM_M, GEMM_K)).astype(np.float32)
    for i, cl in enumerate(facts["clusters"]):
        cpu = cl["cpus"][0] if hetero else None
        with progress.task(f"timing GEMMs on {dev.name} {cl['name']} cores {cl['cpus']}"):
            peaks = {p: 2 * GEMM_M * GEMM_K * GEMM_N
                     / bench.time_pte(programs[p], [x], 1, reps, cpu) / 1e9
                     for p in ("fp32", "int8")}
        how = (f"measured: XNNPACK linear [{GEMM_M}x{GEMM_K}]x[{GEMM_K}x{GEMM_N}] in the "
               f"device's {bench.runner_kind} runner on {dev.name}, 1 thread"
               f"{'' if cpu is None else f' on cpu {cpu}'}, best of {reps}")
        notes[f"clusters.{i}.fp32"] = notes[f"clusters.{i}.int8"] = how
        notes[f"clusters.{i}.cpus"] = cl["cpus"]
        clusters.append({"name": cl["name"], "cores": len(cl["cpus"]), "core": cl["core"],
                         "max_ghz": cl["max_ghz"], "big": i == 0,
                         "fp32_gflops_per_core": round(peaks["fp32"], 3),
                         "int8_gops_per_core": round(peaks["int8"], 3)})
    druns = 50 if quick else 200
    with progress.task(f"timing operator dispatch on {dev.name}"):
        small = [np.ones((1, 8), np.float32)] * 2
        t = bench.time_pte(programs["dispatch"], small, 1, druns)
    dispatch = t / DISPATCH_OPS * 1e6
    notes["dispatch_us"] = (f"measured: {DISPATCH_OPS} chained XNNPACK adds on 8 floats in "
                            f"the device's {bench.runner_kind} runner, best of {druns} runs / "
                            "operators" + (" (includes the Python call, spread over the "
                                           "operators)" if bench.runner_kind == "python" else ""))
    floats = programs["copy_floats"]
    mib = floats * 4 / 2 ** 20
    shape = (floats // 1024, 1024)
    a, b = np.ones(shape, np.float32), np.full(shape, 2.0, np.float32)
    with progress.task(f"timing memory bandwidth on {dev.name} (3 x {mib:.0f} MiB)"):
        bwn = 3 * floats * 4 / bench.time_pte(programs["copy"], [a, b], n, reps) / 1e9
        bw1 = (None if quick else
               3 * floats * 4 / bench.time_pte(programs["copy"], [a, b], 1, reps) / 1e9)
    del a, b
    what = (f"XNNPACK add c = a + b over 3 x {mib:.0f} MiB in the device's "
            f"{bench.runner_kind} runner")
    notes["bandwidth"] = f"measured: {what}, {n} threads, best of {reps}"
    notes["bandwidth_1t"] = (f"measured: {what}, 1 thread, best of {reps}" if bw1 else
                             "unknown: not measured by the quick probe (profiles then "
                             "assume half of bandwidth_gbps)")
    if bw1 is not None:
        bwn = max(bwn, bw1)
    cache_bw = None
    if facts["cache_mb"] and quick:
        notes["cache_mb"] = (f"measured: L{facts['cache_level']} size from the device's "
                             "/sys/devices/system/cpu/cpu0/cache")
        notes["cache_bw"] = "unknown: not measured by the quick probe"
    elif facts["cache_mb"]:
        cfloats = max(1024, int(facts["cache_mb"] * 2 ** 20 / 8 / 4) // 1024 * 1024)
        (prog,) = _cached([f"add-{cfloats}.pte"],
                          lambda td: {f"add-{cfloats}.pte": add_program(td, cfloats)})
        cshape = (cfloats // 1024, 1024)
        first = facts["clusters"][0]["cpus"][0] if hetero else None
        with progress.task(f"timing last-level cache bandwidth on {dev.name}"):
            t = bench.time_pte(prog, [np.ones(cshape, np.float32)] * 2, 1, reps * 5, first)
        cache_bw = 3 * cfloats * 4 / t / 1e9
        notes["cache_bw"] = (f"measured: XNNPACK add over 3 x {cfloats * 4 / 2 ** 20:.1f} MiB "
                             f"(3/8 of the L{facts['cache_level']}), 1 thread"
                             f"{'' if first is None else f' on cpu {first}'}, best of {reps * 5}")
        notes["cache_mb"] = (f"measured: L{facts['cache_level']} size from the device's "
                             "/sys/devices/system/cpu/cpu0/cache")
    else:
        notes["cache_mb"] = f"unknown: {facts['cache_reason']}"
        notes["cache_bw"] = f"unknown: no cache size to size the test ({facts['cache_reason']})"
    big_cpus = facts["clusters"][0]["cpus"]
    return {
        "name": _slug(f"{bench.kind}-{model}"), "kind": bench.kind,
        "description": f"{model} ({dev.name}), probed {time.strftime('%Y-%m-%d')}"
                       f"{' (quick)' if quick else ''}",
        "soc": clusters[0]["core"], "abi": facts["abi"], "peak_basis": "measured",
        "clusters": clusters,
        "big_cores": f"{big_cpus[0]}-{big_cpus[-1]}" if len(big_cpus) > 1 else str(big_cpus[0]),
        "memory": {"size_gb": facts["memory_gb"], "bandwidth_gbps": round(bwn, 3),
                   "bandwidth_1t_gbps": None if bw1 is None else round(bw1, 3),
                   "cache_mb": facts["cache_mb"],
                   "cache_bandwidth_1t_gbps": None if cache_bw is None else round(cache_bw, 3)},
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


_ASSUMED = {  # the same, for a probed phone or board (no power sensor read by the probe)
    "phone": {
        "power.idle_w": (0.6, "assumption: typical phone idle, screen off (the probe reads "
                              "no power sensor)"),
        "power.cpu_active_w": (1.5, "assumption: W per busy core, typical of a phone big "
                                    "core at full clock (not measured)"),
        "thermal.r_c_per_w": (4.0, "assumption: passively cooled phone body"),
        "thermal.c_j_per_c": (170.0, "assumption: heat capacity of a ~200 g phone"),
        "thermal.ambient_c": (25.0, "assumption: room temperature"),
        "thermal.throttle_c": (43.0, "assumption: typical phone skin-temperature limit"),
        "thermal.throttled_clock_ratio": (0.6, "assumption: typical phone big-core "
                                               "throttled / max clock")},
    "board": {
        "power.idle_w": (2.0, "assumption: typical single-board computer idle (the probe "
                              "reads no power sensor)"),
        "power.cpu_active_w": (1.0, "assumption: W per busy core, typical of a board's Arm "
                                    "core at full clock (not measured)"),
        "thermal.r_c_per_w": (2.0, "assumption: small passive heatsink"),
        "thermal.c_j_per_c": (100.0, "assumption: board plus a small heatsink"),
        "thermal.ambient_c": (25.0, "assumption: room temperature"),
        "thermal.throttle_c": (85.0, "assumption: typical SoC throttle temperature"),
        "thermal.throttled_clock_ratio": (0.7, "assumption: typical board throttled / max "
                                               "clock")},
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
             f"kind: {p['kind']}",
             f"soc: {_y(p['soc'])}  # {n.get('soc', 'measured: /proc/cpuinfo')}",
             f"abi: {p['abi']}  # {n.get('abi', 'measured: platform.machine()')}",
             f"peak_basis: {p['peak_basis']}  # peaks below are measured rates, not theory",
             "clusters:"]
    for i, c in enumerate(p["clusters"]):
        cpus = n.get(f"clusters.{i}.cpus", [])
        ghz_note = ("measured: cpufreq cpuinfo_max_freq" if c["max_ghz"] is not None else
                    f"unknown: {n.get('clock_reason')}")
        lines += [f"  - name: {_y(c['name'])}",
                  f"    cores: {c['cores']}  # measured: cpus {cpus} share this max clock",
                  f"    core: {_y(c['core'])}  # {n.get('soc', 'measured: /proc/cpuinfo')}",
                  f"    max_ghz: {_y(c['max_ghz'])}  # {ghz_note}",
                  f"    big: {_y(c['big'])}  # "
                  + ("the fastest cluster" if c["big"] else "not the fastest cluster"),
                  f"    fp32_gflops_per_core: {c['fp32_gflops_per_core']}  "
                  f"# {n.get(f'clusters.{i}.fp32')}",
                  f"    int8_gops_per_core: {c['int8_gops_per_core']}  "
                  f"# {n.get(f'clusters.{i}.int8')}"]
    m = p["memory"]
    lines += [f"big_cores: {_y(p['big_cores'])}  # cpu ids of the fastest cluster",
              "memory:",
              f"  size_gb: {_y(m['size_gb'])}  # "
              f"{n.get('size_gb', 'measured: /proc/meminfo MemTotal')}",
              f"  bandwidth_gbps: {m['bandwidth_gbps']}  # {n.get('bandwidth')}",
              f"  bandwidth_1t_gbps: {_y(m['bandwidth_1t_gbps'])}  # {n.get('bandwidth_1t')}",
              f"  cache_mb: {_y(m['cache_mb'])}  # {n.get('cache_mb')}",
              f"  cache_bandwidth_1t_gbps: {_y(m['cache_bandwidth_1t_gbps'])}  "
              f"# {n.get('cache_bw', 'unknown: no cache size to size the test')}",
              f"delegates: [xnnpack]  # "
              f"{n.get('delegates', 'the CPU delegate edgeq runs on this host')}",
              f"dispatch_us: {p['dispatch_us']}  # {n.get('dispatch_us')}"]
    unmeasured = _ASSUMED.get(p["kind"], _UNMEASURED)
    v, why = unmeasured["power.idle_w"]
    lines += ["power:", f"  idle_w: {v}  # {why}", "  cpu_active_w:"]
    v, why = unmeasured["power.cpu_active_w"]
    lines += [f"    {c['name']}: {v}  # {why}" for c in p["clusters"]]
    lines.append("thermal:")
    for key, (v, why) in unmeasured.items():
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
