"""The Buhlmann-Straub estimator the right-sizing benchmark reports next to ``prior_weight_intervals``."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rightsizing_bench.py"


@pytest.fixture(scope="module")
def buhlmann_straub_k():
    spec = importlib.util.spec_from_file_location("rightsizing_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.buhlmann_straub_k


def test_the_credibility_constant_matches_a_hand_computation(buhlmann_straub_k):
    # A = [0, 2] (mean 1), B = [4, 6, 8] (mean 6): within = (2 + 8) / (1 + 2) = 10/3; grand mean 4;
    # between = (2*9 + 3*4 - (2 - 1) * 10/3) / (5 - (4 + 9) / 5) = (80/3) / 2.4; k = within / between = 0.3
    k = buhlmann_straub_k([np.array([0.0, 2.0]), np.array([4.0, 6.0, 8.0])])
    assert k == pytest.approx(0.3)
    # a -inf (the log of a rise to 0) and a container of one observation take no part
    assert buhlmann_straub_k([np.array([0.0, 2.0, -np.inf]), np.array([4.0, 6.0, 8.0]), np.array([9.0])]) == \
        pytest.approx(0.3)


def test_containers_that_differ_no_more_than_their_noise_pool_fully(buhlmann_straub_k):
    assert math.isinf(buhlmann_straub_k([np.array([1.0, 3.0]), np.array([1.0, 3.0])]))
    assert buhlmann_straub_k([np.array([1.0, 2.0])]) is None  # one container: nothing to compare
    assert buhlmann_straub_k([np.array([1.0, 1.0]), np.array([5.0, 5.0])]) == 0.0  # no noise: own history only
