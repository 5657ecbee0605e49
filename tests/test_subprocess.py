"""The real `python -m edgeq` process: exit codes, one-line errors, stdout JSON, and no
torch import for --help or for check."""
from __future__ import annotations

import json
import os
import subprocess
import sys


def edgeq(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != "EDGEQ_DEBUG"}
    return subprocess.run([sys.executable, "-m", "edgeq", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=120)


def no_torch_after(argv: list[str], cwd) -> subprocess.CompletedProcess:
    code = ("import sys, edgeq.cli\n"
            "try:\n"
            f"    edgeq.cli.main({argv!r}, prog_name='edgeq')\n"
            "except SystemExit as e:\n"
            "    code = e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "sys.exit(code)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def test_help_does_not_import_torch(tmp_path):
    p = no_torch_after(["--help"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "export" in p.stdout
    p = no_torch_after(["check", "--help"], tmp_path)
    assert p.returncode == 0, p.stderr


def test_check_does_not_import_torch(tmp_path, fp32_export):
    report = tmp_path / "report.json"
    report.write_text((fp32_export[0] / "report.json").read_text())
    (tmp_path / "b.yaml").write_text("max_size: 1MB\n")
    p = no_torch_after(["check", str(report), "--budgets", "b.yaml", "--json"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["passed"] is True
    (tmp_path / "b.yaml").write_text("max_size: 1KB\n")
    p = edgeq("check", report, "--budgets", "b.yaml", "--json", cwd=tmp_path)
    assert p.returncode == 1 and json.loads(p.stdout)["passed"] is False


def test_bad_model_one_line(tmp_path):
    p = edgeq("export", "missing.py:build", "-t", "executorch-xnnpack", "-o", "out",
              cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.splitlines() == ["edgeq: error: model file 'missing.py' not found"]
    assert not (tmp_path / "out").exists()


def test_corrupt_pte_one_line(tmp_path):
    (tmp_path / "m.pte").write_bytes(b"ET12" + b"\x00" * 200)
    p = edgeq("profile", "m.pte", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: artifact 'm.pte'"), lines
    assert not (tmp_path / "report.json").exists()


def test_export_json_stdout_is_pure(tmp_path, shared):
    p = edgeq("export", shared.model, "-t", "executorch-xnnpack", "-r", "fp32", "-o", "out",
              "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["results"][0]["recipe"] == "fp32"
    assert (tmp_path / report["results"][0]["artifact"]["path"]).is_file()
    assert "Traceback" not in p.stderr and "Warning" not in p.stderr
