"""edgeq report: the self-contained HTML page. The Pareto frontier on known points, a
100-cell report (errors, nulls with reasons, estimates, thermal traces, sensitivity,
budgets) rendered fast and with every plot, nothing loaded from outside, and the bad
inputs of the CLI (truncated report, missing output folder)."""
from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_bad_input, invoke

from edgeq.report.html import render_html
from edgeq.report.plotdata import collect_pareto, frontier
from edgeq.report.plots import pareto_front

ROOT = Path(__file__).resolve().parents[2]
TARGETS = [f"target-{i}" for i in range(10)]
RECIPES = [f"recipe-{i}" for i in range(10)]
ERROR_ROWS = {4, 50}              # 1-based rows of failed cells
NO_ACCURACY_ROWS = {7, 27, 77}    # accuracy null, with a reason
NO_PROFILE_ROWS = {9, 19, 99}     # profile null, with a reason
ESTIMATED_ROWS = {12, 34}         # profile estimated: p50 only
THERMAL_ROWS = {1, 2}             # 1: measured trace (zones, clocks), 2: estimated trace


def _trace(estimated: bool) -> list[dict]:
    out = []
    for k in range(30):
        t = 10.0 * k
        if estimated:
            out.append({"t_s": t, "temp_c": 30 + k * 0.4, "clock_ratio": 1.0 if k < 20 else 0.7,
                        "latency_ms": 1.0 if k < 20 else 1.4, "temps_c": {"model": 30 + k * .4}})
        else:
            out.append({"t_s": t, "latency_ms": 2.0 + (0.6 if k > 15 else 0) + 0.01 * k,
                        "runs": 100, "temps_c": {"cpu0": 35 + k * 0.5, "gpu": 33 + k * 0.3},
                        "cpu_mhz": {"4": 2400 if k <= 15 else 1800, "5": 2400}})
    return out


def cell(row: int, target: str, recipe: str, rng) -> dict:
    c = {"target": target, "recipe": recipe,
         "artifact": {"path": f"/x/{target}.{recipe}.bin", "size_bytes": int(rng.integers(40e3,
                                                                                          4e6)),
                      "sha256": f"{row:064x}"},
         "delegation": {"delegated_nodes": 9, "total_nodes": 10, "delegated_share": 0.9,
                        "fallback_ops": [{"op": "Reshape", "count": 1}]}}
    if row in ERROR_ROWS:
        return dict(c, error="lowering failed: aten.foo is not supported")
    drop = round(float(rng.uniform(-0.5, 5.0)), 3)
    c["accuracy"] = {"metric": "top1", "value": 90.0 - drop, "reference_value": 90.0,
                     "drop": drop, "samples": 500}
    if row in NO_ACCURACY_ROWS:
        c["accuracy"], c["accuracy_reason"] = None, "this host cannot run target-x artifacts"
    p50 = round(float(rng.uniform(0.5, 20.0)), 4)
    c["profile"] = {"device": "local", "profile": "host", "mode": "measured", "runner": "native",
                    "latency_ms": {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3,
                                   "mean": p50 * 1.05, "std": p50 * 0.05, "min": p50 * 0.95,
                                   "runs": 100},
                    "peak_memory_bytes": 5 << 20}
    if row == 3:
        c["profile"]["latency_ms"]["samples"] = [p50 * (1 + 0.02 * k) for k in range(50)]
    if row in ESTIMATED_ROWS:
        c["profile"] = {"device": "pixel-8", "profile": "pixel-8", "mode": "estimated",
                        "latency_ms": {"p50": p50, "mean": p50, "p90": None, "p99": None,
                                       "std": None, "runs": None,
                                       "spread_reason": "a roofline estimate has no spread"},
                        "peak_memory_bytes": 1 << 20}
    if row in THERMAL_ROWS:
        est = row == 2
        if est:
            c["profile"]["mode"] = "estimated"
        c["profile"]["thermal"] = {"duration_s": 290, "throttled": True,
                                   "time_to_throttle_s": 160.0 if not est else 200.0,
                                   "throttle_c": 41.0 if est else None, "trace": _trace(est)}
    if row in NO_PROFILE_ROWS:
        c["profile"], c["profile_reason"] = None, "adb: no device attached"
    return c


