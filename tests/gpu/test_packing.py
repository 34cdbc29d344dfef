"""The packing LP: the simplex, bounds computed by hand, and the sliver prices effopt uses."""

from __future__ import annotations

import numpy as np
import pytest

from effopt.gpu import ClusterState, Node
from effopt.gpu.packing import packing_bound, simplex_max, solve_packing_lp
from effopt.gpu.policies import EffoptPolicy

from .conftest import gpu, state_with


def test_simplex_on_a_small_lp():
    # max 3x + 2y, x + y <= 4, x + 3y <= 6  ->  x = 4, y = 0, value 12; duals 3 and 0
    value, x, duals = simplex_max(np.array([3.0, 2.0]), np.array([[1.0, 1.0], [1.0, 3.0]]), np.array([4.0, 6.0]))
    assert value == pytest.approx(12.0) and x == pytest.approx([4.0, 0.0]) and duals == pytest.approx([3.0, 0.0])
    # max x + y, x + 2y <= 4, 3x + y <= 6 -> x = 1.6, y = 1.2, value 2.8
    value, x, _ = simplex_max(np.array([1.0, 1.0]), np.array([[1.0, 2.0], [3.0, 1.0]]), np.array([4.0, 6.0]))
    assert value == pytest.approx(2.8) and x == pytest.approx([1.6, 1.2])


def test_perfectly_packable_mix_has_a_zero_bound():
    lp, _ = solve_packing_lp({600: 2, 400: 2}, whole=0, bins=2)
    assert lp.value == pytest.approx(2000.0) and lp.unallocated_bound_pct == pytest.approx(0.0)


def test_bound_by_hand():
    # two 810s cannot share a GPU; the one 160 fills one of their gaps: 970 + 810 of 2000 -> 11% unallocated
    lp, _ = solve_packing_lp({810: 2, 160: 1}, whole=0, bins=2)
    assert lp.value == pytest.approx(1780.0) and lp.unallocated_bound_pct == pytest.approx(11.0)
    # with whole-GPU items in excess the LP prefers them to an 810 alone on a GPU
    lp, _ = solve_packing_lp({810: 2}, whole=5, bins=3)
    assert lp.value == pytest.approx(3000.0)
    requests = [gpu(1000, 1, 810), gpu(1000, 1, 810), gpu(1000, 1, 160), gpu(1000, 0)]
    assert packing_bound(requests, 2).value == pytest.approx(1780.0)


MIX = {810: 50, 650: 30, 320: 30, 160: 10}  # sharing sizes -> requests; plus 30 whole GPUs, on 100 GPUs


def test_bound_and_prices_of_a_tight_mix():
    lp, _ = solve_packing_lp(MIX, whole=30, bins=100)
    # best packing: 10 GPUs 810+160, 30 GPUs 810 alone, 30 GPUs 650+320, 30 whole GPUs (20 810s left out, each
    # worth less than the whole GPU that takes its place): 9,700 + 24,300 + 29,100 + 30,000 = 93,100
    assert lp.value == pytest.approx(93_100.0) and lp.unallocated_bound_pct == pytest.approx(6.9)
    # a 160 belongs next to an 810 (gap 190) or on a GPU an 810 will join; in the 350 a 650 leaves, it
    # takes the place of a 320 and loses that value
    assert lp.loss(np.array([190, 1000, 350]), 160) == pytest.approx([0.0, 0.0, 160.0])
    assert lp.loss(np.array([350]), 320) == pytest.approx([0.0])


def test_effopt_keeps_the_320_gap_for_a_320():
    nodes = [Node("gap350", 96000, 1 << 20, 1, "G2"), Node("gap190", 96000, 1 << 20, 1, "G2")]
    pol = EffoptPolicy(seed=0)
    for size, n in MIX.items():
        for _ in range(n):
            pol.observe(gpu(4000, 1, size))
    for _ in range(30):
        pol.observe(gpu(12000, 1))
    for rank_first in (0, 1):  # whichever node ranks first in ties, the price decides
        st = state_with(nodes, free={0: [350], 1: [190]})
        pol._rank = (st.uid, np.array([0, 1]) if rank_first == 0 else np.array([1, 0]))
        p = pol.place(st, gpu(4000, 1, 160))
        assert p.node == "gap190"
        assert pol.packing(st).unallocated_bound_pct == pytest.approx(6.9, abs=0.5)
    st = ClusterState(nodes)
    assert pol.place(st, gpu(4000, 1, 160))  # no gap anywhere: still placed on a whole GPU
