"""JUnit XML for budget results: one test case per budget per result cell, so a CI system
(GitLab, Jenkins, Azure, GitHub test reporters) lists each budget as its own test.

The layout follows the common JUnit schema CI systems read: a bare ``<testsuites>`` holding one
``<testsuite>`` (name, tests, failures, errors, skipped, time, timestamp, hostname, id,
package), its ``<properties>``, the ``<testcase>`` elements (classname, name, time), each
failing one with a ``<failure message= type=>``, each budget that could not be compared with
a baseline with ``<skipped message=>``, then ``<system-out>`` (a line per test case: value,
limit, baseline and change, and the baseline cells that are gone) and ``<system-err>``. It
validates against both the Windy Road ``JUnit.xsd`` and Jenkins' ``junit-10.xsd``
(tests/report/data). Nothing here imports torch."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

from edgeq.report.budgets import (format_change, format_limit, format_row_value, format_value,
                                   verdict)

SUITE_NAME = "edgeq budgets"


def classname(row: dict) -> str:
    """``edgeq.<target>.<recipe>[.<device>]``."""
    parts = ["edgeq", str(row.get("target")), str(row.get("recipe"))]
    if row.get("device"):
        parts.append(str(row["device"]))
    return ".".join(parts)


def case_name(row: dict) -> str:
    """``max_size <= 976.56 KiB``, ``min_sustained_over_peak >= 0.8``."""
    return f"{row['name']} {format_limit(row)}"


def failure_message(row: dict) -> str:
    if row.get("value") is None:
        return row.get("reason") or "not measured"
    word = "is below" if row.get("direction") == "min" else "exceeds"
    text = (f"value {format_row_value(row)} {word} limit "
            f"{format_value(row['limit'], row['unit'])}")
    if row.get("baseline") is not None and "measure_unit" in row:
        mu = row["measure_unit"]
        text += (f" (baseline {format_value(row['baseline'], mu)}, now "
                 f"{format_value(row.get('current'), mu)})")
    return text


def _details(row: dict) -> str:
    lines = [f"budget: {row['name']}", f"target: {row.get('target')}",
             f"recipe: {row.get('recipe')}"]
    if row.get("device"):
        lines.append(f"device: {row['device']}")
    lines += [f"limit: {format_limit(row)}",
              f"value: {'not measured' if row.get('value') is None else row['value']}"
              + ("" if row.get("value") is None else f" {row['unit']}")]
    if row.get("reason"):
        lines.append(f"reason: {row['reason']}")
    if "measure_unit" in row:
        mu = row["measure_unit"]
        lines += [f"baseline: {format_value(row.get('baseline'), mu)}",
                  f"current: {format_value(row.get('current'), mu)}",
                  f"change: {format_change(row)}"]
    return "\n".join(lines)


def _summary_line(row: dict) -> str:
    """One line of the suite's system-out per test case, passed or not: what CI shows when
    a reader opens the suite's output."""
    text = f"{classname(row)} {case_name(row)}: value {format_row_value(row)} -> {verdict(row)}"
    if "measure_unit" in row:
        text += (f" (baseline {format_value(row.get('baseline'), row['measure_unit'])}, "
                 f"change {format_change(row)})")
    return text


def junit_xml(report: dict, rows: list[dict], comparison: dict | None = None) -> bytes:
    """The JUnit XML document (UTF-8 bytes, with declaration) for budget ``rows``.

    A budget that could not be compared (a new cell, no baseline figure) passes and is
    written as a skipped test case with the reason. ``comparison`` (from
    ``edgeq check --baseline``): {"path", "sha256", "gone": [cell descriptions], ...}."""
    failures = sum(1 for r in rows if not r["passed"])
    skipped = sum(1 for r in rows if r["passed"] and r.get("note"))
    created = report.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # The schema's timestamp is an ISO 8601 date-time without a time zone (UTC here).
    timestamp = str(created).rstrip("Z")[:19]
    counts = {"tests": str(len(rows)), "failures": str(failures), "errors": "0",
              "skipped": str(skipped), "time": "0"}
    # <testsuites> carries no attributes in the windyroad / Jenkins schemas: the counts
    # live on the one <testsuite>.
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", {
        "name": SUITE_NAME, **counts, "timestamp": timestamp, "hostname": "localhost",
        "id": "0", "package": "edgeq"})
    props = ET.SubElement(suite, "properties")
    model = report.get("model") or {}
    for key, value in (("edgeq.version", report.get("edgeq_version")),
                       ("model.spec", model.get("spec")),
                       ("model.sha256", model.get("sha256")),
                       ("model.params", model.get("params"))):
        if value is not None:
            ET.SubElement(props, "property", {"name": key, "value": str(value)})
    comparison = comparison or {}
    for key in ("path", "sha256", "missing"):
        if comparison.get(key) is not None:
            ET.SubElement(props, "property", {"name": f"baseline.{key}",
                                              "value": str(comparison[key])})
    for row in rows:
        case = ET.SubElement(suite, "testcase", {"classname": classname(row),
                                                 "name": case_name(row), "time": "0"})
        if row["passed"] and row.get("note"):
            ET.SubElement(case, "skipped", {"message": row["note"]})
        elif not row["passed"]:
            failure = ET.SubElement(case, "failure", {
                "message": failure_message(row),
                "type": "NotMeasured" if row.get("value") is None else "BudgetExceeded"})
            failure.text = _details(row)
    out = [_summary_line(r) for r in rows]
    out += [f"baseline cell gone (not in this report): {g}" for g in comparison.get("gone", [])]
    ET.SubElement(suite, "system-out").text = "\n".join(out) + "\n" if out else None
    ET.SubElement(suite, "system-err")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: Path, report: dict, rows: list[dict],
                comparison: dict | None = None) -> None:
    from edgeq.artifacts import atomic_write

    atomic_write(Path(path), junit_xml(report, rows, comparison))
