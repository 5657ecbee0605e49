"""What a device's sysfs says about heat, clocks and power, read through a Device (so the
same code reads this machine, a phone over adb and a board over ssh; a LocalDevice with
``fs_root`` reads a recorded tree).

Units: temperatures in °C, CPU clocks in MHz, power in W, energy in mJ, times in s. Every
reader returns ``Reading(value, reason)``: the value, or None and why (missing,
permission denied, charging...). Nothing is ever estimated here."""
from __future__ import annotations

import os
import threading
import time
from typing import NamedTuple

THERMAL = "/sys/class/thermal/thermal_zone*"
CPUS = "/sys/devices/system/cpu/cpu[0-9]*"
SUPPLY = "/sys/class/power_supply"
BATTERY = f"{SUPPLY}/battery"
HWMON = "/sys/class/hwmon/hwmon*"
RAPL = "/sys/class/powercap/intel-rapl:0"
THROTTLE_DROP = 0.10  # a throughput or clock drop beyond this fraction counts as throttling


class Reading(NamedTuple):
    value: object
    reason: str | None = None


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip().split()[0])
    except (AttributeError, ValueError, IndexError):
        return None


def _base(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


# -- temperatures and clocks ------------------------------------------------------------------
def thermal_zones(dev) -> Reading:
    """{zone type: °C} over /sys/class/thermal/thermal_zone*/temp (millidegrees; a few
    drivers report whole degrees, told apart by magnitude). Implausible values (unused
    zones report -273 or 0x7fff...) are left out."""
    zones = dev.glob(THERMAL)
    if not zones:
        return Reading(None, f"no thermal zones ({THERMAL})")
    reads = dev.read_files([f"{z}/{f}" for z in zones for f in ("temp", "type")])
    temps, why = {}, None
    for z in zones:
        t = reads[f"{z}/temp"]
        v = _int(t.text)
        if v is None:
            why = why or f"{z}/temp: {t.reason or 'not a number'}"
            continue
        c = v / 1000 if abs(v) >= 200 else float(v)
        if not -40 <= c <= 200:
            continue
        label = (reads[f"{z}/type"].text or "").strip() or _base(z)
        if label in temps:
            label = f"{label}({_base(z)})"
        temps[label] = round(c, 2)
    return Reading(temps, None) if temps else Reading(None, f"thermal zones not readable ({why})")


def hottest(temps: dict) -> tuple[str | None, float | None]:
    if not temps:
        return None, None
    zone = max(temps, key=temps.get)
    return zone, temps[zone]


def _cpu_files(dev, leaf: str) -> Reading:
    cpus = [c for c in dev.glob(CPUS) if _base(c)[3:].isdigit()]
    if not cpus:
        return Reading(None, f"no CPUs listed under {CPUS}")
    reads = dev.read_files([f"{c}/cpufreq/{leaf}" for c in cpus])
    out, why = {}, None
    for c in cpus:
        r = reads[f"{c}/cpufreq/{leaf}"]
        v = _int(r.text)
        if v is None:
            why = why or f"{c}/cpufreq/{leaf}: {r.reason or 'not a number'}"
            continue
        out[int(_base(c)[3:])] = round(v / 1000, 1)  # kHz -> MHz
    return Reading(dict(sorted(out.items())), None) if out else Reading(None, f"CPU clocks not readable ({why})")


def cpu_freqs_mhz(dev) -> Reading:
    """{cpu index: current clock in MHz} from cpufreq/scaling_cur_freq (kHz)."""
    return _cpu_files(dev, "scaling_cur_freq")


def cpu_max_freqs_mhz(dev) -> Reading:
    """{cpu index: highest clock in MHz} from cpufreq/cpuinfo_max_freq."""
    return _cpu_files(dev, "cpuinfo_max_freq")


def big_cores(dev) -> Reading:
    """The CPUs with the highest cpuinfo_max_freq (the big / prime cluster)."""
    r = cpu_max_freqs_mhz(dev)
    if r.value is None:
        return r
    top = max(r.value.values())
    return Reading(sorted(c for c, f in r.value.items() if f == top))


def taskset_mask(cpus) -> str:
    """Hex affinity mask for ``taskset``: [4, 5, 6, 7] -> 'f0'."""
    return format(sum(1 << int(c) for c in cpus), "x")


# -- power sources ------------------------------------------------------------------------------
def charging(dev) -> Reading:
    """True when the phone draws from a charger (battery status Charging/Full, or a
    usb/ac/wireless supply online): the battery current then is not the SoC's draw."""
    names = ("usb", "ac", "wireless")
    reads = dev.read_files([f"{BATTERY}/status", *(f"{SUPPLY}/{n}/online" for n in names)])
    status = (reads[f"{BATTERY}/status"].text or "").strip()
    online = [n for n in names if _int(reads[f"{SUPPLY}/{n}/online"].text) == 1]
    if status in ("Charging", "Full") or online:
        what = f"battery status '{status}'" if status else "battery status unknown"
        if online:
            what += f", {'/'.join(online)} power online"
        return Reading(True, what)
    if not status:
        return Reading(None, f"{BATTERY}/status: {reads[f'{BATTERY}/status'].reason}")
    return Reading(False, f"battery status '{status}'")


class PowerSource:
    """One sensor. ``kind`` is ``power`` (``read`` gives W) or ``energy`` (``read`` gives a
    cumulative counter in J, wrapping at ``wrap_j``)."""

    kind, wrap_j = "power", None

    def __init__(self, name: str, files: list[str]):
        self.name, self.files = name, files

    def convert(self, texts: list[str | None]) -> float | None:
        raise NotImplementedError

    def read(self, dev) -> Reading:
        reads = dev.read_files(self.files)
        bad = next((f"{p}: {r.reason}" for p, r in reads.items() if r.text is None), None)
        if bad:
            return Reading(None, bad)
        v = self.convert([reads[p].text for p in self.files])
        return Reading(v) if v is not None else Reading(None, f"{self.files[0]}: not a number")


class BatteryPower(PowerSource):
    """Android fuel gauge: |current_now| (µA) × voltage_now (µV). The sign of current_now
    differs between vendors, hence the magnitude."""

    def __init__(self):
        super().__init__("battery current_now × voltage_now",
                         [f"{BATTERY}/current_now", f"{BATTERY}/voltage_now"])

    def convert(self, texts):
        i, v = _int(texts[0]), _int(texts[1])
        return None if i is None or v is None else abs(i) * v / 1e12


class HwmonPower(PowerSource):
    """A hwmon ``power*_input`` channel (µW): INA219/226/230/3221 and similar monitors."""

    def convert(self, texts):
        v = _int(texts[0])
        return None if v is None else v / 1e6


class RaplEnergy(PowerSource):
    """Intel/AMD RAPL package counter ``energy_uj`` (µJ), wrapping at max_energy_range_uj."""

    kind = "energy"

    def __init__(self, base: str, wrap_uj: int | None):
        super().__init__(f"RAPL {_base(base)} energy_uj", [f"{base}/energy_uj"])
        self.wrap_j = wrap_uj / 1e6 if wrap_uj else None

    def convert(self, texts):
        v = _int(texts[0])
        return None if v is None else v / 1e6


def rapl_delta_j(prev_j: float, cur_j: float, wrap_j: float | None) -> float:
    """Energy between two counter readings, across one wrap-around of the counter."""
    d = cur_j - prev_j
    return d + wrap_j if d < 0 and wrap_j else d


def _hwmon_source(dev) -> Reading:
    chans = dev.glob(f"{HWMON}/power*_input")
    if not chans:
        return Reading(None, f"no hwmon power sensor ({HWMON}/power*_input)")
    names = {c.rsplit("/", 1)[0] + "/name" for c in chans}
    reads = dev.read_files(sorted(names) + [c.replace("_input", "_label") for c in chans])
    found = []
    for c in chans:
        name = (reads[c.rsplit("/", 1)[0] + "/name"].text or "").strip()
        label = (reads[c.replace("_input", "_label")].text or "").strip()
        found.append((c, f"hwmon {name} {label or _base(c)}".strip(), label))
    # Prefer the board's input rail (INA3221 on Jetson: VDD_IN), else the first channel.
    pick = next((f for f in found if f[2].upper() in ("VDD_IN", "IN", "SYS", "TOTAL")), found[0])
    src = HwmonPower(pick[1], [pick[0]])
    r = src.read(dev)
    return Reading(src) if r.value is not None else Reading(None, f"{pick[1]}: {r.reason}")


def find_power_source(dev) -> Reading:
    """The sensor to integrate on this device: ``$EDGEQ_POWER_SENSOR`` (a power*_input or
    energy_uj path) if set; on Android the battery fuel gauge; else a hwmon power channel;
    else RAPL. None and the reasons when there is none (or it cannot be read)."""
    forced = os.environ.get("EDGEQ_POWER_SENSOR")
    if forced:
        src = (RaplEnergy(forced.rsplit("/", 1)[0], None) if forced.endswith("energy_uj")
               else HwmonPower(f"sensor {forced}", [forced]))
        r = src.read(dev)
        return Reading(src) if r.value is not None else Reading(None, f"$EDGEQ_POWER_SENSOR {r.reason}")
    reasons = []
    # One round trip for the candidates' files (each command costs a lot over ssh / adb).
    rapl_max = f"{RAPL}/max_energy_range_uj"
    pre = dev.read_files([*BatteryPower().files, f"{RAPL}/energy_uj", rapl_max])
    if dev.kind == "adb" or pre[f"{BATTERY}/current_now"].reason != "missing":
        src = BatteryPower()
        r = src.read(dev)
        if r.value is not None:
            return Reading(src)
        reasons.append(f"battery: {r.reason}")
        if dev.kind == "adb":
            return Reading(None, "; ".join(reasons))
    hw = _hwmon_source(dev)
    if hw.value is not None:
        return hw
    reasons.append(hw.reason)
    src = RaplEnergy(RAPL, _int(pre[rapl_max].text))
    r = pre[f"{RAPL}/energy_uj"]
    if _int(r.text) is not None:
        return Reading(src)
    why = r.reason or "not a number"
    extra = " (root only since Linux 5.10)" if "permission" in why else ""
    reasons.append(f"RAPL {RAPL}/energy_uj: {why}{extra}")
    return Reading(None, "no readable power sensor: " + "; ".join(reasons))


def _sem2(samples) -> float:
    """Squared standard error of the mean of the sampled values (W²)."""
    n = len(samples)
    if n < 2:
        return 0.0
    mean = sum(v for _, v in samples) / n
    return sum((v - mean) ** 2 for _, v in samples) / (n - 1) / n


# -- energy -------------------------------------------------------------------------------------
class EnergySampler:
    """Sample a PowerSource at idle (``idle(seconds)``, blocking) and during a run
    (``start()`` ... ``stop()``, in a background thread), then ``result(busy_s, runs)``:
    mJ per inference = (mean active W - mean idle W) × busy_s × 1000 / runs, where busy_s
    is the summed inference time. The sampler's own reads run on the device too; at
    ``interval_s`` = 0.25 s that is a small, constant share of both phases."""

    MIN_SAMPLES = 3

    def __init__(self, dev, source: PowerSource, interval_s: float = 0.25, clock=time.monotonic):
        self.dev, self.source, self.interval_s, self.clock = dev, source, interval_s, clock
        self.idle_samples: list[tuple[float, float]] = []
        self.active_samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self, into: list) -> None:
        t0 = self.clock()
        try:
            r = self.source.read(self.dev)
        except Exception as e:  # noqa: BLE001 - a lost device ends sampling, not the run
            self.errors.append(str(e))
            self._stop.set()
            return
        if r.value is None:
            self.errors.append(r.reason)
        else:
            into.append(((t0 + self.clock()) / 2, r.value))

    def idle(self, seconds: float) -> None:
        end = self.clock() + seconds
        while True:
            self._sample(self.idle_samples)
            if self.clock() >= end or self._stop.is_set():
                break
            time.sleep(min(self.interval_s, max(0.0, end - self.clock())))
        self._stop.clear()

    def start(self) -> None:
        self._stop.clear()

        def loop():
            while not self._stop.is_set():
                self._sample(self.active_samples)
                self._stop.wait(self.interval_s)
        self._thread = threading.Thread(target=loop, name="edgeq-energy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=30)
        if self.source.kind == "energy":  # a closing counter reading bounds the span
            self._sample(self.active_samples)

    def mean_power_w(self, samples) -> float | None:
        if len(samples) < (2 if self.source.kind == "energy" else 1):
            return None
        if self.source.kind == "energy":
            joules = sum(rapl_delta_j(a[1], b[1], self.source.wrap_j)
                         for a, b in zip(samples, samples[1:]))
            span = samples[-1][0] - samples[0][0]
            return joules / span if span > 0 else None
        if len(samples) == 1:
            return samples[0][1]
        area = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(samples, samples[1:]))
        span = samples[-1][0] - samples[0][0]
        return area / span if span > 0 else sum(v for _, v in samples) / len(samples)

    def result(self, busy_s: float, runs: int) -> tuple[float | None, str | None, dict]:
        """(mJ per inference or None, reason, detail for the report)."""
        idle_w = self.mean_power_w(self.idle_samples)
        active_w = self.mean_power_w(self.active_samples)
        span = (self.active_samples[-1][0] - self.active_samples[0][0]
                if len(self.active_samples) > 1 else 0.0)
        detail = {"source": self.source.name, "interval_s": self.interval_s,
                  "idle_w": None if idle_w is None else round(idle_w, 4),
                  "active_w": None if active_w is None else round(active_w, 4),
                  "idle_samples": len(self.idle_samples),
                  "active_samples": len(self.active_samples),
                  "active_s": round(span, 3), "busy_s": round(busy_s, 4)}
        err = f" ({self.errors[-1]})" if self.errors else ""
        if idle_w is None:
            return None, f"no idle power reading{err}", detail
        if active_w is None or len(self.active_samples) < self.MIN_SAMPLES:
            return None, (f"only {len(self.active_samples)} power samples during the run "
                          f"({span:.2f} s){err}: raise --runs so the run lasts several "
                          "seconds"), detail
        if runs < 1 or busy_s <= 0:
            return None, "no timed inference to divide the energy by", detail
        noise = max(2 * (_sem2(self.idle_samples) + _sem2(self.active_samples)) ** 0.5, 1e-6)
        if self.source.kind == "power" and active_w - idle_w <= noise:
            return None, (f"active power ({active_w:.3f} W) is not above idle "
                          f"({idle_w:.3f} W) beyond the sensor's noise (±{noise:.3f} W): the "
                          "run is too short or the device was busy at idle; raise --runs"), detail
        return round((active_w - idle_w) * busy_s * 1000 / runs, 6), None, detail


