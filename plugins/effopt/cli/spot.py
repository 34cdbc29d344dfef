"""``python -m effopt spot simulate|choose``: spot placement on real availability traces and prices."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from effopt.cli.progress import ProgressBar
from effopt.cli.table import render

DEFAULT_POLICIES = "on-demand,greedy,uniform-progress,effopt"


def _fail(message: str) -> SystemExit:
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def _floats(option: str, text: str, *, minimum: float | None = None, positive: bool = False) -> list[float]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise _fail(f"{option}: {part!r} is not a number") from None
        if not math.isfinite(v):
            raise _fail(f"{option}: {part!r} is not a finite number")
        if positive and v <= 0:
            raise _fail(f"{option}: {part} must be positive")
        if minimum is not None and v < minimum:
            raise _fail(f"{option}: {part} must not be negative" if minimum == 0 else f"{option}: {part} < {minimum}")
        out.append(v)
    if not out:
        raise _fail(f"{option} is empty")
    return out


def _json_file(option: str, path: str | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise _fail(f"{option} {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise _fail(f"{option} {path} is not valid JSON: {exc}") from None


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    sim = sub.add_parser("simulate", help="replay spot availability traces under execution policies")
    sim.add_argument("--traces", required=True, help="a trace file or a directory of them (searched recursively)")
    sim.add_argument("--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default {DEFAULT_POLICIES})")
    sim.add_argument("--zones", help="only these zones (comma-separated zone names, e.g. us-east-1a,us-east-1c)")
    sim.add_argument("--work-hours", default="48", help="work C in hours (default 48)")
    sim.add_argument("--deadlines", default="52,70", help="deadlines D in hours, comma-separated (default 52,70)")
    sim.add_argument("--changeovers", default="0.05,0.2", help="changeover d in hours (default 0.05,0.2)")
    sim.add_argument("--checkpoint-hours", default="0", help="checkpoint interval k in hours (default 0: continuous)")
    sim.add_argument("--od-failure", default="0", help="chance that an on-demand launch fails (default 0)")
    sim.add_argument("--starts", type=int, default=30, help="seeded random start offsets per setting (default 30)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the start offsets and launch failures")
    sim.add_argument("--nodes", type=int, default=1, help="instances the job needs (spot if a trace value >= it)")
    sim.add_argument("--layout", choices=("both", "single", "multi"), default="both",
                     help="each zone alone, all zones of a folder together, or both (default)")
    sim.add_argument("--prices", help="JSON: {\"k80_1\" or instance type: {\"on_demand\": x, \"spot\": y}} for "
                                      "traces the catalog cannot price")
    sim.add_argument("--zone-map", help="JSON: {zone name: AZ ID} of your account (default: region medians)")
    sim.add_argument("--catalog", help="spot catalog JSON (default: the embedded snapshot)")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--plot", help="write a PNG of cost against deadline slack per policy")
    sim.set_defaults(func=_simulate)

    ch = sub.add_parser("choose", help="rank instance offerings for a job and pick spot or on-demand")
    ch.add_argument("--hours", type=float, required=True, help="work in hours")
    ch.add_argument("--deadline-hours", type=float, help="deadline in hours after the start (default: none)")
    ch.add_argument("--vcpus", type=float, default=0.0)
    ch.add_argument("--memory-gib", type=float, default=0.0)
    ch.add_argument("--gpus", type=int, default=0)
    ch.add_argument("--gpu-model", action="append", default=[], help="allowed GPU model (repeatable)")
    ch.add_argument("--changeover-hours", type=float, default=0.2, help="changeover d per restart (default 0.2)")
    ch.add_argument("--checkpoint-hours", type=float, default=0.0, help="checkpoint interval k (default 0)")
    ch.add_argument("--region", action="append", default=[], help="allowed region (repeatable; default all)")
    ch.add_argument("--instance-type", action="append", default=[], help="allowed instance type (repeatable)")
    ch.add_argument("--capacity", default="spot,on-demand", help="capacity types to consider")
    ch.add_argument("--max-pools", type=int, default=3, help="spot pools to diversify over (default 3)")
    ch.add_argument("--top", type=int, default=10, help="ranked offerings to print (default 10)")
    ch.add_argument("--catalog", help="spot catalog JSON (default: the embedded snapshot)")
    ch.add_argument("--snapshot", help="which snapshot of the catalog is current (default: the newest)")
    ch.add_argument("--json", action="store_true", help="print the decision as JSON")
    ch.set_defaults(func=_choose)


def _catalog(path: str | None, snapshot: str | None = None) -> Any:
    from effopt.spot.catalog import SnapshotCatalog
    from effopt.spot.errors import SpotError

    try:
        return SnapshotCatalog.load(path, snapshot=snapshot)
    except SpotError as exc:
        raise _fail(str(exc)) from None


def _policy_names(text: str) -> list[str]:
    """The ``--policies`` list, every name a known policy."""
    from effopt.spot.policies import POLICIES

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if not names or unknown:
        raise _fail(f"--policies: unknown policy {', '.join(unknown) or '(none given)'} (known: "
                    f"{', '.join(POLICIES)})")
    return names


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    """The job's hours (work, deadlines, changeovers, checkpoint) and the on-demand failure rate, checked
    together, and ``--starts`` / ``--nodes``; keyword arguments of ``standard_settings``."""
    (work,) = _floats("--work-hours", args.work_hours, positive=True)[:1]
    deadlines = _floats("--deadlines", args.deadlines, positive=True)
    changeovers = _floats("--changeovers", args.changeovers, minimum=0)
    (checkpoint,) = _floats("--checkpoint-hours", args.checkpoint_hours, minimum=0)[:1]
    (od_failure,) = _floats("--od-failure", args.od_failure, minimum=0)[:1]
    if od_failure >= 1:
        raise _fail(f"--od-failure: {od_failure:g} must be below 1")
    for dl in deadlines:
        for d in changeovers:
            if dl < work + d:
                raise _fail(f"--deadlines: {dl:g} h is shorter than the work ({work:g} h) plus one changeover "
                            f"({d:g} h)")
    if args.starts < 1:
        raise _fail(f"--starts: {args.starts} must be >= 1")
    if args.nodes < 1:
        raise _fail(f"--nodes: {args.nodes} must be >= 1")
    return {"work_h": work, "deadlines_h": deadlines, "changeovers_h": changeovers, "checkpoint_h": checkpoint,
            "od_failure": od_failure}


def _price_options(args: argparse.Namespace) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(``--prices``, ``--zone-map``): each a JSON object, or None when not given."""
    prices = _json_file("--prices", args.prices)
    if prices is not None and not isinstance(prices, dict):
        raise _fail(f"--prices {args.prices}: expected a JSON object")
    zone_map = _json_file("--zone-map", args.zone_map)
    if zone_map is not None and not isinstance(zone_map, dict):
        raise _fail(f"--zone-map {args.zone_map}: expected a JSON object of zone name -> AZ ID")
    return prices, zone_map


