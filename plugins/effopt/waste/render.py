"""The waste report as an HTML email: matplotlib charts, a Jinja2 template, and a MIME message.

* :func:`render_charts` draws PNGs with matplotlib's Agg canvas on
  :class:`matplotlib.figure.Figure` objects (no pyplot, so no global figure
  state): the top wasters, usage against request over time for the top 5, and
  a GPU idle heatmap.  A chart without data is left out of the result (the
  template then says so in a sentence), never drawn empty.
* :func:`render_html` fills ``waste_report.html.j2`` (in the package's ``effopt/waste/templates``)
  (autoescaped; inline CSS and a table layout, for mail clients).
* :func:`build_message` assembles ``multipart/mixed``: a
  ``multipart/alternative`` of plain text and ``multipart/related`` (the HTML
  with the PNGs inline under the Content-IDs the HTML references), and the
  CSV of findings attached as ``waste_findings.csv``.

Usage series: a :class:`~effopt.waste.report.WasteReport` keeps costs and
findings, not the series they came from.  The usage and GPU heatmap charts
therefore take them through the ``usage`` argument of
:func:`render_charts`: either the :class:`~effopt.waste.report.WorkloadUsage`
list given to :func:`~effopt.waste.report.analyze`, or a mapping
``{(workload, container, resource): (timestamps, values, request)}``
(epoch seconds, values in the series' unit, request in the same unit or None).
Without it those two charts are left out.

Everything drawn is capped (:data:`MAX_BARS`, :data:`MAX_USAGE_PANELS`,
:data:`MAX_POINTS`, :data:`MAX_HEATMAP_ROWS`, :data:`MAX_HEATMAP_COLUMNS`)
and the chart titles say so, so the time to render does not grow with the
number of workloads beyond sorting them.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from effopt.waste.model import KINDS, Finding
from effopt.waste.report import WasteReport, WorkloadUsage

#: The template ships in the package (``effopt/waste/templates``); ``[effopt] templates_dir`` may replace it.
TEMPLATES_PACKAGE = ("effopt.waste", "templates")
TEMPLATE = "waste_report.html.j2"
CSV_FILENAME = "waste_findings.csv"

#: Chart names, in the order the email shows them.
CHARTS = ("top_wasters", "usage_vs_request", "gpu_idle_heatmap")
MAX_BARS = 15
MAX_USAGE_PANELS = 5
MAX_POINTS = 400
MAX_HEATMAP_ROWS = 30
MAX_HEATMAP_COLUMNS = 168
#: Findings listed per top waster in the email (the CSV has them all).
FINDINGS_PER_WASTER = 5
MAX_MISSING_LISTED = 10
DPI = 100
WIDTH_IN = 6.0  # 600 px at DPI

GIB = 1024**3
HOUR = 3600.0

#: One usage series for the charts: (timestamps in epoch seconds, values, request or None), same unit.
SeriesData = tuple[np.ndarray, np.ndarray, float | None]
#: A period bound: a datetime (naive = UTC), epoch seconds, display text, or None (open start).
Period = datetime | float | str | None
UsageInput = Sequence[WorkloadUsage] | Mapping[tuple[str, str, str], tuple[Any, Any, float | None]]

_UNITS = {"cpu": ("cores", 1.0), "memory": ("GiB", float(GIB)), "gpu_util": ("% duty cycle", 1.0),
          "gpu_memory": ("GiB", float(GIB))}


# -- usage series ---------------------------------------------------------------------------------------------
def usage_series(usage: UsageInput | None) -> dict[tuple[str, str, str], SeriesData]:
    """Normalise ``usage`` (WorkloadUsage list or mapping) to ``{(workload, container, resource): series}``."""
    out: dict[tuple[str, str, str], SeriesData] = {}
    if usage is None:
        return out
    if isinstance(usage, Mapping):
        for key, (ts, vals, request) in usage.items():
            out[tuple(key)] = _as_series(ts, vals, request)  # type: ignore[index]
        return out
    for w in usage:
        for s in (w.cpu, w.memory, w.gpu_util, w.gpu_memory):
            if s is not None:
                out[(w.workload, w.container, s.resource)] = _as_series(s.timestamps, s.values, s.request)
    return out


def _as_series(ts: Any, vals: Any, request: float | None) -> SeriesData:
    t = np.asarray(ts, dtype=float)
    v = np.asarray(vals, dtype=float)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError(f"timestamps and values must be 1-d arrays of one length, got {t.shape} and {v.shape}")
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    order = np.argsort(t, kind="stable")
    return t[order], v[order], None if request is None else float(request)


def _bucket(t: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """At most ``n`` points: per bucket of consecutive samples, (first time, mean, min, max)."""
    if t.size <= n:
        return t, v, v, v
    edges = np.linspace(0, t.size, n + 1).astype(int)
    starts = edges[:-1]
    counts = np.diff(edges)
    mean = np.add.reduceat(v, starts) / counts
    return t[starts], mean, np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)


# -- charts ---------------------------------------------------------------------------------------------------
def _label(text: str, width: int = 38) -> str:
    """A label safe for matplotlib text (no mathtext) and short enough for the axis."""
    text = text if len(text) <= width else text[: width - 1] + "\u2026"
    return text.replace("$", r"\$")


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)  # the Agg canvas, chosen explicitly for this figure only
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _all_wasters(report: WasteReport) -> list[dict[str, Any]]:
    """Every workload with priced waste, most first (``WasteReport.top_wasters`` without its cut)."""
    n = len({c.workload for c in report.costs} | {f.workload for f in report.findings})
    return [r for r in report.top_wasters(n) if r["waste"] > 0] if n else []


#: Bars within this share of the longest look alike: a chart of them says nothing a sentence does not.
ALIKE_SHARE = 0.05


def _all_equal(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the bars of the top wasters chart would all look alike (within :data:`ALIKE_SHARE`)."""
    values = [r["waste"] for r in rows[:MAX_BARS]]
    return len(values) > 1 and max(values) - min(values) <= ALIKE_SHARE * max(values)


