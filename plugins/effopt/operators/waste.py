"""Waste operators: detect and price waste (JSON summary to XCom), then email the rendered report once."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from effopt.operators.errors import fail_fast
from effopt.units import GIB


class WasteDetectionOperator(BaseOperator):
    """Analyse usage for waste and render the report.

    :param source: ``auto`` (default: ``prometheus`` when its connection is defined, else ``airflow``),
        ``trace`` (files at ``path``), ``prometheus`` (the ``prometheus_conn_id`` connection,
        ``selector`` label matchers, the last ``window_hours``) or ``airflow`` (the task-usage records of
        ``dag_ids``, all DAGs when empty)
    :param path: trace directory laid out like ``alibaba-genai-2026`` (usage files by metric)
    :param memory_limit_gib: memory limit (= request) of each container when the trace gives usage as a
        fraction of it
    :param gpu_model: GPU model of containers with GPU series, priced from the rate table
    :param rate_table: rate table JSON (default ``[effopt] rate_table``, else the bundled one)

    Returns (XCom) ``{"summary": <the report's JSON>, "artifacts": <cache reference>, "report_id": n,
    "page": "/effopt/reports/waste/<n>"}``; the artifacts (HTML, PNG charts, CSV) travel through the
    computation cache, not XCom.  The summary is saved in the effopt store, so the next report shows its
    trend, and the rendered report too, so the effopt page shows it.
    """

    template_fields: Sequence[str] = ("source", "path", "selector", "dag_ids", "window_hours", "prometheus_conn_id",
                                      "memory_limit_gib", "gpu_model", "gpu_count", "rate_table", "pricing",
                                      "recommender", "title")

    def __init__(
        self,
        *,
        source: str = "auto",
        path: str = "",
        selector: str = "",
        dag_ids: Sequence[str] | None = None,
        window_hours: float = 7 * 24,
        prometheus_conn_id: str = "",
        memory_limit_gib: float = 16.0,
        gpu_model: str = "A100",
        gpu_count: float = 1.0,
        rate_table: str = "",
        pricing: str = "on_demand",
        recommender: str = "krr",
        title: str = "effopt waste report",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.path = path
        self.selector = selector
        self.dag_ids = dag_ids
        self.window_hours = window_hours
        self.prometheus_conn_id = prometheus_conn_id
        self.memory_limit_gib = memory_limit_gib
        self.gpu_model = gpu_model
        self.gpu_count = gpu_count
        self.rate_table = rate_table
        self.pricing = pricing
        self.recommender = recommender
        self.title = title

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.hooks.metrics import metrics_source, resolve_source
        from effopt.prices import load_rate_table
        from effopt.waste import TraceAssumptions, WasteSettings
        from effopt.waste.service import build_report
        from effopt.waste.trace import workloads_from_source

        settings = get_settings()
        rates = load_rate_table(self.rate_table or settings.rate_table or None)
        assumptions = TraceAssumptions(float(self.memory_limit_gib) * GIB, self.gpu_model, float(self.gpu_count))
        source_name, why = resolve_source(self.source, self.prometheus_conn_id, self.path or "")
        self.log.info("%s", why)
        source = metrics_source(source_name, path=self.path, prometheus_conn_id=self.prometheus_conn_id,
                                selector=self.selector, window_hours=self.window_hours, dag_ids=self.dag_ids)
        workloads = workloads_from_source(source, assumptions, what=f"source {source_name!r}")
        for issue in source.issues():
            self.log.warning("data quality: %s", issue)
        store = get_store()
        now = time.time()
        previous = store.latest_waste_report(before=now)
        rendered = build_report(
            workloads, rates, settings=WasteSettings(recommender=self.recommender, pricing=self.pricing),
            assumptions=assumptions.describe(), cache_summary=self._cache_summary(), previous=previous,
            title=self.title, templates_dir=settings.templates_dir or None,
            period_start=previous.get("period_end") if previous else None, period_end=now,
            source_issues=source.issues(), **self._spot_inputs(source_name, store),
        )
        summary = {**rendered.summary, "period_end": now, "source": source_name}
        store.save_waste_report(now, summary)
        report_id = store.save_rendered_report("waste", now, self.dag_id, context.get("run_id", ""), summary,
                                               rendered.html_page)
        artifacts = {"html": rendered.html_email, "charts": rendered.charts, "csv": rendered.csv,
                     "summary": summary, "report": rendered.report}
        reference = self._store_artifacts(artifacts, summary)
        t = summary["totals"]
        if summary["data_quality"]["headline"]:
            self.log.warning("data quality: %s", summary["data_quality"]["headline"])
        self.log.info("waste report %d: %d findings, monthly cost %s USD, waste %s USD (%s); on the effopt "
                      "page at /effopt/reports/waste/%d", report_id, t["findings"], t["cost"], t["waste"],
                      summary["window"], report_id)
        return {"summary": summary, "artifacts": reference, "report_id": report_id,
                "page": f"/effopt/reports/waste/{report_id}"}

    def _spot_inputs(self, source_name: str, store: Any) -> dict[str, Any]:
        """DAG tasks as spot jobs, and the spot catalog to price them (the task-usage source only)."""
        if source_name != "airflow":
            return {}
        import dataclasses

        from effopt.spot import JobSpec, catalog_for
        from effopt.waste.detectors import spot_jobs_from_usage

        since = time.time() - float(self.window_hours) * 3600
        records = [r for d in (self.dag_ids or [None]) for r in store.task_usage(dag_id=d, since=since)]
        # Tasks shorter than a changeover are no spot candidates (could_run_on_spot): no deadline to read for them.
        jobs = [j for j in spot_jobs_from_usage(records) if j.hours >= JobSpec.changeover_hours]
        if not jobs:
            return {}
        deadlines = self._deadlines({(j.labels or {})["dag_id"] for j in jobs})
        jobs = [dataclasses.replace(j, deadline_hours=deadlines.get(j.workload)) for j in jobs]
        return {"spot_jobs": jobs, "spot_catalog": catalog_for("snapshot")}

    def _deadlines(self, dag_ids: set[str]) -> dict[str, float]:
        """``dag_id/task_id`` -> hours of each task's ``execution_timeout``, read over the Airflow REST API; without
        the API (no connection, unreachable) no deadline is known, and the log says so."""
        from effopt.hooks.airflow_api import AirflowApiHook

        out: dict[str, float] = {}
        try:
            api = AirflowApiHook()
            for dag_id in sorted(dag_ids):
                for t in (api.request("GET", f"/api/v2/dags/{dag_id}/tasks") or {}).get("tasks", []):
                    timeout = t.get("execution_timeout")
                    if isinstance(timeout, dict):
                        seconds = (timeout.get("days", 0) * 86400 + timeout.get("seconds", 0)
                                   + timeout.get("microseconds", 0) / 1e6)
                        if seconds > 0:
                            out[f"{dag_id}/{t['task_id']}"] = seconds / 3600
        except Exception as exc:  # noqa: BLE001 - the report goes on without deadlines, and says why
            self.log.warning("task deadlines (execution_timeout) not read over the REST API, spot findings assume "
                             "none: %s", exc)
        return out

    def _store_artifacts(self, artifacts: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
        """The rendered artifacts (HTML, PNG charts, CSV) travel through the computation cache, not XCom."""
        from effopt.cache import CacheKey
        from effopt.hooks.cache import task_cache

        digest = hashlib.sha256(json.dumps(summary, sort_keys=True, default=str).encode()).hexdigest()
        cache = task_cache("effopt_reports")
        key = CacheKey("effopt_reports", "waste_report", "v1", digest)
        nbytes = cache.put(key, artifacts, ttl=30 * 86400)
        if not nbytes:
            raise RuntimeError("the rendered report could not be stored in the computation cache (see the log)")
        return cache.reference(key, nbytes)

    def _cache_summary(self) -> dict[str, Any] | None:
        """The computation cache's statistics for the cache-inefficiency findings; None when unavailable."""
        try:
            from effopt.cache.report import summarize
            from effopt.hooks.cache import CacheHook

            return summarize(CacheHook().get_backend().read_stats(None))
        except Exception as exc:  # noqa: BLE001 - the report goes on without cache findings, and says why
            self.log.warning("computation-cache statistics unavailable, no cache findings this time: %s", exc)
            return None


