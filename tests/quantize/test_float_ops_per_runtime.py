"""Recipe ``float_ops: auto`` per runtime: each runtime declares the op kinds it keeps float
(``float_ops_auto``, chosen by benchmarks/bench_float_ops.py), ``resolve`` reads it through
the runtime, an explicit list overrides it, the manifest records what was kept and where it
came from, and a tiny attention model built on each runtime runs exactly those kinds in
float (read from the artifact as the runtime executes it: each runtime's ``op_kinds``), and
the kept-float kinds a runtime runs as dynamic int8 (``dynamic_ops``) run that way."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from helpers import tiny_tokens  # noqa: E402
from edgeq.data import Dataset  # noqa: E402
from edgeq.models import LoadedModel  # noqa: E402
from edgeq.quantize import float_ops  # noqa: E402
from edgeq.recipes import from_dict  # noqa: E402
from edgeq.runtimes import get_runtime  # noqa: E402
from edgeq.stages import ExportOptions, export  # noqa: E402
from edgeq.targets import get_target  # noqa: E402
from edgeq.zoo import minilm  # noqa: E402

SEQ = 16
TARGETS = {"executorch": "executorch-xnnpack", "onnx": "onnx-cpu", "tflite": "tflite-xnnpack"}


class Table:
    """A runtime stand-in with its own ``auto`` table."""

    name = "fake"

    def __init__(self, *kinds):
        self.float_ops_auto = kinds


def tiny():
    torch.manual_seed(0)
    m = minilm.build(vocab=100, hidden=32, layers=2, heads=4, inner=64, positions=SEQ).eval()
    with torch.no_grad():  # peaked attention, as a trained model's
        for layer in m.encoder.layer:
            layer.attention.self.query.weight.mul_(6.0)
    return m


def tokens(n: int = 64, seed: int = 0):
    return tiny_tokens(n, seed, SEQ)


def test_auto_resolves_through_the_runtime_table():
    for name in TARGETS:
        rt = get_runtime(name)
        table = tuple(rt.float_ops_auto)
        assert set(table) <= set(float_ops.FLOAT_OPS)
        assert float_ops.resolve("auto", True, rt) == table
        assert float_ops.resolve("auto", False, rt) == ()  # no attention: nothing float
    assert float_ops.resolve("auto", True, Table("mask_add", "softmax")) == \
        ("softmax", "mask_add")  # in FLOAT_OPS order
    assert float_ops.resolve("auto", True, Table()) == ()
    assert float_ops.resolve("auto", True, object()) == float_ops.FLOAT_OPS  # no table
    assert float_ops.resolve(None, True) == float_ops.FLOAT_OPS


def test_explicit_list_overrides_the_table():
    rt = Table("softmax", "layer_norm", "mask_add", "ffn_down")
    assert float_ops.resolve(("ffn_down",), True, rt) == ("ffn_down",)
    assert float_ops.resolve((), True, rt) == ()
    assert float_ops.resolve(("mask_add",), False, rt) == ("mask_add",)


def test_pt2e_filter_uses_the_runtime_table():
    ids, mask = tokens(2, 0)
    graph = torch.export.export(tiny(), (ids, mask)).module().graph
    kinds = float_ops._targets()

    def kept(value, runtime):
        keep = float_ops.pt2e_filter(value, runtime)
        assert keep.resolved is None
        nodes = [n for n in graph.nodes if keep(n)]
        return keep.resolved, (sum(n.target in kinds["softmax"] for n in nodes),
                               sum(n.target in kinds["layer_norm"] for n in nodes),
                               sum(n.target in kinds["linear"] for n in nodes))

    assert kept("auto", Table("softmax")) == (("softmax",), (2, 0, 0))
    assert kept("auto", Table("layer_norm", "ffn_down")) == (("layer_norm", "ffn_down"),
                                                             (0, 5, 2))
    assert kept(("softmax",), Table("ffn_down")) == (("softmax",), (2, 0, 0))
    keep = float_ops.pt2e_filter(("qk_matmul",), None)
    nodes = [n for n in graph.nodes if keep(n)]
    assert sum(n.target in kinds["matmul"] for n in nodes) == 2  # Q.K^T, not probs.V
    assert sum(n.target in kinds["scale"] for n in nodes) == 2  # and its scale
    keep = float_ops.pt2e_filter(("ffn_down",), None)
    assert sum(keep(n) for n in graph.nodes) == 2
    assert float_ops.ffn_down_modules(keep) == ["encoder.layer.0.output.dense",
                                                "encoder.layer.1.output.dense"]


def test_record():
    rt = Table("mask_add")
    assert float_ops.record("auto", ("mask_add",), rt) == {
        "requested": "auto", "resolved": ["mask_add"], "from": "auto (fake table)",
        "auto_set": ["mask_add"]}
    assert float_ops.record(("softmax",), ("softmax",), rt) == {
        "requested": ["softmax"], "resolved": ["softmax"], "from": "recipe"}
    assert float_ops.record("auto", None, rt)["resolved_reason"]


def model_and_calib():
    """The tiny encoder as a LoadedModel, and 32 calibration token batches."""
    ids, mask = tokens(1, 0)
    model = LoadedModel("tiny", tiny(), (ids, mask), ["input_ids", "attention_mask"], "0", 1)
    cids, cmask = tokens(32, 1)
    return model, Dataset({"input_ids": cids.numpy(), "attention_mask": cmask.numpy()})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny encoder built on every runtime with ``auto`` and with two explicit lists:
    {(runtime, name): manifest}."""
    model, calib = model_and_calib()
    out = {}
    for rt, target in TARGETS.items():
        for value, name in (("auto", "auto"), (["ffn_down"], "explicit"), ([], "none")):
            recipe = from_dict({"float_ops": value, "name": f"int8-{name}",
                                "activation_observer": "minmax"}, "t")
            out[rt, name] = export(model, get_target(target), recipe, calib, None,
                                   ExportOptions(tmp_path_factory.mktemp(rt), force=True))
    return out


