"""sysfs readers against recorded trees (a LocalDevice with fs_root), energy integration
with known synthetic power, RAPL wrap-around, the cool-down gate and the thermal trace."""
from __future__ import annotations

import builtins
import time
from pathlib import Path

import pytest

from edgeq.devices import sysfs
from edgeq.devices.transport import LocalDevice

PHONE = Path(__file__).parent / "fake_adb" / "phone"


def tree(root: Path, files: dict) -> LocalDevice:
    for rel, value in files.items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{value}\n")
    return LocalDevice(fs_root=root)


def battery(root, current_ua, voltage_uv=4_000_000, status="Discharging", usb=0):
    return tree(root, {f"{sysfs.BATTERY}/current_now": current_ua,
                       f"{sysfs.BATTERY}/voltage_now": voltage_uv,
                       f"{sysfs.BATTERY}/status": status, f"{sysfs.SUPPLY}/usb/online": usb})


def test_thermal_zones_units_labels_and_bogus_zones(tmp_path):
    dev = tree(tmp_path, {"/sys/class/thermal/thermal_zone0/temp": 45500,
                          "/sys/class/thermal/thermal_zone0/type": "cpu-big",
                          "/sys/class/thermal/thermal_zone1/temp": 38,  # whole degrees
                          "/sys/class/thermal/thermal_zone1/type": "skin",
                          "/sys/class/thermal/thermal_zone2/temp": -273000,  # unused zone
                          "/sys/class/thermal/thermal_zone2/type": "unused",
                          "/sys/class/thermal/thermal_zone3/temp": 40000,
                          "/sys/class/thermal/thermal_zone3/type": "cpu-big"})
    temps = sysfs.thermal_zones(dev).value
    assert temps == {"cpu-big": 45.5, "skin": 38.0, "cpu-big(thermal_zone3)": 40.0}
    assert sysfs.hottest(temps) == ("cpu-big", 45.5)


def test_recorded_phone_tree_reads(tmp_path):
    dev = LocalDevice(fs_root=PHONE)
    assert sysfs.thermal_zones(dev).value["BIG"] == 41.2
    assert sysfs.cpu_freqs_mhz(dev).value[6] == 2802.0
    assert sysfs.big_cores(dev).value == [6, 7]
    assert sysfs.taskset_mask([6, 7]) == "c0" and sysfs.taskset_mask([0, 1, 2, 3]) == "f"
    assert sysfs.charging(dev).value is False
    src = sysfs.find_power_source(dev).value
    assert isinstance(src, sysfs.BatteryPower)
    assert src.read(dev).value == pytest.approx(0.42 * 3.95)  # |-420 mA| x 3.95 V


def test_missing_everything_says_why(tmp_path):
    dev = LocalDevice(fs_root=tmp_path)
    assert sysfs.thermal_zones(dev) == (None, f"no thermal zones ({sysfs.THERMAL})")
    assert "no CPUs" in sysfs.cpu_freqs_mhz(dev).reason
    r = sysfs.find_power_source(dev)
    assert r.value is None and "hwmon" in r.reason and "RAPL" in r.reason and "missing" in r.reason


def test_permission_denied_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    # Tests run as root, for whom chmod 000 does not bite: make open() refuse instead.
    dev = tree(tmp_path, {"/sys/class/thermal/thermal_zone0/temp": 50000,
                          "/sys/class/thermal/thermal_zone0/type": "soc",
                          "/sys/class/powercap/intel-rapl:0/energy_uj": 123,
                          "/sys/class/powercap/intel-rapl:0/max_energy_range_uj": 1000})
    real_open = builtins.open

    def guarded(path, *a, **k):
        if str(path).endswith(("temp", "energy_uj")):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)
    monkeypatch.setattr(builtins, "open", guarded)
    r = sysfs.thermal_zones(dev)
    assert r.value is None and "permission denied" in r.reason
    r = sysfs.find_power_source(dev)
    assert r.value is None and "permission denied (root only since Linux 5.10)" in r.reason


@pytest.mark.parametrize("files, expected", [
    ({"status": "Discharging", "usb": 0}, False),
    ({"status": "Charging", "usb": 1}, True),
    ({"status": "Full", "usb": 0}, True),
    ({"status": "Not charging", "usb": 1}, True),  # bypass charging: USB powers the SoC
])
def test_charging_detection(tmp_path, files, expected):
    dev = battery(tmp_path, 100_000, status=files["status"], usb=files["usb"])
    assert sysfs.charging(dev).value is expected


def test_hwmon_prefers_the_input_rail(tmp_path):
    h = "/sys/class/hwmon/hwmon3"
    dev = tree(tmp_path, {f"{h}/name": "ina3221", f"{h}/power1_input": 1_500_000,
                          f"{h}/power1_label": "VDD_CPU_GPU_CV", f"{h}/power2_input": 4_250_000,
                          f"{h}/power2_label": "VDD_IN"})
    src = sysfs.find_power_source(dev).value
    assert isinstance(src, sysfs.HwmonPower) and "VDD_IN" in src.name
    assert src.read(dev).value == 4.25


def test_rapl_wraparound():
    assert sysfs.rapl_delta_j(10.0, 12.5, 100.0) == 2.5
    assert sysfs.rapl_delta_j(99.0, 1.0, 100.0) == pytest.approx(2.0)


class Scripted(sysfs.PowerSource):
    """A source that answers from a list (energy counter or power), one per read."""

    def __init__(self, values, kind="power", wrap_j=None):
        super().__init__("scripted", [])
        self.values, self.kind, self.wrap_j = list(values), kind, wrap_j

    def read(self, dev):
        return sysfs.Reading(self.values.pop(0))


