"""SpotKubernetesPodOperator: a KubernetesPodOperator on spot nodes whose try relaunches a disrupted pod.

Its own module because the Kubernetes provider takes seconds to import; :mod:`effopt.operators.spot`
re-exports it lazily.
"""

from __future__ import annotations

import time
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException
from kubernetes.client.exceptions import ApiException

from effopt.operators.spot import _owner_dict


class SpotKubernetesPodOperator(KubernetesPodOperator):
    """A :class:`KubernetesPodOperator` on spot nodes whose try survives disruptions.

    The pod gets the spot node selector and toleration (``[effopt] spot_capacity_label``) and a
    ``termination_grace_period`` inside the two-minute notice (``[effopt] spot_pod_grace_period_s``).  When
    the pod is lost to a disruption (its ``DisruptionTarget`` condition, its node lost, or the pod gone
    while it ran: a 404 after it was created; a 404 on the create itself, such as a missing namespace, is an
    ordinary failure), the same try launches it again: on spot for the first ``relaunches_on_spot``
    relaunches, then on on-demand, up to ``max_relaunches`` (``[effopt] spot_pod_relaunches``); none of this
    spends one of the task's ``retries``.  Any other failure fails the try as usual.  Each disruption is
    recorded in the effopt store (the effopt page counts them).

    Runs in the task's process (``deferrable`` is not supported: the relaunch needs the try's own loop).
    """

    def __init__(self, *, spot: bool = True, max_relaunches: int | None = None, relaunches_on_spot: int = 1,
                 capacity_label: str = "", spot_grace_period_s: int | None = None, **kwargs: Any) -> None:
        if kwargs.get("deferrable"):
            raise ValueError("SpotKubernetesPodOperator does not run deferrable: its try relaunches a disrupted pod "
                             "itself (use KubernetesPodOperator with params={'effopt_spot': True} to defer)")
        kwargs["deferrable"] = False
        super().__init__(**kwargs)
        self.spot = spot
        self.max_relaunches = max_relaunches
        self.relaunches_on_spot = int(relaunches_on_spot)
        self.capacity_label = capacity_label
        self.spot_grace_period_s = spot_grace_period_s
        self._user_grace = self.termination_grace_period
        self.disruptions: list[dict[str, Any]] = []

    def _place(self, capacity: str, label: str, grace: int) -> None:
        from kubernetes.client import models as k8s

        from effopt.spot.kubernetes import capacity_keys, placement

        fields = placement(capacity, label=label, grace_period_s=grace)
        keys = capacity_keys()
        selector = {k: v for k, v in (self.node_selector or {}).items() if k not in keys}
        self.node_selector = {**selector, **fields["node_selector"]}
        kept = [t for t in (self.tolerations or []) if getattr(t, "key", None) not in keys]
        self.tolerations = kept + [k8s.V1Toleration(**t) for t in fields["tolerations"]]
        self.termination_grace_period = fields["termination_grace_period"] if capacity == "spot" else self._user_grace

    def _pod_dict(self) -> dict[str, Any] | None:
        pod = getattr(self, "remote_pod", None)
        if pod is None:
            return None
        try:
            return self.client.api_client.sanitize_for_serialization(pod)
        except Exception:  # noqa: BLE001 - not a client model: nothing to read
            return None

    def _disruption(self, exc: BaseException) -> str | None:
        from effopt.spot.kubernetes import disruption

        chain: list[BaseException] = []
        seen: BaseException | None = exc
        while seen is not None and len(chain) < 10:
            chain.append(seen)
            seen = seen.__cause__ or seen.__context__
        # A 404 means "the pod is gone" only once the pod exists: before, it is the create that failed (no such
        # namespace, say), an ordinary error.  ``self.pod`` is set by the create and reset before each launch.
        created = getattr(self, "pod", None) is not None
        gone = created and any(isinstance(e, ApiException) and e.status == 404 for e in chain)
        return disruption(self._pod_dict(), gone=gone)

    def execute(self, context: Any) -> Any:
        from effopt.airflow_settings import get_settings, get_store

        settings = get_settings()
        if not self.spot:
            return super().execute(context)
        label = self.capacity_label or settings.spot_capacity_label
        grace = int(self.spot_grace_period_s or settings.spot_pod_grace_period_s)
        limit = settings.spot_pod_relaunches if self.max_relaunches is None else int(self.max_relaunches)
        capacity, relaunches = "spot", 0
        while True:
            self._place(capacity, label, grace)
            self.pod = None
            self.pod_request_obj = None
            self.remote_pod = None
            self.log.info("launching the pod on %s nodes (%s)", capacity, self.node_selector)
            try:
                return super().execute(context)
            except Exception as exc:
                why = self._disruption(exc)
                if why is None:
                    raise
                record = {"capacity": capacity, "reason": why, "relaunch": relaunches + 1,
                          "pod": getattr(getattr(self.pod, "metadata", None), "name", None)}
                self.disruptions.append(record)
                try:
                    get_store().record_spot_event(time.time(), "disruption", _owner_dict(context), record)
                except Exception as store_exc:  # noqa: BLE001 - the relaunch matters more than the record
                    self.log.warning("disruption not recorded in the effopt store: %s", store_exc)
                if relaunches >= limit:
                    raise AirflowException(f"the pod was lost to a disruption {relaunches + 1} time(s) ({why}); the "
                                           f"relaunch limit is {limit} ([effopt] spot_pod_relaunches)") from exc
                relaunches += 1
                capacity = "spot" if relaunches <= self.relaunches_on_spot else "on-demand"
                self.log.warning("the pod was lost to a disruption (%s): relaunch %d of %d in the same try, on %s; "
                                 "no retry spent", why, relaunches, limit, capacity)
