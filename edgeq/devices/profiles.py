"""DeviceProfile: a real device's specs, read from ``device_profiles/*.yaml``.

A profile is named by its file stem (``pixel-8``) or given as a path to a YAML file.
Every numeric value in a shipped profile carries its public source in a YAML comment,
or says ``# assumption: why`` (``# derived:`` when computed from sourced values,
``# measured:`` when written by ``edgeq device probe``).

Schema (units in the key names; * = required)::

    name*: pixel-8                 # must equal the file stem for shipped profiles
    description*: text
    kind*: phone | board | host
    soc*: Google Tensor G3
    abi*: arm64-v8a | armeabi-v7a | x86_64
    peak_basis: theoretical | measured   # how the per-core peaks below were obtained
    clusters*:                     # one entry per CPU cluster, fastest first or not
      - name*: prime               # unique; keys power.cpu_active_w
        cores*: 1                  # cores in this cluster
        core*: Cortex-X3           # micro-architecture
        max_ghz*: 2.91             # max clock, GHz (null only with peak_basis measured)
        big*: true                 # used by the benchmark thread pool (taskset big_cores)
        fp32_gflops_per_core*: 93  # peak fp32 GFLOP/s of ONE core of this cluster
        int8_gops_per_core*: 372   # peak int8 GOP/s (1 MAC = 2 ops) of ONE core
    big_cores*: "4-8"              # Linux cpu ids of the big cores, for taskset pinning
    memory*:
      size_gb*: 8                  # RAM, GB
      bandwidth_gbps*: 68.3        # DRAM bandwidth, all cores, GB/s (1e9 bytes/s)
      bandwidth_1t_gbps: 20        # what one core can stream, GB/s (default: half)
      cache_mb: 8                  # last-level cache (L3 or SLC) a core can use, MiB
      cache_bandwidth_1t_gbps: 45  # what one core streams from that cache, GB/s
      type: LPDDR5X
    compute:                       # accelerators besides the CPU (CPU peaks: clusters)
      gpu: {name, fp32_gflops, fp16_gflops, int8_gops}   # each null when unpublished
      npu: {name, fp32_gflops, fp16_gflops, int8_gops}
    delegates*: [xnnpack, nnapi, gpu, ...]   # from KNOWN_DELEGATES
    power*:
      idle_w*: 0.6                 # whole device idle (screen off), W
      cpu_active_w*: {prime: 3.0, mid: 1.2, little: 0.25}   # W per busy core, by cluster
      gpu_active_w: 3.0            # W when the unit is busy (optional)
      npu_active_w: 2.0
    thermal*:                      # lumped RC model of the hottest node
      r_c_per_w*: 4.0              # thermal resistance to ambient, degC/W
      c_j_per_c*: 170              # heat capacity, J/degC
      ambient_c*: 25               # degC
      throttle_c*: 43              # temperature where clocks drop, degC
      throttled_clock_ratio*: 0.6  # clock after throttling / max clock, (0, 1]
      hysteresis_c: 3              # clocks recover below throttle_c - hysteresis_c
    dispatch_us*: 2.0              # per-operator overhead in the delegate runtime, us

Loading raises ``BadInput`` naming the field and the file for a missing field, a wrong
type, a negative or zero value where it makes no sense, an unknown delegate or key.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import BadInput

KINDS = ("phone", "board", "host")
ABIS = ("arm64-v8a", "armeabi-v7a", "x86_64")
PEAK_BASES = ("theoretical", "measured")
KNOWN_DELEGATES = ("xnnpack", "nnapi", "gpu", "vulkan", "qnn", "mediatek-neuron",
                   "samsung-enn", "google-tpu", "coreml", "mps", "cuda", "tensorrt",
                   "openvino", "arm-ethos-u")
UNITS = ("gpu", "npu")
_TOP = ("name", "description", "kind", "soc", "abi", "peak_basis", "clusters", "big_cores",
        "memory", "compute", "delegates", "power", "thermal", "dispatch_us")
_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


@dataclass(frozen=True)
class Cluster:
    name: str
    cores: int
    core: str
    max_ghz: float | None
    big: bool
    fp32_gflops_per_core: float
    int8_gops_per_core: float


@dataclass(frozen=True)
class Unit:
    """An accelerator (GPU, NPU): peaks in GFLOP/s or GOP/s, None when unpublished."""

    name: str
    fp32_gflops: float | None = None
    fp16_gflops: float | None = None
    int8_gops: float | None = None


@dataclass(frozen=True)
class Power:
    idle_w: float
    cpu_active_w: dict  # cluster name -> W per busy core
    gpu_active_w: float | None = None
    npu_active_w: float | None = None


@dataclass(frozen=True)
class Thermal:
    r_c_per_w: float
    c_j_per_c: float
    ambient_c: float
    throttle_c: float
    throttled_clock_ratio: float
    hysteresis_c: float = 3.0


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    kind: str
    soc: str
    abi: str
    clusters: tuple[Cluster, ...]
    big_cores: str
    memory_size_gb: float
    bandwidth_gbps: float
    bandwidth_1t_gbps: float
    cache_mb: float | None
    cache_bandwidth_1t_gbps: float | None
    delegates: tuple[str, ...]
    power: Power
    thermal: Thermal
    dispatch_us: float
    compute: dict = field(default_factory=dict)  # unit name -> Unit
    peak_basis: str = "theoretical"
    memory_type: str | None = None
    path: Path | None = None

    @property
    def total_cores(self) -> int:
        return sum(c.cores for c in self.clusters)

    def cores_fastest_first(self) -> list[Cluster]:
        """One Cluster per core, the fastest (fp32 peak per core) first."""
        per_core = [c for c in self.clusters for _ in range(c.cores)]
        return sorted(per_core, key=lambda c: -c.fp32_gflops_per_core)

    def cpu_peak(self, precision: str, threads: int) -> float:
        """Sum of the per-core peaks (GFLOP/s or GOP/s) of the ``threads`` fastest cores;
        ``precision`` is ``int8`` or anything else (treated as fp32)."""
        cores = self.cores_fastest_first()[:max(1, threads)]
        key = "int8_gops_per_core" if precision == "int8" else "fp32_gflops_per_core"
        return sum(getattr(c, key) for c in cores)

    def big_peak(self, precision: str) -> float:
        """Peak of all big cores together (GFLOP/s or GOP/s): the ``devices`` table."""
        key = "int8_gops_per_core" if precision == "int8" else "fp32_gflops_per_core"
        return sum(getattr(c, key) * c.cores for c in self.clusters if c.big)

    def summary(self) -> dict:
        return {"name": self.name, "kind": self.kind, "soc": self.soc,
                "description": self.description, "abi": self.abi,
                "cores": self.total_cores, "big_cores": self.big_cores,
                "big_fp32_gflops": round(self.big_peak("fp32"), 1),
                "big_int8_gops": round(self.big_peak("int8"), 1),
                "memory_gb": self.memory_size_gb, "bandwidth_gbps": self.bandwidth_gbps,
                "delegates": list(self.delegates), "peak_basis": self.peak_basis,
                "path": str(self.path) if self.path else None}


class _Check:
    """Reads fields out of the YAML mapping; every failure names the field and file."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, fld: str, problem: str) -> BadInput:
        return BadInput(f"device profile '{self.where}': field '{fld}' {problem}")

    def get(self, d: dict, key: str, path: str, required: bool = True):
        if not isinstance(d, dict):
            raise self.fail(path.rpartition(".")[0] or path, "must be a mapping")
        if key not in d or (required and d[key] is None):
            if required:
                raise self.fail(path, "is missing")
            return None
        return d[key]

    def text(self, d, key, path, required=True, choices=None):
        v = self.get(d, key, path, required)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            raise self.fail(path, f"must be a non-empty string, got {v!r}")
        if choices and v not in choices:
            raise self.fail(path, f"'{v}' is not one of {', '.join(choices)}")
        return v

    def num(self, d, key, path, required=True, positive=True, allow_zero=False,
            integer=False, upper=None):
        v = self.get(d, key, path, required)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise self.fail(path, f"must be a number, got {v!r}")
        if integer and int(v) != v:
            raise self.fail(path, f"must be a whole number, got {v!r}")
        if positive and (v < 0 or (v == 0 and not allow_zero)):
            raise self.fail(path, f"must be {'>= 0' if allow_zero else '> 0'}, got {v!r}")
        if upper is not None and v > upper:
            raise self.fail(path, f"must be <= {upper}, got {v!r}")
        return int(v) if integer else float(v)

    def mapping(self, d, key, path, required=True) -> dict | None:
        v = self.get(d, key, path, required)
        if v is None:
            return None
        if not isinstance(v, dict):
            raise self.fail(path, f"must be a mapping, got {type(v).__name__}")
        return v


