"""edgeq eval and edgeq profile on the session's artifacts (private copies)."""
from __future__ import annotations

import json
import shutil

import pytest

from helpers import assert_bad_input


def report_cell(pte):
    report = json.loads((pte.parent / "report.json").read_text())
    assert len(report["results"]) == 1
    return report["results"][0]


def test_eval_fp32_against_its_reference(run_cli, fp32_pte, shared):
    r = run_cli(["eval", fp32_pte, "--data", shared.eval, "--reference", shared.model,
                 "--json"])
    assert r.exit_code == 0, r.output
    block = r.json()
    assert block["metric"] == "top1" and block["samples"] == 64
    assert block["value"] == pytest.approx(block["reference_value"]) and block["drop"] == 0
    fid = block["fidelity"]
    assert fid["agreement"] == 100.0 and fid["cosine"] > 0.99999 and fid["sqnr"] > 60
    cell = report_cell(fp32_pte)
    assert cell["accuracy"] == block and cell["recipe"] == "fp32"
    assert json.loads((fp32_pte.parent / "report.json").read_text())["model"]["sha256"]
    assert "top1" in r.stderr and "written to" in r.stderr


def test_eval_int8_metrics(run_cli, int8_pte, shared):
    r = run_cli(["eval", int8_pte, "--data", shared.eval, "--reference", shared.model,
                 "--metric", "sqnr", "--json"])
    assert r.exit_code == 0, r.output
    b = r.json()
    assert b["metric"] == "sqnr" and 10 < b["value"] < 60 and b["drop"] is None
    assert 50 <= b["fidelity"]["agreement"] <= 100 and 0.9 < b["fidelity"]["cosine"] < 1


def test_eval_without_reference(run_cli, int8_pte, shared):
    r = run_cli(["eval", int8_pte, "--data", shared.eval, "--json"])
    assert r.exit_code == 0, r.output
    b = r.json()
    assert b["metric"] == "top1" and 0 <= b["value"] <= 100
    assert b["reference_value"] is None and b["fidelity"] is None and b["drop"] is None
    r = run_cli(["eval", int8_pte, "--data", shared.nolabels, "--json"])
    assert r.exit_code == 0 and r.json()["metric"] == "cosine"
    assert r.json()["value"] is None and "--reference" in r.json()["value_reason"]
    # Both runs merged into one cell for the same artifact.
    assert report_cell(int8_pte)["accuracy"]["data"] == shared.nolabels


def test_eval_metric_needs_reference(run_cli, int8_pte, shared):
    r = run_cli(["eval", int8_pte, "--data", shared.eval, "--metric", "agreement"])
    assert_bad_input(r, "--metric agreement", "--reference")


def test_profile_writes_report(run_cli, int8_pte):
    r = run_cli(["profile", int8_pte, "--runs", "7", "--warmup", "2", "--json"])
    assert r.exit_code == 0, r.output
    b = r.json()
    lat = b["latency_ms"]
    assert lat["runs"] == 7 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert b["mode"] == "measured" and b["device"] == "local"
    assert b["runner"] == ("native" if shutil.which("g++") else "python")
    assert b["peak_memory_bytes"] > 1 << 20
    assert b["energy_mj_per_inference"] is None and b["energy_mj_per_inference_reason"]
    assert report_cell(int8_pte)["profile"] == b


def test_profile_with_data_and_python_fallback(run_cli, fp32_pte, shared, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")  # no compiler: the Python runtime times it
    r = run_cli(["profile", fp32_pte, "--runs", "3", "--warmup", "0", "--data", shared.eval,
                 "--json"])
    assert r.exit_code == 0, r.output
    b = r.json()
    assert b["runner"] == "python" and b["latency_ms"]["runs"] == 3
    assert b["peak_memory_bytes"] > 0 and any("compiler" in n for n in b["notes"])


@pytest.mark.parametrize("flags", [["--runs", "0"], ["--threads", "0"],
                                   ["--device", "bluetooth://phone"]])
def test_profile_bad_flags(run_cli, int8_pte, flags):
    assert_bad_input(run_cli(["profile", int8_pte, *flags]), flags[0])


def test_profile_adb_without_a_device_is_a_device_failure(run_cli, int8_pte, tmp_path,
                                                          monkeypatch):
    # A scripted adb that lists no device: exit 3 (device failure), not bad input.
    fake = tmp_path / "adb"
    fake.write_text("#!/bin/sh\necho 'List of devices attached'\necho\n")
    fake.chmod(0o755)
    monkeypatch.setenv("EDGEQ_ADB", str(fake))
    r = run_cli(["profile", int8_pte, "--device", "adb"])
    assert r.exit_code == 3
    assert r.stderr.strip() == "edgeq: error: no Android device attached (adb devices lists none)"


@pytest.mark.parametrize("cmd", ["eval", "profile"])
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_artifact(run_cli, int8_pte, shared, cmd, damage):
    data = int8_pte.read_bytes()
    int8_pte.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\0" * 256)
    (int8_pte.parent / (int8_pte.name + ".manifest.json")).unlink()
    extra = ["--data", shared.eval] if cmd == "eval" else ["--runs", "2"]
    assert_bad_input(run_cli([cmd, int8_pte, *extra]), str(int8_pte), "corrupt or truncated")
    assert not (int8_pte.parent / "report.json").exists()


def test_corrupt_artifact_with_stale_manifest(run_cli, int8_pte, shared):
    int8_pte.write_bytes(int8_pte.read_bytes()[:1000])
    assert_bad_input(run_cli(["eval", int8_pte, "--data", shared.eval]), str(int8_pte))


def test_missing_artifact(run_cli, shared):
    assert_bad_input(run_cli(["eval", "nope.pte", "--data", shared.eval]), "'nope.pte'",
                     "not found")
    assert_bad_input(run_cli(["profile", "model.tflite"]), "model.tflite")


def test_eval_data_shape_mismatch(run_cli, int8_pte, tmp_path):
    import numpy as np

    np.savez(tmp_path / "big.npz", x=np.zeros((4, 1, 16, 16), np.float32))
    assert_bad_input(run_cli(["eval", int8_pte, "--data", tmp_path / "big.npz"]),
                     "big.npz", "(1, 16, 16)", "(1, 1, 8, 8)")


def test_report_in_missing_folder(run_cli, int8_pte):
    r = run_cli(["profile", int8_pte, "--runs", "2", "--report", "new/dir/r.json"])
    assert r.exit_code in (0, 2) and "internal error" not in r.stderr, r.output