def build_report(n: int = 100, seed: int = 0) -> dict:
    """A synthetic report of ``n`` cells (targets x recipes), with every kind of gap."""
    rng = np.random.default_rng(seed)
    cells = [cell(i, t, r, rng) for i, (t, r) in
             enumerate(itertools.islice(itertools.product(TARGETS, RECIPES), n), 1)]
    budgets = []
    for c in cells:
        if c.get("error"):
            continue
        size = c["artifact"]["size_bytes"]
        budgets.append({"name": "max_size", "target": c["target"], "recipe": c["recipe"],
                        "device": (c.get("profile") or {}).get("device"), "limit": 3_000_000,
                        "value": size, "unit": "bytes", "passed": size <= 3_000_000})
    budgets.append({"name": "max_latency_p50_ms", "target": cells[-1]["target"],
                    "recipe": cells[-1]["recipe"], "device": None, "limit": 5.0, "value": None,
                    "unit": "ms", "passed": False, "reason": "not measured"})
    sens = {"metric": "top1", "target": "target-0", "recipe": "recipe-0",
            "layers": [{"name": f"features.{k}", "op": "Conv2d", "sqnr_db": 40.0 - 2.5 * k,
                        "metric_drop": round(0.1 * k, 2), "rank": k + 1} for k in range(12)]}
    return {"schema_version": 1, "edgeq_version": "0.1.0", "created": "2026-11-22T10:00:00Z",
            "model": {"spec": "model.py:build", "sha256": "ab" * 32, "params": 1234567},
            "results": cells, "budgets": budgets, "sensitivity": sens}


def small_report() -> dict:
    """Four cells with known points: C dominates D in size; B is smallest but worst."""
    def c(t, r, size, drop, p50):
        return {"target": t, "recipe": r,
                "artifact": {"path": f"{t}{r}", "size_bytes": size, "sha256": f"{t}{r}"},
                "accuracy": {"metric": "top1", "value": 90 - drop, "reference_value": 90,
                             "drop": drop},
                "profile": {"device": "local", "mode": "measured",
                            "latency_ms": {"p50": p50, "p90": p50 * 1.2}}}
    return {"schema_version": 1, "model": {"spec": "m"}, "budgets": [],
            "results": [c("et", "fp32", 400_000, 0.0, 4.0),    # A
                        c("et", "int4", 60_000, 3.0, 1.0),     # B
                        c("ort", "int8", 100_000, 0.5, 5.0),   # C
                        c("tfl", "int8", 120_000, 0.7, 3.0)]}  # D


def _brute_front(points):
    def dominated(i):
        return any(b[0] <= points[i][0] and b[1] <= points[i][1] and b != points[i]
                   for b in points)
    return sorted((i for i in range(len(points)) if not dominated(i)),
                  key=lambda i: (points[i], i))


def test_pareto_front_known_points():
    pts = [(1, 5), (2, 3), (3, 4), (4, 1), (2, 3), (5, 0.5), (6, 0.5), (2, 3.5)]
    # (3,4) and (2,3.5) are dominated by (2,3), (6,0.5) by (5,0.5); equal points both stay.
    assert pareto_front(pts) == [0, 1, 4, 3, 5]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, -2.0)]) == [0]


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 25))
        pts = [tuple(map(float, p)) for p in rng.integers(0, 6, (n, 2))]  # many ties
        assert pareto_front(pts) == _brute_front(pts), pts


