"""Pure graph-to-graph optimisations, each returning ``(graph, report)``.

- :func:`cse`: common-subexpression elimination.  One topological pass gives
  every node a token (function, version, parameters, the tokens of its inputs,
  output count); a node whose token was seen is removed, its consumers are
  rewired to the survivor's outputs, and requested outputs it held become
  aliases.  Duplicates of duplicates merge transitively in the same pass.
- :func:`cull`: drop nodes the requested outputs do not need.
- :func:`fuse`: merge linear chains of cheap nodes into one node (one task;
  intermediate values stay in memory).
- :func:`optimize`: cse -> cull -> fuse as configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from effopt.graph.errors import show
from effopt.graph.model import MISSING, ComputationGraph, FusedCall, Node, canonical_params, fn_key


@dataclass(frozen=True)
class Merge:
    kept: str
    removed: str
    reason: str


@dataclass(frozen=True)
class Cull:
    node: str
    reason: str


@dataclass(frozen=True)
class Fusion:
    nodes: tuple[str, ...]
    into: str
    reason: str


@dataclass
class OptimizationReport:
    """What an optimisation merged, dropped and fused, and why."""

    nodes_before: int
    nodes_after: int
    merged: list[Merge] = field(default_factory=list)
    culled: list[Cull] = field(default_factory=list)
    fused: list[Fusion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def then(self, other: OptimizationReport) -> OptimizationReport:
        """This report followed by ``other`` (a later optimisation)."""
        return OptimizationReport(
            self.nodes_before,
            other.nodes_after,
            self.merged + other.merged,
            self.culled + other.culled,
            self.fused + other.fused,
            self.notes + other.notes,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OptimizationReport:
        return cls(
            data["nodes_before"],
            data["nodes_after"],
            [Merge(**m) for m in data["merged"]],
            [Cull(**c) for c in data["culled"]],
            [Fusion(tuple(f["nodes"]), f["into"], f["reason"]) for f in data["fused"]],
            list(data["notes"]),
        )


def _compose(aliases: Mapping[str, str], renamed: Mapping[str, str]) -> dict[str, str]:
    out = {k: renamed.get(v, v) for k, v in aliases.items()}
    return {k: v for k, v in out.items() if k != v}


# -- common-subexpression elimination ------------------------------------------


def cse(graph: ComputationGraph) -> tuple[ComputationGraph, OptimizationReport]:
    """Merge nodes computing the same thing (same function, version, params and inputs).

    Impure nodes (``pure=False``) and nodes whose parameters have no canonical
    form are never merged.  The survivor of a group is the first node in
    topological order.  Tokens are hash-consed keys (exact, no hash collisions):
    a node's key holds the small integer tokens of its inputs' producers.
    """
    order = graph.topological_order()
    data_token: dict[str, Any] = {name: ("in", name) for name in graph.input_names}
    tokens: dict[tuple[Any, ...], int] = {}  # node key -> token
    survivor: dict[int, str] = {}  # token -> id of the node kept for it
    renamed: dict[str, str] = {}  # output of a removed node -> same output of the survivor
    rewired: dict[str, Node] = {}
    merged: list[Merge] = []
    notes: list[str] = []
    fn_keys: dict[Any, str] = {}
    for nid in order:
        original = graph.nodes[nid]
        node = original
        if renamed and any(d in renamed for d in original.inputs.values()):
            node = _with_inputs(original, {arg: renamed.get(d, d) for arg, d in original.inputs.items()})
        key = _key(node, data_token, fn_keys)
        if key is None:
            if node.pure:
                notes.append(f"node {show(nid)} not merged: its params have no canonical form")
            base: Any = ("node", nid)
        else:
            token = tokens.setdefault(key, len(tokens))
            kept_id = survivor.get(token)
            if kept_id is not None:
                kept = rewired[kept_id]
                renamed.update(zip(node.outputs, kept.outputs, strict=True))
                how = "" if original.inputs == graph.nodes[kept_id].inputs else " (after merging its inputs)"
                merged.append(Merge(kept_id, nid, f"same function {node.fn_name}, version, params and inputs{how}"))
                continue
            survivor[token] = nid
            base = token
        rewired[nid] = node
        for i, out in enumerate(node.outputs):
            data_token[out] = (base, i)
    nodes = {nid: rewired[nid] for nid in graph.nodes if nid in rewired}
    aliases = _compose(graph.aliases, renamed)
    for name in graph.outputs:
        data = graph.resolve(name)
        if data in renamed:
            aliases[name] = renamed[data]
    result = graph.replace(nodes=nodes, aliases=aliases)
    return result, OptimizationReport(len(graph), len(result), merged=merged, notes=notes)


def _with_inputs(node: Node, inputs: dict[str, str]) -> Node:
    """``node`` reading ``inputs`` (a copy without re-running field normalisation)."""
    copy = object.__new__(Node)
    copy.__dict__.update(node.__dict__)
    copy.__dict__["inputs"] = inputs
    return copy


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _params_key(params: Mapping[str, Any]) -> Any:
    """An exact, hashable key of the params (type-tagged so 1, 1.0 and True differ), or None."""
    key = []
    for name, value in params.items():
        kind = type(value)
        if kind not in _SCALARS:
            return canonical_params(params)
        key.append((name, kind.__name__, value))
    if len(key) > 1:
        key.sort()
    return tuple(key)


def _key(node: Node, data_token: Mapping[str, Any], fn_keys: dict[Any, str]) -> tuple[Any, ...] | None:
    if not node.pure:
        return None
    params = _params_key(node.params)
    if params is None:
        return None
    inputs = [(arg, data_token.get(d, ("missing", d))) for arg, d in node.inputs.items()]
    if len(inputs) > 1:
        inputs.sort()
    fn = node.fn
    try:
        key = fn_keys[fn]
    except (KeyError, TypeError):  # TypeError: an unhashable callable
        key = fn_key(fn)
        if isinstance(fn, str):
            fn_keys[fn] = key
    return (key, node.version, params, tuple(inputs), len(node.outputs))


# -- cull ------------------------------------------------------------------------


def cull(graph: ComputationGraph) -> tuple[ComputationGraph, OptimizationReport]:
    """Drop every node the requested outputs do not need (all nodes stay when none are requested)."""
    if not graph.outputs:
        report = OptimizationReport(len(graph), len(graph), notes=["no requested outputs: nothing culled"])
        return graph, report
    producers = graph.producers
    stack = [producers[d] for d in graph.requested.values() if d in producers]
    keep: set[str] = set()
    while stack:
        nid = stack.pop()
        if nid in keep:
            continue
        keep.add(nid)
        stack.extend(d for d in graph.dependencies(nid) if d not in keep)
    wanted = ", ".join(show(o) for o in graph.outputs)
    culled = [Cull(nid, f"not needed for the requested outputs {wanted}") for nid in graph.nodes if nid not in keep]
    result = graph.replace(nodes={nid: n for nid, n in graph.nodes.items() if nid in keep})
    return result, OptimizationReport(len(graph), len(result), culled=culled)


# -- fuse ------------------------------------------------------------------------


def fuse(graph: ComputationGraph, max_cost: float) -> tuple[ComputationGraph, OptimizationReport]:
    """Merge linear chains of cheap nodes (cost <= ``max_cost``) into single nodes.

    ``u -> v`` joins a chain when ``v`` is the only node reading ``u``'s
    outputs, ``u`` is the only node ``v`` reads from, both are cheap and
    parallel, and they share resources and group.  The fused node exposes the
    last node's outputs and any requested intermediate output.

    Steps: find the chains, make one fused node per chain, put each fused node
    where its chain's first node was.
    """
    requested = set(graph.requested.values())
    chains = _linear_chains(graph, max_cost)
    if not chains:
        return graph, OptimizationReport(len(graph), len(graph))
    fused = [_fused_node(graph, chain, requested) for chain in chains]
    fusions = [Fusion(tuple(chain), node.id, f"linear chain of cheap nodes (each cost <= {max_cost:g} s)")
               for chain, node in zip(chains, fused, strict=True)]
    result = graph.replace(nodes=_nodes_with_fused(graph, chains, fused))
    return result, OptimizationReport(len(graph), len(result), fused=fusions)


def _cheap(n: Node, max_cost: float) -> bool:
    return n.cost <= max_cost and n.parallel


def _chain_successor(graph: ComputationGraph, u: Node, max_cost: float) -> Node | None:
    """The node ``v`` that ``u -> v`` joins into a chain with, or None (see :func:`fuse`)."""
    dependents = graph.dependents(u.id)
    if len(dependents) != 1 or not _cheap(u, max_cost):
        return None
    v = graph.nodes[dependents[0]]
    if not _cheap(v, max_cost) or graph.dependencies(v.id) != [u.id]:
        return None
    if u.resources != v.resources or u.group != v.group:
        return None
    return v


def _linear_chains(graph: ComputationGraph, max_cost: float) -> list[list[str]]:
    """The maximal chains of joined nodes (two nodes or more), in topological order of their first node."""
    order = graph.topological_order()
    nxt = {nid: v.id for nid in order if (v := _chain_successor(graph, graph.nodes[nid], max_cost)) is not None}
    has_prev = set(nxt.values())
    chains = []
    for nid in order:
        if nid in nxt and nid not in has_prev:
            chain = [nid]
            while chain[-1] in nxt:
                chain.append(nxt[chain[-1]])
            chains.append(chain)
    return chains


def _nodes_with_fused(graph: ComputationGraph, chains: list[list[str]], fused: list[Node]) -> dict[str, Node]:
    """The graph's nodes in their order, each chain replaced by its fused node at the place of its first node."""
    replaced: dict[str, Node] = {}
    firsts: set[str] = set()
    for chain, node in zip(chains, fused, strict=True):
        firsts.add(chain[0])
        for nid in chain:
            replaced[nid] = node
    nodes: dict[str, Node] = {}
    for nid, node in graph.nodes.items():
        if nid not in replaced:
            nodes[nid] = node
        elif nid in firsts:
            nodes[replaced[nid].id] = replaced[nid]
    return nodes