@pytest.mark.parametrize("rt", list(TARGETS))
def test_manifest_records_the_resolved_set(built, rt):
    table = list(get_runtime(rt).float_ops_auto)
    rec = built[rt, "auto"]["delegation"]["float_ops"]
    assert rec == {"requested": "auto", "resolved": table, "from": f"auto ({rt} table)",
                   "auto_set": table}
    assert built[rt, "auto"]["recipe"]["float_ops"] == "auto"
    rec = built[rt, "explicit"]["delegation"]["float_ops"]
    assert rec == {"requested": ["ffn_down"], "resolved": ["ffn_down"], "from": "recipe"}
    assert built[rt, "none"]["delegation"]["float_ops"] == {"requested": [], "resolved": [],
                                                            "from": "recipe"}


# Kinds each runtime runs in int8 once quantized (benchmarks/results/float_ops.json): the
# FFN down projection everywhere; the mask add in XNNPACK (ExecuTorch, LiteRT). Not listed:
# kinds that stay float whatever the recipe says (XNNPACK's softmax is float-only, layer
# norm runs outside it or decomposed), and ONNX Runtime's, whose int8 kernels are changing.
INT8_CAPABLE = {"executorch": {"mask_add", "ffn_down"}, "onnx": {"ffn_down"},
                "tflite": {"mask_add", "ffn_down", "qk_matmul"}}


@pytest.mark.parametrize("rt", list(TARGETS))
@pytest.mark.parametrize("name", ["auto", "explicit", "none"])
def test_artifact_keeps_exactly_the_resolved_ops_float(built, rt, name):
    manifest = built[rt, name]
    resolved = set(manifest["delegation"]["float_ops"]["resolved"])
    dynamic = set((manifest["delegation"].get("dynamic_ops") or {}).get("resolved") or ())
    ran = get_runtime(rt).op_kinds(Path(manifest["artifact"]["path"]))
    assert set(ran) == set(float_ops.FLOAT_OPS)
    for kind in float_ops.FLOAT_OPS:
        assert ran[kind]["int8"] + ran[kind]["float"] + ran[kind].get("dynamic", 0) > 0, \
            (kind, ran)  # found in the graph
        if kind in dynamic:
            assert ran[kind]["runs"] == "dynamic", (rt, name, kind, ran[kind])
        elif kind in resolved:
            assert ran[kind]["runs"] == "float", (rt, name, kind, ran[kind])
        elif kind in INT8_CAPABLE[rt]:
            assert ran[kind]["runs"] == "int8", (rt, name, kind, ran[kind])


# -- dynamic_ops: kept-float FFN down projections as dynamic int8 ----------------------------

def test_resolve_dynamic():
    lite = get_runtime("tflite")
    assert float_ops.resolve_dynamic("auto", ("ffn_down", "softmax"), lite) == ("ffn_down",)
    assert float_ops.resolve_dynamic("auto", ("softmax",), lite) == ()  # ffn_down quantized
    assert float_ops.resolve_dynamic((), ("ffn_down",), lite) == ()
    assert float_ops.resolve_dynamic("auto", ("ffn_down",), get_runtime("onnx")) == ()
    assert float_ops.resolve_dynamic("auto", ("ffn_down",), get_runtime("executorch")) == \
        ("ffn_down",)
    assert float_ops.resolve_dynamic(("ffn_down",), ("ffn_down",), Table()) == ("ffn_down",)
    # a recipe listing its float kinds keeps them float unless it lists dynamic_ops too
    assert float_ops.resolve_dynamic("auto", ("ffn_down",), lite, ("ffn_down",)) == ()
    assert float_ops.resolve_dynamic(("ffn_down",), ("ffn_down",), lite, ("ffn_down",)) == \
        ("ffn_down",)


@pytest.mark.parametrize("value", [True, 3, {"a": 1}])
def test_recipe_dynamic_ops_of_the_wrong_type_is_bad_input(value):
    from edgeq.errors import BadInput

    for field in ("dynamic_ops", "float_ops"):
        with pytest.raises(BadInput, match=field):
            from_dict({"name": "x", field: value}, "t")


