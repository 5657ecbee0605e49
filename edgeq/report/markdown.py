"""A Markdown summary of a budget check, for a pull request or GitHub's job summary
(``$GITHUB_STEP_SUMMARY``): a one-line verdict, the failures, then every result.
Nothing here imports torch."""
from __future__ import annotations

import os
from pathlib import Path

from edgeq.report.budgets import format_value


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
        return "✅ pass"
    if row.get("value") is None:
        return f"❌ {row.get('reason') or 'not measured'}"
    over = row["value"] - row["limit"]
    pct = f" (+{over / row['limit']:.0%})" if row["limit"] else ""
    return f"❌ exceeded{pct}"


def markdown_summary(report: dict, rows: list[dict]) -> str:
    failed = [r for r in rows if not r["passed"]]
    lines = [f"### {headline(rows)}", ""]
    model = report.get("model") or {}
    about = []
    if model.get("spec"):
        about.append(f"model `{_cell(model['spec'])}`")
    if model.get("sha256"):
        about.append(f"sha256 `{str(model['sha256'])[:12]}`")
    about.append(f"{len(report.get('results') or [])} results")
    if report.get("edgeq_version"):
        about.append(f"edgeq {report['edgeq_version']}")
    lines += [" · ".join(about), ""]

    if failed:
        lines += ["#### Failed budgets", ""]
        lines += _table(
            ["budget", "target", "recipe", "device", "value", "limit", "result"],
            [[r["name"], r.get("target"), r.get("recipe"), r.get("device") or "-",
              format_value(r.get("value"), r["unit"]), format_value(r["limit"], r["unit"]),
              _result_text(r)] for r in failed],
            right={4, 5})
        lines.append("")

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
            verdict = "-"
        elif bad:
            verdict = "❌ " + ", ".join(r["name"] for r in bad)
        else:
            verdict = f"✅ {len(mine)}/{len(mine)}"
        accuracy = "-"
        if acc.get("value") is not None:
            unit = "%" if acc.get("metric") in ("top1", "agreement") else ""
            accuracy = f"{acc.get('metric', '')} {acc['value']:.2f}{unit}".strip()
        p50 = lat.get("p50")
        table.append([cell.get("target"), cell.get("recipe"),
                      _bytes((cell.get("artifact") or {}).get("size_bytes")), accuracy,
                      _num(acc.get("drop")), "-" if p50 is None else f"{p50:.3g} ms", verdict])
    lines += ["#### All results", ""]
    lines += _table(["target", "recipe", "size", "accuracy", "drop", "p50 latency", "budgets"],
                    table, right={2, 3, 4, 5})
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
