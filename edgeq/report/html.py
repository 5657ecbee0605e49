"""One self-contained HTML page for a report.json: model header, budgets, the result
table, Pareto plots (size and p50 latency against accuracy drop, frontier drawn), latency
distributions, thermal traces and per-layer sensitivity when the report has them.

Plots are inline SVG from matplotlib (``edgeq.report.plots``); the page loads nothing
from anywhere (no script, no external CSS, fonts or images), so it can be mailed, attached
to a CI run or opened offline. A cell that cannot be plotted is listed under the plot with
the reason. Nothing here imports torch.

The data each plot draws (and the optional blocks read: per-run latency ``samples``,
thermal ``trace``, the ``sensitivity`` block of ``edgeq sensitivity``) is picked out of
report.json by ``edgeq.report.plotdata``; its docstrings give the formats."""
from __future__ import annotations

import html
import time
from pathlib import Path

from edgeq.report.budgets import format_value
from edgeq.report.plotdata import (collect_latency, collect_pareto, collect_thermal, frontier,
                                   main_device, sensitivity_layers)
from edgeq.report.plots import MAX_LAYERS

_E = html.escape


def _fmt_bytes(n) -> str:
    return format_value(n, "bytes")


def _fmt(v, digits: int = 2, suffix: str = "") -> str:
    return "-" if v is None else f"{v:.{digits}f}{suffix}"


def _fmt_ms(v) -> str:
    return "-" if v is None else f"{v:.3g}"


# -- HTML ------------------------------------------------------------------------------

CSS = """
:root{--fg:#1d2329;--muted:#5f6b76;--line:#dfe3e8;--bg:#fff;--soft:#f6f8fa;
--ok:#1a7f37;--okbg:#e6f4ea;--bad:#b42318;--badbg:#fdecea;--warn:#9a6700;--warnbg:#fff6d6}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 8px;padding-top:8px;
border-top:1px solid var(--line)}
.meta{color:var(--muted);margin:0 0 12px}.meta code{color:var(--fg)}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
nav{margin:8px 0 0;font-size:13px}nav a{margin-right:14px;color:#0b5cad;text-decoration:none}
.chips{display:flex;flex-wrap:wrap;gap:8px;margin:12px 0}
.chip{padding:4px 10px;border-radius:12px;background:var(--soft);border:1px solid var(--line);
font-size:13px}.chip.ok{background:var(--okbg);border-color:#b7dfc1;color:var(--ok)}
.chip.bad{background:var(--badbg);border-color:#f5c2bd;color:var(--bad)}
.chip.warn{background:var(--warnbg);border-color:#f0dc9a;color:var(--warn)}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:5px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.n{text-align:right}
tbody tr:hover td{background:#fafbfc}
td.na{color:#9aa4ad}td.na[title]{cursor:help;text-decoration:underline dotted}
tr.pass td.res{color:var(--ok);font-weight:600}tr.fail td.res{color:var(--bad);font-weight:600}
tr.fail td{background:var(--badbg)}tr.error td{background:var(--warnbg)}
td.err{color:var(--bad)}
figure{margin:12px 0 4px}figcaption{color:var(--muted);font-size:13px;margin:2px 0 6px}
svg.plot{width:100%;height:auto;display:block}
.left{font-size:13px;color:var(--muted);margin:4px 0 0}
.left ul{margin:4px 0;padding-left:20px}
details{margin:8px 0}summary{cursor:pointer;color:var(--muted);font-size:13px;
padding:4px 0}td.nw{white-space:nowrap}
footer{margin-top:36px;color:var(--muted);font-size:12px}
"""


def _td(text, numeric: bool = False, reason: str | None = None, cls: str = "") -> str:
    classes = [c for c in (cls, "n" if numeric else "") if c]
    if text in ("-", None, ""):
        classes.append("na")
        title = f' title="{_E(reason)}"' if reason else ""
        return f'<td class="{" ".join(classes)}"{title}>{"n/a" if reason else "–"}</td>'
    attr = f' class="{" ".join(classes)}"' if classes else ""
    return f"<td{attr}>{_E(str(text))}</td>"


RESULT_COLUMNS = ("#", "target", "recipe", "size", "accuracy", "drop", "p50 ms", "p90 ms",
                  "runner", "peak mem", "delegated", "ops on CPU")
_NUMERIC = {"#", "size", "accuracy", "drop", "p50 ms", "p90 ms", "peak mem", "delegated"}


