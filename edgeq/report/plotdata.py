"""What each plot of the HTML report draws, picked out of report.json: points, rows and
traces as plain lists, plus every cell left out with the reason (``not_plotted``).
Nothing here imports matplotlib or torch.

Optional blocks read when present:

* ``profile.latency_ms.samples``: per-run latencies (ms); drawn as dots over the box.
* ``profile.thermal.trace``: ``[{t_s, latency_ms, temps_c: {zone: °C} | temp_c,
  cpu_mhz: {cpu: MHz} | clock_ratio}]`` as written by ``profile --sustained`` (measured or
  estimated).
* ``report["sensitivity"]`` (``edgeq sensitivity``), see ``sensitivity_layers``."""
from __future__ import annotations

from collections import Counter

from edgeq.report.plots import MAX_TRACES, pareto_front


def main_device(report: dict) -> str | None:
    """The device most results were profiled on; labels name any other device."""
    devs = Counter((c.get("profile") or {}).get("device") for c in report.get("results") or []
                   if (c.get("profile") or {}).get("device"))
    return devs.most_common(1)[0][0] if devs else None


def cell_label(cell: dict, main: str | None = None) -> str:
    """``target · recipe``, with ``@ device`` when profiled elsewhere than on ``main``."""
    text = f"{cell.get('target', '?')} · {cell.get('recipe', '?')}"
    dev = (cell.get("profile") or {}).get("device")
    return f"{text} @ {dev}" if dev and dev != main else text


def _not_plotted(cell: dict, reason: str, label: str) -> dict:
    return {"target": cell.get("target"), "recipe": cell.get("recipe"),
            "device": (cell.get("profile") or {}).get("device"), "label": label,
            "reason": reason}


def _accuracy_reason(cell: dict) -> str | None:
    """Why a cell has no accuracy drop, or None when it has one."""
    if cell.get("error"):
        return f"failed: {cell['error']}"
    acc = cell.get("accuracy")
    if not acc:
        return f"no accuracy: {cell.get('accuracy_reason') or 'not evaluated'}"
    if acc.get("drop") is None:
        why = acc.get("drop_reason") or acc.get("value_reason") or (
            "no reference value" if acc.get("value") is not None else "not measured")
        return f"no accuracy drop: {why}"
    return None


def _latency_reason(cell: dict) -> str | None:
    if cell.get("error"):
        return f"failed: {cell['error']}"
    prof = cell.get("profile")
    if not prof:
        return f"not profiled: {cell.get('profile_reason') or 'no profile run'}"
    lat = prof.get("latency_ms") or {}
    if lat.get("p50") is None:
        return f"no latency: {prof.get('latency_ms_reason') or 'not measured'}"
    return None


def collect_pareto(report: dict, axis: str) -> tuple[list[dict], list[dict], str | None]:
    """Points for the size (``axis="size"``) or p50 latency (``"latency"``) Pareto plot,
    the cells left out with why, and the accuracy metric of the plotted drops. Drops in
    different metrics are not comparable: only the most common metric is plotted."""
    cells = report.get("results") or []
    main = main_device(report)
    metrics = Counter((c.get("accuracy") or {}).get("metric") for c in cells
                      if _accuracy_reason(c) is None)
    metric = metrics.most_common(1)[0][0] if metrics else None
    points, left = [], []
    for i, c in enumerate(cells, 1):
        label = cell_label(c, main)
        why = _accuracy_reason(c)
        if why is None and c["accuracy"].get("metric") != metric:
            why = f"metric {c['accuracy'].get('metric')} (the plot shows {metric} drops)"
        if why is None:
            if axis == "size":
                x = (c.get("artifact") or {}).get("size_bytes")
                why = None if x else "no artifact size"
                est = False
            else:
                why = _latency_reason(c)
                x = ((c.get("profile") or {}).get("latency_ms") or {}).get("p50")
                est = (c.get("profile") or {}).get("mode") == "estimated"
        if why is not None:
            left.append(_not_plotted(c, why, label))
            continue
        points.append({"x": float(x), "y": float(c["accuracy"]["drop"]), "row": i,
                       "target": c.get("target", "?"), "recipe": c.get("recipe", "?"),
                       "device": (c.get("profile") or {}).get("device"),
                       "label": label + (" (est.)" if est else ""), "short": f"#{i}",
                       "estimated": est})
    return points, left, metric


