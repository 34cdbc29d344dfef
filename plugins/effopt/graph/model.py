"""The computation-graph model: nodes of functions with named inputs and outputs.

A :class:`Node` calls ``fn(**{arg: value_of(data)}, **params)``: ``inputs`` maps
each function argument to the name of a data item, produced by another node's
``outputs`` or supplied at run time as a graph input.  A node with one output
returns its value; a node with several returns a tuple (or a mapping keyed by the
output names).  A :class:`ComputationGraph` holds the nodes, the graph inputs,
the requested ``outputs`` and ``aliases`` (a requested name that common-
subexpression elimination mapped onto the identical data item that survives).

Plain Python: no Airflow import.
"""

from __future__ import annotations

import hashlib
import heapq
import importlib
import importlib.util
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

from effopt.graph.errors import GraphValidationError, Problem, show


class _Missing:
    """Sentinel for "no default" (graph inputs that must be supplied at run time)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Resources:
    """What one run of a node needs: CPU cores, memory, whole GPUs and GPU memory."""

    cpu: float = 1.0
    memory_mb: float = 0.0
    gpu: int = 0
    gpu_memory_mb: float = 0.0

    @classmethod
    def coerce(cls, value: Resources | Mapping[str, Any] | None) -> Resources:
        if value is None:
            return cls()
        if isinstance(value, Resources):
            return value
        return cls(**dict(value))

    def to_dict(self) -> dict[str, float | int]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb, "gpu": self.gpu, "gpu_memory_mb": self.gpu_memory_mb}


@dataclass(frozen=True)
class GraphInput:
    """A graph input, supplied at run time (DAG run ``conf``); ``default`` may be MISSING."""

    name: str
    default: Any = MISSING
    type: str | None = None  # JSON-schema type: string, number, integer, boolean, array, object
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is MISSING


@dataclass(frozen=True)
class Node:
    """One function call of the graph.

    ``fn`` is a callable or a dotted path (``package.module.function`` or
    ``package.module:function``).  ``inputs`` maps argument -> data name (a list
    means each argument is named like its data item); ``outputs`` names the
    return value(s).  ``params`` are constant keyword arguments.  ``cost`` is the
    estimated run time in seconds.  ``parallel=False`` means the node must run
    alone.  ``pure=False`` keeps a node with side effects from ever being merged
    with an identical one.  ``version`` distinguishes otherwise identical calls
    (bump it when the function's behaviour changes).  ``fused_from`` lists the
    original nodes of a fused node.  ``description`` documents the node (task doc).
    """

    id: str
    fn: Callable[..., Any] | str | FusedCall
    inputs: Mapping[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    cost: float = 1.0
    parallel: bool = True
    resources: Resources = field(default_factory=Resources)
    group: str | None = None
    version: str = ""
    pure: bool = True
    fused_from: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        inputs = self.inputs
        if isinstance(inputs, str):
            inputs = {inputs: inputs}
        elif not isinstance(inputs, Mapping):
            inputs = {name: name for name in inputs}
        outputs = (self.outputs,) if isinstance(self.outputs, str) else tuple(self.outputs)
        object.__setattr__(self, "inputs", dict(inputs))
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "resources", Resources.coerce(self.resources))

    @property
    def fn_name(self) -> str:
        """Readable name of the function (dotted path where there is one)."""
        if isinstance(self.fn, FusedCall):
            return "fused(" + ", ".join(s.fn_name.rsplit(".", 1)[-1] for s in self.fn.steps) + ")"
        return fn_key(self.fn)

    def replace(self, **changes: Any) -> Node:
        return replace(self, **changes)


@dataclass(frozen=True)
class FusedCall:
    """The function of a fused node: the original nodes run in order in one call.

    Called with the fused node's external inputs as keyword arguments (named
    like their data items); intermediate values stay in memory.  Returns the
    exposed ``outputs`` like any node (a single value for one output).
    """

    steps: tuple[Node, ...]
    outputs: tuple[str, ...]

    def __call__(self, **values: Any) -> Any:
        return self.run(values)

    def run(self, values: Mapping[str, Any], cache: Any = None) -> Any:
        env = dict(values)
        for step in self.steps:
            env.update(call_node(step, env, cache))
        if len(self.outputs) == 1:
            return env[self.outputs[0]]
        return tuple(env[name] for name in self.outputs)

    @cached_property
    def key(self) -> str:
        parts = [
            [fn_key(s.fn), s.version, canonical_params(s.params), sorted(s.inputs.items()), list(s.outputs)]
            for s in self.steps
        ]
        digest = hashlib.blake2b(json.dumps([parts, list(self.outputs)]).encode(), digest_size=16).hexdigest()
        return f"fused:{digest}"


def canonical_params(params: Mapping[str, Any]) -> str | None:
    """A canonical text of JSON-like parameters, or None when a value has no canonical form."""
    try:
        return json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=True, default=_canon_default)
    except (TypeError, ValueError):
        return None


def _canon_default(value: Any) -> Any:
    # numpy scalars and arrays (without importing numpy): exact dtype + shape + bytes.
    if type(value).__module__ == "numpy":
        if hasattr(value, "tobytes") and hasattr(value, "dtype"):
            digest = hashlib.blake2b(value.tobytes(), digest_size=16).hexdigest()
            return {"__numpy__": [str(value.dtype), list(getattr(value, "shape", ())), digest]}
    if isinstance(value, (tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else list(value)
        return {f"__{type(value).__name__}__": items}
    raise TypeError(f"no canonical form for {type(value).__name__}")


def fn_key(fn: Any) -> str:
    """The identity of a function for merging: its dotted path where it has a stable one."""
    if isinstance(fn, str):
        return fn.replace(":", ".")
    if isinstance(fn, FusedCall):
        return fn.key
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        return f"{module}.{qualname}"
    # lambdas, closures, partials: only the very same object is the same function
    return f"object:{id(fn)}"


def dotted_path(fn: Any) -> str | None:
    """The dotted path that resolves back to ``fn``, or None (lambdas, closures, partials)."""
    if isinstance(fn, str):
        return fn
    key = fn_key(fn)
    if key.startswith(("object:", "fused:")):
        return None
    try:
        return key if resolve_callable(key) is fn else None
    except ValueError:
        return None


def _import_candidates(path: str) -> list[tuple[str, list[str]]]:
    """The (module, attribute path) splits of ``path`` to try, the longest module first; ValueError when
    ``path`` is not a dotted path or names a ``__main__`` module."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{show(path)} is not a dotted path")
    if ":" in path:
        module_name, _, attr_path = path.partition(":")
        candidates = [(module_name, attr_path.split("."))]
    else:
        parts = path.split(".")
        candidates = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
        if len(parts) < 2:
            raise ValueError(f"{show(path)} is not a dotted path (expected package.module.function)")
    if "__main__" in path.replace(":", ".").split("."):
        # A package's __main__ runs a program when imported (python -m pkg): never a node's function.
        raise ValueError(f"{show(path)} names a __main__ module, which runs a program when imported")
    return candidates