def _top_wasters_chart(report: WasteReport) -> bytes | None:
    rows = _all_wasters(report)
    if not rows or _all_equal(rows):
        return None
    shown = rows[:MAX_BARS]
    fig = Figure(figsize=(WIDTH_IN, 1.2 + 0.28 * len(shown)))
    ax = fig.add_subplot()
    y = np.arange(len(shown))
    ax.barh(y, [r["waste"] for r in shown], color="#c0392b")
    ax.set_yticks(y, [_label(r["workload"]) for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("monthly waste (USD)")
    ax.set_title(f"Top wasters: {len(shown)} of {len(rows)} workloads with waste", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _usage_candidates(report: WasteReport, series: Mapping[tuple[str, str, str], SeriesData]
                      ) -> list[tuple[str, str, str, float]]:
    """Per top waster (up to :data:`MAX_USAGE_PANELS`), its most wasteful resource that has a series."""
    best: dict[str, tuple[float, str, str]] = {}
    for c in report.costs:
        if (c.workload, c.container, c.resource) not in series or c.resource not in _UNITS:
            continue
        w = c.waste or 0.0
        if c.workload not in best or w > best[c.workload][0]:
            best[c.workload] = (w, c.container, c.resource)
    out = []
    for r in _all_wasters(report):
        if r["workload"] in best:
            w, container, resource = best[r["workload"]]
            out.append((r["workload"], container, resource, w))
        if len(out) == MAX_USAGE_PANELS:
            break
    return out


def _usage_chart(report: WasteReport, series: Mapping[tuple[str, str, str], SeriesData]) -> bytes | None:
    picks = [p for p in _usage_candidates(report, series) if series[p[:3]][0].size]
    if not picks:
        return None
    fig = Figure(figsize=(WIDTH_IN, 0.6 + 1.6 * len(picks)))
    axes = fig.subplots(len(picks), 1, squeeze=False)[:, 0]
    for ax, (workload, container, resource, _waste) in zip(axes, picks, strict=True):
        t, v, request = series[(workload, container, resource)]
        unit, scale = _UNITS[resource]
        bt, mean, lo, hi = _bucket(t, v / scale, MAX_POINTS)
        when = bt.astype("datetime64[s]")
        ax.fill_between(when, lo, hi, color="#5dade2", alpha=0.35, linewidth=0)
        ax.plot(when, mean, color="#1f618d", linewidth=1.0, label="usage")
        label = "request"
        if request is None and resource == "gpu_util":
            request, label = 100.0, "request (whole GPU)"  # a GPU is held whole: OpenCost charges the full device
        if request is not None:
            ax.axhline(request / scale, color="#c0392b", linestyle="--", linewidth=1.0, label=label)
        ax.set_ylim(bottom=0)
        ax.set_ylabel(unit, fontsize=8)
        where = workload if container == workload else f"{workload} / {container}"
        ax.set_title(f"{_label(where, 60)} ({resource})", fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper right")
    note = (f" (≤{MAX_POINTS} points each; band = min–max)" if any(series[p[:3]][0].size > MAX_POINTS for p in picks)
            else "")
    fig.suptitle(f"Usage against request: top {len(picks)} wasters{note}", fontsize=10)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def _idle_gpu_findings(report: WasteReport) -> list[Finding]:
    return sorted((f for f in report.findings if f.kind == "idle_gpu"),
                  key=lambda f: (-(f.monthly_waste if f.monthly_waste is not None else -1.0),
                                 -float(f.evidence.get("idle_share") or 0.0), f.workload, f.container))


def _gpu_heatmap(report: WasteReport, series: Mapping[tuple[str, str, str], SeriesData]) -> bytes | None:
    found = [(f, series[(f.workload, f.container, "gpu_util")]) for f in _idle_gpu_findings(report)
             if (f.workload, f.container, "gpu_util") in series
             and series[(f.workload, f.container, "gpu_util")][0].size]
    if not found:
        return None
    rows = found[:MAX_HEATMAP_ROWS]
    start = min(float(s[0][0]) for _, s in rows)
    end = max(float(s[0][-1]) for _, s in rows)
    hours = max(1, math.ceil((end - start) / HOUR + 1e-9))
    bin_h = max(1, math.ceil(hours / MAX_HEATMAP_COLUMNS))
    cols = math.ceil(hours / bin_h)
    grid = np.full((len(rows), cols), np.nan)
    for i, (_, (t, v, _req)) in enumerate(rows):
        idx = np.minimum(((t - start) // (HOUR * bin_h)).astype(int), cols - 1)
        total = np.bincount(idx, weights=np.clip(v, 0.0, 100.0), minlength=cols)
        n = np.bincount(idx, minlength=cols)
        with np.errstate(invalid="ignore", divide="ignore"):
            grid[i] = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    fig = Figure(figsize=(WIDTH_IN, 1.4 + 0.22 * len(rows)))
    ax = fig.add_subplot()
    img = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap="viridis", vmin=0.0, vmax=100.0,
                    interpolation="nearest", extent=(0, cols * bin_h, len(rows) - 0.5, -0.5))
    ax.set_yticks(np.arange(len(rows)), [_label(f"{f.workload}/{f.container}", 34) for f, _ in rows], fontsize=7)
    ax.set_xlabel(f"hours since {datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M} UTC"
                  + (f" ({bin_h} h per column)" if bin_h > 1 else ""), fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.colorbar(img, ax=ax, label="mean GPU duty cycle (%)", fraction=0.04, pad=0.02)
    ax.set_title(f"GPU duty cycle of idle GPUs: {len(rows)} of {len(found)} containers", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def render_charts(report: WasteReport, usage: UsageInput | None = None) -> dict[str, bytes]:
    """PNG charts by name (a subset of :data:`CHARTS`, in that order); charts without data are left out.

    ``usage`` carries the series the usage and GPU heatmap charts need (see the
    module docstring); without it only the top wasters chart can be drawn.
    """
    series = usage_series(usage)
    drawn = {"top_wasters": _top_wasters_chart(report),
             "usage_vs_request": _usage_chart(report, series) if series else None,
             "gpu_idle_heatmap": _gpu_heatmap(report, series) if series else None}
    return {name: png for name, png in drawn.items() if png is not None}


# -- HTML -----------------------------------------------------------------------------------------------------
def chart_cid(name: str) -> str:
    """The Content-ID (without angle brackets) of chart ``name`` in the email (RFC 2392: ``id@domain``)."""
    return f"{name}@effopt"


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f} USD"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def _signed(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:+,.2f} {unit}".rstrip()


def _when(value: Period) -> str:
    """A period bound for display: a datetime (naive = UTC) or epoch seconds as UTC, text as given."""
    if value is None:
        return "the start of the data"
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, datetime):
        v = value if value.tzinfo is None else value.astimezone(UTC)
        return f"{v:%Y-%m-%d %H:%M} UTC"
    return str(value)


def finding_waste_text(f: Finding) -> str:
    """``"12.34 USD"``, or ``"price missing: <what>"`` for an unpriced finding (never 0)."""
    if f.monthly_waste is None:
        return "price missing: " + ("; ".join(f.missing) or "unknown price")
    return _usd(f.monthly_waste)


def _waster_groups(report: WasteReport) -> list[dict[str, Any]]:
    by_workload: dict[str, list[Finding]] = {}
    for f in report.findings:
        by_workload.setdefault(f.workload, []).append(f)
    groups = []
    for r in report.top_wasters():
        fs = sorted(by_workload.get(r["workload"], []),
                    key=lambda f: (-(f.monthly_waste if f.monthly_waste is not None else -1.0), f.kind, f.container))
        groups.append({
            "workload": r["workload"], "cost": _usd(r["cost"]), "waste": _usd(r["waste"]),
            "rows": [{"container": f.container, "kind": f.kind, "severity": f.severity,
                      "waste": finding_waste_text(f), "unpriced": f.monthly_waste is None,
                      "recommendation": f.advice.action} for f in fs[:FINDINGS_PER_WASTER]],
            "more": max(0, len(fs) - FINDINGS_PER_WASTER),
        })
    return groups


def _trend_context(report: WasteReport, previous: Mapping[str, Any] | None) -> dict[str, Any] | None:
    tr = report.trend(previous)
    if tr is None:
        return None
    rows = [("Monthly cost", _usd(tr["cost"]["previous"]), _usd(tr["cost"]["now"]),
             _signed(tr["cost"]["change"], "USD")),
            ("Monthly waste", _usd(tr["waste"]["previous"]), _usd(tr["waste"]["now"]),
             _signed(tr["waste"]["change"], "USD")),
            ("Waste share", _pct(tr["waste_pct"]["previous"]), _pct(tr["waste_pct"]["now"]),
             _signed(tr["waste_pct"]["change"], "points"))]
    rows += [(f"Waste: {k}", _usd(d["previous"]), _usd(d["now"]), _signed(d["change"], "USD"))
             for k, d in tr["by_kind"].items() if d["now"] or d["previous"]]
    return {"rows": [dict(zip(("label", "previous", "now", "change"), r, strict=True)) for r in rows],
            "new": tr["new_findings"], "resolved": tr["resolved_findings"],
            "previous_at": tr.get("previous_generated_at")}


def report_context(report: WasteReport, charts: Mapping[str, bytes], *, title: str, period_start: Period,
                   period_end: Period, previous: Mapping[str, Any] | None = None,
                   inline_images: bool = False) -> dict[str, Any]:
    """Everything the template shows, as display strings (so the template holds no arithmetic)."""
    t = report.totals()
    unpriced = t["unpriced_findings_by_kind"]
    missing = report.missing_prices()
    images = {}
    for name in CHARTS:
        if name in charts:
            src = ("data:image/png;base64," + base64.b64encode(charts[name]).decode("ascii") if inline_images
                   else "cid:" + chart_cid(name))
            images[name] = src
    wasters = _all_wasters(report)
    if not wasters:
        no_chart = "No chart: no workload has priced waste."
    elif _all_equal(wasters):
        no_chart = (f"No chart: the {min(len(wasters), MAX_BARS)} top wasters each waste about "
                    f"{_usd(wasters[0]['waste'])} a month.")
    else:
        no_chart = ""
    return {
        "title": title, "period_start": _when(period_start), "period_end": _when(period_end),
        "window": report.window_text(), "top_wasters_no_chart": no_chart,
        "quality_headline": report.quality.headline(), "quality_notes": list(report.quality.notes),
        "cost": _usd(t["cost"]), "waste": _usd(t["waste"]), "waste_pct": _pct(t["waste_pct"]),
        "workloads": t["workloads"], "findings": t["findings"],
        "unpriced_findings": sum(unpriced.values()),
        "by_kind": [{"kind": k, "waste": _usd(t["by_kind"][k]), "unpriced": unpriced.get(k, 0)} for k in KINDS
                    if t["by_kind"][k] or unpriced.get(k)],
        "by_label": [{"label": k, "cost": _usd(v["cost"]), "waste": _usd(v["waste"])}
                     for k, v in list(t["by_label"].items())[:MAX_BARS]],
        "wasters": _waster_groups(report),
        "missing": [{"where": f"{m['workload']}/{m['container']} {m['resource']}", "what": m["missing"]}
                    for m in missing[:MAX_MISSING_LISTED]],
        "missing_more": max(0, len(missing) - MAX_MISSING_LISTED),
        "trend": _trend_context(report, previous),
        "images": images,
        "assumptions": list(report.assumptions), "rate_table": report.rate_table, "pricing": report.pricing,
        "csv_filename": CSV_FILENAME,
    }


def _environment(templates_dir: str | Path | None) -> jinja2.Environment:
    loader: jinja2.BaseLoader = (jinja2.FileSystemLoader(str(templates_dir)) if templates_dir
                                 else jinja2.PackageLoader(*TEMPLATES_PACKAGE))
    return jinja2.Environment(loader=loader, autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(report: WasteReport, charts: Mapping[str, bytes], *, title: str, period_start: Period,
                period_end: Period, previous: Mapping[str, Any] | None = None,
                templates_dir: str | Path | None = None, inline_images: bool = False) -> str:
    """The HTML email body.  Charts are referenced as ``cid:`` (see :func:`chart_cid`), or embedded as
    ``data:`` URIs with ``inline_images=True`` (for an HTML file, which has no MIME parts)."""
    ctx = report_context(report, charts, title=title, period_start=period_start, period_end=period_end,
                         previous=previous, inline_images=inline_images)
    return _environment(templates_dir).get_template(TEMPLATE).render(**ctx)


# -- email ----------------------------------------------------------------------------------------------------
def render_plain(report: WasteReport, *, title: str) -> str:
    """The plain-text alternative: totals, top wasters with their findings, missing prices."""
    t = report.totals()
    headline = report.quality.headline()
    lines = [title, ""] + ([f"DATA QUALITY: {headline}", ""] if headline else []) + [
             f"{report.window_text()}.", f"{t['workloads']} containers, {t['findings']} findings",
             f"monthly cost {_usd(t['cost'])}, waste {_usd(t['waste'])} ({_pct(t['waste_pct'])})", "",
             "Waste by kind:"]
    unpriced = t["unpriced_findings_by_kind"]
    lines += [f"  {k}: {_usd(t['by_kind'][k])}" + (f" (+{unpriced[k]} finding(s): price missing)" if k in unpriced
                                                   else "")
              for k in KINDS if t["by_kind"][k] or k in unpriced]
    lines += ["", "Top wasters:"]
    for g in _waster_groups(report):
        lines.append(f"  {g['workload']}: cost {g['cost']}, waste {g['waste']}")
        lines += [f"    - [{r['severity']}] {r['kind']} {r['container']}: {r['waste']}; {r['recommendation']}"
                  for r in g["rows"]]
        if g["more"]:
            lines.append(f"    (+{g['more']} more in {CSV_FILENAME})")
    missing = report.missing_prices()
    if missing:
        lines += ["", "Missing prices (not counted, never zero):"]
        lines += [f"  - {m['workload']}/{m['container']} {m['resource']}: {m['missing']}"
                  for m in missing[:MAX_MISSING_LISTED]]
    lines += ["", f"All findings are attached as {CSV_FILENAME}; the HTML version has the charts."]
    return "\n".join(lines) + "\n"


def build_message(report: WasteReport, *, subject: str, sender: str, recipients: Iterable[str], html: str,
                  charts: Mapping[str, bytes], csv_text: str, message_id: str | None = None) -> EmailMessage:
    """The email: ``multipart/mixed`` [``multipart/alternative`` [text/plain, ``multipart/related``
    [text/html, image/png...]], text/csv attachment].

    Each chart is attached inline under ``Content-ID: <chart_cid(name)>``, as
    :func:`render_html` references it.  ``message_id`` (with or without angle
    brackets) makes the Message-ID deterministic, e.g. one per report period
    so the delivery layer can recognise a message it already sent.
    """
    to = [r.strip() for r in recipients if r and r.strip()]
    if not to:
        raise ValueError("no recipients")
    if not sender.strip():
        raise ValueError("no sender")
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(usegmt=True)
    if message_id:
        mid = message_id.strip()
        msg["Message-ID"] = mid if mid.startswith("<") and mid.endswith(">") else f"<{mid}>"
    else:
        msg["Message-ID"] = make_msgid(domain="effopt")
    msg.set_content(render_plain(report, title=subject))
    msg.add_alternative(html, subtype="html")
    html_part = msg.get_payload()[1]
    for name in CHARTS:
        if name in charts:
            html_part.add_related(charts[name], maintype="image", subtype="png", cid=f"<{chart_cid(name)}>",
                                  filename=f"{name}.png", disposition="inline")
    msg.add_attachment(csv_text, subtype="csv", filename=CSV_FILENAME)
    return msg
