"""Benchmark of effopt.graph (issue 4), two comparisons side by side in one run.

1. Optimising a random 10,000-node DAG in which about 20% of the nodes
   duplicate an earlier one (some of them transitively: they read the outputs
   of other duplicates) and about 3% are "near duplicates" (same function and
   input names, other parameters).  effopt's CSE + cull + plan against the
   seed's ``ComputationGraphOptimizer``, re-implemented here faithfully: a
   networkx DiGraph, an O(n^2) pairwise scan treating nodes with the same
   function name and input names as equal, deleting the later node without
   rewiring its consumers, then stages by topological generations and the
   sum of each stage's slowest node.  Both start from a built graph (building
   is not timed; effopt's edge indexes are built before its clock starts too).
   A second baseline applies the same pairwise rule to plain dicts, the
   fastest form of the seed's approach.  The run also counts where the seed's
   answer is wrong.

2. Parsing a 2,000-node graph compiled into a DAG by ``dags/effopt_graphs.py``
   against a generated hand-written DAG file with the same tasks, task groups
   and edges (PythonOperator tasks).  Each parse is a fresh interpreter
   running ``DagBag(dag_folder=file)`` (Airflow imported before the clock
   starts, as in the DAG processor); cold = first parse (no plan cache, no
   bytecode cache), warm = median of the next ``--repeat`` parses.

Prints ``name: value (ratio vs baseline)`` lines; ``--results FILE`` also
writes them as Markdown.  Usage::

    .venv/bin/python bench/graph_bench.py [--nodes 10000] [--dag-nodes 2000] [--results bench/RESULTS-graph.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from effopt.graph import ComputationGraph, Node, compile_graph, cse, cull, parse_spec, plan  # noqa: E402

FUNCTIONS = [f"bench_graph_fns.op_{i}" for i in range(12)]
LINES: list[str] = []


def report(name: str, value: str, ratio: float | None = None, baseline: str | None = None) -> None:
    text = f"{name}: {value}" + (f" ({ratio:.1f}x vs {baseline})" if ratio is not None else "")
    LINES.append(text)
    print(text, flush=True)


# -- 1. optimisation ---------------------------------------------------------------


@dataclass
class Record:
    id: str
    fn: str
    inputs: dict[str, str]
    output: str
    params: dict[str, int]
    cost: float
    kind: str  # new | dup | trap
    source: str = ""  # the node a dup or trap copies


def random_dag(n: int, dup: float, trap: float, seed: int) -> tuple[list[Record], list[str], list[str]]:
    """Nodes, graph inputs and requested outputs of a random DAG with duplicates."""
    rng = random.Random(seed)  # benchmark data: seeded for repeatable runs
    inputs = [f"in{i}" for i in range(8)]
    data = list(inputs)
    equal: dict[str, list[str]] = {d: [d] for d in data}  # data -> data holding the same value
    records: list[Record] = []
    for i in range(n):
        out = f"d{i}"
        r = rng.random()
        if records and r < dup:
            src = rng.choice(records)
            rec = Record(
                f"n{i}",
                src.fn,
                {a: rng.choice(equal[d]) for a, d in src.inputs.items()},
                out,
                dict(src.params),
                src.cost,
                "dup",
                src.id,
            )
            equal[src.output].append(out)
            equal[out] = equal[src.output]
        elif records and r < dup + trap:
            src = rng.choice(records)
            params = {"k": src.params["k"] + 1 + rng.randrange(3)}
            rec = Record(f"n{i}", src.fn, dict(src.inputs), out, params, src.cost, "trap", src.id)
            equal[out] = [out]
        else:
            window = data[-300:]
            arity = rng.randint(1, 3)
            rec_inputs = {arg: rng.choice(window) for arg in "abc"[:arity]}
            rec = Record(
                f"n{i}",
                rng.choice(FUNCTIONS),
                rec_inputs,
                out,
                {"k": rng.randrange(4)},
                rng.choice([0.5, 1.0, 2.0, 5.0]),
                "new",
            )
            equal[out] = [out]
        records.append(rec)
        data.append(out)
    requested = rng.sample([r.output for r in records], k=max(1, n // 30))
    return records, inputs, requested


class SeedComputationGraphOptimizer:
    """The seed's optimiser, re-implemented for comparison (not part of effopt).

    Node data lives on the networkx graph, as in the seed.  ``connect`` uses a
    producer index instead of the seed's scan over all nodes per added input
    (that scan is O(n^2) too, and building is not what is compared).
    """

    def __init__(self) -> None:
        self.graph = nx.DiGraph()

    def add_computation(self, name: str, func: str, inputs: list[str], outputs: list[str], cost: float) -> None:
        self.graph.add_node(name, func=func, inputs=inputs, outputs=outputs, estimated_time=cost)

    def connect(self) -> None:
        producer = {o: n for n, d in self.graph.nodes(data=True) for o in d["outputs"]}
        for name, data in list(self.graph.nodes(data=True)):
            for item in data["inputs"]:
                if item in producer:
                    self.graph.add_edge(producer[item], name)

    def eliminate_redundancy(self) -> list[tuple[str, str]]:
        """Every pair: same function name and input names means redundant; the later node is deleted."""
        merged = []
        nodes = list(self.graph.nodes())
        for i, n1 in enumerate(nodes):
            for n2 in nodes[i + 1 :]:
                if n1 in self.graph and n2 in self.graph:
                    d1, d2 = self.graph.nodes[n1], self.graph.nodes[n2]
                    if d1["func"] == d2["func"] and d1["inputs"] == d2["inputs"]:
                        self.graph.remove_node(n2)
                        merged.append((n1, n2))
        return merged

    def eliminate_redundancy_lean(self) -> list[tuple[str, str]]:
        """The same pairwise rule on plain dicts and a removed-set: the fastest form of the seed's approach."""
        data = {n: (d["func"], d["inputs"]) for n, d in self.graph.nodes(data=True)}
        removed: set[str] = set()
        merged = []
        nodes = list(data)
        for i, n1 in enumerate(nodes):
            if n1 in removed:
                continue
            d1 = data[n1]
            for n2 in nodes[i + 1 :]:
                if n2 not in removed and data[n2] == d1:
                    removed.add(n2)
                    merged.append((n1, n2))
        self.graph.remove_nodes_from(removed)
        return merged

    def optimize_execution_order(self) -> list[list[str]]:
        return [sorted(stage) for stage in nx.topological_generations(self.graph)]

    def estimate_execution_time(self, stages: list[list[str]]) -> float:
        return sum(max(self.graph.nodes[n]["estimated_time"] for n in stage) for stage in stages)