def test_frontier_of_a_report():
    rep = small_report()
    size_pts, left, metric = collect_pareto(rep, "size")
    lat_pts, _, _ = collect_pareto(rep, "latency")
    assert metric == "top1" and left == []
    # Size: B (60 KB, 3.0) < C (100 KB, 0.5) < A (400 KB, 0.0); D (120 KB, 0.7) is beaten by C.
    assert [(f["target"], f["recipe"]) for f in frontier(size_pts)] == \
        [("et", "int4"), ("ort", "int8"), ("et", "fp32")]
    # Latency: B (1 ms, 3.0), D (3 ms, 0.7), A (4 ms, 0.0); C (5 ms, 0.5) is beaten by A.
    assert [(f["target"], f["recipe"]) for f in frontier(lat_pts)] == \
        [("et", "int4"), ("tfl", "int8"), ("et", "fp32")]
    page, meta = render_html(rep)
    by_id = {m["id"]: m for m in meta}
    assert [f["row"] for f in by_id["pareto-size"]["frontier"]] == [2, 3, 1]
    assert [f["row"] for f in by_id["pareto-latency"]["frontier"]] == [2, 4, 1]
    assert "thermal" not in by_id and "sensitivity" not in by_id
    for plot_id in ("pareto-size", "pareto-latency"):  # every point labelled
        fig = page.split(f'<figure id="{plot_id}"')[1].split("</figure>")[0]
        for label in ("et · int4", "ort · int8", "tfl · int8", "et · fp32"):
            assert fig.count(f">{label}<") == 1, (plot_id, label)


def _external_refs(page: str) -> list[str]:
    """src / href / url() values that point outside the page (not #anchor, not data:)."""
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)["\']', page)
    refs += re.findall(r"url\(\s*['\"]?([^)'\"]*)", page)
    return [r for r in refs if not r.startswith(("#", "data:"))]


def test_hundred_cells_render(tmp_path):
    rep = build_report(100)
    t0 = time.perf_counter()
    page, meta = render_html(rep)
    took = time.perf_counter() - t0
    assert took < 15, f"rendering 100 cells took {took:.1f} s"

    assert _external_refs(page) == []
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "@import" not in page and "@font-face" not in page
    # Five SVGs in one document: ids stay unique and every internal reference resolves.
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids)) > 100
    refs = set(re.findall(r"url\(#([^)]+)\)", page)) | set(re.findall(r'href="#([^"]+)"', page))
    assert refs and refs <= set(ids), sorted(refs - set(ids))[:5]
    by_id = {m["id"]: m for m in meta}
    assert list(by_id) == ["pareto-size", "pareto-latency", "latency", "thermal", "sensitivity"]
    assert page.count('<svg ') == 5 and page.count('class="plot"') == 5
    for plot_id in by_id:
        assert f'<figure id="{plot_id}"' in page
    # Result table: one row per cell; failed cells say why.
    table = page.split('<table id="results">')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + 100
    assert table.count('class="error"') == len(ERROR_ROWS)
    assert "failed: lowering failed: aten.foo is not supported" in table
    # Plotted / not plotted, with the reasons.
    size = by_id["pareto-size"]
    assert size["plotted"] == 100 - len(ERROR_ROWS) - len(NO_ACCURACY_ROWS)
    reasons = {(x["target"], x["recipe"]): x["reason"] for x in size["not_plotted"]}
    assert reasons[("target-0", "recipe-3")] == \
        "failed: lowering failed: aten.foo is not supported"
    assert reasons[("target-0", "recipe-6")] == \
        "no accuracy: this host cannot run target-x artifacts"
    lat = by_id["pareto-latency"]
    assert lat["plotted"] == 100 - len(ERROR_ROWS | NO_ACCURACY_ROWS | NO_PROFILE_ROWS)
    assert any(x["reason"] == "not profiled: adb: no device attached"
               for x in lat["not_plotted"])
    assert by_id["latency"]["plotted"] == 100 - len(ERROR_ROWS | NO_PROFILE_ROWS)
    assert by_id["thermal"]["plotted"] == 2
    assert by_id["sensitivity"]["plotted"] == 12
    assert "no accuracy: this host cannot run target-x artifacts" in page  # listed on the page
    # The frontier is the brute-force one over the plotted points.
    pts, _, _ = collect_pareto(rep, "size")
    xy = [(p["x"], p["y"]) for p in pts]
    assert [f["row"] for f in size["frontier"]] == [pts[i]["row"] for i in _brute_front(xy)]
    # Estimated latencies are labelled; a device other than the main one is named.
    assert "target-1 · recipe-1 @ pixel-8 (est.)" in page
    # Budgets: failed rows in view and red, passed ones folded.
    failed = [b for b in rep["budgets"] if not b["passed"]]
    assert failed and page.count('<tr class="fail">') == len(failed)
    assert "FAIL: not measured" in page and "FAIL: exceeded" in page
    assert re.search(r"<details><summary>\d+ passed budgets</summary>", page)
    assert f"{len(failed)} of {len(rep['budgets'])} budgets failed" in page


