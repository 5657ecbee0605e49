"""`edgeq run` end to end on the tiny CNN: the matrix, report.json, budgets and exit codes,
the content cache (a re-run rebuilds nothing; a changed recipe rebuilds only its cells),
and --jobs 2 in spawned worker processes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import invoke, write_work
from edgeq.artifacts import sha256_file

PIPELINE = """\
model: model.py:build
calib: calib.npz
data: eval.npz
calib_samples: 32
recipes: [fp32, {int8}]
targets: [executorch-xnnpack]
devices:
  - local
  - {{profile: pixel-8}}
profile: {{runs: 10, warmup: 2}}
budgets:
  - max_size: {size}
  - target: executorch-*
    max_latency_p50_ms: 50
"""


def write_pipeline(folder: Path, int8="int8", size="2MB") -> Path:
    p = folder / "edgeq.yaml"
    p.write_text(PIPELINE.format(int8=int8, size=size))
    return p


def manifests(out: Path) -> dict:
    """recipe name -> (manifest path, mtime_ns) of every artifact in the cache."""
    got = {}
    for m in (out / "artifacts").glob("*/*.manifest.json"):
        got[json.loads(m.read_text())["recipe"]["name"]] = (m, m.stat().st_mtime_ns)
    return got


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One full run (2 builds, 2 evaluations, 4 profiles) shared by the tests below, which
    work on copies of its output."""
    root = tmp_path_factory.mktemp("run")
    write_work(root)
    pipe = write_pipeline(root)
    r = invoke(["run", pipe, "-o", root / "out", "--json"])
    assert r.exit_code == 0, r.output
    return root, r


def copy_of(first, tmp_path) -> tuple[Path, Path]:
    root, _ = first
    shutil.copytree(root, tmp_path / "run")
    return tmp_path / "run", tmp_path / "run" / "out"


def test_full_matrix_report(first):
    root, r = first
    res = r.json()
    assert res == {"report": str(root / "out" / "report.json"), "passed": True,
                   "exit_code": 0, "built": 2, "evaluated": 2, "profiled": 4, "cached": 0,
                   "tasks_cached": 0, "failed": 0, "cells": 4}
    report = json.loads((root / "out" / "report.json").read_text())
    assert report["model"]["params"] == 1626
    cells = {(c["recipe"], c["device"]): c for c in report["results"]}
    assert set(cells) == {(rc, d) for rc in ("fp32", "int8") for d in ("local", "pixel-8")}
    for (recipe, device), c in cells.items():
        assert c["target"] == "executorch-xnnpack" and not c.get("error")
        art = Path(c["artifact"]["path"])
        assert art.parent.parent == (root / "out" / "artifacts").resolve()
        assert c["artifact"]["sha256"] == sha256_file(art)
        assert c["cache"] == {"build": "miss", "evaluate": "miss", "profile": "miss"}
        acc = c["accuracy"]
        assert acc["metric"] == "top1" and acc["samples"] == 64
        assert acc["data"] == str(root / "eval.npz")
        prof = c["profile"]
        assert prof["mode"] == ("measured" if device == "local" else "estimated")
        assert prof["latency_ms"]["p50"] > 0
    assert cells[("fp32", "local")]["accuracy"]["drop"] == 0.0
    assert cells[("fp32", "local")]["profile"]["latency_ms"]["runs"] == 10
    # Both devices of one cell share the artifact and its evaluation.
    assert cells[("int8", "local")]["accuracy"] == cells[("int8", "pixel-8")]["accuracy"]
    # 2 max_size rows per recipe (one per device) + 2 latency rows per recipe.
    assert len(report["budgets"]) == 8 and all(b["passed"] for b in report["budgets"])
    assert "0 failed" in r.stderr and "[8/8" in r.stderr


