"""A baseline report (``edgeq check --baseline main-report.json``): load it, check it is a
report of the same model, and pair its cells with the current report's, like with like.

Which model counts as "the same": a pull request changes the model's weights or code, so the
model's sha256 differing from the baseline's is the normal case -- it is exactly what the
relative budgets are there to judge. What must not differ is *which* model it is: the model's
``name`` when the report has one, else its spec with folders dropped (``model.py:build`` in
a CI checkout under ``/home/runner/work/...`` is the same spec as ``./model.py:build``; a
built-in name or ``package.module:factory`` is compared as written). A baseline of another
model is refused (exit 2): its numbers say nothing about this one. A report that records no
model is accepted and the check says the model could not be compared.

Cells are paired on target, recipe and device (the profile's device, device profile and
pipeline name): a latency measured on the host is never compared with one estimated for a
phone. A cell without a counterpart is new; a baseline cell without one is gone; both are
shown, never dropped. Nothing here imports torch.
"""
from __future__ import annotations

import math
from pathlib import Path

from edgeq.errors import BadInput
from edgeq.report.budgets import MEASURE_UNITS, Budget, figure, figure_reason

NEW_CELL = "new cell: no baseline"


def model_identity(report: dict) -> str | None:
    """The model's name, or its spec without folders; None when the report has neither."""
    model = report.get("model") or {}
    if model.get("name"):
        return str(model["name"])
    spec = model.get("spec")
    if not spec:
        return None
    spec = str(spec)
    left, sep, factory = spec.rpartition(":")
    if sep and left.endswith(".py"):
        return f"{Path(left).name}:{factory}"
    if Path(spec).suffix in (".pt2", ".pt", ".pth", ".ckpt", ".onnx", ".tflite", ".pte"):
        return Path(spec).name
    return spec


def load_baseline(path: Path, report: dict) -> dict:
    """Load the baseline report at ``path`` and check it can be compared with ``report``:
    readable, the same schema version, the same model. Raises BadInput naming the file."""
    from edgeq.report.schema import SCHEMA_VERSION, load_report

    path = Path(path)
    try:
        base = load_report(path)
    except BadInput as e:
        raise BadInput(f"--baseline: {e}") from None
    mine = report.get("schema_version", SCHEMA_VERSION)
    theirs = base.get("schema_version", SCHEMA_VERSION)
    if mine != theirs:
        raise BadInput(f"--baseline '{path}' has schema_version {theirs}, the report has "
                       f"{mine}: regenerate the baseline with this edgeq")
    a, b = model_identity(base), model_identity(report)
    if a is not None and b is not None and a != b:
        raise BadInput(f"--baseline '{path}' is a report of model '{a}', this report is of "
                       f"'{b}': give a baseline of the same model (e.g. the report of the "
                       "main branch's run of the same pipeline)")
    return base


def cell_key(cell: dict) -> tuple:
    """Like with like: target, recipe, and where it was profiled."""
    prof = cell.get("profile") or {}
    return (cell.get("target"), cell.get("recipe"), prof.get("device"), prof.get("profile"),
            prof.get("name"))


def match(cells: list[dict], baseline: dict) -> tuple[dict[int, dict], list[dict]]:
    """({index in ``cells``: its baseline cell}, baseline cells nobody matched). Cells with
    the same key pair in order."""
    pool: dict[tuple, list[dict]] = {}
    for c in baseline.get("results") or []:
        pool.setdefault(cell_key(c), []).append(c)
    pairs = {}
    for i, c in enumerate(cells):
        left = pool.get(cell_key(c))
        if left:
            pairs[i] = left.pop(0)
    left_over = {id(c) for v in pool.values() for c in v}
    gone = [c for c in baseline.get("results") or [] if id(c) in left_over]
    return pairs, gone


def counterparts(cells: list[dict], baseline: dict) -> dict[int, dict]:
    return match(cells, baseline)[0]


def gone_cells(report: dict, baseline: dict) -> list[dict]:
    """Baseline cells with no cell of the same target, recipe and device in ``report``."""
    return match(report.get("results") or [], baseline)[1]


def describe_cell(cell: dict) -> str:
    """``tflite-xnnpack / int8 on local (host)``."""
    prof = cell.get("profile") or {}
    where = device_label(prof.get("device"), prof.get("profile"))
    return f"{cell.get('target')} / {cell.get('recipe')}" + (f" on {where}" if where else "")


def device_label(device, profile) -> str:
    """``local``, ``adb:SERIAL (pixel-8)``; "" when the cell was not profiled."""
    if not device:
        return ""
    return f"{device} ({profile})" if profile and profile not in (device, "host") else device


def relative_row(spec: Budget, cell: dict, base: dict | None,
                 limit: float | None = None) -> dict:
    """The baseline part of a budget row: the baseline figure, the current one and the delta,
    in the figure's unit. With ``limit`` (a relative budget) also value (growth in %, or
    points of accuracy lost), passed, and a note or reason."""
    info_only = limit is None
    unit = MEASURE_UNITS[spec.path]
    current = figure(cell, spec.path)
    if base is None:
        out = {"baseline": None, "current": current, "delta": None, "measure_unit": unit,
               "new_cell": True}
        if not info_only:
            out.update(value=None, passed=True, note=NEW_CELL)
        return out
    before = figure(base, spec.path)
    delta = None if current is None or before is None else round(current - before, 6)
    out = {"baseline": before, "current": current, "delta": delta, "measure_unit": unit}
    if info_only:
        return out
    metrics = [(c.get("accuracy") or {}).get("metric") for c in (base, cell)]
    if current is None:
        return dict(out, value=None, passed=False, reason=figure_reason(cell, spec.path))
    if before is None:
        return dict(out, value=None, passed=True, note="baseline not measured")
    if spec.kind == "points":
        if metrics[0] != metrics[1]:
            return dict(out, value=None, passed=False,
                        reason=f"not comparable: metric {metrics[0]} in the baseline, "
                               f"{metrics[1]} now")
        value = before - current
    elif before == 0:
        value = 0.0 if current <= 0 else math.inf
    else:
        value = (current - before) / abs(before) * 100
    if math.isinf(value):
        return dict(out, value=None, passed=False,
                    reason="baseline figure is 0: growth in % is unbounded")
    return dict(out, value=round(value, 4), passed=value <= limit)
