"""Right-sizing operators: recommend and plan (dry-run), then apply the plan (dry-run, patch, vpa, gitops, airflow)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from effopt.operators.errors import fail_fast

MODES = ("dry-run", "patch", "vpa", "gitops", "airflow")


class RightSizingRecommendOperator(BaseOperator):
    """Recommend CPU and memory per container from usage history and plan the changes (nothing is applied).

    :param source: ``auto`` (default: ``prometheus`` when its connection is defined, else ``airflow``),
        ``prometheus`` (the ``prometheus_conn_id`` connection; default ``[effopt] prometheus_conn_id``),
        ``airflow`` (the task-usage listener's records of ``dag_ids``) or ``trace`` (CSV files at ``trace_path``)
    :param selector: extra PromQL label matchers for every query, e.g. ``namespace="ml"``
    :param recommender: ``effopt`` (default), ``vpa`` or ``krr``
    :param window_hours: history to read (Prometheus)
    :param workload_kind: kind of the Kubernetes workloads (``Deployment`` or ``StatefulSet``) when
        ``kubernetes_conn_id`` is not given
    :param kubernetes_conn_id: when set, each workload's kind is read from the cluster (Deployments and
        StatefulSets of the namespaces seen in the usage)
    :param pricing: ``on_demand`` or ``spot`` rates of the ``[effopt] rate_table``
    :param recommender_settings: ``{setting: value}`` overriding the recommender's defaults, validated against
        their declared bounds (``effopt rightsize settings`` lists them); a bad one fails the task at once

    Returns (XCom) ``{"summary": ..., "source": ..., "plan": ..., "changes": [...], "recommendations": [...],
    "skipped": [...], "issues": [...]}``; the same is saved in the effopt store for the effopt page.
    """

    template_fields: Sequence[str] = ("source", "selector", "dag_ids", "trace_path", "recommender",
                                      "window_hours", "prometheus_conn_id", "workload_kind", "pricing",
                                      "kubernetes_conn_id", "recommender_settings")

    def __init__(
        self,
        *,
        source: str = "auto",
        selector: str = "",
        dag_ids: Sequence[str] | None = None,
        trace_path: str | None = None,
        recommender: str = "effopt",
        window_hours: float = 8 * 24,
        prometheus_conn_id: str = "",
        workload_kind: str = "Deployment",
        pricing: str = "on_demand",
        kubernetes_conn_id: str = "",
        recommender_settings: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kubernetes_conn_id = kubernetes_conn_id
        self.recommender_settings = recommender_settings
        self.source = source
        self.selector = selector
        self.dag_ids = dag_ids
        self.trace_path = trace_path
        self.recommender = recommender
        self.window_hours = window_hours
        self.prometheus_conn_id = prometheus_conn_id
        self.workload_kind = workload_kind
        self.pricing = pricing

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.hooks.metrics import metrics_source, resolve_source
        from effopt.prices import load_rate_table
        from effopt.rightsizing.apply.model import AIRFLOW_TASK_KIND
        from effopt.rightsizing.service import plan_rightsizing

        source_name, why = resolve_source(self.source, self.prometheus_conn_id, self.trace_path or "")
        self.log.info("%s", why)
        source = metrics_source(source_name, path=self.trace_path or "", prometheus_conn_id=self.prometheus_conn_id,
                                selector=self.selector, window_hours=self.window_hours, dag_ids=self.dag_ids,
                                path_param="trace_path")
        store = get_store()
        result = plan_rightsizing(
            source, load_rate_table(get_settings().rate_table), now=time.time(),
            kind=AIRFLOW_TASK_KIND if source_name == "airflow" else self.workload_kind,
            recommender=self.recommender, settings=self.recommender_settings or None, pricing=self.pricing,
            kinds_for=self._cluster_kinds if self.kubernetes_conn_id and source_name != "airflow" else None,
            last_applied=lambda w: store.last_rightsizing_apply(w.kind, w.namespace, w.name),
        )
        for issue in result.issues:
            self.log.warning("data quality: %s", issue)
        self.log.info("right-sizing: %s", result.summary())
        for item in result.plan.items:
            self.log.info("%s", item.to_dict())
        out = {**result.to_dict(), "source": source_name}
        store.save_rightsizing_plan(time.time(), self.dag_id, context.get("run_id", ""), source_name, self.recommender,
                                    out)
        return out

    def _cluster_kinds(self, namespaces: list[str]) -> dict[str, str]:
        """Each workload's kind (Deployment or StatefulSet), read from the cluster."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from effopt.metrics.kubernetes import KubernetesSource

        return KubernetesSource(KubernetesHook(conn_id=self.kubernetes_conn_id).api_client, namespaces).kinds()


