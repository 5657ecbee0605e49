"""edgeq targets / edgeq doctor: what is available and what is missing."""
from __future__ import annotations

import click

from edgeq.cli.options import json_option


def _installed(pkg: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(pkg) is not None


@click.command()
@json_option
def targets(as_json):
    """List the deployable targets: format, delegate, and whether this machine has what
    each needs to build and run it."""
    from rich.table import Table

    from edgeq.cli.output import emit_json, print_table
    from edgeq.targets import all_targets

    rows = []
    for t in all_targets().values():
        missing = [p for p in t.needs if not _installed(p)]
        rows.append({"name": t.name, "runtime": t.runtime, "format": t.format,
                     "delegate": t.delegate, "description": t.description,
                     "ready": not missing, "missing": missing})
    if as_json:
        emit_json(rows)
    table = Table(title="targets", title_justify="left")
    for col in ("target", "format", "delegate", "ready", "description"):
        table.add_column(col)
    for r in rows:
        ready = "yes" if r["ready"] else f"no: pip install {' '.join(r['missing'])}"
        table.add_row(r["name"], "." + r["format"], r["delegate"], ready, r["description"])
    print_table(table)


@click.command()
@json_option
def doctor(as_json):
    """Check what is installed and what is missing, with the fix for each."""
    import platform

    from rich.table import Table

    from edgeq.cli.output import emit_json, print_table
    from edgeq.runtimes import get_runtime
    from edgeq.targets import all_targets

    rows = [("python", True, platform.python_version())]
    for name in dict.fromkeys(t.runtime for t in all_targets().values()):
        rows += get_runtime(name).check()
    from edgeq.profiling.runners import doctor_rows

    rows += doctor_rows()
    seen, unique = set(), []
    for r in rows:
        if r[0] not in seen:
            seen.add(r[0])
            unique.append(r)
    if as_json:
        emit_json([{"component": c, "ok": ok, "detail": d} for c, ok, d in unique])
    table = Table(title="edgeq doctor", title_justify="left")
    for col in ("component", "status", "detail / fix"):
        table.add_column(col)
    for c, ok, d in unique:
        table.add_row(c, "[green]ok[/]" if ok else "[red]missing[/]", d)
    print_table(table)
