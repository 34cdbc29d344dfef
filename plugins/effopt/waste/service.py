"""The waste-report use case, shared by the Airflow operators and the command line: usage -> rendered report.

:func:`build_report` runs every detector over the workloads, prices them,
compares with the previous report and renders everything a reader gets: the
JSON summary, the charts, the HTML email (charts as ``cid:`` parts), the
same HTML as a standalone page (charts as ``data:`` URIs) and the CSV of
findings.  Where the usage, the prices and the previous report come from is
the caller's business.  Plain Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from effopt.prices import RateTable
from effopt.waste.cost import fleet_daily_costs
from effopt.waste.render import render_charts, render_html
from effopt.waste.report import WasteReport, WasteSettings, WorkloadUsage, analyze, observed_bounds


@dataclass
class RenderedReport:
    report: WasteReport
    summary: dict[str, Any]
    charts: dict[str, bytes]
    html_email: str  # charts referenced as cid: (the parts of the email)
    html_page: str  # charts inline as data: URIs (a file, the effopt page)
    csv: str


def build_report(
    workloads: Sequence[WorkloadUsage],
    rates: RateTable,
    *,
    settings: WasteSettings | None = None,
    assumptions: Sequence[str] = (),
    cache_summary: Mapping[str, Any] | None = None,
    previous: Mapping[str, Any] | None = None,
    title: str = "effopt waste report",
    templates_dir: str | None = None,
    period_start: float | str | None = None,
    period_end: float | str | None = None,
    cost_anomalies: bool = True,
    progress: Callable[[int, int], None] | None = None,
    source_issues: Sequence[str] = (),
    spot_jobs: Sequence[Any] = (),
    spot_catalog: Any = None,
) -> RenderedReport:
    """Analyse, price and render.  The period defaults to the span of the usage (first to last sample)."""
    settings = settings or WasteSettings()
    daily = {"*": fleet_daily_costs(workloads, rates, pricing=settings.pricing)} if cost_anomalies else None
    report = analyze(workloads, rates, settings=settings, assumptions=assumptions, cache_summary=cache_summary,
                     daily_costs=daily, progress=progress, source_issues=source_issues, spot_jobs=spot_jobs,
                     spot_catalog=spot_catalog)
    summary = report.to_json(previous)
    first, last = observed_bounds(workloads)
    start = period_start if period_start is not None else first
    end = period_end if period_end is not None else last
    charts = render_charts(report, usage=workloads)
    kwargs: dict[str, Any] = {"title": title, "period_start": start, "period_end": end, "previous": previous,
                              "templates_dir": templates_dir}
    return RenderedReport(report, summary, charts, render_html(report, charts, **kwargs),
                          render_html(report, charts, inline_images=True, **kwargs), report.to_csv())
