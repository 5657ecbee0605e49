"""RayExecutor and `edgeq ray-worker` on a real local Ray cluster started here: a head node
with one CPU and no devices, and a worker node joined through `edgeq ray-worker` that
advertises `device:pixel-8` (mapped to `local`). Started once for the module; both nodes
run in sessions of their own, whose processes teardown kills."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import invoke, write_work

try:
    import ray
except ImportError:  # an optional extra; CI installs it and must run these tests
    if os.environ.get("CI"):
        raise
    pytest.skip("ray is not installed (pip install 'edgeq[ray]')", allow_module_level=True)

from edgeq.errors import BadInput, RuntimeFailure
from edgeq.pipeline.executors import Outcome, Task
from edgeq.pipeline.ray_executor import RayExecutor, placement

HERE = Path(__file__).resolve().parent
FUNCS = "ray_task_funcs"
DEVICE = "device:pixel-8"
# A dead node is noticed within about two seconds, much sooner than with Ray's defaults.
FAST_HEALTH_CHECKS = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 500,
                      "health_check_timeout_ms": 1000, "health_check_failure_threshold": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(argv: list[str], log: Path, env: dict) -> subprocess.Popen:
    # A session of its own: teardown ends the node and everything it spawned by session id.
    return subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def _in_sessions(sids: set) -> list[int]:
    """Processes of the sessions our nodes started (Ray's workers take process groups of
    their own but stay in the node's session)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            state, _ppid, _pgrp, sid = (d / "stat").read_text().rpartition(")")[2].split()[:4]
        except (OSError, ValueError):
            continue
        if int(sid) in sids and state != "Z":  # a zombie is dead already
            found.append(int(d.name))
    return found


def _stop(procs: list[subprocess.Popen]) -> None:
    # SIGTERM makes a node drain for up to 30 s; this throw-away cluster needs none of it.
    sids = {p.pid for p in procs}
    end = time.monotonic() + 20
    while time.monotonic() < end:
        left = _in_sessions(sids)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for p in procs:
            if p.poll() is None:
                p.wait(timeout=5)
        time.sleep(0.2)


def _wait(cond, timeout_s: float, what: str, logs: list[Path], procs: list):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and all(p.poll() is None for p in procs):
        got = cond()
        if got:
            return got
        time.sleep(0.3)
    tails = "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-15:])
                      for p in logs if p.exists())
    raise AssertionError(f"no {what} after {timeout_s} s (or a node exited)\n{tails}")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Cluster(NamedTuple):
    address: str
    executor: RayExecutor
    device_node: str  # node id of the pixel-8 worker
    tmp: Path
    env: dict
    small: list  # `ray start` options that keep a test node small
    procs: list  # node processes, killed at teardown
    logs: list


@pytest.fixture(scope="module")
def cluster():
    """The running cluster (see :class:`Cluster`), with an executor connected to it."""
    tmp = Path(tempfile.mkdtemp(prefix="eqray-"))  # short: Ray's unix sockets live here
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    env.pop("EDGEQ_RAY_DEVICES", None)
    ray_exe = str(Path(sys.executable).parent / "ray")
    small = ["--object-store-memory=100000000", f"--dashboard-agent-listen-port={_free_port()}",
             f"--metrics-export-port={_free_port()}"]
    logs = [tmp / "head.log", tmp / "worker.log"]
    procs: list[subprocess.Popen] = []
    executor = None
    try:
        procs.append(_start([ray_exe, "start", "--head", f"--port={port}", "--num-cpus=1",
                             "--resources={}", "--disable-usage-stats",
                             "--include-dashboard=false", f"--temp-dir={tmp / 'ray'}",
                             f"--system-config={json.dumps(FAST_HEALTH_CHECKS)}",
                             "--block", *small],
                            logs[0], env))
        _wait(lambda: _listening(port), 60, "head node", logs, procs)
        # The worker joins through the command under test.
        procs.append(_start([sys.executable, "-m", "edgeq", "ray-worker", "--address",
                             address, "--device", "pixel-8=local", "--num-cpus", "1", "--",
                             *small], logs[1], env))
        executor = RayExecutor(address)

        def joined():
            res = ray.cluster_resources()
            return res.get("CPU", 0) >= 2 and res.get(DEVICE, 0) >= 1

        _wait(joined, 60, "pixel-8 worker in the cluster", logs, procs)
        node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and DEVICE in n["Resources"])
        yield Cluster(address, executor, node, tmp, env, small, procs, logs)
    finally:
        if executor is not None:
            executor.close()
        _stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


