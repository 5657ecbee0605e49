"""The report's plots, drawn with matplotlib (Agg) and returned as inline SVG text.

Every function takes plain data (lists of dicts, already picked out of report.json by
``edgeq.report.html``) and returns one ``<svg>`` element; matplotlib is imported inside
the functions so that importing this module stays cheap. ``pareto_front`` is the only
piece of logic here that is not drawing."""
from __future__ import annotations

import io
import re

# Colours that stay apart on white and in greyscale print (matplotlib's tab10, reordered).
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#7f7f7f", "#bcbd22"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
LABEL_ALL_UP_TO = 16  # more points than this: only frontier points get a full label
MAX_TRACES = 12       # thermal traces drawn in one figure
MAX_LAYERS = 40       # sensitivity bars drawn


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when both coordinates are to be minimised,
    sorted by x then y. ``a`` dominates ``b`` when a.x <= b.x and a.y <= b.y and one of
    them is strictly smaller; equal points do not dominate each other (both stay)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best_y, last = [], float("inf"), None
    for i in order:
        x, y = points[i]
        if y < best_y or (last is not None and (x, y) == points[last]):
            front.append(i)
            best_y, last = min(best_y, y), i
    return front


def _mpl():
    try:
        import matplotlib
    except ImportError:
        from edgeq.errors import RuntimeFailure

        raise RuntimeFailure("the HTML report draws its plots with matplotlib, which is not "
                             "installed: pip install 'matplotlib>=3.8'") from None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "svg.fonttype": "none",  # real <text>: selectable, small, the browser's own font
        "font.family": "sans-serif", "font.size": 9, "axes.titlesize": 10,
        "axes.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
        "axes.grid": True, "grid.color": "#e5e5e5", "grid.linewidth": 0.7,
        "axes.edgecolor": "#888888", "xtick.color": "#444444", "ytick.color": "#444444",
        "legend.frameon": False, "legend.fontsize": 8})
    return plt


def to_svg(fig, plot_id: str) -> str:
    """The figure as one ``<svg>`` element (no XML prolog), its ids salted with ``plot_id``
    so that several figures can live in one page, and sized by CSS (viewBox kept)."""
    plt = _mpl()
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": plot_id}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": "edgeq"})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{plot_id}-{m.group(1)}"', text)
    text = re.sub(r'(url\(#|xlink:href="#|href="#)([^)"]+)',
                  lambda m: f"{m.group(1)}{plot_id}-{m.group(2)}", text)
    def size(m):  # natural size as the upper bound, then scale down with the page
        w = float(m.group(2)) * 4 / 3  # pt -> CSS px
        return f'<svg {m.group(1)}class="plot" style="max-width:{w:.0f}px"'

    return re.sub(r'<svg ([^>]*?)width="([0-9.]+)pt" height="[0-9.]+pt"', size, text, count=1)


