"""The accuracy-budget search (`export --max-accuracy-drop`): every trial measured on the
real artifact, the cheapest passing recipe chosen and written as YAML, exit 1 with the
best found when nothing meets the budget, exit 2 on unusable flags."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import assert_bad_input, invoke
from test_sensitivity import OUTLIER_MODEL, outlier_data

from edgeq.quantize.search import _schedule

TARGET = "onnx-cpu"  # the quickest export here; the search knows no runtime by name


def run_schedule(n: int, max_trials: int, passes) -> list[int]:
    """k values the schedule tries when a trial passes iff ``passes(k)``; trial 0 failed."""
    tried = {0: {"passed": False}}
    out = []
    for k, mode in _schedule(n, max_trials, tried):
        assert mode == "float"
        out.append(k)
        tried[k] = {"passed": passes(k)}
    return out


def test_schedule_doubles_then_bisects():
    assert run_schedule(53, 8, lambda k: k >= 5) == [1, 2, 4, 8, 6, 5]
    assert run_schedule(53, 4, lambda k: k >= 5) == [1, 2, 4]  # out of trials
    assert run_schedule(3, 8, lambda k: False) == [1, 2, 3]  # all float fails: stop
    assert run_schedule(3, 8, lambda k: k >= 2) == [1, 2]
    assert run_schedule(0, 8, lambda k: True) == []


@pytest.fixture
def outlier(tmp_path):
    import numpy as np

    (tmp_path / "o.py").write_text(OUTLIER_MODEL)
    np.savez(tmp_path / "calib.npz", **outlier_data(0))
    np.savez(tmp_path / "eval.npz", **outlier_data(1))
    return tmp_path


def search(root: Path, factory: str, *extra) -> tuple:
    out = root / "out"
    r = invoke(["export", f"{root / 'o.py'}:{factory}", "-t", TARGET, "--calib",
                root / "calib.npz", "--data", root / "eval.npz", "-o", out, "--json",
                "--no-try-int16", *extra])  # the float search; 16-bit: test_search_int16.py
    report = json.loads((out / "report.json").read_text())
    return r, out, report


def test_budget_met_by_keeping_the_outlier_edge_float(outlier):
    r, out, report = search(outlier, "build", "--max-accuracy-drop", "2")
    assert r.exit_code == 0, r.output
    assert r.json() == report
    cells = {c["recipe"]: c for c in report["results"]}
    assert set(cells) == {"int8", "int8-float2"}
    assert cells["int8"]["accuracy"]["drop"] > 50  # plain int8 really is broken
    s = cells["int8-float2"]["search"]
    assert "search" not in cells["int8"]
    assert s["met"] is True and s["budget"] == 2.0 and s["metric"] == "agreement"
    # 0 fails, 1 (either edge layer alone) fails, 2 meets: doubling stops there.
    assert [t["float_layers"] for t in s["trials"]] == [0, 1, 2]
    assert [t["passed"] for t in s["trials"]] == [False, False, True]
    assert sorted(s["chosen_keep_float"]) == ["fc1", "fc2"]
    assert s["ranking"]["layers"][2] == "fc0"
    acc = cells["int8-float2"]["accuracy"]
    assert acc["drop"] <= 2.0 and acc["drop"] == s["trials"][2]["drop"]
    # The chosen artifact sits in -o with its manifest; the trial folder is gone.
    art = Path(cells["int8-float2"]["artifact"]["path"])
    assert art.parent == out.resolve() and art.is_file()
    assert Path(str(art) + ".manifest.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".search")]
    # The recipe file is a usable --recipe.
    from edgeq.recipes import load_recipe

    rec = load_recipe(s["recipe_file"])
    assert rec.name == "int8-float2" and sorted(rec.keep_float) == ["fc1", "fc2"]
    assert Path(s["recipe_file"]).name == "build.int8-float2.onnx-cpu.recipe.yaml"
    assert "trial 3/8: 2 layer(s) in float" in r.stderr


def test_out_of_trials_is_exit_1_with_best_found(outlier):
    r, out, report = search(outlier, "build", "--max-accuracy-drop", "2", "--max-trials", "2")
    assert r.exit_code == 1, r.output
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeq: error:")]
    assert len(err) == 1 and "no configuration meets --max-accuracy-drop 2" in err[0]
    assert "within --max-trials 2" in err[0] and "best found" in err[0]
    best = [c for c in report["results"] if c.get("search")]
    assert len(best) == 1 and best[0]["search"]["met"] is False
    assert len(best[0]["search"]["trials"]) == 2
    assert r.json()["results"]  # the machine result is still printed


def test_no_configuration_can(outlier):
    # The add between fc1 and fc2 belongs to no layer: its int8 output stays, whatever
    # is kept in float.
    r, out, report = search(outlier, "build_add", "--max-accuracy-drop", "2")
    assert r.exit_code == 1, r.output
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeq: error:")]
    assert len(err) == 1 and "even with all 3 quantizable layers in float" in err[0], err
    s = next(c["search"] for c in report["results"] if c.get("search"))
    assert [t["float_layers"] for t in s["trials"]] == [0, 1, 2, 3]
    assert not any(t["passed"] for t in s["trials"])
    assert s["chosen_drop"] == min(t["drop"] for t in s["trials"])
    assert Path(s["recipe_file"]).is_file()


def test_budget_int8_already_meets_is_one_trial(tmp_path):
    out = tmp_path / "out"
    r = invoke(["export", "digits-cnn", "-t", TARGET, "--calib", "digits:train",
                "--calib-samples", "64", "--data", "digits:eval", "--max-accuracy-drop", "5",
                "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    (cell,) = r.json()["results"]
    s = cell["search"]
    assert s["met"] is True and len(s["trials"]) == 1 and s["chosen_keep_float"] == []
    assert s["metric"] == "top1" and s["trials"][0]["drop"] == cell["accuracy"]["drop"] <= 5
    assert "ranking" not in s  # no sensitivity run was needed
    assert Path(s["recipe_file"]).name == "digits-cnn.int8.onnx-cpu.recipe.yaml"


@pytest.mark.parametrize("extra,needle", [
    (["--max-accuracy-drop", "-1"], "--max-accuracy-drop -1.0: give a drop of 0 or more"),
    (["--max-accuracy-drop", "1", "--max-trials", "0"], "--max-trials 0"),
    (["--max-accuracy-drop", "1", "-r", "fp32"], "quantizes nothing"),
    (["--max-accuracy-drop", "1", "--keep-float", "nosuch*"], "--keep-float 'nosuch*'"),
])
def test_bad_search_flags(outlier, extra, needle):
    out = outlier / "out"
    r = invoke(["export", f"{outlier / 'o.py'}:build", "-t", TARGET, "--calib",
                outlier / "calib.npz", "--data", outlier / "eval.npz", "-o", out, *extra])
    assert_bad_input(r, needle, out_dir=out)


def test_search_needs_data(outlier):
    r = invoke(["export", f"{outlier / 'o.py'}:build", "-t", TARGET, "--calib",
                outlier / "calib.npz", "-o", outlier / "out", "--max-accuracy-drop", "1"])
    assert_bad_input(r, "--max-accuracy-drop", "--data EVAL", out_dir=outlier / "out")
