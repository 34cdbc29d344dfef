"""Validation of a computation graph: every problem, each naming the nodes involved."""

from __future__ import annotations

import difflib
import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from effopt.graph.errors import GraphValidationError, Problem, show
from effopt.graph.model import ComputationGraph, FusedCall, Node, resolve_callable


def validate(
    graph: ComputationGraph,
    *,
    resolve: bool = True,
    source: str | None = None,
    extra: Iterable[Problem] = (),
    known_data: Iterable[str] = (),
) -> None:
    """Raise :class:`GraphValidationError` listing every problem of ``graph`` (plus ``extra``).

    ``resolve=False`` skips importing dotted paths and checking function
    signatures.  ``known_data`` names data items whose producer exists but was
    itself invalid (spec loading), so they are not reported missing again.
    """
    problems = list(extra) + check(graph, resolve=resolve, known_data=frozenset(known_data))
    if problems:
        raise GraphValidationError(problems, source)


def check(graph: ComputationGraph, *, resolve: bool = True, known_data: frozenset[str] = frozenset()) -> list[Problem]:
    """Every problem of ``graph``, without raising.

    In this order: each node's fields and outputs, data produced twice, inputs without a producer, requested
    outputs without a producer, cycles, and (``resolve``) each node's function and signature.
    """
    problems, producers = _check_nodes(graph)
    problems += _check_unique_producers(graph, producers)
    available = set(producers) | set(graph.input_names) | set(known_data)
    problems += _check_inputs_produced(graph, available)
    problems += _check_outputs_produced(graph, producers, known_data)
    problems += _check_cycles(graph)
    if resolve:
        for node in graph.nodes.values():
            problems += _check_function(node)
    return problems


def _check_nodes(graph: ComputationGraph) -> tuple[list[Problem], dict[str, list[str]]]:
    """(the problems of each node's fields and outputs, data name -> the nodes producing it)."""
    problems: list[Problem] = []
    producers: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        problems += _check_fields(node)
        seen: set[str] = set()
        for name in node.outputs:
            if name in seen:
                problems.append(
                    Problem("duplicate-producer", f"node {show(node.id)} lists output {show(name)} twice", (node.id,))
                )
            seen.add(name)
            producers.setdefault(name, []).append(node.id)
    return problems, producers


def _check_unique_producers(graph: ComputationGraph, producers: Mapping[str, list[str]]) -> list[Problem]:
    """Data produced by more than one node, or both a graph input and produced by a node."""
    problems: list[Problem] = []
    for name, ids in producers.items():
        unique = list(dict.fromkeys(ids))
        if len(unique) > 1:
            problems.append(
                Problem(
                    "duplicate-producer",
                    f"data {show(name)} is produced by {len(unique)} nodes: {', '.join(show(i) for i in unique)}",
                    tuple(unique),
                )
            )
        if name in graph.input_names:
            problems.append(
                Problem(
                    "duplicate-producer",
                    f"data {show(name)} is a graph input and also produced by node {show(unique[0])}",
                    (unique[0],),
                )
            )
    return problems


def _check_inputs_produced(graph: ComputationGraph, available: set[str]) -> list[Problem]:
    """Node inputs that are neither a graph input nor an output of a node."""
    problems: list[Problem] = []
    for node in graph.nodes.values():
        for arg, data in node.inputs.items():
            if data not in available:
                problems.append(
                    Problem(
                        "missing-producer",
                        f"node {show(node.id)}: input {show(data)} (argument {show(arg)}) has no producer: it is "
                        f"neither a graph input nor an output of any node{_suggest(data, available)}",
                        (node.id,),
                    )
                )
    return problems


def _check_outputs_produced(graph: ComputationGraph, producers: Mapping[str, list[str]],
                            known_data: frozenset[str]) -> list[Problem]:
    """Requested outputs that no node produces."""
    problems: list[Problem] = []
    for name in graph.outputs:
        data = graph.resolve(name)
        if data not in producers and data not in known_data:
            problems.append(
                Problem(
                    "missing-producer",
                    f"requested output {show(name)} is not produced by any node{_suggest(data, set(producers))}",
                )
            )
    return problems