def bench_optimisation(n: int, dup: float, seed: int) -> dict[str, Any]:
    records, inputs, requested = random_dag(n, dup, 0.03, seed)
    by_id = {r.id: r for r in records}
    n_dup = sum(r.kind == "dup" for r in records)
    report(
        "random DAG",
        f"{n} nodes, {n_dup} exact duplicates ({n_dup / n:.0%}), {sum(r.kind == 'trap' for r in records)} near "
        f"duplicates, {len(requested)} requested outputs",
    )

    def effopt_graph() -> ComputationGraph:
        nodes = [Node(r.id, r.fn, r.inputs, (r.output,), r.params, r.cost) for r in records]
        return ComputationGraph.from_nodes("bench", nodes, inputs, requested)

    times = []
    for _ in range(5):
        graph = effopt_graph()
        graph.topological_order()  # edges indexed before the clock starts, as the baseline's networkx edges are
        start = time.perf_counter()
        merged_graph, merge_report = cse(graph)
        culled_graph, cull_report = cull(merged_graph)
        the_plan = plan(culled_graph)
        times.append(time.perf_counter() - start)
    ours = min(times)

    seed_opt = SeedComputationGraphOptimizer()
    for r in records:
        seed_opt.add_computation(r.id, r.fn, list(r.inputs.values()), [r.output], r.cost)
    seed_opt.connect()
    start = time.perf_counter()
    seed_merged = seed_opt.eliminate_redundancy()
    seed_stages = seed_opt.optimize_execution_order()
    seed_makespan = seed_opt.estimate_execution_time(seed_stages)
    seed_time = time.perf_counter() - start

    lean = SeedComputationGraphOptimizer()
    for r in records:
        lean.add_computation(r.id, r.fn, list(r.inputs.values()), [r.output], r.cost)
    lean.connect()
    start = time.perf_counter()
    lean_merged = lean.eliminate_redundancy_lean()
    lean.estimate_execution_time(lean.optimize_execution_order())
    lean_time = time.perf_counter() - start
    assert lean_merged == seed_merged, "both baseline forms must give the same answer"

    report(
        f"cse+cull+plan, {n} nodes (best of 5)",
        f"{ours:.3f} s",
        seed_time / ours,
        f"seed pairwise on networkx node data {seed_time:.2f} s",
    )
    report(
        f"cse+cull+plan, {n} nodes, against the leanest pairwise",
        f"{ours:.3f} s",
        lean_time / ours,
        f"same rule on plain dicts {lean_time:.2f} s",
    )

    true_removed = {m.removed for m in merge_report.merged}
    seed_removed = {b for _, b in seed_merged}
    wrong = [(a, b) for a, b in seed_merged if by_id[a].params != by_id[b].params]
    missed = true_removed - seed_removed
    remaining_outputs = {by_id[nid].output for nid in seed_opt.graph.nodes}
    lost = [o for o in requested if o not in remaining_outputs]
    dangling = sum(
        1
        for nid in seed_opt.graph.nodes
        if any(d.startswith("d") and d not in remaining_outputs for d in by_id[nid].inputs.values())
    )
    ours_lost = [o for o in requested if merged_graph.resolve(o) not in merged_graph.producers]
    ours_dangling = sum(
        1
        for node in merged_graph.nodes.values()
        for d in node.inputs.values()
        if d not in merged_graph.producers and d not in merged_graph.input_names
    )
    kept_for = {m.removed: m.kept for m in merge_report.merged}

    def survivor(nid: str) -> str:
        return kept_for.get(nid, nid)

    planted_ok = all(survivor(r.id) == survivor(r.source) for r in records if r.kind == "dup")
    traps_kept_apart = all(survivor(r.id) != survivor(r.source) for r in records if r.kind == "trap")
    report(
        "duplicates merged",
        f"effopt {len(true_removed)} (every planted duplicate merged with its source: {planted_ok}; "
        f"no near duplicate merged with its source: {traps_kept_apart}; {len(true_removed) - n_dup} more are "
        f"independently generated identical nodes), seed {len(seed_removed)}",
    )
    report("seed: wrongly merged (same function + input names, different params)", str(len(wrong)))
    report("seed: duplicates missed (read equal data under other names)", str(len(missed)))
    report(
        "seed: requested outputs lost (producer deleted, no alias)",
        f"{len(lost)} of {len(requested)} (effopt: {len(ours_lost)})",
    )
    report("seed: nodes left reading deleted outputs (consumers not rewired)", f"{dangling} (effopt: {ours_dangling})")
    report(
        "plan",
        f"effopt {len(merged_graph)} -> {len(culled_graph)} nodes after cull, {len(the_plan.stages)} stages, "
        f"makespan {the_plan.makespan_s:.1f} s, critical path {the_plan.critical_path_s:.1f} s, "
        f"parallelism {the_plan.parallelism:.1f}; "
        f"seed {seed_opt.graph.number_of_nodes()} nodes, {len(seed_stages)} stages, makespan {seed_makespan:.1f} s",
    )
    return {"ours_s": ours, "seed_s": seed_time, "ratio": seed_time / ours, "lean_ratio": lean_time / ours}


