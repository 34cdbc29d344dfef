"""The effopt_maintenance DAG's work: graph values past their retention leave object storage."""

from __future__ import annotations

from typing import Any

from airflow.sdk import ObjectStoragePath

from effopt.graph.naming import DAG_ID_PREFIX
from effopt.hooks.graph_values import default_storage_base


def prune_graph_values(retention_days: float | None = None, *, dry_run: bool = False,
                       base: str | None = None) -> dict[str, Any]:
    """Remove graph DAG runs' values older than ``retention_days`` (default ``[effopt] graph_retention_days``)
    from ``base`` (default ``[effopt] graph_storage``); the report as a dict (see
    :func:`effopt.graph.retention.prune_runs`).  0 days keeps everything."""
    import logging
    import time

    from effopt.airflow_settings import get_settings
    from effopt.graph.retention import RetentionReport, prune_runs

    log = logging.getLogger(__name__)
    days = get_settings().graph_retention_days if retention_days is None else float(retention_days)
    if not days >= 0:
        raise ValueError(f"graph retention must be a number of days >= 0, got {retention_days!r}")
    where = base or default_storage_base()
    if days == 0:
        log.info("effopt: graph value retention is off ([effopt] graph_retention_days = 0): nothing removed")
        off = RetentionReport(cutoff=0.0, dry_run=dry_run).as_dict()
        return {"storage": where, "retention_days": 0.0, **off, "skipped": "retention is off"}
    report = prune_runs(ObjectStoragePath(where), older_than=time.time() - days * 86400.0, dag_prefix=DAG_ID_PREFIX,
                        dry_run=dry_run, progress=log.info)
    for error in report.errors:
        log.warning("effopt: could not remove %s", error)
    log.info("effopt: %s %d of %d graph run(s) older than %g day(s) from %s: %d file(s), %.1f MiB",
             "would remove" if dry_run else "removed", len(report.removed), report.runs_seen, days, where,
             report.files_removed, report.bytes_removed / 2**20)
    return {"storage": where, "retention_days": days, **report.as_dict()}
