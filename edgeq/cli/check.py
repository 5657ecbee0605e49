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
@json_option
def check(report, budgets_path, as_json):
    """Check REPORT against budgets; exit 1 when any budget is exceeded.

    \b
    Budgets file, global or narrowed to targets / recipes (fnmatch):
      budgets:
        - max_size: 2MB            # units: B, KB, MB, KiB, MiB
          max_accuracy_drop: 1.0   # points of the report's metric (top-1 %)
        - target: executorch-*
          max_latency_p50_ms: 5
    A budget whose figure was not measured fails. The results are written back into
    REPORT's "budgets" list.
    """
    from edgeq.cli.output import budgets_table, print_table, say
    from edgeq.errors import BadInput
    from edgeq.report.budgets import check as check_budgets, load_budgets
    from edgeq.report.schema import load_report, save_report

    data = load_report(report)
    rows = check_budgets(data, load_budgets(budgets_path))
    if not rows:
        raise BadInput(f"budgets '{budgets_path}': no budget applies to any result in "
                       f"'{report}' (check the target / recipe patterns)")
    data["budgets"] = rows
    save_report(report, data)
    failed = [r for r in rows if not r["passed"]]
    if as_json:
        from edgeq.cli.output import emit_json

        emit_json({"passed": not failed, "budgets": rows})
    print_table(budgets_table(rows))
    say(f"{len(rows) - len(failed)}/{len(rows)} budgets passed"
        + (f"; {len(failed)} exceeded" if failed else ""))
    if failed:
        raise SystemExit(1)