def _cpu_ids(text: str) -> list[int]:
    ids = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        ids += list(range(int(a), int(b or a) + 1))
    return ids


def _default(v, default):
    return default if v is None else v


def _unknown_keys(d: dict, allowed, prefix: str, chk: _Check) -> None:
    for key in d:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, 1)
            raise chk.fail(prefix + str(key), "is not a known field"
                           + (f" (did you mean '{prefix}{near[0]}'?)" if near else ""))


def from_dict(d, where: str, path: Path | None = None) -> DeviceProfile:
    """Validate a parsed profile; ``where`` (the file) is named in every error."""
    chk = _Check(where)
    if not isinstance(d, dict):
        raise BadInput(f"device profile '{where}': expected a mapping of profile fields")
    _unknown_keys(d, _TOP, "", chk)
    basis = chk.text(d, "peak_basis", "peak_basis", False, PEAK_BASES) or "theoretical"
    raw_clusters = chk.get(d, "clusters", "clusters")
    if not isinstance(raw_clusters, list) or not raw_clusters:
        raise chk.fail("clusters", "must be a non-empty list of CPU clusters")
    clusters, names = [], set()
    for i, c in enumerate(raw_clusters):
        p = f"clusters[{i}]"
        if not isinstance(c, dict):
            raise chk.fail(p, "must be a mapping")
        _unknown_keys(c, [f.name for f in Cluster.__dataclass_fields__.values()], p + ".", chk)
        name = chk.text(c, "name", p + ".name")
        if name in names:
            raise chk.fail(p + ".name", f"'{name}' is used by two clusters")
        names.add(name)
        big = chk.get(c, "big", p + ".big")
        if not isinstance(big, bool):
            raise chk.fail(p + ".big", f"must be true or false, got {big!r}")
        clusters.append(Cluster(
            name=name, cores=chk.num(c, "cores", p + ".cores", integer=True),
            core=chk.text(c, "core", p + ".core"),
            max_ghz=chk.num(c, "max_ghz", p + ".max_ghz", required=basis == "theoretical",
                            upper=10),
            big=big, fp32_gflops_per_core=chk.num(c, "fp32_gflops_per_core",
                                                  p + ".fp32_gflops_per_core"),
            int8_gops_per_core=chk.num(c, "int8_gops_per_core", p + ".int8_gops_per_core")))
    if not any(c.big for c in clusters):
        raise chk.fail("clusters", "has no cluster with big: true")
    total = sum(c.cores for c in clusters)
    big_cores = chk.get(d, "big_cores", "big_cores")
    big_cores = str(big_cores)
    if not _CPU_LIST.match(big_cores) or max(_cpu_ids(big_cores)) >= total:
        raise chk.fail("big_cores", f"'{big_cores}' must be a Linux cpu list like 4-7 or "
                                    f"0,2 with ids below the {total} cores of 'clusters'")
    mem = chk.mapping(d, "memory", "memory")
    _unknown_keys(mem, ("size_gb", "bandwidth_gbps", "bandwidth_1t_gbps", "cache_mb",
                        "cache_bandwidth_1t_gbps", "type"), "memory.", chk)
    bw = chk.num(mem, "bandwidth_gbps", "memory.bandwidth_gbps")
    bw1 = chk.num(mem, "bandwidth_1t_gbps", "memory.bandwidth_1t_gbps", required=False)
    if bw1 is not None and bw1 > bw * 1.5:
        raise chk.fail("memory.bandwidth_1t_gbps", f"({bw1:g}) exceeds the all-core "
                                                   f"memory.bandwidth_gbps ({bw:g})")
    compute = {}
    for uname, u in (chk.mapping(d, "compute", "compute", required=False) or {}).items():
        p = f"compute.{uname}"
        if uname not in UNITS:
            raise chk.fail(p, f"is not a known compute unit ({', '.join(UNITS)}; CPU "
                              "peaks go in clusters)")
        if not isinstance(u, dict):
            raise chk.fail(p, "must be a mapping")
        _unknown_keys(u, ("name", "fp32_gflops", "fp16_gflops", "int8_gops"), p + ".", chk)
        compute[uname] = Unit(chk.text(u, "name", p + ".name"),
                              *(chk.num(u, k, f"{p}.{k}", required=False)
                                for k in ("fp32_gflops", "fp16_gflops", "int8_gops")))
    delegates = chk.get(d, "delegates", "delegates")
    if not isinstance(delegates, list) or not delegates:
        raise chk.fail("delegates", "must be a non-empty list")
    for i, dl in enumerate(delegates):
        if dl not in KNOWN_DELEGATES:
            near = difflib.get_close_matches(str(dl), KNOWN_DELEGATES, 1)
            raise chk.fail(f"delegates[{i}]", f"'{dl}' is not a known delegate"
                           + (f" (did you mean '{near[0]}'?)" if near else
                              f"; known: {', '.join(KNOWN_DELEGATES)}"))
    pw = chk.mapping(d, "power", "power")
    _unknown_keys(pw, [f for f in Power.__dataclass_fields__], "power.", chk)
    active = chk.mapping(pw, "cpu_active_w", "power.cpu_active_w")
    for cname in names:
        chk.num(active, cname, f"power.cpu_active_w.{cname}")
    _unknown_keys(active, sorted(names), "power.cpu_active_w.", chk)
    power = Power(chk.num(pw, "idle_w", "power.idle_w"),
                  {k: float(v) for k, v in active.items()},
                  chk.num(pw, "gpu_active_w", "power.gpu_active_w", required=False),
                  chk.num(pw, "npu_active_w", "power.npu_active_w", required=False))
    th = chk.mapping(d, "thermal", "thermal")
    _unknown_keys(th, [f for f in Thermal.__dataclass_fields__], "thermal.", chk)
    thermal = Thermal(
        chk.num(th, "r_c_per_w", "thermal.r_c_per_w"),
        chk.num(th, "c_j_per_c", "thermal.c_j_per_c"),
        chk.num(th, "ambient_c", "thermal.ambient_c", positive=False),
        chk.num(th, "throttle_c", "thermal.throttle_c", positive=False),
        chk.num(th, "throttled_clock_ratio", "thermal.throttled_clock_ratio", upper=1.0),
        _default(chk.num(th, "hysteresis_c", "thermal.hysteresis_c", required=False,
                         allow_zero=True), 3.0))
    if thermal.throttle_c <= thermal.ambient_c:
        raise chk.fail("thermal.throttle_c", f"({thermal.throttle_c:g}) must be above "
                                             f"thermal.ambient_c ({thermal.ambient_c:g})")
    return DeviceProfile(
        name=chk.text(d, "name", "name"), description=chk.text(d, "description", "description"),
        kind=chk.text(d, "kind", "kind", choices=KINDS), soc=chk.text(d, "soc", "soc"),
        abi=chk.text(d, "abi", "abi", choices=ABIS), clusters=tuple(clusters),
        big_cores=big_cores, memory_size_gb=chk.num(mem, "size_gb", "memory.size_gb"),
        bandwidth_gbps=bw, bandwidth_1t_gbps=bw1 if bw1 is not None else bw / 2,
        cache_mb=chk.num(mem, "cache_mb", "memory.cache_mb", required=False),
        cache_bandwidth_1t_gbps=chk.num(mem, "cache_bandwidth_1t_gbps",
                                        "memory.cache_bandwidth_1t_gbps", required=False),
        delegates=tuple(delegates), power=power, thermal=thermal,
        dispatch_us=chk.num(d, "dispatch_us", "dispatch_us", allow_zero=True),
        compute=compute, peak_basis=basis,
        memory_type=chk.text(mem, "type", "memory.type", required=False), path=path)


