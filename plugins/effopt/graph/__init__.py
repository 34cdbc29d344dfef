"""Computation graphs: validate, optimise, plan and run them, and compile them into Airflow.

Plain Python (the Airflow compiler lives in :mod:`effopt.compiler`)::

    from effopt.graph import load_spec, optimize, plan, run_local

    graph = load_spec("include/graphs/ml_models.yaml")   # raises GraphValidationError
    optimized, report = optimize(graph)                   # cse -> cull -> fuse
    the_plan = plan(optimized)                            # stages, critical path, makespan
    outputs = run_local(optimized, {"symbol": "MSFT"})
"""

from effopt.graph.compiled import CompiledPlan, compile_graph, compile_spec
from effopt.graph.errors import GraphValidationError, Problem
from effopt.graph.execute import NodeExecutionError, run_local
from effopt.graph.model import MISSING, ComputationGraph, FusedCall, GraphInput, Node, Resources
from effopt.graph.optimize import OptimizationReport, cse, cull, fuse, optimize
from effopt.graph.plan import Capacity, Plan, plan
from effopt.graph.spec import load_spec, parse_spec
from effopt.graph.validate import validate
from effopt.graph.values import ValueCodec, ValueStore

__all__ = [
    "MISSING",
    "Capacity",
    "CompiledPlan",
    "ComputationGraph",
    "FusedCall",
    "GraphInput",
    "GraphValidationError",
    "Node",
    "NodeExecutionError",
    "OptimizationReport",
    "Plan",
    "Problem",
    "Resources",
    "ValueCodec",
    "ValueStore",
    "compile_graph",
    "compile_spec",
    "cse",
    "cull",
    "fuse",
    "load_spec",
    "optimize",
    "parse_spec",
    "plan",
    "run_local",
    "validate",
]