# -- thermal ------------------------------------------------------------------------------------
def cool_down(dev, threshold_c: float, timeout_s: float, poll_s: float = 2.0,
              sleep=time.sleep, clock=time.monotonic) -> dict:
    """Wait until the hottest thermal zone is below ``threshold_c`` or ``timeout_s`` has
    passed. Returns {threshold_c, reached (True/False, None when unreadable), waited_s,
    start_c, end_c, zone, reason}."""
    t0 = clock()
    first = None
    while True:
        r = thermal_zones(dev)
        if r.value is None:
            return {"threshold_c": threshold_c, "reached": None, "waited_s": round(clock() - t0, 1),
                    "reason": f"cool-down skipped: {r.reason}"}
        zone, temp = hottest(r.value)
        first = temp if first is None else first
        waited = clock() - t0
        out = {"threshold_c": threshold_c, "waited_s": round(waited, 1), "start_c": first,
               "end_c": temp, "zone": zone}
        if temp < threshold_c:
            return dict(out, reached=True)
        if waited >= timeout_s:
            return dict(out, reached=False,
                        reason=f"still {temp:.1f} °C ({zone}) after {timeout_s:g} s, above "
                               f"{threshold_c:g} °C: measured warm")
        sleep(min(poll_s, max(0.0, timeout_s - waited)))