def test_rapl_energy_integrates_across_a_wrap():
    clock = iter(range(100)).__next__  # each read takes 1 s: midpoints at 0.5, 2.5, ...
    s = sysfs.EnergySampler(None, Scripted([9.0, 9.5, 0.5, 1.5], "energy", wrap_j=10.0),
                            clock=lambda: float(clock()))
    for _ in range(4):
        s._sample(s.active_samples)
    # deltas 0.5 + 1.0 (across the wrap at 10 J) + 1.0 = 2.5 J over 6 s
    assert s.mean_power_w(s.active_samples) == pytest.approx(2.5 / 6)


def test_energy_per_inference_from_constant_synthetic_power(tmp_path):
    dev = battery(tmp_path, 100_000)  # 0.1 A x 4 V = 0.4 W at idle
    src = sysfs.find_power_source(dev).value
    s = sysfs.EnergySampler(dev, src, interval_s=0.01)
    s.idle(0.05)
    (tmp_path / sysfs.BATTERY.lstrip("/") / "current_now").write_text("600000\n")  # 2.4 W
    s.start()
    time.sleep(0.1)
    s.stop()
    mj, why, detail = s.result(busy_s=0.4, runs=100)
    # (2.4 W - 0.4 W) x 0.4 s / 100 runs = 8 mJ, exactly
    assert why is None and mj == pytest.approx(8.0)
    assert detail["idle_w"] == 0.4 and detail["active_w"] == 2.4
    assert detail["active_samples"] >= 3


def test_energy_refuses_what_it_cannot_know(tmp_path):
    dev = battery(tmp_path, 100_000)
    s = sysfs.EnergySampler(dev, sysfs.find_power_source(dev).value, interval_s=0.01)
    s.idle(0.03)
    s.start()
    time.sleep(0.06)
    s.stop()
    mj, why, _ = s.result(busy_s=0.05, runs=10)
    assert mj is None and "not above idle" in why
    short = sysfs.EnergySampler(dev, s.source)
    short.idle(0)
    short.active_samples = short.idle_samples[:1]
    mj, why, _ = short.result(busy_s=0.05, runs=10)
    assert mj is None and "only 1 power samples" in why and "raise --runs" in why


def zone_dev(root, temp_mc, mhz=2000):
    return tree(root, {"/sys/class/thermal/thermal_zone0/temp": temp_mc,
                       "/sys/class/thermal/thermal_zone0/type": "cpu",
                       "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": mhz * 1000})


def test_cool_down_waits_until_below_threshold(tmp_path):
    dev = zone_dev(tmp_path, 55000)
    temp = tmp_path / "sys/class/thermal/thermal_zone0/temp"
    now = [0.0]

    def sleep(s):  # the phone cools 5 °C per poll
        now[0] += s
        temp.write_text(str(int(temp.read_text()) - 5000))
    r = sysfs.cool_down(dev, 42.0, 60, poll_s=2, sleep=sleep, clock=lambda: now[0])
    assert r["reached"] is True and r["start_c"] == 55.0 and r["end_c"] == 40.0
    assert r["waited_s"] == 6.0


def test_cool_down_gives_up_and_says_so(tmp_path):
    dev = zone_dev(tmp_path, 70000)
    now = [0.0]
    r = sysfs.cool_down(dev, 40.0, 10, poll_s=3, sleep=lambda s: now.__setitem__(0, now[0] + s),
                        clock=lambda: now[0])
    assert r["reached"] is False and r["waited_s"] == 10.0
    assert "still 70.0 °C" in r["reason"] and "measured warm" in r["reason"]
    r = sysfs.cool_down(LocalDevice(fs_root=tmp_path / "none"), 40.0, 10)
    assert r["reached"] is None and "skipped" in r["reason"]


def run_trace(dev, latencies, clocks=None, root=None):
    now = [0.0]
    trace = sysfs.ThermalTrace(dev, clock=lambda: now[0])
    for i, lat in enumerate(latencies):
        now[0] += 10
        if clocks:
            (root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").write_text(
                str(clocks[i] * 1000))
        trace.add_window(lat, 100)
    return trace.summary()


def test_thermal_trace_steady_device_does_not_throttle(tmp_path):
    s = run_trace(zone_dev(tmp_path, 45000), [10.0, 10.2, 9.9, 10.1, 10.0, 10.1, 9.95, 10.05])
    assert s["throttled"] is False and s["time_to_throttle_s"] is None
    assert s["sustained_over_peak"] > 0.95 and s["duration_s"] == 80
    assert s["trace"][0]["temps_c"] == {"cpu": 45.0} and s["trace"][0]["cpu_mhz"] == {0: 2000.0}


def test_thermal_trace_detects_throttling_from_latency(tmp_path):
    s = run_trace(zone_dev(tmp_path, 45000), [10, 10, 10, 10, 14, 15, 15, 15])
    assert s["throttled"] is True and s["time_to_throttle_s"] == 50
    assert s["sustained_over_peak"] == pytest.approx(100 / 15 / 10, abs=1e-3)
    assert "throughput" in s["throttle_evidence"]


def test_thermal_trace_detects_clock_drop(tmp_path):
    s = run_trace(zone_dev(tmp_path, 45000), [10] * 8,
                  clocks=[2000, 2000, 2000, 1500, 1500, 1500, 1500, 1500], root=tmp_path)
    assert s["throttled"] is True and s["time_to_throttle_s"] == 40
    assert s["throttle_evidence"] == "CPU clock below 90% of its peak"