def read_profile(path: Path) -> DeviceProfile:
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise BadInput(f"device profile '{path}' is not readable ({e.strerror})") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BadInput(f"device profile '{path}' is not valid YAML: "
                       f"{' '.join(str(e).split())[:200]}") from e
    return from_dict(data, str(path), path)


def profile_dir() -> Path:
    from edgeq.resources import resource_dir

    return resource_dir("device_profiles")


def profile_names() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.yaml"))


def all_profiles() -> dict[str, DeviceProfile]:
    """Every shipped profile by name (a broken one raises BadInput naming it)."""
    out = {}
    for path in sorted(profile_dir().glob("*.yaml")):
        prof = read_profile(path)
        if prof.name != path.stem:
            raise BadInput(f"device profile '{path}': field 'name' ('{prof.name}') must "
                           f"equal the file name ('{path.stem}')")
        out[prof.name] = prof
    return out


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name (``pixel-8``) or a YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or "/" in text or path.is_file():
        if not path.is_file():
            raise BadInput(f"device profile file '{text}' not found")
        return read_profile(path)
    names = profile_names()
    if text not in names:
        near = difflib.get_close_matches(text, names, 1)
        raise BadInput(f"--profile '{text}' is not a device profile; valid profiles: "
                       f"{', '.join(names)}" + (f" (did you mean '{near[0]}'?)" if near else ""))
    return read_profile(profile_dir() / f"{text}.yaml")
