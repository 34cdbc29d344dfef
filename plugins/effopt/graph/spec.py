"""YAML specs of computation graphs (``include/graphs/*.yaml``) and the JSON form of graphs.

A spec::

    name: feature_pipeline            # optional, defaults to the file name
    description: Features and a model for one symbol.
    owner: ml-team                    # DAG owner (default effopt)
    tags: [features]                  # extra DAG tags
    retries: 1                        # task retries (default 1)
    inputs:                           # graph inputs, given at run time (DAG run conf)
      symbol: {default: AAPL, type: string, description: ticker}
      # or a list: inputs: [symbol]  (required, no default)
    outputs: [model]                  # what the graph must produce
    capacity: {gpu: 1, cpu: 8}        # what a plan may use at once (default: unlimited)
    optimize: {cse: true, cull: true, fuse_max_cost: 0.5}   # fuse is off without fuse_max_cost
    airflow:                          # compiler options (effopt.graph.options.AirflowRenderOptions)
      group_by: stage                 # stage | group | none
      stage_barriers: false
      serial_pool: effopt_serial
      gpu_pool: effopt_gpu
      xcom_max_bytes: 65536
      max_task_id_length: 100
      max_active_tasks: 16
    nodes:
      load_data:
        fn: effopt.graph.examples.load_data   # dotted path to a callable
        inputs: {symbol: symbol}              # function argument -> data name (or a list of names)
        outputs: [raw_data]                   # names for the return value(s)
        params: {limit: 1000}                 # constant keyword arguments
        cost: 2.0                             # estimated seconds (default 1)
        parallel: true                        # false: must run alone
        pure: true                            # false: never merged with an identical node
        version: "1"                          # bump when the function's behaviour changes
        group: ingest                         # task group when airflow.group_by is group
        resources: {cpu: 1, memory_mb: 512, gpu: 0, gpu_memory_mb: 0}
        description: Daily prices.

Loading reports every problem at once (:class:`GraphValidationError`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from effopt.graph.errors import GraphValidationError, Problem, show
from effopt.graph.model import MISSING, ComputationGraph, FusedCall, GraphInput, Node, Resources, dotted_path
from effopt.graph.options import AirflowRenderOptions
from effopt.graph.validate import check

#: Largest spec accepted, in bytes (``[effopt] graph_spec_max_bytes`` passes another): a spec this size
#: validates and plans in well under a second; a 50 MB one took minutes and gigabytes.
SPEC_MAX_BYTES = 4 * 1024 * 1024
#: Most values a spec may hold once its YAML aliases are expanded (an alias bomb expands exponentially).
SPEC_MAX_VALUES = 1_000_000

MAX_NAME = 200  # node ids and data names
MAX_GRAPH_NAME = 100
NODE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
DATA_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

INPUT_TYPES = ("string", "number", "integer", "boolean", "array", "object")
TOP_KEYS = (
    "name",
    "description",
    "owner",
    "tags",
    "retries",
    "inputs",
    "outputs",
    "capacity",
    "optimize",
    "airflow",
    "nodes",
)
NODE_KEYS = (
    "fn",
    "inputs",
    "outputs",
    "params",
    "cost",
    "parallel",
    "pure",
    "version",
    "group",
    "resources",
    "description",
)
RESOURCE_KEYS = ("cpu", "memory_mb", "gpu", "gpu_memory_mb")
CAPACITY_KEYS = ("cpu", "memory_mb", "gpu", "gpu_memory_mb", "workers")
OPTIMIZE_KEYS = ("cse", "cull", "fuse_max_cost")
AIRFLOW_KEYS = AirflowRenderOptions.keys()
INPUT_KEYS = ("default", "type", "description")


def spec_hash(data: bytes | str) -> str:
    """SHA-256 of a spec's bytes: the key of its compiled plan."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def load_spec(path: str | Path, *, resolve: bool = True, max_bytes: int = SPEC_MAX_BYTES) -> ComputationGraph:
    """Load and validate the spec at ``path``; raises GraphValidationError with every problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:  # refused before it is read
            raise GraphValidationError([Problem("spec", f"is {size:,} bytes, over the limit of {max_bytes:,} "
                                                        "([effopt] graph_spec_max_bytes)")], str(path))
        data = path.read_bytes()
    except OSError as exc:
        raise GraphValidationError([Problem("spec", f"cannot read {path}: {exc.strerror or exc}")], str(path)) from exc
    return parse_spec(data, source=str(path), default_name=path.stem, resolve=resolve, max_bytes=max_bytes)


def parse_spec(
    text: bytes | str | Mapping[str, Any],
    *,
    source: str | None = None,
    default_name: str | None = None,
    resolve: bool = True,
    max_bytes: int = SPEC_MAX_BYTES,
) -> ComputationGraph:
    """Build a graph from spec text (or an already-parsed mapping) and validate it.

    ``resolve=False`` skips importing the functions (no signature checks).
    """
    if isinstance(text, Mapping):
        raw: Any = text
    else:
        raw, problem = _load_yaml(text, max_bytes)
        if problem:
            raise GraphValidationError([problem], source)
    reader = _SpecReader()
    graph, known = reader.read(raw, default_name)
    problems = reader.problems
    if graph is not None:
        problems += check(graph, resolve=resolve, known_data=frozenset(known))
    if problems or graph is None:
        raise GraphValidationError(problems, source)
    return graph


class _DuplicateKey(yaml.YAMLError):
    pass


_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _SpecLoader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """YAML's safe loader, refusing duplicate keys (the last one would silently win: two nodes with one id)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hashable = hash(key) is not None
            except TypeError:
                hashable = False
            if hashable and key in seen:
                line = key_node.start_mark.line + 1
                raise _DuplicateKey(f"duplicate key {show(key)} on line {line} (first on line {seen[key]})")
            if hashable:
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def expanded_size(value: Any, limit: int = SPEC_MAX_VALUES) -> int:
    """How many values ``value`` holds with every shared (aliased) part counted each time it is used; stops
    counting past ``limit``.  Linear in the distinct values: shared parts are counted once and memoised."""
    memo: dict[int, int] = {}

    def size(v: Any) -> int:
        if isinstance(v, (list, dict)):
            key = id(v)
            if key not in memo:
                memo[key] = limit + 1  # a cycle (an alias inside itself) counts as too big
                items = v.values() if isinstance(v, dict) else v
                total = 1 + (len(v) if isinstance(v, dict) else 0)
                for item in items:
                    total += size(item)
                    if total > limit:
                        break
                memo[key] = total
            return memo[key]
        return 1

    return size(value)


