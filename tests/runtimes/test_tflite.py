"""The LiteRT (.tflite) runtime with the real converter and interpreter: fp32 and int8
exports through the CLI and the library, float-in / float-out sessions on int8 models,
XNNPACK delegation (measured) and NNAPI coverage (predicted), QAT, keep-float, float
I/O, an existing .tflite as MODEL, and the one-line errors.

Conversions take a few seconds each: module-scoped fixtures share them."""
from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_bad_input, invoke

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")
torch = pytest.importorskip("torch")

TARGET = "tflite-xnnpack"

# Big enough for int8 weights to dominate the file (29k parameters), small enough to
# convert in seconds. ``det`` uses an op litert-torch cannot lower.
NET = textwrap.dedent("""
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
            self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
            self.fc = nn.Linear(64 * 4 * 4, 10)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
            return self.fc(x.flatten(1))


    def build():
        torch.manual_seed(0)
        return Net().eval(), (torch.randn(1, 1, 8, 8),)


    class Det(nn.Module):
        def forward(self, x):
            return torch.linalg.det(x[:, 0, :4, :4]).unsqueeze(1)


    def det():
        return Det().eval(), (torch.randn(1, 1, 8, 8),)


    class Cum(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(8, 8)
            self.fc2 = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc2(torch.cumsum(torch.relu(self.fc1(x)), dim=1))


    def cum():
        torch.manual_seed(0)
        return Cum().eval(), (torch.randn(1, 8),)
""")


@dataclasses.dataclass
class Tw:
    root: Path

    @property
    def model(self) -> str:
        return f"{self.root / 'net.py'}:build"

    @property
    def calib(self) -> str:
        return str(self.root / "calib.npz")

    @property
    def eval(self) -> str:
        return str(self.root / "eval.npz")


@pytest.fixture(scope="module")
def tw(tmp_path_factory) -> Tw:
    root = tmp_path_factory.mktemp("tflite")
    (root / "net.py").write_text(NET)
    for name, seed in (("calib", 0), ("eval", 1)):
        rng = np.random.default_rng(seed)
        np.savez(root / f"{name}.npz", x=rng.standard_normal((64, 1, 8, 8)).astype(np.float32),
                 y=rng.integers(0, 10, 64).astype(np.int64))
    return Tw(root)


def _cli_export(tw: Tw, out: Path, *extra):
    r = invoke(["export", tw.model, "-t", TARGET, "-o", out, "--json", *extra])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="module")
def fp32(tw, tmp_path_factory):
    """(artifact, CliResult) of an fp32 export evaluated on eval.npz."""
    out = tmp_path_factory.mktemp("fp32")
    r = _cli_export(tw, out, "-r", "fp32", "--data", tw.eval)
    return out / f"build.fp32.{TARGET}.tflite", r


