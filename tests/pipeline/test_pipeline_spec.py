"""`edgeq run` bad input: the pipeline file is validated up front, every error is one line
naming file:line and what to do, exit 2, nothing built."""
from __future__ import annotations

import sys
import textwrap

import pytest

from helpers import assert_bad_input, invoke
from edgeq.pipeline.spec import load_spec

GOOD = """\
model: model.py:build
calib: calib.npz
data: eval.npz
recipes: [fp32, int8]
targets: [executorch-xnnpack, onnx-cpu]
devices:
  - local
  - {profile: pixel-8}
profile: {runs: 20, warmup: 2}
budgets:
  - max_size: 2MB
  - target: executorch-*
    max_latency_p50_ms: 5
"""


def write(tmp_path, text: str, name="edgeq.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def bad(tmp_path, text: str, *needles: str, extra=()):
    p = write(tmp_path, text)
    out = tmp_path / "out"
    line = assert_bad_input(invoke(["run", p, "-o", out, *extra]), *needles)
    assert not out.exists()  # refused before any work
    return line


def test_good_file_resolves_paths_against_its_folder(tmp_path):
    (tmp_path / "model.py").write_text("")
    (tmp_path / "calib.npz").write_bytes(b"")
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.model == f"{tmp_path.resolve() / 'model.py'}:build"
    assert spec.calib == str(tmp_path.resolve() / "calib.npz")
    assert spec.data == "eval.npz"  # not there: left as given (load reports it)
    assert [r.name for r in spec.recipes] == ["fp32", "int8"]
    assert [t.name for t in spec.targets] == ["executorch-xnnpack", "onnx-cpu"]
    assert [(d.kind, d.name) for d in spec.devices] == [("local", "local"),
                                                       ("estimate", "pixel-8")]
    assert (spec.runs, spec.warmup, spec.threads) == (20, 2, 1)
    assert [(b["key"], b["limit"], b["target"]) for b in spec.budgets] == [
        ("max_size", 2_000_000, None), ("max_latency_p50_ms", 5.0, "executorch-*")]


def test_typo_in_a_key_names_line_and_nearest_key(tmp_path):
    line = bad(tmp_path, GOOD.replace("recipes:", "recipies:"),
               "edgeq.yaml:4: unknown key 'recipies'", "(did you mean 'recipes'?)")
    assert line.startswith("edgeq: error: ")
    bad(tmp_path, GOOD.replace("warmup:", "warmpu:"), "edgeq.yaml:9:",
        "unknown key 'warmpu' in 'profile'", "did you mean 'warmup'")


def test_wrong_unit_in_a_budget(tmp_path):
    bad(tmp_path, GOOD.replace("2MB", "5 MiBs"), "edgeq.yaml:11:", "max_size",
        "'5 MiBs' is not a size")


def test_relative_budget_points_to_check_baseline(tmp_path):
    bad(tmp_path, GOOD.replace("max_size: 2MB", "max_size_growth_pct: 10"), "edgeq.yaml:11:",
        "'max_size_growth_pct' compares with a baseline report", "--baseline")


def test_budget_for_a_target_not_in_the_matrix(tmp_path):
    bad(tmp_path, GOOD.replace("executorch-*", "tflite-*"), "edgeq.yaml:12:",
        "budget for target 'tflite-*'", "not in the matrix",
        "executorch-xnnpack, onnx-cpu")


def test_unknown_budget_key_and_device_selector(tmp_path):
    bad(tmp_path, GOOD.replace("max_latency_p50_ms", "max_latency_p5_ms"), "edgeq.yaml:13:",
        "unknown key 'max_latency_p5_ms'")
    bad(tmp_path, GOOD + "  - device: pixel-9\n    max_size: 1MB\n", "edgeq.yaml:14:",
        "budget for device 'pixel-9'")


def test_unknown_target_lists_valid_ones(tmp_path):
    bad(tmp_path, GOOD.replace("onnx-cpu", "onnx-cpuu"), "edgeq.yaml:5:",
        "target 'onnx-cpuu' does not exist", "valid targets:", "did you mean 'onnx-cpu'")


def test_unknown_device_profile_and_bad_device(tmp_path):
    bad(tmp_path, GOOD.replace("pixel-8", "pixel-9"), "edgeq.yaml:8:",
        "device profile 'pixel-9'", "did you mean 'pixel-8'")
    bad(tmp_path, GOOD.replace("- local", "- {device: usb}"), "edgeq.yaml:7:",
        "device 'usb'", "adb:SERIAL")


def test_wrong_types_and_missing_keys(tmp_path):
    bad(tmp_path, GOOD.replace("runs: 20", "runs: many"), "edgeq.yaml:9:",
        "'runs' must be an integer")
    bad(tmp_path, GOOD.replace("targets: [executorch-xnnpack, onnx-cpu]", "targets: 3"),
        "edgeq.yaml:5:", "'targets' must be a non-empty list")
    bad(tmp_path, GOOD.replace("model: model.py:build\n", ""), "missing key 'model'")
    bad(tmp_path, GOOD.replace("calib: calib.npz\n", ""), "edgeq.yaml:3:",
        "recipe 'int8'", "add 'calib: DATA'")
    bad(tmp_path, GOOD.replace("[fp32, int8]", "[fp32, int9]"), "edgeq.yaml:4:",
        "recipe 'int9'", "did you mean 'int8'")
    bad(tmp_path, "model: [unclosed\n", "edgeq.yaml:", "not valid YAML")


def test_missing_file_and_bad_flags(tmp_path):
    assert_bad_input(invoke(["run", tmp_path / "nope.yaml"]), "pipeline file", "not found")
    bad(tmp_path, GOOD, "--jobs 0", extra=["--jobs", "0"])
    bad(tmp_path, GOOD, "--jobs and --ray", extra=["--jobs", "2", "--ray", "auto"])


def test_ray_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    bad(tmp_path, GOOD, "--ray needs the 'ray' package", "pip install 'edgeq[ray]'",
        extra=["--ray", "auto"])


@pytest.mark.parametrize("text,needle", [
    ("devices: local\n", "'devices' must be a list"),
    ("devices:\n  - {profile: pixel-8, device: adb}\n", "exactly one of"),
    ("devices:\n  - local\n  - local\n", "two devices are named 'local'"),
    ("image: {resize: 8, zoom: 2}\n", "unknown key 'zoom' in 'image'"),
])
def test_bad_devices_and_image(tmp_path, text, needle):
    base = GOOD.split("devices:")[0] + "profile: {runs: 20}\n"
    bad(tmp_path, base + text, needle)
