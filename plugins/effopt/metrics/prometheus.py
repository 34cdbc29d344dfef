"""Container usage from Prometheus (cAdvisor, kube-state-metrics, DCGM exporter) over its HTTP API.

Queries (``{sel}`` is the caller's label matchers, e.g. ``namespace="ml"``):

=============  ==================================================================================
cpu            ``rate(container_cpu_usage_seconds_total{container!="",container!="POD",sel}[w])``
memory         ``container_memory_working_set_bytes{container!="",container!="POD",sel}``
OOM kills      ``kube_pod_container_status_last_terminated_reason{reason="OOMKilled",sel}``
requests       ``kube_pod_container_resource_requests{resource="cpu"|"memory",sel}``
limits         ``kube_pod_container_resource_limits{resource="cpu"|"memory",sel}``
gpu_util       ``DCGM_FI_DEV_GPU_UTIL{sel} or DCGM_FI_DEV_GPU_UTIL{exported sel}`` (percent)
gpu_memory     ``DCGM_FI_DEV_FB_USED{sel} or DCGM_FI_DEV_FB_USED{exported sel}`` (MiB, converted to bytes)
=============  ==================================================================================

All usage comes from ``/api/v1/query_range`` over ``[start, end]`` with a
step sized to the window (at most ``max_points`` points per series, never
finer than ``min_step_s``); the rate window ``w`` is twice the step but at
least 5 minutes.  Counter resets inside the window are counted with
``resets()`` and reported.  Pods are grouped into workloads by their name
with the ReplicaSet / Job / StatefulSet suffix removed (see
:func:`workload_of`); the pods of one workload are merged by taking, at each
step, the largest usage of the same container (KRR's "max over pods").
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import requests

from effopt.metrics.series import ResourceKind, UsageSeries, make_series

MIB = 1024**2
_CONTAINER = 'container!="",container!="POD"'
_DEPLOYMENT_POD = re.compile(r"^(?P<w>.+)-[0-9a-f]{6,10}-[a-z0-9]{5}$")
_SUFFIXED_POD = re.compile(r"^(?P<w>.+)-(?:[a-z0-9]{5}|\d+)$")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*")\s*,?')
_POD_LABELS = ("namespace", "pod", "container")


class PrometheusError(RuntimeError):
    """Prometheus could not be reached or refused a query (the message names the URL and the query).

    ``transient`` is true when trying again later may succeed (unreachable, a timeout, HTTP 5xx or 429),
    false when the request itself is wrong (HTTP 4xx: a bad query or selector, no permission).
    """

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def workload_of(pod: str) -> str:
    """The workload a pod belongs to: ``api-7d9c8b6f5d-x2x9k`` -> ``api``, ``db-0`` -> ``db``,
    ``job-abcde`` -> ``job``."""
    for pattern in (_DEPLOYMENT_POD, _SUFFIXED_POD):
        m = pattern.match(pod)
        if m:
            return m.group("w")
    return pod


def step_for(window_s: float, *, max_points: int = 10_000, min_step_s: float = 60.0) -> float:
    """A range-query step for ``window_s``: at most ``max_points`` points per series, at least ``min_step_s``."""
    return float(max(min_step_s, math.ceil(window_s / max_points)))


def exported_selector(selector: str) -> str:
    """``selector`` with namespace/pod/container matchers renamed to the DCGM exporter's ``exported_*`` labels."""
    out, pos = [], 0
    for m in _MATCHER.finditer(selector):
        if m.start() != pos:
            break
        pos = m.end()
        name = f"exported_{m.group(1)}" if m.group(1) in _POD_LABELS else m.group(1)
        out.append(f"{name}{m.group(2)}{m.group(3)}")
    if pos != len(selector):
        raise ValueError(f"cannot parse the label matchers {selector!r} (expected name=\"value\", ...)")
    return ",".join(out)


def _label(metric: dict[str, str], name: str) -> str:
    # The DCGM exporter scraped without honor_labels renames its pod labels to exported_*.
    return metric.get(name) or metric.get(f"exported_{name}") or ""