def _suggest(name: str, candidates: set[str]) -> str:
    if len(candidates) > 5000 or len(name) > 200:
        return ""
    close = difflib.get_close_matches(name, sorted(c for c in candidates if len(c) <= 200), n=1)
    return f" (did you mean {show(close[0])}?)" if close else ""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_fields(node: Node) -> list[Problem]:
    problems = []
    where = f"node {show(node.id)}"
    if not node.outputs:
        problems.append(Problem("spec", f"{where} has no outputs; name its return value in 'outputs'", (node.id,)))
    if not _number(node.cost) or node.cost < 0:
        problems.append(Problem("spec", f"{where}: cost {node.cost!r} must be a number >= 0 (seconds)", (node.id,)))
    if not isinstance(node.parallel, bool):
        problems.append(Problem("spec", f"{where}: parallel {node.parallel!r} must be true or false", (node.id,)))
    res = node.resources
    for key in ("cpu", "memory_mb", "gpu_memory_mb"):
        value = getattr(res, key)
        if not _number(value) or value < 0:
            problems.append(Problem("spec", f"{where}: resources.{key} {value!r} must be a number >= 0", (node.id,)))
    if not isinstance(res.gpu, int) or isinstance(res.gpu, bool) or res.gpu < 0:
        problems.append(Problem("spec", f"{where}: resources.gpu {res.gpu!r} must be a whole number >= 0", (node.id,)))
    return problems


def _check_cycles(graph: ComputationGraph) -> list[Problem]:
    try:
        graph.topological_order()
    except GraphValidationError as exc:
        return exc.problems
    return []


def _check_function(node: Node) -> list[Problem]:
    if isinstance(node.fn, FusedCall):
        return [p for step in node.fn.steps for p in _check_function(step)]
    where = f"node {show(node.id)}"
    if isinstance(node.fn, str):
        try:
            fn = resolve_callable(node.fn)
        except ValueError as exc:
            return [Problem("unresolvable-fn", f"{where}: fn {show(node.fn)} cannot be resolved: {exc}", (node.id,))]
    elif callable(node.fn):
        fn = node.fn
    else:
        return [
            Problem(
                "unresolvable-fn",
                f"{where}: fn is a {type(node.fn).__name__}, not a callable or dotted path",
                (node.id,),
            )
        ]
    return _check_signature(node, fn)


def _check_signature(node: Node, fn: Callable[..., Any]) -> list[Problem]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []  # builtins without a signature: nothing to check against
    where = f"node {show(node.id)}"
    name = show(node.fn_name)
    params = sig.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    by_keyword = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    problems = []
    for arg in node.inputs.keys() & node.params.keys():
        problems.append(
            Problem(
                "bad-argument", f"{where}: argument {show(arg)} is given both as an input and as a param", (node.id,)
            )
        )
    for arg in list(node.inputs) + list(node.params):
        if arg not in by_keyword and not var_kw:
            accepted = ", ".join(sorted(by_keyword)) or "none"
            problems.append(
                Problem(
                    "bad-argument",
                    f"{where}: {name} has no keyword argument {show(arg)} (accepted: {accepted})",
                    (node.id,),
                )
            )
    for arg, p in params.items():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty:
            if arg not in node.inputs and arg not in node.params:
                problems.append(
                    Problem(
                        "bad-argument",
                        f"{where}: argument {show(arg)} of {name} is required but is neither an input nor a param",
                        (node.id,),
                    )
                )
        elif p.kind is p.POSITIONAL_ONLY and p.default is p.empty:
            problems.append(
                Problem(
                    "bad-argument",
                    f"{where}: {name} has positional-only argument {show(arg)}; nodes pass keywords",
                    (node.id,),
                )
            )
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations (forward refs) just mean nothing to check
        hints = {}
    for key, value in node.params.items():
        hint = hints.get(key)
        if hint is not None and _matches(value, hint) is False:
            problems.append(
                Problem(
                    "bad-param-type",
                    f"{where}: param {show(key)} = {_short(value)} ({type(value).__name__}) does not match "
                    f"{_hint_name(hint)} of {name}",
                    (node.id,),
                )
            )
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _matches(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` fits the annotation ``hint``; None when the annotation is not checkable."""
    if hint is Any:
        return None
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        results = [_matches(value, arg) for arg in typing.get_args(hint)]
        if any(r is True for r in results):
            return True
        return False if all(r is False for r in results) else None
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None) or hint is None:
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, Sequence, typing.Sequence):
        return isinstance(value, (list, tuple))
    if container in (dict, Mapping, typing.Mapping):
        return isinstance(value, Mapping)
    return None
