"""Budgets: limits on size, latency, memory, energy, sustained speed and accuracy, checked
against report.json -- absolute, or relative to a baseline report (``edgeq.report.baseline``).

A budgets file is YAML: either a mapping of budget keys (applies to every result), or
``budgets:`` holding a list of such mappings, each optionally narrowed with ``target:``,
``recipe:`` or ``device:`` (fnmatch patterns, or a list of them; ``device:`` matches the
profile's device, e.g. ``local`` or ``adb:SERIAL``, and its device profile name, e.g.
``pixel-8``)::

    budgets:
      - max_size: 2MB
        max_accuracy_drop: 1.0        # metric points (top-1 %)
        max_size_growth_pct: 10       # against --baseline: at most 10% bigger
      - target: executorch-*
        device: pixel-*
        max_latency_p50_ms: 5         # also 5ms, 0.005s, 5000us
        min_sustained_over_peak: 0.8  # or 80%

Nothing here imports torch.
"""
from __future__ import annotations

import difflib
import fnmatch
import math
import re
from pathlib import Path
from typing import NamedTuple

from edgeq.errors import BadInput


class Budget(NamedTuple):
    """What a budget key means. ``kind`` says how its limit is written; ``path`` is where the
    figure sits in a result cell; ``unit`` is the unit of the compared value (and limit);
    ``direction`` "max" passes when value <= limit, "min" when value >= limit; ``relative``
    budgets compare the figure with the same cell of a baseline report."""

    kind: str
    path: tuple
    unit: str
    direction: str = "max"
    relative: bool = False


_LATENCY = {q: ("profile", "latency_ms", q) for q in ("p50", "p90", "p99")}
_SIZE = ("artifact", "size_bytes")
_MEMORY = ("profile", "peak_memory_bytes")
_ENERGY = ("profile", "energy_mj_per_inference")

ABSOLUTE = {
    "max_size": Budget("size", _SIZE, "bytes"),
    "max_peak_memory": Budget("size", _MEMORY, "bytes"),
    **{f"max_latency_{q}_ms": Budget("ms", p, "ms") for q, p in _LATENCY.items()},
    "max_accuracy_drop": Budget("points", ("accuracy", "drop"), "points"),
    "max_energy_mj": Budget("mJ", _ENERGY, "mJ"),
    "min_sustained_over_peak": Budget("ratio", ("profile", "thermal", "sustained_over_peak"),
                                      "ratio", "min"),
}
# Growth in % of the baseline's figure; extra accuracy drop in points of the metric,
# baseline value - current value (a retrained model 2 points worse counts as much as a
# worse quantization).
RELATIVE = {
    "max_size_growth_pct": Budget("pct", _SIZE, "%", relative=True),
    "max_peak_memory_growth_pct": Budget("pct", _MEMORY, "%", relative=True),
    **{f"max_latency_{q}_growth_pct": Budget("pct", p, "%", relative=True)
       for q, p in _LATENCY.items()},
    "max_energy_growth_pct": Budget("pct", _ENERGY, "%", relative=True),
    "max_extra_accuracy_drop": Budget("points", ("accuracy", "value"), "points",
                                      relative=True),
}
BUDGETS = {**ABSOLUTE, **RELATIVE}
SELECTORS = ("target", "recipe", "device")
# The unit of the figure a budget reads (a relative budget's value is a % of it).
MEASURE_UNITS = {_SIZE: "bytes", _MEMORY: "bytes", _ENERGY: "mJ", ("accuracy", "value"): "points",
                 ("accuracy", "drop"): "points", **{p: "ms" for p in _LATENCY.values()},
                 ("profile", "thermal", "sustained_over_peak"): "ratio"}

_NUMBER = re.compile(r"^\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*"
                     r"([A-Za-zµ%]*)\s*$")
