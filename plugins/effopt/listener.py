"""Task-usage listener: measured CPU, memory and wall time of every task instance.

Airflow 3 calls task-instance listeners inside the task's own process, so the
figures come from that process and the children it waited for
(:mod:`effopt.usage`).  The end snapshot is taken before the store is
touched, so writing the record never counts as the task's usage.  The store
module is imported with the plugin, so the hooks themselves only take two
snapshots and write one row.  The
listener never fails a task: every error is caught, and an unreachable store
is reported by one warning.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from airflow.listeners import hookimpl

from effopt.airflow_settings import get_store
from effopt.store import TaskUsageRecord
from effopt.usage import UsageSnapshot

log = logging.getLogger(__name__)

_TI_KEY = tuple[str, str, str, int, int]

_spans: dict[_TI_KEY, UsageSnapshot] = {}
_warned = False


def _key(ti: Any) -> _TI_KEY:
    map_index = getattr(ti, "map_index", -1)
    return (ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else int(map_index), int(ti.try_number))


def _warn_once(message: str, *args: Any) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(message, *args)


def start(ti: Any) -> None:
    """Begin measuring ``ti`` (called when it starts running)."""
    _spans[_key(ti)] = UsageSnapshot.take(reset_peak=True)


def finish(ti: Any, state: str) -> None:
    """Stop measuring ``ti`` and write its record."""
    end = UsageSnapshot.take()
    begin = _spans.pop(_key(ti), None)
    if begin is None:
        # Called outside the task's process (e.g. the scheduler failing a
        # task whose process died): nothing was measured, nothing to record.
        return
    usage = begin.delta(end)
    dag_id, task_id, run_id, map_index, try_number = _key(ti)
    record = TaskUsageRecord(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        map_index=map_index,
        try_number=try_number,
        # The host name Airflow recorded for this task instance ([core] hostname_callable), as the UI shows it.
        hostname=getattr(ti, "hostname", None) or socket.gethostname(),
        pid=os.getpid(),
        start=usage.start,
        end=usage.end,
        wall_s=usage.wall_s,
        cpu_user_s=usage.cpu_user_s,
        cpu_sys_s=usage.cpu_sys_s,
        cpu_s=usage.cpu_s,
        peak_rss_bytes=usage.peak_rss_bytes,
        rss_start_bytes=usage.rss_start_bytes,
        peak_scope=usage.peak_scope,
        state=state,
    )
    try:
        get_store().record_task_usage(record)
    except Exception as exc:  # noqa: BLE001 - the listener must never fail a task
        _warn_once(
            "effopt: task usage of %s.%s not recorded, the effopt store is unavailable: %s (check [effopt] store_url)",
            ti.dag_id,
            ti.task_id,
            exc,
        )


def _guard(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the listener must never fail a task
        log.exception("effopt task-usage listener failed; the task is not affected")


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    _guard(start, task_instance)


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    _guard(finish, task_instance, "success")


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    state = getattr(task_instance, "state", None)
    _guard(finish, task_instance, str(getattr(state, "value", state) or "failed"))


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    _guard(finish, task_instance, "skipped")
