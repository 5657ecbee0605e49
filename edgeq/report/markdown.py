"""A Markdown summary of a budget check, for a pull request or GitHub's job summary
(``$GITHUB_STEP_SUMMARY``): a one-line verdict, the failures, then every budget and every
result in a collapsed ``<details>``.
Nothing here imports torch."""
from __future__ import annotations

import os
from pathlib import Path

from edgeq.report.baseline import device_label
from edgeq.report.budgets import (format_change, format_limit, format_row_value, format_value,
                                   verdict)


# GitHub refuses pull-request comments over 65,536 characters: past this, the full budgets
# table is left out of the <details> (the failures and the results table stay).
MAX_CHARS = 60_000


def _cell(text) -> str:
    """Text safe inside a Markdown table cell (pipes and newlines would break the row)."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list], right: set[int] = frozenset()) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out


def _bytes(n) -> str:
    return format_value(n, "bytes")


def _num(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _key(target, recipe, device) -> tuple:
    return (target, recipe, device)


def _cell_key(cell: dict) -> tuple:
    return _key(cell.get("target"), cell.get("recipe"), (cell.get("profile") or {}).get("device"))


def headline(rows: list[dict]) -> str:
    total = len(rows)
    failed = [r for r in rows if not r["passed"]]
    if not failed:
        return f"✅ {total}/{total} budgets passed"
    unmeasured = sum(1 for r in failed if r.get("value") is None)
    exceeded = len(failed) - unmeasured
    if not unmeasured:
        return f"❌ {exceeded} of {total} budgets exceeded"
    if not exceeded:
        return f"❌ {unmeasured} of {total} budgets not measured"
    return (f"❌ {len(failed)} of {total} budgets failed "
            f"({exceeded} exceeded, {unmeasured} not measured)")


def _result_text(row: dict) -> str:
    if row["passed"]:
        return f"🆕 {row['note']}" if row.get("note") else "✅ pass"
    if row.get("value") is None:
        return f"❌ {row.get('reason') or 'not measured'}"
    word = verdict(row)
    if row["unit"] not in ("bytes", "ms", "mJ", "ratio") or not row["limit"]:
        return f"❌ {word}"
    return f"❌ {word} ({(row['value'] - row['limit']) / abs(row['limit']):+.0%})"


def _budget_rows(rows: list[dict], compared: bool) -> list[str]:
    header = ["budget", "target", "recipe", "device", "value", "limit"]
    if compared:
        header += ["baseline", "change"]
    body = []
    for r in rows:
        line = [r["name"], r.get("target"), r.get("recipe"),
                device_label(r.get("device"), r.get("profile")) or "-",
                format_row_value(r), format_limit(r)]
        if compared:
            line += [format_value(r.get("baseline"), r.get("measure_unit") or r["unit"]),
                     format_change(r)]
        body.append(line + [_result_text(r)])
    return _table(header + ["result"], body, right={4, 5, 6, 7} if compared else {4, 5})


def _about(report: dict, comparison: dict | None) -> str:
    model = report.get("model") or {}
    about = []
    if model.get("spec"):
        about.append(f"model `{_cell(model.get('name') or model['spec'])}`")
    if model.get("sha256"):
        about.append(f"sha256 `{str(model['sha256'])[:12]}`")
    about.append(f"{len(report.get('results') or [])} results")
    if comparison:
        if comparison.get("missing"):
            about.append(f"⚠️ no baseline (`{_cell(comparison['path'])}` not found): "
                         "relative budgets not compared")
        else:
            text = f"baseline `{_cell(comparison['path'])}`"
            old, new = comparison.get("sha256"), model.get("sha256")
            if old and new and old != new:
                text += f" (model changed: `{str(old)[:12]}` → `{str(new)[:12]}`)"
            about.append(text)
    if report.get("edgeq_version"):
        about.append(f"edgeq {report['edgeq_version']}")
    return " · ".join(about)


def _results_table(report: dict, rows: list[dict]) -> list[str]:
    by_cell: dict[tuple, list[dict]] = {}
    for r in rows:
        by_cell.setdefault(_key(r.get("target"), r.get("recipe"), r.get("device")), []).append(r)
    table = []
    for cell in report.get("results") or []:
        if cell.get("error"):
            table.append([cell.get("target", "?"), cell.get("recipe", "?"), "-", "-", "-", "-",
                          f"⚠️ failed: {cell['error']}"])
            continue
        acc = cell.get("accuracy") or {}
        lat = (cell.get("profile") or {}).get("latency_ms") or {}
        mine = by_cell.get(_cell_key(cell), [])
        bad = [r for r in mine if not r["passed"]]
        if not mine:
            verdict_text = "-"
        elif bad:
            verdict_text = "❌ " + ", ".join(r["name"] for r in bad)
        else:
            verdict_text = f"✅ {len(mine)}/{len(mine)}"
        if any(r.get("new_cell") for r in mine):
            verdict_text += " · 🆕 no baseline"
        accuracy = "-"
        if acc.get("value") is not None:
            unit = "%" if acc.get("metric") in ("top1", "agreement") else ""
            accuracy = f"{acc.get('metric', '')} {acc['value']:.2f}{unit}".strip()
        p50 = lat.get("p50")
        table.append([cell.get("target"), cell.get("recipe"),
                      _bytes((cell.get("artifact") or {}).get("size_bytes")), accuracy,
                      _num(acc.get("drop")), "-" if p50 is None else f"{p50:.3g} ms",
                      verdict_text])
    return _table(["target", "recipe", "size", "accuracy", "drop", "p50 latency", "budgets"],
                  table, right={2, 3, 4, 5})


def markdown_summary(report: dict, rows: list[dict], comparison: dict | None = None) -> str:
    """A summary read in five seconds: the verdict, then only the failures (with the
    baseline and the change when compared), new and gone cells, then everything inside a
    collapsed ``<details>``. ``comparison``: {"path", "sha256", "gone", "missing"} from
    ``edgeq check --baseline``."""
    compared = bool(comparison) and not comparison.get("missing")
    failed = [r for r in rows if not r["passed"]]
    lines = [f"### {headline(rows)}", "", _about(report, comparison), ""]
    if failed:
        lines += ["#### Failed budgets", "", *_budget_rows(failed, compared), ""]
    new = list(dict.fromkeys((r.get("target"), r.get("recipe"),
                              device_label(r.get("device"), r.get("profile")))
                             for r in rows if r.get("new_cell")))
    if new and compared:
        names = ", ".join(f"{t} / {rc}" + (f" on {d}" if d else "") for t, rc, d in new)
        lines += [f"🆕 {len(new)} new cell{'s' * (len(new) != 1)} without a baseline "
                  f"(relative budgets pass): {_cell(names)}", ""]
    gone = (comparison or {}).get("gone") or []
    if gone:
        lines += [f"🗑️ {len(gone)} baseline cell{'s' * (len(gone) != 1)} not in this report: "
                  f"{_cell(', '.join(gone))}", ""]
    passed = len(rows) - len(failed)
    every = ["#### All budgets", "", *_budget_rows(rows, compared), ""]
    results = ["#### All results", "", *_results_table(report, rows), ""]
    if sum(len(x) + 1 for x in lines + every + results) > MAX_CHARS:
        every = [f"({len(rows)} budget rows left out to stay under GitHub's comment size; "
                 "the JUnit file and report.json have them all)", ""]
    lines += [f"<details><summary>All {len(rows)} budgets ({passed} passed) and "
              f"{len(report.get('results') or [])} results</summary>", "",
              *every, *results, "</details>"]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, text: str) -> None:
    from edgeq.artifacts import atomic_write

    atomic_write(Path(path), text.encode("utf-8"))


def step_summary_path() -> Path | None:
    """``$GITHUB_STEP_SUMMARY`` when set (GitHub Actions), else None."""
    value = os.environ.get("GITHUB_STEP_SUMMARY", "").strip()
    return Path(value) if value else None


def append_step_summary(path: Path, text: str) -> None:
    """Append, never replace: other steps of the job write to the same file."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if f.tell() else "") + text)