# -- 2. DAG parse time -----------------------------------------------------------------

FNS_MODULE = '''"""Functions of the benchmark's 2,000-node graph."""


def combine(a: float = 0.0, b: float = 0.0, k: int = 0, step: int = 0) -> float:
    return (a * 0.5 + b * 0.25 + k + step * 1e-6) % 1000.0
'''

PARSE = textwrap.dedent("""
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization
    start = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    parse_s = time.perf_counter() - start
    dag = next(iter(bag.dags.values()))
    start = time.perf_counter()
    DagSerialization.to_dict(dag)
    serialize_s = time.perf_counter() - start
    edges = sorted((u, t.task_id) for t in dag.tasks for u in t.upstream_task_ids)
    print(json.dumps({"parse_s": parse_s, "serialize_s": serialize_s, "tasks": len(dag.tasks), "edges": edges,
                      "groups": sorted({t.task_group.group_id or "" for t in dag.tasks}), "errors": bag.import_errors}))
""")


def big_spec(n: int, seed: int) -> str:
    rng = random.Random(seed)  # benchmark data: seeded for repeatable runs
    consumed: set[str] = set()
    nodes = {}
    for i in range(n):
        sources = [f"v{j}" for j in rng.sample(range(max(0, i - 200), i), k=min(i, rng.randint(1, 2)))] if i else []
        inputs = dict(zip("ab", sources or ["x"], strict=False))
        consumed.update(inputs.values())
        nodes[f"step_{i:04d}"] = {
            "fn": "bench_graph_fns.combine",
            "inputs": inputs,
            "outputs": [f"v{i}"],
            "params": {"k": i % 7, "step": i},
            "cost": rng.choice([0.5, 1.0, 2.0]),
        }
    outputs = [f"v{i}" for i in range(n) if f"v{i}" not in consumed]
    doc = {"name": "bench_2000", "inputs": {"x": {"default": 1.0}}, "outputs": outputs, "nodes": nodes}
    return json.dumps(doc)  # JSON is YAML


