"""Shared helpers: a small rate table with round prices, so costs can be computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from effopt.prices import RateTable, parse_rate_table

GIB = 1024**3
MIB = 1024**2
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def rate_table() -> RateTable:
    return parse_rate_table({
        "schema": 1, "hours_per_month": 100.0, "source": {"file": "hand-made for tests"},
        "method": "round numbers for hand-computed totals",
        "rates": {"on_demand": {"cpu_per_vcpu_hour": 0.04, "memory_per_gib_hour": 0.005,
                                "gpu_per_hour": {"A10G": 1.0}}},
    }, "test-table")


@pytest.fixture
def rates() -> RateTable:
    return rate_table()


def times(hours: float, step: float = 300.0) -> np.ndarray:
    return T0 + np.arange(int(hours * 3600 / step)) * step
