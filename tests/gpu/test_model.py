"""Cluster model: requests, filters, apply/release, reasons for no fit."""

from __future__ import annotations

import pytest

from effopt.gpu import ClusterState, GpuRequest, Node, NoFit, Placement, get_policy

from .conftest import gpu, state_with

NODES = [Node("a", 16000, 65536, 2, "T4"), Node("b", 8000, 32768, 1, "V100")]


def test_request_validation():
    with pytest.raises(ValueError, match="whole GPUs"):
        GpuRequest(1000, 0, 2, 500)
    with pytest.raises(ValueError, match="gpu_milli must be in 1..1000"):
        GpuRequest(1000, 0, 1, 0)
    with pytest.raises(ValueError, match="non-negative"):
        GpuRequest(-1, 0, 0, 0)
    r = gpu(1000, 1, 250)
    assert r.is_sharing and r.total_gpu_milli == 250 and r.kind == "share-gpu"
    assert gpu(1000, 4).kind == "4-gpu" and gpu(1000, 0).kind == "cpu"


def test_feasible_filters_cpu_memory_model_and_gpu_fit():
    st = state_with(NODES, free={0: [1000, 300]})
    assert list(st.feasible(gpu(8000, 1, 500))) == [True, True]
    assert list(st.feasible(gpu(8001, 1, 500))) == [True, False]  # CPU
    assert list(st.feasible(gpu(1000, 1, 500, mem=40000))) == [True, False]  # memory
    assert list(st.feasible(gpu(1000, 1, 500, models=("V100",)))) == [False, True]  # GPU model
    assert list(st.feasible(gpu(1000, 2))) == [False, False]  # node a has one fully free GPU only
    assert list(st.feasible(gpu(1000, 1, 1000))) == [True, True]
    assert list(st.feasible(gpu(1000, 0))) == [True, True]  # CPU-only: any node with CPU and memory


def test_apply_release_roundtrip_and_versions():
    st = ClusterState(NODES)
    p = Placement(0, "a", (1,), 250, gpu(4000, 1, 250, mem=1024))
    st.apply(p)
    assert st.gpu_free[0].tolist() == [1000, 750] and st.cpu_free[0] == 12000 and st.mem_free[0] == 65536 - 1024
    assert st.version.tolist() == [1, 0] and st.gpu_used_milli == 250 and st.kind_count[0, 0] == 1
    st.release(p)
    assert st.gpu_free[0].tolist() == [1000, 1000] and st.cpu_free[0] == 16000 and st.gpu_used_milli == 0
    assert st.version.tolist() == [2, 0]
    with pytest.raises(ValueError, match="exceed"):
        st.release(p)


def test_apply_rejects_what_does_not_fit():
    st = ClusterState(NODES)
    st.apply(Placement(1, "b", (0,), 1000, gpu(1000)))
    with pytest.raises(ValueError, match="lacks 1000"):
        st.apply(Placement(1, "b", (0,), 1000, gpu(1000)))
    with pytest.raises(ValueError, match="GPU model"):
        st.apply(Placement(0, "a", (0,), 1000, gpu(1000, models=("V100",))))
    with pytest.raises(ValueError, match="distinct"):
        st.apply(Placement(0, "a", (0, 0), 1000, gpu(1000, 2)))


def test_nofit_names_the_filters():
    st = ClusterState(NODES)
    res = get_policy("best-fit").place(st, gpu(32000, 8, mem=1 << 20))
    assert isinstance(res, NoFit) and not res
    assert "2 short of 32000 milli-CPU" in res.reason and "2 without 8 fully free GPUs" in res.reason
    assert not st.fits_empty(gpu(32000, 8)) and st.fits_empty(gpu(8000, 1))