def hand_written(compiled: Any) -> str:
    g = compiled.graph
    lines = [
        '"""The 2,000-node graph written by hand: the same tasks, task groups and edges."""',
        "from airflow.providers.standard.operators.python import PythonOperator",
        "from airflow.sdk import DAG, TaskGroup",
        "from bench_graph_fns import combine",
        "",
        'with DAG("hand_written_2000", schedule=None, tags=["bench"], default_args={"owner": "effopt", "retries": 1}, '
        'params={"x": 1.0}, doc_md="hand-written") as dag:',
    ]
    width = len(str(len(compiled.plan.stages)))
    for i, stage in enumerate(compiled.plan.stages, start=1):
        lines.append(f'    with TaskGroup("stage_{i:0{width}d}", prefix_group_id=False):')
        for nid in stage:
            node = g.nodes[nid]
            lines.append(
                f'        {nid} = PythonOperator(task_id="{nid}", python_callable=combine, op_kwargs={node.params!r})'
            )
    for producer, consumer, _ in g.data_edges():
        lines.append(f"    {producer} >> {consumer}")
    return "\n".join(lines) + "\n"


def parse_in_fresh_process(path: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PARSE, str(path)], capture_output=True, text=True, env=env, check=False, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"parsing {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_parse(n: int, repeat: int, seed: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="effopt-graph-bench-"))
    try:
        for sub in ("specs", "mods", "compiled_dags", "hand_dags", "cache", "home"):
            (work / sub).mkdir()
        (work / "mods" / "bench_graph_fns.py").write_text(FNS_MODULE)
        spec_text = big_spec(n, seed)
        (work / "specs" / "bench_2000.yaml").write_text(spec_text)
        shutil.copy(REPO / "dags" / "effopt_graphs.py", work / "compiled_dags" / "effopt_graphs.py")
        sys.path.insert(0, str(work / "mods"))
        compiled = compile_graph(parse_spec(spec_text, default_name="bench_2000"))
        (work / "hand_dags" / "hand_written.py").write_text(hand_written(compiled))
        env = dict(
            os.environ,
            AIRFLOW_HOME=str(work / "home"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(work / "mods")]),
            AIRFLOW__EFFOPT__GRAPH_SPECS_DIR=str(work / "specs"),
            AIRFLOW__EFFOPT__GRAPH_PLAN_CACHE_DIR=str(work / "cache"),
            AIRFLOW__EFFOPT__GRAPH_STORAGE=f"file://{work}/values",
        )
        subprocess.run(
            [sys.executable, "-c", "import airflow.sdk"], env=env, check=True, capture_output=True
        )  # writes airflow.cfg
        results: dict[str, list[dict[str, Any]]] = {"compiled": [], "hand": []}
        for _ in range(repeat + 1):
            results["compiled"].append(parse_in_fresh_process(work / "compiled_dags" / "effopt_graphs.py", env))
            results["hand"].append(parse_in_fresh_process(work / "hand_dags" / "hand_written.py", env))
        for name, runs in results.items():
            for run in runs:
                if run["errors"] or run["tasks"] != n:
                    raise RuntimeError(f"{name}: {run['tasks']} tasks, errors {run['errors']}")
        same = (
            results["compiled"][0]["edges"] == results["hand"][0]["edges"]
            and results["compiled"][0]["groups"] == results["hand"][0]["groups"]
        )
        edges = len(results["hand"][0]["edges"])
        report(
            "DAG",
            f"{n} tasks, {edges} edges, {len(compiled.plan.stages)} task groups; same tasks, groups and edges in both "
            f"files: {same}",
        )

        def warm(name: str, key: str) -> float:
            return statistics.median(r[key] for r in results[name][1:])

        c_cold, h_cold = results["compiled"][0]["parse_s"], results["hand"][0]["parse_s"]
        c_warm, h_warm = warm("compiled", "parse_s"), warm("hand", "parse_s")
        report(
            f"DagBag parse, compiled spec, warm (plan cache hit, median of {repeat})",
            f"{c_warm:.3f} s",
            c_warm / h_warm,
            f"hand-written {h_warm:.3f} s",
        )
        report(
            "DagBag parse, compiled spec, cold (validate + optimise + plan + cache write)",
            f"{c_cold:.3f} s",
            c_cold / h_cold,
            f"hand-written cold (bytecode compile) {h_cold:.3f} s",
        )
        report(
            "absolute parse time vs Airflow's 30 s dagbag_import_timeout", f"{c_warm:.3f} s warm, {c_cold:.3f} s cold"
        )
        c_ser, h_ser = warm("compiled", "serialize_s"), warm("hand", "serialize_s")
        report(
            "DAG serialization (DAG processor, after parse)",
            f"{c_ser:.3f} s",
            c_ser / h_ser,
            f"hand-written {h_ser:.3f} s",
        )
        return {"warm_ratio": c_warm / h_warm, "compiled_warm_s": c_warm, "compiled_cold_s": c_cold}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--dup", type=float, default=0.2)
    parser.add_argument("--dag-nodes", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, help="also write the lines to this Markdown file")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    opt = bench_optimisation(args.nodes, args.dup, args.seed)
    parse = bench_parse(args.dag_nodes, args.repeat, args.seed)
    verdict = (
        f"targets: optimisation >= 50x vs the seed: {opt['ratio'] >= 50} ({opt['ratio']:.0f}x; "
        f"{opt['lean_ratio']:.0f}x vs the leanest pairwise form); "
        f"warm parse <= 1.5x: {parse['warm_ratio'] <= 1.5} ({parse['warm_ratio']:.2f}x)"
    )
    report("verdict", verdict)
    if args.results:
        body = "\n".join(f"    {line}" for line in LINES)
        args.results.write_text(
            f"# effopt.graph benchmark results\n\nMeasured {started} on {platform.node()} "
            f"({os.cpu_count()} CPUs, Python {platform.python_version()}, shared machine) with\n"
            f"`.venv/bin/python bench/graph_bench.py --nodes {args.nodes} --dag-nodes {args.dag_nodes} "
            f"--repeat {args.repeat} --seed {args.seed}`:\n\n{body}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
