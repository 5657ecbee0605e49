"""16-bit activations per layer (recipe ``int16_layers``, w8a16) and the accuracy-budget
search's 16-bit step: ONNX Runtime builds real int16 QDQ on those layers' edges and runs
it; LiteRT and ExecuTorch refuse it in one line; the search tries 16-bit after float
where the target supports it (ONNX Runtime) and keeps float elsewhere."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_bad_input, invoke
from test_sensitivity import OUTLIER_MODEL, outlier_data

from edgeq.quantize.search import _schedule


@pytest.fixture
def outlier(tmp_path):
    (tmp_path / "o.py").write_text(OUTLIER_MODEL)
    np.savez(tmp_path / "calib.npz", **outlier_data(0))
    np.savez(tmp_path / "eval.npz", **outlier_data(1))
    (tmp_path / "w16.yaml").write_text("base: int8\nname: w16\nint16_layers: [fc1]\n")
    return tmp_path


def export(root: Path, target: str, *extra) -> tuple:
    out = root / "out"
    r = invoke(["export", f"{root / 'o.py'}:build", "-t", target, "--calib",
                root / "calib.npz", "--data", root / "eval.npz", "-o", out, "--json", *extra])
    report = json.loads((out / "report.json").read_text()) if r.exit_code in (0, 1) else None
    return r, out, report


def test_recipe_round_trips_int16_layers(tmp_path):
    from edgeq.errors import BadInput
    from edgeq.recipes import PRESETS, from_dict, load_recipe, save_recipe

    r = PRESETS["int8"].with_(name="mixed", int16_layers=("fc1", "blocks.*"),
                              keep_float=("fc2",))
    save_recipe(r, tmp_path / "mixed.yaml")
    assert "int16_layers:\n- fc1\n- blocks.*\n" in (tmp_path / "mixed.yaml").read_text()
    assert load_recipe(str(tmp_path / "mixed.yaml")) == r
    assert from_dict({"int16_layers": "fc1"}, "x").int16_layers == ("fc1",)
    assert PRESETS["int8"].int16_layers == ()
    with pytest.raises(BadInput, match="int16_layers .* needs method static"):
        from_dict({"base": "int8-dynamic", "int16_layers": ["fc1"]}, "'d.yaml'")


def _qdq_types(path: Path) -> dict:
    """Activation tensor -> the element type of its QuantizeLinear (zero point)."""
    import onnx

    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    return {n.input[0]: onnx.TensorProto.DataType.Name(inits[n.input[2]].data_type)
            for n in m.graph.node if n.op_type == "QuantizeLinear"}


def _sqnr_db(artifact: Path, root: Path) -> float:
    """Output SQNR of the artifact on the eval data against the fp32 PyTorch model."""
    import onnxruntime as ort
    import torch

    from edgeq.models import load_model

    x = np.load(root / "eval.npz")["x"]
    s = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    q = np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
    with torch.no_grad():
        f = load_model(f"{root / 'o.py'}:build", None, False).module(torch.from_numpy(x))
    f = f.numpy()
    return float(10 * np.log10((f ** 2).sum() / ((q - f) ** 2).sum()))


def test_onnx_int16_layer_is_16bit_qdq_and_closer_to_fp32(outlier):
    r, out, report = export(outlier, "onnx-cpu", "-r", "int8", "-r", outlier / "w16.yaml")
    assert r.exit_code == 0, r.output
    cells = {c["recipe"]: c for c in report["results"]}
    plain, w16 = Path(cells["int8"]["artifact"]["path"]), Path(cells["w16"]["artifact"]["path"])
    # fc1's input (after the ReLU) and output edges are int16; the rest stays 8-bit (int8
    # or uint8, as the target's activation_dtype says).
    types = _qdq_types(w16)
    assert {t for t, d in types.items() if d == "INT16"} == {"relu", "linear_1"}
    assert {d for d in types.values() if d != "INT16"} <= {"INT8", "UINT8"} and "x" in types
    assert set(_qdq_types(plain).values()) <= {"INT8", "UINT8"}
    import onnx

    m = onnx.load(str(w16))
    assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {21}
    inits = {i.name: i for i in m.graph.initializer}
    weights = [inits[n.input[0]] for n in m.graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] in inits and n.input[0].startswith("fc1.weight")]
    assert weights and weights[0].data_type == onnx.TensorProto.INT8  # w8a16
    q = json.loads((Path(str(w16) + ".manifest.json")).read_text())
    assert q["recipe"]["int16_layers"] == ["fc1"]
    assert q["delegation"]["quantization"]["int16_tensors"] == ["relu", "linear_1"]
    # It runs, and fc1's crushed output edge at 16 bits brings the output back.
    assert cells["int8"]["accuracy"]["drop"] > 50
    assert cells["w16"]["accuracy"]["drop"] < 15
    s_plain, s_w16 = _sqnr_db(plain, outlier), _sqnr_db(w16, outlier)
    assert s_plain < 3 and s_w16 > 15 and s_w16 > s_plain + 12, (s_plain, s_w16)
    # int8 weights: no bigger than plain int8 (opset 21 also drops node metadata).
    assert w16.stat().st_size <= plain.stat().st_size
    assert Path(str(w16)[:-5] + ".ort").is_file()


@pytest.mark.parametrize("target,why", [
    ("tflite-xnnpack", "litert-torch"), ("executorch-xnnpack", "int8-only")])
def test_unsupported_target_refuses_in_one_line(outlier, target, why):
    out = outlier / "out"
    r = invoke(["export", f"{outlier / 'o.py'}:build", "-t", target, "-r",
                outlier / "w16.yaml", "--calib", outlier / "calib.npz", "-o", out])
    assert_bad_input(r, f"not supported by target '{target}'", why, "keep_float",
                     out_dir=out)


def test_int16_pattern_matching_nothing_is_bad_input(outlier):
    (outlier / "typo.yaml").write_text("base: int8\nint16_layers: [nosuch*]\n")
    out = outlier / "out"
    r = invoke(["export", f"{outlier / 'o.py'}:build", "-t", "onnx-cpu", "-r",
                outlier / "typo.yaml", "--calib", outlier / "calib.npz", "-o", out])
    assert_bad_input(r, "int16_layers 'nosuch*' matches no node", out_dir=out)


def run_schedule(n: int, max_trials: int, passes) -> list[tuple]:
    """(k, mode) pairs tried when a trial passes iff ``passes(k, mode)``; trial 0 failed."""
    from edgeq.quantize.search import _key

    tried = {0: {"passed": False}}
    out = []
    for k, mode in _schedule(n, max_trials, tried, int16=True):
        out.append((k, mode[0]))
        tried[_key(k, mode)] = {"passed": passes(k, mode)}
    return out


def test_schedule_searches_float_then_16bit():
    # float passes at k >= 3: doubling, bisection in float; then 16-bit at k = 3 (passes
    # from 2 up), bisected in (0, 3]: 1 misses, 2 passes
    assert run_schedule(53, 9, lambda k, m: k >= (3 if m == "float" else 2)) == [
        (1, "f"), (2, "f"), (4, "f"), (3, "f"), (3, "i"), (1, "i"), (2, "i")]
    # 16-bit never enough: one 16-bit trial at the float answer, then stop
    assert run_schedule(53, 9, lambda k, m: m == "float" and k >= 2) == [
        (1, "f"), (2, "f"), (2, "i")]
    # no float pass: no 16-bit trial
    assert run_schedule(2, 9, lambda k, m: False) == [(1, "f"), (2, "f")]
    # out of trials inside the float search: 16-bit gets none
    assert run_schedule(53, 4, lambda k, m: k >= 3) == [(1, "f"), (2, "f"), (4, "f")]


def test_schedule_meets_the_budget_float_meets():
    """EfficientNet-Lite0 on onnx-cpu (budget 3.9 points, 6 trials, measured drops): trying
    16-bit first used two of the six trials and missed; float first meets it at k = 6."""
    from edgeq.quantize.search import _key

    drops = {(1, "int16"): 9.38, (1, "float"): 20.31, (2, "int16"): 6.25,
             (2, "float"): 4.69, (4, "float"): 4.69, (8, "float"): 1.56, (6, "float"): 1.56,
             (5, "float"): 3.0, (3, "float"): 4.7, (4, "int16"): 7.81, (6, "int16"): 5.0}
    tried = {0: {"passed": False, "drop": 7.81}}
    out = []
    for k, mode in _schedule(53, 6, tried, int16=True):
        out.append((k, mode[0]))
        d = drops[(k, mode)]
        tried[_key(k, mode)] = {"passed": d <= 3.9, "drop": d}
    assert out == [(1, "f"), (2, "f"), (4, "f"), (8, "f"), (6, "f")]
    assert tried[6]["passed"]


def test_search_takes_a_layer_to_16bit_on_onnx(outlier):
    r, out, report = export(outlier, "onnx-cpu", "--max-accuracy-drop", "15")
    assert r.exit_code == 0, r.output
    cells = {c["recipe"]: c for c in report["results"]}
    assert set(cells) == {"int8", "int8-int16x1"}
    s = cells["int8-int16x1"]["search"]
    assert s["met"] is True and s["int16"] == "tried after float"
    # One layer at 16-bit is enough where float needs two (test_search.py): fc1 or fc2
    # alone widens the crushed edge between them. Float first (1, 2), then 16-bit (2, 1).
    assert [(t["int16_layers"], t["float_layers"]) for t in s["trials"]] == [
        (0, 0), (0, 1), (0, 2), (2, 0), (1, 0)]
    assert s["chosen_int16_layers"] in (["fc1"], ["fc2"]) and s["chosen_keep_float"] == []
    assert s["chosen_recipe"] == "int8-int16x1" and s["chosen_drop"] <= 15
    art = Path(cells["int8-int16x1"]["artifact"]["path"])
    assert art.parent == out.resolve() and "INT16" in _qdq_types(art).values()
    from edgeq.recipes import load_recipe

    rec = load_recipe(s["recipe_file"])
    assert rec.int16_layers == tuple(s["chosen_int16_layers"]) and rec.keep_float == ()
    assert "trial 5/8: 1 layer(s) at 16-bit" in r.stderr


def test_search_keeps_float_where_16bit_is_not_supported(outlier):
    r, out, report = export(outlier, "executorch-xnnpack", "--max-accuracy-drop", "15")
    assert r.exit_code == 0, r.output
    s = next(c["search"] for c in report["results"] if c.get("search"))
    assert s["int16"].startswith("not supported by executorch-xnnpack")
    assert s["met"] is True and s["chosen_int16_layers"] == []
    assert sorted(s["chosen_keep_float"]) == ["fc1", "fc2"]
    assert all(t["int16_layers"] == 0 for t in s["trials"])
    assert [t["float_layers"] for t in s["trials"]] == [0, 1, 2]