def run_all(executor, tasks: list[Task]) -> dict:
    """key -> Outcome, checking that on_done runs in this thread, once per task."""
    got, me = {}, threading.get_ident()

    def on_done(task, outcome):
        assert threading.get_ident() == me
        assert task.key not in got
        got[task.key] = outcome

    executor.run(tasks, on_done)
    assert sorted(got) == sorted(t.key for t in tasks)
    return got


def test_results_and_device_placement(cluster):
    executor, device_node = cluster.executor, cluster.device_node
    tasks = [Task(f"any/{i}", f"{FUNCS}:where", {"tag": str(i)}, {}) for i in range(3)]
    tasks += [Task(f"dev/{i}", f"{FUNCS}:where", {"tag": f"d{i}"}, {DEVICE: 1})
              for i in range(3)]
    got = run_all(executor, tasks)
    assert all(o.ok and o.exit_code == 0 and o.error is None for o in got.values()), got
    assert [got[f"any/{i}"].value["tag"] for i in range(3)] == ["0", "1", "2"]
    for i in range(3):  # every device task ran where device:pixel-8 is, with its map
        v = got[f"dev/{i}"].value
        assert v["node"] == device_node
        assert json.loads(v["devices"]) == {"pixel-8": "local"}
    # host-only tasks go anywhere: the head (no device map) is one of the two nodes
    assert {got[f"any/{i}"].value["node"] for i in range(3)} <= {
        n["NodeID"] for n in ray.nodes() if n["Alive"]}


def test_worker_device_spec_replaces_the_pipelines(cluster):
    executor = cluster.executor
    entry = {"kind": "device", "name": "pixel-8", "spec": "adb:NOT-HERE", "threads": None}
    got = run_all(executor, [
        Task("profile/on-device", f"{FUNCS}:seen_device", {"device": entry}, {DEVICE: 1}),
        Task("profile/anywhere", f"{FUNCS}:seen_device", {"device": entry}, {})])
    assert got["profile/on-device"].value["device"] == dict(entry, kind="local", spec="local")
    assert got["profile/anywhere"].value["device"] == entry  # no device resource: untouched


def test_local_profiles_stay_on_the_drivers_host(cluster):
    ip = ray.util.get_node_ip_address()
    local = {"kind": "local", "name": "local", "spec": "local"}
    t = Task("profile/local", f"{FUNCS}:seen_device", {"device": local}, {})
    assert placement(t, ip) == {f"node:{ip}": 0.001}
    on_dev = Task("p", f"{FUNCS}:seen_device", {"device": dict(local, kind="device")},
                  {DEVICE: 1})
    assert placement(on_dev, ip) == {DEVICE: 1}
    got = run_all(cluster.executor, [t])
    assert got["profile/local"].ok and got["profile/local"].value["device"] == local


def test_task_errors_keep_their_exit_codes(cluster):
    executor = cluster.executor
    got = run_all(executor, [Task(k, f"{FUNCS}:fail", {"kind": k}, {})
                             for k in ("bad", "budget", "runtime", "value")])
    assert [(got[k].ok, got[k].exit_code) for k in ("bad", "budget", "runtime", "value")] == [
        (False, 2), (False, 1), (False, 3), (False, 3)]
    assert got["bad"].error.startswith("calib.npz: no array 'x'")
    assert got["value"].error.startswith("ValueError: not a number")
    # a failure outside the task function (its result does not serialise): still one line
    got = run_all(executor, [Task("odd", f"{FUNCS}:unpicklable", {}, {})])
    assert got["odd"] == Outcome(False, error="TypeError: cannot pickle '_thread.lock' object",
                                 exit_code=3)