def test_rerun_is_all_cache_hits(first, tmp_path):
    root, out = copy_of(first, tmp_path)
    before = manifests(out)
    r = invoke(["run", root / "edgeq.yaml", "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    res = r.json()
    assert (res["built"], res["cached"], res["tasks_cached"], res["evaluated"],
            res["profiled"]) == (0, 2, 6, 0, 0)
    assert manifests(out) == before  # nothing rewritten
    report = json.loads((out / "report.json").read_text())
    assert all(c["cache"] == {"build": "hit", "evaluate": "hit", "profile": "hit"}
               for c in report["results"])
    old = json.loads((first[0] / "out" / "report.json").read_text())

    def figures(rep):
        return [(c["build_key"], c["artifact"]["sha256"], c["profile"],
                 dict(c["accuracy"], data=None)) for c in rep["results"]]

    assert figures(report) == figures(old)  # the very same figures, from the cache
    # Cached by content: the copied data files are the same data.
    assert report["results"][0]["accuracy"]["data"] == str(root / "eval.npz")


def test_changed_recipe_rebuilds_only_its_cells(first, tmp_path):
    root, out = copy_of(first, tmp_path)
    before = manifests(out)
    (root / "int8.yaml").write_text("base: int8\nname: int8\nactivation_observer: minmax\n")
    r = invoke(["run", write_pipeline(root, int8="int8.yaml"), "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    res = r.json()
    assert (res["built"], res["cached"], res["evaluated"], res["profiled"]) == (1, 1, 1, 2)
    after = manifests(out)
    assert after["fp32"] == before["fp32"]  # untouched
    report = json.loads((out / "report.json").read_text())
    int8 = [c for c in report["results"] if c["recipe"] == "int8"]
    assert len(int8) == 2 and all(c["cache"]["build"] == "miss" for c in int8)
    m = json.loads(Path(int8[0]["artifact"]["path"] + ".manifest.json").read_text())
    assert m["recipe"]["activation_observer"] == "minmax"
    assert all(c["cache"]["build"] == "hit" for c in report["results"] if c["recipe"] == "fp32")


def test_budget_failure_exits_1(first, tmp_path):
    root, out = copy_of(first, tmp_path)
    r = invoke(["run", write_pipeline(root, size="1KB"), "-o", out, "--json"])
    assert r.exit_code == 1, r.output
    assert r.json()["passed"] is False and r.json()["cached"] == 2
    report = json.loads((out / "report.json").read_text())
    sizes = [b for b in report["budgets"] if b["name"] == "max_size"]
    assert len(sizes) == 4 and not any(b["passed"] for b in sizes)
    assert "4 budget(s) exceeded" in r.stderr


def test_other_models_report_is_not_replaced(first, tmp_path):
    root, out = copy_of(first, tmp_path)
    report = json.loads((out / "report.json").read_text())
    report["model"]["sha256"] = "0" * 64
    (out / "report.json").write_text(json.dumps(report))
    r = invoke(["run", root / "edgeq.yaml", "-o", out])
    assert r.exit_code == 2 and "--force" in r.stderr


def test_jobs_2_builds_the_same_artifacts(first, tmp_path):
    root, _ = first
    # fp32 only (keeps the test short): 1 build, 1 evaluation, 2 profiles in 2 workers.
    pipe = root / "fp32-only.yaml"
    pipe.write_text(PIPELINE.format(int8="fp32", size="2MB").replace(", fp32]", "]"))
    r = invoke(["run", pipe, "-o", tmp_path / "out", "--jobs", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert (r.json()["built"], r.json()["profiled"], r.json()["failed"]) == (1, 2, 0)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["pipeline"]["executor"] == "PoolExecutor"
    ours = {(c["recipe"], c["device"]): c for c in report["results"]}
    theirs = {(c["recipe"], c["device"]): c
              for c in json.loads((root / "out" / "report.json").read_text())["results"]}
    assert set(ours) == {("fp32", "local"), ("fp32", "pixel-8")}
    for k, c in theirs.items():  # same keys, same bytes, same accuracy
        if k[0] != "fp32":
            continue
        assert ours[k]["artifact"]["sha256"] == c["artifact"]["sha256"]
        assert ours[k]["build_key"] == c["build_key"]
        assert ours[k]["accuracy"] == c["accuracy"]
        assert ours[k]["profile"]["mode"] == c["profile"]["mode"]
