"""`edgeq device probe` on remote devices: the scripted adb phone (its sysfs tree gives the
clusters and clocks; the host-built runner really runs, so timings are measured) and a
real sshd on loopback (the board's Python runs scripts/edgeq_bench.py)."""
from __future__ import annotations

import sys

from edgeq.devices.profiles import load_profile
from edgeq.devices.transport import open_device
from edgeq.profiling.probe import DeviceBench, probe, write_profile


def _lines(text: str, key: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:")]


def test_probe_over_adb(fake_adb, runners_yaml, tmp_path):
    # The big cluster's clock is unreadable (like a locked-down kernel): null with why.
    fake_adb.set(DENY="/sys/devices/system/cpu/cpu6/cpufreq/cpuinfo_max_freq")
    dev = open_device("adb")
    data = probe(DeviceBench(dev, str(runners_yaml())), quick=True)
    out = write_profile(data, tmp_path / "phone.yaml")
    prof = load_profile(str(out))
    assert prof.kind == "phone" and prof.abi == "x86_64" and prof.peak_basis == "measured"
    assert prof.name == "phone-scripted-pixel" and "adb:EDGEQFAKE01" in data["description"]
    # Clusters from the phone's sysfs: with cpu6 unreadable, clocks are null for all.
    assert prof.total_cores == 8
    assert all(c.max_ghz is None for c in prof.clusters)
    text = out.read_text()
    ghz = _lines(text, "max_ghz")
    assert ghz and all("null" in ln and "cpu6" in ln and "permission denied" in ln
                       for ln in ghz)
    assert all(c.fp32_gflops_per_core > 0 and c.int8_gops_per_core > 0 for c in prof.clusters)
    assert prof.bandwidth_gbps > 0 and prof.bandwidth_1t_gbps > 0 and prof.dispatch_us > 0
    # The fake phone has no cache folder: null with the reason.
    assert prof.cache_mb is None and prof.cache_bandwidth_1t_gbps is None
    assert "missing" in _lines(text, "cache_mb")[0]
    assert "native runner on adb:EDGEQFAKE01" in _lines(text, "fp32_gflops_per_core")[0]
    assert "# assumption:" in _lines(text, "idle_w")[0]
    assert any(c.startswith("-s EDGEQFAKE01 push") and "gemm-int8.pte" in c
               for c in fake_adb.calls())


def test_probe_over_ssh(ssh_device, sshd, tmp_path):
    data = probe(DeviceBench(ssh_device, {"python": sys.executable}), quick=True)
    out = write_profile(data, tmp_path / "board.yaml")
    prof = load_profile(str(out))
    assert prof.kind == "board" and prof.peak_basis == "measured"
    assert ssh_device.name in prof.description and prof.name.startswith("board-")
    assert prof.abi == ssh_device.abi()
    assert prof.cpu_peak("fp32", 1) > 0 and prof.cpu_peak("int8", 1) > 0
    assert prof.bandwidth_gbps > 0 and prof.dispatch_us > 0
    text = out.read_text()
    assert "python runner on ssh://" in _lines(text, "fp32_gflops_per_core")[0]
    # Whatever the loopback "board" cannot tell is null with a reason, never a number.
    for c, ln in zip(prof.clusters, _lines(text, "max_ghz")):
        assert (c.max_ghz is None) == ("unknown:" in ln)
    if prof.cache_mb is None:
        assert "unknown:" in _lines(text, "cache_mb")[0]
    # The quick probe leaves the 1-thread and cache bandwidths unmeasured, and says so.
    assert data["memory"]["bandwidth_1t_gbps"] is None and prof.cache_bandwidth_1t_gbps is None
    bw1 = _lines(text, "bandwidth_1t_gbps")[0]
    assert "null  # unknown: not measured by the quick probe" in bw1
    assert "unknown:" in _lines(text, "cache_bandwidth_1t_gbps")[0]


def test_cli_probe_over_adb(fake_adb, runners_yaml, run_cli, tmp_path):
    out = tmp_path / "cli.yaml"
    r = run_cli(["device", "probe", "--device", "adb:EDGEQFAKE01", "--runners",
                 str(runners_yaml()), "--quick", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    prof = load_profile(str(out))
    assert r.json()["name"] == "phone-scripted-pixel" and prof.kind == "phone"
    # Clusters and clocks from the phone's sysfs, fastest first; GEMMs pinned to each.
    assert [(c.cores, c.max_ghz) for c in prof.clusters] == [(2, 2.802), (2, 2.253), (4, 1.803)]
    assert prof.big_cores == "6-7" and prof.clusters[0].big
    assert (fake_adb.home / "taskset.log").read_text().split()[:6] == [
        "40", "40", "10", "10", "1", "1"]
    # A phone nobody attached: a device failure (exit 3, as for profile), nothing written.
    r = run_cli(["device", "probe", "--device", "adb:NOPE", "--runners", str(runners_yaml()),
                 "-o", str(tmp_path / "x.yaml")])
    assert r.exit_code == 3 and "not attached" in r.stderr and not (tmp_path / "x.yaml").exists()
