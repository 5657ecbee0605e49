"""Transports and on-device profiling: `adb` against the scripted phone (fake_adb/adb, the
production code path unchanged), `ssh` against a real sshd on loopback, `local`; the
runners' own output formats; and the faults: no device, two devices, unauthorized,
disconnects mid-run, runner missing or for the wrong ABI, unreadable sysfs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgeq.devices.transport import (AdbDevice, DeviceDisconnected, LocalDevice, SshDevice,
                                     normalize_abi, open_device)
from edgeq.errors import BadInput, RuntimeFailure
from edgeq.profiling import runners
from edgeq.profiling.remote import ProfileIncomplete, profile_on_device

FAST = dict(idle_s=0.2, energy_interval_s=0.02)


# -- device specs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["", "usb", "adb:", "ssh://", "ssh://user@", "ssh://h:0",
                                  "ssh://h:99999", "ssh://a@b@c", "ssh:/host"])
def test_malformed_device_specs_are_bad_input(spec):
    with pytest.raises(BadInput, match="--device"):
        open_device(spec)


def test_local_and_abi_names():
    assert isinstance(open_device("local"), LocalDevice)
    assert normalize_abi("aarch64\n") == "arm64-v8a" and normalize_abi("armv7l") == "armeabi-v7a"
    assert open_device("local").abi() == normalize_abi(subprocess.check_output(["uname", "-m"], text=True))


# -- adb: attaching -------------------------------------------------------------------------------
def test_adb_no_device_attached(fake_adb):
    fake_adb.set(DEVICES="")
    with pytest.raises(RuntimeFailure) as e:
        open_device("adb")
    assert str(e.value) == "no Android device attached (adb devices lists none)"
    assert e.value.exit_code == 3


def test_adb_two_devices_need_a_serial(fake_adb):
    fake_adb.set(DEVICES="R58M11AAAA:device,emulator-5554:device")
    with pytest.raises(BadInput) as e:
        open_device("adb")
    assert "R58M11AAAA" in str(e.value) and "emulator-5554" in str(e.value)
    assert "--device adb:SERIAL" in str(e.value) and e.value.exit_code == 2
    dev = open_device("adb:emulator-5554")
    assert dev.name == "adb:emulator-5554" and dev.serial == "emulator-5554"
    with pytest.raises(RuntimeFailure, match="'ZZZ' is not attached .*R58M11AAAA, emulator-5554"):
        open_device("adb:ZZZ")


@pytest.mark.parametrize("state, hint", [("unauthorized", "accept the USB debugging prompt"),
                                         ("offline", "adb reconnect")])
def test_adb_unusable_states(fake_adb, state, hint):
    fake_adb.set(DEVICES=f"R58M11AAAA:{state}")
    with pytest.raises(RuntimeFailure, match=f"is {state}: .*{hint}"):
        open_device("adb")


def test_adb_missing_client(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEQ_ADB", str(tmp_path / "no-adb"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeFailure, match="apt-get install adb"):
        AdbDevice()


# -- adb: transport -------------------------------------------------------------------------------
def test_adb_push_run_pull_read(fake_adb, tmp_path):
    dev = open_device("adb")
    assert dev.abi() == "x86_64"
    src = tmp_path / "hello.txt"
    src.write_text("hello phone\n")
    wd = dev.workdir
    assert wd.startswith("/data/local/tmp/edgeq-")
    dev.push(src, f"{wd}/hello.txt")
    assert dev.run(["cat", f"{wd}/hello.txt"]) == (0, "hello phone\n", "")
    dev.pull(f"{wd}/hello.txt", tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "hello phone\n"
    assert dev.read_file("/sys/class/power_supply/battery/status").text == "Discharging\n"
    assert dev.read_file("/sys/nope") == (None, "missing")
    assert dev.glob("/sys/class/thermal/thermal_zone*")[0] == "/sys/class/thermal/thermal_zone0"
    rc, _, err = dev.run(["ls", "/data/local/tmp/nothing-here"])
    assert rc != 0 and "No such file" in err
    with pytest.raises(RuntimeFailure, match="adb pull .* failed"):
        dev.pull(f"{wd}/absent", tmp_path / "x")
    dev.cleanup()
    assert not fake_adb.phone_path(wd).exists()
    assert any(c.startswith("-s EDGEQFAKE01 shell rm -rf /data/local/tmp/edgeq-") for c in fake_adb.calls())


def test_adb_unreadable_battery_is_a_reason(fake_adb, runners_yaml, tiny_pte, pte_inputs):
    fake_adb.set(DENY="/sys/class/power_supply/battery/current_now")
    dev = open_device("adb")
    assert dev.read_file("/sys/class/power_supply/battery/current_now") == (None, "permission denied")
    b = profile_on_device(dev, tiny_pte, "executorch", pte_inputs, 20, 2, 1,
                          runner_config=runners_yaml(), **FAST)
    assert b["energy_mj_per_inference"] is None
    assert "permission denied" in b["energy_mj_per_inference_reason"]
    assert b["latency_ms"]["runs"] == 20


# -- adb: profiling -------------------------------------------------------------------------------
def test_adb_profile_pinned_with_energy(fake_adb, runners_yaml, tiny_pte, pte_inputs, monkeypatch):
    monkeypatch.setenv("EDGEQ_RUNNERS", str(runners_yaml()))  # the config named once
    fake_adb.set(LOAD_UA=-1_900_000)  # the scripted battery draws more while the runner runs
    b = profile_on_device(open_device("adb"), tiny_pte, "executorch", pte_inputs, 60000, 10, 1,
                          pin="big", cooldown_c=80, **FAST)
    lat = b["latency_ms"]
    assert b["device"] == "adb:EDGEQFAKE01" and b["runner"] == "native" and b["mode"] == "measured"
    assert lat["runs"] == 60000 and 0 < lat["min"] <= lat["p50"] <= lat["p99"]
    assert b["peak_memory_bytes"] > 0 and b["threads_applied"] is True
    assert b["pinned_cpus"] == [6, 7]
    assert (fake_adb.home / "taskset.log").read_text().split() == ["c0"]
    assert b["cooldown"]["reached"] is True and b["cooldown"]["zone"] == "BIG"
    assert b["energy"]["source"].startswith("battery") and b["energy"]["idle_w"] == pytest.approx(0.42 * 3.95)
    assert b["energy_mj_per_inference"] is not None and b["energy_mj_per_inference"] > 0, b
    assert b["thermal"] is None and "--sustained" in b["thermal_reason"]
    json.dumps(b)  # report.json material: plain data only
    calls = fake_adb.calls()
    assert any(" push " in f" {c} " and c.endswith(".pte") for c in calls)
    assert calls[-1].startswith("-s EDGEQFAKE01 shell rm -rf /data/local/tmp/edgeq-")


def test_adb_energy_refused_while_charging(fake_adb, runners_yaml, tiny_pte, pte_inputs):
    fake_adb.set(CHARGING=1)
    b = profile_on_device(open_device("adb"), tiny_pte, "executorch", pte_inputs, 20, 2, 1,
                          runner_config=runners_yaml(), **FAST)
    assert b["energy_mj_per_inference"] is None
    assert b["energy_mj_per_inference_reason"].startswith("refused: the phone is charging")
    assert "usb power online" in b["energy_mj_per_inference_reason"]


def test_adb_sustained_trace(fake_adb, runners_yaml, tiny_pte, pte_inputs):
    b = profile_on_device(open_device("adb"), tiny_pte, "executorch", pte_inputs, 200, 5, 1,
                          sustained_s=1.0, window_s=0.05, runner_config=runners_yaml(),
                          energy=False, **FAST)
    t = b["thermal"]
    assert len(t["trace"]) >= 1 and t["throttled"] in (True, False)
    assert t["trace"][0]["temps_c"]["BIG"] == 41.2 and t["trace"][0]["cpu_mhz"][6] == 2802.0
    assert 0 < t["sustained_over_peak"] <= 1 and t["max_temp_c"] == 41.2
    assert "reloaded between windows" in t["windows"]
    assert b["energy_mj_per_inference_reason"] == "energy was not asked for"


def test_adb_disconnect_mid_run_keeps_what_was_measured(fake_adb, runners_yaml, tiny_pte, pte_inputs):
    fake_adb.set(DISCONNECT_ON="--model:1", DROP_DELAY=0.05)
    with pytest.raises(ProfileIncomplete) as e:
        profile_on_device(open_device("adb"), tiny_pte, "executorch", pte_inputs, 2_000_000, 2, 1,
                          cooldown_c=80, runner_config=runners_yaml(), **FAST)
    err = e.value
    assert err.exit_code == 3 and isinstance(err, RuntimeFailure)
    assert "device disconnected" in str(err)
    b = err.block
    assert b["status"] == "failed" and b["cooldown"]["reached"] is True
    assert b["latency_ms"] is None and b["latency_ms_reason"].startswith("not measured: ")
    assert b["peak_memory_bytes"] is None and b["energy_mj_per_inference"] is None
    assert b["thermal_reason"] == "no --sustained run was asked for"


def test_adb_disconnect_during_sustained_keeps_latency_and_trace(fake_adb, runners_yaml,
                                                                  tiny_pte, pte_inputs):
    fake_adb.set(DISCONNECT_ON="--model:3", DROP_DELAY=0.05)
    with pytest.raises(ProfileIncomplete) as e:
        profile_on_device(open_device("adb"), tiny_pte, "executorch", pte_inputs, 100, 2, 1,
                          sustained_s=30, window_s=0.1, runner_config=runners_yaml(),
                          energy=False, **FAST)
    b = e.value.block
    assert b["latency_ms"]["runs"] == 100 and b["peak_memory_bytes"] > 0
    assert b["thermal"]["partial"] is True and len(b["thermal"]["trace"]) == 1
    assert b["status"] == "failed"


def test_adb_disconnect_after_some_commands(fake_adb):
    dev = open_device("adb")
    fake_adb.set(DISCONNECT_AFTER=2)
    dev.run(["true"])
    dev.run(["true"])
    with pytest.raises(DeviceDisconnected, match="not found"):
        dev.run(["true"])


# -- runners: missing, wrong ABI, unusable ----------------------------------------------------------
def test_runner_for_the_wrong_abi(fake_adb, runners_yaml, host_runner, tiny_pte, pte_inputs):
    fake_adb.set(ABI="arm64-v8a")
    cfg = runners_yaml({"aarch64": {"pte": str(host_runner)}})
    with pytest.raises(BadInput, match=r"arm64-v8a.pte runner .* is built for x86_64, but "
                                       r"adb:EDGEQFAKE01 is arm64-v8a"):
        profile_on_device(open_device("adb"), tiny_pte, "executorch", pte_inputs, 5, 1, 1,
                          runner_config=cfg)


def test_runner_missing_or_not_named(fake_adb, runners_yaml, tmp_path, tiny_pte, pte_inputs):
    cfg = runners_yaml({"x86_64": {"pte": str(tmp_path / "gone")}})
    with pytest.raises(BadInput, match="x86_64.pte runner .*gone' does not exist"):
        profile_on_device(open_device("adb"), tiny_pte, "executorch", pte_inputs, 5, 1, 1,
                          runner_config=cfg)
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(b"TFL3")
    with pytest.raises(BadInput, match=r"no tflite runner for adb:EDGEQFAKE01 \(x86_64\): "
                                       r"name one in .*runners.yaml"):
        profile_on_device(open_device("adb"), tfl, "litert", [], 5, 1, 1, runner_config=cfg)


def test_runner_that_cannot_execute(fake_adb, runners_yaml, tmp_path, tiny_pte, pte_inputs):
    junk = tmp_path / "edgeq-et-runner"
    junk.write_bytes(bytes(range(256)) * 4)  # neither ELF nor a script
    with pytest.raises(RuntimeFailure, match="runner edgeq-et-runner cannot run on adb:EDGEQFAKE01"):
        profile_on_device(open_device("adb"), tiny_pte, "executorch", pte_inputs, 5, 1, 1,
                          runner_config=runners_yaml({"x86_64": {"pte": str(junk)}}), energy=False)


# -- the runners' own output ------------------------------------------------------------------------
# Formats as printed by LiteRT's benchmark_model (benchmark_model.cc, Stat::OutputToStream)
# and onnxruntime_perf_test (performance_runner.cc); the numbers are made up.
BENCHMARK_MODEL = """\
INFO: Initialized session in 18.32ms.
INFO: Running benchmark for at least 5 iterations and at least 0 seconds but terminate if exceeding 100000 seconds.
INFO: count=5 first=21540 curr=9876 min=9812 max=21540 avg=12221.2 std=4659
INFO: Running benchmark for at least 50 iterations and at least 0 seconds but terminate if exceeding 100000 seconds.
INFO: count=50 first=9901 curr=9870 min=9755 max=10532 avg=9920.4 std=141
INFO: Inference timings in us: Init: 18320, First inference: 21540, Warmup (avg): 12221.2, Inference (avg): 9920.4
INFO: Memory footprint delta from the start of the tool (MB): init=7.9 overall=14.1
INFO: Overall peak memory footprint (MB) via periodic monitoring: 21.5
"""
PERF_TEST = """\
Session creation time cost: 0.0312 s
First inference time cost: 3 ms
Total inference time cost: 0.1405 s
Total inference requests: 50
Average inference time cost: 2.81 ms
Total inference run time: 0.1411 s
Number of inferences per second: 354.4
Avg CPU usage: 97 %
Peak working set size: 31457280 bytes
Min Latency: 0.00262 s
Max Latency: 0.00341 s
P50 Latency: 0.00279 s
P90 Latency: 0.00301 s
P95 Latency: 0.00312 s
P99 Latency: 0.00341 s
"""


def test_parse_benchmark_model_aggregates():
    p = runners.parse_output("benchmark_model", [], BENCHMARK_MODEL)  # it logs to stderr
    lat = runners.latency_block(p)
    assert lat["mean"] == 9.9204 and lat["std"] == 0.141 and lat["min"] == 9.755
    assert lat["runs"] == 50 and lat["p50"] is None and "only aggregates" in lat["percentiles_reason"]
    assert p.peak_bytes == int(21.5 * 2**20)
    argv = runners.runner_argv(runners.Runner("benchmark_model", "/x/benchmark_model"),
                              {"model": "/d/m.tflite", "runner": "/d/benchmark_model"},
                              50, 5, 4, "xnnpack")
    assert "--graph=/d/m.tflite" in argv and "--num_runs=50" in argv and "--use_xnnpack=true" in argv


def test_parse_benchmark_model_all_same():
    log = ("INFO: count=3 curr=1500(all same)\n"
           "INFO: Inference timings in us: Init: 10, First inference: 1500, Warmup (avg): 1500, "
           "Inference (avg): 1500\n")
    lat = runners.latency_block(runners.parse_output("benchmark_model", [log]))
    assert lat["mean"] == 1.5 and lat["std"] == 0.0 and lat["runs"] == 3 and lat["cv"] == 0.0


def test_parse_onnxruntime_perf_test():
    p = runners.parse_output("onnxruntime_perf_test", PERF_TEST.splitlines(True))
    lat = runners.latency_block(p)
    assert lat["mean"] == 2.81 and lat["p50"] == 2.79 and lat["p90"] == 3.01 and lat["p99"] == 3.41
    assert lat["runs"] == 50 and lat["min"] == 2.62 and "percentiles_reason" not in lat
    assert p.peak_bytes == 31457280
    argv = runners.runner_argv(runners.Runner("onnxruntime_perf_test", "/x/perf"),
                              {"model": "/d/m.onnx", "runner": "/d/perf"}, 50, 5, 2, "nnapi")
    assert argv == ["/d/perf", "-m", "times", "-r", "50", "-x", "2", "-e", "nnapi", "-I", "/d/m.onnx"]
    with pytest.raises(RuntimeFailure, match="no average"):
        runners.parse_output("onnxruntime_perf_test", ["garbage\n"])


def test_elf_abi(host_runner, tmp_path):
    assert runners.elf_abi(host_runner) == "x86_64"
    arm = tmp_path / "arm"
    arm.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + (0xB7).to_bytes(2, "little") + bytes(40))
    assert runners.elf_abi(arm) == "arm64-v8a"
    (tmp_path / "sh").write_text("#!/bin/sh\n")
    assert runners.elf_abi(tmp_path / "sh") is None


def test_doctor_rows(host_runner, tmp_path):
    rows = {r[0]: r for r in runners.doctor_rows(
        {"aarch64": {"pte": str(host_runner), "onnx": str(tmp_path / "absent")},
         "x86_64": {"pte": str(host_runner)}})}
    assert rows["runner arm64-v8a.pte"][1] is False and "built for x86_64" in rows["runner arm64-v8a.pte"][2]
    assert rows["runner arm64-v8a.onnx"][1] is False and rows["runner arm64-v8a.onnx"][2].endswith("missing")
    assert rows["runner x86_64.pte"][1] is True and rows["ssh / scp"][1] is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("[unclosed")
    assert runners.doctor_rows(bad)[-1][:2] == ("runner config", False)


# -- local --------------------------------------------------------------------------------------------
def test_local_profile_uses_the_host_native_runner(tiny_pte, pte_inputs, host_runner):
    b = profile_on_device(LocalDevice(), tiny_pte, "executorch", pte_inputs, 30, 2, 1, **FAST)
    assert b["device"] == "local" and b["runner"] == "native" and b["latency_ms"]["runs"] == 30


# -- ssh: a real sshd on loopback ------------------------------------------------------------------
def test_ssh_transport(ssh_device, sshd, tmp_path, monkeypatch):
    dev = ssh_device
    assert dev.name == f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}"
    assert dev.abi() == normalize_abi(subprocess.check_output(["uname", "-m"], text=True))
    src = tmp_path / "a.bin"
    src.write_bytes(bytes(range(256)))
    dev.push(src, f"{dev.workdir}/a.bin")
    dev.pull(f"{dev.workdir}/a.bin", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == src.read_bytes()
    assert dev.run(["echo", "it's a board"]) == (0, "it's a board\n", "")
    assert dev.read_file("/proc/self/status").text.startswith("Name:")
    assert dev.read_file("/nonexistent/file") == (None, "missing")
    assert dev.alive()
    # The spec route, with the key and known_hosts from the environment.
    monkeypatch.setenv("EDGEQ_SSH_IDENTITY", sshd["identity"])
    monkeypatch.setenv("EDGEQ_SSH_KNOWN_HOSTS", sshd["known_hosts"])
    other = open_device(f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}")
    assert other.run(["true"])[0] == 0
    other.close()


def test_ssh_refused_and_unreachable(sshd, tmp_path, free_port):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    with pytest.raises(RuntimeFailure, match="refused the login .*never types passwords"):
        SshDevice(sshd["user"], "127.0.0.1", sshd["port"], identity=str(tmp_path / "k"),
                  known_hosts=sshd["known_hosts"])
    with pytest.raises(RuntimeFailure, match="cannot reach ssh://.*Connection refused"):
        SshDevice("root", "127.0.0.1", free_port, known_hosts=str(tmp_path / "kh"))


def test_ssh_profile_pte_with_the_board_python(ssh_device, tiny_pte, pte_inputs):
    b = profile_on_device(ssh_device, tiny_pte, "executorch", pte_inputs, 25, 3, 1,
                          runner_config={"python": sys.executable}, **FAST)
    lat = b["latency_ms"]
    assert b["runner"] == "python" and b["device"] == ssh_device.name
    assert lat["runs"] == 25 and 0 < lat["min"] <= lat["p50"] <= lat["p99"] and lat["mean"] > 0
    assert b["peak_memory_bytes"] > 0
    assert b["energy_mj_per_inference"] is None and b["energy_mj_per_inference_reason"]


def test_ssh_sustained_onnx(ssh_device, tiny_onnx):
    x = [np.ones((1, 64), np.float32)]
    b = profile_on_device(ssh_device, tiny_onnx, "onnxruntime", x, 50, 5, 1, sustained_s=1.0,
                          window_s=0.25, runner_config={"python": sys.executable}, **FAST)
    t = b["thermal"]
    assert b["latency_ms"]["runs"] == 50 and b["threads_applied"] is True
    assert len(t["trace"]) >= 3 and all(w["latency_ms"] > 0 for w in t["trace"])
    assert t["duration_s"] >= 1.0 and t["windows"] == "back-to-back runs in one process"
    assert "thermal" not in b.get("thermal_reason", "")
