"""Usage of Airflow tasks from the effopt store (the task-usage listener's records).

One workload per ``(dag_id, task_id)`` named ``dag_id/task_id``, container
``task``; one sample per recorded try, stamped with the try's end:

* cpu: ``cpu_s / wall_s`` (average cores busy over the try);
* memory: ``peak_rss_bytes``.

A try with no wall time cannot give a CPU rate: it is reported as a NaN
sample (dropped, and counted in the quality report), never as zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from effopt.metrics.series import ResourceKind, UsageSeries, make_series
from effopt.store import TaskUsageRecord


class TaskUsageReader(Protocol):
    def task_usage(self, dag_id: str | None = None, task_id: str | None = None, run_id: str | None = None,
                   since: float | None = None, limit: int | None = None) -> list[TaskUsageRecord]: ...


class AirflowTaskSource:
    """A :class:`~effopt.metrics.series.MetricsSource` over an :class:`~effopt.store.EffoptStore`.

    ``dag_ids`` limits the DAGs read; ``since`` (epoch seconds) the history.
    """

    def __init__(self, store: TaskUsageReader, *, dag_ids: Iterable[str] | None = None,
                 since: float | None = None, min_history_s: float = 0.0) -> None:
        self.store = store
        self.dag_ids = None if dag_ids is None else list(dag_ids)
        self.since = since
        self.min_history_s = min_history_s

    def issues(self) -> list[str]:
        """Nothing outside the series' own quality reports."""
        return []

    def resources(self) -> tuple[ResourceKind, ...]:
        return ("cpu", "memory")

    def _records(self) -> list[TaskUsageRecord]:
        if self.dag_ids is None:
            return self.store.task_usage(since=self.since)
        out: list[TaskUsageRecord] = []
        for dag_id in self.dag_ids:
            out.extend(self.store.task_usage(dag_id=dag_id, since=self.since))
        return out

    def series(self, resource: ResourceKind) -> list[UsageSeries]:
        if resource not in self.resources():
            raise ValueError(f"AirflowTaskSource has no {resource!r} usage; it offers {', '.join(self.resources())}")
        groups: dict[tuple[str, str], list[TaskUsageRecord]] = {}
        for r in self._records():
            groups.setdefault((r.dag_id, r.task_id), []).append(r)
        out = []
        for (dag_id, task_id), recs in sorted(groups.items()):
            ts = np.array([r.end for r in recs], dtype=float)
            if resource == "cpu":
                with np.errstate(divide="ignore", invalid="ignore"):
                    vs = np.array([r.cpu_s / r.wall_s if r.wall_s > 0 else np.nan for r in recs], dtype=float)
            else:
                vs = np.array([r.peak_rss_bytes for r in recs], dtype=float)
            out.append(make_series(f"{dag_id}/{task_id}", "task", resource, ts, vs, min_history_s=self.min_history_s,
                                   labels={"dag_id": dag_id, "task_id": task_id}))
        return out