class WasteReportEmailOperator(BaseOperator):
    """Email a rendered waste report through the SMTP provider, once per report period.

    The report is mailed only when there are recipients (``recipients``, else ``[effopt] report_recipients``)
    and the SMTP connection exists; otherwise the task succeeds, says in its log and XCom what to set, and
    the report stays on the effopt page.  Either way the delivery status is recorded with the report.

    :param report: the :class:`WasteDetectionOperator` XCom (templated, e.g. ``detect.output``)
    :param recipients: addresses (list or comma-separated)
    :param period_key: identifies the report period (default: the DAG run id); once the server accepted a
        message for it, a retried or re-run task does not send again
    :param smtp_conn_id: default ``[effopt] smtp_conn_id`` (``smtp_default``)
    """

    template_fields: Sequence[str] = ("report", "recipients", "subject", "period_key", "smtp_conn_id")

    def __init__(
        self,
        *,
        report: Any,
        recipients: Any,
        subject: str = "effopt waste report",
        period_key: str = "",
        smtp_conn_id: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.report = report
        self.recipients = recipients
        self.subject = subject
        self.period_key = period_key
        self.smtp_conn_id = smtp_conn_id

    @fail_fast
    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.hooks.metrics import connection_defined
        from effopt.operators.errors import connection_env

        settings = get_settings()
        store = get_store()
        report_id = self.report.get("report_id")
        conn_id = self.smtp_conn_id or settings.smtp_conn_id
        recipients = _addresses(self.recipients) or _addresses(settings.report_recipients)
        why_not = None
        if not recipients:
            why_not = ("no recipients: give the DAG param 'recipients' (a list of addresses) or set [effopt] "
                       "report_recipients (AIRFLOW__EFFOPT__REPORT_RECIPIENTS=a@example.com,b@example.com)")
        elif not connection_defined(conn_id):
            why_not = (f"connection {conn_id!r} is not defined: set {connection_env(conn_id)}="
                       "'{\"conn_type\": \"smtp\", \"host\": \"smtp.example.com\", \"port\": 587, \"login\": \"...\", "
                       "\"password\": \"...\", \"extra\": {\"from_email\": \"effopt@example.com\"}}' or add it "
                       "under Admin > Connections")
        if why_not is not None:
            self.log.warning("waste report not mailed: %s. It is on the effopt page at %s", why_not,
                             self.report.get("page", "/effopt/"))
            self._record(store, report_id, "not_sent", why_not)
            return {"sent": False, "already_sent": False, "reason": why_not, "page": self.report.get("page")}
        try:
            return self._send(context, store, report_id, conn_id, recipients)
        except Exception as exc:  # noqa: BLE001 - recorded for the page, then raised for Airflow to retry or fail
            self._record(store, report_id, "failed", f"{type(exc).__name__}: {exc}")
            raise

    def _record(self, store: Any, report_id: int | None, status: str, detail: str, **extra: Any) -> None:
        if report_id is not None:
            store.set_report_delivery(int(report_id), {"status": status, "detail": detail, "at": time.time(),
                                                       **extra})

    def _send(self, context: Any, store: Any, report_id: int | None, conn_id: str,
              recipients: list[str]) -> dict[str, Any]:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        from effopt.hooks.cache import task_cache
        from effopt.waste.render import build_message

        period = self.period_key or context.get("run_id", "")
        key = f"waste:{period}:{','.join(sorted(recipients))}"
        sent = store.report_delivery(key)
        if sent is not None:
            self.log.info("waste report for %s was already accepted by the SMTP server (%s); not sending again",
                          period, sent["message_id"])
            return {"sent": False, "already_sent": True, "message_id": sent["message_id"]}

        artifacts = task_cache("effopt_reports").resolve(self.report["artifacts"])
        message_id = f"effopt-waste-{hashlib.sha256(key.encode()).hexdigest()[:24]}@effopt"
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            sender = hook.from_email
            if not sender:
                raise ValueError(f"connection {conn_id!r} has no from_email extra: set the sender there")
            message = build_message(artifacts["report"], subject=self.subject, sender=sender, recipients=recipients,
                                    html=artifacts["html"], charts=artifacts["charts"], csv_text=artifacts["csv"],
                                    message_id=message_id)
            # The provider's send_email_smtp attaches files as application/octet-stream; the report's
            # charts must be inline images of a multipart/related part, so the hook's connection
            # (TLS, login, timeouts as the connection says) sends the message built here.
            client = hook.get_conn()._smtp_client
            client.send_message(message, from_addr=sender, to_addrs=recipients)
        # Only now, after the server accepted the message: a failure above leaves no "sent" record.
        store.record_report_delivery(key, message_id, ",".join(recipients), time.time())
        self._record(store, report_id, "sent", f"to {', '.join(recipients)}", message_id=message_id)
        self.log.info("waste report for %s sent to %s (%s)", period, ", ".join(recipients), message_id)
        return {"sent": True, "already_sent": False, "message_id": message_id, "recipients": recipients}


def _addresses(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return [a.strip() for a in value or [] if a and a.strip()]