class PrometheusSource:
    """A :class:`~effopt.metrics.series.MetricsSource` over a Prometheus base URL.

    ``start``/``end`` are epoch seconds (default: the last 8 days up to now);
    ``selector`` holds extra label matchers for every query.
    """

    def __init__(
        self,
        url: str,
        *,
        start: float | None = None,
        end: float | None = None,
        selector: str = "",
        step_s: float | None = None,
        max_points: int = 10_000,
        min_step_s: float = 60.0,
        min_history_s: float = 3 * 3600.0,
        timeout_s: float = 30.0,
        session: requests.Session | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.end = float(end if end is not None else time.time())
        self.start = float(start if start is not None else self.end - 8 * 86400)
        if self.end <= self.start:
            raise ValueError(f"Prometheus window is empty: start {self.start} is not before end {self.end}")
        self.selector = selector.strip().strip(",")
        self.step_s = float(step_s) if step_s else step_for(self.end - self.start, max_points=max_points,
                                                                min_step_s=min_step_s)
        self.min_history_s = min_history_s
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        if headers:
            self.session.headers.update(headers)

    # -- HTTP ---------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            resp = self.session.get(f"{self.url}{path}", params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise PrometheusError(f"Prometheus {self.url} unreachable for {params.get('query')!r}: {exc}",
                                  transient=True) from exc
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if resp.status_code != 200 or body.get("status") != "success":
            reason = body.get("error") or resp.text[:200]
            raise PrometheusError(f"Prometheus {self.url} refused {params.get('query')!r} "
                                  f"(HTTP {resp.status_code}): {reason}",
                                  transient=resp.status_code >= 500 or resp.status_code in (408, 429))
        return body["data"]["result"]

    def query_range(self, promql: str) -> list[dict[str, Any]]:
        return self._get("/api/v1/query_range",
                         {"query": promql, "start": self.start, "end": self.end, "step": self.step_s})

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self._get("/api/v1/query", {"query": promql, "time": self.end})

    def _sel(self, *matchers: str) -> str:
        parts = [m for m in (*matchers, self.selector) if m]
        return "{" + ",".join(parts) + "}"

    # -- MetricsSource ------------------------------------------------------------
    def issues(self) -> list[str]:
        """Nothing outside the series' own quality reports."""
        return []

    def resources(self) -> tuple[ResourceKind, ...]:
        return ("cpu", "memory", "gpu_util", "gpu_memory")

    @property
    def rate_window_s(self) -> int:
        return int(max(2 * self.step_s, 300))

    def promql(self, resource: ResourceKind) -> str:
        """The usage query for ``resource``."""
        if resource == "cpu":
            return f"rate(container_cpu_usage_seconds_total{self._sel(_CONTAINER)}[{self.rate_window_s}s])"
        if resource == "memory":
            return f"container_memory_working_set_bytes{self._sel(_CONTAINER)}"
        if resource in ("gpu_util", "gpu_memory"):
            # The DCGM exporter's pod labels are exported_* unless it is scraped with honor_labels.
            name = "DCGM_FI_DEV_GPU_UTIL" if resource == "gpu_util" else "DCGM_FI_DEV_FB_USED"
            if not self.selector:
                return name
            exported = "{" + exported_selector(self.selector) + "}"
            return f"{name}{self._sel()} or {name}{exported}"
        raise ValueError(f"PrometheusSource has no {resource!r} usage; it offers {', '.join(self.resources())}")

    def series(self, resource: ResourceKind) -> list[UsageSeries]:
        promql = self.promql(resource)
        scale = MIB if resource == "gpu_memory" else 1.0
        groups: dict[tuple[str, str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        for item in self.query_range(promql):
            metric = item.get("metric", {})
            key = (_label(metric, "namespace"), workload_of(_label(metric, "pod")), _label(metric, "container"))
            ts, vs = _matrix(item.get("values", []))
            groups.setdefault(key, []).append((ts, vs * scale))
        requests_, limits = self._settings(resource)
        resets = self._counter_resets() if resource == "cpu" else {}
        ooms = self._oom_kills() if resource == "memory" else {}
        out = []
        for key in sorted(groups):
            namespace, workload, container = key
            ts, vs = _merge_max(groups[key])
            s = make_series(f"{namespace}/{workload}" if namespace else workload, container, resource, ts, vs,
                            min_history_s=self.min_history_s, request=requests_.get(key), limit=limits.get(key),
                            oom_kills=ooms.get(key, ()), labels={"namespace": namespace, "workload": workload,
                                                                 "promql": promql, "step_s": f"{self.step_s:g}"})
            if resets.get(key):
                n = resets[key]
                q = s.quality
                s = replace(s, quality=replace(q, counter_resets=n, issues=(
                    *q.issues, f"{n} counter reset(s) in the window (rate() bridges them)")))
            out.append(s)
        return out

    # -- requests, limits, OOM kills, counter resets --------------------------------
    def _settings(self, resource: ResourceKind) -> tuple[dict[tuple[str, str, str], float], ...]:
        if resource not in ("cpu", "memory"):
            return {}, {}
        found = []
        for metric_name in ("kube_pod_container_resource_requests", "kube_pod_container_resource_limits"):
            values: dict[tuple[str, str, str], float] = {}
            matcher = f'resource="{resource}"'
            for item in self.query(metric_name + self._sel(matcher)):
                m = item.get("metric", {})
                key = (_label(m, "namespace"), workload_of(_label(m, "pod")), _label(m, "container"))
                v = float(item["value"][1])
                if math.isfinite(v):
                    values[key] = max(values.get(key, v), v)
            found.append(values)
        return tuple(found)

    def _oom_kills(self) -> dict[tuple[str, str, str], np.ndarray]:
        """OOM kill times: where ``last_terminated_reason{reason="OOMKilled"}`` turns 1 (a new termination)."""
        out: dict[tuple[str, str, str], list[float]] = {}
        promql = "kube_pod_container_status_last_terminated_reason" + self._sel('reason="OOMKilled"')
        for item in self.query_range(promql):
            m = item.get("metric", {})
            key = (_label(m, "namespace"), workload_of(_label(m, "pod")), _label(m, "container"))
            ts, vs = _matrix(item.get("values", []))
            on = vs > 0
            rising = on & ~np.concatenate([[False], on[:-1]])
            # A new run after a gap in the series is a new termination too.
            gap = np.concatenate([[False], np.diff(ts) > self.step_s * 1.5]) & on
            out.setdefault(key, []).extend(ts[rising | gap].tolist())
        return {k: np.unique(np.array(v)) for k, v in out.items()}

    def _counter_resets(self) -> dict[tuple[str, str, str], int]:
        window = int(self.end - self.start)
        out: dict[tuple[str, str, str], int] = {}
        for item in self.query(f"resets(container_cpu_usage_seconds_total{self._sel(_CONTAINER)}[{window}s])"):
            m = item.get("metric", {})
            key = (_label(m, "namespace"), workload_of(_label(m, "pod")), _label(m, "container"))
            out[key] = out.get(key, 0) + int(float(item["value"][1]))
        return out


#: How far back :func:`oom_kills_since` looks to tell a new OOM kill from a state that was already there.
OOM_LOOKBACK_S = 900.0


def oom_kills_since(source: PrometheusSource, since: float) -> list[dict[str, Any]]:
    """Containers OOM-killed after ``since`` (epoch seconds), newest state first per container.

    A kill is a restart (``kube_pod_container_status_restarts_total`` goes up) while the container's last
    termination reason is ``OOMKilled``, or that reason turning on; a container already OOM-killed before
    ``since`` and not killed again is not a new kill.  ``source`` gives the URL, the selector and ``end``;
    its window is widened back to ``since - OOM_LOOKBACK_S`` here.
    """
    window = replace_window(source, since - OOM_LOOKBACK_S)
    reason = "kube_pod_container_status_last_terminated_reason" + window._sel('reason="OOMKilled"')
    restarts = "kube_pod_container_status_restarts_total" + window._sel()
    on: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    for item in window.query_range(reason):
        m = item.get("metric", {})
        on[(_label(m, "namespace"), _label(m, "pod"), _label(m, "container"))] = _matrix(item.get("values", []))
    kills: dict[tuple[str, str, str], float] = {}
    for key, (ts, vs) in on.items():
        flag = vs > 0
        rising = flag & ~np.concatenate([[True], flag[:-1]])  # a state already on at the window's start is old
        after = ts[rising & (ts > since)]
        if after.size:
            kills[key] = float(after[0])
    for item in window.query_range(restarts):
        m = item.get("metric", {})
        key = (_label(m, "namespace"), _label(m, "pod"), _label(m, "container"))
        if key not in on:
            continue
        ts, vs = _matrix(item.get("values", []))
        rts, rvs = on[key]
        for t in ts[1:][(np.diff(vs) > 0) & (ts[1:] > since)]:
            state = rvs[rts <= t]  # the reason at the restart (the gauge moves at the same scrape)
            if state.size and state[-1] > 0:
                kills[key] = min(kills.get(key, float(t)), float(t))
                break
    return [{"namespace": ns, "pod": pod, "workload": workload_of(pod), "container": c, "killed_at": t}
            for (ns, pod, c), t in sorted(kills.items(), key=lambda kv: -kv[1])]


def replace_window(source: PrometheusSource, start: float) -> PrometheusSource:
    """``source`` over ``[start, source.end]``, its step sized to that window (same URL, selector, session)."""
    return PrometheusSource(source.url, start=start, end=source.end, selector=source.selector,
                            min_step_s=min(source.step_s, 15.0), min_history_s=source.min_history_s,
                            timeout_s=source.timeout_s, session=source.session)


def _matrix(values: Iterable[list[Any]]) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(values)
    ts = np.array([float(p[0]) for p in pairs], dtype=float)
    vs = np.array([_num(p[1]) for p in pairs], dtype=float)
    return ts, vs


def _num(text: str) -> float:
    try:
        return float(text)  # Prometheus sends "NaN", "+Inf" as strings: they stay NaN/inf and are reported
    except (TypeError, ValueError):
        return float("nan")


def _merge_max(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One series from several pods: at each timestamp the largest value (NaN only where all are NaN)."""
    if len(parts) == 1:
        return parts[0]
    ts = np.concatenate([p[0] for p in parts])
    vs = np.concatenate([p[1] for p in parts])
    grid, idx = np.unique(ts, return_inverse=True)
    out = np.full(grid.size, -np.inf)
    np.fmax.at(out, idx, np.where(np.isnan(vs), -np.inf, vs))
    out[np.isneginf(out)] = np.nan
    return grid, out