def _zones_in_traces(args: argparse.Namespace, groups: Any) -> list[str] | None:
    """The ``--zones`` to simulate (None: all), every one of them in the traces."""
    zones = [z.strip() for z in args.zones.split(",") if z.strip()] if args.zones else None
    if zones:
        known = {z for g in groups for z in g.zones}
        missing = [z for z in zones if z not in known]
        if missing:
            raise _fail(f"--zones: {', '.join(missing)} not in {args.traces} (has {', '.join(sorted(known))})")
    return zones


def _print_simulation(args: argparse.Namespace, result: Any, names: list[str]) -> int:
    """The result as JSON or a table, and the plot when ``--plot`` names a file."""
    if args.plot:
        write_plot(result, names, args.plot)
    if args.json:
        print(json.dumps(result.as_dict(names), allow_nan=False))
        return 0
    print(render_simulation(result, names))
    if args.plot:
        print(f"\nwrote {args.plot}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    """``spot simulate``: check the options, load the catalog and the traces, run the policies, print the result."""
    from effopt.spot.errors import SpotError
    from effopt.spot.policies import POLICIES
    from effopt.spot.simulate import simulate as run
    from effopt.spot.simulate import standard_settings
    from effopt.spot.traces import load_traces

    names = _policy_names(args.policies)
    job = _job_options(args)
    prices, zone_map = _price_options(args)
    catalog = _catalog(args.catalog)
    try:
        groups = load_traces(args.traces)
        zones = _zones_in_traces(args, groups)
        cells = standard_settings(groups, **job, zones=zones, single=args.layout != "multi",
                                  multi=args.layout != "single")
        if not cells:
            raise _fail(f"no setting to run: {args.traces} has no zone set for --layout {args.layout}")
        policies = {n: POLICIES[n] for n in names}
        bar = ProgressBar("spot simulate", enabled=None)
        result = run(groups, policies, catalog, settings=cells, n_starts=args.starts, seed=args.seed,
                     nodes=args.nodes, overrides=prices, zone_map=zone_map, progress=bar)
    except SpotError as exc:
        raise _fail(str(exc)) from None
    return _print_simulation(args, result, names)


def _ratio(a: float | None, b: float | None) -> float | str:
    return a / b if a is not None and b else "-"


def render_simulation(result: Any, names: list[str]) -> str:
    """Per-setting cost against on-demand (misses in brackets), effopt / uniform-progress, totals and prices."""
    lines = []
    cols = [n for n in names if n != "on-demand"]
    headers = ["setting", *[f"{n}" for n in cols]]
    pair = "effopt" in cols and "uniform-progress" in cols
    if pair:
        headers.append("effopt/UP")
    rows = []
    for s in result.settings:
        row: list[object] = [s.setting.label]
        for n in cols:
            p = s.summaries[n]
            cost = f"{p.cost_vs_on_demand:.3f}" if p.cost_vs_on_demand is not None else "unpriced"
            row.append(f"{cost} ({p.deadline_misses})")
        if pair:
            r = _ratio(s.summaries["effopt"].cost_vs_on_demand, s.summaries["uniform-progress"].cost_vs_on_demand)
            row.append(f"{r:.3f}" if isinstance(r, float) else r)
        rows.append(row)
    lines.append("cost against on-demand-only (deadline misses), mean over each setting's jobs")
    lines.append(render(headers, rows))
    totals = result.policy_totals(names)
    lines.append("")
    lines.append("all settings: mean cost ratio over the priced settings, summed misses, lost work, changeovers")
    lines.append(render(["policy", "cost_vs_on_demand", "deadline_misses", "jobs", "lost_work_h", "changeovers",
                         "priced settings"],
                        [[n, "-" if t["cost_vs_on_demand"] is None else f"{t['cost_vs_on_demand']:.4f}",
                          t["deadline_misses"], t["jobs"], t["lost_work_h"], t["changeovers"],
                          f"{t['priced_settings']}/{t['settings']}"] for n, t in totals.items()]))
    lines.append("")
    lines.append("prices used")
    seen = set()
    for s in result.settings:
        rep = s.prices
        key = (s.setting.group, s.setting.zones)
        if key in seen or len(s.setting.zones) > 1:
            continue
        seen.add(key)
        if rep.get("priced"):
            z = s.setting.zones[0]
            method = rep.get("method")
            how = method.get(z) if isinstance(method, dict) else method
            lines.append(f"  {s.setting.group} {z}: {rep['instance_type']} on-demand ${rep['on_demand']:.4f}/h, "
                         f"spot ${rep['spot'][z]:.4f}/h ({how}; {rep.get('source')})")
        else:
            lines.append(f"  {s.setting.group} {s.setting.zones[0]}: {rep.get('note')}")
    for s in result.skipped:
        lines.append(f"  skipped {s['label']}: {s['reason']}")
    notes = sorted({n for s in result.settings for n in s.notes})
    for n in notes:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def write_plot(result: Any, names: list[str], out: str) -> None:
    """Mean cost against on-demand per deadline slack (D - C) / C, one line per policy (priced settings)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for layout, style in (("single zone", "-"), ("zones of a folder", "--")):
        multi = layout != "single zone"
        for n in names:
            pts: dict[float, list[float]] = {}
            for s in result.settings:
                p = s.summaries.get(n)
                if s.setting.multi_zone != multi or p is None or p.cost_vs_on_demand is None:
                    continue
                job = s.setting.job
                pts.setdefault((job.deadline_h - job.work_h) / job.work_h, []).append(p.cost_vs_on_demand)
            if not pts:
                continue
            xs = sorted(pts)
            ax.plot([100 * x for x in xs], [float(np.mean(pts[x])) for x in xs], style, marker="o", label=f"{n}, "
                    f"{layout}")
    ax.set_xlabel("deadline slack (D - C) / C, %")
    ax.set_ylabel("cost / on-demand-only cost")
    ax.set_title("spot policies on the spot-traces availability data")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def _choose(args: argparse.Namespace) -> int:
    from effopt.spot.choose import JobSpec, choose
    from effopt.spot.errors import SpotError

    if args.hours <= 0 or not math.isfinite(args.hours):
        raise _fail(f"--hours: {args.hours:g} must be a positive number")
    if args.changeover_hours < 0:
        raise _fail(f"--changeover-hours: {args.changeover_hours:g} must not be negative")
    if args.checkpoint_hours < 0:
        raise _fail(f"--checkpoint-hours: {args.checkpoint_hours:g} must not be negative")
    if args.deadline_hours is not None and args.deadline_hours < args.hours + args.changeover_hours:
        raise _fail(f"--deadline-hours: {args.deadline_hours:g} h is shorter than the work ({args.hours:g} h) plus "
                    f"one changeover ({args.changeover_hours:g} h)")
    for option, v in (("--vcpus", args.vcpus), ("--memory-gib", args.memory_gib), ("--gpus", args.gpus)):
        if v < 0:
            raise _fail(f"{option}: {v:g} must not be negative")
    catalog = _catalog(args.catalog, args.snapshot)
    try:
        job = JobSpec(args.hours, vcpus=args.vcpus, memory_gib=args.memory_gib, gpus=args.gpus,
                      gpu_models=tuple(args.gpu_model), deadline_hours=args.deadline_hours,
                      changeover_hours=args.changeover_hours, checkpoint_hours=args.checkpoint_hours,
                      regions=tuple(args.region), instance_types=tuple(args.instance_type),
                      capacity_types=tuple(c.strip() for c in args.capacity.split(",") if c.strip()),
                      max_pools=args.max_pools)
        placement = choose(job, catalog)
    except SpotError as exc:
        raise _fail(str(exc)) from None
    if args.json:
        print(json.dumps(placement.as_dict(), allow_nan=False))
        return 0
    print(f"decision: {placement.capacity} -> {placement.primary.key}")
    for r in placement.reasons:
        print(f"  - {r}")
    if placement.stale_prices:
        print(f"  - {len(placement.stale_prices)} stale price(s) among the offerings (see --json)")
    print(f"\nranked offerings (of {len(placement.ranked)}; catalog {placement.catalog_source}):")
    rows = []
    for o in placement.ranked[: max(1, args.top)]:
        rows.append([o.key, "-" if o.price.usd_per_hour is None else f"{o.price.usd_per_hour:.4f}",
                     "-" if o.hazard is None else f"{o.hazard.per_hour:.5f}",
                     "-" if o.expected_restarts is None else f"{o.expected_restarts:.3f}",
                     "-" if o.expected_runtime_h is None else f"{o.expected_runtime_h:.2f}",
                     "-" if o.cost_per_useful_hour is None else f"{o.cost_per_useful_hour:.4f}",
                     "yes" if o.eligible else "no", "; ".join(o.reasons)])
    print(render(["offering", "USD/h", "hazard/h", "restarts", "runtime h", "USD/useful h", "ok", "reasons"], rows))
    return 0
