"""Compile computation graphs into Airflow DAGs: the Airflow side of :mod:`effopt.graph`.

:func:`to_airflow` adds one :class:`~effopt.operators.graph.GraphNodeOperator`
task per (fused) node of the optimised graph to a DAG, rendered as one
:class:`~effopt.graph.options.AirflowRenderOptions` says (the spec's
``airflow`` section, overridden by the caller):

- dependencies are exactly the data edges, so Airflow runs any task whose
  inputs are ready; ``stage_barriers=True`` adds an empty barrier task between
  consecutive plan stages instead;
- TaskGroups are for display only (``prefix_group_id=False``, so task ids
  stay stable when the plan changes): one per stage by default, one per
  declared node ``group`` with ``group_by="group"``, none with ``"none"``;
- ``parallel=False`` nodes go to a one-slot pool (``serial_pool``) and GPU
  nodes to ``gpu_pool`` with ``pool_slots`` = their GPU count (each under a
  GPU lease: :class:`~effopt.operators.gpu.GpuGraphNodeOperator`); a setup task
  (:class:`~effopt.operators.pools.EnsurePoolsOperator`) creates the pools that
  are missing, or fails the run saying how;
- graph inputs are DAG params (defaults from the spec) that a run's ``conf``
  overrides;
- each output is pushed as an XCom whose key is the data name: small values
  inline, large ones as a reference to a :class:`~effopt.graph.values.ValueStore`
  (:mod:`effopt.hooks.graph_values`: Airflow object storage under
  ``storage_base``, or the computation cache when it is shared);
- the critical path goes first: ``priority_weight`` is the remaining path
  cost (absolute weight rule), the order of the shared scheduling rule
  (:mod:`effopt.graph.schedule`).

:func:`dags_from_specs` builds one DAG per ``*.yaml`` spec (the bundle file
``dags/effopt_graphs.py``).  One Python file has one import-error slot, so an
invalid spec becomes an :class:`InvalidGraphSpecDag`: DagBag validates every
DAG of a file on its own, records the failure of this one as the file's import
error (naming the spec, its DAG id and every problem of every invalid spec)
and still loads the file's other DAGs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup

from effopt.graph.compiled import CompiledPlan, compile_graph, compile_spec
from effopt.graph.errors import GraphValidationError
from effopt.graph.model import ComputationGraph, Node
from effopt.graph.naming import DAG_ID_PREFIX, task_id_for, task_ids
from effopt.graph.options import AirflowRenderOptions
from effopt.graph.schedule import remaining_cost
from effopt.graph.values import ValueStore
from effopt.hooks.graph_values import CacheValueStore, ConfiguredValueStore, ObjectStorageValueStore
from effopt.operators.graph import GraphNodeOperator

__all__ = ["DAG_ID_PREFIX", "CacheValueStore", "CompiledGraph", "ConfiguredValueStore", "GraphNodeOperator",
           "ObjectStorageValueStore", "dag_for_plan", "dags_from_specs", "required_pools", "to_airflow"]


def default_cache_dir() -> str:
    """``[effopt] graph_plan_cache_dir`` (default ``$AIRFLOW_HOME/effopt-graph-cache``)."""
    from effopt.airflow_settings import get_settings

    return get_settings().graph_plan_cache_dir


def specs_dir(bundle_default: str) -> str:
    """``[effopt] graph_specs_dir``, else ``bundle_default`` (the bundle's include/graphs)."""
    from effopt.airflow_settings import get_settings

    return get_settings().graph_specs_dir or bundle_default


@dataclass
class CompiledGraph:
    """What :func:`to_airflow` added to the DAG."""

    dag: DAG
    compiled: CompiledPlan
    tasks: dict[str, BaseOperator]  # node id -> task
    task_ids: dict[str, str]  # node id -> task id
    groups: dict[str, TaskGroup] = field(default_factory=dict)  # group id -> TaskGroup
    barriers: list[BaseOperator] = field(default_factory=list)
    pools_task: BaseOperator | None = None  # creates missing pools before the first task (see required_pools)

    @property
    def outputs(self) -> dict[str, tuple[str, str]]:
        """requested output -> (task id, XCom key) holding it."""
        graph = self.compiled.graph
        return {name: (self.task_ids[graph.producers[data]], data) for name, data in graph.requested.items()}


def graph_params(graph: ComputationGraph) -> dict[str, Param]:
    """DAG params for the graph inputs (no default: the run's conf must give it)."""
    out = {}
    for item in graph.inputs:
        kwargs: dict[str, Any] = {}
        if item.type:
            kwargs["type"] = item.type
        if item.description:
            kwargs["description"] = item.description
        out[item.name] = Param(item.default, **kwargs) if not item.required else Param(**kwargs)
    return out


def to_airflow(
    graph: ComputationGraph | CompiledPlan,
    dag: DAG,
    *,
    optimized: bool = True,
    capacity: Mapping[str, Any] | None = None,
    options: AirflowRenderOptions | None = None,
    storage_base: str | None = None,
    value_store: ValueStore | None = None,
    readers: Sequence[ValueStore] = (),
    **overrides: Any,
) -> CompiledGraph:
    """Add ``graph`` to ``dag``: one task per (fused) node, dependencies = data edges.

    ``graph`` is optimised and planned first (``optimized=False`` keeps it as
    is) unless it is already a :class:`CompiledPlan`.  ``options`` default to
    the spec's ``airflow`` section; ``overrides`` (``group_by="group"``, ...)
    replace single options, validated (ValueError names a bad one).  Large
    values go to ``value_store`` (default: the computation cache when
    ``[effopt]`` gives it a shared Redis backend, else object storage under
    ``storage_base``); ``readers`` are further stores whose references tasks
    can read.  Pickled values are signed with ``[effopt] cache_secret`` (or
    the local cache's secret).
    """
    compiled = (
        graph if isinstance(graph, CompiledPlan) else compile_graph(graph, capacity=capacity, optimized=optimized)
    )
    g = compiled.graph
    opts = _render_options(g, options, overrides)
    store = value_store or ConfiguredValueStore(storage_base)
    # References of either kind stay readable whichever store writes now.
    readers = (ObjectStorageValueStore(storage_base), CacheValueStore(), *readers)
    _add_params(dag, g)
    tids = task_ids(g.nodes, opts.max_task_id_length)
    taken = set(tids.values()) | set(dag.task_ids)
    node_group = _groups(g, compiled, opts.group_by, dag, taken, opts.max_task_id_length)
    order = [nid for stage in compiled.plan.stages for nid in stage]
    bottom = remaining_cost(g)
    tasks: dict[str, BaseOperator] = {
        nid: _node_task(g, nid, tids, node_group.get(nid), opts, dag, store, readers, bottom[nid]) for nid in order
    }
    _set_data_dependencies(g, order, tasks)
    result = CompiledGraph(dag, compiled, tasks, tids, {gid: grp for gid, grp in _unique_groups(node_group)})
    if opts.stage_barriers:
        result.barriers = _add_barriers(compiled, tasks, dag, taken)
    pools = required_pools(compiled, serial_pool=opts.serial_pool, gpu_pool=opts.gpu_pool)
    if pools:
        result.pools_task = _add_pools_task(pools, tasks, dag, taken)
    return result


def _render_options(g: ComputationGraph, options: AirflowRenderOptions | None,
                    overrides: Mapping[str, Any]) -> AirflowRenderOptions:
    """``options`` (default: the spec's ``airflow`` section) with the caller's ``overrides``, all validated."""
    unknown = sorted(set(overrides) - set(AirflowRenderOptions.keys()))
    if unknown:
        raise TypeError(f"to_airflow() got unknown option(s) {', '.join(unknown)}; known: "
                        f"{', '.join(AirflowRenderOptions.keys())}")
    return (options or AirflowRenderOptions.from_settings(g.settings.get("airflow"))).with_(**overrides)


def _add_params(dag: DAG, g: ComputationGraph) -> None:
    """The graph inputs as DAG params, unless the DAG already has a param of that name."""
    for name, param in graph_params(g).items():
        if name not in dag.params:
            dag.params[name] = param


def _sources(g: ComputationGraph, node: Node, tids: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Where each input of ``node`` comes from: ``("input", name)`` (a DAG param) or ``("task", task id)``."""
    sources = {}
    for data in dict.fromkeys(node.inputs.values()):
        if data in g.input_names:
            sources[data] = ("input", data)
        else:
            sources[data] = ("task", tids[g.producers[data]])
    return sources


def _pool_and_group(node: Node, opts: AirflowRenderOptions, group: TaskGroup | None) -> dict[str, Any]:
    """The task's pool (GPU nodes: the GPU pool and their GPU request, see :func:`_gpu_node`; serial nodes:
    the one-slot pool) and TaskGroup, as operator keyword arguments."""
    extra: dict[str, Any] = {}
    if node.resources.gpu > 0:
        extra = _gpu_node(node, opts.gpu_pool)[1]
    elif not node.parallel:
        extra = {"pool": opts.serial_pool, "pool_slots": 1}
    if group is not None:
        extra["task_group"] = group
    return extra


def _node_task(g: ComputationGraph, nid: str, tids: Mapping[str, str], group: TaskGroup | None,
               opts: AirflowRenderOptions, dag: DAG, store: ValueStore, readers: Sequence[ValueStore],
               remaining: float) -> BaseOperator:
    """The task of one (fused) node, weighted by its ``remaining`` path cost (the critical path first); a GPU
    node's task holds a GPU lease around the node."""
    node = g.nodes[nid]
    operator = _gpu_node(node, opts.gpu_pool)[0] if node.resources.gpu > 0 else GraphNodeOperator
    return operator(
        task_id=tids[nid],
        node=node,
        sources=_sources(g, node, tids),
        value_store=store,
        readers=readers,
        xcom_max_bytes=opts.xcom_max_bytes,
        dag=dag,
        priority_weight=min(int(math.ceil(remaining * 100)) + 1, 2**31 - 1),
        weight_rule="absolute",
        doc_md=_task_doc(node),
        **_pool_and_group(node, opts, group),
    )


def _set_data_dependencies(g: ComputationGraph, order: Sequence[str], tasks: Mapping[str, BaseOperator]) -> None:
    """Each task downstream of the tasks producing its inputs (the data edges, nothing more)."""
    for nid in order:
        producers = g.dependencies(nid)
        if producers:  # one call per task: each call hashes the DAG once per task involved
            tasks[nid].set_upstream([tasks[p] for p in producers])


def _gpu_node(node: Node, gpu_pool: str) -> tuple[type[BaseOperator], dict[str, Any]]:
    """A GPU node's task: a GPU lease around the node (:class:`~effopt.operators.gpu.GpuGraphNodeOperator`), in
    ``gpu_pool`` with its GPUs as slots (in ``[effopt] gpu_pool_unit``)."""
    from effopt.operators.gpu import GpuGraphNodeOperator

    memory = node.resources.gpu_memory_mb / 1024 if node.resources.gpu_memory_mb else None
    return GpuGraphNodeOperator, {"pool": gpu_pool, "gpus": int(node.resources.gpu), "gpu_memory_gib": memory}


def _gpu_unit_slots() -> int:
    """Pool slots per GPU: 1, or 1000 with ``[effopt] gpu_pool_unit = milli``."""
    from effopt.airflow_settings import get_settings

    return 1000 if get_settings().gpu_pool_unit == "milli" else 1


def required_pools(compiled: CompiledPlan, *, serial_pool: str, gpu_pool: str) -> dict[str, dict[str, Any]]:
    """The pools the compiled graph's tasks use, with the size to create them at when missing.

    ``serial_pool`` has one slot (its nodes run alone).  ``gpu_pool`` has the spec's ``capacity.gpu`` (the
    GPUs the spec's author says the graph may use at once), else as many as the plan's busiest stage uses, in
    slots of ``[effopt] gpu_pool_unit`` (the ``effopt_gpu_pools`` DAG then keeps it equal to the GPUs that
    exist).
    """
    g = compiled.graph
    gpu_needs = [n.resources.gpu for n in g.nodes.values() if n.resources.gpu > 0]
    serial = any(not n.parallel and not n.resources.gpu > 0 for n in g.nodes.values())
    out: dict[str, dict[str, Any]] = {}
    if serial:
        out[serial_pool] = {"slots": 1, "largest_request": 1,
                            "description": "effopt graph nodes marked parallel: false (one at a time)"}
    if gpu_needs:
        cap = (g.settings.get("capacity") or {}).get("gpu")
        busiest = max(sum(g.nodes[n].resources.gpu for n in stage) for stage in compiled.plan.stages)
        slots = math.ceil(cap) if cap else math.ceil(busiest)
        why = "the spec's capacity.gpu" if cap else "the GPUs of the plan's busiest stage"
        per = _gpu_unit_slots()
        out[gpu_pool] = {"slots": max(slots, math.ceil(max(gpu_needs))) * per,
                         "largest_request": math.ceil(max(gpu_needs)) * per,
                         "description": f"GPU slots for effopt graph nodes ({why}: {slots})"}
    return out


def _add_pools_task(pools: Mapping[str, Mapping[str, Any]], tasks: Mapping[str, BaseOperator], dag: DAG,
                    taken: set[str]) -> BaseOperator:
    """A setup task, upstream of every root task, that creates missing pools (see EnsurePoolsOperator)."""
    from effopt.operators.pools import EnsurePoolsOperator

    ensure = EnsurePoolsOperator(task_id=_free_id("effopt_pools", taken, 100), pools=pools, dag=dag,
                                 doc_md="Creates the pools this graph's tasks use when they are missing.")
    roots = [t for t in tasks.values() if not t.upstream_task_ids]
    ensure.as_setup() >> roots
    return ensure


def _unique_groups(node_group: Mapping[str, TaskGroup]) -> list[tuple[str, TaskGroup]]:
    seen: dict[str, TaskGroup] = {}
    for group in node_group.values():
        seen.setdefault(group.group_id, group)
    return list(seen.items())


def _free_id(wanted: str, taken: set[str], max_len: int) -> str:
    candidate = task_id_for(wanted, max_len)
    n = 1
    while candidate in taken:
        n += 1
        candidate = task_id_for(f"{wanted}_{n}", max_len)
    taken.add(candidate)
    return candidate


def _groups(
    graph: ComputationGraph, compiled: CompiledPlan, group_by: str, dag: DAG, taken: set[str], max_len: int
) -> dict[str, TaskGroup]:
    """node id -> its TaskGroup (display only: prefix_group_id=False keeps task ids as they are)."""
    if group_by == "none":
        return {}
    out: dict[str, TaskGroup] = {}
    if group_by == "stage":
        stages = compiled.plan.stages
        width = len(str(len(stages)))
        for i, stage in enumerate(stages, start=1):
            slowest = max(graph.nodes[n].cost for n in stage)
            group = TaskGroup(
                _free_id(f"stage_{i:0{width}d}", taken, max_len),
                dag=dag,
                prefix_group_id=False,
                tooltip=f"plan stage {i} of {len(stages)}: {len(stage)} node(s), ~{slowest:g} s",
            )
            for nid in stage:
                out[nid] = group
        return out
    by_name: dict[str, TaskGroup] = {}
    for nid, node in graph.nodes.items():
        if node.group is None:
            continue
        if node.group not in by_name:
            by_name[node.group] = TaskGroup(
                _free_id(node.group, taken, max_len), dag=dag, prefix_group_id=False, tooltip=f"group {node.group}"
            )
        out[nid] = by_name[node.group]
    return out


def _add_barriers(
    compiled: CompiledPlan, tasks: Mapping[str, BaseOperator], dag: DAG, taken: set[str]
) -> list[BaseOperator]:
    from airflow.providers.standard.operators.empty import EmptyOperator

    stages = compiled.plan.stages
    width = len(str(len(stages)))
    out = []
    for i in range(len(stages) - 1):
        barrier = EmptyOperator(task_id=_free_id(f"stage_{i + 1:0{width}d}_done", taken, 100), dag=dag)
        for nid in stages[i]:
            tasks[nid].set_downstream(barrier)
        for nid in stages[i + 1]:
            tasks[nid].set_upstream(barrier)
        out.append(barrier)
    return out


def _task_doc(node: Node) -> str:
    lines = [node.description] if node.description else []
    lines.append(f"`{node.fn_name}`" if not node.fused_from else "fused: " + " -> ".join(node.fused_from))
    if node.inputs:
        lines.append("inputs: " + ", ".join(f"{a}={d}" for a, d in node.inputs.items()))
    lines.append("outputs (XCom keys): " + ", ".join(node.outputs))
    lines.append(f"estimated cost: {node.cost:g} s")
    return "\n\n".join(lines)


# -- the bundle: one DAG per spec --------------------------------------------------


class InvalidGraphSpecDag(DAG):
    """Stands in for the DAG of an invalid spec: fails DagBag's per-DAG validation.

    DagBag validates each DAG of a file separately; this one's failure becomes
    the file's import error (with every invalid spec's problems) while the
    file's valid DAGs still load.
    """

    effopt_error: str = ""

    def validate(self) -> None:
        raise GraphSpecImportError(self.effopt_error)


class GraphSpecImportError(ValueError):
    """One or more graph specs are invalid; the message lists each spec, its DAG id and its problems."""


def _dag_doc(compiled: CompiledPlan, spec: Path, result: CompiledGraph, opts: AirflowRenderOptions) -> str:
    g, report, plan = compiled.graph, compiled.report, compiled.plan
    lines = [f"# {g.name}", ""]
    if g.settings.get("description"):
        lines += [str(g.settings["description"]), ""]
    lines += [f"Compiled by effopt from `{spec.name}` (spec sha256 `{compiled.spec_hash[:12]}`).", ""]
    if g.inputs:
        lines += ["**Inputs** (DAG run conf):", ""]
        for item in g.inputs:
            default = "required" if item.required else f"default `{item.default!r}`"
            lines.append(f"- `{item.name}` ({default}){': ' + item.description if item.description else ''}")
        lines.append("")
    lines += ["**Outputs** (task id / XCom key):", ""]
    lines += [f"- `{name}`: `{tid}` / `{key}`" for name, (tid, key) in result.outputs.items()]
    lines += [
        "",
        f"**Optimisation**: {report.nodes_before} nodes -> {report.nodes_after} tasks; "
        f"{len(report.merged)} merged, {len(report.culled)} culled, {len(report.fused)} chain(s) fused.",
        "",
    ]
    lines += [f"- merged `{m.removed}` into `{m.kept}`: {m.reason}" for m in report.merged]
    lines += [f"- culled `{c.node}`: {c.reason}" for c in report.culled]
    lines += [f"- fused {' -> '.join(f.nodes)} into `{f.into}`" for f in report.fused]
    lines += [
        "",
        f"**Plan**: {len(plan.stages)} stage(s); critical path {' -> '.join(plan.critical_path)} "
        f"({plan.critical_path_s:g} s); estimated makespan {plan.makespan_s:g} s; parallelism {plan.parallelism:g}.",
        "",
        f"Pools: `parallel: false` nodes use `{opts.serial_pool}` (1 slot), GPU nodes `{opts.gpu_pool}`.",
    ]
    return "\n".join(lines)


def dag_for_plan(compiled: CompiledPlan, spec: Path, *, storage_base: str | None = None) -> DAG:
    """The DAG ``effopt_graph_<name>`` of a compiled spec."""
    g = compiled.graph
    settings = dict(g.settings)
    opts = AirflowRenderOptions.from_settings(settings.get("airflow"))
    description = str(settings.get("description") or f"effopt computation graph {g.name}")
    dag = DAG(
        dag_id=DAG_ID_PREFIX + g.name,
        schedule=None,
        catchup=False,
        description=description.splitlines()[0][:200],
        tags=sorted({"effopt", "effopt-graph", *settings.get("tags", [])}),
        default_args={"owner": settings.get("owner", "effopt"), "retries": settings.get("retries", 1)},
        params=graph_params(g),
        max_active_tasks=opts.max_active_tasks,
        max_active_runs=4,
    )
    result = to_airflow(compiled, dag, options=opts, storage_base=storage_base)
    dag.doc_md = _dag_doc(compiled, spec, result, opts)
    return dag


def spec_files(specs_dir: str | Path) -> list[Path]:
    """The ``*.yaml`` / ``*.yml`` specs in ``specs_dir``; raises FileNotFoundError when it is not a folder."""
    folder = Path(specs_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"graph spec folder {folder} does not exist (set [effopt] graph_specs_dir)")
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def dags_from_specs(
    specs_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    storage_base: str | None = None,
) -> list[DAG]:
    """One DAG per spec in ``specs_dir``; an invalid spec yields an :class:`InvalidGraphSpecDag`.

    Compiled plans are cached under ``cache_dir`` (default :func:`default_cache_dir`).
    """
    from effopt.airflow_settings import get_settings

    settings = get_settings()
    cache_dir = cache_dir or default_cache_dir()
    dags: list[DAG] = []
    failures: list[tuple[str, Path, str]] = []
    owners: dict[str, Path] = {}
    for spec in spec_files(specs_dir):
        dag_id = DAG_ID_PREFIX + spec.stem
        try:
            compiled = compile_spec(spec, cache_dir, max_bytes=settings.graph_spec_max_bytes,
                                    budget_s=settings.graph_spec_time_budget_s)
            dag_id = DAG_ID_PREFIX + compiled.name
            if compiled.name in owners:
                raise ValueError(
                    f"graph name {compiled.name!r} is already used by {owners[compiled.name].name}; names must be "
                    "unique"
                )
            owners[compiled.name] = spec
            dags.append(dag_for_plan(compiled, spec, storage_base=storage_base))
        except GraphValidationError as exc:
            failures.append((dag_id, spec, "\n".join(f"    {line}" for line in str(exc).splitlines()[1:])))
        except Exception as exc:  # noqa: BLE001 - any failure of one spec must cost only that spec's DAG
            failures.append((dag_id, spec, f"    - {type(exc).__name__}: {exc}"))
    if failures:
        message = f"{len(failures)} graph spec(s) in {specs_dir} are invalid; their DAGs are not loaded:\n" + "\n".join(
            f"  {spec.name} (DAG {dag_id}):\n{problems}" for dag_id, spec, problems in failures
        )
        used = {dag.dag_id for dag in dags}
        for dag_id, spec, _ in failures:
            while dag_id in used:
                dag_id += "_invalid"
            used.add(dag_id)
            stand_in = InvalidGraphSpecDag(
                dag_id=dag_id,
                schedule=None,
                tags=["effopt", "effopt-graph"],
                default_args={"owner": "effopt", "retries": 1},
                doc_md=f"Invalid graph spec `{spec.name}`.",
            )
            stand_in.effopt_error = message
            dags.append(stand_in)
    return dags