def _onset(values: list[float], limit: float) -> int | None:
    """First index from which the value is below ``limit`` and stays below on average."""
    return next((i for i in range(len(values)) if values[i] < limit
                 and sum(values[i:]) / len(values[i:]) < limit), None)


class ThermalTrace:
    """A ``--sustained`` trace: ``add_window(latency_ms, runs)`` at the end of each window
    samples every thermal zone and CPU clock; ``summary()`` is the report's thermal block.
    ``cpus`` limits the clock check to the pinned cores."""

    def __init__(self, dev, cpus=None, clock=time.monotonic):
        self.dev, self.cpus, self.clock = dev, cpus, clock
        self.t0 = clock()
        self.trace: list[dict] = []
        self.reasons: dict[str, str] = {}

    def add_window(self, latency_ms: float | None, runs: int, t_s: float | None = None) -> dict:
        """Record one window ending now (or at ``t_s`` s after the first timed run, as
        the runner's own clock says) and sample the zones and clocks."""
        temps, clocks = thermal_zones(self.dev), cpu_freqs_mhz(self.dev)
        for key, r in (("temps", temps), ("clocks", clocks)):
            if r.value is None:
                self.reasons[key] = r.reason
        mhz = clocks.value
        if mhz and self.cpus:
            mhz = {c: f for c, f in mhz.items() if c in set(self.cpus)} or mhz
        entry = {"t_s": round(self.clock() - self.t0 if t_s is None else t_s, 3),
                 "latency_ms": None if latency_ms is None else round(latency_ms, 4),
                 "runs": runs, "temps_c": temps.value, "cpu_mhz": mhz}
        self.trace.append(entry)
        return entry

    def summary(self) -> dict:
        wins = [w for w in self.trace if w["latency_ms"]]
        out = {"duration_s": self.trace[-1]["t_s"] if self.trace else 0.0, "throttled": None,
               "time_to_throttle_s": None, "sustained_over_peak": None,
               "peak_throughput_ips": None, "sustained_throughput_ips": None,
               "max_temp_c": None, "trace": self.trace}
        temps = [t for w in self.trace if w["temps_c"] for t in w["temps_c"].values()]
        out["max_temp_c"] = max(temps) if temps else None
        if self.reasons:
            out["missing"] = self.reasons
        if not wins:
            out["throttled_reason"] = "no window completed"
            return out
        ips = [1000.0 / w["latency_ms"] for w in wins]
        peak = max(ips)
        tail = ips[-max(1, len(ips) // 4):]
        sustained = sum(tail) / len(tail)
        ratio = sustained / peak
        out.update(peak_throughput_ips=round(peak, 3), sustained_throughput_ips=round(sustained, 3),
                   sustained_over_peak=round(ratio, 4))
        slow = 1 - THROTTLE_DROP
        lat_drop = _onset(ips, slow * peak) if ratio < slow else None
        clocks = [max(w["cpu_mhz"].values()) if w["cpu_mhz"] else None for w in wins]
        known = [c for c in clocks if c]
        top = max(known, default=None)
        ctail = known[-max(1, len(known) // 4):]
        clock_drop = (_onset([c or top for c in clocks], slow * top)
                      if top and sum(ctail) / len(ctail) < slow * top else None)
        out["throttled"] = lat_drop is not None or clock_drop is not None
        if out["throttled"]:
            i = min(x for x in (lat_drop, clock_drop) if x is not None)
            out["time_to_throttle_s"] = wins[i]["t_s"]
            out["throttle_evidence"] = ", ".join(
                s for s, hit in ((f"throughput below {slow:.0%} of peak", lat_drop is not None),
                                 (f"CPU clock below {slow:.0%} of its peak", clock_drop is not None))
                if hit)
        return out
