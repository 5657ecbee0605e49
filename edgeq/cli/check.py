"""edgeq check: gate a report on budgets."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import json_option


@click.command()
@click.argument("report", type=click.Path(path_type=Path))
@click.option("--budgets", "budgets_path", required=True, type=click.Path(path_type=Path),
              help="YAML budgets file (keys below).")
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), metavar="OLD",
              help="A report.json to compare with (e.g. the main branch's): enables the "
                   "*_growth_pct and max_extra_accuracy_drop budgets and adds the baseline "
                   "figure and the change to every row. Must be a report of the same model "
                   "and schema version.")
@click.option("--allow-no-baseline", is_flag=True,
              help="When the --baseline file does not exist (a first run, no report on main "
                   "yet), pass the relative budgets as 'no baseline' instead of exit 2.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Also write JUnit XML to PATH: one test case per budget per result, for "
                   "CI test reports.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Also write a Markdown summary to PATH. With $GITHUB_STEP_SUMMARY set "
                   "(GitHub Actions), the summary is appended there too.")
@json_option
def check(report, budgets_path, baseline_path, allow_no_baseline, junit_path, markdown_path,
          as_json):
    """Check REPORT against budgets; exit 1 when any budget is exceeded.

    \b
    Budgets file, global or narrowed to targets / recipes / devices (fnmatch;
    device: matches the profile's device, e.g. local, adb:SERIAL, and its device
    profile name, e.g. pixel-8):
      budgets:
        - max_size: 2MB                # B, KB, MB, KiB, MiB
          max_accuracy_drop: 1.0       # points of the report's metric (top-1 %)
          max_size_growth_pct: 10      # vs --baseline: at most 10% bigger
          max_extra_accuracy_drop: 0.5 # vs --baseline: points lost
        - target: executorch-*
          device: pixel-*
          max_latency_p50_ms: 5        # ms; 5ms, 0.005s and 5000us also work
          min_sustained_over_peak: 0.8 # or 80%: sustained / peak throughput
    \b
    Absolute keys: max_size, max_peak_memory (sizes); max_latency_p50_ms,
      max_latency_p90_ms, max_latency_p99_ms (ms); max_accuracy_drop (points);
      max_energy_mj (mJ per inference); min_sustained_over_peak (0-1, a minimum).
    Relative keys (need --baseline; same target, recipe and device): max_size_growth_pct,
      max_peak_memory_growth_pct, max_latency_p50_growth_pct, max_latency_p90_growth_pct,
      max_latency_p99_growth_pct, max_energy_growth_pct (% of the baseline's figure);
      max_extra_accuracy_drop (baseline accuracy - current, points of the same metric).
    \b
    A budget whose figure was not measured fails. A cell the baseline lacks passes its
    relative budgets as "new cell: no baseline"; baseline cells missing from REPORT are
    listed. The results are written back into REPORT's "budgets" list. --junit and
    --markdown files are written even when a budget fails (the exit code is still 1).
    """
    from edgeq.cli.output import budgets_table, print_table, say
    from edgeq.errors import BadInput
    from edgeq.report.budgets import check as check_budgets, load_budgets
    from edgeq.report.markdown import step_summary_path
    from edgeq.report.schema import load_report, save_report

    for flag, path in (("--junit", junit_path), ("--markdown", markdown_path)):
        if path is not None:
            _check_writable(path, flag)
    summary = step_summary_path()
    if summary is not None:
        _check_writable(summary, "$GITHUB_STEP_SUMMARY")
    if allow_no_baseline and baseline_path is None:
        raise BadInput("--allow-no-baseline needs --baseline OLD_REPORT")

    data = load_report(report)
    budgets = load_budgets(budgets_path)
    base, comparison = _baseline(baseline_path, allow_no_baseline, data)
    rows = check_budgets(data, budgets, base)
    if not rows:
        raise BadInput(f"budgets '{budgets_path}': no budget applies to any result in "
                       f"'{report}' (check the target / recipe / device patterns)")
    data["budgets"] = rows
    save_report(report, data)
    failed = [r for r in rows if not r["passed"]]
    if junit_path is not None:
        from edgeq.report.junit import write_junit

        write_junit(junit_path, data, rows, comparison)
    if markdown_path is not None or summary is not None:
        from edgeq.report.markdown import append_step_summary, markdown_summary, write_markdown

        text = markdown_summary(data, rows, comparison)
        if markdown_path is not None:
            write_markdown(markdown_path, text)
        if summary is not None:
            append_step_summary(summary, text)
    if as_json:
        from edgeq.cli.output import emit_json

        emit_json({"passed": not failed, "budgets": rows, "baseline": comparison})
    print_table(budgets_table(rows))
    if comparison and comparison.get("missing"):
        say(f"no baseline: '{baseline_path}' not found; relative budgets were not compared")
    for g in (comparison or {}).get("gone", []):
        say(f"baseline cell not in this report: {g}")
    new = sum(1 for r in rows if r.get("note"))
    say(f"{len(rows) - len(failed)}/{len(rows)} budgets passed"
        + (f" ({new} without a baseline)" if new else "")
        + (f"; {len(failed)} exceeded" if failed else ""))
    if failed:
        raise SystemExit(1)


def _baseline(path: Path | None, allow_missing: bool, report: dict):
    """(baseline report or None, comparison summary for the outputs or None)."""
    if path is None:
        return None, None
    if allow_missing and not Path(path).exists():
        return {"results": []}, {"path": str(path), "missing": True, "gone": []}
    from edgeq.report.baseline import describe_cell, gone_cells, load_baseline

    base = load_baseline(path, report)
    return base, {"path": str(path), "sha256": (base.get("model") or {}).get("sha256"),
                  "created": base.get("created"),
                  "gone": [describe_cell(c) for c in gone_cells(report, base)]}


def _check_writable(path: Path, flag: str) -> None:
    """Refuse, before any work, an output whose folder is missing or not writable."""
    import os

    from edgeq.errors import BadInput

    path = Path(path)
    parent = path.parent
    if path.is_dir():
        raise BadInput(f"{flag} '{path}' is a directory; give a file path")
    if not parent.is_dir():
        raise BadInput(f"{flag} '{path}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(f"{flag} '{path}': folder '{parent}' is not writable")
