"""FGD's fragment, by hand on a tiny node, and the vectorised index against the plain reference."""

from __future__ import annotations

import numpy as np
import pytest

from effopt.gpu import ClusterState, FragmentationIndex, GpuRequest, Node, TargetWorkload, TaskType
from effopt.gpu.fragmentation import fragment_matrix_reference, node_fragmentation, task_fragment

# One T4 node with 8 cores free and two GPUs: one whole, one with 300 thousandths free.
CPU, FREE, MODEL = 8000, [1000, 300], "T4"


@pytest.mark.parametrize(("task", "expected", "case"), [
    (TaskType(4000, 0, 0), 1300, "CPU-only: all free GPU is fragment"),
    (TaskType(4000, 500, 1), 300, "fits: only the GPUs with less than 500 free"),
    (TaskType(4000, 1000, 2), 1300, "cannot run: one GPU with 1000 free, two needed"),
    (TaskType(16000, 500, 1), 1300, "cannot run: CPU short"),
    (TaskType(1000, 500, 1, ("V100",)), 1300, "cannot run: GPU model not allowed"),
    (TaskType(1000, 200, 1), 0, "fits on both GPUs: nothing is fragment"),
    (TaskType(1000, 1000, 1), 300, "a whole GPU fits: the partial GPU is fragment"),
    (TaskType(1000, 300, 1), 0, "R_g equal to the request is usable"),
])
def test_task_fragment_cases(task, expected, case):
    assert task_fragment(CPU, FREE, MODEL, task) == expected, case


def test_node_fragmentation_weights_types():
    types = [TaskType(4000, 0, 0), TaskType(4000, 500, 1), TaskType(1000, 200, 1)]
    w = TargetWorkload(types, [2, 1, 1])  # p = 0.5, 0.25, 0.25
    assert node_fragmentation(CPU, FREE, MODEL, w) == pytest.approx(0.5 * 1300 + 0.25 * 300 + 0.25 * 0)


def test_target_workload_keeps_popular_types_to_95_percent():
    reqs = ([GpuRequest(1000, 0, 1, 500)] * 60 + [GpuRequest(2000, 0, 1, 1000)] * 30
            + [GpuRequest(4000, 0, 0, 0)] * 6 + [GpuRequest(8000, 0, 8, 1000)] * 4)
    w = TargetWorkload.from_requests(reqs)
    # 60% + 30% = 90% < 95%, so the third type (6%) is kept too; the 4% type is dropped; renormalised over 96.
    assert w.types == (TaskType(1000, 500, 1), TaskType(2000, 1000, 1), TaskType(4000, 0, 0))
    assert w.p.tolist() == pytest.approx([60 / 96, 30 / 96, 6 / 96])
    # Equal counts: larger CPU first (the simulator's order).
    w2 = TargetWorkload.from_requests([GpuRequest(1000, 0, 1, 500), GpuRequest(3000, 0, 1, 500)], coverage=0.5)
    assert w2.types == (TaskType(3000, 500, 1),)


def _random_cluster(rng: np.random.Generator, n: int) -> ClusterState:
    models = ["A", "B", "C"]
    nodes = [Node(f"n{i}", int(rng.integers(1, 9)) * 8000, 1 << 20, int(rng.choice([1, 2, 4, 8])),
                  models[int(rng.integers(3))]) for i in range(n)]
    st = ClusterState(nodes)
    for i, node in enumerate(nodes):
        st.gpu_free[i, : node.gpus] = rng.choice([0, 50, 190, 300, 470, 500, 810, 999, 1000], size=node.gpus)
        st.cpu_free[i] = int(rng.integers(0, node.cpu_milli + 1))
    st._derive_all()
    st.version += 1
    return st


def _random_workload(rng: np.random.Generator) -> TargetWorkload:
    types = []
    for _ in range(int(rng.integers(1, 12))):
        num = int(rng.choice([0, 1, 1, 2, 4, 8]))
        milli = 0 if num == 0 else (int(rng.choice([50, 190, 300, 470, 500, 810, 1000])) if num == 1 else 1000)
        models = tuple(rng.choice(["A", "B", "C"], size=int(rng.integers(0, 3)), replace=False).tolist())
        types.append(TaskType(int(rng.integers(0, 9)) * 4000, milli, num, models if num else ()))
    return TargetWorkload(types, rng.random(len(types)) + 0.01)


def test_vectorised_index_equals_reference_on_random_states():
    rng = np.random.default_rng(7)
    for _ in range(150):
        st, w = _random_cluster(rng, int(rng.integers(1, 12))), _random_workload(rng)
        index = FragmentationIndex(st, w)
        assert np.array_equal(index.task_frag, fragment_matrix_reference(st, w))
        ref = [node_fragmentation(int(st.cpu_free[i]), st.gpu_free[i, : n.gpus].tolist(), n.model, w)
               for i, n in enumerate(st.nodes)]
        assert index.F == pytest.approx(ref, rel=1e-12, abs=1e-9)


def test_after_equals_reference_for_hypothetical_placements():
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(150):
        st, w = _random_cluster(rng, int(rng.integers(1, 8))), _random_workload(rng)
        index = FragmentationIndex(st, w)
        for i, node in enumerate(st.nodes):
            cpu = int(rng.integers(0, 3)) * 4000
            if st.cpu_free[i] < cpu:
                continue
            free = st.gpu_free[i, : node.gpus].tolist()
            for g, a in enumerate(free):  # a sharing request of d on GPU g
                d = int(rng.integers(1, a + 1)) if a else 0
                if not d:
                    continue
                after = free.copy()
                after[g] -= d
                want = node_fragmentation(int(st.cpu_free[i]) - cpu, after, node.model, w)
                got = index.after(np.array([i]), a, d, 1, cpu)[0]
                assert got == pytest.approx(want, rel=1e-12, abs=1e-9)
                checked += 1
            k = sum(1 for v in free if v == 1000)  # a k-GPU request on the whole GPUs
            if k:
                after = [0 if v == 1000 else v for v in free]
                want = node_fragmentation(int(st.cpu_free[i]) - cpu, after, node.model, w)
                assert index.after(np.array([i]), 1000, 1000, k, cpu)[0] == pytest.approx(want, rel=1e-12, abs=1e-9)
            want = node_fragmentation(int(st.cpu_free[i]) - cpu, free, node.model, w)  # CPU-only
            assert index.after(np.array([i]), 0, 0, 0, cpu)[0] == pytest.approx(want, rel=1e-12, abs=1e-9)
    assert checked > 300


def test_index_recomputes_only_changed_nodes():
    st = ClusterState([Node("a", 8000, 1024, 2, "T4"), Node("b", 8000, 1024, 2, "T4")])
    w = TargetWorkload([TaskType(1000, 600, 1)], [1.0])
    index = FragmentationIndex(st, w)
    assert index.F.tolist() == [0.0, 0.0]
    from effopt.gpu import Placement
    st.apply(Placement(0, "a", (0,), 500, GpuRequest(1000, 0, 1, 500)))
    index.refresh()
    assert index.F.tolist() == [500.0, 0.0]  # 500 left on GPU 0 of node a is too little for a 600 task
    assert index._ver.tolist() == st.version.tolist()