def collect_latency(report: dict) -> tuple[list[dict], list[dict]]:
    cells = report.get("results") or []
    main = main_device(report)
    rows, left = [], []
    for c in cells:
        label = cell_label(c, main)
        why = _latency_reason(c)
        if why is not None:
            left.append(_not_plotted(c, why, label))
            continue
        prof = c["profile"]
        lat = prof["latency_ms"]
        est = prof.get("mode") == "estimated"
        samples = lat.get("samples") if isinstance(lat.get("samples"), list) else None
        rows.append({"label": label + (" (est.)" if est else ""), "estimated": est,
                     "samples": samples, **{k: lat.get(k) for k in
                                            ("p50", "p90", "p99", "mean", "min")}})
    return rows, left


def _trace_temp(w: dict):
    if w.get("temp_c") is not None:
        return w["temp_c"]
    temps = [v for v in (w.get("temps_c") or {}).values() if v is not None]
    return max(temps) if temps else None


def collect_thermal(report: dict) -> tuple[list[dict], list[dict]]:
    """Traces of the cells with a thermal trace; cells beyond MAX_TRACES are listed."""
    cells = report.get("results") or []
    main = main_device(report)
    traces, left = [], []
    for c in cells:
        th = (c.get("profile") or {}).get("thermal") or {}
        trace = th.get("trace") or []
        if not trace:
            continue
        label = cell_label(c, main)
        if len(traces) >= MAX_TRACES:
            left.append(_not_plotted(c, f"more than {MAX_TRACES} traces in one report", label))
            continue
        mhz = [max((w.get("cpu_mhz") or {}).values(), default=None) for w in trace]
        top = max((m for m in mhz if m), default=None)
        clock = [w["clock_ratio"] if w.get("clock_ratio") is not None else
                 (m / top if m and top else None) for w, m in zip(trace, mhz)]
        traces.append({"label": label, "t_s": [w.get("t_s") for w in trace],
                       "latency_ms": [w.get("latency_ms") for w in trace],
                       "temp_c": [_trace_temp(w) for w in trace], "clock": clock,
                       "throttle_c": th.get("throttle_c"),
                       "time_to_throttle_s": th.get("time_to_throttle_s"),
                       "estimated": c["profile"].get("mode") == "estimated"})
    return traces, left


def frontier(points: list[dict]) -> list[dict]:
    """The cells on the Pareto frontier of ``points`` (x and drop both minimised), as
    {row, target, recipe, device, x, y}, by increasing x."""
    keys = ("row", "target", "recipe", "device", "x", "y")
    return [{k: points[i][k] for k in keys}
            for i in pareto_front([(p["x"], p["y"]) for p in points])]


def sensitivity_layers(report: dict) -> tuple[dict, list[dict]] | None:
    """``report["sensitivity"]`` and its drawable layers, or None when there is none.

    The block (written by ``edgeq sensitivity``)::

        {"metric": "top1",            # the accuracy metric the drops are in
         "target": "...", "recipe": "...",
         "all_int8": {"sqnr_db": 18.2, "metric_drop": 2.1},   # optional: every layer on
         "layers": [{"name": "features.0", "sqnr_db": 21.3, "metric_drop": 1.2,
                     "op": "Conv2d", "float_recovery_points": 0.8, "rank": 1}, ...]}

    ``name`` and ``sqnr_db`` are required per layer (``sqnr_db`` may be null), the rest
    optional; layers are drawn in the given order (most sensitive first)."""
    sens = report.get("sensitivity")
    if not isinstance(sens, dict) or not isinstance(sens.get("layers"), list):
        return None
    layers = [x for x in sens["layers"] if isinstance(x, dict) and x.get("name")]
    return (sens, layers) if layers else None