_SIZE_UNITS = {"b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9,
               "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "k": 10 ** 3, "m": 10 ** 6}
# kind -> (units, case sensitive?, what to write instead of a bad value)
_UNITS = {
    "ms": ({"": 1.0, "ms": 1.0, "s": 1e3, "us": 1e-3, "µs": 1e-3}, False,
           "is not a time; write milliseconds, e.g. 5, 5ms or 0.005s"),
    "mJ": ({"": 1.0, "mJ": 1.0, "mj": 1.0, "J": 1e3, "j": 1e3, "uJ": 1e-3, "µJ": 1e-3}, True,
           "is not an energy; write millijoules per inference, e.g. 2.5, 2.5mJ or 0.0025J"),
    "ratio": ({"": 1.0, "%": 0.01}, False,
              "is not a ratio; write sustained / peak throughput, e.g. 0.8 or 80%"),
    "points": ({"": 1.0, "points": 1.0, "point": 1.0, "pt": 1.0, "pts": 1.0, "pp": 1.0}, False,
               "is not a number of points; write e.g. 1.0 (points of the report's metric, "
               "top-1 %)"),
    "pct": ({"": 1.0, "%": 1.0}, False, "is not a percentage; write e.g. 10 or 10%"),
}


def parse_size(text, where: str) -> int:
    """``2MB`` -> 2000000, ``1.5MiB`` -> 1572864; a bare number is bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool) and text >= 0 \
            and math.isfinite(text):
        return int(text)
    m = _NUMBER.match(str(text)) if not isinstance(text, bool) else None
    unit = (m.group(2) or "b").lower() if m else ""
    if not m or unit not in _SIZE_UNITS or float(m.group(1)) < 0:
        hint = ""
        if m and unit.rstrip("s") in _SIZE_UNITS and float(m.group(1)) >= 0:
            hint = f" (did you mean '{m.group(1)}{m.group(2)[:-1]}'?)"
        raise BadInput(f"{where}: '{text}' is not a size; write e.g. 500KB, 2MB or 1.5MiB"
                       + hint)
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_quantity(text, kind: str, where: str) -> float:
    """A limit of ``kind`` (ms, mJ, ratio, points, pct) in that kind's unit: a bare number,
    or a number with a unit that is converted (``0.5s`` -> 500 ms, ``80%`` -> 0.8)."""
    units, case, hint = _UNITS[kind]
    m = None if isinstance(text, bool) else _NUMBER.match(str(text))
    unit = (m.group(2) if case else m.group(2).lower()) if m else None
    if not m or unit not in units or not math.isfinite(float(m.group(1))):
        raise BadInput(f"{where}: '{text}' {hint}")
    value = float(m.group(1)) * units[unit]
    if kind == "ratio" and not 0 < value <= 1:
        raise BadInput(f"{where}: '{text}' is not a ratio between 0 and 1; write e.g. 0.8 "
                       "or 80%")
    return value


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
        for k, v in sel.items():
            if v is not None and not isinstance(v, str) and not (
                    isinstance(v, list) and v and all(isinstance(p, str) for p in v)):
                raise BadInput(f"budgets {where}: {k} '{v}' must be a pattern such as "
                               "'executorch-*' or a list of patterns")
        for key, raw in entry.items():
            if key in SELECTORS:
                continue
            if key not in BUDGETS:
                near = difflib.get_close_matches(str(key), list(BUDGETS) + list(SELECTORS), 1)
                raise BadInput(f"budgets {where}: unknown key '{key}'"
                               + (f" (did you mean '{near[0]}'?)" if near else
                                  f"; valid keys: {', '.join(BUDGETS)}"))
            spec = BUDGETS[key]
            if spec.kind == "size":
                limit = parse_size(raw, f"budgets {where}: {key}")
            else:
                limit = parse_quantity(raw, spec.kind, f"budgets {where}: {key}")
            out.append({"key": key, "limit": limit, "unit": spec.unit, **sel})
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


def figure(cell: dict | None, keys: tuple):
    """The number at ``keys`` in a result cell, or None."""
    v = cell
    for k in keys:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def figure_reason(cell: dict | None, keys: tuple) -> str:
    """Why a figure is missing: the ``<name>_reason`` beside it (or beside a missing
    block), else "not measured"."""
    v = cell
    for k in keys:
        if not isinstance(v, dict):
            break
        why = v.get(f"{k}_reason") or (v.get("spread_reason") if k in ("p90", "p99") else None)
        if v.get(k) is None:
            return f"not measured: {why}" if why else "not measured"
        v = v.get(k)
    return "not measured"


def device_names(cell: dict) -> list[str]:
    """Names a ``device:`` selector matches: the profile's device (``local``, ``adb:SERIAL``,
    a profile name when estimated), its device profile (``host``, ``pixel-8``) and any name
    the pipeline gave it."""
    prof = cell.get("profile") or {}
    names = [prof.get(k) for k in ("device", "profile", "name")] + [cell.get("device")]
    return [str(n) for n in dict.fromkeys(names) if n]


def _matches(b: dict, cell: dict) -> bool:
    for k, values in (("target", [cell.get("target")]), ("recipe", [cell.get("recipe")]),
                      ("device", device_names(cell))):
        if b[k] is None:
            continue
        patterns = b[k] if isinstance(b[k], list) else [b[k]]
        if not any(fnmatch.fnmatchcase(str(v), str(p)) for v in values for p in patterns):
            return False
    return True


def _passes(value: float, limit: float, direction: str) -> bool:
    return value >= limit if direction == "min" else value <= limit


def check(report: dict, budgets: list[dict], baseline: dict | None = None) -> list[dict]:
    """One row per budget per matching result: {name, target, recipe, device, profile, limit,
    value, unit, passed, [reason], [baseline, current, delta, measure_unit, note]}.

    A value that was not measured fails the budget: a gate must not pass on a figure nobody
    took. Relative budgets need ``baseline`` (a loaded report, see
    ``edgeq.report.baseline.load_baseline``); they compare a cell with the baseline's cell of
    the same target, recipe and device. A cell the baseline lacks, or whose baseline figure
    was not measured, passes with a ``note`` saying so."""
    from edgeq.report.baseline import counterparts, relative_row

    relative = sorted({b["key"] for b in budgets if BUDGETS[b["key"]].relative})
    if relative and baseline is None:
        raise BadInput(f"budgets: key '{relative[0]}' needs --baseline (a report.json of the "
                       "main branch to compare with)")
    cells = [c for c in report["results"] if not c.get("error")]
    pairs = counterparts(cells, baseline) if baseline is not None else {}
    rows = []
    for b in budgets:
        spec = BUDGETS[b["key"]]
        for i, cell in enumerate(cells):
            if not _matches(b, cell):
                continue
            prof = cell.get("profile") or {}
            row = {"name": b["key"], "target": cell.get("target"), "recipe": cell.get("recipe"),
                   "device": prof.get("device"), "profile": prof.get("profile"),
                   "limit": b["limit"], "value": None, "unit": b["unit"],
                   "direction": spec.direction, "passed": False}
            if spec.relative:
                row.update(relative_row(spec, cell, pairs.get(i), b["limit"]))
            else:
                value = row["value"] = figure(cell, spec.path)
                if value is None:
                    row["reason"] = figure_reason(cell, spec.path)
                else:
                    row["passed"] = _passes(value, b["limit"], spec.direction)
                if baseline is not None:
                    row.update(relative_row(spec, cell, pairs.get(i)))
            rows.append(row)
    return rows


def format_value(v, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "bytes":
        for div, u in ((2 ** 20, "MiB"), (2 ** 10, "KiB")):
            if abs(v) >= div:
                return f"{v / div:.2f} {u}"
        return f"{int(v)} B"
    if unit == "%":
        return f"{v:.3g}%"
    if unit == "ratio":
        return f"{v:.3g}"
    return f"{v:.3g} {unit}"


def format_row_value(row: dict) -> str:
    """A row's value; a growth in % carries its sign (``+30%``, ``-4%``)."""
    v = row.get("value")
    return ("+" if row["unit"] == "%" and v is not None and v > 0 else "") + \
        format_value(v, row["unit"])


def format_limit(row: dict) -> str:
    """``<= 5 ms``, ``>= 0.8``, ``<= 10%``."""
    op = ">=" if row.get("direction") == "min" else "<="
    return f"{op} {format_value(row['limit'], row['unit'])}"


def format_change(row: dict) -> str:
    """The change against the baseline: ``+300 KiB (+30%)``, ``-2 points``; "-" if none."""
    base, delta = row.get("baseline"), row.get("delta")
    if base is None or delta is None:
        return "-"
    unit = row.get("measure_unit") or row["unit"]
    sign = "+" if delta > 0 else ""
    text = sign + format_value(delta, unit)
    if unit != "points" and base:
        text += f" ({delta / abs(base):+.0%})"
    return text


def verdict(row: dict) -> str:
    """One word or phrase for a row: pass, new cell: no baseline, exceeded, below, or why
    it was not measured."""
    if row["passed"]:
        return row.get("note") or "pass"
    if row.get("value") is None:
        return row.get("reason") or "not measured"
    return "below" if row.get("direction") == "min" else "exceeded"