@pytest.fixture(scope="module")
def int8(tw, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    r = _cli_export(tw, out, "-r", "int8", "--calib", tw.calib)
    return out / f"build.int8.{TARGET}.tflite", r


def _library_export(tw, out: Path, target: str, recipe: str = "int8", qat=None, options=None,
                    **recipe_changes) -> dict:
    from edgeq.data import load_dataset
    from edgeq.models import load_model
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    model = load_model(tw.model)
    t = get_target(target)
    if options:
        t = dataclasses.replace(t, options={**t.options, **options})
    calib = load_dataset(tw.calib, model.input_names)
    qat_cfg = None
    if qat:
        from edgeq.quantize.pt2e import QatConfig

        qat_cfg = QatConfig(calib, epochs=1)
    return export(model, t, load_recipe(recipe).with_(**recipe_changes), calib, qat_cfg,
                  ExportOptions(out))


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    from edgeq.runtimes import get_runtime

    s = get_runtime("tflite").open(path)
    return np.concatenate([s.run([x[i:i + 1]])[0] for i in range(len(x))])


def _reference(tw: Tw, x: np.ndarray) -> np.ndarray:
    from edgeq.models import load_model

    with torch.no_grad():
        return load_model(tw.model).module(torch.from_numpy(x)).numpy()


def _cosine(a, b) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def _manifest(path: Path) -> dict:
    return json.loads(Path(str(path) + ".manifest.json").read_text())


# -- fp32 and int8 --------------------------------------------------------------------------
def test_fp32_matches_pytorch(fp32, tw):
    art, r = fp32
    x = np.load(tw.eval)["x"]
    assert np.abs(_outputs(art, x) - _reference(tw, x)).max() < 1e-4
    m = _manifest(art)
    assert m["target"] == {"name": TARGET, "runtime": "tflite", "format": "tflite",
                           "delegate": "xnnpack"}
    assert set(m["tool_versions"]) >= {"litert-torch", "ai-edge-litert", "ai-edge-quantizer"}
    d = m["delegation"]
    assert d["mode"] == "measured" and d["delegate"] == "xnnpack"
    assert d["delegated_nodes"] == d["total_nodes"] > 0 and d["fallback_ops"] == []
    acc = r.json()["results"][0]["accuracy"]
    assert acc["fidelity"]["agreement"] == 100.0 and acc["fidelity"]["sqnr"] > 60


def test_int8_session_is_float_in_float_out(int8, fp32, tw):
    from edgeq.runtimes import get_runtime

    art, _ = int8
    s = get_runtime("tflite").open(art, threads=2)
    # litert-torch's static int8 model takes and returns int8 tensors; the session
    # quantizes with the input tensor's own scale / zero point and dequantizes outputs.
    assert s.io_dtypes == {"inputs": ["int8"], "outputs": ["int8"]}
    assert s.input_dtypes == ["float32"] and s.input_names == ["args_0"]
    assert s.input_shapes == [(1, 1, 8, 8)]
    x = np.load(tw.eval)["x"]
    out = _outputs(art, x)
    assert out.dtype == np.float32
    assert _cosine(out, _outputs(fp32[0], x)) > 0.99
    # By hand, with the interpreter: the same numbers.
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(art))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (si, zi), (so, zo) = i["quantization"], o["quantization"]
    it.set_tensor(i["index"], np.clip(np.round(x[:1] / si) + zi, -128, 127).astype(np.int8))
    it.invoke()
    np.testing.assert_allclose((it.get_tensor(o["index"]).astype(np.float32) - zo) * so,
                               out[:1], atol=1e-6)
    # A batch of 4 goes through after a resize.
    assert s.run([x[:4]])[0].shape == (4, 10)


def test_int8_size_and_delegation(int8, fp32):
    art, r = int8
    assert art.stat().st_size < 0.35 * fp32[0].stat().st_size
    m = _manifest(art)
    assert m["recipe"]["name"] == "int8" and m["calibration"]["samples"] == 64
    d = m["delegation"]
    assert d["mode"] == "measured" and d["delegated_nodes"] == d["total_nodes"] > 0
    assert r.json()["results"][0]["delegation"] == d


