"""The QDQ layout edgeq gives ONNX Runtime's CPU provider (``edgeq.runtimes.onnx.cpu_int8``),
checked on tiny models through ``stages.export`` and the real onnxruntime: uint8
activations, the integer kernels ORT fuses, float attention in transformers, float outputs
of Linears feeding float ops, the manifest's record, and the other ORT targets untouched.
Structure only: the speed is measured by benchmarks/bench_onnx_int8_speed.py."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import TINY_MODEL

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

ENCODER = textwrap.dedent("""
    import math

    import torch
    from torch import nn


    class Encoder(nn.Module):
        '''One post-LN BERT block: attention (2 heads), residual + LayerNorm, GELU FFN.'''

        def __init__(self, d=32, heads=2, ff=64):
            super().__init__()
            self.heads, self.dh = heads, d // heads
            self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.o, self.ln1 = nn.Linear(d, d), nn.LayerNorm(d)
            self.up, self.down, self.ln2 = nn.Linear(d, ff), nn.Linear(ff, d), nn.LayerNorm(d)

        def split(self, t):
            b, n, _ = t.shape
            return t.view(b, n, self.heads, self.dh).transpose(1, 2)

        def forward(self, x):
            b, n, d = x.shape
            q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh), dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, n, d)
            x = self.ln1(x + self.o(y))
            return self.ln2(x + self.down(torch.nn.functional.gelu(self.up(x))))


    def build():
        torch.manual_seed(0)
        return Encoder().eval(), (torch.randn(1, 8, 32),)
""")
FFN_INT8 = ("softmax", "layer_norm", "mask_add")  # float_ops with the FFN down projection int8
FFN_FLOAT = (*FFN_INT8, "ffn_down")  # ... and with it float


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(tiny CNN, its digits calibration set, tiny encoder, its calibration set)."""
    from edgeq.data import Dataset, load_dataset
    from edgeq.models import load_model

    root = tmp_path_factory.mktemp("ort-int8-in")
    (root / "cnn.py").write_text(TINY_MODEL)
    (root / "encoder.py").write_text(ENCODER)
    cnn = load_model(f"{root / 'cnn.py'}:build")
    enc = load_model(f"{root / 'encoder.py'}:build")
    digits = load_dataset("digits:train")
    cnn_calib = Dataset({cnn.input_names[0]: digits.inputs["x"][:32]}, None, "digits")
    x = np.random.default_rng(0).standard_normal((32, 8, 32)).astype(np.float32)
    enc_calib = Dataset({enc.input_names[0]: x}, None, "random normal")
    return cnn, cnn_calib, enc, enc_calib


def export(model, calib, target: str, out: Path, options=None, **recipe_changes) -> dict:
    from edgeq.recipes import load_recipe
    from edgeq.stages import ExportOptions, export as edgeq_export
    from edgeq.targets import get_target

    t = get_target(target)
    if options:
        t = dataclasses.replace(t, options={**t.options, **options})
    recipe = load_recipe("int8").with_(calib_samples=32, **recipe_changes)
    return edgeq_export(model, t, recipe, calib, None, ExportOptions(out))


@pytest.fixture(scope="module")
def built(models, tmp_path_factory) -> dict[str, dict]:
    cnn, cnn_calib, enc, enc_calib = models
    out = tmp_path_factory.mktemp("ort-int8-out")
    return {
        "cnn": export(cnn, cnn_calib, "onnx-cpu", out / "cnn"),
        "cnn-int8": export(cnn, cnn_calib, "onnx-cpu", out / "cnn-int8",
                           {"activation_dtype": "int8"}),
        "cnn-nnapi": export(cnn, cnn_calib, "onnx-nnapi", out / "cnn-nnapi"),
        "cnn-xnnpack": export(cnn, cnn_calib, "onnx-xnnpack", out / "cnn-xnnpack"),
        "enc": export(enc, enc_calib, "onnx-cpu", out / "enc", float_ops=FFN_FLOAT),
        "enc-ffn": export(enc, enc_calib, "onnx-cpu", out / "enc-ffn", float_ops=FFN_INT8),
        "enc-default": export(enc, enc_calib, "onnx-cpu", out / "enc-default",
                              {"qdq_layout": "default"}, float_ops=FFN_INT8),
    }


def layout(m: dict) -> dict:
    return m["delegation"]["quantization"]["ort_layout"]


def graph(m: dict):
    return onnx.load(m["artifact"]["path"])


def act_zero_point_types(g) -> set:
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.graph.initializer}
    return {inits[n.input[2]].dtype.name for n in g.graph.node if n.op_type == "QuantizeLinear"}


def wiring(g):
    producer = {o: n for n in g.graph.node for o in n.output}
    users: dict = {}
    for n in g.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    return producer, users


def run(m: dict, x: np.ndarray) -> np.ndarray:
    from edgeq.runtimes import get_runtime

    s = get_runtime("onnx").open(Path(m["artifact"]["path"]))
    return np.concatenate([s.run([x[i:i + 1]])[0] for i in range(len(x))])