def results_table(report: dict) -> str:
    """The CLI's result table (``edgeq.cli.output.results_table``) with a row number."""
    head = "".join(f'<th class="n">{_E(c)}</th>' if c in _NUMERIC else f"<th>{_E(c)}</th>"
                   for c in RESULT_COLUMNS)
    rows = []
    for i, r in enumerate(report.get("results") or [], 1):
        if r.get("error"):
            rows.append(f'<tr class="error"><td class="n">{i}</td>{_td(r.get("target", "?"))}'
                        f'{_td(r.get("recipe", "?"))}<td colspan="9" class="err">failed: '
                        f'{_E(str(r["error"]))}</td></tr>')
            continue
        acc = r.get("accuracy") or {}
        prof = r.get("profile") or {}
        lat = prof.get("latency_ms") or {}
        d = r.get("delegation") or {}
        unit = "%" if acc.get("metric") in ("top1", "agreement") else ""
        accs = f"{acc.get('metric', '')} {_fmt(acc.get('value'), 2, unit)}" if acc.get(
            "value") is not None else "-"
        acc_why = r.get("accuracy_reason") or acc.get("value_reason")
        prof_why = r.get("profile_reason")
        spread_why = lat.get("spread_reason") or lat.get("percentiles_reason") or prof_why
        est = prof and prof.get("mode", "measured") != "measured"
        runner = (f"{prof.get('runner') or '-'}{' (est.)' if est else ''}" if prof else "-")
        if est and not prof.get("runner"):
            runner = f"estimate ({prof.get('profile') or prof.get('device')})"
        share = d.get("delegated_share")
        cpu_ops = ", ".join(f"{o['op']}×{o['count']}" for o in d.get("fallback_ops") or [])
        size = (r.get("artifact") or {}).get("size_bytes")
        rows.append(
            f'<tr><td class="n">{i}</td>{_td(r.get("target"), cls="nw")}'
            f'{_td(r.get("recipe"), cls="nw")}'
            + _td(_fmt_bytes(size), True)
            + _td(accs, True, acc_why) + _td(_fmt(acc.get("drop")), True,
                                             acc.get("drop_reason") or acc_why)
            + _td(_fmt_ms(lat.get("p50")), True, prof_why)
            + _td(_fmt_ms(lat.get("p90")), True, spread_why)
            + _td(runner, False, prof_why)
            + _td(_fmt_bytes(prof.get("peak_memory_bytes")), True,
                  prof.get("peak_memory_bytes_reason") or prof_why)
            + _td("-" if share is None else f"{share:.0%}", True)
            + _td(cpu_ops or ("-" if share is None else "none")) + "</tr>")
    return (f'<div class="scroll"><table id="results"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


BUDGETS_OPEN_UP_TO = 12  # more rows than this: the passed ones fold into <details>


def budgets_section(rows: list[dict]) -> str:
    """Failed budgets always in view; passed ones too when few, else folded (no script:
    a <details> element)."""
    failed = [b for b in rows if not b.get("passed")]
    passed = [b for b in rows if b.get("passed")]
    if len(rows) <= BUDGETS_OPEN_UP_TO:
        return budgets_table(failed + passed, "budgets")
    out = budgets_table(failed, "budgets") if failed else ""
    if passed:
        out += (f"<details><summary>{len(passed)} passed "
                f"budget{'s' if len(passed) > 1 else ''}</summary>"
                f"{budgets_table(passed, 'budgets-passed')}</details>")
    return out


def _budget_result(b: dict) -> str:
    """pass / FAIL: exceeded (+14%) / FAIL: below / FAIL: not measured (the check's words)."""
    from edgeq.report.budgets import verdict

    word = verdict(b)
    if b.get("passed"):
        return word
    value, limit = b.get("value"), b.get("limit")
    if value is None or not limit or b.get("unit") not in ("bytes", "ms", "mJ", "ratio"):
        return f"FAIL: {word}"
    return f"FAIL: {word} ({(value - limit) / abs(limit):+.0%})"


def _device(device, profile) -> str:
    """``local``, ``adb:SERIAL (pixel-8)``, as the check's own tables name devices."""
    if not device:
        return "-"
    return f"{device} ({profile})" if profile and profile not in (device, "host") else device


def budgets_table(rows: list[dict], table_id: str) -> str:
    """One row per budget per result, as ``edgeq check`` wrote them; baseline and change
    columns when the check compared with a baseline report."""
    from edgeq.report.budgets import format_change, format_limit, format_row_value

    compared = any("baseline" in b for b in rows)
    head = ["budget", "target", "recipe", "device", "limit", "value"]
    head += ["baseline", "change"] if compared else []
    out = [f'<div class="scroll"><table id="{table_id}"><thead><tr>'
           + "".join(f'<th class="n">{h}</th>' if h in ("limit", "value", "baseline", "change")
                     else f"<th>{h}</th>" for h in head) + "<th>result</th></tr></thead><tbody>"]
    for b in rows:
        unit = b.get("measure_unit") or b.get("unit", "")
        cells = [_td(b.get("name")), _td(b.get("target")), _td(b.get("recipe")),
                 _td(_device(b.get("device"), b.get("profile"))), _td(format_limit(b), True),
                 _td(format_row_value(b), True, b.get("reason"))]
        if compared:
            cells += [_td(format_value(b.get("baseline"), unit), True), _td(format_change(b), True)]
        out.append(f'<tr class="{"pass" if b.get("passed") else "fail"}">{"".join(cells)}'
                   f'<td class="res">{_E(_budget_result(b))}</td></tr>')
    out.append("</tbody></table></div>")
    return "".join(out)


def _left_list(left: list[dict]) -> str:
    if not left:
        return ""
    items = "".join(f"<li><b>{_E(x['label'])}</b>: {_E(x['reason'])}</li>" for x in left)
    return f'<div class="left">Not plotted ({len(left)}):<ul>{items}</ul></div>'


def _figure(plot_id: str, svg: str, caption: str, left: list[dict]) -> str:
    return (f'<figure id="{plot_id}" class="plotbox">{svg}<figcaption>{_E(caption)}'
            f"</figcaption></figure>{_left_list(left)}")


def _header(report: dict, title: str) -> str:
    model = report.get("model") or {}
    cells = report.get("results") or []
    bits = []
    if model.get("spec"):
        bits.append(f"model <code>{_E(str(model['spec']))}</code>")
    if model.get("sha256"):
        bits.append(f"sha256 <code>{_E(str(model['sha256'])[:12])}</code>")
    if model.get("params") is not None:
        bits.append(f"{model['params']:,} parameters")
    main = main_device(report)
    if main:
        bits.append(f"profiled on <code>{_E(str(main))}</code> unless a label says otherwise")
    if report.get("created"):
        bits.append(f"report created {_E(str(report['created']))}")
    chips = [f'<span class="chip">{len(cells)} results</span>']
    failed = sum(1 for c in cells if c.get("error"))
    if failed:
        chips.append(f'<span class="chip warn">{failed} failed</span>')
    measured = sum(1 for c in cells if (c.get("profile") or {}).get("mode") == "measured")
    estimated = sum(1 for c in cells if (c.get("profile") or {}).get("mode") == "estimated")
    chips.append(f'<span class="chip">{measured} profiled'
                 + (f", {estimated} estimated" if estimated else "") + "</span>")
    budgets = report.get("budgets") or []
    if budgets:
        bad = sum(1 for b in budgets if not b.get("passed"))
        chips.append(f'<span class="chip {"bad" if bad else "ok"}">'
                     + (f"{bad} of {len(budgets)} budgets failed" if bad else
                        f"{len(budgets)}/{len(budgets)} budgets passed") + "</span>")
    return (f"<h1>{_E(title)}</h1><p class=\"meta\">{' · '.join(bits)}</p>"
            f'<div class="chips">{"".join(chips)}</div>')


def render_html(report: dict, title: str | None = None) -> tuple[str, list[dict]]:
    """The page, and one entry per plot drawn ({id, title, plotted, not_plotted}) or
    left out ({id, title, omitted: why})."""
    from edgeq.report import plots

    model = report.get("model") or {}
    title = title or f"edgeq report: {model.get('spec') or 'model'}"
    sections, meta, nav = [], [], []

    def add(plot_id, heading, caption, draw, n, left, omit_reason=None, extra=None):
        nav.append((plot_id, heading))
        if not n:
            why = omit_reason or "no result has the figures this plot needs"
            meta.append({"id": plot_id, "title": heading, "plotted": 0, "not_plotted": left,
                         "omitted": why})
            sections.append(f'<h2 id="sec-{plot_id}">{_E(heading)}</h2>'
                            f'<p class="left">Nothing to plot: {_E(why)}.</p>{_left_list(left)}')
            return
        meta.append({"id": plot_id, "title": heading, "plotted": n, "not_plotted": left,
                     **(extra or {})})
        sections.append(f'<h2 id="sec-{plot_id}">{_E(heading)}</h2>'
                        + _figure(plot_id, draw(), caption, left))

    for axis, plot_id, xlabel in (("size", "pareto-size", "artifact size"),
                                  ("latency", "pareto-latency", "p50 latency (ms)")):
        points, left, metric = collect_pareto(report, axis)
        ylabel = f"accuracy drop ({metric or 'metric'}, points; lower is better)"
        heading = f"{'Size' if axis == 'size' else 'Latency'} vs accuracy drop"
        caption = ("One point per result: colour = target, marker = recipe"
                   + (", hollow = estimated latency" if any(p["estimated"] for p in points)
                      else "")
                   + ". Ringed, on the dashed line: the Pareto frontier (no other result is "
                   + ("smaller" if axis == "size" else "faster") + " and more accurate); "
                   "the shaded region is dominated."
                   + (" #n = row n of the result table." if len(points) >
                      plots.LABEL_ALL_UP_TO else ""))
        add(plot_id, heading, caption,
            lambda p=points, i=plot_id, x=xlabel, y=ylabel, a=axis: plots.pareto_svg(
                p, i, x, y, x_is_bytes=(a == "size")),
            len(points), left, extra={"frontier": frontier(points)},
            omit_reason="no result has both " + ("an artifact size" if axis == "size" else
                                                 "a p50 latency") + " and an accuracy drop")

    rows, left = collect_latency(report)
    add("latency", "Latency distributions",
        "Per result: box p50–p90, whisker min–p99, thick tick p50, red diamond mean"
        + (" (per-run samples as dots)" if any(r["samples"] for r in rows) else "")
        + ". Estimates have no spread.",
        lambda: plots.latency_svg(rows, "latency"), len(rows), left,
        omit_reason="no result has a measured or estimated latency")

    traces, tleft = collect_thermal(report)
    if traces:
        add("thermal", "Thermal behaviour (sustained runs)",
            "Latency, hottest thermal zone and CPU clock over a sustained run; dotted: "
            "throttle threshold / time to throttle. Dashed lines are estimates.",
            lambda: plots.thermal_svg(traces, "thermal"), len(traces), tleft)

    if sensitivity_layers(report):
        sens, layers = sensitivity_layers(report)
        shown = layers[:MAX_LAYERS]
        cap = ("Per layer, most sensitive first: output SQNR with only that layer quantized"
               + (", and the metric drop it causes alone" if any(
                   x.get("metric_drop") is not None for x in shown) else "") + "."
               + (" Dotted: every layer quantized." if isinstance(sens.get("all_int8"), dict)
                  else "")
               + (f" The first {MAX_LAYERS} of {len(layers)} layers." if len(layers) >
                  MAX_LAYERS else ""))
        where = " · ".join(str(sens[k]) for k in ("target", "recipe") if sens.get(k))
        add("sensitivity", "Per-layer sensitivity" + (f" ({where})" if where else ""), cap,
            lambda: plots.sensitivity_svg(shown, "sensitivity", sens.get("metric"),
                                          sens.get("all_int8")),
            len(shown), [])

    budgets = report.get("budgets") or []
    parts = [_header(report, title)]
    links = ([("sec-budgets", "Budgets")] if budgets else []) + [("sec-results", "Results")]
    links += [(f"sec-{i}", h) for i, h in nav]
    parts.append("<nav>" + "".join(f'<a href="#{i}">{_E(h)}</a>' for i, h in links)
                 + "</nav>")
    if budgets:
        parts.append(f'<h2 id="sec-budgets">Budgets</h2>{budgets_section(budgets)}')
    parts.append(f'<h2 id="sec-results">Results</h2>{results_table(report)}')
    parts += sections
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    parts.append(f"<footer>Generated by edgeq {_E(str(report.get('edgeq_version') or ''))} "
                 f"on {made}. Self-contained page: no scripts, nothing loaded from the network."
                 "</footer>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_E(title)}</title><style>{CSS}</style></head><body><main>"
            + "\n".join(parts) + "</main></body></html>\n")
    return page, meta


def write_html(path: Path, report: dict, title: str | None = None) -> list[dict]:
    """Render ``report`` and write it atomically to ``path``; returns the plot list."""
    from edgeq.artifacts import atomic_write

    page, meta = render_html(report, title)
    atomic_write(Path(path), page.encode("utf-8"))
    return meta