def test_lost_worker_fails_its_task_only(cluster):
    executor = cluster.executor
    tasks = [Task("crash", f"{FUNCS}:crash", {}, {DEVICE: 1})]
    tasks += [Task(f"ok/{i}", f"{FUNCS}:where", {"tag": str(i)}, {}) for i in range(3)]
    got = run_all(executor, tasks)
    lost = got["crash"]
    assert (lost.ok, lost.exit_code) == (False, 3)
    assert lost.error.startswith("worker lost: 'crash': the worker process died"), lost.error
    assert "\n" not in lost.error
    assert all(got[f"ok/{i}"].ok for i in range(3))
    # the device's node survives its worker process: the next device task runs
    again = run_all(executor, [Task("dev", f"{FUNCS}:where", {}, {DEVICE: 1})])
    assert again["dev"].ok


def test_resource_no_node_has_fails_fast(cluster):
    address, executor = cluster.address, cluster.executor
    t0 = time.monotonic()
    got = run_all(executor, [Task("profile/x/nope", f"{FUNCS}:where", {}, {"device:nope": 1}),
                             Task("fine", f"{FUNCS}:where", {}, {})])
    assert time.monotonic() - t0 < 20
    miss = got["profile/x/nope"]
    assert (miss.ok, miss.exit_code) == (False, 3)
    assert miss.error == (f"no Ray node advertises device:nope; on the host that holds it, "
                          f"run `edgeq ray-worker --address {address} --device nope=SPEC`")
    assert got["fine"].ok


def test_node_lost_mid_run(cluster):
    """A device host leaves the cluster mid-run: its running task and the one waiting for
    its device end as "worker lost" (exit 3); host-only work goes on."""
    executor = cluster.executor
    marker = cluster.tmp / "doomed.started"
    log = cluster.tmp / "doomed.log"
    doomed = _start([sys.executable, "-m", "edgeq", "ray-worker", "--address", cluster.address,
                     "--device", "doomed=local", "--num-cpus", "1", "--", *cluster.small],
                    log, cluster.env)
    cluster.procs.append(doomed)
    _wait(lambda: ray.cluster_resources().get("device:doomed"), 60, "doomed worker",
          [log], [doomed])

    def kill_when_started():
        end = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < end:
            time.sleep(0.1)
        os.killpg(doomed.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    t0 = time.monotonic()
    got = run_all(executor, [
        Task(f"doomed/{i}", f"{FUNCS}:hold", {"marker": str(marker), "seconds": 60},
             {"device:doomed": 1}) for i in range(2)] + [
        Task("elsewhere", f"{FUNCS}:hold", {"marker": str(cluster.tmp / "x"), "seconds": 0},
             {})])
    killer.join()
    assert time.monotonic() - t0 < 45  # not the 60 s the tasks would have taken
    assert got["elsewhere"].ok
    errors = sorted(got[f"doomed/{i}"].error for i in range(2))
    assert all(not got[f"doomed/{i}"].ok and got[f"doomed/{i}"].exit_code == 3
               for i in range(2))
    assert all(e.startswith("worker lost: ") and "\n" not in e for e in errors), errors
    # the one running when its node died says so; the one waiting for the device may be
    # cancelled by the executor first (no node can ever run it), which says that
    for e in errors:
        assert re.fullmatch(r"worker lost: 'doomed/[01]': (its node left the cluster "
                            r"\[NodeDiedError\]|the worker process died .*\[WorkerCrashedError\]"
                            r"|no Ray node advertises device:doomed any more \(the host that "
                            r"had it left the cluster\))", e), errors


def test_bad_addresses(cluster):
    with pytest.raises(BadInput, match="expected HOST:PORT"):
        RayExecutor("head")
    # Unreachable: one line, exit 3, in seconds rather than Ray's minutes of retries. In a
    # fresh process: this one is already connected to the test cluster.
    dead = f"127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c",
                        "import sys\nfrom edgeq.errors import EdgeqError\n"
                        "from edgeq.pipeline.ray_executor import RayExecutor\n"
                        f"try:\n    RayExecutor('{dead}')\n"
                        "except EdgeqError as e:\n    print(e, file=sys.stderr)\n"
                        "    sys.exit(e.exit_code)\n"],
                       capture_output=True, text=True, timeout=60)
    assert time.monotonic() - t0 < 30
    assert r.returncode == RuntimeFailure.exit_code, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"no Ray cluster at {dead} (Connection refused): start one with `ray start --head` "
        "or check --ray"]