def test_cli_eval_and_profile(int8, tw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    art = tmp_path / int8[0].name
    shutil.copy(int8[0], art)
    shutil.copy(str(int8[0]) + ".manifest.json", str(art) + ".manifest.json")
    r = invoke(["eval", art, "--data", tw.eval, "--reference", tw.model, "--json"])
    assert r.exit_code == 0, r.output
    fid = r.json()["fidelity"]
    assert fid["cosine"] > 0.99 and fid["agreement"] >= 90
    r = invoke(["profile", art, "--runs", "5", "--warmup", "1", "--threads", "2", "--json"])
    assert r.exit_code == 0, r.output
    p = r.json()
    assert p["latency_ms"]["runs"] == 5 and p["latency_ms"]["p50"] > 0
    assert p["runner"] == "python" and p["threads"] == 2 and p["threads_applied"] is True
    assert p["peak_memory_bytes"] > 0


def test_observer_entropy_is_honoured(tw, tmp_path, int8, fp32):
    """edgeq's KL observer reaches litert-torch: a different input scale than the
    default histogram's, and outputs still close to fp32."""
    _cli_export(tw, tmp_path / "o", "--calib", tw.calib, "--observer", "entropy")
    art = tmp_path / "o" / f"build.int8.{TARGET}.tflite"
    assert _manifest(art)["recipe"]["activation_observer"] == "entropy"
    x = np.load(tw.eval)["x"]
    assert _cosine(_outputs(art, x), _outputs(fp32[0], x)) > 0.98

    from ai_edge_litert.interpreter import Interpreter

    def input_scale(path):
        return Interpreter(model_path=str(path)).get_input_details()[0]["quantization"][0]

    assert input_scale(art) != input_scale(int8[0])


def test_observer_unknown_is_rejected(tw, tmp_path):
    r = invoke(["export", tw.model, "-t", TARGET, "--calib", tw.calib, "--observer",
                "entropie", "-o", tmp_path / "o"])
    assert_bad_input(r, "--observer", "'entropie' does not exist", "did you mean 'entropy'")


# -- NNAPI coverage (predicted) -------------------------------------------------------------
def test_nnapi_coverage_is_predicted(tw, tmp_path, int8):
    from edgeq.runtimes import get_runtime
    from edgeq.runtimes.tflite import coverage

    m = _library_export(tw, tmp_path, "tflite-nnapi")
    d = m["delegation"]
    assert d["mode"] == "predicted" and d["delegate"] == "nnapi"
    assert d["android_api_level"] == 30 and "nnapi_delegate.cc" in d["basis"]
    assert d["delegated_nodes"] == d["total_nodes"] > 0 and d["fallback_ops"] == []
    # The artifact is the XNNPACK one: only the coverage prediction differs.
    art = Path(m["artifact"]["path"])
    assert art.read_bytes() == int8[0].read_bytes()
    # Android 8.1 (API 27, NNAPI 1.1) has no signed int8 convolutions: they fall back.
    old, why = coverage.nnapi_delegation(art.read_bytes(), 27)
    assert old.fallback_ops.get("CONV_2D") and old.delegated_nodes < old.total_nodes
    assert "Android 10" in why["CONV_2D"]
    # On this host it runs on the CPU, and the profile says so.
    bench = get_runtime("tflite").benchmark(art, [np.zeros((1, 1, 8, 8), np.float32)], 3, 1, 1)
    assert any("NNAPI" in n and "predicted" in n for n in bench.notes)


def test_xnnpack_fallback_is_measured(tw, tmp_path):
    """CUMSUM has no XNNPACK kernel: the interpreter delegates the two linears around it
    as separate partitions, and the summary counts exactly that."""
    r = invoke(["export", f"{tw.root / 'net.py'}:cum", "-t", TARGET, "-r", "fp32", "-o",
                tmp_path / "o", "--json"])
    assert r.exit_code == 0, r.output
    d = r.json()["results"][0]["delegation"]
    assert (d["delegated_nodes"], d["total_nodes"]) == (2, 3) and d["mode"] == "measured"
    assert d["fallback_ops"] == [{"op": "CUMSUM", "count": 1}]


def test_nnapi_rules():
    from edgeq.runtimes.tflite.coverage import F32, I8, Op, nnapi_reason

    act = (F32, (1, 8), False, None)
    assert nnapi_reason(Op("ADD", 1, [act, act], [act]), 27) is None
    assert "not mapped" in nnapi_reason(Op("my_custom_op", 1, [act], [act]), 30)
    assert "API level 33" in nnapi_reason(Op("BATCH_MATMUL", 1, [act, act], [act]), 30)
    assert "op version 6" in nnapi_reason(Op("FULLY_CONNECTED", 6, [act], [act]), 30)
    q = (I8, (1, 8), False, 3)
    assert "Android 11" in nnapi_reason(Op("QUANTIZE", 2, [act], [q]), 29)
    assert nnapi_reason(Op("QUANTIZE", 2, [act], [q]), 30) is None
    five = (F32, (1, 2, 3, 4, 5), False, None)
    assert "rank" in nnapi_reason(Op("ADD", 1, [five, five], [five]), 30)


# -- QAT, keep-float, float I/O -------------------------------------------------------------
def test_qat(tw, tmp_path, fp32):
    m = _library_export(tw, tmp_path, TARGET, qat=True)
    art = Path(m["artifact"]["path"])
    assert art.name == f"build.int8-qat.{TARGET}.tflite" and m["qat"]["epochs"] == 1
    assert m["delegation"]["delegated_nodes"] == m["delegation"]["total_nodes"]
    x = np.load(tw.eval)["x"]
    assert _cosine(_outputs(art, x), _outputs(fp32[0], x)) > 0.98
    assert art.stat().st_size < 0.35 * fp32[0].stat().st_size


def test_keep_float_with_float_io(tw, tmp_path, int8, fp32):
    from edgeq.runtimes import get_runtime
    from edgeq.runtimes.tflite.coverage import F32, read_ops

    m = _library_export(tw, tmp_path, TARGET, options={"io_dtype": "float"},
                        keep_float=("fc",))
    art = Path(m["artifact"]["path"])
    s = get_runtime("tflite").open(art)
    assert s.io_dtypes == {"inputs": ["float32"], "outputs": ["float32"]}
    ops = read_ops(art.read_bytes())
    fc = [op for op in ops if op.name == "FULLY_CONNECTED"]
    assert len(fc) == 1 and fc[0].inputs[1][0] == F32  # fp32 weights: kept in float
    assert [op.name for op in ops][0] == "QUANTIZE"  # float input quantized in the model
    assert art.stat().st_size > int8[0].stat().st_size  # fp32 fc weights
    x = np.load(tw.eval)["x"]
    assert _cosine(_outputs(art, x), _outputs(fp32[0], x)) > 0.99
    with pytest.raises(Exception, match="io_dtype int8"):
        _library_export(tw, tmp_path / "b", TARGET, options={"io_dtype": "int8"},
                        keep_float=("fc",))


def test_keep_float_between_int8_layers(tw, tmp_path, int8, fp32):
    """A layer kept float between two int8 ones really is float in the .tflite (without the
    converter's strict QDQ mode it quantized the sandwiched conv and its weights itself),
    and the interface stays int8 as for plain int8."""
    from edgeq.runtimes import get_runtime
    from edgeq.runtimes.tflite.coverage import F32, I8, read_ops

    m = _library_export(tw, tmp_path, TARGET, keep_float=("conv2",))
    art = Path(m["artifact"]["path"])
    ops = read_ops(art.read_bytes())
    convs = [op for op in ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [op.inputs[1][0] for op in convs] == [I8, F32], [op.name for op in ops]
    assert [op.name for op in ops].count("DEQUANTIZE") == 1  # into the float conv
    plain = read_ops(int8[0].read_bytes())
    assert not [op for op in plain if op.name in ("QUANTIZE", "DEQUANTIZE")
                and op.inputs[0][0] == F32 or op.name == "DEQUANTIZE"]
    s = get_runtime("tflite").open(art)
    assert s.io_dtypes == get_runtime("tflite").open(int8[0]).io_dtypes
    # conv2 holds 18k of the 29k parameters: 4 bytes each instead of 1
    assert art.stat().st_size > int8[0].stat().st_size + 3 * 18000
    x = np.load(tw.eval)["x"]
    assert _cosine(_outputs(art, x), _outputs(fp32[0], x)) > 0.99


def test_keep_float_typo(tw, tmp_path):
    r = invoke(["export", tw.model, "-t", TARGET, "--calib", tw.calib, "--keep-float", "fcc",
                "-o", tmp_path / "o"])
    assert_bad_input(r, "--keep-float 'fcc'")


# -- an existing .tflite as MODEL -----------------------------------------------------------
def test_tflite_as_model(fp32, tw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "net.tflite"
    shutil.copy(fp32[0], src)
    r = invoke(["export", src, "-t", TARGET, "-r", "int8", "--calib", tw.calib, "-o", "out",
                "--data", tw.eval, "--json"])
    assert r.exit_code == 0, r.output
    cell = r.json()["results"][0]
    assert cell["artifact"]["size_bytes"] < 0.35 * src.stat().st_size
    assert cell["delegation"]["delegated_nodes"] == cell["delegation"]["total_nodes"]
    assert cell["accuracy"]["fidelity"]["cosine"] > 0.99  # against net.tflite itself
    assert "ai-edge-quantizer" in r.stderr
    r = invoke(["export", src, "-t", TARGET, "--qat-data", tw.calib, "-o", "qat"])
    assert_bad_input(r, "QAT", "net.tflite")


# -- errors ---------------------------------------------------------------------------------
def test_corrupt_tflite_is_bad_input(int8, tw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(int8[0].read_bytes()[:300])
    for args in (["eval", bad, "--data", tw.eval], ["profile", bad, "--runs", "2"]):
        line = assert_bad_input(invoke(args), "bad.tflite")
        assert "corrupt or truncated" in line


def test_unsupported_op_names_it(tw, tmp_path):
    r = invoke(["export", f"{tw.root / 'net.py'}:det", "-t", TARGET, "-r", "fp32", "-o",
                tmp_path / "o"])
    line = assert_bad_input(r, "LiteRT conversion", "linalg_det", out_dir=tmp_path / "o")
    assert "net.py:" in line  # the user's source line


def test_doctor_rows():
    from edgeq.runtimes import get_runtime

    rows = {c: (ok, d) for c, ok, d in get_runtime("tflite").check()}
    assert set(rows) == {"litert-torch", "ai-edge-litert", "ai-edge-quantizer"}
    assert all(ok for ok, _ in rows.values())