class OomReplanOperator(BaseOperator):
    """Re-plan the memory of OOM-killed containers at once (VPA's bump-up), under the usual guardrails.

    :param kills: an :class:`~effopt.sensors.oom.OomKillSensor` XCom (templated, e.g. ``sensor.output``)
    :param prometheus_conn_id: where their memory history is (default ``[effopt] prometheus_conn_id``)
    :param window_hours: how much history gives the peak usage
    :param kubernetes_conn_id: when set, each workload's kind is read from the cluster

    Returns (XCom) the shape of :class:`RightSizingRecommendOperator`'s, so
    :class:`RightSizingApplyOperator` applies it; it is saved in the effopt store for the effopt page.
    """

    template_fields: Sequence[str] = ("kills", "prometheus_conn_id", "window_hours", "workload_kind",
                                      "kubernetes_conn_id", "pricing")

    def __init__(self, *, kills: Any, prometheus_conn_id: str = "", window_hours: float = 24.0,
                 workload_kind: str = "Deployment", kubernetes_conn_id: str = "", pricing: str = "on_demand",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kills = kills
        self.prometheus_conn_id = prometheus_conn_id
        self.window_hours = window_hours
        self.workload_kind = workload_kind
        self.kubernetes_conn_id = kubernetes_conn_id
        self.pricing = pricing

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.hooks.metrics import metrics_source
        from effopt.prices import load_rate_table
        from effopt.rightsizing.service import replan_after_oom

        kills = list(self.kills or [])
        namespaces = sorted({k["namespace"] for k in kills if k.get("namespace")})
        selector = f'namespace=~"{"|".join(namespaces)}"' if namespaces else ""
        source = metrics_source("prometheus", prometheus_conn_id=self.prometheus_conn_id, selector=selector,
                                window_hours=self.window_hours)
        store = get_store()
        kinds_for = None
        if self.kubernetes_conn_id:
            kinds_for = RightSizingRecommendOperator(task_id="kinds", kubernetes_conn_id=self.kubernetes_conn_id
                                                     )._cluster_kinds
        result = replan_after_oom(
            kills, source, load_rate_table(get_settings().rate_table), now=time.time(), kind=self.workload_kind,
            kinds_for=kinds_for, pricing=self.pricing,
            last_applied=lambda w: store.last_rightsizing_apply(w.kind, w.namespace, w.name))
        for change in result.changes:
            self.log.info("%s: %s", change.label, change.reason)
        self.log.info("right-sizing after OOM kills: %s", result.summary())
        out = {**result.to_dict(), "source": "prometheus", "kills": kills}
        store.save_rightsizing_plan(time.time(), self.dag_id, context.get("run_id", ""), "prometheus", "oom", out)
        return out


class RightSizingApplyOperator(BaseOperator):
    """Apply the changes of a :class:`RightSizingRecommendOperator` result.

    :param recommendation: that operator's XCom (templated, e.g. ``recommend.output``)
    :param mode: ``dry-run`` (default: nothing changes), ``patch`` (Kubernetes, through
        ``kubernetes_conn_id``, default ``[effopt] kubernetes_conn_id``; re-planned against the live
        objects with guardrails),
        ``vpa`` (VerticalPodAutoscaler YAML in ``output_dir``), ``gitops`` (kustomize patches in
        ``output_dir``) or ``airflow`` (container resources for opted-in KubernetesPodOperator tasks)
    """

    template_fields: Sequence[str] = ("recommendation", "mode", "output_dir", "vpa_update_mode",
                                      "kubernetes_conn_id")

    def __init__(
        self,
        *,
        recommendation: Any,
        mode: str = "dry-run",
        output_dir: str | None = None,
        vpa_update_mode: str = "Off",
        kubernetes_conn_id: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.recommendation = recommendation
        self.mode = mode
        self.output_dir = output_dir
        self.vpa_update_mode = vpa_update_mode
        self.kubernetes_conn_id = kubernetes_conn_id

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.prices import load_rate_table
        from effopt.rightsizing import apply as rs
        from effopt.rightsizing.recommend import change_from_dict

        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        changes = [change_from_dict(c) for c in self.recommendation["changes"]]
        rates = load_rate_table(get_settings().rate_table)
        store = get_store()
        if self.mode == "dry-run":
            self.log.info("dry-run: nothing applied (%d changes planned)", len(changes))
            return {"mode": self.mode, "plan": self.recommendation["plan"]}
        if self.mode == "patch":
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

            conn_id = self.kubernetes_conn_id or get_settings().kubernetes_conn_id
            self.log.info("patch: planning against the live objects of connection %s", conn_id)
            applier = rs.KubernetesApplier(KubernetesHook(conn_id=conn_id).api_client, store)
            plan = applier.plan(changes, rates)
            result = applier.apply(plan)
            return {"mode": self.mode, "plan": plan.to_dict(), "applied": len(result.applied),
                    "conflicts_retried": result.conflicts_retried}
        plan = rs.build_plan(changes, rates, now=time.time(),
                             last_applied=lambda w: store.last_rightsizing_apply(w.kind, w.namespace, w.name))
        if self.mode in ("vpa", "gitops"):
            if not self.output_dir:
                raise ValueError(f"mode {self.mode!r} needs output_dir")
            paths = (rs.write_vpa(plan, self.output_dir, self.vpa_update_mode) if self.mode == "vpa"
                     else rs.write_kustomize(plan, self.output_dir))
            return {"mode": self.mode, "plan": plan.to_dict(), "files": [str(p) for p in paths]}
        records = rs.record_task_resources(plan, store)
        return {"mode": self.mode, "plan": plan.to_dict(), "recorded": len(records)}
