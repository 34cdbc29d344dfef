"""The published protocol on small clusters: arrival order, the 130% resampling, failures, thousandths."""

from __future__ import annotations

import numpy as np
import pytest

from effopt.gpu import GpuRequest, Node, TargetWorkload, arrivals, run_many, simulate
from effopt.gpu.simulate import binned_curve

from .conftest import gpu

PODS = [gpu(1000, 1, 250, name=f"s{i}") for i in range(6)] + [gpu(2000, 1, name="w0"), gpu(500, 0, name="c0")]


def test_arrival_order_is_reproducible_by_seed():
    a = arrivals(PODS, 4000, seed=42)
    assert [p.name for p in a] == [p.name for p in arrivals(PODS, 4000, seed=42)]
    assert sorted(p.name for p in a[: len(PODS)]) == sorted(p.name for p in PODS)  # a permutation first
    orders = {tuple(p.name for p in arrivals(PODS, 4000, seed=s)[: len(PODS)]) for s in range(42, 52)}
    assert len(orders) > 5


def test_resampling_stops_at_the_ratio_of_capacity():
    cap = 4000  # 4 GPUs; the trace requests 2.5 of them, so 130% = 5.2 GPUs needs resampled pods
    seq = arrivals(PODS, cap, seed=1)
    requested = sum(p.total_gpu_milli for p in seq)
    assert len(seq) > len(PODS)
    assert requested <= 1.3 * cap
    assert requested > 1.3 * cap - 1000  # the largest pod is one GPU: the next draw would have crossed 5200
    assert all(p in PODS for p in seq[len(PODS):])  # drawn from the trace, with replacement
    # A trace that already asks for more than the ratio is replayed once, without resampling.
    assert len(arrivals(PODS, 1000, seed=1)) == len(PODS)


def test_failed_pods_are_counted_as_arrived_and_dropped():
    nodes = [Node("n", 8000, 1 << 16, 1, "T4")]
    pods = [gpu(1000, 1, name=f"p{i}") for i in range(3)]
    r = simulate(nodes, pods, "best-fit", seed=42)
    assert r.failed_pods == 2
    assert r.arrived_milli.tolist() == [1000, 2000, 3000]  # failed pods count in the requested load
    assert r.allocated_milli.tolist() == [1000, 1000, 1000]
    assert r.load_pct.tolist() == [100.0, 200.0, 300.0]
    assert r.unallocated_pct.tolist() == [0.0, 0.0, 0.0]
    assert [req.name for req, _ in r.failed_requests] and all("no node fits" in why for _, why in r.failed_requests)


def test_unallocated_gpu_is_measured_in_thousandths():
    nodes = [Node("n", 8000, 1 << 16, 1, "T4")]
    pods = [gpu(1000, 1, 250, name="a"), gpu(1000, 1, 333, name="b")]
    r = simulate(nodes, pods, "fgd", seed=42, ratio=0.5)  # 583 thousandths requested: no resampling
    assert r.allocated_milli[-1] == 583
    assert r.unallocated_pct[-1] == pytest.approx(41.7)
    assert r.at(58) == pytest.approx(41.7)  # 58.3% requested rounds to 58


def test_a_pod_that_fits_no_node_type_is_a_recorded_failure():
    nodes = [Node("n", 8000, 1 << 16, 2, "T4")]
    pods = [gpu(1000, 1, 500, name="ok"), gpu(1000, 4, name="four"), gpu(1000, 1, models=("V100",), name="v100")]
    r = simulate(nodes, pods, "fgd", seed=3, ratio=0.1)
    reasons = {req.name: why for req, why in r.failed_requests}
    assert set(reasons) == {"four", "v100"}
    assert "without 4 fully free GPUs" in reasons["four"] and "another GPU model than V100" in reasons["v100"]


def test_binning_follows_the_analysis_script():
    load = np.array([89.4, 89.6, 90.4, 90.5, 91.6, 95.0])
    vals = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # 89.6, 90.4 and 90.5 (half to even) round to 90; 92 has no arrival: falls back to 91..93 (91.6 -> 92)
    out = binned_curve(load, vals, [90, 92, 93, 99])
    assert out[0] == pytest.approx(3.0) and out[1] == pytest.approx(5.0) and out[2] == pytest.approx(5.0)
    assert np.isnan(out[3])


def test_same_seed_same_result_and_run_many_groups_by_policy():
    nodes = [Node(f"n{i}", 32000, 1 << 17, 4, "T4") for i in range(3)]
    pods = [gpu(4000, 1, 300 + 100 * (i % 5), name=f"p{i}") for i in range(20)] + [gpu(8000, 2, name="two")]
    w = TargetWorkload.from_requests(pods)
    a = simulate(nodes, pods, "effopt", seed=5, workload=w)
    b = simulate(nodes, pods, "effopt", seed=5, workload=w)
    assert a.allocated_milli.tolist() == b.allocated_milli.tolist() and a.failed.tolist() == b.failed.tolist()
    out = run_many(nodes, pods, ["fgd", "random"], [42, 43], workload=w)
    assert list(out) == ["fgd", "random"] and [r.seed for r in out["fgd"].runs] == [42, 43]
    mean, sd = out["fgd"].stat(100)
    assert mean is not None and sd is not None and 0 <= mean <= 100
    with pytest.raises(ValueError, match="unknown policy"):
        run_many(nodes, pods, ["fgd", "typo"], [42])


def test_cpu_only_pods_do_not_move_the_gpu_load():
    nodes = [Node("n", 8000, 1 << 16, 1, "T4")]
    pods = [GpuRequest(1000, 0, 0, 0, name="c"), gpu(1000, 1, 500, name="g")]
    seq = arrivals(pods, 1000, seed=1, ratio=0.5)
    r = simulate(nodes, pods, "random", seed=1, ratio=0.5)
    assert r.arrived_milli.tolist() == np.cumsum([p.total_gpu_milli for p in seq]).tolist()
    assert r.arrived_milli[-1] == 500 and r.failed_pods == 0
