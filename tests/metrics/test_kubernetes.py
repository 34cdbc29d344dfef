"""KubernetesSource: current requests and limits, listed through KubernetesHook.

There is no real API server on this machine: the official client talks to the
local HTTP stand-in (``tests/k8s_standin.py``) that serves apps/v1 lists.
"""

from __future__ import annotations

import numpy as np

from effopt.metrics.kubernetes import KubernetesSource
from effopt.metrics.series import make_series
from effopt.rightsizing.base import Evidence, Recommendation
from effopt.rightsizing.recommend import to_changes
from tests.rightsizing.apply.conftest import GIB, MIB, deployment


def test_lists_containers_of_deployments_and_statefulsets(standin, kube_hook):
    standin.add(deployment("web", "shop"))
    standin.add(deployment("db", "shop", kind="StatefulSet", replicas=3,
                           containers={"pg": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                              "limits": {"cpu": "1", "memory": "1Gi"}}}))
    standin.add(deployment("other", "elsewhere"))
    found = {(c.workload.kind, c.workload_name, c.container): c
             for c in KubernetesSource(kube_hook.api_client, ["shop"]).containers()}
    assert set(found) == {("Deployment", "shop/web", "app"), ("Deployment", "shop/web", "sidecar"),
                          ("StatefulSet", "shop/db", "pg")}
    pg = found[("StatefulSet", "shop/db", "pg")]
    assert (pg.resources.cpu_request, pg.resources.cpu_limit) == (0.5, 1.0)
    assert pg.resources.memory_request == pg.resources.memory_limit == GIB and pg.replicas == 3
    assert found[("Deployment", "shop/web", "sidecar")].resources.memory_request == 128 * MIB


def test_kinds_route_changes_to_the_right_object(standin, kube_hook):
    standin.add(deployment("db", "shop", kind="StatefulSet"))
    kinds = KubernetesSource(kube_hook.api_client, ["shop"]).kinds()
    ts = np.arange(0, 6 * 3600, 60, dtype=float)
    series = [make_series("shop/db", "app", "memory", ts, np.full(ts.size, 300.0 * MIB))]
    rec = Recommendation("shop/db", "app", "memory", "bytes", "effopt", 400.0 * MIB, 300.0 * MIB, 800.0 * MIB, 0.2,
                         Evidence(samples=ts.size, window_start=0.0, window_end=ts[-1], percentile=None, method="peak"))
    (change,) = to_changes([rec], series, kinds=kinds)
    assert change.workload.kind == "StatefulSet" and change.workload.name == "db"
    assert change.recommended.memory_request == change.recommended.memory_limit == 400 * MIB
    assert change.memory_peak_bytes == 300 * MIB
