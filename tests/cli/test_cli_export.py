"""edgeq export, end to end through the CLI: artifacts, manifests, report.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import TINY_MODEL
from edgeq.artifacts import sha256_file

TARGET = "executorch-xnnpack"


def manifest_of(pte: Path) -> dict:
    return json.loads(Path(str(pte) + ".manifest.json").read_text())


def check_artifact(out: Path, recipe: str, model_spec: str | None = None) -> dict:
    """The artifact matches its manifest and its report.json cell."""
    pte = out / f"{'build' if model_spec is None else model_spec}.{recipe}.{TARGET}.pte"
    assert pte.is_file(), sorted(p.name for p in out.iterdir())
    m = manifest_of(pte)
    assert m["artifact"] == {"path": pte.name, "size_bytes": pte.stat().st_size,
                             "sha256": sha256_file(pte)}
    assert m["target"] == {"name": TARGET, "runtime": "executorch", "format": "pte",
                           "delegate": "xnnpack"}
    assert m["recipe"]["name"] == recipe
    assert set(m["tool_versions"]) == {"executorch", "torch", "torchao"}
    report = json.loads((out / "report.json").read_text())
    cells = [c for c in report["results"] if c["recipe"] == recipe]
    assert len(cells) == 1 and cells[0]["artifact"]["sha256"] == m["artifact"]["sha256"]
    assert Path(cells[0]["artifact"]["path"]).resolve() == pte.resolve()
    assert report["model"]["sha256"] == m["model"]["sha256"]
    return m


def test_fp32(fp32_export, shared):
    out, r = fp32_export
    m = check_artifact(out, "fp32")
    assert m["recipe"]["method"] == "none"
    d = m["delegation"]
    assert d["delegated_nodes"] == d["total_nodes"] > 0 and d["fallback_ops"] == []
    assert d["delegated_share"] == 1.0
    assert m["model"]["params"] == 1626
    # --data: every artifact evaluated, against labels and the fp32 model.
    report = r.json()
    assert r.stdout.lstrip().startswith("{")  # tables and progress stay on stderr
    acc = report["results"][0]["accuracy"]
    assert acc["metric"] == "top1" and acc["samples"] == 64 and acc["data"] == shared.eval
    assert 0 <= acc["value"] <= 100 and acc["reference_value"] == pytest.approx(acc["value"])
    assert acc["fidelity"]["agreement"] == 100.0 and acc["fidelity"]["sqnr"] > 60
    assert json.loads((out / "report.json").read_text())["results"][0]["accuracy"] == acc


def test_int8(int8_export, fp32_export, shared):
    out, r = int8_export
    m = check_artifact(out, "int8")
    assert m["recipe"]["method"] == "static" and m["recipe"]["activation_observer"] == "histogram"
    assert m["calibration"] == {"source": shared.calib, "samples": 64, "of": 64,
                                "stratified": True, "seed": 0}
    d = m["delegation"]
    assert d["delegated_nodes"] == d["total_nodes"] > 0
    fp32 = manifest_of(next(fp32_export[0].glob("*.pte")))
    assert m["artifact"]["size_bytes"] < fp32["artifact"]["size_bytes"]
    assert m["model"]["sha256"] == fp32["model"]["sha256"]
    assert r.json()["results"][0]["accuracy"] is None


def _export(run_cli, work, *extra, out="out"):
    r = run_cli(["export", work.model, "-t", TARGET, "-o", out, *extra])
    assert r.exit_code == 0, r.output
    return Path(out).resolve()


def test_observer_minmax_and_calib_samples(run_cli, work):
    out = _export(run_cli, work, "--calib", work.calib, "--observer", "minmax",
                  "--calib-samples", "16")
    m = check_artifact(out, "int8")
    assert m["recipe"]["activation_observer"] == "minmax"
    assert m["calibration"]["samples"] == 16 and "warning" in m["calibration"]
    assert m["delegation"]["delegated_share"] == 1.0


def test_keep_float(run_cli, work, int8_export):
    out = _export(run_cli, work, "--calib", work.calib, "--keep-float", "conv1")
    m = check_artifact(out, "int8")
    assert m["recipe"]["keep_float"] == ["conv1"]
    full = manifest_of(next(int8_export[0].glob("*.pte")))
    # conv1 in fp32: no quantize/dequantize pair around it, so a different graph and file.
    assert m["delegation"]["total_nodes"] < full["delegation"]["total_nodes"]
    assert m["artifact"]["size_bytes"] != full["artifact"]["size_bytes"]


def test_keep_float_typo(run_cli, work):
    r = run_cli(["export", work.model, "-t", TARGET, "--calib", work.calib, "-o", "o",
                 "--keep-float", "conv9"])
    from helpers import assert_bad_input

    assert_bad_input(r, "--keep-float 'conv9' matches no module", "conv1", out_dir=Path("o"))


@pytest.mark.parametrize("data,loss", [("calib", "ce"), ("nolabels", "kd")])
def test_qat(run_cli, work, data, loss):
    out = _export(run_cli, work, "--qat-data", getattr(work, data), "--qat-epochs", "1",
                  "--data", work.eval)
    m = check_artifact(out, "int8-qat")
    assert m["recipe"]["method"] == "qat"
    assert m["qat"] == {"source": getattr(work, data), "samples": 64, "epochs": 1,
                        "lr": 1e-3, "loss": loss}
    assert "calibration" not in m
    acc = json.loads((out / "report.json").read_text())["results"][0]["accuracy"]
    assert acc["samples"] == 64 and 0 <= acc["fidelity"]["agreement"] <= 100
    assert 0.5 < acc["fidelity"]["cosine"] <= 1.0


def test_package_module_spec(run_cli, tmp_path, monkeypatch, work):
    pkg = tmp_path / "edgeq_testpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(TINY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = run_cli(["export", "edgeq_testpkg.nets:build", "-t", TARGET, "-r", "fp32", "-o", "o"])
    assert r.exit_code == 0, r.output
    assert check_artifact(Path("o").resolve(), "fp32")["model"]["spec"] == \
        "edgeq_testpkg.nets:build"


def test_pickle_checkpoint(run_cli, work):
    from edgeq.models import load_model

    torch.save(load_model(work.model).module, "tiny.pt")
    args = ["export", "tiny.pt", "-t", TARGET, "-r", "fp32", "-o", "o"]
    r = run_cli(args)
    assert r.exit_code == 2 and "--trust-pickle" in r.stderr and not Path("o").exists()
    r = run_cli(args + ["--trust-pickle", "--input-shape", "1,1,8,8"])
    assert r.exit_code == 0, r.output
    check_artifact(Path("o").resolve(), "fp32", "tiny")


def test_pt2_spec(run_cli, work):
    from edgeq.models import load_model

    m = load_model(work.model)
    torch.export.save(torch.export.export(m.module, m.example_inputs), "tiny.pt2")
    r = run_cli(["export", "tiny.pt2", "-t", TARGET, "-r", "fp32", "-o", "o"])
    assert r.exit_code == 0, r.output
    check_artifact(Path("o").resolve(), "fp32", "tiny")


def test_builtin_digits_cnn_inputs():
    from edgeq.data import check_against_model, load_dataset
    from edgeq.models import load_model, output_size

    m = load_model("digits-cnn")
    ds = load_dataset("digits:eval", m.input_names)
    check_against_model(ds, m.input_names, m.input_shapes, output_size(m))
    with torch.no_grad():
        pred = m.module(torch.from_numpy(ds.inputs["x"][:100])).argmax(1).numpy()
    assert (pred == ds.labels[:100]).mean() > 0.9


def test_report_paths_absolute_with_relative_out(run_cli, work):
    assert run_cli(["export", work.model, "-t", TARGET, "-r", "fp32", "-o", "rel"]).exit_code == 0
    cell = json.loads(Path("rel/report.json").read_text())["results"][0]
    assert Path(cell["artifact"]["path"]).is_absolute()


def test_existing_output_needs_force(run_cli, work):
    args = ["export", work.model, "-t", TARGET, "-r", "fp32", "-o", "o"]
    assert run_cli(args).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in Path("o").iterdir()}
    r = run_cli(args)
    from helpers import assert_bad_input

    assert_bad_input(r, "already exists", "--force")
    assert {p.name: p.stat().st_mtime_ns for p in Path("o").iterdir()} == before
    r = run_cli(args + ["--force"])
    assert r.exit_code == 0, r.output
    check_artifact(Path("o").resolve(), "fp32")
    assert len(json.loads(Path("o/report.json").read_text())["results"]) == 1


def test_force_reexport_replaces_the_cell(run_cli, work):
    base = ["export", work.model, "-t", TARGET, "--calib", work.calib, "-o", "o"]
    assert run_cli(base).exit_code == 0
    assert run_cli(base + ["--force", "--calib-samples", "8"]).exit_code == 0
    cells = json.loads(Path("o/report.json").read_text())["results"]
    pte = Path("o") / f"build.int8.{TARGET}.pte"
    assert [c["artifact"]["sha256"] for c in cells] == [sha256_file(pte)]


def test_report_of_another_model_needs_force(run_cli, work):
    assert run_cli(["export", work.model, "-t", TARGET, "-r", "fp32", "-o", "o"]).exit_code == 0
    before = Path("o/report.json").read_text()
    r = run_cli(["export", "digits-cnn", "-t", TARGET, "-r", "fp32", "-o", "o"])
    assert r.exit_code == 2 and "report.json" in r.stderr and "--force" in r.stderr
    assert Path("o/report.json").read_text() == before
