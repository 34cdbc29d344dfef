"""``python -m effopt rightsize``: recommend resources from usage traces and backtest the recommenders."""

from __future__ import annotations

import argparse
import math
import re
from typing import Any

from effopt.cli import dumps
from effopt.cli.progress import ProgressBar
from effopt.cli.table import human_bytes, render

METRICS = {"memory": "memory", "gpu_memory": "gpu_memory", "cpu": "cpu", "gpu_util": "gpu_util"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadInput(SystemExit):
    """Bad input on the command line: :func:`effopt.cli.main` prints ``error: ...`` on stderr and exits 2."""

    def __init__(self, message: str) -> None:
        super().__init__(f"error: {message}")


def duration(text: str) -> float:
    """``90s``, ``30m``, ``1h``, ``1.5d``, ``2w`` or plain seconds -> seconds (>= 0)."""
    m = _DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30m, 1h, 6h, 1d)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def positive_duration(text: str) -> float:
    """A :func:`duration` above 0 (a decision step of 0 would never advance)."""
    value = duration(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be longer than 0, got {text!r}")
    return value


def _names() -> list[str]:
    from effopt.rightsizing.base import recommender_names

    return recommender_names()


def register(parser: argparse.ArgumentParser) -> None:
    names = _names()
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    set_help = ("override a recommender setting (repeatable): name=value for every recommender that has it, or "
                "recommender.name=value; see 'rightsize settings'")

    bt = sub.add_parser("backtest", help="replay a usage trace and score recommenders (slack, overruns, changes, "
                                         "gap closed to the hindsight limit)")
    bt.add_argument("--trace", required=True, help="trace file (CSV or CSV.gz) or a directory of them")
    bt.add_argument("--metric", choices=sorted(METRICS), default="memory", help="resource to backtest")
    bt.add_argument("--recommenders", default=",".join(names),
                    help=f"comma-separated, of {', '.join(names)} (default all)")
    bt.add_argument("--step", type=positive_duration, default=3600.0, help="decision interval (default 1h)")
    bt.add_argument("--warmup", type=duration, default=6 * 3600.0,
                    help="history before the first decision (default 6h)")
    bt.add_argument("--folds", type=int, default=1,
                    help="leave containers out of their own fleet prior: calibrate each of N groups of containers "
                         "on the others (default 1: in-sample)")
    bt.add_argument("--by-history", action="store_true",
                    help="also show the scores by hours of a container's history at the decision")
    bt.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help=set_help)
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.set_defaults(func=_backtest)

    rec = sub.add_parser("recommend", help="recommend requests per container from a usage trace")
    rec.add_argument("--trace", required=True, help="trace file (CSV or CSV.gz) or a directory of them")
    rec.add_argument("--metric", choices=sorted(METRICS), default="memory", help="resource to recommend")
    rec.add_argument("--recommender", choices=names, default="effopt", help="the recommender (default effopt)")
    rec.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="override a setting of the recommender (repeatable); see 'rightsize settings'")
    rec.add_argument("--json", action="store_true", help="one JSON object per container")
    rec.set_defaults(func=_recommend)

    st = sub.add_parser("settings", help="list each recommender's settings: default, bounds, description")
    st.add_argument("--recommender", choices=names, help="only this recommender")
    st.set_defaults(func=_settings)


def parse_set(items: list[str], names: list[str]) -> dict[str, dict[str, str]]:
    """``--set`` items as ``{recommender: {setting: value}}`` for the recommenders ``names``: ``name=value``
    goes to every one that declares the setting, ``recommender.name=value`` to that one; an unknown setting or
    recommender raises :class:`BadInput` naming it (values are validated when the recommenders are made)."""
    from dataclasses import fields

    from effopt.rightsizing.base import recommender_class
    from effopt.rightsizing.settings import SettingError, parse_assignments

    try:
        assignments = parse_assignments(items)
    except SettingError as exc:
        raise BadInput(str(exc)) from None
    declared = {n: {f.name for f in fields(recommender_class(n).settings_class)} for n in names}
    out: dict[str, dict[str, str]] = {n: {} for n in names}
    for key, value in assignments.items():
        owner, dot, name = key.rpartition(".")
        if dot:
            if owner not in declared:
                raise BadInput(f"--set {key}={value}: {owner!r} is not one of the recommenders "
                               f"({', '.join(names)})")
            if name not in declared[owner]:
                raise BadInput(f"--set {key}={value}: recommender {owner!r} has no setting {name!r}; known: "
                               f"{', '.join(sorted(declared[owner]))}")
            out[owner][name] = value
            continue
        takers = [n for n in names if name in declared[n]]
        if not takers:
            raise BadInput(f"--set {key}={value}: no recommender of {', '.join(names)} has a setting {name!r}")
        for n in takers:
            out[n][name] = value
    return out


def _recommenders(names: str, sets: list[str]) -> dict[str, Any]:
    from effopt.rightsizing.base import get_recommender, recommender_names

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise BadInput("--recommenders is empty")
    unknown = [n for n in wanted if n not in recommender_names()]
    if unknown:
        raise BadInput(f"unknown recommender {unknown[0]!r}; known: {', '.join(recommender_names())}")
    settings = parse_set(sets, wanted)
    try:
        return {n: get_recommender(n, settings[n]) for n in wanted}
    except ValueError as exc:  # SettingError: the message names the setting
        raise BadInput(f"--set: {exc}") from None


def _load(trace: str, metric: str) -> list[Any]:
    from effopt.metrics.trace import TraceSource

    try:
        return TraceSource(trace).series(METRICS[metric])  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as exc:
        raise BadInput(str(exc)) from None


