"""PrometheusSource against a real Prometheus pre-filled with two days of known series.

The history is written as OpenMetrics with explicit timestamps (seconds) and
imported with ``promtool tsdb create-blocks-from openmetrics`` by the
``prometheus_factory`` fixture.  Samples are one minute apart and the source
queries with a one-minute step aligned to them, so every gauge must come back
exactly as loaded.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from effopt.metrics import PrometheusError, PrometheusSource
from effopt.metrics.prometheus import exported_selector, step_for, workload_of
from effopt.rightsizing import get_recommender

MIB = 1024**2
GIB = 1024**3
N = 2 * 1440  # two days of minute samples


def bucket_end(value: float, first: float) -> float:
    b = math.floor(math.log(value * 0.05 / first + 1) / math.log(1.05))
    return first * (1.05 ** (b + 1) - 1) / 0.05


def history(base: int) -> tuple[str, dict[str, np.ndarray]]:
    i = np.arange(N)
    ts = base + 60 * i
    sine = np.round(GIB + 0.5 * GIB * np.sin(2 * np.pi * i / 1440))
    step = np.where(i < 1440, GIB, 2 * GIB).astype(float)
    lines: list[str] = ["# TYPE container_memory_working_set_bytes gauge"]

    def add(name: str, labels: str, values: np.ndarray | float) -> None:
        vals = np.broadcast_to(np.asarray(values, dtype=float), (N,))
        lines.extend(f"{name}{{{labels}}} {v:.17g} {t}" if np.isfinite(v) else f"{name}{{{labels}}} NaN {t}"
                     for v, t in zip(vals, ts, strict=True))

    mem = "container_memory_working_set_bytes"
    add(mem, 'namespace="ml",pod="api-7d9c8b6f5d-x2x9k",container="server"', sine)
    add(mem, 'namespace="ml",pod="api-7d9c8b6f5d-q8wzt",container="server"', 0.5 * GIB)
    add(mem, 'namespace="ml",pod="db-0",container="postgres"', step)
    add(mem, 'namespace="ml",pod="train-abcde",container="main"', 500 * MIB)
    bad = np.full(N, 300.0 * MIB)
    bad[10:20] = np.nan
    bad[30] = -1
    add(mem, 'namespace="ml",pod="flaky-0",container="x"', bad)
    lines.append("# TYPE container_cpu_usage_seconds counter")
    cpu = "container_cpu_usage_seconds_total"
    add(cpu, 'namespace="ml",pod="api-7d9c8b6f5d-x2x9k",container="server"', 0.5 * 60 * i)
    add(cpu, 'namespace="ml",pod="api-7d9c8b6f5d-q8wzt",container="server"',
        0.25 * 60 * np.where(i < 1000, i, i - 1000))
    lines.append("# TYPE kube_pod_container_resource_requests gauge")
    add("kube_pod_container_resource_requests",
        'namespace="ml",pod="train-abcde",container="main",resource="memory",unit="byte"', 600 * MIB)
    add("kube_pod_container_resource_requests",
        'namespace="ml",pod="api-7d9c8b6f5d-x2x9k",container="server",resource="cpu",unit="core"', 0.25)
    lines.append("# TYPE kube_pod_container_resource_limits gauge")
    add("kube_pod_container_resource_limits",
        'namespace="ml",pod="train-abcde",container="main",resource="memory",unit="byte"', 700 * MIB)
    lines.append("# TYPE kube_pod_container_status_last_terminated_reason gauge")
    add("kube_pod_container_status_last_terminated_reason",
        'namespace="ml",pod="train-abcde",container="main",reason="OOMKilled"', np.where(i < 30 * 60, 0.0, 1.0))
    lines.append("# TYPE DCGM_FI_DEV_FB_USED gauge")
    add("DCGM_FI_DEV_FB_USED",
        'exported_namespace="ml",exported_pod="llm-5c9f7b8d6c-abcde",exported_container="vllm",gpu="0"', 10240)
    lines.append("# TYPE DCGM_FI_DEV_GPU_UTIL gauge")
    add("DCGM_FI_DEV_GPU_UTIL",
        'exported_namespace="ml",exported_pod="llm-5c9f7b8d6c-abcde",exported_container="vllm",gpu="0"', 37)
    return "\n".join(lines), {"ts": ts.astype(float), "sine": sine, "step": step}


@pytest.fixture
def loaded(prometheus_factory):
    base = (int(time.time()) // 3600 - 52) * 3600
    text, known = history(base)
    prom = prometheus_factory(text)
    src = PrometheusSource(prom.url, start=base, end=base + 60 * (N - 1), step_s=60, selector='namespace="ml"')
    return prom, src, known


def by_workload(series):
    return {(s.workload, s.container): s for s in series}


def test_prometheus_series_and_recommendations(loaded):
    prom, src, known = loaded
    mem = by_workload(src.series("memory"))
    assert set(mem) == {("ml/api", "server"), ("ml/db", "postgres"), ("ml/train", "main"), ("ml/flaky", "x")}
    api = mem["ml/api", "server"]  # two pods merged: the larger (sine) at every step
    np.testing.assert_array_equal(api.timestamps, known["ts"])
    np.testing.assert_array_equal(api.values, known["sine"])
    assert api.quality.issues == () and api.labels["step_s"] == "60"
    np.testing.assert_array_equal(mem["ml/db", "postgres"].values, known["step"])
    flaky = mem["ml/flaky", "x"]
    assert flaky.quality.nan == 10 and flaky.quality.negative == 1 and len(flaky) == N - 11
    train = mem["ml/train", "main"]
    assert train.request == 600 * MIB and train.limit == 700 * MIB
    assert list(train.oom_kills) == [known["ts"][30 * 60]]

    vpa, krr, eff = (get_recommender(n) for n in ("vpa", "krr", "effopt"))
    # daily sine: both daily peaks are the sine's maximum
    peak = known["sine"].max()
    assert vpa.recommend(api).target == pytest.approx(bucket_end(peak, 1e7) * 1.15)
    assert krr.recommend(api).target == pytest.approx(peak * 1.15)
    # effopt covers the coming hour (its decision step), seen in yesterday's same hour, and stays below VPA
    next_hour = np.round(GIB + 0.5 * GIB * np.sin(2 * np.pi * np.arange(N, N + 60) / 1440)).max()
    seasonal = eff.recommend(api)
    assert next_hour <= seasonal.target < vpa.recommend(api).target
    # with a lower level percentile the recent level misses the coming hour and the seasonal term supplies it
    lower = get_recommender("effopt", level_percentile=0.9).recommend(api)
    assert next_hour <= lower.target and any("seasonal" in n for n in lower.evidence.notes)
    # step 1 GiB -> 2 GiB: peaks 1 and 2 GiB weighted 1 and 2 -> p90 in the 2 GiB bucket
    db = mem["ml/db", "postgres"]
    assert vpa.recommend(db).target == pytest.approx(bucket_end(2 * GIB, 1e7) * 1.15)
    assert krr.recommend(db).target == pytest.approx(2 * GIB * 1.15)
    # OOM at 30 h: used = max(request 600 MiB, peak 500 MiB) -> max(700 MiB, 720 MiB) = 720 MiB in day 2
    assert vpa.recommend(train).target == pytest.approx(bucket_end(720 * MIB, 1e7) * 1.15)
    assert krr.recommend(train).target == pytest.approx(700 * MIB * 1.25)  # limit at the OOM kill x 1.25
    assert eff.recommend(train).target >= 600 * MIB * 1.2  # OOM bump from the request

    (cpu,) = src.series("cpu")
    assert (cpu.workload, cpu.container, cpu.request) == ("ml/api", "server", 0.25)
    # rate of the faster pod's counter; the first 4 points see a partial 5-minute window of a counter
    # that starts at 0 there (Prometheus does not extrapolate below zero): 0.1, 0.2, 0.3, 0.4 cores
    np.testing.assert_allclose(cpu.values[:4], [0.1, 0.2, 0.3, 0.4], rtol=1e-9)
    np.testing.assert_allclose(cpu.values[4:], 0.5, rtol=1e-9)
    assert cpu.quality.counter_resets == 1 and "counter reset" in " ".join(cpu.quality.issues)
    assert vpa.recommend(cpu).target == pytest.approx(bucket_end(0.5, 0.01) * 1.15)
    assert krr.recommend(cpu).target == pytest.approx(0.5)

    (gpu,) = src.series("gpu_memory")
    assert (gpu.workload, gpu.container, gpu.unit) == ("ml/llm", "vllm", "bytes")
    np.testing.assert_array_equal(gpu.values, 10 * GIB)  # MiB -> bytes
    rec = eff.recommend(gpu)
    assert rec.target == pytest.approx(10 * GIB * 1.02)  # constant: learned margin 0 -> 2% floor
    assert rec.gpu.smallest_slice.name == "A100 80GB MIG 2g.20gb" and rec.gpu.smallest_gpu.name == "T4 16GB"
    (util,) = src.series("gpu_util")
    np.testing.assert_array_equal(util.values, 37.0)


def test_prometheus_errors_are_clear(loaded):
    prom, src, _ = loaded
    bad = PrometheusSource(prom.url, start=src.start, end=src.end, selector='namespace=~"("')
    with pytest.raises(PrometheusError, match="refused .*HTTP 400"):
        bad.series("memory")
    gone = PrometheusSource("http://127.0.0.1:9", start=0, end=3600, timeout_s=2)
    with pytest.raises(PrometheusError, match="127.0.0.1:9 unreachable"):
        gone.series("memory")
    with pytest.raises(ValueError, match="window is empty"):
        PrometheusSource(prom.url, start=10, end=5)


def test_step_and_workload_names():
    assert step_for(3600) == 60 and step_for(8 * 86400) == 70  # <= 10,000 points per series
    assert workload_of("api-7d9c8b6f5d-x2x9k") == "api"
    assert workload_of("db-0") == "db" and workload_of("train-abcde") == "train"
    assert workload_of("standalone") == "standalone"


def test_dcgm_selector_uses_exported_labels():
    assert (exported_selector('namespace="ml", app=~"a,b",pod!="x"')
            == 'exported_namespace="ml",app=~"a,b",exported_pod!="x"')
    with pytest.raises(ValueError, match="cannot parse the label matchers 'namespace=ml'"):
        exported_selector("namespace=ml")
    src = PrometheusSource("http://prom:9090", start=0, end=3600, selector='namespace="ml"')
    assert (src.promql("gpu_memory")
            == 'DCGM_FI_DEV_FB_USED{namespace="ml"} or DCGM_FI_DEV_FB_USED{exported_namespace="ml"}')
    assert (src.promql("cpu")
            == 'rate(container_cpu_usage_seconds_total{container!="",container!="POD",namespace="ml"}[300s])')