def reference(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.module(torch.from_numpy(x)).numpy()


def cosine(a, b) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) *
                                          np.linalg.norm(b, axis=1))))


# -- CNN ------------------------------------------------------------------------------------
def test_cpu_target_uses_uint8_and_fuses_every_conv(built):
    m = built["cnn"]
    q, lay = m["delegation"]["quantization"], layout(m)
    assert q["activation_dtype"] == "uint8" == lay["activation_dtype"]
    assert "QDQIsInt8Allowed" in lay["activation_dtype_reason"]
    assert lay["qdq_layout"] == "cpu" and lay["reduce_range"] is False
    assert lay["host_cpu"]["arch"] and "attention" not in lay  # a CNN: all ops quantized
    assert act_zero_point_types(graph(m)) == {"uint8"}
    kernels = lay["ort_cpu_kernels"]
    assert kernels.get("QLinearConv") == 2 and "Conv" not in kernels  # both convs integer
    assert kernels.get("QGemm") == 1 and "Gemm" not in kernels
    assert lay["runtime_qdq_nodes"] <= 2  # only the model's input Q and output DQ


def test_explicit_int8_is_honoured_and_recorded(built):
    m = built["cnn-int8"]
    assert m["delegation"]["quantization"]["activation_dtype"] == "int8"
    assert layout(m)["activation_dtype_reason"] == "target option activation_dtype"
    assert act_zero_point_types(graph(m)) == {"int8"}


def test_nnapi_and_xnnpack_keep_orts_default_layout(built):
    nn, xn = layout(built["cnn-nnapi"]), layout(built["cnn-xnnpack"])
    assert nn["activation_dtype"] == "uint8" and nn["qdq_layout"] == "default"
    assert xn["activation_dtype"] == "int8" and xn["qdq_layout"] == "default"
    assert act_zero_point_types(graph(built["cnn-xnnpack"])) == {"int8"}
    for key in ("cnn-nnapi", "cnn-xnnpack"):
        assert Path(built[key]["artifact"]["path"]).with_suffix(".ort").is_file()


def test_cnn_fidelity_kept(built, models):
    cnn, calib, _, _ = models
    x = calib.inputs[cnn.input_names[0]][:16]
    ref = reference(cnn, x)
    assert cosine(run(built["cnn"], x), ref) > 0.99
    assert cosine(run(built["cnn"], x), run(built["cnn-int8"], x)) > 0.99


# -- transformer ----------------------------------------------------------------------------
def test_attention_stays_float(built):
    for key in ("enc", "enc-ffn"):
        g = graph(built[key])
        producer, users = wiring(g)
        inits = {i.name for i in g.graph.initializer}
        soft = [n for n in g.graph.node if n.op_type == "Softmax"]
        assert len(soft) == 1
        assert producer[soft[0].input[0]].op_type != "DequantizeLinear"
        assert all(u.op_type != "QuantizeLinear" for u in users[soft[0].output[0]])
        bmm = [n for n in g.graph.node if n.op_type == "MatMul"
               and not any(i in inits for i in n.input)]
        assert len(bmm) == 2  # Q.K^T and probabilities x V
        for n in bmm:
            assert all(producer[i].op_type != "DequantizeLinear" for i in n.input), key
        lay = layout(built[key])
        assert lay["attention"]["activation_matmuls_float"] == 2
        assert lay["attention"]["dedicated_qdq_pairs"] is True
        assert set(lay["attention"]["quantized_op_types"]) <= {"Gemm", "MatMul", "Gather"}


def test_linears_run_as_integer_kernels(built):
    kernels = layout(built["enc-ffn"])["ort_cpu_kernels"]
    integer = sum(kernels.get(k, 0) for k in ("QLinearMatMul", "QGemm",
                                               "MatMulIntegerToFloat"))
    assert integer == 6  # q, k, v, o, up, down
    assert "Gemm" not in kernels  # no Linear left in float
    assert kernels.get("FusedMatMul", 0) + kernels.get("MatMul", 0) == 2  # float attention
    # With the FFN down projection in float_ops: five integer Linears.
    auto = layout(built["enc"])["ort_cpu_kernels"]
    assert sum(auto.get(k, 0) for k in ("QLinearMatMul", "QGemm", "MatMulIntegerToFloat")) \
        == 5


def test_ffn_down_output_stays_float(built):
    """The down projection reads int8 (its input has a Q/DQ) but its output, which only the
    float residual add and LayerNorm read, is not re-quantized; nothing the LayerNorms
    read is dequantized."""
    m = built["enc-ffn"]
    g = graph(m)
    producer, users = wiring(g)
    float_out = [n for n in g.graph.node if n.op_type in ("MatMul", "Gemm")
                 and producer.get(n.input[0]) is not None
                 and producer[n.input[0]].op_type == "DequantizeLinear"
                 and not any(u.op_type == "QuantizeLinear" for u in users[n.output[0]])]
    assert float_out and layout(m)["float_outputs"]["nodes"] >= 1
    for ln in (n for n in g.graph.node if n.op_type == "LayerNormalization"):
        add = producer[ln.input[0]]
        assert add.op_type == "Add"
        assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear"
                   for i in add.input)