def _fused_node(graph: ComputationGraph, chain: list[str], requested: set[str]) -> Node:
    steps = [graph.nodes[nid] for nid in chain]
    produced: set[str] = set()
    inputs: dict[str, str] = {}
    for step in steps:
        for data in step.inputs.values():
            if data not in produced:
                inputs[data] = data
        produced.update(step.outputs)
    exposed = [o for step in steps[:-1] for o in step.outputs if o in requested] + list(steps[-1].outputs)
    fused_id = "__".join(chain)
    while fused_id in graph.nodes:
        fused_id += "__fused"
    origins = tuple(o for s in steps for o in (s.fused_from or (s.id,)))
    return Node(
        fused_id,
        FusedCall(tuple(steps), tuple(exposed)),
        inputs,
        tuple(exposed),
        {},
        sum(s.cost for s in steps),
        True,
        steps[0].resources,
        steps[0].group,
        "",
        all(s.pure for s in steps),
        origins,
        "Fused: " + " -> ".join(chain),
    )


# -- pipeline ------------------------------------------------------------------


def optimize(
    graph: ComputationGraph,
    *,
    cse_enabled: bool | None = None,
    cull_enabled: bool | None = None,
    fuse_max_cost: Any = MISSING,
) -> tuple[ComputationGraph, OptimizationReport]:
    """cse -> cull -> fuse; unset options come from the spec's ``optimize`` settings.

    Defaults: cse on, cull on, fuse off (``fuse_max_cost`` None).
    """
    settings = dict(graph.settings.get("optimize", {}))
    do_cse = settings.get("cse", True) if cse_enabled is None else cse_enabled
    do_cull = settings.get("cull", True) if cull_enabled is None else cull_enabled
    max_cost = settings.get("fuse_max_cost") if fuse_max_cost is MISSING else fuse_max_cost
    report = OptimizationReport(len(graph), len(graph))
    if do_cse:
        graph, step = cse(graph)
        report = report.then(step)
    if do_cull:
        graph, step = cull(graph)
        report = report.then(step)
    if max_cost is not None:
        graph, step = fuse(graph, float(max_cost))
        report = report.then(step)
    return graph, report
