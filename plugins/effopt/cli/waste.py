"""``python -m effopt waste``: detect and price waste in usage data, print the report (text or JSON)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from effopt.cli import dumps
from effopt.cli.table import render
from effopt.units import GIB


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    rep = sub.add_parser("report", help="analyse usage data and print the waste report")
    rep.add_argument("--source", choices=("trace",), default="trace",
                     help="where usage comes from (trace: CSV files laid out like alibaba-genai-2026)")
    rep.add_argument("--path", required=True, help="directory of trace files (or one file)")
    rep.add_argument("--memory-limit-gib", type=float, default=16.0,
                     help="memory limit (= request) per container when the trace gives a fraction of it (default 16)")
    rep.add_argument("--gpu-model", default="A100", help="GPU model of containers with GPU series (default A100)")
    rep.add_argument("--gpu-count", type=float, default=1.0, help="GPUs per container with GPU series (default 1)")
    rep.add_argument("--rate-table", default="", help="rate table JSON (default: the bundled one)")
    rep.add_argument("--pricing", choices=("on_demand", "spot"), default="on_demand", help="pricing model")
    rep.add_argument("--recommender", default="krr", help="right-sizing recommender for recommended values")
    rep.add_argument("--top", type=int, default=10, help="top wasters and findings to list (default 10)")
    rep.add_argument("--previous", default="", help="a previous report's JSON file, for the trend")
    rep.add_argument("--json", action="store_true", help="print one JSON object")
    rep.add_argument("--html", default="", metavar="OUT.html",
                     help="also write the HTML email report to this file (charts embedded as data: URIs)")
    rep.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from effopt.cli.progress import ProgressBar
    from effopt.metrics.trace import TraceSource
    from effopt.prices import PriceError, load_rate_table
    from effopt.waste import TraceAssumptions, WasteSettings
    from effopt.waste.service import build_report
    from effopt.waste.trace import workloads_from_source

    if not 0 < args.memory_limit_gib < 1e9:  # a finite, positive number of GiB (nan and inf refused)
        raise SystemExit(f"error: --memory-limit-gib must be a positive number, got {args.memory_limit_gib}")
    if not 0 < args.gpu_count < 1e6:
        raise SystemExit(f"error: --gpu-count must be a positive number, got {args.gpu_count}")
    try:
        rates = load_rate_table(args.rate_table or None)
    except PriceError as exc:
        raise SystemExit(f"error: {exc}") from None
    assumptions = TraceAssumptions(args.memory_limit_gib * GIB, args.gpu_model, args.gpu_count)
    previous = None
    if args.previous:
        try:
            with open(args.previous, encoding="utf-8") as fh:
                previous = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"error: cannot read previous report {args.previous}: {exc}") from None
    try:
        source = TraceSource(args.path)
        workloads = workloads_from_source(source, assumptions, what=str(args.path))
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    progress = ProgressBar("waste") if len(workloads) >= 50 else None
    try:
        rendered = build_report(workloads, rates, assumptions=assumptions.describe(), previous=previous,
                                settings=WasteSettings(recommender=args.recommender, pricing=args.pricing,
                                                       top=args.top),
                                title="Waste report", cost_anomalies=False, progress=progress,
                                source_issues=source.issues())
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if args.html:
        try:
            with open(args.html, "w", encoding="utf-8") as fh:
                fh.write(rendered.html_page)
        except OSError as exc:
            raise SystemExit(f"error: cannot write {args.html}: {exc}") from None
    if args.json:
        print(dumps(rendered.summary))
        return 0
    print(render_text(rendered.summary, args.top))
    return 0


def _usd(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f} USD"


def render_text(data: dict[str, Any], top: int) -> str:
    """The report as plain text: assumptions, totals, top wasters, the first findings, missing prices."""
    t = data["totals"]
    pct = "n/a" if t["waste_pct"] is None else f"{t['waste_pct']:.1f}%"
    headline = data["data_quality"]["headline"]
    lines = ([f"DATA QUALITY: {headline}", ""] if headline else []) + ["assumptions:"] + [
        f"  - {a}" for a in data["assumptions"]]
    lines += [f"rate table: {data['rate_table']} ({data['pricing']})", f"{data['window']}", "",
              f"{t['workloads']} containers, {t['findings']} findings; monthly cost {_usd(t['cost'])}, "
              f"waste {_usd(t['waste'])} ({pct})", ""]
    lines.append(render(("kind", "monthly waste (USD)", "unpriced findings"),
                        [(k, v, t["unpriced_findings_by_kind"].get(k, 0)) for k, v in t["by_kind"].items()]))
    lines += ["", "top wasters:"]
    lines.append(render(("workload", "cost", "waste", "kinds"),
                        [(w["workload"], w["cost"], w["waste"], ",".join(w["kinds"])) for w in data["top_wasters"]]))
    lines += ["", f"findings (first {top} of {len(data['findings'])}):"]
    lines.append(render(("severity", "kind", "container", "resource", "monthly waste", "recommendation"),
                        [(f["severity"], f["kind"], f["container"], f["resource"],
                          "unpriced" if f["monthly_waste"] is None else f["monthly_waste"],
                          f["recommendation"]["action"]) for f in data["findings"][:top]]))
    if data["missing_prices"]:
        lines += ["", "missing prices (not counted, never zero):"]
        lines += [f"  - {m['workload']}/{m['container']} {m['resource']}: {m['missing']}"
                  for m in data["missing_prices"][:top]]
    if data.get("trend"):
        tr = data["trend"]
        lines += ["", f"trend: waste {tr['waste']['change']:+,.2f} USD vs previous; "
                      f"{tr['new_findings']} new, {tr['resolved_findings']} resolved finding(s)"]
    return "\n".join(lines)
