"""``python -m effopt gpu``: simulate GPU placement policies on cluster traces (the FGD paper's experiment); show
a GPU inventory and the pools effopt_gpu_pools makes of it."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from effopt.cli import dumps
from effopt.cli.progress import ProgressBar
from effopt.cli.table import render

REPORT_X = (50, 90, 95, 100, 110, 120, 130)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 10:
        raise argparse.ArgumentTypeError(f"must be in (0, 10], got {value}")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sim = sub.add_parser("simulate", help="replay a pod trace on a node list under each policy and seed")
    sim.add_argument("--nodes", required=True, help="node CSV (sn,cpu_milli,memory_mib,gpu,model)")
    sim.add_argument("--pods", required=True, help="pod CSV (name,cpu_milli,memory_mib,num_gpu,gpu_milli[,gpu_spec])")
    sim.add_argument("--policies", default="fgd,best-fit,effopt",
                     help="comma-separated: random, best-fit, dot-product, gpu-packing, gpu-clustering, fgd, effopt")
    sim.add_argument("--seeds", type=_positive, default=10, help="number of seeds, 42 to 42+N-1 (default 10)")
    sim.add_argument("--ratio", type=_ratio, default=1.3, help="requested GPU to reach, in capacities (default 1.3)")
    sim.add_argument("--all-nodes", action="store_true", help="keep CPU-only nodes (default: GPU nodes only)")
    sim.add_argument("--jobs", type=_positive, default=1, help="worker processes (default 1)")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--plot", metavar="PNG", help="write the unallocated-GPU curve to this PNG file")
    sim.set_defaults(func=_simulate)
    inv = sub.add_parser("inventory", help="the GPUs of a static inventory file (YAML, or a CSV node list), or of "
                                           "this host's driver")
    _inventory_source(inv)
    inv.add_argument("--json", action="store_true", help="print one JSON object")
    inv.set_defaults(func=_inventory)
    pools = sub.add_parser("pools", help="the Airflow pools effopt_gpu_pools keeps for an inventory (on an Airflow "
                                         "without them: what it would create)")
    _inventory_source(pools)
    pools.add_argument("--unit", choices=("gpu", "milli"), default="gpu", help="slots per GPU: 1 or 1000")
    pools.add_argument("--quotas", default="", help="tenant quotas, as [effopt] gpu_quotas: team-a:A100=4,team-b:*=8")
    pools.add_argument("--json", action="store_true", help="print one JSON object")
    pools.set_defaults(func=_pools)


def _inventory_source(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--file", help="a static inventory: YAML (nodes with their GPUs) or a CSV node list")
    where.add_argument("--nvml", action="store_true", help="this host's GPUs through the NVIDIA driver")


def _read_inventory(args: argparse.Namespace):
    from effopt.gpu.inventory import InventoryError, InventoryUnavailable, NvmlInventory, StaticInventory

    try:
        return NvmlInventory().read() if args.nvml else StaticInventory(args.file).read()
    except (InventoryError, InventoryUnavailable) as exc:
        _fail(str(exc))


def _inventory(args: argparse.Namespace) -> int:
    inventory = _read_inventory(args)
    if args.json:
        print(dumps(inventory.to_dict()))
        return 0
    rows = []
    for node in inventory.nodes:
        for g in node.gpus:
            mig = [s.profile for s in node.mig if s.parent == g.index]
            memory = f"{g.memory_total_mib / 1024:.1f} GiB" if g.memory_total_mib else "-"
            rows.append((node.name, g.index, g.model, memory, g.uuid or "-", ", ".join(mig) if mig else "-"))
        for s in node.mig:
            if s.parent is None:
                rows.append((node.name, "-", s.model, "-", s.uuid or "-", s.profile))
    print(f"{inventory.describe()} ({inventory.source}: {inventory.detail})")
    if rows:
        print(render(("node", "gpu", "model", "memory", "uuid", "mig slices"), rows))
    return 0


def _pools(args: argparse.Namespace) -> int:
    from effopt.config import ConfigError, parse_gpu_quotas
    from effopt.gpu.pools import plan_pools

    try:
        quotas = parse_gpu_quotas(args.quotas)
    except ConfigError as exc:
        _fail(str(exc).replace("[effopt] gpu_quotas", "--quotas").split(" (set it in airflow.cfg")[0])
    inventory = _read_inventory(args)
    plan = plan_pools(inventory, args.unit, quotas, {})
    if args.json:
        print(dumps({"inventory": inventory.describe(), "unit": args.unit, "pools": [c.to_dict() for c in plan]}))
        return 0
    print(f"{inventory.describe()}; slots in {'thousandths of a GPU' if args.unit == 'milli' else 'GPUs'}")
    print(render(("pool", "slots", "why"), [(c.pool, "-" if c.slots_after is None else c.slots_after,
                                              c.reason) for c in plan]))
    return 0


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _simulate(args: argparse.Namespace) -> int:
    from effopt.gpu import REGISTRY, TraceError, load_nodes, load_pods, run_many
    from effopt.gpu.simulate import FIRST_SEED

    names = [n.strip() for n in args.policies.split(",") if n.strip()]
    if not names:
        _fail("--policies is empty")
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        _fail(f"--policies: unknown policy {unknown[0]!r} (known: {', '.join(REGISTRY)})")
    names = list(dict.fromkeys(names))
    if args.plot and not args.plot.lower().endswith(".png"):
        _fail(f"--plot {args.plot}: the file name must end in .png")
    try:
        nodes = load_nodes(args.nodes, gpu_only=not args.all_nodes)
        pods = load_pods(args.pods, {n.model for n in nodes if n.gpus})
    except TraceError as exc:
        _fail(str(exc))
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    bar = ProgressBar(f"gpu simulate {len(names)} policies x {len(seeds)} seeds")
    results = run_many(nodes, pods, names, seeds, ratio=args.ratio, jobs=args.jobs, progress=bar)
    trace = Path(args.pods).stem
    if args.plot:
        plot_curves(results, args.plot, f"{trace}: {len(nodes)} nodes, {sum(n.gpus for n in nodes)} GPUs, "
                    f"{len(seeds)} seeds")
    if args.json:
        print(dumps(as_json(trace, seeds, results)))
    else:
        print(render_table(trace, nodes, pods, seeds, results))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _clean(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def as_json(trace: str, seeds: list[int], results: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` object; other tools read these keys."""
    out: dict[str, Any] = {"trace": trace, "seeds": seeds, "policies": {}}
    for name, s in results.items():
        unalloc, frag = {}, {}
        for x in REPORT_X:
            m, sd = s.stat(x)
            unalloc[str(x)] = {"mean": _clean(m), "sd": _clean(sd)}
            m, sd = s.stat(x, frag=True)
            frag[str(x)] = {"mean": _clean(m), "sd": _clean(sd)}
        out["policies"][name] = {
            "unallocated_pct": unalloc,
            "fragmentation_pct": frag,
            "failed_pods": int(round(s.failed_pods)),
            "failed_pods_per_seed": [r.failed_pods for r in s.runs],
            "seconds": round(s.seconds, 3),
        }
    return out


