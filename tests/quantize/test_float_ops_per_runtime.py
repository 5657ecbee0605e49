"""Recipe ``float_ops: auto`` per runtime: each runtime declares the op kinds it keeps float
(``float_ops_auto``, chosen by benchmarks/bench_float_ops.py), ``resolve`` reads it through
the runtime, an explicit list overrides it, the manifest records what was kept and where it
came from, and a tiny attention model built on each runtime runs exactly those kinds in
float (read from the artifact as the runtime executes it: benchmarks/int8_ops.py)."""
from __future__ import annotations

import sys
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import int8_ops  # noqa: E402

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


def test_record():
    rt = Table("mask_add")
    assert float_ops.record("auto", ("mask_add",), rt) == {
        "requested": "auto", "resolved": ["mask_add"], "from": "auto (fake table)",
        "auto_set": ["mask_add"]}
    assert float_ops.record(("softmax",), ("softmax",), rt) == {
        "requested": ["softmax"], "resolved": ["softmax"], "from": "recipe"}
    assert float_ops.record("auto", None, rt)["resolved_reason"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny encoder built on every runtime with ``auto`` and with two explicit lists:
    {(runtime, name): manifest}."""
    m = tiny()
    ids, mask = tokens(1, 0)
    model = LoadedModel("tiny", m, (ids, mask), ["input_ids", "attention_mask"], "0", 1)
    cids, cmask = tokens(32, 1)
    calib = Dataset({"input_ids": cids.numpy(), "attention_mask": cmask.numpy()})
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
                "tflite": {"mask_add", "ffn_down"}}


@pytest.mark.parametrize("rt", list(TARGETS))
@pytest.mark.parametrize("name", ["auto", "explicit", "none"])
def test_artifact_keeps_exactly_the_resolved_ops_float(built, rt, name):
    manifest = built[rt, name]
    resolved = set(manifest["delegation"]["float_ops"]["resolved"])
    ran = int8_ops.inspect(TARGETS[rt], Path(manifest["artifact"]["path"]))
    for kind in float_ops.FLOAT_OPS:
        assert ran[kind]["int8"] + ran[kind]["float"] > 0, (kind, ran)  # found in the graph
        if kind in resolved:
            assert ran[kind]["runs"] == "float", (rt, name, kind, ran[kind])
        elif kind in INT8_CAPABLE[rt]:
            assert ran[kind]["runs"] == "int8", (rt, name, kind, ran[kind])
