"""edgeq report: one self-contained HTML page (plots inlined) from a report.json."""
from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.options import json_option


@click.command()
@click.argument("report", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              metavar="OUT.html", help="The HTML file to write (its folder must exist).")
@click.option("--title", help="Page title (default: 'edgeq report: <model>').")
@json_option
def report(report, out, title, as_json):
    """Render REPORT (report.json) as one HTML page: model, budgets, the result table,
    size and latency against accuracy drop with the Pareto frontier, latency
    distributions, thermal traces and per-layer sensitivity when present.

    \b
    The page loads nothing from the network (plots are inline SVG, no scripts): attach
    it to a CI run or open it offline. Cells that cannot be plotted are listed under
    each plot with the reason.
    """
    from edgeq.cli.check import _check_writable
    from edgeq.cli.output import say
    from edgeq.report.html import write_html
    from edgeq.report.schema import load_report

    _check_writable(out, "-o")
    data = load_report(report)
    plots = write_html(out, data, title)
    drawn = [p for p in plots if "omitted" not in p]
    if as_json:
        from edgeq.cli.output import emit_json

        emit_json({"html": str(out), "plots": plots})
    size = out.stat().st_size
    say(f"wrote {out} ({size / 1024:.0f} KiB, {len(drawn)} plot(s): "
        f"{', '.join(p['id'] for p in drawn) or 'none'})")
    for p in plots:
        if "omitted" in p:
            say(f"  {p['id']}: not drawn ({p['omitted']})")
