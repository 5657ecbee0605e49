"""The ONNX Runtime backend with the real onnxruntime: fp32 export, static int8 QDQ with
each observer, the .ort copy, provider coverage, and the errors, through the library and
through the CLI. Exports are shared per module (each costs a few seconds)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY_MODEL, assert_bad_input, invoke

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


# -- inputs: the tiny CNN on real handwritten digits (8x8, [0, 1]) ------------------------
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """model.py (the conftest tiny CNN), calib.npz / eval.npz (64 digits each, labels) and
    recipe files for the observers."""
    from edgeq.data import load_dataset

    root = tmp_path_factory.mktemp("onnx-in")
    (root / "model.py").write_text(TINY_MODEL)
    for name, split in (("calib", "train"), ("eval", "eval")):
        ds = load_dataset(f"digits:{split}")
        np.savez(root / f"{name}.npz", x=ds.inputs["x"][:64], y=ds.labels[:64])
    for name, fields in {"minmax": "activation_observer: minmax",
                         # 512 bins: a real KL search (at 128 bins Entropy == MinMax), fast.
                         "entropy": "activation_observer: entropy\nhistogram_bins: 512",
                         "percentile": "activation_observer: percentile\npercentile: 99.0\n"
                                       "histogram_bins: 512",
                         "pertensor": "activation_observer: minmax\n"
                                      "weight_granularity: per-tensor"}.items():
        (root / f"{name}.yaml").write_text(f"base: int8\n{fields}\n")
    return root


@pytest.fixture(scope="module")
def tiny(work):
    from edgeq.models import load_model

    return load_model(f"{work / 'model.py'}:build")


@pytest.fixture(scope="module")
def eval_x(work) -> np.ndarray:
    return np.load(work / "eval.npz")["x"]


# (target, recipe spec) per artifact built through the library, each in its own folder.
CELLS = {"fp32": ("onnx-cpu", "fp32"), "int8": ("onnx-cpu", "int8"),
         "minmax": ("onnx-cpu", "minmax"), "entropy": ("onnx-cpu", "entropy"),
         "percentile": ("onnx-cpu", "percentile"),
         "pertensor": ("onnx-cpu", "pertensor"), "nnapi": ("onnx-nnapi", "minmax"),
         "xnnpack": ("onnx-xnnpack", "minmax"), "xnnpack-fp32": ("onnx-xnnpack", "fp32")}


@pytest.fixture(scope="module")
def built(work, tiny, tmp_path_factory) -> dict[str, dict]:
    """Manifests (artifact.path absolute) of every CELLS artifact, via edgeq.stages.export."""
    from edgeq.data import load_dataset
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    calib = load_dataset(str(work / "calib.npz"), tiny.input_names)
    out = tmp_path_factory.mktemp("onnx-built")
    manifests = {}
    for key, (target, recipe) in CELLS.items():
        spec = recipe if recipe in ("fp32", "int8") else str(work / f"{recipe}.yaml")
        manifests[key] = export(tiny, get_target(target), load_recipe(spec), calib, None,
                                ExportOptions(out / key))
    return manifests


def artifact(built, key) -> Path:
    return Path(built[key]["artifact"]["path"])


def run_all(path: Path, x: np.ndarray) -> np.ndarray:
    from edgeq.runtimes import get_runtime

    session = get_runtime("onnx").open(path)
    return np.concatenate([session.run([x[i:i + 1]])[0] for i in range(len(x))])


def cosine(a, b) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def qdq_scales(path: Path) -> dict[str, np.ndarray]:
    """Activation tensor name -> scale of the QuantizeLinear that quantizes it."""
    m = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: inits[n.input[1]] for n in m.graph.node if n.op_type == "QuantizeLinear"}


def weight_scales(path: Path) -> list[np.ndarray]:
    """Scales of the DequantizeLinear nodes reading 4-D int8 weight initializers (convs)."""
    m = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    return [inits[n.input[1]] for n in m.graph.node if n.op_type == "DequantizeLinear"
            and n.input[0] in inits and inits[n.input[0]].ndim == 4]


# -- library ------------------------------------------------------------------------------
def test_fp32_equals_pytorch(built, tiny, eval_x):
    m = built["fp32"]
    assert m["target"] == {"name": "onnx-cpu", "runtime": "onnx", "format": "onnx",
                           "delegate": "cpu"}
    assert set(m["tool_versions"]) >= {"onnx", "onnxruntime", "onnxscript", "torch"}
    path = artifact(built, "fp32")
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == tiny.input_names
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    assert [p.name for p in path.parent.iterdir() if p.suffix not in (".onnx", ".ort", ".json")] \
        == []  # one self-contained file: no external-data file beside it
    with torch.no_grad():
        ref = tiny.module(torch.from_numpy(eval_x)).numpy()
    np.testing.assert_allclose(run_all(path, eval_x), ref, atol=1e-4, rtol=0)


def test_int8_close_to_fp32(built, eval_x):
    ref = run_all(artifact(built, "fp32"), eval_x)
    for key in ("int8", "minmax", "entropy", "percentile", "pertensor", "nnapi", "xnnpack"):
        out = run_all(artifact(built, key), eval_x)
        assert cosine(out, ref) > 0.99, key
        assert not np.allclose(out, ref, atol=1e-5), key  # it really is quantized
    m = built["int8"]
    assert m["recipe"]["activation_observer"] == "histogram"
    q = m["delegation"]["quantization"]
    assert q["format"] == "QDQ" and q["activation_dtype"] == "uint8"  # cpu: cpu_int8
    assert "HistogramObserver" in q["observer"] and m["calibration"]["samples"] == 64
    assert m["artifact"]["size_bytes"] < built["fp32"]["artifact"]["size_bytes"]


def test_histogram_is_torchaos_observer(built, work):
    """The input's scale is exactly what torchao's HistogramObserver picks on the same
    samples in the same chunks."""
    from torchao.quantization.pt2e import HistogramObserver

    from edgeq.runtimes.onnx.quantize import CALIB_CHUNK

    x = np.load(work / "calib.npz")["x"]
    obs = HistogramObserver(bins=2048, dtype=torch.int8, qscheme=torch.per_tensor_affine)
    for s in range(0, len(x), CALIB_CHUNK):
        obs(torch.from_numpy(x[s:s + CALIB_CHUNK].reshape(-1)))
    scale, _ = obs.calculate_qparams()
    got = qdq_scales(artifact(built, "int8"))["x"]
    assert float(got) == pytest.approx(float(scale), rel=1e-5)
    minmax = qdq_scales(artifact(built, "minmax"))["x"]
    assert float(minmax) == pytest.approx((x.max() - min(x.min(), 0)) / 255, rel=1e-5)


def test_ort_file_written_and_loadable(built, eval_x):
    for key in ("fp32", "int8", "nnapi"):
        path = artifact(built, key)
        ort_path = path.with_suffix(".ort")
        also = built[key]["also"]
        assert [a["path"] for a in also] == [ort_path.name]
        assert also[0]["size_bytes"] == ort_path.stat().st_size
        assert ort_path.is_file() and ort_path.read_bytes() != path.read_bytes()
        a, b = run_all(path, eval_x[:16]), run_all(ort_path, eval_x[:16])
        if key == "fp32":
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
        else:
            assert cosine(a, b) > 0.999


def test_per_channel_and_per_tensor_differ(built, eval_x):
    per_channel = weight_scales(artifact(built, "minmax"))
    per_tensor = weight_scales(artifact(built, "pertensor"))
    assert [s.shape for s in per_channel] == [(4,), (8,)]  # one scale per output channel
    assert [s.size for s in per_tensor] == [1, 1]
    assert not np.allclose(run_all(artifact(built, "minmax"), eval_x),
                           run_all(artifact(built, "pertensor"), eval_x))


def test_entropy_and_minmax_scales_differ(built):
    """Entropy with 512 bins clips the activations MinMax keeps whole: the bins reached the
    calibrator (ORT's quantize_static would have used 128, where Entropy == MinMax)."""
    ent, mm = qdq_scales(artifact(built, "entropy")), qdq_scales(artifact(built, "minmax"))
    common = sorted(set(ent) & set(mm) - {"x"})
    assert common
    assert any(float(ent[t]) < 0.95 * float(mm[t]) for t in common), (ent, mm)
    assert "512 bins" in built["entropy"]["delegation"]["quantization"]["observer"]


def test_percentile_clips_within_minmax(built):
    pct, mm = qdq_scales(artifact(built, "percentile")), qdq_scales(artifact(built, "minmax"))
    common = sorted(set(pct) & set(mm))
    assert all(float(pct[t]) <= float(mm[t]) * 1.001 for t in common), (pct, mm)
    assert any(float(pct[t]) < 0.95 * float(mm[t]) for t in common), (pct, mm)
    assert "99.0 two-sided" in built["percentile"]["delegation"]["quantization"]["observer"]


def test_ort_histogram_calibrator_clears_between_chunks(built, work):
    """edgeq bounds calibration memory by calling collect_data chunk by chunk; that only
    works while ORT's HistogramCalibrater drops each chunk's activations once histogrammed."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    from edgeq.runtimes.onnx.quantize import preprocess

    x = np.load(work / "calib.npz")["x"]
    pre = work / "pre.onnx"
    preprocess(artifact(built, "fp32"), pre)
    cal = create_calibrator(pre, None, augmented_model_path=str(work / "aug.onnx"),
                            calibrate_method=CalibrationMethod.Entropy,
                            extra_options={"num_bins": 256})
    class Reader:
        def __init__(self, start):
            self.feeds = iter([{"x": x[i:i + 1]} for i in range(start, start + 4)])

        def get_next(self):
            return next(self.feeds, None)

    for start in (0, 4):
        cal.collect_data(Reader(start))
        assert cal.intermediate_outputs == []
    assert cal.collector.histogram_dict


def test_uint8_activations_for_nnapi(built):
    def zero_point_types(path):
        m = onnx.load(str(path))
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
        acts = {inits[n.input[2]].dtype for n in m.graph.node if n.op_type == "QuantizeLinear"}
        weights = {inits[n.input[0]].dtype for n in m.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in inits
                   and inits[n.input[0]].ndim == 4}
        return acts, weights

    assert zero_point_types(artifact(built, "nnapi")) == ({np.dtype("uint8")}, {np.dtype("int8")})
    assert zero_point_types(artifact(built, "xnnpack")) == ({np.dtype("int8")}, {np.dtype("int8")})
    assert built["nnapi"]["delegation"]["quantization"]["activation_dtype"] == "uint8"


def test_coverage(built):
    cpu = built["int8"]["delegation"]
    assert cpu["delegated_nodes"] == cpu["total_nodes"] > 0 and cpu["fallback_ops"] == []
    assert cpu["provider"] == "CPUExecutionProvider"
    nnapi = built["nnapi"]["delegation"]
    assert nnapi["provider"] == "NnapiExecutionProvider" and nnapi["coverage"] == "predicted"
    assert 0 < nnapi["delegated_nodes"] <= nnapi["total_nodes"] and nnapi["partitions"] >= 1
    assert "usability_checker" in nnapi["predicted_by"]
    assert any("CPU" in n for n in nnapi["notes"])  # no NNAPI provider on this host
    xnn = built["xnnpack"]["delegation"]
    assert xnn["provider"] == "XnnpackExecutionProvider"
    assert 0 < xnn["delegated_nodes"] < xnn["total_nodes"]
    # ORT's XNNPACK provider has no quantized Gemm: the Linear stays on the CPU provider.
    assert {"op": "Gemm", "count": 1} in xnn["fallback_ops"]
    xnn32 = built["xnnpack-fp32"]["delegation"]  # Conv, MaxPool, Gemm + the fused Relus
    assert xnn32["fallback_ops"] == [{"op": "Reshape", "count": 1}]


def test_session_rejects_bad_inputs(built):
    from edgeq.errors import BadInput
    from edgeq.runtimes import get_runtime

    session = get_runtime("onnx").open(artifact(built, "fp32"), threads=1)
    assert session.input_shapes == [(1, 1, 8, 8)] and session.input_dtypes == ["float32"]
    assert session.input_names == ["x"]
    with pytest.raises(BadInput, match="input 'x' has shape"):
        session.run([np.zeros((1, 1, 9, 9), np.float32)])
    with pytest.raises(BadInput, match="takes 1 input"):
        session.run([np.zeros((1, 1, 8, 8), np.float32)] * 2)
    with pytest.raises(BadInput, match="is complex"):
        session.run([np.zeros((1, 1, 8, 8), np.complex64)])


def test_keep_float_library(work, tiny, tmp_path):
    from edgeq.data import load_dataset
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export
    from edgeq.targets import get_target

    calib = load_dataset(str(work / "calib.npz"), tiny.input_names)
    recipe = load_recipe(str(work / "minmax.yaml")).with_(keep_float=("conv1",))
    m = export(tiny, get_target("onnx-cpu"), recipe, calib, None, ExportOptions(tmp_path))
    kept = m["delegation"]["quantization"]["nodes_kept_float"]
    assert len(kept) == 1
    assert len(weight_scales(Path(m["artifact"]["path"]))) == 1  # conv2 only


# -- CLI ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_int8(work, tmp_path_factory):
    """(out dir, CliResult) of `edgeq export model.py:build -t onnx-cpu --recipe int8`."""
    out = tmp_path_factory.mktemp("onnx-cli")
    r = invoke(["export", f"{work / 'model.py'}:build", "-t", "onnx-cpu", "--recipe", "int8",
                "--calib", work / "calib.npz", "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    return out, r


def test_cli_export_eval_profile(cli_int8, work):
    out, r = cli_int8
    onnx_path = out / "build.int8.onnx-cpu.onnx"
    assert onnx_path.is_file() and (out / "build.int8.onnx-cpu.ort").is_file()
    cell = r.json()["results"][0]
    assert cell["target"] == "onnx-cpu" and cell["delegation"]["total_nodes"] > 0
    assert r.stdout.lstrip().startswith("{")  # the ONNX tools' chatter stays off stdout
    e = invoke(["eval", onnx_path, "--data", work / "eval.npz", "--reference",
                f"{work / 'model.py'}:build", "--json"])
    assert e.exit_code == 0, e.output
    assert e.json()["samples"] == 64 and e.json()["fidelity"]["cosine"] > 0.99
    p = invoke(["profile", onnx_path, "--runs", "5", "--warmup", "1", "--threads", "1",
                "--json"])
    assert p.exit_code == 0, p.output
    block = p.json()
    assert block["latency_ms"]["runs"] == 5 and block["threads_applied"] is True
    assert block["peak_memory_bytes"] > 0
    report = json.loads((out / "report.json").read_text())
    assert report["results"][0]["accuracy"] and report["results"][0]["profile"]


def test_cli_profile_nnapi_says_cpu(built, tmp_path):
    src = artifact(built, "nnapi")
    for p in src.parent.glob(src.name + "*"):
        shutil.copy(p, tmp_path / p.name)
    r = invoke(["profile", tmp_path / src.name, "--runs", "3", "--warmup", "0", "--json"])
    assert r.exit_code == 0, r.output
    assert any("no NnapiExecutionProvider" in n for n in r.json()["notes"])


def test_cli_corrupt_onnx(tmp_path, built):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(artifact(built, "fp32").read_bytes()[:5000])  # truncated
    r = invoke(["profile", bad, "--runs", "2"])
    assert_bad_input(r, "broken.onnx", "corrupt or truncated")
    r = invoke(["export", bad, "-t", "onnx-cpu", "-r", "fp32", "-o", tmp_path / "o"])
    assert_bad_input(r, "broken.onnx")


def test_cli_existing_onnx_as_model(built, work, tmp_path, eval_x):
    model = tmp_path / "tiny.onnx"
    shutil.copy(artifact(built, "fp32"), model)
    out = tmp_path / "o"
    r = invoke(["export", model, "-t", "onnx-cpu", "--recipe", "int8", "--calib",
                work / "calib.npz", "-o", out])
    assert r.exit_code == 0, r.output
    q = out / "tiny.int8.onnx-cpu.onnx"
    assert cosine(run_all(q, eval_x), run_all(model, eval_x)) > 0.99
    assert (out / "tiny.int8.onnx-cpu.ort").is_file()


def test_cli_keep_float_matching_nothing(work, tmp_path):
    out = tmp_path / "o"
    r = invoke(["export", f"{work / 'model.py'}:build", "-t", "onnx-cpu", "--calib",
                work / "calib.npz", "--keep-float", "conv9", "-o", out])
    assert_bad_input(r, "--keep-float 'conv9' matches no node", "conv1", out_dir=out)


def test_cli_qat_refused(work, tmp_path):
    out = tmp_path / "o"
    r = invoke(["export", f"{work / 'model.py'}:build", "-t", "onnx-cpu", "--qat-data",
                work / "calib.npz", "-o", out])
    assert_bad_input(r, "QAT is not available for ONNX targets", "--calib", out_dir=out)


def test_cli_two_runtimes_one_report(work, tmp_path):
    out = tmp_path / "o"
    r = invoke(["export", f"{work / 'model.py'}:build", "-t", "executorch-xnnpack", "-t",
                "onnx-cpu", "--recipe", "int8", "--calib", work / "calib.npz", "-o", out])
    assert r.exit_code == 0, r.output
    results = json.loads((out / "report.json").read_text())["results"]
    assert sorted(c["target"] for c in results) == ["executorch-xnnpack", "onnx-cpu"]
    assert all(c["artifact"] and not c.get("error") for c in results)


def test_cli_unsupported_op_names_op_and_line(tmp_path):
    (tmp_path / "eigh.py").write_text(
        "import torch\n\n\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
        "        return torch.linalg.eigh(x @ x.transpose(-1, -2))[0]\n\n\n"
        "def build():\n    return M(), (torch.randn(1, 4, 4),)\n")
    out = tmp_path / "o"
    r = invoke(["export", f"{tmp_path / 'eigh.py'}:build", "-t", "onnx-cpu", "-r", "fp32",
                "-o", out])
    assert_bad_input(r, "ONNX export failed", "aten._linalg_eigh", "eigh.py:6", out_dir=out)
