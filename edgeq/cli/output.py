"""Output for the CLI: JSON on stdout with --json, human tables on stderr."""
from __future__ import annotations

import json
import sys


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for div, unit in ((2 ** 20, "MiB"), (2 ** 10, "KiB")):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def fmt(v, digits: int = 2, suffix: str = "") -> str:
    return "-" if v is None else f"{v:.{digits}f}{suffix}"


def fmt_ms(v) -> str:
    """Three significant digits: tiny models run in microseconds."""
    return "-" if v is None else f"{v:.3g}"


def _runner(prof: dict, cell: dict) -> str:
    """What timed the artifact ("native", "python", "... (est.)"), or why nothing did."""
    if not prof:
        return "-" if not cell.get("profile_reason") else "not run here"
    est = "" if prof.get("mode", "measured") == "measured" else " (est.)"
    return f"{prof.get('runner') or '-'}{est}"


def results_table(report: dict, title: str = "results"):
    """One row per result: target, recipe, size, accuracy and drop, latency, delegation."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    # A device column when the cells were profiled on more than one device (edgeq run).
    devices = {(r.get("profile") or {}).get("device") for r in report["results"]}
    by_device = len(devices - {None}) > 1
    cols = ("target", "recipe") + (("device",) if by_device else ()) + (
        "size", "accuracy", "drop", "p50 ms", "p90 ms", "runner", "peak mem", "delegated",
        "ops on CPU")
    for col in cols:
        t.add_column(col, justify="left" if col in ("target", "recipe", "device", "runner",
                                                    "ops on CPU") else "right")
    for r in report["results"]:
        dev = ((r.get("profile") or {}).get("device") or "-",) if by_device else ()
        if r.get("error"):
            t.add_row(r.get("target", "?"), r.get("recipe", "?"), *dev, "-", "-", "-", "-",
                      "-", "-", "-", "-", f"[red]failed: {r['error']}[/]")
            continue
        acc = r.get("accuracy") or {}
        prof = r.get("profile") or {}
        lat = prof.get("latency_ms") or {}
        d = r.get("delegation") or {}
        unit = "%" if acc.get("metric") in ("top1", "agreement") else ""
        accs = f"{acc.get('metric', '')} {fmt(acc.get('value'), 2, unit)}" if acc else "-"
        share = d.get("delegated_share")
        cpu_ops = ", ".join(f"{o['op']}×{o['count']}" for o in d.get("fallback_ops", [])) or "-"
        t.add_row(r["target"], r["recipe"], *dev, fmt_bytes(r["artifact"]["size_bytes"]), accs,
                  fmt(acc.get("drop")), fmt_ms(lat.get("p50")), fmt_ms(lat.get("p90")),
                  _runner(prof, r), fmt_bytes(prof.get("peak_memory_bytes")),
                  "-" if share is None else f"{share:.0%}", cpu_ops)
    return t


def budgets_table(rows: list[dict]):
    from rich.markup import escape
    from rich.table import Table

    from edgeq.report.baseline import device_label
    from edgeq.report.budgets import (format_change, format_limit, format_row_value,
                                      format_value, verdict)

    compared = any("measure_unit" in b for b in rows)
    t = Table(title="budgets", title_justify="left")
    for col in ("budget", "target", "recipe", "device", "limit", "value") + (
            ("baseline", "change") if compared else ()) + ("result",):
        t.add_column(col)
    for b in rows:
        res = "[green]pass[/]" if b["passed"] and not b.get("note") else (
            f"[yellow]{escape(verdict(b))}[/]" if b["passed"] else
            f"[red]FAIL[/] {escape(verdict(b))}")
        extra = (format_value(b.get("baseline"), b.get("measure_unit") or b["unit"]),
                 format_change(b)) if compared else ()
        t.add_row(b["name"], str(b.get("target")), str(b.get("recipe")),
                  device_label(b.get("device"), b.get("profile")) or "-", format_limit(b),
                  format_row_value(b), *extra, res)
    return t


def print_table(table) -> None:
    from edgeq.progress import console

    console().print(table)
