"""`edgeq run` with a `search:` key: the accuracy-budget search of `export
--max-accuracy-drop` on every quantized cell over its budget, after the evaluations and
before the profiles (which profile the chosen artifact), cached across re-runs; exit 1 with
the best found when no configuration meets the budget; bad `search:` keys are exit 2 with
file:line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from helpers import assert_bad_input, invoke

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quantize"))
from test_sensitivity import OUTLIER_MODEL, outlier_data  # noqa: E402 -- the search's models

PIPELINE = """\
model: o.py:{factory}
calib: calib.npz
data: eval.npz
recipes: [fp32, int8]
targets: [onnx-cpu]
devices:
  - {{profile: pixel-8}}
search: {{max_accuracy_drop: 2, max_trials: {trials}, int16: {int16}}}
"""


@pytest.fixture
def outlier(tmp_path):
    import numpy as np

    (tmp_path / "o.py").write_text(OUTLIER_MODEL)
    np.savez(tmp_path / "calib.npz", **outlier_data(0))
    np.savez(tmp_path / "eval.npz", **outlier_data(1))
    return tmp_path


def run(root: Path, factory="build", trials=8, text=None, int16="false") -> tuple:
    p = root / "edgeq.yaml"  # int16 false: the float search (16-bit: test_search_int16.py)
    p.write_text(text or PIPELINE.format(factory=factory, trials=trials, int16=int16))
    out = root / "out"
    r = invoke(["run", p, "-o", out, "--json"])
    report = json.loads((out / "report.json").read_text())
    return r, out, {c["recipe"]: c for c in report["results"]}


def test_search_keeps_the_outlier_edge_float_and_profiles_the_choice(outlier):
    r, out, cells = run(outlier)
    assert r.exit_code == 0, r.output
    assert set(cells) == {"fp32", "int8"}
    assert "search" not in cells["fp32"]  # fp32 has nothing to search
    c = cells["int8"]
    s = c["search"]
    assert s["met"] is True and s["budget"] == 2.0 and s["metric"] == "agreement"
    assert [t["float_layers"] for t in s["trials"]] == [0, 1, 2]
    assert s["trials"][0]["drop"] > 50  # plain int8 really is broken
    assert s["chosen_recipe"] == "int8-float2"
    assert sorted(s["chosen_keep_float"]) == ["fc1", "fc2"]
    assert c["accuracy"]["drop"] == s["chosen_drop"] <= 2.0
    assert c["cache"]["search"] == "miss"
    assert r.json()["searched"] == 1
    # The cell is the chosen artifact, kept under out/search/, recipe YAML beside it.
    art = Path(c["artifact"]["path"])
    assert art.is_file() and art.parent.parent == (out / "search").resolve()
    manifest = json.loads(Path(str(art) + ".manifest.json").read_text())
    assert manifest["recipe"]["name"] == "int8-float2"
    assert c["artifact"]["sha256"] == manifest["artifact"]["sha256"]
    rf = Path(s["recipe_file"])
    assert rf.parent == art.parent and rf.name.endswith(".recipe.yaml")
    from edgeq.recipes import load_recipe

    assert sorted(load_recipe(str(rf)).keep_float) == ["fc1", "fc2"]
    # The profile stage profiled the chosen artifact (estimated size = its size).
    assert c["profile"] is not None and c["device"] == "pixel-8"
    assert c["artifact"]["size_bytes"] == s["trials"][2]["size_bytes"]
    assert not [p for p in art.parent.iterdir() if p.name.startswith(".search")]

    # A re-run redoes no search (nor anything else) and reports the same cell.
    r2, _, cells2 = run(outlier)
    assert r2.exit_code == 0, r2.output
    assert "trial" not in r2.stderr and "search/int8/onnx-cpu: cached" in r2.stderr
    c2 = cells2["int8"]
    assert c2["cache"]["search"] == "hit" and c2["cache"]["build"] == "hit"
    assert r2.json()["searched"] == 0
    assert c2["search"] == s and c2["artifact"] == c["artifact"]
    assert c2["accuracy"] == c["accuracy"]


def test_budget_out_of_reach_is_exit_1_with_best_found(outlier):
    # The add between fc1 and fc2 belongs to no layer: its int8 output stays whatever
    # is kept in float.
    r, out, cells = run(outlier, "build_add")
    assert r.exit_code == 1, r.output
    s = cells["int8"]["search"]
    assert s["met"] is False and "even with all 3 quantizable layers in float" in s["reason"]
    assert [t["float_layers"] for t in s["trials"]] == [0, 1, 2, 3]
    assert s["chosen_drop"] == min(t["drop"] for t in s["trials"]) > 2
    assert cells["int8"]["accuracy"]["drop"] == s["chosen_drop"]
    assert Path(s["recipe_file"]).is_file()
    assert r.json()["exit_code"] == 1


def test_out_of_trials_then_more_trials_searches_again(outlier):
    r, _, cells = run(outlier, trials=2)
    assert r.exit_code == 1, r.output
    s = cells["int8"]["search"]
    assert s["met"] is False and len(s["trials"]) == 2 and "max-trials 2" in s["reason"]
    r, _, cells = run(outlier, trials=3)  # another budget key: searched again, now met
    assert r.exit_code == 0, r.output
    assert cells["int8"]["cache"]["search"] == "miss"
    assert cells["int8"]["search"]["met"] is True


def test_within_budget_is_not_searched(tmp_path):
    from helpers import write_work

    write_work(tmp_path)
    text = ("model: model.py:build\ncalib: calib.npz\ndata: eval.npz\ncalib_samples: 32\n"
            "recipes: [int8]\ntargets: [onnx-cpu]\nsearch: {max_accuracy_drop: 100}\n")
    r, _, cells = run(tmp_path, text=text)
    assert r.exit_code == 0, r.output
    assert "search" not in cells["int8"] and "search" not in cells["int8"]["cache"]
    assert not (tmp_path / "out" / "search").exists()


GOOD = "model: m.py:build\ncalib: c.npz\ndata: e.npz\nrecipes: [fp32, int8]\n" \
       "targets: [onnx-cpu]\n"


@pytest.mark.parametrize("text,needles", [
    (GOOD + "search: {max_accuracy_drop: -1}\n", ("edgeq.yaml:6:", "number >= 0", "'-1'")),
    (GOOD + "search: {max_accuracy_drop: lots}\n", ("edgeq.yaml:6:", "number >= 0")),
    (GOOD + "search:\n  max_accuracy_drop: 1\n  max_trials: 0\n",
     ("edgeq.yaml:8:", "'max_trials' must be an integer >= 1")),
    (GOOD + "search: {max_trials: 4}\n", ("edgeq.yaml:6:", "needs 'max_accuracy_drop")),
    (GOOD + "search: {max_acuracy_drop: 1}\n", ("edgeq.yaml:6:", "did you mean "
                                                 "'max_accuracy_drop'")),
    (GOOD + "search: 1.0\n", ("edgeq.yaml:6:", "'search' must be a mapping")),
    (GOOD.replace("data: e.npz\n", "") + "search: {max_accuracy_drop: 1}\n",
     ("edgeq.yaml:5:", "add 'data: EVAL'")),
    (GOOD.replace("fp32, int8", "fp32") + "search: {max_accuracy_drop: 1}\n",
     ("edgeq.yaml:6:", "needs a quantized recipe", "fp32 quantize nothing")),
])
def test_bad_search_key(tmp_path, text, needles):
    p = tmp_path / "edgeq.yaml"
    p.write_text(text)
    out = tmp_path / "out"
    line = assert_bad_input(invoke(["run", p, "-o", out]), *needles, out_dir=out)
    assert line.count("\n") == 0