def _import_module(module_name: str) -> tuple[Any, str]:
    """(the imported module, "") or (None, why there is no such module); ValueError when importing it (or a
    parent package) raises or exits."""
    try:
        found = importlib.util.find_spec(module_name)  # imports the parent packages, not the module
    except (ImportError, ValueError):
        found = None
    except Exception as exc:  # noqa: BLE001 - a parent package's import code failed: reported, not raised
        raise ValueError(f"importing {show(module_name)} failed: {type(exc).__name__}: {exc}") from exc
    except SystemExit as exc:
        raise ValueError(f"importing {show(module_name)} called sys.exit({exc.code!r})") from None
    if found is None:
        return None, f"no module named {show(module_name)}"
    try:
        return importlib.import_module(module_name), ""
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return None, f"no module named {show(exc.name)}"
        raise ValueError(f"importing {show(module_name)} failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any error raised by user code at import is reported, not raised
        raise ValueError(f"importing {show(module_name)} failed: {type(exc).__name__}: {exc}") from exc
    except SystemExit as exc:  # a module that exits when imported (a script) is a problem, not an exit
        raise ValueError(f"importing {show(module_name)} called sys.exit({exc.code!r})") from None


def _callable_attribute(module: Any, module_name: str, attrs: list[str], path: str) -> Callable[..., Any]:
    """The attribute ``attrs`` of ``module``; ValueError naming a missing attribute or a non-callable."""
    obj: Any = module
    for i, attr in enumerate(attrs):
        if not hasattr(obj, attr):
            owner = ".".join([module_name, *attrs[:i]])
            raise ValueError(f"{show(owner)} has no attribute {show(attr)}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise ValueError(f"{show(path)} is a {type(obj).__name__}, not a callable")
    return obj


@lru_cache(maxsize=4096)
def resolve_callable(path: str) -> Callable[..., Any]:
    """Import the callable at ``path`` (``pkg.mod.func``, ``pkg.mod:func`` or ``pkg.mod.Class.method``).

    The candidate splits into module and attributes are tried longest module first; the first module that
    exists is imported and the attributes are looked up in it.  Raises ValueError saying what could not be
    found.
    """
    last_error = ""
    for module_name, attrs in _import_candidates(path):
        module, last_error = _import_module(module_name)
        if module is not None:
            return _callable_attribute(module, module_name, attrs, path)
    raise ValueError(f"cannot import {show(path)}: {last_error}")


def split_outputs(node_id: str, outputs: Sequence[str], result: Any) -> dict[str, Any]:
    """Name the return value of a node: one output takes the value, several unpack it."""
    if len(outputs) == 1:
        return {outputs[0]: result}
    if isinstance(result, Mapping) and set(result) >= set(outputs):
        return {name: result[name] for name in outputs}
    if isinstance(result, (tuple, list)) and len(result) == len(outputs):
        return dict(zip(outputs, result, strict=True))
    got = (
        f"{type(result).__name__} of length {len(result)}"
        if isinstance(result, (tuple, list))
        else type(result).__name__
    )
    raise ValueError(
        f"node {show(node_id)} declares {len(outputs)} outputs ({', '.join(outputs)}) but its function returned "
        f"a {got}; return a tuple of {len(outputs)} values or a mapping with those keys"
    )


def _with_cache(cache: Any, fn: Callable[..., Any], version: str) -> Callable[..., Any]:
    """Wrap ``fn`` with a computation cache's ``cached(...)`` decorator (duck-typed)."""
    decorator = cache.cached(version=version) if version else cache.cached()
    return decorator(fn)


def call_node(node: Node, values: Mapping[str, Any], cache: Any = None) -> dict[str, Any]:
    """Run one node on ``values`` (data name -> value); returns its outputs by name.

    With ``cache`` (an object with a ``cached(version=...)`` decorator factory,
    such as :class:`effopt.cache.ComputationCache`) each function call goes
    through the cache; a fused node caches each of its steps.
    """
    args = {arg: values[data] for arg, data in node.inputs.items()}
    if isinstance(node.fn, FusedCall):
        result = node.fn.run(args, cache)
    else:
        fn = resolve_callable(node.fn) if isinstance(node.fn, str) else node.fn
        if cache is not None:
            fn = _with_cache(cache, fn, node.version)
        result = fn(**args, **node.params)
    return split_outputs(node.id, node.outputs, result)


@dataclass(frozen=True)
class ComputationGraph:
    """Nodes, graph inputs, requested outputs (and aliases for merged outputs).

    ``settings`` carries spec-level options (description, owner, tags, retries,
    capacity, optimize, airflow) through to the compiler.  Build one with
    :meth:`from_nodes` or load a YAML spec with :func:`effopt.graph.load_spec`.
    Instances are treated as immutable: optimisations return new graphs.
    """

    name: str
    nodes: Mapping[str, Node]
    inputs: tuple[GraphInput, ...] = ()
    outputs: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_nodes(
        cls,
        name: str,
        nodes: Iterable[Node],
        inputs: Iterable[GraphInput | str] = (),
        outputs: Iterable[str] = (),
        **settings: Any,
    ) -> ComputationGraph:
        """Build a graph; raises GraphValidationError on duplicate node ids."""
        by_id: dict[str, Node] = {}
        problems = []
        for node in nodes:
            if node.id in by_id:
                problems.append(Problem("duplicate-node", f"node id {show(node.id)} is used twice", (node.id,)))
            by_id[node.id] = node
        if problems:
            raise GraphValidationError(problems)
        graph_inputs = tuple(GraphInput(i) if isinstance(i, str) else i for i in inputs)
        return cls(name, by_id, graph_inputs, tuple(outputs), {}, settings)

    def replace(self, **changes: Any) -> ComputationGraph:
        return replace(self, **changes)

    def __len__(self) -> int:
        return len(self.nodes)

    # -- indexes (computed once per graph) ---------------------------------

    @cached_property
    def input_names(self) -> frozenset[str]:
        return frozenset(i.name for i in self.inputs)

    @cached_property
    def producers(self) -> dict[str, str]:
        """data name -> id of the (first) node producing it (graph inputs take precedence)."""
        out: dict[str, str] = {}
        inputs = self.input_names
        for node in self.nodes.values():
            for name in node.outputs:
                if name not in inputs:
                    out.setdefault(name, node.id)
        return out

    @cached_property
    def consumers(self) -> dict[str, list[str]]:
        """data name -> ids of the nodes reading it."""
        out: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for name in dict.fromkeys(node.inputs.values()):
                out.setdefault(name, []).append(node.id)
        return out

    @cached_property
    def _deps(self) -> dict[str, list[str]]:
        producers = self.producers
        deps: dict[str, list[str]] = {}
        for nid, node in self.nodes.items():
            found = [producers[d] for d in node.inputs.values() if d in producers]
            deps[nid] = found if len(found) < 2 else list(dict.fromkeys(found))
        return deps

    @cached_property
    def _dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {nid: [] for nid in self.nodes}
        for nid, deps in self._deps.items():
            for dep in deps:
                out[dep].append(nid)
        return out

    def dependencies(self, node_id: str) -> list[str]:
        """Ids of the nodes whose outputs ``node_id`` reads."""
        return self._deps[node_id]

    def dependents(self, node_id: str) -> list[str]:
        """Ids of the nodes reading an output of ``node_id``."""
        return self._dependents[node_id]

    def data_edges(self) -> list[tuple[str, str, str]]:
        """(producer, consumer, data name) for every data item passed between nodes."""
        producers = self.producers
        edges = []
        for node in self.nodes.values():
            for data in dict.fromkeys(node.inputs.values()):
                if data in producers:
                    edges.append((producers[data], node.id, data))
        return edges

    def resolve(self, name: str) -> str:
        """The data item a requested output name stands for (after merges)."""
        return self.aliases.get(name, name)

    @cached_property
    def requested(self) -> dict[str, str]:
        """requested output name -> data item that holds it."""
        return {name: self.resolve(name) for name in self.outputs}

    def topological_order(self) -> list[str]:
        """Node ids, producers before consumers, ties in insertion order.

        Raises GraphValidationError naming the cycle(s) when there is one.
        """
        return list(self._order)

    @cached_property
    def _order(self) -> list[str]:
        index = {nid: i for i, nid in enumerate(self.nodes)}
        indegree = {nid: len(deps) for nid, deps in self._deps.items()}
        heap = [index[nid] for nid, d in indegree.items() if d == 0]
        heapq.heapify(heap)
        ids = list(self.nodes)
        order: list[str] = []
        while heap:
            nid = ids[heapq.heappop(heap)]
            order.append(nid)
            for dep in self._dependents[nid]:
                indegree[dep] -= 1
                if indegree[dep] == 0:
                    heapq.heappush(heap, index[dep])
        if len(order) != len(self.nodes):
            left = [nid for nid in self.nodes if indegree[nid] > 0]
            raise GraphValidationError(cycle_problems(self, left))
        return order


def cycle_problems(graph: ComputationGraph, nodes: Iterable[str]) -> list[Problem]:
    """One ``cycle`` problem per strongly connected component among ``nodes``, with a cycle path."""
    import networkx as nx

    sub = nx.DiGraph()
    left = set(nodes)
    sub.add_nodes_from(left)
    for producer, consumer, _ in graph.data_edges():
        if producer in left and consumer in left:
            sub.add_edge(producer, consumer)
    problems = []
    for component in sorted(nx.strongly_connected_components(sub), key=lambda c: min(c)):
        if len(component) == 1 and not sub.has_edge(next(iter(component)), next(iter(component))):
            continue  # downstream of a cycle, not on one
        start = min(component)
        edges = nx.find_cycle(sub.subgraph(component), source=start)
        path = [edges[0][0]] + [v for _, v in edges]
        problems.append(Problem("cycle", "cycle: " + " -> ".join(show(n) for n in path), tuple(dict.fromkeys(path))))
    return problems