def _backtest(args: argparse.Namespace) -> int:
    from effopt.rightsizing import backtest

    if args.folds < 1:
        raise BadInput(f"--folds must be >= 1, got {args.folds}")
    recs = _recommenders(args.recommenders, args.set)
    series = _load(args.trace, args.metric)
    if not series:
        raise BadInput(f"no {args.metric} series in {args.trace}")
    result = backtest(series, recs, step_s=args.step, warmup_s=args.warmup, metric=args.metric, folds=args.folds,
                      progress=ProgressBar(f"backtest {args.metric}"))
    if args.json:
        print(dumps(result.as_json(by_history=args.by_history)))
        return 0
    print(render_backtest(result))
    if args.by_history:
        print()
        print(render_by_history(result))
    return 0


def _ratio(a: float, b: float | None) -> float | str:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else "-"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def render_backtest(result: Any) -> str:
    """The backtest as a table: slack (also relative to VPA's), overruns, changes and the gap closed to the
    hindsight limit, with the hindsight limit and the deployed limits as rows of their own."""
    vpa = result.recommenders.get("vpa")
    base = vpa.mean_slack if vpa is not None else None
    rows = []
    for name, s in result.recommenders.items():
        rows.append((name, s.mean_slack, _ratio(s.mean_slack, base), s.overrun_events, s.overrun_fraction,
                     _pct(result.gap_closed(name)), s.changes, s.windows))
    if result.hindsight is not None:
        h = result.hindsight
        rows.append(("hindsight", h.mean_slack, _ratio(h.mean_slack, base), 0, 0.0, "100.0%", 0, h.windows))
    if result.deployed is not None:
        d = result.deployed
        rows.append(("deployed", d.mean_slack, _ratio(d.mean_slack, base), d.overrun_events, d.overrun_fraction,
                     "-", d.changes, d.windows))
    folds = "in-sample" if result.folds <= 1 else f"leave-out over {result.folds} groups of containers"
    head = (f"backtest {result.metric}: {result.containers} containers, step {result.step_s / 3600:g} h, "
            f"warmup {result.warmup_s / 3600:g} h, fleet priors {folds}, {result.skipped_windows} window(s) "
            "skipped (a recommender lacked data)")
    table = render(("recommender", "mean slack", "vs vpa", "overruns", "overrun frac", "gap closed", "changes",
                    "windows"), rows)
    return (head + "\n" + table + "\nhindsight = each container held at its peak over its scored windows (zero "
            "overruns); gap closed = (vpa slack - slack) / (vpa slack - hindsight slack)")


def render_by_history(result: Any) -> str:
    """Mean slack (overrun events) and gap closed by hours of a container's history at the decision."""
    names = list(result.recommenders)
    rows = []
    for band in result.by_history:
        row: list[object] = [band.hours, band.windows]
        for n in names:
            s = band.recommenders[n]
            row.append(f"{s.mean_slack:.3f} ({s.overrun_events})")
        row.append(f"{band.hindsight.mean_slack:.3f}")
        row += [_pct(band.gap_closed(n)) for n in names if n != "vpa"]
        rows.append(row)
    heads = ["history h", "windows", *[f"{n} slack (overruns)" for n in names], "hindsight slack",
             *[f"{n} gap closed" for n in names if n != "vpa"]]
    return f"{result.metric} by hours of history at the decision\n" + render(heads, rows)


def _recommend(args: argparse.Namespace) -> int:
    from effopt.rightsizing import NotEnoughData

    rec = _recommenders(args.recommender, args.set)[args.recommender]
    series = _load(args.trace, args.metric)
    prior = rec.calibrate(series)
    rows = []
    for s in series:
        try:
            r = rec.recommend(s) if prior is None else rec.recommend(s, None, prior)
        except NotEnoughData as exc:
            if args.json:
                print(dumps({"workload": s.workload, "container": s.container, "error": str(exc),
                                  "quality": s.quality.as_dict()}))
            else:
                rows.append((s.container, "-", "-", "-", "-", "-", str(exc)))
            continue
        if args.json:
            print(dumps({**r.as_dict(), "quality": s.quality.as_dict()}))
            continue
        fmt = human_bytes if r.unit == "bytes" else (lambda v: f"{v:.3f}")
        gpu = r.gpu.smallest_slice.name if r.gpu and r.gpu.smallest_slice else (
            r.gpu.smallest_gpu.name if r.gpu and r.gpu.smallest_gpu else "")
        basis = "-" if r.evidence.fleet_weight is None else ("fleet" if r.evidence.rests_on_fleet else "own")
        rows.append((s.container, fmt(r.target), fmt(r.lower), fmt(r.upper), f"{r.confidence:.2f}", basis,
                     gpu or "; ".join(s.quality.issues)))
    if not args.json:
        print(render(("container", "target", "lower", "upper", "confidence", "rests on", "gpu / notes"), rows))
    return 0


def _settings(args: argparse.Namespace) -> int:
    from effopt.rightsizing.base import recommender_class
    from effopt.rightsizing.settings import describe

    rows = []
    for name in [args.recommender] if args.recommender else _names():
        for info in describe(recommender_class(name).settings_class):
            bounds = "true, false" if info.type == "bool" else str(info.bounds)  # a number's range means nothing
            rows.append((name, info.name, info.type, repr(info.default), bounds, info.description))
    print(render(("recommender", "setting", "type", "default", "bounds", "description"), rows))
    return 0