def test_nothing_profiled_and_escaping():
    """Zero profiled cells: latency plots are left out with the reason, the size plot is
    still drawn. Markup in names is escaped."""
    rep = small_report()
    for c in rep["results"]:
        c["profile"], c["profile_reason"] = None, "no profile run"
    rep["results"][0]["target"] = "<script>alert(1)</script>"
    page, meta = render_html(rep, title="A & B")
    by_id = {m["id"]: m for m in meta}
    assert by_id["pareto-size"]["plotted"] == 4
    assert "omitted" in by_id["pareto-latency"] and "omitted" in by_id["latency"]
    assert len(by_id["latency"]["not_plotted"]) == 4
    assert page.count("<svg ") == 1
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>A &amp; B</title>" in page
    assert "not profiled: no profile run" in page


def test_mixed_metrics_and_gappy_trace():
    """Drops in different metrics are not put on one axis; a trace with missing windows
    (null latency, no temperatures) still draws."""
    rep = small_report()
    rep["results"][3]["accuracy"]["metric"] = "cosine"
    trace = [{"t_s": 5.0 * k, "latency_ms": None if k == 2 else 1.0 + 0.1 * k,
              "temps_c": None if k == 3 else {"cpu": 40.0 + k}, "cpu_mhz": None}
             for k in range(6)]
    rep["results"][0]["profile"]["thermal"] = {"trace": trace, "time_to_throttle_s": None}
    page, meta = render_html(rep)
    by_id = {m["id"]: m for m in meta}
    assert by_id["pareto-size"]["plotted"] == 3
    assert by_id["pareto-size"]["not_plotted"][0]["reason"] == \
        "metric cosine (the plot shows top1 drops)"
    assert by_id["thermal"]["plotted"] == 1 and '<figure id="thermal"' in page


def test_empty_report():
    page, meta = render_html({"schema_version": 1, "results": [], "budgets": []})
    assert all("omitted" in m for m in meta) and "<svg" not in page
    assert "0 results" in page


def test_cli_writes_page(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(build_report(20)))
    out = tmp_path / "page.html"
    r = invoke(["report", report, "-o", out, "--json", "--title", "nightly"])
    assert r.exit_code == 0, r.output
    res = r.json()
    assert res["html"] == str(out) and out.is_file()
    assert [p["id"] for p in res["plots"]] == ["pareto-size", "pareto-latency", "latency",
                                               "thermal", "sensitivity"]
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<title>nightly</title>" in page
    assert f"wrote {out}" in r.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_cli_truncated_report(tmp_path):
    report = tmp_path / "report.json"
    text = json.dumps(build_report(5))
    report.write_text(text[: len(text) // 2])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert_bad_input(invoke(["report", report, "-o", out_dir / "r.html"]),
                     "report.json", "not valid JSON", out_dir=out_dir)


def test_cli_missing_output_folder(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(small_report()))
    assert_bad_input(invoke(["report", report, "-o", tmp_path / "gone" / "r.html"]),
                     "-o", "gone", "does not exist")
    assert_bad_input(invoke(["report", report, "-o", tmp_path]), "is a directory")
    assert_bad_input(invoke(["report", tmp_path / "nope.json", "-o", tmp_path / "r.html"]),
                     "nope.json", "not found")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("module", ["edgeq.cli.report", "edgeq.report.html"])
def test_cheap_imports(module):
    code = (f"import {module}, sys; bad = [m for m in ('torch', 'matplotlib', 'numpy') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=ROOT)


def test_render_does_not_import_torch():
    code = ("import sys; sys.path.insert(0, 'tests/report'); sys.path.insert(0, 'tests'); "
            "from test_html import small_report; from edgeq.report.html import render_html; "
            "render_html(small_report()); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, cwd=ROOT)
