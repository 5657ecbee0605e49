"""Shared fixtures: a tiny CNN as a model file, calibration / eval data, and artifacts
exported once per session (exporting costs a few seconds each)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import CliResult, Work, invoke, write_work


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """``run_cli([...])`` inside an isolated working folder (tmp_path)."""
    monkeypatch.chdir(tmp_path)
    return invoke


@pytest.fixture
def work(tmp_path) -> Work:
    return write_work(tmp_path / "in")


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Work:
    return write_work(tmp_path_factory.mktemp("shared"))


def _export(shared: Work, out: Path, *extra) -> CliResult:
    r = invoke(["export", shared.model, "-t", "executorch-xnnpack", "-o", out, "--json",
                *extra])
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture(scope="session")
def fp32_export(shared, tmp_path_factory):
    """(out dir, CliResult) of an fp32 export of the tiny CNN, with --data."""
    out = tmp_path_factory.mktemp("fp32")
    return out, _export(shared, out, "-r", "fp32", "--data", shared.eval)


@pytest.fixture(scope="session")
def int8_export(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    return out, _export(shared, out, "-r", "int8", "--calib", shared.calib)


@pytest.fixture
def fp32_pte(fp32_export, tmp_path) -> Path:
    """A private copy (with manifest) of the session fp32 artifact, safe to modify."""
    return _copy_artifact(fp32_export[0], tmp_path / "fp32")


@pytest.fixture
def int8_pte(int8_export, tmp_path) -> Path:
    return _copy_artifact(int8_export[0], tmp_path / "int8")


def _copy_artifact(src_dir: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    pte = next(src_dir.glob("*.pte"))
    for p in src_dir.glob(pte.name + "*"):
        shutil.copy(p, dst / p.name)
    return dst / pte.name