def test_ray_worker_bad_input(run_cli):
    r = run_cli(["ray-worker", "--address", "127.0.0.1:6379", "--device", "pixel-8"])
    assert r.exit_code == 2 and "expected NAME=SPEC" in r.stderr, r.output
    r = run_cli(["ray-worker", "--address", "127.0.0.1:6379", "--device", "a=usb:1"])
    assert r.exit_code == 2 and "SPEC 'usb:1' should be local" in r.stderr, r.output
    r = run_cli(["ray-worker", "--address", "ray://head:10001", "--device", "a=local",
                 "--dry-run"])
    assert r.exit_code == 2 and "not a ray:// client address" in r.stderr, r.output
    r = run_cli(["ray-worker", "--address", "head:6379", "--device", "pixel-8=adb:R58",
                 "--num-cpus", "2", "--dry-run", "--json", "--", "--object-store-memory=1"])
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["command"][1:] == ["start", "--address=head:6379",
                                  '--resources={"device:pixel-8": 1}', "--disable-usage-stats",
                                  "--num-cpus=2", "--block", "--object-store-memory=1"]
    assert out["env"] == {"EDGEQ_RAY_DEVICES": '{"pixel-8": "adb:R58"}'}


PIPELINE = """\
model: {model}
calib: {calib}
data: {data}
recipes: [fp32]
targets: [onnx-cpu]
devices:
  - {device}
profile: {{runs: 5, warmup: 1}}
budgets:
  - max_size: 2MB
"""


def _shape(obj):
    """Keys and nesting of a report, without its values."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(v) for v in obj]
    return type(obj).__name__ if obj is None or isinstance(obj, (bool, str)) else "number"


def test_edgeq_run_on_ray_matches_in_process(cluster, tmp_path, monkeypatch):
    address = cluster.address
    work = write_work(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    reports = {}
    # On Ray, pixel-8 is the worker's device (its map says local): the pipeline's own spec
    # (adb, no phone here) is replaced there. In process it is this host, measured.
    for mode, device, extra in (("ray", "{device: adb, name: pixel-8}", ["--ray", address]),
                                ("local", "{device: local, name: pixel-8}", [])):
        (tmp_path / f"{mode}.yaml").write_text(PIPELINE.format(
            model=work.model, calib=work.calib, data=work.eval, device=device))
        r = invoke(["run", f"{mode}.yaml", "-o", f"out-{mode}", "--json", *extra])
        assert r.exit_code == 0, r.output
        assert r.json()["passed"] is True
        reports[mode] = json.loads(Path(r.json()["report"]).read_text())
    ray_report, local = reports["ray"], reports["local"]
    (cell,) = ray_report["results"]
    assert cell["accuracy"]["samples"] == 64 and cell["accuracy"]["drop"] == pytest.approx(
        0.0, abs=1e-9)
    assert cell["profile"]["mode"] == "measured" and cell["profile"]["latency_ms"]["runs"] == 5
    assert cell["accuracy"] == local["results"][0]["accuracy"]
    assert cell["artifact"]["sha256"] == local["results"][0]["artifact"]["sha256"]
    # where it was measured is said in the notes (their number varies: noisy runs get one)
    assert cell["profile"].pop("notes")[-1] == (f"measured by Ray node {socket.gethostname()}"
                                               " through local")
    assert isinstance(local["results"][0]["profile"].pop("notes"), list)
    assert _shape(ray_report["results"]) == _shape(local["results"])
    assert _shape(ray_report["budgets"]) == _shape(local["budgets"])
