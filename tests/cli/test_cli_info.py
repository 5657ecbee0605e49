"""edgeq targets, doctor, --help, --version."""
from __future__ import annotations

import shutil

from edgeq import __version__


def test_targets(run_cli):
    r = run_cli(["targets", "--json"])
    assert r.exit_code == 0, r.output
    rows = {t["name"]: t for t in r.json()}
    t = rows["executorch-xnnpack"]
    assert (t["runtime"], t["format"], t["delegate"], t["ready"], t["missing"]) == \
        ("executorch", "pte", "xnnpack", True, [])
    assert "executorch-xnnpack" in r.stderr


def test_doctor(run_cli):
    r = run_cli(["doctor", "--json"])
    assert r.exit_code == 0, r.output
    rows = {x["component"]: x for x in r.json()}
    assert rows["python"]["ok"] and rows["torch"]["ok"] and rows["executorch"]["ok"]
    assert rows["native .pte runner"]["ok"] == (shutil.which("g++") is not None)
    assert rows["adb client"]["ok"] == (shutil.which("adb") is not None)
    assert len(rows) == len(r.json())  # no duplicates


def test_help_and_version(run_cli):
    r = run_cli(["--help"])
    assert r.exit_code == 0
    for cmd in ("demo", "export", "eval", "profile", "check", "targets", "doctor"):
        assert f"  {cmd} " in r.stdout
    assert "Exit codes: 0 ok, 1 budget exceeded, 2 bad input" in r.stdout
    r = run_cli(["--version"])
    assert r.exit_code == 0 and __version__ in r.stdout
    r = run_cli(["export", "--help"])
    assert r.exit_code == 0 and "--keep-float" in r.stdout and "--trust-pickle" in r.stdout
