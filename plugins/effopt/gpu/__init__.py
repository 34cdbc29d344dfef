"""GPU placement engine: cluster model, FGD and baseline policies, effopt's policy, fragmentation, simulator.

Plain Python and numpy (no Airflow). See :mod:`effopt.gpu.policies` for the policies and
:mod:`effopt.gpu.simulate` for the published FGD experiment.
"""

from effopt.gpu.fragmentation import FragmentationIndex, TargetWorkload, TaskType, node_fragmentation, task_fragment
from effopt.gpu.model import MILLI, ClusterState, GpuRequest, Node, NoFit, Placement
from effopt.gpu.policies import REGISTRY, Policy, get_policy
from effopt.gpu.simulate import RunResult, Summary, arrivals, run_many, simulate
from effopt.gpu.trace import TraceError, load_nodes, load_pods

__all__ = ["MILLI", "REGISTRY", "ClusterState", "FragmentationIndex", "GpuRequest", "NoFit", "Node", "Placement",
           "Policy", "RunResult", "Summary", "TargetWorkload", "TaskType", "TraceError", "arrivals", "get_policy",
           "load_nodes", "load_pods", "node_fragmentation", "run_many", "simulate", "task_fragment"]