def test_default_layout_option_gives_orts_own(built):
    lay = layout(built["enc-default"])
    assert lay["qdq_layout"] == "default" and "attention" not in lay
    g = graph(built["enc-default"])
    producer, _ = wiring(g)
    inits = {i.name for i in g.graph.initializer}
    bmm = [n for n in g.graph.node if n.op_type == "MatMul"
           and not any(i in inits for i in n.input)]
    assert bmm and all(producer[i].op_type == "DequantizeLinear"  # ORT quantizes them
                       for n in bmm for i in n.input)


def test_encoder_fidelity_and_ort_file(built, models):
    _, _, enc, calib = models
    x = calib.inputs[enc.input_names[0]][:16]
    ref = reference(enc, x)
    for key in ("enc", "enc-ffn"):
        out = run(built[key], x)
        assert cosine(out, ref) > 0.99, key
        ort_path = Path(built[key]["artifact"]["path"]).with_suffix(".ort")
        assert cosine(run({"artifact": {"path": str(ort_path)}}, x), out) > 0.999


def test_bad_layout_option_is_bad_input(models, tmp_path):
    from edgeq.errors import BadInput

    cnn, calib, _, _ = models
    with pytest.raises(BadInput, match="qdq_layout 'fast'"):
        export(cnn, calib, "onnx-cpu", tmp_path / "bad", {"qdq_layout": "fast"})


# -- pre-processing keeps the exporter's scopes -----------------------------------------------
def test_preprocess_keeps_node_scopes_so_smoothquant_stays_float(models, tmp_path):
    """quant_pre_process drops node metadata; edgeq restores it, so SmoothQuant's Smooth
    multiplies are found and kept float on ONNX Runtime."""
    _, _, enc, calib = models
    m = export(enc, calib, "onnx-cpu", tmp_path / "sq", smoothquant=0.5)
    g = graph(m)
    kept = set(m["delegation"]["quantization"]["nodes_kept_float"])
    smooth = [n.name for n in g.graph.node if n.op_type == "Mul" and n.name in kept]
    assert len(smooth) >= 6  # one per smoothed Linear
    x = calib.inputs[enc.input_names[0]][:16]
    assert cosine(run(m, x), reference(enc, x)) > 0.99


def test_restore_metadata_unit(tmp_path):
    from onnx import TensorProto, helper

    from edgeq.runtimes.onnx.cpu_int8 import restore_metadata

    def model(with_meta: bool, name: str):
        node = helper.make_node("Relu", ["x"], ["y"], name=name)
        if with_meta:
            node.metadata_props.add(key="pkg.torch.onnx.name_scopes", value="['', 'act']")
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, [1])])
        return helper.make_model(g)

    onnx.save(model(True, "node_relu"), str(tmp_path / "src.onnx"))
    onnx.save(model(False, "node_relu/SomeFusion"), str(tmp_path / "dst.onnx"))
    assert restore_metadata(tmp_path / "src.onnx", tmp_path / "dst.onnx") == 1
    props = onnx.load(str(tmp_path / "dst.onnx")).graph.node[0].metadata_props
    assert [(p.key, p.value) for p in props] == [("pkg.torch.onnx.name_scopes", "['', 'act']")]


RELU_MLP = textwrap.dedent("""
    import torch
    from torch import nn


    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc0, self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 4)

        def forward(self, x):
            return self.fc2(self.fc1(torch.relu(self.fc0(x))))


    def build():
        return Mlp().eval(), (torch.randn(1, 16),)
""")


def test_float_output_keeps_the_relu_the_quantizer_folded(tmp_path):
    """ORT's quantizer deletes a Relu after a quantized Gemm and lets the output Q clamp;
    with fc1 and fc2 kept float, that Q is the Relu and must survive rule 4."""
    from edgeq.data import Dataset
    from edgeq.models import load_model

    (tmp_path / "mlp.py").write_text(RELU_MLP)
    mlp = load_model(f"{tmp_path / 'mlp.py'}:build")
    x = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    calib = Dataset({mlp.input_names[0]: x}, None, "random normal")
    m = export(mlp, calib, "onnx-cpu", tmp_path / "out", keep_float=("fc1", "fc2"))
    g = graph(m)
    assert not any(n.op_type == "Relu" for n in g.graph.node)  # folded into the Q
    producer, users = wiring(g)
    fc0 = [n for n in g.graph.node if n.op_type == "Gemm"][0]
    assert [u.op_type for u in users[fc0.output[0]]] == ["QuantizeLinear"]
    assert cosine(run(m, x), reference(mlp, x)) > 0.999