def _scale(ax, values: list[float], axis: str) -> None:
    """Log scale when the values span more than 30x, ticked 1-2-5 in plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    pos = [v for v in values if v > 0]
    if pos and len(pos) == len(values) and max(pos) / min(pos) > 30:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        a = ax.xaxis if axis == "x" else ax.yaxis
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        a.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        a.set_minor_formatter(NullFormatter())


def _place_labels(ax, anchors, texts, colors) -> None:
    """Put each label next to its anchor (display px) where it overlaps no point and no
    earlier label: a greedy search over offsets, widths estimated from the text. A label
    may leave the axes but not the figure."""
    fig = ax.figure
    k = fig.dpi / 72
    taken = [(px - 5, py - 5, px + 5, py + 5) for px, py in anchors]
    fb = fig.bbox
    offsets = [(7, 2), (7, -2), (-7, 2), (-7, -2), (0, 7), (0, -7), (14, 12), (-14, 12),
               (14, -12), (-14, -12), (0, 20), (0, -20)]

    def clash(b):
        return sum(1 for t in taken if b[0] < t[2] and b[2] > t[0] and b[1] < t[3] and b[3] > t[1])

    for (px, py), text, color in zip(anchors, texts, colors):
        if not text:
            continue
        lines = text.split("\n")
        w = 4.4 * k * max(len(s) for s in lines)
        h = 9.5 * k * len(lines)
        best = None
        for dx, dy in offsets:
            x0 = px + dx * k - (w if dx < 0 else w / 2 if dx == 0 else 0)
            y0 = py + dy * k - (h if dy < 0 else 0)
            b = (x0, y0, x0 + w, y0 + h)
            outside = b[0] < fb.x0 or b[2] > fb.x1 or b[1] < fb.y0 or b[3] > fb.y1
            score = clash(b) * 10 + outside * 100 + (abs(dx) + abs(dy)) / 100
            if best is None or score < best[0]:
                best = (score, dx, dy, b)
        _, dx, dy, b = best
        taken.append(b)
        ha = "left" if dx > 0 else "right" if dx < 0 else "center"
        ax.annotate(text, ax.transData.inverted().transform((px, py)), xytext=(dx, dy),
                    textcoords="offset points", ha=ha, va="top" if dy < 0 else "bottom",
                    fontsize=7.5, color=color, linespacing=1.15)


def _group_close(anchors, order, px: float = 7.0) -> list[list[int]]:
    """Points closer than ``px`` on screen share one label (coincident cells)."""
    groups: list[list[int]] = []
    for i in order:
        x, y = anchors[i]
        for g in groups:
            gx, gy = anchors[g[0]]
            if abs(gx - x) < px and abs(gy - y) < px:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def pareto_svg(points: list[dict], plot_id: str, xlabel: str, ylabel: str,
               x_is_bytes: bool = False, title: str = "") -> str:
    """Scatter of ``points`` ({x, y, target, recipe, label, short, estimated}) with the
    frontier drawn as a staircase and the region it dominates shaded; colour by target,
    marker by recipe, hollow = estimated; frontier points ringed and labelled in full."""
    plt = _mpl()
    from matplotlib.lines import Line2D
    if x_is_bytes:  # plot in KiB or MiB: round ticks in the unit people read sizes in
        div, unit = (2 ** 20, "MiB") if max(p["x"] for p in points) >= 2 ** 20 else (2 ** 10,
                                                                                     "KiB")
        points = [dict(p, x=p["x"] / div) for p in points]
        xlabel = f"{xlabel} ({unit})"
    targets = sorted({p["target"] for p in points})
    recipes = sorted({p["recipe"] for p in points})
    color = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(targets)}
    marker = {r: MARKERS[i % len(MARKERS)] for i, r in enumerate(recipes)}
    fig, ax = plt.subplots(figsize=(10.0, 4.8), dpi=72)
    front = pareto_front([(p["x"], p["y"]) for p in points])
    on_front = set(front)
    if front:
        ax.scatter([points[i]["x"] for i in front], [points[i]["y"] for i in front], s=150,
                   marker="o", facecolors="none", edgecolors="#222222", linewidths=0.9,
                   zorder=4)
    for r in recipes:  # one collection per marker: fast with 100 points
        mine = [p for p in points if p["recipe"] == r]
        ax.scatter([p["x"] for p in mine], [p["y"] for p in mine], s=42, marker=marker[r],
                   facecolors=["white" if p.get("estimated") else color[p["target"]]
                               for p in mine],
                   edgecolors=[color[p["target"]] for p in mine], linewidths=1.4, zorder=5)
    _scale(ax, [p["x"] for p in points], "x")
    ax.margins(x=0.08, y=0.15)
    xlo, xhi = ax.get_xlim()
    ylo, yhi = ax.get_ylim()
    if ylo == yhi:
        ylo, yhi = ylo - 0.5, yhi + 0.5
    if xlo == xhi:
        xlo, xhi = xlo * 0.9, xhi * 1.1
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(ylo, yhi)
    if front:
        fx = [points[i]["x"] for i in front]
        fy = [points[i]["y"] for i in front]
        sx, sy = [fx[0], fx[0]], [yhi, fy[0]]
        for a, b, prev in zip(fx[1:], fy[1:], fy):
            sx += [a, a]
            sy += [prev, b]
        sx.append(xhi)
        sy.append(fy[-1])
        ax.plot(sx, sy, color="#333333", linewidth=1.1, linestyle="--", zorder=3)
        ax.fill(sx + [xhi], sy + [yhi], color="#000000", alpha=0.04, linewidth=0, zorder=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, loc="left")
    handles = [Line2D([], [], linestyle="", marker="o", color=color[t], label=t) for t in targets]
    handles += [Line2D([], [], linestyle="", marker=marker[r], color="#555555",
                       markerfacecolor="#555555", label=r) for r in recipes]
    if any(p.get("estimated") for p in points):
        handles.append(Line2D([], [], linestyle="", marker="o", color="#555555",
                              markerfacecolor="white", label="estimated"))
    handles.append(Line2D([], [], color="#333333", linestyle="--", marker="o", markersize=9,
                          markerfacecolor="none", label="Pareto frontier"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()  # lays out, so the data -> pixel transform below is final
    anchors = [tuple(ax.transData.transform((p["x"], p["y"]))) for p in points]
    many = len(points) > LABEL_ALL_UP_TO
    order = front + [i for i in range(len(points)) if i not in on_front]
    texts, colors, where = [], [], []
    for g in _group_close(anchors, order):
        full = [points[i]["label"] for i in g if i in on_front or not many]
        short = [points[i]["short"] for i in g if not (i in on_front or not many)]
        lines = full[:3] + ([f"+{len(full) - 3} more"] if len(full) > 3 else [])
        if short:
            lines.append(" ".join(short[:6]) + (" …" if len(short) > 6 else ""))
        texts.append("\n".join(lines))
        colors.append("#222222" if g[0] in on_front else "#6b7280")
        where.append(anchors[g[0]])
    _place_labels(ax, where, texts, colors)
    return to_svg(fig, plot_id)


def latency_svg(rows: list[dict], plot_id: str) -> str:
    """One row per cell ({label, p50, p90, p99, mean, min, samples, estimated}): a whisker
    from min (or p50) to p99, a box from p50 to p90, a tick at p50, a diamond at the mean;
    raw ``samples`` (ms), when a profile kept them, as dots; an estimate as one hollow dot.
    Drawn as a few collections, not artists per row: 100 rows stay fast."""
    import numpy as np
    from matplotlib.collections import LineCollection

    plt = _mpl()
    n = len(rows)
    fig, ax = plt.subplots(figsize=(10.0, 1.1 + 0.3 * n), dpi=72)
    rng = np.random.default_rng(0)
    values, whiskers, caps, boxes, ticks, means, est, dots = [], [], [], [], [], [], [], []
    for i, r in enumerate(rows):
        y = n - 1 - i
        p50 = r["p50"]
        values.append(p50)
        if r.get("samples"):
            s = np.asarray(r["samples"], dtype=float)
            dots += list(zip(s, y + rng.uniform(-0.22, 0.22, s.size)))
            values += [float(s.min()), float(s.max())]
        if r.get("estimated"):
            est.append((p50, y))
            continue
        lo = r.get("min") if r.get("min") is not None else p50
        hi = r.get("p99") if r.get("p99") is not None else r.get("p90")
        if hi is not None:
            whiskers.append([(lo, y), (hi, y)])
            caps.append([(hi, y - 0.15), (hi, y + 0.15)])
            values += [lo, hi]
        if r.get("p90") is not None:
            boxes.append((p50, r["p90"] - p50, y))
        ticks.append([(p50, y - 0.3), (p50, y + 0.3)])
        if r.get("mean") is not None:
            means.append((r["mean"], y))
            values.append(r["mean"])
    if dots:
        ax.scatter(*zip(*dots), s=4, color="#9ecae1", alpha=0.5, linewidths=0, zorder=1)
    ax.add_collection(LineCollection(whiskers + caps, colors="#555555", linewidths=1.0,
                                     zorder=2))
    if boxes:
        ax.barh([b[2] for b in boxes], [b[1] for b in boxes], left=[b[0] for b in boxes],
                height=0.56, color=PALETTE[0], alpha=0.35, zorder=2)
    ax.add_collection(LineCollection(ticks, colors=PALETTE[0], linewidths=2.2, zorder=3))
    if means:
        ax.scatter(*zip(*means), marker="D", s=16, color="#d62728", zorder=4)
    if est:
        ax.scatter(*zip(*est), s=36, facecolors="white", edgecolors="#666666", zorder=3)
    ax.set_yticks(range(n))
    ax.set_yticklabels([r["label"] for r in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    vals = [v for v in values if v is not None]
    span = (max(vals) - min(vals)) or abs(max(vals)) or 1.0
    ax.set_xlim(min(vals) - 0.05 * span, max(vals) + 0.05 * span)
    _scale(ax, vals, "x")
    if ax.get_xscale() == "log":
        ax.set_xlim(min(vals) / 1.3, max(vals) * 1.3)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("latency per inference (ms)")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=PALETTE[0], alpha=0.35, label="p50–p90"),
               Line2D([], [], color="#555555", label="min–p99"),
               Line2D([], [], color=PALETTE[0], linewidth=2.2, label="p50"),
               Line2D([], [], linestyle="", marker="D", color="#d62728", markersize=4,
                      label="mean")]
    if est:
        handles.append(Line2D([], [], linestyle="", marker="o", color="#666666",
                              markerfacecolor="white", label="estimate (no spread)"))
    if dots:
        handles.append(Line2D([], [], linestyle="", marker="o", color="#9ecae1", markersize=3,
                              label="runs"))
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=len(handles), borderaxespad=0.3)
    fig.tight_layout()
    return to_svg(fig, plot_id)


def thermal_svg(traces: list[dict], plot_id: str) -> str:
    """``traces``: [{label, t_s: [...], latency_ms: [...], temp_c: [...], clock: [...],
    throttle_c, time_to_throttle_s, estimated}]. Latency, temperature and (when known)
    the clock as a share of its peak, against time, one line per cell."""
    plt = _mpl()
    has_clock = any(any(c is not None for c in t["clock"]) for t in traces)
    has_temp = any(any(c is not None for c in t["temp_c"]) for t in traces)
    panels = 1 + has_temp + has_clock
    fig, axes = plt.subplots(panels, 1, figsize=(10.0, 1.0 + 1.8 * panels), dpi=72,
                             sharex=True, squeeze=False)
    axes = [a[0] for a in axes]
    for k, t in enumerate(traces):
        color = PALETTE[k % len(PALETTE)]
        style = "--" if t.get("estimated") else "-"
        label = t["label"] + (" (estimated)" if t.get("estimated") else "")
        axes[0].plot(t["t_s"], t["latency_ms"], style, color=color, linewidth=1.4, label=label)
        if t.get("time_to_throttle_s") is not None:
            for a in axes:
                a.axvline(t["time_to_throttle_s"], color=color, linewidth=0.8, linestyle=":")
        row = 1
        if has_temp:
            axes[row].plot(t["t_s"], t["temp_c"], style, color=color, linewidth=1.4)
            if t.get("throttle_c") is not None:
                axes[row].axhline(t["throttle_c"], color=color, linewidth=0.8, linestyle=":")
                axes[row].annotate(f"throttle {t['throttle_c']:g} °C", (1.0, t["throttle_c"]),
                                   xycoords=("axes fraction", "data"), ha="right",
                                   va="bottom", fontsize=7.5, color=color)
            row += 1
        if has_clock:
            axes[row].plot(t["t_s"], t["clock"], style, color=color, linewidth=1.4)
    axes[0].set_ylabel("latency (ms)")
    row = 1
    if has_temp:
        axes[row].set_ylabel("hottest zone (°C)")
        row += 1
    if has_clock:
        axes[row].set_ylabel("clock / peak")
        axes[row].set_ylim(0, 1.08)
    axes[-1].set_xlabel("time (s)")
    axes[0].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=min(3, len(traces)),
                   borderaxespad=0.3)
    fig.tight_layout()
    return to_svg(fig, plot_id)


def sensitivity_svg(layers: list[dict], plot_id: str, metric: str | None,
                    everything: dict | None = None) -> str:
    """Per-layer bars, in the given order (most sensitive first): output SQNR (dB) with
    only that layer quantized, and the metric drop it causes alone when known.
    ``everything`` ({sqnr_db, metric_drop} with every layer quantized) is drawn as a
    dotted reference line."""
    plt = _mpl()
    n = len(layers)
    has_drop = any(r.get("metric_drop") is not None for r in layers)
    fig, axes = plt.subplots(1, 1 + has_drop, figsize=(10.0, 1.1 + 0.26 * n), dpi=72,
                             sharey=True, squeeze=False)
    axes = axes[0]
    ys = list(range(n - 1, -1, -1))
    sq = [r.get("sqnr_db") for r in layers]
    axes[0].barh([y for y, v in zip(ys, sq) if v is not None], [v for v in sq if v is not None],
                 color=PALETTE[0], height=0.62)
    axes[0].set_xlabel("output SQNR, this layer alone quantized (dB; lower = worse)")
    ref = everything or {}
    if ref.get("sqnr_db") is not None:
        axes[0].axvline(ref["sqnr_db"], color="#333333", linewidth=1.0, linestyle=":",
                        label=f"all layers quantized: {ref['sqnr_db']:.1f} dB")
        axes[0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([r["name"] for r in layers], fontsize=8)
    axes[0].set_ylim(-0.7, n - 0.3)
    if has_drop:
        d = [r.get("metric_drop") for r in layers]
        axes[1].barh([y for y, v in zip(ys, d) if v is not None], [v for v in d if v is not None],
                     color=PALETTE[1], height=0.62)
        axes[1].set_xlabel(f"{metric or 'metric'} drop, this layer alone (points)")
        axes[1].axvline(0, color="#888888", linewidth=0.8)
        if ref.get("metric_drop") is not None:
            axes[1].axvline(ref["metric_drop"], color="#333333", linewidth=1.0, linestyle=":",
                            label=f"all layers quantized: {ref['metric_drop']:.2f}")
            axes[1].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
    for a in axes:
        a.grid(axis="y", visible=False)
    fig.tight_layout()
    return to_svg(fig, plot_id)
