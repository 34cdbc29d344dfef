"""``python -m effopt graph``: validate, plan, draw and run computation-graph specs."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from effopt.cli import dumps
from effopt.cli.table import render


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("validate", help="check specs; print every problem")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="YAML spec file(s)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("plan", help="optimise and plan specs: stages, critical path, eliminated nodes, makespan")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="YAML spec file(s)")
    _optimise_args(p)
    p.add_argument("--json", action="store_true", help="print JSON: one object for one spec, else a list")
    p.set_defaults(func=_plan)

    p = sub.add_parser("dot", help="write Graphviz DOT (and PNG when graphviz's dot is installed)")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="YAML spec file(s)")
    _optimise_args(p)
    p.add_argument("--out", help="folder for <name>.dot and <name>.png (default: a new temporary folder)")
    p.add_argument("--raw", action="store_true", help="draw the spec as written, eliminated nodes greyed out")
    p.set_defaults(func=_dot)

    p = sub.add_parser("run", help="run a spec locally with a progress bar")
    p.add_argument("spec", metavar="SPEC")
    _optimise_args(p)
    p.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="graph input (VALUE parsed as JSON when it is JSON)",
    )
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: CPU count)")
    p.add_argument("--processes", action="store_true", help="run nodes in worker processes instead of threads")
    p.add_argument("--no-optimize", action="store_true", help="run the graph as written")
    p.add_argument("--json", action="store_true", help="print the outputs as one JSON object (arrays summarised)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _amount(text: str) -> float:
    """A finite number >= 0 (argparse type): nan and inf are refused, not planned forever."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _optimise_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpus", type=_amount, default=None,
        help="GPUs available at once (default: the spec's capacity, else unlimited)"
    )
    p.add_argument("--cpus", type=_amount, default=None, help="CPU cores available at once")
    p.add_argument("--max-workers", type=int, default=None, help="most nodes per stage")
    p.add_argument("--fuse-max-cost", type=float, default=None, help="fuse chains of nodes costing at most this (s)")
    p.add_argument("--no-cse", action="store_true", help="do not merge duplicate nodes")
    p.add_argument("--no-cull", action="store_true", help="keep nodes the outputs do not need")


def _load(path: str) -> Any:
    from effopt.graph import load_spec

    return load_spec(path)


def _capacity(args: argparse.Namespace, graph: Any) -> dict[str, Any]:
    capacity = dict(graph.settings.get("capacity", {}))
    for key, value in (("gpu", args.gpus), ("cpu", args.cpus), ("workers", args.max_workers)):
        if value is not None:
            capacity[key] = value
    return capacity


def _compile(args: argparse.Namespace, spec: str) -> tuple[Any, Any]:
    """(spec graph, compiled plan); raises GraphValidationError."""
    from effopt.graph.compiled import CompiledPlan
    from effopt.graph.model import MISSING
    from effopt.graph.optimize import optimize
    from effopt.graph.plan import Capacity, plan

    graph = _load(spec)
    optimized, report = optimize(
        graph,
        cse_enabled=False if args.no_cse else None,
        cull_enabled=False if args.no_cull else None,
        fuse_max_cost=MISSING if args.fuse_max_cost is None else args.fuse_max_cost,
    )
    the_plan = plan(optimized, Capacity.coerce(_capacity(args, graph)))
    return graph, CompiledPlan(optimized, report, the_plan, source=spec)


def _problems(exc: Exception) -> int:
    print(str(exc), file=sys.stderr)
    return 1


def _validate(args: argparse.Namespace) -> int:
    from effopt.graph import GraphValidationError

    failed = 0
    for spec in args.specs:
        try:
            graph = _load(spec)
        except GraphValidationError as exc:
            failed += 1
            print(str(exc), file=sys.stderr)
            continue
        print(
            f"ok {spec}: graph {graph.name!r}, {len(graph)} nodes, inputs "
            f"{', '.join(i.name for i in graph.inputs) or '-'}, outputs {', '.join(graph.outputs)}"
        )
    return 1 if failed else 0


def _plan(args: argparse.Namespace) -> int:
    from effopt.graph import GraphValidationError

    summaries, failed = [], 0
    for n, spec in enumerate(args.specs):
        try:
            _, compiled = _compile(args, spec)
        except GraphValidationError as exc:
            failed += _problems(exc)
            continue
        if args.json:
            summaries.append(compiled.summary())
        else:
            if n:
                print()
            _print_plan(compiled)
    if args.json:
        print(dumps(summaries[0] if len(args.specs) == 1 and summaries else summaries, indent=2))
    return 1 if failed else 0


