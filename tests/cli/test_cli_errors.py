"""Bad input: exit 2, one 'edgeq: error:' line naming the file or flag, no traceback, and
nothing half-written in the output folder."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_bad_input, make_data

TARGET = "executorch-xnnpack"


def export(run_cli, model, *extra):
    return run_cli(["export", model, "-t", TARGET, "-o", "out", *extra])


def model_file(tmp_path, body: str, name="bad.py") -> str:
    (tmp_path / name).write_text("import torch\nfrom torch import nn\n" + textwrap.dedent(body))
    return f"{tmp_path / name}:build"


def test_missing_model_file(run_cli, work):
    assert_bad_input(export(run_cli, "nope/model.py:build", "-r", "fp32"),
                     "model file 'nope/model.py' not found", out_dir=Path("out"))


def test_model_path_is_a_directory(run_cli, tmp_path):
    (tmp_path / "dir.py").mkdir()
    assert_bad_input(export(run_cli, "dir.py:build", "-r", "fp32"), "'dir.py'",
                     out_dir=Path("out"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_model_file(run_cli, work):
    path = work.root / "model.py"
    path.chmod(0)
    try:
        assert_bad_input(export(run_cli, work.model, "-r", "fp32"), "not readable")
    finally:
        path.chmod(0o644)


def test_model_file_that_fails_to_import(run_cli, tmp_path):
    spec = model_file(tmp_path, "raise ValueError('boom')\n")
    assert_bad_input(export(run_cli, spec, "-r", "fp32"), "bad.py", "ValueError: boom")


def test_factory_not_found(run_cli, work):
    assert_bad_input(export(run_cli, f"{work.root / 'model.py'}:make", "-r", "fp32"),
                     "model.py", "no factory 'make'", "build")


@pytest.mark.parametrize("body,msg", [
    ("def build():\n    return 'a model'\n", "returned str"),
    ("def build():\n    return nn.Linear(2, 2), 'x'\n", "example inputs must be a tensor"),
    ("def build():\n    raise RuntimeError('no weights')\n", "raised RuntimeError: no weights"),
])
def test_factory_wrong_return(run_cli, tmp_path, body, msg):
    assert_bad_input(export(run_cli, model_file(tmp_path, body), "-r", "fp32"), "bad.py", msg,
                     out_dir=Path("out"))


def test_example_inputs_do_not_match_data(run_cli, work, tmp_path):
    np.savez(tmp_path / "rgb.npz", x=np.zeros((8, 3, 8, 8), np.float32))
    assert_bad_input(export(run_cli, work.model, "--calib", tmp_path / "rgb.npz"), "rgb.npz",
                     "(3, 8, 8)", "(1, 1, 8, 8)", out_dir=Path("out"))


def test_empty_calibration(run_cli, work, tmp_path):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    assert_bad_input(export(run_cli, work.model, "--calib", tmp_path / "empty.npz"),
                     "empty.npz", "0 samples", out_dir=Path("out"))


def test_nan_inf_in_calibration(run_cli, work, tmp_path):
    d = make_data(16)
    d["x"][3, 0, 1, :5] = np.nan
    d["x"][7, 0, 0, 0] = -np.inf
    np.savez(tmp_path / "nan.npz", **d)
    assert_bad_input(export(run_cli, work.model, "--calib", tmp_path / "nan.npz"), "nan.npz",
                     "6 NaN/Inf values", out_dir=Path("out"))


def test_labels_outside_outputs(run_cli, work, tmp_path):
    d = make_data(16)
    d["y"][:3] = [10, 11, -1]
    np.savez(tmp_path / "lab.npz", **d)
    assert_bad_input(export(run_cli, work.model, "--qat-data", tmp_path / "lab.npz"),
                     "lab.npz", "3 labels are outside the model's 10 outputs",
                     out_dir=Path("out"))


def test_quantized_recipe_without_calibration(run_cli, work):
    assert_bad_input(export(run_cli, work.model), "--calib", out_dir=Path("out"))


DATA_DEPENDENT = """
class M(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 1
"""
CALLS_NUMPY = """
class M(nn.Module):
    def forward(self, x):
        return x * torch.tensor(x.numpy().std())
"""


@pytest.mark.parametrize("body,needle", [(DATA_DEPENDENT, "bad.py:6"),
                                         (CALLS_NUMPY, "numpy")])
def test_op_torch_export_cannot_handle(run_cli, tmp_path, body, needle):
    spec = model_file(tmp_path, body + "def build():\n    return M(), (torch.randn(1, 4),)\n")
    line = assert_bad_input(export(run_cli, spec, "-r", "fp32"), "torch.export failed",
                            needle, out_dir=Path("out"), clean_stderr=False)
    assert "data-dependent" in line or body is CALLS_NUMPY


def test_export_failure_prints_only_one_line(run_cli, tmp_path):
    spec = model_file(tmp_path, DATA_DEPENDENT
                      + "def build():\n    return M(), (torch.randn(1, 4),)\n")
    assert_bad_input(export(run_cli, spec, "-r", "fp32"), "torch.export failed")


def test_output_dir_not_writable(run_cli, work):
    Path("somefile").write_text("x")
    assert_bad_input(run_cli(["export", work.model, "-t", TARGET, "-r", "fp32",
                              "-o", "somefile/sub"]), "somefile/sub")
    assert Path("somefile").read_text() == "x"


def test_unknown_target(run_cli, work):
    line = assert_bad_input(run_cli(["export", work.model, "-t", "executorch-xnnpak", "-r",
                                     "fp32", "-o", "out"]), "--target 'executorch-xnnpak'")
    assert "valid targets: " in line and "executorch-xnnpack" in line and "did you mean" in line


def test_unknown_recipe(run_cli, work):
    assert_bad_input(export(run_cli, work.model, "-r", "int3"), "--recipe 'int3'", "fp32, int8",
                     out_dir=Path("out"))


def test_recipe_yaml_unknown_key(run_cli, work, tmp_path):
    (tmp_path / "r.yaml").write_text("base: int8\nobserver: minmax\n")
    assert_bad_input(export(run_cli, work.model, "-r", tmp_path / "r.yaml", "--calib",
                            work.calib), "r.yaml", "unknown key 'observer'",
                     out_dir=Path("out"))


def test_bad_image_option(run_cli, work):
    assert_bad_input(export(run_cli, work.model, "-r", "fp32", "--mean", "0.5,abc"), "--mean")


def test_qat_epochs_zero(run_cli, work):
    assert_bad_input(export(run_cli, work.model, "--qat-data", work.calib, "--qat-epochs", "0"),
                     "--qat-epochs", out_dir=Path("out"))


def test_usage_error_is_exit_2(run_cli):
    r = run_cli(["export"])
    assert r.exit_code == 2 and "Missing argument 'MODEL'" in r.stderr
    assert run_cli(["frobnicate"]).exit_code == 2
