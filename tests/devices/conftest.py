"""Fixtures for the device tests: the scripted adb stand-in (tests/devices/fake_adb/adb), a
real sshd on a loopback port with keys made in a temp folder, tiny artifacts and the
host build of the native ExecuTorch runner."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

FAKE_ADB = Path(__file__).parent / "fake_adb" / "adb"
SSHD = "/usr/sbin/sshd"


class FakeAdb:
    """The scripted phone of one test: ``set(CHARGING="1")`` sets FAKE_ADB_* scenario
    variables; ``calls()`` lists the adb command lines edgeq sent."""

    def __init__(self, home: Path, monkeypatch):
        self.home, self.mp = home, monkeypatch

    def set(self, **scenario):
        for k, v in scenario.items():
            self.mp.setenv(f"FAKE_ADB_{k}", str(v))

    def calls(self) -> list[str]:
        log = self.home / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def phone_path(self, path: str) -> Path:
        return self.home / "fs" / path.lstrip("/")


@pytest.fixture
def fake_adb(tmp_path, monkeypatch) -> FakeAdb:
    home = tmp_path / "phone-state"
    home.mkdir()
    monkeypatch.setenv("EDGEQ_ADB", str(FAKE_ADB))
    monkeypatch.setenv("FAKE_ADB_HOME", str(home))
    # The stand-in is a python3 script: run it with this interpreter's python3.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for k in list(os.environ):
        if k.startswith("FAKE_ADB_") and k != "FAKE_ADB_HOME":
            monkeypatch.delenv(k)
    return FakeAdb(home, monkeypatch)


@pytest.fixture(scope="session")
def tiny_pte(request) -> Path:
    """A small conv net lowered to ExecuTorch with XNNPACK (input 1x3x16x16 float32).
    Lowering costs ~10 s, so the file is kept in pytest's cache, keyed by the torch and
    executorch versions (delete .pytest_cache to force a fresh export)."""
    from importlib.metadata import version

    key = f"tiny-v1-torch{version('torch')}-et{version('executorch')}.pte"
    path = request.config.cache.mkdir("edgeq-devices") / key
    if path.is_file():
        return path
    torch = pytest.importorskip("torch")
    pytest.importorskip("executorch.exir")
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10)).eval()
    ep = torch.export.export(model, (torch.randn(1, 3, 16, 16),))
    prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(prog.buffer)
    os.replace(tmp, path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """MatMul + Relu built with onnx.helper (input 'x' 1x64 float32)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 32))
                                .astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture
def pte_inputs():
    return [np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)]


@pytest.fixture(scope="session")
def host_runner() -> Path:
    """The host build of edgeq's native .pte runner (what the scripted phone executes)."""
    from edgeq.runtimes.executorch import native

    if native.compiler() is None:
        pytest.skip("no C++ compiler to build the native runner")
    return native.build_runner()


@pytest.fixture
def runners_yaml(tmp_path, host_runner):
    """Write a runner config; ``runners_yaml({"x86_64": {"pte": path}})`` -> its path."""
    import yaml

    def write(cfg=None) -> Path:
        path = tmp_path / "runners.yaml"
        path.write_text(yaml.safe_dump(cfg if cfg is not None else
                                       {"x86_64": {"pte": str(host_runner)}}))
        return path
    return write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    return _free_port()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1:<free port>, key login only, started for the
    test session. Yields dict(user, host, port, identity, known_hosts)."""
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} missing: apt-get install openssh-server")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    shutil.copy(d / "user_key.pub", d / "authorized_keys")
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin yes\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation folder
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=open(d / "sshd.log", "w"))
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"sshd did not start: {(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
    yield {"user": getpass.getuser(), "host": "127.0.0.1", "port": port,
           "identity": str(d / "user_key"), "known_hosts": str(d / "known_hosts")}
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def ssh_device(sshd):
    from edgeq.devices.transport import SshDevice

    dev = SshDevice(sshd["user"], sshd["host"], sshd["port"], identity=sshd["identity"],
                    known_hosts=sshd["known_hosts"])
    yield dev
    dev.cleanup()
    dev.close()
