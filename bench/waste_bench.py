"""Waste detection benchmark (issue 6): scale, quality on labelled scenarios, real trace.

    python bench/waste_bench.py [--data ../shared/data/alibaba-genai-2026] [--results bench/RESULTS-waste.md]

(a) scale: 1,000 workloads x 7 days x 5-minute samples (CPU and memory),
    analysed (all detectors + cost model); prints the seconds of the analysis
    (rendering is not part of this package yet);
(b) quality: labelled scenarios from a generator with a FIXED seed (constant
    over-provisioning, idle periods, a linear leak with noise, a GC sawtooth
    that is not a leak, oscillating replicas, an idle GPU, a cost spike, and
    negatives of each); precision and recall per detector;
(c) real data: the Alibaba GenAI trace; idle-GPU findings and memory
    over-provisioning, at the bundled rate table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from effopt.metrics import make_series  # noqa: E402
from effopt.prices import load_rate_table  # noqa: E402
from effopt.waste import (  # noqa: E402
    KINDS,
    ReplicaSeries,
    TraceAssumptions,
    WasteSettings,
    WorkloadUsage,
    analyze,
    cost_anomaly,
    workloads_from_trace,
)

SEED = 20261128
STEP = 300.0
DAYS = 7
GIB = 1024**3
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC, a Thursday
TARGET_S = 10.0

Scenario = tuple[str, WorkloadUsage | tuple[np.ndarray, np.ndarray], frozenset[str]]


def _t(days: float = DAYS, step: float = STEP) -> np.ndarray:
    return T0 + np.arange(int(days * 86400 / step)) * step


def _over_provisioned_cpu(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    n = t.size
    req = rng.uniform(1.5, 4.0)
    use = np.clip(rng.uniform(0.1, 0.4) * req + rng.normal(0, 0.03, n), 0, None)
    return name, WorkloadUsage(name, "app", cpu=make_series(name, "app", "cpu", t, use, request=req)), \
        frozenset({"over_provisioned"})


def _over_provisioned_memory(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    n = t.size
    req = rng.uniform(4, 8) * GIB
    use = rng.uniform(0.5, 1.5) * GIB + rng.normal(0, 0.02 * GIB, n)
    return name, WorkloadUsage(name, "app", memory=make_series(name, "app", "memory", t, use, request=req,
                                                               limit=req)), frozenset({"over_provisioned"})


def _well_sized(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    n = t.size
    # Small enough that the KRR gap (request - p95) stays under its 0.25-core warning threshold.
    req = rng.uniform(0.5, 1.2)
    use = np.clip(req * (0.75 + 0.1 * np.sin(2 * np.pi * hour / 24)) + rng.normal(0, 0.02 * req, n), 0, None)
    mem = rng.uniform(1, 3) * GIB
    m = mem * 0.8 + rng.normal(0, 0.01 * mem, n)
    return name, WorkloadUsage(name, "app", cpu=make_series(name, "app", "cpu", t, use, request=req),
                               memory=make_series(name, "app", "memory", t, m, request=mem, limit=mem)), frozenset()


def _idle(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    n = t.size
    req = rng.uniform(0.3, 1.0)
    start = rng.uniform(6, 10)
    busy = (hour >= start) & (hour < start + rng.uniform(4, 8))
    use = np.where(busy, req * rng.uniform(0.8, 0.95) + rng.normal(0, 0.02 * req, n), rng.uniform(0, 0.004, n))
    return name, WorkloadUsage(name, "app", cpu=make_series(name, "app", "cpu", t, np.clip(use, 0, None),
                                                            request=req)), frozenset({"idle"})


def _leak(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    n = t.size
    base, grow = rng.uniform(0.5, 2) * GIB, rng.uniform(0.5, 2) * GIB
    use = base + grow * (t - t[0]) / (t[-1] - t[0]) + rng.normal(0, 0.03 * base, n)
    lim = (base + grow) * 1.2
    return name, WorkloadUsage(name, "app", memory=make_series(name, "app", "memory", t, use, request=lim,
                                                               limit=lim)), frozenset({"memory_leak"})


def _gc_sawtooth(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    n = t.size
    base, amp, period = rng.uniform(0.5, 2) * GIB, rng.uniform(0.3, 1.0) * GIB, rng.uniform(1800, 24 * 3600)
    phase = rng.uniform(0, period)
    use = base + amp * (((t - t[0] + phase) % period) / period) + rng.normal(0, 0.01 * base, n)
    lim = (base + amp) * 1.2
    return name, WorkloadUsage(name, "app", memory=make_series(name, "app", "memory", t, use, request=lim,
                                                               limit=lim)), frozenset()


def _churn(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    period = rng.uniform(20, 90) * 60
    lo = int(rng.integers(1, 4))
    reps = np.where(((t - t[0]) // (period / 2)) % 2 == 0, lo, lo + int(rng.integers(1, 4)))
    return name, WorkloadUsage(name, "app", replicas=ReplicaSeries(name, t, reps.astype(float)),
                               replica_hourly_usd=rng.uniform(0.05, 0.5)), frozenset({"scaling_churn"})


def _daily_scaling(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    start = rng.uniform(6, 9)
    reps = np.where((hour >= start) & (hour < start + 10), 6, 2).astype(float)
    return name, WorkloadUsage(name, "app", replicas=ReplicaSeries(name, t, reps),
                               replica_hourly_usd=rng.uniform(0.05, 0.5)), frozenset()


def _idle_gpu(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    n = t.size
    util = np.where(rng.random(n) < 0.03, rng.uniform(20, 90, n), rng.uniform(0, 2, n))
    mem = rng.uniform(10, 30) * GIB + rng.normal(0, 0.1 * GIB, n)
    return name, WorkloadUsage(name, "gpu", gpu_util=make_series(name, "gpu", "gpu_util", t, util),
                               gpu_memory=make_series(name, "gpu", "gpu_memory", t, mem),
                               gpu_model="A100"), frozenset({"idle_gpu"})


def _busy_gpu(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    util = np.clip(rng.uniform(40, 80) + rng.normal(0, 15, t.size), 0, 100)
    return name, WorkloadUsage(name, "gpu", gpu_util=make_series(name, "gpu", "gpu_util", t, util),
                               gpu_model="A100"), frozenset()


def _daily_cost(name: str, rng: np.random.Generator, *, spike: bool) -> Scenario:
    """35 days of cost with a weekly pattern; ``spike``: one day of the last three weeks 1.8 to 3 times higher."""
    days = T0 + np.arange(35) * 86400.0
    weekday = (np.arange(35) + 3) % 7  # T0 is a Thursday
    usd = rng.uniform(50, 500) * np.where(weekday >= 5, 0.6, 1.0) * (1 + rng.normal(0, 0.04, 35))
    if spike:
        usd[int(rng.integers(14, 35))] *= rng.uniform(1.8, 3.0)
    return name, (days, usd), frozenset({"cost_anomaly"} if spike else set())


def _cost_spike(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    return _daily_cost(name, rng, spike=True)


def _cost_normal(name: str, t: np.ndarray, hour: np.ndarray, rng: np.random.Generator) -> Scenario:
    return _daily_cost(name, rng, spike=False)


#: scenario kind -> its generator (name, sample times, hour of the day, rng) -> scenario.
_GENERATORS = {
    "over_provisioned_cpu": _over_provisioned_cpu, "over_provisioned_memory": _over_provisioned_memory,
    "well_sized": _well_sized, "idle": _idle, "leak": _leak, "gc_sawtooth": _gc_sawtooth, "churn": _churn,
    "daily_scaling": _daily_scaling, "idle_gpu": _idle_gpu, "busy_gpu": _busy_gpu, "cost_spike": _cost_spike,
    "cost_normal": _cost_normal,
}


def gen_scenario(kind: str, i: int, rng: np.random.Generator) -> Scenario:
    """One labelled scenario: (name, workload or daily cost series, expected kinds), made by the kind's
    generator."""
    t = _t()
    name = f"{kind}-{i:03d}"
    hour = (t - T0) / 3600.0 % 24
    if kind not in _GENERATORS:
        raise ValueError(f"unknown scenario kind {kind!r}")
    return _GENERATORS[kind](name, t, hour, rng)


SCENARIOS = ("over_provisioned_cpu", "over_provisioned_memory", "well_sized", "idle", "leak", "gc_sawtooth", "churn",
             "daily_scaling", "idle_gpu", "busy_gpu", "cost_spike", "cost_normal")
DETECTED = ("over_provisioned", "idle", "idle_gpu", "scaling_churn", "memory_leak", "cost_anomaly")


def quality(per_kind: int = 20) -> dict[str, tuple[float, float, int, int, int]]:
    """Precision and recall per detector over all labelled scenarios: {kind: (precision, recall, tp, fp, fn)}."""
    rng = np.random.default_rng(SEED)
    rates = load_rate_table()
    tp = dict.fromkeys(DETECTED, 0)
    fp = dict.fromkeys(DETECTED, 0)
    fn = dict.fromkeys(DETECTED, 0)
    for kind in SCENARIOS:
        for i in range(per_kind):
            name, data, expected = gen_scenario(kind, i, rng)
            if isinstance(data, WorkloadUsage):
                found = {f.kind for f in analyze([data], rates).findings}
            else:
                found = {f.kind for f in cost_anomaly(*data, workload=name)}
            for k in DETECTED:
                tp[k] += k in found and k in expected
                fp[k] += k in found and k not in expected
                fn[k] += k not in found and k in expected
    out = {}
    for k in DETECTED:
        p = tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else float("nan")
        r = tp[k] / (tp[k] + fn[k]) if tp[k] + fn[k] else float("nan")
        out[k] = (p, r, tp[k], fp[k], fn[k])
    return out


def scale(workloads: int = 1000) -> tuple[float, float, int, int]:
    """(seconds to analyse, seconds to render HTML + charts, workloads, findings) for ``workloads`` x 7 days x
    5-minute CPU + memory series."""
    rng = np.random.default_rng(SEED + 1)
    kinds = ("over_provisioned_cpu", "well_sized", "idle", "leak", "gc_sawtooth", "over_provisioned_memory")
    items = []
    for i in range(workloads):
        _, w, _ = gen_scenario(kinds[i % len(kinds)], i, rng)
        assert isinstance(w, WorkloadUsage)
        items.append(w)
    rates = load_rate_table()
    from effopt.waste.render import render_charts, render_html

    t0 = time.perf_counter()
    report = analyze(items, rates, settings=WasteSettings())
    report.to_json()
    t1 = time.perf_counter()
    charts = render_charts(report, usage=items)
    render_html(report, charts, title="scale", period_start=None, period_end=None)
    report.to_csv()
    return t1 - t0, time.perf_counter() - t1, workloads, len(report.findings)


def real(path: Path, assumptions: TraceAssumptions) -> list[str]:
    """Idle-GPU and memory over-provisioning figures on a real trace."""
    rates = load_rate_table()
    t0 = time.perf_counter()
    ws = workloads_from_trace(path, assumptions)
    report = analyze(ws, rates)
    secs = time.perf_counter() - t0
    data = report.to_json()
    gpu = [f for f in report.findings if f.kind == "idle_gpu"]
    gpu_containers = sum(1 for w in ws if w.gpu_util is not None)
    idle_h = sum(f.evidence["idle_gpu_hours"] for f in gpu)
    rate = rates.gpu_rate(assumptions.gpu_model)
    held = sum(1 for f in gpu if f.evidence["memory_held_while_idle"])
    mem = [f for f in report.findings if f.kind == "over_provisioned" and f.resource == "memory"]
    mem_containers = sum(1 for w in ws if w.memory is not None)
    gap = sum(f.evidence["gap"] for f in mem) / GIB
    requested = sum(f.evidence["request"] for f in mem) / GIB
    lines = [
        f"trace: {path} ({len(ws)} containers, analysed in {secs:.2f} s)",
        f"assumptions: {'; '.join(assumptions.describe())}",
        f"idle_gpu containers: {len(gpu)} of {gpu_containers} with GPU series "
        f"({len(gpu) / gpu_containers if gpu_containers else float('nan'):.3f} ratio vs all GPU containers)",
        f"idle_gpu memory held while idle: {held} of {len(gpu)}",
        f"idle GPU-hours in the trace window: {idle_h:.1f}",
        (f"idle GPU $ in the trace window at {assumptions.gpu_model} {rate:.4f} USD/GPU-h: {idle_h * rate:,.2f}"
         if rate is not None else f"idle GPU $: unpriced ({assumptions.gpu_model} not in the rate table)"),
        f"idle_gpu monthly waste: {data['totals']['by_kind']['idle_gpu']:,.2f} USD",
        f"memory over_provisioned containers: {len(mem)} of {mem_containers}",
        f"memory over-provisioning: {gap:,.1f} GiB of {requested:,.1f} GiB requested by them "
        f"({gap / requested if requested else float('nan'):.3f} ratio vs request), "
        f"{sum(f.monthly_waste or 0 for f in mem):,.2f} USD/month",
        f"total: cost {data['totals']['cost']:,.2f} USD/month, waste {data['totals']['waste']:,.2f} "
        f"({data['totals']['waste_pct']}% of cost, OpenCost)",
        "findings by kind: " + ", ".join(f"{k} {sum(1 for f in report.findings if f.kind == k)}" for k in KINDS),
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "alibaba-genai-2026"),
                    help="trace directory laid out like alibaba-genai-2026")
    ap.add_argument("--workloads", type=int, default=1000)
    ap.add_argument("--per-scenario", type=int, default=20)
    ap.add_argument("--memory-limit-gib", type=float, default=16.0)
    ap.add_argument("--gpu-model", default="A100")
    ap.add_argument("--results", default="", help="write the figures as markdown to this file")
    args = ap.parse_args(argv)

    out: list[str] = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    sections: list[tuple[str, Callable[[], list[str]]]] = []

    def sec_scale() -> list[str]:
        secs, render_s, n, found = scale(args.workloads)
        total = secs + render_s
        return [f"analysis_and_rendering_s: {total:.2f} ({total / TARGET_S:.2f} ratio vs the {TARGET_S:g} s target)",
                f"analysis share: {secs:.2f} s ({secs / total:.0%}), rendering share (HTML, charts, CSV): "
                f"{render_s:.2f} s ({render_s / total:.0%})",
                f"workloads: {n} x {DAYS} days x {STEP / 60:g}-minute samples (CPU and "
                f"memory), findings: {found}", f"analysis_ms_per_workload: {1000 * secs / n:.2f}"]

    def sec_quality() -> list[str]:
        lines = [f"seed {SEED}, {args.per_scenario} instances of each of {len(SCENARIOS)} scenario kinds: "
                 + ", ".join(SCENARIOS)]
        for k, (p, r, tp, fp, fn) in quality(args.per_scenario).items():
            lines.append(f"{k}: precision {p:.3f} ({p / 0.95:.3f} ratio vs 0.95 target), recall {r:.3f} "
                         f"({r / 0.95:.3f} ratio vs 0.95 target); tp {tp} fp {fp} fn {fn}")
        return lines

    def sec_real() -> list[str]:
        path = Path(args.data)
        if not path.is_dir():
            return [f"skipped: {path} not found"]
        return real(path, TraceAssumptions(args.memory_limit_gib * GIB, args.gpu_model))

    sections = [("(a) scale", sec_scale), ("(b) quality on labelled scenarios", sec_quality),
                ("(c) real data", sec_real)]
    for title, fn in sections:
        emit(f"## {title}")
        for line in fn():
            emit(line)
        emit()
    if args.results:
        head = ["# Waste detection benchmark (issue 6)", "",
                f"`python bench/waste_bench.py` on {platform.node()} ({platform.machine()}, Python "
                f"{platform.python_version()}), rate table effopt/data/rate_table.json (on-demand, us-east-1).", "",
                "Notes: (a) times the analysis only (all detectors, cost model, report JSON); the HTML and chart "
                "rendering is not built yet and will add its share. (b) precision/recall count every detector on "
                "every scenario, so a detector firing on another scenario's workload is a false positive. (c) the "
                "trace gives memory as a fraction of the limit and no GPU model: the assumptions line says what "
                "was assumed; memory_leak findings on a 23 h trace may be warm-up growth and deserve a look.", ""]
        body = []
        for line in out:
            body.append(line if line.startswith("## ") or not line else f"- {line}")
        Path(args.results).write_text("\n".join(head + body) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