def _cell(m: float | None, sd: float | None) -> str:
    if m is None:
        return "-"
    return f"{m:.2f} ± {sd:.2f}" if sd is not None else f"{m:.2f}"


def render_table(trace: str, nodes: list, pods: list, seeds: list[int], results: dict[str, Any]) -> str:
    from effopt.gpu.simulate import TABLE_X

    head = (f"{trace}: {len(pods)} pods on {len(nodes)} nodes ({sum(n.gpus for n in nodes)} GPUs), "
            f"seeds {seeds[0]}..{seeds[-1]}; unallocated GPU % (mean ± sd over seeds) at requested load x%")
    fgd = results.get("fgd")
    fgd100 = fgd.stat(100)[0] if fgd is not None else None
    rows = []
    for name, s in results.items():
        cells = [_cell(*s.stat(x)) for x in TABLE_X]
        m100 = s.stat(100)[0]
        ratio = f"{m100 / fgd100:.3f}" if fgd100 and m100 is not None else "-"
        rows.append((name, *cells, ratio, f"{s.failed_pods:.0f}", f"{s.seconds:.1f}"))
    headers = ("policy", *[f"x={x}" for x in TABLE_X], "x=100 vs fgd", "failed pods", "s/run")
    return head + "\n" + render(headers, rows)


def plot_curves(results: dict[str, Any], path: str, title: str) -> None:
    """Unallocated GPU % against requested load: one line (median over seeds) per policy, IQR band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from effopt.gpu.simulate import CURVE_X

    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    for name, s in results.items():
        curves = s.curves()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # x values no arrival reached: NaN, not drawn
            lo, mid, hi = np.nanpercentile(curves, [25, 50, 75], axis=0)
        (line,) = ax.plot(CURVE_X, mid, label=name, lw=1.6)
        ax.fill_between(CURVE_X, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlim(80, int(CURVE_X[-1]))
    ax.set_ylim(0, 22)
    ax.set_xlabel("GPU requested by arrived pods (% of capacity)")
    ax.set_ylabel("unallocated GPU (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
