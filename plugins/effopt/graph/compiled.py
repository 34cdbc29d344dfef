"""Compiled plans: a spec validated, optimised and planned once, cached by the spec's hash.

Parsing a DAG file must stay cheap as graphs grow (Airflow re-parses every
file every few minutes, with a 30 s import timeout).  Like cosmos with its
pre-parsed manifest, :func:`compile_spec` keys the compiled plan by the SHA-256
of the spec's bytes and keeps it in memory and as a JSON file under a cache
directory; a hit skips YAML parsing, validation (which imports every
function), optimisation and planning.  The cache does not see changes to the
functions a spec names: a function renamed away is reported when the task runs.

Plain Python: no Airflow import.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effopt.graph.errors import GraphValidationError, Problem
from effopt.graph.model import ComputationGraph
from effopt.graph.optimize import OptimizationReport, optimize
from effopt.graph.plan import Capacity, Plan, plan
from effopt.graph.spec import SPEC_MAX_BYTES, graph_from_dict, graph_to_dict, load_spec, spec_hash

#: Bump when the optimiser or the plan format changes meaning: old cache files are then ignored.
PLAN_FORMAT = 1
_MEMO: dict[tuple[str, str], CompiledPlan] = {}
_MEMO_MAX = 64


@dataclass
class CompiledPlan:
    """The optimised graph of a spec, what optimisation did, and its plan."""

    graph: ComputationGraph
    report: OptimizationReport
    plan: Plan
    spec_hash: str = ""
    source: str = ""
    origin: str = field(default="compiled", compare=False)  # compiled | memory | file

    @property
    def name(self) -> str:
        return self.graph.name

    def summary(self) -> dict[str, Any]:
        """The ``plan --json`` object (other tools read these keys)."""
        r, p = self.report, self.plan
        return {
            "name": self.graph.name,
            "nodes_before": r.nodes_before,
            "nodes_after": r.nodes_after,
            "merged": [[m.kept, m.removed] for m in r.merged],
            "culled": [c.node for c in r.culled],
            "fused": [list(f.nodes) for f in r.fused],
            "stages": [list(s) for s in p.stages],
            "critical_path": list(p.critical_path),
            "makespan_s": p.makespan_s,
            "parallelism": p.parallelism,
            "critical_path_s": p.critical_path_s,
            "serial_s": p.serial_s,
            "outputs": dict(self.graph.requested),
            "reasons": {
                "merged": [{"kept": m.kept, "removed": m.removed, "why": m.reason} for m in r.merged],
                "culled": [{"node": c.node, "why": c.reason} for c in r.culled],
                "fused": [{"nodes": list(f.nodes), "into": f.into, "why": f.reason} for f in r.fused],
                "notes": list(r.notes) + list(p.notes),
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "spec_hash": self.spec_hash,
            "source": self.source,
            "graph": graph_to_dict(self.graph),
            "report": self.report.to_dict(),
            "plan": self.plan.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "file") -> CompiledPlan:
        return cls(
            graph_from_dict(data["graph"]),
            OptimizationReport.from_dict(data["report"]),
            Plan.from_dict(data["plan"]),
            data.get("spec_hash", ""),
            data.get("source", ""),
            origin,
        )


def compile_graph(
    graph: ComputationGraph,
    *,
    capacity: Capacity | dict[str, Any] | None = None,
    optimized: bool = True,
    fuse_max_cost: Any = None,
) -> CompiledPlan:
    """Optimise (per the spec's ``optimize`` settings unless ``optimized=False``) and plan ``graph``.

    ``fuse_max_cost`` overrides the spec's when not None.
    """
    if optimized:
        kwargs = {} if fuse_max_cost is None else {"fuse_max_cost": fuse_max_cost}
        graph, report = optimize(graph, **kwargs)
    else:
        report = OptimizationReport(len(graph), len(graph))
    the_plan = plan(graph, capacity)
    return CompiledPlan(graph, report, the_plan)


def _cache_name(path: Path, digest: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem)[:80] or "spec"
    return f"{stem}-{digest[:16]}.json"


def compile_spec(path: str | Path, cache_dir: str | Path | None = None, *, max_bytes: int = SPEC_MAX_BYTES,
                 budget_s: float | None = None) -> CompiledPlan:
    """The compiled plan of the spec at ``path``, from memory, ``cache_dir`` or compiled now.

    Raises :class:`GraphValidationError` for an invalid spec (never cached): also for one over ``max_bytes``,
    or one whose validation, optimisation and planning took more than ``budget_s`` seconds (checked between
    those steps, so one spec cannot eat the DAG file's import timeout).  A cache directory that cannot be
    written only costs the speed-up.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise GraphValidationError([Problem("spec", f"cannot read {path}: {exc.strerror or exc}")], str(path)) from exc
    if size > max_bytes:
        raise GraphValidationError([Problem("spec", f"is {size:,} bytes, over the limit of {max_bytes:,} "
                                                    "([effopt] graph_spec_max_bytes)")], str(path))
    data = path.read_bytes()
    digest = spec_hash(f"effopt-plan-{PLAN_FORMAT}\n".encode() + data)
    memo_key = (str(path.resolve()), digest)
    if memo_key in _MEMO:
        hit = _MEMO[memo_key]
        return CompiledPlan(hit.graph, hit.report, hit.plan, hit.spec_hash, hit.source, "memory")
    cache_file = Path(cache_dir) / _cache_name(path, digest) if cache_dir else None
    compiled = None
    if cache_file is not None and cache_file.is_file():
        try:
            stored = json.loads(cache_file.read_text())
            if stored.get("format") == PLAN_FORMAT and stored.get("spec_hash") == digest:
                compiled = CompiledPlan.from_dict(stored, "file")
        except (OSError, ValueError, KeyError, TypeError):
            compiled = None  # unreadable or foreign file: compile again and overwrite it
    if compiled is None:
        start = time.monotonic()
        graph = load_spec(path, max_bytes=max_bytes)
        _within(budget_s, start, "validating", path)
        compiled = compile_graph(graph)
        _within(budget_s, start, "optimising and planning", path)
        compiled.spec_hash = digest
        compiled.source = str(path)
        if cache_file is not None:
            _write_cache(cache_file, compiled)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[memo_key] = compiled
    return compiled


def _within(budget_s: float | None, start: float, step: str, path: Path) -> None:
    elapsed = time.monotonic() - start
    if budget_s is not None and elapsed > budget_s:
        raise GraphValidationError([Problem("spec", f"took {elapsed:.1f} s by the end of {step}, over its time "
                                                    f"budget of {budget_s:g} s; split it into smaller specs")],
                                   str(path))


def _write_cache(cache_file: Path, compiled: CompiledPlan) -> None:
    tmp = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".plan-", suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            json.dump(compiled.to_dict(), out)
        os.replace(tmp, cache_file)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return
    stale = re.compile(re.escape(cache_file.name[:-22]) + r"-[0-9a-f]{16}\.json$")
    for other in cache_file.parent.iterdir():
        if other != cache_file and stale.match(other.name):
            other.unlink(missing_ok=True)


def clear_memo() -> None:
    """Forget the in-process plans (tests and benchmarks measure the file cache alone)."""
    _MEMO.clear()
