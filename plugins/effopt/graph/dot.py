"""Graphviz DOT of a computation graph: stages as clusters, data names on the edges."""

from __future__ import annotations

from collections.abc import Mapping

from effopt.graph.model import ComputationGraph, Node
from effopt.graph.plan import Plan


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(node: Node) -> str:
    fn = node.fn_name.rsplit(".", 1)[-1] if not node.fused_from else "fused: " + " > ".join(node.fused_from)
    extra = [f"{node.cost:g} s"]
    if node.resources.gpu:
        extra.append(f"{node.resources.gpu} GPU")
    if not node.parallel:
        extra.append("alone")
    return f"{node.id}\n{fn}\n{', '.join(extra)}"


def _attrs(node: Node, note: str | None) -> str:
    attrs = {
        "label": _label(node) + (f"\n{note}" if note else ""),
        "shape": "box",
        "style": "rounded,filled",
        "fillcolor": "#e3f1e8",
    }
    if node.resources.gpu:
        attrs["fillcolor"] = "#fde2c8"
    if not node.parallel:
        attrs["shape"] = "octagon"
    if note:
        attrs.update(style="dashed", fillcolor="#eeeeee", fontcolor="#777777")
    return ", ".join(f"{k}={_q(v)}" for k, v in attrs.items())


def to_dot(graph: ComputationGraph, plan: Plan | None = None, eliminated: Mapping[str, str] | None = None) -> str:
    """DOT text of ``graph``; with ``plan`` each stage is a cluster.

    ``eliminated`` maps node ids to a note (e.g. "merged into x", "culled")
    drawn greyed out, for showing an unoptimised graph.
    """
    eliminated = eliminated or {}
    lines = [
        f"digraph {_q(graph.name)} {{",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for item in graph.inputs:
        lines.append(
            f'  {_q("input:" + item.name)} [label={_q(item.name)}, shape=ellipse, style=filled, fillcolor="#dde8f8"];'
        )
    placed: set[str] = set()
    if plan is not None:
        for i, stage in enumerate(plan.stages, start=1):
            lines.append(f"  subgraph {_q(f'cluster_stage_{i}')} {{")
            lines.append(f'    label={_q(f"stage {i}")}; style=dashed; color="#999999";')
            for nid in stage:
                lines.append(f"    {_q(nid)} [{_attrs(graph.nodes[nid], eliminated.get(nid))}];")
                placed.add(nid)
            lines.append("  }")
    for nid, node in graph.nodes.items():
        if nid not in placed:
            lines.append(f"  {_q(nid)} [{_attrs(node, eliminated.get(nid))}];")
    producers = graph.producers
    for node in graph.nodes.values():
        for data in dict.fromkeys(node.inputs.values()):
            source = producers.get(data) or ("input:" + data if data in graph.input_names else None)
            if source is not None:
                lines.append(f"  {_q(source)} -> {_q(node.id)} [label={_q(data)}];")
    for name in graph.outputs:
        data = graph.resolve(name)
        if data in producers:
            lines.append(
                f'  {_q("output:" + name)} [label={_q(name)}, shape=ellipse, style=filled, fillcolor="#f8e8dd"];'
            )
            lines.append(f"  {_q(producers[data])} -> {_q('output:' + name)} [label={_q(data)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
