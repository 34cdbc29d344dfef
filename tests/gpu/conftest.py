"""Shared helpers for the GPU placement tests: tiny hand-built clusters and the shared trace folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from effopt.gpu import ClusterState, GpuRequest, Node

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "alibaba-gpu-2023"


def gpu(cpu: int, num: int = 1, milli: int = 1000, mem: int = 0, models: tuple[str, ...] = (),
        name: str = "") -> GpuRequest:
    return GpuRequest(cpu, mem, num, milli if num else 0, models, name)


def state_with(nodes: list[Node], free: dict[int, list[int]] | None = None,
               cpu_free: dict[int, int] | None = None) -> ClusterState:
    """A state whose GPUs / CPU are set directly (then ``version`` bumped so caches see the change)."""
    st = ClusterState(nodes)
    for i, row in (free or {}).items():
        st.gpu_free[i, : len(row)] = row
    for i, c in (cpu_free or {}).items():
        st.cpu_free[i] = c
    st._derive_all()
    st.version += 1
    return st


@pytest.fixture
def data_dir() -> Path:
    if not (DATA / "openb_node_list_gpu_node.csv").is_file():
        pytest.skip(f"the Alibaba GPU trace is not in {DATA} (shared data folder absent)")
    return DATA
