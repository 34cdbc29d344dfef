"""``python -m effopt prices build|show``: the rate table derived from cloud prices."""

from __future__ import annotations

import argparse
import sys

from effopt.cli import dumps
from effopt.cli.table import render
from effopt.prices import DEFAULT_CPU_FAMILIES, DEFAULT_REGION, DEFAULT_SNAPSHOT, PriceError


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="derive the rate table from an EC2 price catalog snapshot")
    build.add_argument("--source", required=True, help="directory holding the catalog snapshot CSV files")
    build.add_argument("--snapshot", default=DEFAULT_SNAPSHOT, help=f"catalog file name (default {DEFAULT_SNAPSHOT})")
    build.add_argument("--region", default=DEFAULT_REGION, help=f"region to price (default {DEFAULT_REGION})")
    build.add_argument("--cpu-families", default=",".join(DEFAULT_CPU_FAMILIES),
                       help="CPU-only families the vCPU/GiB fit uses (comma-separated)")
    build.add_argument("--out", required=True, help="where to write the rate table JSON")
    build.set_defaults(func=_build)
    cat = sub.add_parser("build-catalog", help="build the spot price catalog (embedded in effopt.spot) from the "
                                               "EC2 catalog snapshots and the Spot Instance Advisor feed")
    cat.add_argument("--source", required=True,
                     help="directory holding the snapshot CSVs and spot_advisor_snapshot.json")
    cat.add_argument("--out", help="where to write it (default: the package's effopt/spot/data/catalog.json.gz)")
    cat.set_defaults(func=_build_catalog)
    show = sub.add_parser("show", help="print a rate table ([effopt] rate_table unless --table)")
    show.add_argument("--table", help="rate table JSON (default: [effopt] rate_table, else the bundled one)")
    show.add_argument("--json", action="store_true", help="print the table as JSON")
    show.set_defaults(func=_show)


def _build(args: argparse.Namespace) -> int:
    from effopt.prices import build_rate_table, write_rate_table

    families = [f.strip() for f in args.cpu_families.split(",") if f.strip()]
    try:
        table = build_rate_table(args.source, snapshot=args.snapshot, region=args.region, cpu_families=families)
    except PriceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = write_rate_table(table, args.out)
    fit = table["fit"]["on_demand"]["cpu_memory"]
    print(f"wrote {out}: {args.region}, fit over {fit['instance_types']} instance types (R^2 {fit['r2']:.4f})")
    return 0


def _build_catalog(args: argparse.Namespace) -> int:
    from effopt.spot.catalog import SnapshotCatalog, build_snapshot_catalog, embedded_catalog_path, write_catalog
    from effopt.spot.errors import SpotError

    try:
        data = build_snapshot_catalog(args.source)
        out = write_catalog(data, args.out or embedded_catalog_path())
        cat = SnapshotCatalog.load(out)
    except SpotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    zones = sum(len(cat.zones(t, r)) for t in cat.instance_types() for r in cat.regions(t))
    print(f"wrote {out}: {len(cat.instance_types())} instance types, {zones} (type, AZ ID) spot series over "
          f"{len(cat.snapshots)} snapshots ({', '.join(cat.snapshots)}), current {cat.snapshots[-1]}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from effopt.prices import load_rate_table

    path = args.table
    if path is None:
        from effopt.airflow_settings import get_settings

        path = get_settings().rate_table or None
    try:
        table = load_rate_table(path)
    except PriceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(dumps({"path": table.path, "source": dict(table.source), "method": table.method,
                          "rates": {m: {"cpu_per_vcpu_hour": r.cpu_per_vcpu_hour,
                                        "memory_per_gib_hour": r.memory_per_gib_hour,
                                        "gpu_per_hour": dict(r.gpu_per_hour)} for m, r in table.rates.items()}},
                         indent=2))
        return 0
    print(f"rate table {table.path}")
    print(f"source: {table.source.get('file')} ({table.source.get('region')})")
    print(f"method: {table.method}\n")
    rows: list[list[object]] = []
    for model, r in table.rates.items():
        rows.append([model, "vCPU-hour", f"{r.cpu_per_vcpu_hour:.6f}"])
        rows.append([model, "GiB-hour", f"{r.memory_per_gib_hour:.6f}"])
        rows += [[model, f"GPU-hour {gpu}", f"{rate:.6f}"] for gpu, rate in sorted(r.gpu_per_hour.items())]
    print(render(["pricing", "unit", "USD"], rows))
    return 0
