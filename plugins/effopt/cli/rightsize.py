"""``python -m effopt rightsize``: recommend resources from usage traces and backtest the recommenders."""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from effopt.cli.table import human_bytes, render

METRICS = {"memory": "memory", "gpu_memory": "gpu_memory", "cpu": "cpu", "gpu_util": "gpu_util"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``1.5d``, ``2w`` or plain seconds -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30m, 1h, 6h, 1d)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    bt = sub.add_parser("backtest", help="replay a usage trace and score recommenders (slack, overruns, changes)")
    bt.add_argument("--trace", required=True, help="trace file (CSV or CSV.gz) or a directory of them")
    bt.add_argument("--metric", choices=sorted(METRICS), default="memory", help="resource to backtest")
    bt.add_argument("--recommenders", default="effopt,vpa,krr", help="comma-separated (default effopt,vpa,krr)")
    bt.add_argument("--step", type=duration, default=3600.0, help="decision interval (default 1h)")
    bt.add_argument("--warmup", type=duration, default=6 * 3600.0, help="history before the first decision (default 6h)")
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.set_defaults(func=_backtest)

    rec = sub.add_parser("recommend", help="recommend requests per container from a usage trace")
    rec.add_argument("--trace", required=True, help="trace file (CSV or CSV.gz) or a directory of them")
    rec.add_argument("--metric", choices=sorted(METRICS), default="memory", help="resource to recommend")
    rec.add_argument("--recommender", default="effopt", help="effopt, vpa or krr (default effopt)")
    rec.add_argument("--json", action="store_true", help="one JSON object per container")
    rec.set_defaults(func=_recommend)


def _recommenders(names: str) -> dict[str, Any]:
    from effopt.rightsizing import get_recommender

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise SystemExit("error: --recommenders is empty")
    try:
        return {n: get_recommender(n) for n in wanted}
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _load(trace: str, metric: str) -> list[Any]:
    from effopt.metrics.trace import TraceSource

    try:
        return TraceSource(trace).series(METRICS[metric])  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


class _Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal or forced)."""

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or not total:
            return
        width = 30
        fill = int(width * done / total)
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _backtest(args: argparse.Namespace) -> int:
    from effopt.rightsizing import backtest

    recs = _recommenders(args.recommenders)
    series = _load(args.trace, args.metric)
    if not series:
        raise SystemExit(f"error: no {args.metric} series in {args.trace}")
    result = backtest(series, recs, step_s=args.step, warmup_s=args.warmup, metric=args.metric,
                      progress=_Progress(f"backtest {args.metric}", enabled=True if not args.json else None))
    if args.json:
        print(json.dumps(result.as_json()))
        return 0
    print(render_backtest(result))
    return 0


def render_backtest(result: Any) -> str:
    """The backtest as a table, with mean slack relative to VPA's when VPA was scored."""
    scores = dict(result.recommenders)
    if result.deployed is not None:
        scores["deployed"] = result.deployed
    vpa = result.recommenders.get("vpa")
    rows = []
    for name, s in scores.items():
        ratio = s.mean_slack / vpa.mean_slack if vpa is not None and vpa.mean_slack else float("nan")
        rows.append((name, s.mean_slack, ratio, s.overrun_events, s.overrun_fraction, s.changes, s.windows))
    head = (f"backtest {result.metric}: {result.containers} containers, step {result.step_s / 3600:g} h, "
            f"warmup {result.warmup_s / 3600:g} h, {result.skipped_windows} window(s) skipped (a recommender "
            "lacked data)")
    return head + "\n" + render(("recommender", "mean slack", "vs vpa", "overruns", "overrun frac", "changes",
                                 "windows"), rows)


def _recommend(args: argparse.Namespace) -> int:
    from effopt.rightsizing import NotEnoughData

    rec = next(iter(_recommenders(args.recommender).values()))
    rows = []
    for s in _load(args.trace, args.metric):
        try:
            r = rec.recommend(s)
        except NotEnoughData as exc:
            if args.json:
                print(json.dumps({"workload": s.workload, "container": s.container, "error": str(exc),
                                  "quality": s.quality.as_dict()}))
            else:
                rows.append((s.container, "-", "-", "-", "-", str(exc)))
            continue
        if args.json:
            print(json.dumps({**r.as_dict(), "quality": s.quality.as_dict()}))
            continue
        fmt = human_bytes if r.unit == "bytes" else (lambda v: f"{v:.3f}")
        gpu = r.gpu.smallest_slice.name if r.gpu and r.gpu.smallest_slice else (
            r.gpu.smallest_gpu.name if r.gpu and r.gpu.smallest_gpu else "")
        rows.append((s.container, fmt(r.target), fmt(r.lower), fmt(r.upper), f"{r.confidence:.2f}",
                     gpu or "; ".join(s.quality.issues)))
    if not args.json:
        print(render(("container", "target", "lower", "upper", "confidence", "gpu / notes"), rows))
    return 0