def _load_yaml(text: bytes | str, max_bytes: int = SPEC_MAX_BYTES) -> tuple[Any, Problem | None]:
    if len(text) > max_bytes:
        return None, Problem("spec", f"is {len(text):,} bytes, over the limit of {max_bytes:,} "
                                     "([effopt] graph_spec_max_bytes)")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, Problem("spec", f"not UTF-8 text: {exc}")
    try:
        raw = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a safe loader
    except _DuplicateKey as exc:
        return None, Problem("spec", f"not a valid spec: {exc}")
    except yaml.YAMLError as exc:
        return None, Problem("spec", f"not valid YAML: {_clip(' '.join(str(exc).split()), 400)}")
    except RecursionError:
        return None, Problem("spec", "not valid YAML: nested too deeply")
    if expanded_size(raw) > SPEC_MAX_VALUES:
        return None, Problem("spec", f"expands to more than {SPEC_MAX_VALUES:,} values (YAML aliases used over "
                                     "and over?); write the values out, or split the spec")
    return raw, None


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` is not JSON-like (None when it is)."""
    if depth > 50:
        return "nested more than 50 levels"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{value!r} is not a finite number"
    if isinstance(value, list):
        return next((p for p in (_json_problem(v, depth + 1) for v in value) if p), None)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                return f"key {k!r} is a {type(k).__name__}, not a string"
            problem = _json_problem(v, depth + 1)
            if problem:
                return problem
        return None
    return f"a {type(value).__name__} ({_clip(repr(value), 40)}) is not a JSON value; quote it"


class _SpecReader:
    """Reads a parsed YAML document into a graph, collecting every problem."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, message: str, nodes: tuple[str, ...] = ()) -> None:
        self.problems.append(Problem("spec", message, nodes))

    def keys(self, where: str, mapping: Mapping[Any, Any], known: tuple[str, ...], nodes: tuple[str, ...] = ()) -> None:
        for key in mapping:
            if key not in known:
                hint = ""
                if isinstance(key, str) and len(key) <= MAX_NAME:
                    import difflib

                    close = difflib.get_close_matches(key, known, n=1)
                    hint = f" (did you mean {show(close[0])}?)" if close else ""
                self.fail(f"{where}: unknown key {show(key)}{hint}; known keys: {', '.join(known)}", nodes)

    def name(self, where: str, value: Any, pattern: re.Pattern[str], limit: int, nodes: tuple[str, ...] = ()) -> bool:
        if not isinstance(value, str):
            self.fail(f"{where} must be a string, not {type(value).__name__} {_clip(repr(value), 40)}", nodes)
            return False
        if len(value) > limit:
            self.fail(f"{where} {show(value)} is longer than {limit} characters", nodes)
            return False
        if not pattern.match(value):
            allowed = "letters, digits, _ and -" if pattern is NODE_ID else "letters, digits, _, . and -"
            self.fail(f"{where} {show(value)} may only contain {allowed} (and not start with . or -)", nodes)
            return False
        return True

    def read(self, raw: Any, default_name: str | None) -> tuple[ComputationGraph | None, set[str]]:
        if not isinstance(raw, Mapping):
            what = "empty" if raw is None else f"a {type(raw).__name__}"
            self.fail(f"a spec must be a mapping with 'nodes', 'inputs' and 'outputs'; this one is {what}")
            return None, set()
        self.keys("spec", raw, TOP_KEYS)
        name = raw.get("name", default_name)
        if name is None:
            self.fail("spec has no 'name'")
        elif not self.name("spec name", name, NODE_ID, MAX_GRAPH_NAME):
            name = None
        settings = self.settings(raw)
        inputs = self.inputs(raw.get("inputs", []))
        outputs = self.outputs_list("spec 'outputs'", raw.get("outputs"), required=True)
        nodes, known = self.nodes(raw.get("nodes"))
        if name is None:
            return None, known
        return ComputationGraph(name, nodes, tuple(inputs), tuple(outputs), {}, settings), known

    # -- top level -----------------------------------------------------------

    def settings(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("description", "owner"):
            if key in raw:
                if isinstance(raw[key], str):
                    out[key] = raw[key]
                else:
                    self.fail(f"spec '{key}' must be a string, not {type(raw[key]).__name__}")
        if "tags" in raw:
            tags = raw["tags"]
            if isinstance(tags, list) and all(isinstance(t, str) and 0 < len(t) <= 100 for t in tags):
                out["tags"] = list(tags)
            else:
                self.fail("spec 'tags' must be a list of strings of at most 100 characters")
        if "retries" in raw:
            retries = raw["retries"]
            if isinstance(retries, int) and not isinstance(retries, bool) and 0 <= retries <= 100:
                out["retries"] = retries
            else:
                self.fail(f"spec 'retries' must be a whole number from 0 to 100, not {_clip(repr(retries), 40)}")
        out["capacity"] = self.numbers("spec 'capacity'", raw.get("capacity"), CAPACITY_KEYS, ints=("gpu", "workers"))
        out["optimize"] = self.optimize(raw.get("optimize"))
        out["airflow"] = self.airflow(raw.get("airflow"))
        return out

    def numbers(
        self, where: str, raw: Any, known: tuple[str, ...], ints: tuple[str, ...] = (), nodes: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.fail(f"{where} must be a mapping of {', '.join(known)}, not {type(raw).__name__}", nodes)
            return {}
        self.keys(where, raw, known, nodes)
        out = {}
        for key in known:
            if key not in raw:
                continue
            value = raw[key]
            if key in ints:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            else:
                ok = _number(value) and value >= 0
            if ok:
                out[key] = value
            else:
                kind = "a whole number" if key in ints else "a number"
                self.fail(f"{where}: {key} must be {kind} >= 0, not {_clip(repr(value), 40)}", nodes)
        return out

    def optimize(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.fail(f"spec 'optimize' must be a mapping of {', '.join(OPTIMIZE_KEYS)}")
            return {}
        self.keys("spec 'optimize'", raw, OPTIMIZE_KEYS)
        out: dict[str, Any] = {}
        for key in ("cse", "cull"):
            if key in raw:
                if isinstance(raw[key], bool):
                    out[key] = raw[key]
                else:
                    self.fail(f"spec 'optimize': {key} must be true or false")
        if "fuse_max_cost" in raw:
            value = raw["fuse_max_cost"]
            if value is None or (_number(value) and value >= 0):
                out["fuse_max_cost"] = value
            else:
                self.fail(f"spec 'optimize': fuse_max_cost must be a number >= 0 or null, not {_clip(repr(value), 40)}")
        return out

    def airflow(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            self.fail(f"spec 'airflow' must be a mapping of {', '.join(AIRFLOW_KEYS)}")
            return {}
        self.keys("spec 'airflow'", raw, AIRFLOW_KEYS)
        bad = AirflowRenderOptions.problems(raw)
        for key, accepted in bad.items():
            self.fail(f"spec 'airflow': {key} must be {accepted}, not {_clip(repr(raw[key]), 40)}")
        return {k: v for k, v in raw.items() if k in AIRFLOW_KEYS and k not in bad}

    def inputs(self, raw: Any) -> list[GraphInput]:
        """The spec's graph inputs: a list of names, or a mapping name -> {default, type, description}."""
        if raw is None:
            return []
        if isinstance(raw, list):
            out = []
            for item in raw:
                if self.name("graph input", item, DATA_NAME, MAX_NAME):
                    out.append(GraphInput(item))
            return self.unique_inputs(out)
        if not isinstance(raw, Mapping):
            self.fail(
                "spec 'inputs' must be a list of names or a mapping name -> {default, type, description}, not "
                f"{type(raw).__name__}"
            )
            return []
        out = []
        for key, value in raw.items():
            if self.name("graph input", key, DATA_NAME, MAX_NAME):
                item = self.input_entry(key, value)
                if item is not None:
                    out.append(item)
        return out

    def input_entry(self, key: str, value: Any) -> GraphInput | None:
        """One graph input of the mapping form (None: not a mapping); an invalid type, default or description
        is reported and left out."""
        where = f"graph input {show(key)}"
        if value is None:
            return GraphInput(key)
        if not isinstance(value, Mapping):
            self.fail(f"{where} must be null or a mapping of {', '.join(INPUT_KEYS)}, not {type(value).__name__}")
            return None
        self.keys(where, value, INPUT_KEYS)
        default = value.get("default", MISSING)
        kind = value.get("type")
        if kind is not None and kind not in INPUT_TYPES:
            self.fail(f"{where}: type {_clip(repr(kind), 40)} must be one of {', '.join(INPUT_TYPES)}")
            kind = None
        if default is not MISSING:
            problem = _json_problem(default)
            if problem:
                self.fail(f"{where}: default: {problem}")
                default = MISSING
            elif kind and default is not None and not _fits_type(default, kind):
                self.fail(f"{where}: default {_clip(repr(default), 40)} is not of type {kind}")
        description = value.get("description", "")
        if not isinstance(description, str):
            self.fail(f"{where}: description must be a string")
            description = ""
        return GraphInput(key, default, kind, description)

    def unique_inputs(self, inputs: list[GraphInput]) -> list[GraphInput]:
        seen: set[str] = set()
        for item in inputs:
            if item.name in seen:
                self.fail(f"graph input {show(item.name)} is listed twice")
            seen.add(item.name)
        return [i for i in {i.name: i for i in inputs}.values()]

    def outputs_list(self, where: str, raw: Any, *, required: bool, nodes: tuple[str, ...] = ()) -> list[str]:
        if raw is None:
            if required:
                self.fail(f"{where} is missing: list the data names it produces", nodes)
            return []
        items = [raw] if isinstance(raw, str) else raw
        if not isinstance(items, list) or not items:
            self.fail(f"{where} must be a non-empty list of data names, not {_clip(repr(raw), 40)}", nodes)
            return []
        return [item for item in items if self.name(f"{where} entry", item, DATA_NAME, MAX_NAME, nodes)]

    # -- nodes ---------------------------------------------------------------

    def nodes(self, raw: Any) -> tuple[dict[str, Node], set[str]]:
        if not isinstance(raw, Mapping) or not raw:
            self.fail("spec 'nodes' must be a non-empty mapping of node id -> node")
            return {}, set()
        nodes: dict[str, Node] = {}
        known: set[str] = set()  # outputs of nodes that are themselves invalid
        for node_id, body in raw.items():
            if not self.name("node id", node_id, NODE_ID, MAX_NAME):
                continue
            node, outputs = self.node(node_id, body)
            if node is not None:
                nodes[node_id] = node  # checked further (inputs, function) even if some fields were invalid
            else:
                known.update(outputs)
        return nodes, known

    def node(self, node_id: str, body: Any) -> tuple[Node | None, list[str]]:
        """One node: (the node, None when its function or outputs are invalid; its outputs).

        Every field is checked, each problem reported: the function, the outputs, the inputs, the params,
        the cost, the flags, the version, the group, the description and the resources.
        """
        ids = (node_id,)
        where = f"node {show(node_id)}"
        if not isinstance(body, Mapping):
            self.fail(f"{where} must be a mapping with at least 'fn' and 'outputs', not {type(body).__name__}", ids)
            return None, []
        self.keys(where, body, NODE_KEYS, ids)
        fn = body.get("fn")
        fn_ok = self.node_fn(where, fn, ids)
        outputs = self.outputs_list(f"{where} 'outputs'", body.get("outputs"), required=True, nodes=ids)
        inputs = self.node_inputs(where, body.get("inputs"), ids)
        valid_params = self.node_params(where, body.get("params"), ids)
        cost = self.node_cost(where, body.get("cost", 1.0), ids)
        flags = self.node_flags(where, body, ids)
        version = self.node_version(where, body.get("version", ""), ids)
        group = body.get("group")
        if group is not None:
            self.name(f"{where}: 'group'", group, NODE_ID, MAX_NAME, ids)
        description = body.get("description", "")
        if not isinstance(description, str):
            self.fail(f"{where}: 'description' must be a string", ids)
        resources = self.numbers(
            f"{where}: 'resources'", body.get("resources"), RESOURCE_KEYS, ints=("gpu",), nodes=ids
        )
        if not fn_ok or not outputs:
            return None, outputs
        try:
            node = Node(
                node_id,
                fn,
                inputs,
                tuple(outputs),
                valid_params,
                float(cost),
                flags["parallel"] is not False,
                Resources(**resources),
                group if isinstance(group, str) else None,
                version if isinstance(version, str) else "",
                flags["pure"] is not False,
                (),
                description if isinstance(description, str) else "",
            )
        except (TypeError, ValueError) as exc:
            self.fail(f"{where}: {exc}", ids)
            return None, outputs
        return node, outputs

    def node_fn(self, where: str, fn: Any, ids: tuple[str, ...]) -> bool:
        """Whether ``fn`` can be the dotted path of a callable (whether it imports is checked later)."""
        fn_ok = isinstance(fn, str) and bool(fn.strip()) and len(fn) <= 1000
        if not fn_ok:
            self.fail(
                f"{where}: 'fn' must be the dotted path of a callable (package.module.function), not "
                f"{_clip(repr(fn), 60)}",
                ids,
            )
        return fn_ok

    def node_params(self, where: str, params: Any, ids: tuple[str, ...]) -> dict[str, Any]:
        """The node's params whose names are argument names and whose values are JSON values."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            self.fail(f"{where}: 'params' must be a mapping of argument -> value, not {type(params).__name__}", ids)
            params = {}
        valid_params = {}
        for key, value in params.items():
            if not isinstance(key, str) or not key.isidentifier():
                self.fail(f"{where}: param name {show(key)} is not a valid argument name", ids)
                continue
            problem = _json_problem(value)
            if problem:
                self.problems.append(Problem("bad-param-type", f"{where}: param {show(key)}: {problem}", ids))
            else:
                valid_params[key] = value
        return valid_params

    def node_cost(self, where: str, cost: Any, ids: tuple[str, ...]) -> Any:
        """The node's cost (estimated seconds, >= 0); 1.0 when invalid."""
        if not (_number(cost) and cost >= 0):
            self.fail(f"{where}: 'cost' must be a number >= 0 (estimated seconds), not {_clip(repr(cost), 40)}", ids)
            cost = 1.0
        return cost

    def node_flags(self, where: str, body: Mapping[str, Any], ids: tuple[str, ...]) -> dict[str, Any]:
        """The node's ``parallel`` and ``pure`` flags (default true), each reported when not a boolean."""
        flags = {}
        for key in ("parallel", "pure"):
            flags[key] = body.get(key, True)
            if not isinstance(flags[key], bool):
                self.fail(f"{where}: '{key}' must be true or false, not {_clip(repr(flags[key]), 40)}", ids)
        return flags

    def node_version(self, where: str, version: Any, ids: tuple[str, ...]) -> Any:
        """The node's version: a short string (a number is taken as its string)."""
        if isinstance(version, (int, float)) and not isinstance(version, bool):
            version = str(version)
        if not isinstance(version, str) or len(version) > 200:
            self.fail(f"{where}: 'version' must be a short string", ids)
        return version

    def node_inputs(self, where: str, raw: Any, ids: tuple[str, ...]) -> dict[str, str]:
        if raw is None:
            return {}
        if isinstance(raw, list):
            raw = {item: item for item in raw if self.name(f"{where} input", item, DATA_NAME, MAX_NAME, ids)}
        if not isinstance(raw, Mapping):
            self.fail(
                f"{where}: 'inputs' must map argument -> data name (or list data names), not {type(raw).__name__}", ids
            )
            return {}
        out = {}
        for arg, data in raw.items():
            if not isinstance(arg, str) or not arg.isidentifier() or len(arg) > MAX_NAME:
                self.fail(f"{where}: input argument {show(arg)} is not a valid argument name", ids)
                continue
            if self.name(f"{where}: input {show(arg)} data name", data, DATA_NAME, MAX_NAME, ids):
                out[arg] = data
        return out


def _fits_type(value: Any, kind: str) -> bool:
    return {
        "string": lambda v: isinstance(v, str),
        "number": lambda v: _number(v),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }[kind](value)


# -- JSON form of graphs (the compiled-plan cache) ---------------------------


def graph_to_dict(graph: ComputationGraph) -> dict[str, Any]:
    """A JSON-able form of ``graph``; every function must have a dotted path."""
    return {
        "name": graph.name,
        "inputs": [_input_to_dict(i) for i in graph.inputs],
        "outputs": list(graph.outputs),
        "aliases": dict(graph.aliases),
        "settings": dict(graph.settings),
        "nodes": [node_to_dict(n) for n in graph.nodes.values()],
    }


def _input_to_dict(item: GraphInput) -> dict[str, Any]:
    out: dict[str, Any] = {"name": item.name, "type": item.type, "description": item.description}
    if not item.required:
        out["default"] = item.default
    return out


def node_to_dict(node: Node) -> dict[str, Any]:
    if isinstance(node.fn, FusedCall):
        fn: Any = {"fused": {"steps": [node_to_dict(s) for s in node.fn.steps], "outputs": list(node.fn.outputs)}}
    else:
        fn = dotted_path(node.fn)
        if fn is None:
            raise ValueError(
                f"node {show(node.id)}: function {node.fn!r} has no dotted path (lambda, closure or partial)"
            )
    return {
        "id": node.id,
        "fn": fn,
        "inputs": dict(node.inputs),
        "outputs": list(node.outputs),
        "params": dict(node.params),
        "cost": node.cost,
        "parallel": node.parallel,
        "resources": node.resources.to_dict(),
        "group": node.group,
        "version": node.version,
        "pure": node.pure,
        "fused_from": list(node.fused_from),
        "description": node.description,
    }


def node_from_dict(data: Mapping[str, Any]) -> Node:
    fn = data["fn"]
    if isinstance(fn, Mapping):
        fused = fn["fused"]
        fn = FusedCall(tuple(node_from_dict(s) for s in fused["steps"]), tuple(fused["outputs"]))
    return Node(
        data["id"],
        fn,
        dict(data["inputs"]),
        tuple(data["outputs"]),
        dict(data["params"]),
        float(data["cost"]),
        bool(data["parallel"]),
        Resources(**data["resources"]),
        data.get("group"),
        data.get("version", ""),
        bool(data.get("pure", True)),
        tuple(data.get("fused_from", ())),
        data.get("description", ""),
    )


def graph_from_dict(data: Mapping[str, Any]) -> ComputationGraph:
    """Inverse of :func:`graph_to_dict`."""
    nodes = [node_from_dict(n) for n in data["nodes"]]
    inputs = tuple(
        GraphInput(i["name"], i.get("default", MISSING), i.get("type"), i.get("description", ""))
        for i in data["inputs"]
    )
    return ComputationGraph(
        data["name"],
        {n.id: n for n in nodes},
        inputs,
        tuple(data["outputs"]),
        dict(data.get("aliases", {})),
        dict(data.get("settings", {})),
    )
