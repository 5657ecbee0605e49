"""export: several --recipe values in one run, --metric, and the metric a model declares
(``edgeq_metric``: a sentence encoder is judged by cosine, not by the argmax of its
embedding)."""
from __future__ import annotations

import json
import textwrap

from helpers import assert_bad_input, invoke

EMBEDDER = textwrap.dedent("""
    import torch
    from torch import nn


    class Embedder(nn.Module):
        edgeq_metric = "cosine"

        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(64, 32)
            self.fc2 = nn.Linear(32, 16)

        def forward(self, x):
            y = self.fc2(torch.relu(self.fc1(x.flatten(1))))
            return y / y.norm(dim=-1, keepdim=True)


    def build():
        torch.manual_seed(0)
        return Embedder().eval(), (torch.randn(1, 1, 8, 8),)


    def bad():
        m, ex = build()
        m.edgeq_metric = "bleu"
        return m, ex
""")


def test_two_recipes_one_run(work, tmp_path):
    out = tmp_path / "out"
    r = invoke(["export", work.model, "-t", "onnx-cpu", "-r", "int8", "-r", "fp32",
                "--calib", work.calib, "--data", work.eval, "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    cells = r.json()["results"]
    assert sorted(c["recipe"] for c in cells) == ["fp32", "int8"]
    assert all(c["accuracy"]["metric"] == "top1" for c in cells)
    assert (out / "build.int8.onnx-cpu.onnx").is_file()
    assert (out / "build.fp32.onnx-cpu.onnx").is_file()


def test_search_takes_one_recipe(work, tmp_path):
    out = tmp_path / "out"
    r = invoke(["export", work.model, "-t", "onnx-cpu", "-r", "int8", "-r", "int8-dfq",
                "--calib", work.calib, "--data", work.eval, "--max-accuracy-drop", "1",
                "-o", out])
    assert_bad_input(r, "--max-accuracy-drop", "int8, int8-dfq", out_dir=out)


def test_metric_needs_data(work, tmp_path):
    out = tmp_path / "out"
    r = invoke(["export", work.model, "-t", "onnx-cpu", "--calib", work.calib,
                "--metric", "cosine", "-o", out])
    assert_bad_input(r, "--metric cosine", "--data", out_dir=out)


def test_metric_flag_overrides_default(work, tmp_path):
    r = invoke(["export", work.model, "-t", "onnx-cpu", "--calib", work.calib,
                "--data", work.eval, "--metric", "cosine", "-o", tmp_path / "out", "--json"])
    assert r.exit_code == 0, r.output
    acc = r.json()["results"][0]["accuracy"]
    assert acc["metric"] == "cosine"
    assert acc["value"] == acc["fidelity"]["cosine"] and 0.9 < acc["value"] <= 1.0
    assert abs(acc["drop"] - (1.0 - acc["value"])) < 1e-4


def test_model_declared_metric(work, tmp_path):
    (work.root / "embedder.py").write_text(EMBEDDER)
    model = f"{work.root / 'embedder.py'}:build"
    r = invoke(["export", model, "-t", "onnx-cpu", "--calib", work.nolabels,
                "--data", work.nolabels, "-o", tmp_path / "out", "--json"])
    assert r.exit_code == 0, r.output
    acc = r.json()["results"][0]["accuracy"]
    assert acc["metric"] == "cosine", acc
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["results"][0]["accuracy"]["metric"] == "cosine"
    # eval with --reference picks the model's metric up as well
    art = tmp_path / "out" / "build.int8.onnx-cpu.onnx"
    r = invoke(["eval", art, "--data", work.nolabels, "--reference", model, "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["metric"] == "cosine"


def test_bad_declared_metric(work, tmp_path):
    (work.root / "embedder.py").write_text(EMBEDDER)
    out = tmp_path / "out"
    r = invoke(["export", f"{work.root / 'embedder.py'}:bad", "-t", "onnx-cpu",
                "--calib", work.nolabels, "-o", out])
    assert_bad_input(r, "edgeq_metric 'bleu'", out_dir=out)
