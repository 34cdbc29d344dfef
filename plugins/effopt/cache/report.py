"""Cache report: hit rate and time saved per function, over a period.

The backend's statistics are cumulative counters.  A report compares the
counters now with a snapshot taken at the previous report (kept in the effopt
store) so it describes that period alone; without a previous snapshot it
covers everything since the counters began.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from effopt.cache.base import STAT_FIELDS
from effopt.cache.hashing import AIRFLOW_MODULE_PREFIX

Counters = Mapping[str, Mapping[str, Mapping[str, float]]]  # {namespace: {function: {field: value}}}

def display_name(function: str) -> str:
    """A cached function's name as a person reads it.

    A task's name ``<dag_id>/<task_id>/<qualname>`` (see
    :func:`effopt.cache.hashing.task_function_name`) becomes ``<dag_id>.<task_id>``
    when the function's own name is the task id, as ``@task`` makes it
    (``effopt_cache_example/build_features/effopt_cache_example.<locals>.build_features`` becomes
    ``effopt_cache_example.build_features``), else ``<dag_id>.<task_id> (<function>)``.

    An older ``module.qualname`` name under Airflow's module prefix
    (``unusual_prefix_<sha1>_effopt_cache_example.effopt_cache_example.<locals>.build_features``)
    becomes ``effopt_cache_example.build_features``: the prefix, ``<locals>`` and a segment that repeats
    the one before it are dropped.
    """
    parts = function.split("/")
    if len(parts) == 3 and all(parts):
        dag_id, task_id, qualname = parts
        own = _readable(qualname).split(".")[-1]
        base = f"{dag_id}.{task_id}"
        return base if own == task_id.split(".")[-1] else f"{base} ({own})"
    return _readable(AIRFLOW_MODULE_PREFIX.sub(r"\1", function)) or function


def _readable(dotted: str) -> str:
    parts: list[str] = []
    for part in dotted.split("."):
        if part == "<locals>" or (parts and part == parts[-1]):
            continue
        parts.append(part)
    return ".".join(parts)


def difference(now: Counters, before: Counters | None) -> dict[str, dict[str, dict[str, float]]]:
    """``now - before`` per counter; a counter that went down (backend flushed) restarts from zero."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for ns, functions in now.items():
        for fn, fields in functions.items():
            prev = (before or {}).get(ns, {}).get(fn, {})
            delta = {}
            for field in STAT_FIELDS:
                cur, old = float(fields.get(field, 0.0)), float(prev.get(field, 0.0))
                delta[field] = cur - old if cur >= old else cur
            if any(delta.values()):
                out.setdefault(ns, {})[fn] = delta
    return out


def summarize(counters: Counters) -> dict[str, Any]:
    """``{"functions": [...], "totals": {...}}``, functions sorted by seconds saved (most first)."""
    functions = []
    for ns, fns in counters.items():
        for fn, s in fns.items():
            hits, misses = int(s.get("hits", 0)), int(s.get("misses", 0))
            calls = hits + misses
            functions.append(
                {
                    "namespace": ns,
                    "function": fn,
                    "name": display_name(fn),
                    "calls": calls,
                    "hits": hits,
                    "misses": misses,
                    "hit_rate": round(hits / calls, 4) if calls else None,
                    "saved_s": round(float(s.get("saved_s", 0.0)), 3),
                    "compute_s": round(float(s.get("compute_s", 0.0)), 3),
                    "rejected": int(s.get("rejected", 0)),
                    "errors": int(s.get("errors", 0)),
                    "bytes": int(s.get("bytes", 0)),
                }
            )
    functions.sort(key=lambda f: (-f["saved_s"], f["namespace"], f["function"]))
    calls = sum(f["calls"] for f in functions)
    hits = sum(f["hits"] for f in functions)
    totals = {
        "functions": len(functions),
        "calls": calls,
        "hits": hits,
        "misses": calls - hits,
        "hit_rate": round(hits / calls, 4) if calls else None,
        "saved_s": round(sum(f["saved_s"] for f in functions), 3),
        "compute_s": round(sum(f["compute_s"] for f in functions), 3),
        "rejected": sum(f["rejected"] for f in functions),
        "errors": sum(f["errors"] for f in functions),
        "bytes": sum(f["bytes"] for f in functions),
    }
    return {"functions": functions, "totals": totals}