def test_ffn_down_found_through_dropout():
    """An eval-mode dropout between the GELU and the Linear (timm's Mlp, T5) is seen
    through."""
    class Mlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8)
            self.act, self.drop = torch.nn.GELU(), torch.nn.Dropout(0.1)

        def forward(self, x):
            return torch.softmax(self.fc2(self.drop(self.act(self.fc1(x)))), -1)

    graph = torch.export.export(Mlp().eval(), (torch.randn(2, 8),)).module().graph
    keep = float_ops.pt2e_filter(("ffn_down",), None)
    assert sum(keep(n) for n in graph.nodes) == 1
    assert float_ops.ffn_down_modules(keep) == ["fc2"]


@pytest.mark.parametrize("rt", ["executorch", "tflite"])
def test_dynamic_ops_manifest(built, rt):
    """ExecuTorch's and LiteRT's auto tables run the float FFN down projections as dynamic
    int8 (read back from the artifact in test_artifact_keeps_exactly_the_resolved_ops_float);
    with ``float_ops: []`` there is none to convert; ONNX Runtime records nothing (it
    quantizes them statically)."""
    rec = built[rt, "auto"]["delegation"]["dynamic_ops"]
    assert rec["resolved"] == ["ffn_down"] and rec["from"] == f"auto ({rt} table)"
    assert rec["layers"] == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    assert "input quantized per inference" in rec["executed"]
    assert built[rt, "none"]["delegation"]["dynamic_ops"]["resolved"] == []
    assert "dynamic_ops" not in built["onnx", "auto"]["delegation"]


@pytest.fixture(scope="module", params=["executorch-xnnpack", "tflite-xnnpack"])
def variants(request, tmp_path_factory):
    """The tiny encoder's int8 with dynamic FFN down projections (auto), with them float
    (``dynamic_ops: []``) and with one under ``keep_float``."""
    target = request.param
    model, calib = model_and_calib()
    out = {}
    for name, extra in (("dyn", {}), ("float", {"dynamic_ops": []}),
                        ("keep", {"keep_float": ["encoder.layer.1.output.*"]})):
        recipe = from_dict({"name": f"int8-{name}", "activation_observer": "minmax", **extra},
                           "t")
        out[name] = export(model, get_target(target), recipe, calib, None,
                           ExportOptions(tmp_path_factory.mktemp(name), force=True))
    ev = Dataset({"input_ids": tokens(16, 2)[0].numpy(), "attention_mask":
                  tokens(16, 2)[1].numpy()})
    return out, model, ev, get_runtime(get_target(target).runtime)


def test_dynamic_ffn_down_is_smaller_and_as_faithful(variants):
    from edgeq.stages import evaluate

    out, model, ev, runtime = variants
    dyn, flt = out["dyn"], out["float"]
    # 2 layers x (32 x 64) fp32 weights -> int8: 12 KiB less (plus scales)
    assert flt["artifact"]["size_bytes"] - dyn["artifact"]["size_bytes"] > 10_000
    ran = runtime.op_kinds(Path(dyn["artifact"]["path"]))["ffn_down"]
    assert (ran["runs"], ran["dynamic"], ran.get("delegated", 2)) == ("dynamic", 2, 2), ran
    ran = runtime.op_kinds(Path(flt["artifact"]["path"]))["ffn_down"]
    assert (ran["runs"], ran["float"]) == ("float", 2), ran
    cos = {k: evaluate(Path(v["artifact"]["path"]), ev, model)["fidelity"]["cosine"]
           for k, v in out.items()}
    assert cos["dyn"] > 0.999 and abs(cos["dyn"] - cos["float"]) < 0.002, cos


def test_keep_float_layer_stays_float(variants):
    out, _, _, runtime = variants
    rec = out["keep"]["delegation"]["dynamic_ops"]
    assert rec["layers"] == ["encoder.layer.0.output.dense"]
    ran = runtime.op_kinds(Path(out["keep"]["artifact"]["path"]))["ffn_down"]
    assert (ran["dynamic"], ran["float"]) == (1, 1)


def test_dynamic_ops_refused_where_the_runtime_cannot(tmp_path):
    from helpers import assert_bad_input, invoke

    recipe = tmp_path / "r.yaml"
    recipe.write_text("base: int8\nname: dyn\ndynamic_ops: [ffn_down]\n")
    for target in ("onnx-cpu",):
        r = invoke(["export", "minilm-l6", "--target", target, "--recipe", str(recipe),
                    "--calib", "sentences:calib", "--out", str(tmp_path / "o")])
        assert_bad_input(r, "dynamic_ops", target)
    recipe.write_text("base: int8\nname: dyn\ndynamic_ops: [softmax]\n")
    r = invoke(["export", "minilm-l6", "--target", "tflite-xnnpack", "--recipe", str(recipe),
                "--calib", "sentences:calib", "--out", str(tmp_path / "o")])
    assert_bad_input(r, "dynamic_ops", "softmax")
