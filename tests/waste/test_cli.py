"""``python -m effopt waste report`` on a small trace directory, and the real trace when present."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from effopt.cli import main
from effopt.prices import load_rate_table
from effopt.waste import KINDS, TraceAssumptions, analyze, workloads_from_trace

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "alibaba-genai-2026"
GIB = 1024**3


def _write(path: Path, rows: list[tuple[float, str, float]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("timestamp_anon,container_ip,value\n")
        fh.writelines(f"{t:.0f},{c},{v}\n" for t, c, v in rows)


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    t = 1000.0 + 60.0 * np.arange(600)  # 10 h of minute samples
    _write(tmp_path / "pod_memory_util.csv.gz",
           [(x, "small", 0.1) for x in t] + [(x, "full", 0.95) for x in t])
    _write(tmp_path / "pod_gpu_duty_cycle.csv.gz",
           [(x, "small", 0.0) for x in t] + [(x, "full", 70.0) for x in t])
    _write(tmp_path / "pod_gpu_memory_used_bytes.csv.gz",
           [(x, "small", 8.0 * GIB) for x in t] + [(x, "full", 20.0 * GIB) for x in t])
    return tmp_path


def test_cli_json_report(trace_dir: Path, capsys):
    assert main(["waste", "report", "--source", "trace", "--path", str(trace_dir), "--json",
                 "--memory-limit-gib", "8", "--gpu-model", "A10G"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert ({"cost", "waste", "waste_pct", "by_kind"} <= set(data["totals"])
            and set(data["totals"]["by_kind"]) == set(KINDS))
    kinds = {(f["kind"], f["container"]) for f in data["findings"]}
    assert kinds == {("idle_gpu", "small"), ("over_provisioned", "small")}
    for f in data["findings"]:
        assert {"kind", "workload", "container", "resource", "severity", "monthly_waste", "evidence"} <= set(f)
        assert f["monthly_waste"] > 0
    over = next(f for f in data["findings"] if f["kind"] == "over_provisioned")
    assert over["evidence"]["request"] == 8 * GIB  # the stated --memory-limit-gib assumption
    assert any("8 GiB" in a for a in data["assumptions"]) and any("A10G" in a for a in data["assumptions"])


def test_cli_text_states_assumptions_and_unpriced_gpu(trace_dir: Path, capsys):
    assert main(["waste", "report", "--path", str(trace_dir), "--gpu-model", "Z9000"]) == 0
    out = capsys.readouterr().out
    assert "assumptions:" in out and "16 GiB" in out
    assert "missing prices" in out and "Z9000" in out


def test_cli_errors_name_the_offending_item(tmp_path: Path, capsys):
    assert main(["waste", "report", "--path", str(tmp_path / "nowhere")]) == 2
    assert "error: " in (err := capsys.readouterr().err) and "nowhere" in err and len(err.strip().splitlines()) == 1
    assert main(["waste", "report", "--path", str(tmp_path), "--memory-limit-gib", "0"]) == 2
    assert "memory-limit-gib" in capsys.readouterr().err


@pytest.mark.skipif(not DATA.is_dir(), reason=f"real trace not present at {DATA}")
def test_real_trace_finds_idle_gpus_and_prices_them():
    rates = load_rate_table()
    ws = workloads_from_trace(DATA, TraceAssumptions(gpu_model="A100"))
    report = analyze(ws, rates)
    data = report.to_json()
    gpu = [f for f in report.findings if f.kind == "idle_gpu"]
    with_gpu = [w for w in ws if w.gpu_util is not None]
    assert with_gpu and len(gpu) >= len(with_gpu) // 2  # median duty cycle is 0%: most GPUs idle
    assert all(f.monthly_waste is not None and f.monthly_waste > 0 for f in gpu)
    assert data["totals"]["by_kind"]["idle_gpu"] == pytest.approx(sum(f.monthly_waste for f in gpu), abs=0.05)
    assert data["totals"]["waste"] <= data["totals"]["cost"] and not data["missing_prices"]
    assert {f["kind"] for f in data["findings"]} <= set(KINDS)
