"""``python -m effopt gpu inventory`` and ``gpu pools``: tables, --json, and one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from effopt.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "gpu-inventory.yaml"


def test_inventory_table_and_json(capsys):
    assert main(["gpu", "inventory", "--file", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 GPUs on 2 nodes: 4 x A100-SXM4-40GB, 2 x L4 (static:")
    assert "GPU-6f1c9a1e-0d34-4a8e-9a55-3f7e1c2b8d10" in out and "40.0 GiB" in out
    assert main(["gpu", "inventory", "--file", str(EXAMPLE), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["gpus"] == 6 and doc["models"] == {"A100-SXM4-40GB": 4, "L4": 2}


def test_pools_in_thousandths_with_quotas(capsys):
    assert main(["gpu", "pools", "--file", str(EXAMPLE), "--unit", "milli", "--quotas", "team-a:L4=0.5,team-b:*=8",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    slots = {p["pool"]: p["slots_after"] for p in doc["pools"]}
    assert slots == {"effopt_serial": 1, "effopt_gpu": 6000, "effopt_gpu_A100-SXM4-40GB": 4000, "effopt_gpu_L4": 2000,
                     "effopt_quota_team-a_L4": 500, "effopt_quota_team-b": 6000}


@pytest.mark.parametrize(("argv", "message"), [
    (["gpu", "pools", "--file", str(EXAMPLE), "--quotas", "team-b*=8"],
     "error: --quotas is invalid: item 1 'team-b*=8' lacks the ':' or the '='"),
    (["gpu", "inventory", "--file", "/nonexistent/gpus.yaml"], "error: /nonexistent/gpus.yaml: no such file"),
    (["gpu", "inventory", "--nvml"], "error: NVML: no NVIDIA driver answers"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
