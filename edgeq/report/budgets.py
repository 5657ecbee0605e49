"""Budgets: limits on size, latency, memory and accuracy drop, checked against report.json.

A budgets file is YAML: either a mapping of budget keys (applies to every result), or
``budgets:`` holding a list of such mappings, each optionally narrowed with ``target:``,
``recipe:`` or ``device:`` (fnmatch patterns)::

    budgets:
      - max_size: 2MB
        max_accuracy_drop: 1.0      # metric points (top-1 %)
      - target: executorch-*
        recipe: int8*
        max_latency_p50_ms: 5
"""
from __future__ import annotations

import difflib
import fnmatch
import re
from pathlib import Path

from edgeq.errors import BadInput

_SIZE_UNITS = {"b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9,
               "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "k": 10 ** 3, "m": 10 ** 6}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")

# key -> (how to read the limit, where the value sits in a result, unit shown)
BUDGETS = {
    "max_size": ("size", ("artifact", "size_bytes"), "bytes"),
    "max_peak_memory": ("size", ("profile", "peak_memory_bytes"), "bytes"),
    "max_latency_p50_ms": ("number", ("profile", "latency_ms", "p50"), "ms"),
    "max_latency_p90_ms": ("number", ("profile", "latency_ms", "p90"), "ms"),
    "max_latency_p99_ms": ("number", ("profile", "latency_ms", "p99"), "ms"),
    "max_accuracy_drop": ("number", ("accuracy", "drop"), "points"),
}
SELECTORS = ("target", "recipe", "device")


def parse_size(text, where: str) -> int:
    """``2MB`` -> 2000000, ``1.5MiB`` -> 1572864; a bare number is bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "b").lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise BadInput(f"{where}: '{text}' is not a size; write e.g. 500KB, 2MB or 1.5MiB")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_budgets(data, where: str) -> list[dict]:
    """Validate budget entries; each becomes {key, limit, unit, target, recipe, device}."""
    if isinstance(data, dict) and "budgets" in data:
        data = data["budgets"]
    entries = [data] if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise BadInput(f"budgets {where}: expected a mapping of budgets or a 'budgets:' list")
    out = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BadInput(f"budgets {where}: entry {i + 1} is not a mapping")
        sel = {k: entry.get(k) for k in SELECTORS}
        for key, raw in entry.items():
            if key in SELECTORS:
                continue
            if key not in BUDGETS:
                near = difflib.get_close_matches(key, list(BUDGETS) + list(SELECTORS), 1)
                raise BadInput(f"budgets {where}: unknown key '{key}'"
                               + (f" (did you mean '{near[0]}'?)" if near else
                                  f"; valid keys: {', '.join(BUDGETS)}"))
            kind, _, unit = BUDGETS[key]
            if kind == "size":
                limit = parse_size(raw, f"budgets {where}: {key}")
            else:
                try:
                    if isinstance(raw, bool):
                        raise ValueError
                    limit = float(raw)
                except (TypeError, ValueError):
                    raise BadInput(f"budgets {where}: {key} '{raw}' is not a number") from None
            out.append({"key": key, "limit": limit, "unit": unit, **sel})
    return out


def load_budgets(path: Path) -> list[dict]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"budgets file '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise BadInput(f"budgets file '{path}' is not valid YAML: "
                       f"{str(e).splitlines()[0]}") from e
    return parse_budgets(data, f"'{path}'")


def _get(cell: dict, keys: tuple):
    v = cell
    for k in keys:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return v


def _matches(b: dict, cell: dict) -> bool:
    device = (cell.get("profile") or {}).get("device")
    for k, value in (("target", cell.get("target")), ("recipe", cell.get("recipe")),
                     ("device", device)):
        if b[k] is not None and not fnmatch.fnmatchcase(str(value), str(b[k])):
            return False
    return True


def check(report: dict, budgets: list[dict]) -> list[dict]:
    """One row per budget per matching result. A value that was not measured fails the
    budget: a gate must not pass on a figure nobody took."""
    rows = []
    for b in budgets:
        for cell in report["results"]:
            if cell.get("error") or not _matches(b, cell):
                continue
            value = _get(cell, BUDGETS[b["key"]][1])
            row = {"name": b["key"], "target": cell.get("target"), "recipe": cell.get("recipe"),
                   "device": (cell.get("profile") or {}).get("device"), "limit": b["limit"],
                   "value": value, "unit": b["unit"],
                   "passed": value is not None and value <= b["limit"]}
            if value is None:
                row["reason"] = "not measured"
            rows.append(row)
    return rows


def format_value(v, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "bytes":
        for div, u in ((2 ** 20, "MiB"), (2 ** 10, "KiB")):
            if v >= div:
                return f"{v / div:.2f} {u}"
        return f"{int(v)} B"
    return f"{v:.3g} {unit}"
