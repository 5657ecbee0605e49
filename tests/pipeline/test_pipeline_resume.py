"""`edgeq run` killed half-way (kill -9 after the first artifact is finished) resumes on
the next run without redoing finished work, and ends with a complete report."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import invoke, write_work

PIPELINE = """\
model: model.py:build
calib: calib.npz
data: eval.npz
calib_samples: 32
recipes: [fp32, int8]
targets: [executorch-xnnpack]
"""


def finished_manifests(out: Path) -> list[Path]:
    """Manifests of finished builds (the build key goes in last)."""
    done = []
    for m in (out / "artifacts").glob("*/*.manifest.json"):
        try:
            if "build_key" in json.loads(m.read_text()):
                done.append(m)
        except (OSError, json.JSONDecodeError):
            pass
    return done


def test_kill_9_then_resume(tmp_path):
    write_work(tmp_path)
    (tmp_path / "edgeq.yaml").write_text(PIPELINE)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "EDGEQ_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "edgeq", "run", "edgeq.yaml", "-o", "out"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not finished_manifests(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err  # killed mid-run, not finished
    first = finished_manifests(out)
    assert len(first) == 1, err
    mtime = first[0].stat().st_mtime_ns
    # The report written so far is valid JSON (the kill may land between the manifest and
    # the report's rewrite: then it does not list the finished cell yet).
    report = json.loads((out / "report.json").read_text())
    assert sum(1 for c in report["results"] if c.get("artifact")) in (0, 1)

    r = invoke(["run", tmp_path / "edgeq.yaml", "-o", out, "--json"])
    assert r.exit_code == 0, r.output
    res = r.json()
    assert (res["cached"], res["built"], res["failed"], res["cells"]) == (1, 1, 0, 2)
    assert first[0].stat().st_mtime_ns == mtime  # the finished artifact was not rebuilt
    report = json.loads((out / "report.json").read_text())
    assert sorted(c["recipe"] for c in report["results"]) == ["fp32", "int8"]
    for c in report["results"]:
        assert not c.get("error") and c["accuracy"]["samples"] == 64
    hits = [c for c in report["results"] if c["cache"]["build"] == "hit"]
    assert len(hits) == 1 and Path(hits[0]["artifact"]["path"] + ".manifest.json") == \
        first[0].resolve()
    assert len(finished_manifests(out)) == 2
