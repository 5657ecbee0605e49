"""edgeq check: gate a report on budgets."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import json_option


@click.command()
@click.argument("report", type=click.Path(path_type=Path))
@click.option("--budgets", "budgets_path", required=True, type=click.Path(path_type=Path),
              help="YAML budgets file (max_size, max_latency_p50_ms, max_latency_p90_ms, "
                   "max_latency_p99_ms, max_peak_memory, max_accuracy_drop).")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Also write JUnit XML to PATH: one test case per budget per result, for "
                   "CI test reports.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), metavar="PATH",
              help="Also write a Markdown summary to PATH. With $GITHUB_STEP_SUMMARY set "
                   "(GitHub Actions), the summary is appended there too.")
@json_option
def check(report, budgets_path, junit_path, markdown_path, as_json):
    """Check REPORT against budgets; exit 1 when any budget is exceeded.

    \b
    Budgets file, global or narrowed to targets / recipes (fnmatch):
      budgets:
        - max_size: 2MB            # units: B, KB, MB, KiB, MiB
          max_accuracy_drop: 1.0   # points of the report's metric (top-1 %)
        - target: executorch-*
          max_latency_p50_ms: 5
    A budget whose figure was not measured fails. The results are written back into
    REPORT's "budgets" list. --junit and --markdown files are written even when a budget
    fails (the exit code is still 1).
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

    data = load_report(report)
    rows = check_budgets(data, load_budgets(budgets_path))
    if not rows:
        raise BadInput(f"budgets '{budgets_path}': no budget applies to any result in "
                       f"'{report}' (check the target / recipe patterns)")
    data["budgets"] = rows
    save_report(report, data)
    failed = [r for r in rows if not r["passed"]]
    if junit_path is not None:
        from edgeq.report.junit import write_junit

        write_junit(junit_path, data, rows)
    if markdown_path is not None or summary is not None:
        from edgeq.report.markdown import append_step_summary, markdown_summary, write_markdown

        text = markdown_summary(data, rows)
        if markdown_path is not None:
            write_markdown(markdown_path, text)
        if summary is not None:
            append_step_summary(summary, text)
    if as_json:
        from edgeq.cli.output import emit_json

        emit_json({"passed": not failed, "budgets": rows})
    print_table(budgets_table(rows))
    say(f"{len(rows) - len(failed)}/{len(rows)} budgets passed"
        + (f"; {len(failed)} exceeded" if failed else ""))
    if failed:
        raise SystemExit(1)


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
