"""Shared helpers for the spot tests: hand-made trace files and the real data folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
TRACES = DATA / "spot-traces"
PRICES = DATA / "aws-prices"


def write_trace(path: Path, data: list[int], gap_seconds: float = 600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metadata": {"gap_seconds": gap_seconds}, "data": data}))
    return path


@pytest.fixture
def real_traces() -> Path:
    if not TRACES.is_dir():
        pytest.skip(f"spot traces not found at {TRACES} (shared data folder absent)")
    return TRACES


@pytest.fixture
def real_prices() -> Path:
    if not PRICES.is_dir():
        pytest.skip(f"AWS price snapshots not found at {PRICES} (shared data folder absent)")
    return PRICES