def _print_plan(compiled: Any) -> None:
    summary = compiled.summary()
    g = compiled.graph
    print(f"graph {g.name}: {summary['nodes_before']} nodes -> {summary['nodes_after']} after optimisation")
    print()
    rows = []
    for i, stage in enumerate(compiled.plan.stages, start=1):
        for nid in stage:
            node = g.nodes[nid]
            notes = []
            if node.resources.gpu:
                notes.append(f"{node.resources.gpu} GPU")
            if not node.parallel:
                notes.append("runs alone")
            if node.fused_from:
                notes.append("fused " + " -> ".join(node.fused_from))
            rows.append((i, nid, node.fn_name, node.cost, ", ".join(notes)))
    print(render(("stage", "node", "function", "cost s", "notes"), rows))
    report = compiled.report
    print()
    if report.merged or report.culled or report.fused:
        print("eliminated:")
        for m in report.merged:
            print(f"  merged {m.removed} into {m.kept}: {m.reason}")
        for c in report.culled:
            print(f"  culled {c.node}: {c.reason}")
        for f in report.fused:
            print(f"  fused {' -> '.join(f.nodes)} into {f.into}: {f.reason}")
    else:
        print("eliminated: nothing")
    plan = compiled.plan
    print()
    print(f"critical path:      {' -> '.join(plan.critical_path)} ({plan.critical_path_s:g} s)")
    print(f"estimated makespan: {plan.makespan_s:g} s (stage by stage; serial {plan.serial_s:g} s)")
    print(f"parallelism:        {plan.parallelism:g}")
    for note in list(report.notes) + list(plan.notes):
        print(f"note: {note}")


def _dot(args: argparse.Namespace) -> int:
    import tempfile

    from effopt.graph import GraphValidationError
    from effopt.graph.dot import to_dot

    folder = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="effopt-graph-dot-"))
    folder.mkdir(parents=True, exist_ok=True)
    dot = shutil.which("dot")
    failed = 0
    for spec in args.specs:
        try:
            graph, compiled = _compile(args, spec)
        except GraphValidationError as exc:
            failed += _problems(exc)
            continue
        if args.raw:
            notes = {m.removed: f"merged into {m.kept}" for m in compiled.report.merged}
            notes.update({c.node: "culled" for c in compiled.report.culled})
            text = to_dot(graph, None, notes)
        else:
            text = to_dot(compiled.graph, compiled.plan)
        out = folder / f"{graph.name}.dot"
        out.write_text(text)
        print(f"wrote {out}")
        if dot is None:
            continue
        png = out.with_suffix(".png")
        done = subprocess.run([dot, "-Tpng", str(out), "-o", str(png)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"dot failed on {out}: {done.stderr.strip()}", file=sys.stderr)
            failed += 1
            continue
        print(f"wrote {png}")
    if dot is None:
        print("graphviz 'dot' is not installed: no PNG (apt-get install graphviz)", file=sys.stderr)
    return 1 if failed else 0


class _ProgressBar:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total = max(total, 1)
        self.width = width
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int, node_id: str, seconds: float) -> None:
        filled = int(self.width * done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        name = node_id if len(node_id) <= 40 else node_id[:37] + "..."
        sys.stderr.write(f"\r[{bar}] {done}/{total} {elapsed:6.2f}s  {name} ({seconds:.2f}s)\x1b[K")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--input {pair!r} must be NAME=VALUE")
        try:
            values[name] = json.loads(raw)
        except json.JSONDecodeError:
            values[name] = raw
    return values


def _summarise(value: Any) -> Any:
    if type(value).__name__ == "ndarray":
        return {"type": "ndarray", "shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {str(k): _summarise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_summarise(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _run(args: argparse.Namespace) -> int:
    from effopt.graph import GraphValidationError, NodeExecutionError, run_local

    try:
        inputs = _parse_inputs(args.input)
        if args.no_optimize:
            graph = _load(args.spec)
        else:
            _, compiled = _compile(args, args.spec)
            graph = compiled.graph
        progress = None if args.quiet else _ProgressBar(len(graph))
        start = time.perf_counter()
        outputs = run_local(
            graph,
            inputs,
            workers=args.workers,
            mode="processes" if args.processes else "threads",
            capacity=_capacity(args, graph),
            on_progress=progress,
        )
    except GraphValidationError as exc:
        return _problems(exc)
    except (NodeExecutionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    summary = {name: _summarise(value) for name, value in outputs.items()}
    if args.json:
        print(dumps(summary, indent=2))
        return 0
    print(f"ran {graph.name}: {len(graph)} nodes in {elapsed:.2f} s")
    for name, value in summary.items():
        text = json.dumps(value)
        print(f"{name}: {text if len(text) <= 300 else text[:297] + '...'}")
    return 0
