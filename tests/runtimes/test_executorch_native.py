"""The native ExecuTorch runner: builds with the system compiler, agrees with the
executorch Python runtime to 1e-5, and fails with the right edgeq error."""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import BadInput, RuntimeFailure
from edgeq.runtimes.executorch import native

torch = pytest.importorskip("torch")
pytest.importorskip("executorch.runtime")
nn = torch.nn


class ConvBnLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x, y):
        return self.conv(x).mean((2, 3)) + self.fc(y), torch.sigmoid(y)


def _export(model: nn.Module, example: tuple, path: Path, quantize: bool = False) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = model.eval()
    if quantize:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(torch.export.export(model, example).module(), quantizer)
        for _ in range(4):
            prepared(*(torch.randn_like(t) for t in example))
        model = convert_pt2e(prepared)
    program = to_edge_transform_and_lower(
        torch.export.export(model, example), partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(program.buffer)
    return path


@pytest.fixture(scope="session")
def runner(tmp_path_factory) -> Path:
    if native.compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    return native.build_runner(tmp_path_factory.mktemp("runners"))


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, tuple[Path, list[np.ndarray]]]:
    d = tmp_path_factory.mktemp("pte")
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    y = torch.randn(1, 6)
    return {
        "fp32": (_export(ConvBnLinear(), (x,), d / "fp32.pte"), [x.numpy()]),
        "int8": (_export(ConvBnLinear(), (x,), d / "int8.pte", quantize=True), [x.numpy()]),
        "two_inputs": (_export(TwoInputs(), (x, y), d / "two.pte"), [x.numpy(), y.numpy()]),
    }


def _python_outputs(pte: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(pte).load_method("forward")
    return [o.numpy() for o in method.execute([torch.from_numpy(x) for x in inputs])]


@pytest.mark.parametrize("name", ["fp32", "int8", "two_inputs"])
def test_matches_python_runtime(runner, models, name):
    pte, inputs = models[name]
    res = native.run(runner, pte, inputs, runs=5, warmup=2, threads=1, want_outputs=True)
    expected = _python_outputs(pte, inputs)
    assert res.outputs is not None and len(res.outputs) == len(expected)
    for got, want in zip(res.outputs, expected):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(res.times_ms) == 5 and all(t > 0 for t in res.times_ms)
    assert res.peak_rss_bytes is not None and res.peak_rss_bytes > 1 << 20
    assert res.threads_applied


def test_threads_and_no_outputs(runner, models):
    pte, inputs = models["int8"]
    res = native.run(runner, pte, inputs, runs=3, warmup=0, threads=2)
    assert res.outputs is None and len(res.times_ms) == 3 and res.threads_applied


def test_stdout_is_one_json_line(runner, models, tmp_path):
    pte, inputs = models["fp32"]
    (tmp_path / "in.bin").write_bytes(inputs[0].tobytes())
    proc = subprocess.run([str(runner), "--model", str(pte), "--input", str(tmp_path / "in.bin"),
                           "--runs", "2", "--warmup", "0", "--threads", "1"],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    js = json.loads(lines[0])
    assert js["num_inputs"] == 1 and js["num_outputs"] == 1 and js["method"] == "forward"


def test_wrong_input_size_is_bad_input(runner, models):
    pte, inputs = models["fp32"]
    with pytest.raises(BadInput, match="bytes, the model expects"):
        native.run(runner, pte, [inputs[0][:, :2]], runs=1, warmup=0, threads=1)


def test_wrong_input_count_is_bad_input(runner, models):
    pte, inputs = models["two_inputs"]
    with pytest.raises(BadInput, match="takes 2 inputs"):
        native.run(runner, pte, inputs[:1], runs=1, warmup=0, threads=1)


def test_truncated_program_is_runtime_failure(runner, models, tmp_path):
    pte, inputs = models["fp32"]
    data = pte.read_bytes()
    bad = tmp_path / "half.pte"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeFailure, match="Program::load failed"):
        native.run(runner, bad, inputs, runs=1, warmup=0, threads=1)


def test_missing_files(runner, models, tmp_path):
    pte, inputs = models["fp32"]
    with pytest.raises(BadInput, match="not found"):
        native.run(runner, tmp_path / "nope.pte", inputs, runs=1, warmup=0, threads=1)
    with pytest.raises(RuntimeFailure, match="runner not found"):
        native.run(tmp_path / "no-runner", pte, inputs, runs=1, warmup=0, threads=1)
    # The binary itself, given a missing model, names the file and exits 3.
    (tmp_path / "in.bin").write_bytes(inputs[0].tobytes())
    proc = subprocess.run([str(runner), "--model", str(tmp_path / "nope.pte"), "--input",
                           str(tmp_path / "in.bin")], capture_output=True, text=True)
    assert proc.returncode == 3 and "nope.pte" in proc.stderr.splitlines()[-1]
    assert proc.stdout == ""


def test_build_is_cached_and_concurrent_safe(tmp_path):
    if native.compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(native.build_runner(tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] and results[0].is_file()
    assert [p.name for p in tmp_path.iterdir()] == [results[0].name]  # no temp files left
    mtime = results[0].stat().st_mtime_ns
    assert native.build_runner(tmp_path) == results[0] and results[0].stat().st_mtime_ns == mtime


def test_build_failures_are_runtime_failures(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    assert native.compiler() is None
    with pytest.raises(RuntimeFailure, match="CXX"):
        native.build_runner(tmp_path)
    monkeypatch.delenv("CXX")
    if native.compiler() is None:
        pytest.skip("no C++ compiler on this machine")
    broken = tmp_path / "runner.cpp"
    broken.write_text("int main() { return undeclared_name; }\n")
    monkeypatch.setattr(native, "_SOURCE", broken)
    with pytest.raises(RuntimeFailure, match="undeclared_name"):
        native.build_runner(tmp_path / "cache")
