"""JUnit XML for budget results: one test case per budget per result cell, so a CI system
(GitLab, Jenkins, Azure, GitHub test reporters) lists each budget as its own test.

The layout follows the common JUnit schema CI systems read: a bare ``<testsuites>`` holding one
``<testsuite>`` (name, tests, failures, errors, skipped, time, timestamp, hostname, id,
package), its ``<properties>``, the ``<testcase>`` elements (classname, name, time), each
failing one with a ``<failure message= type=>``, then ``<system-out>`` / ``<system-err>``.
Nothing here imports torch."""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

from edgeq.report.budgets import format_value

SUITE_NAME = "edgeq budgets"


def classname(row: dict) -> str:
    """``edgeq.<target>.<recipe>[.<device>]``."""
    parts = ["edgeq", str(row.get("target")), str(row.get("recipe"))]
    if row.get("device"):
        parts.append(str(row["device"]))
    return ".".join(parts)


def case_name(row: dict) -> str:
    return f"{row['name']} <= {format_value(row['limit'], row['unit'])}"


def failure_message(row: dict) -> str:
    if row.get("value") is None:
        return row.get("reason") or "not measured"
    return (f"value {format_value(row['value'], row['unit'])} exceeds limit "
            f"{format_value(row['limit'], row['unit'])}")


def _details(row: dict) -> str:
    lines = [f"budget: {row['name']}", f"target: {row.get('target')}",
             f"recipe: {row.get('recipe')}"]
    if row.get("device"):
        lines.append(f"device: {row['device']}")
    lines += [f"limit: {row['limit']} {row['unit']}",
              f"value: {'not measured' if row.get('value') is None else row['value']}"
              + ("" if row.get("value") is None else f" {row['unit']}")]
    return "\n".join(lines)


def junit_xml(report: dict, rows: list[dict]) -> bytes:
    """The JUnit XML document (UTF-8 bytes, with declaration) for budget ``rows``."""
    failures = sum(1 for r in rows if not r["passed"])
    created = report.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # The schema's timestamp is an ISO 8601 date-time without a time zone (UTC here).
    timestamp = str(created).rstrip("Z")[:19]
    counts = {"tests": str(len(rows)), "failures": str(failures), "errors": "0",
              "skipped": "0", "time": "0"}
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
    for row in rows:
        case = ET.SubElement(suite, "testcase", {"classname": classname(row),
                                                 "name": case_name(row), "time": "0"})
        if not row["passed"]:
            failure = ET.SubElement(case, "failure", {
                "message": failure_message(row),
                "type": "NotMeasured" if row.get("value") is None else "BudgetExceeded"})
            failure.text = _details(row)
    ET.SubElement(suite, "system-out")
    ET.SubElement(suite, "system-err")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(path: Path, report: dict, rows: list[dict]) -> None:
    from edgeq.artifacts import atomic_write

    atomic_write(Path(path), junit_xml(report, rows))
