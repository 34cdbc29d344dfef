"""Waste operators: detect and price waste (JSON summary to XCom), then email the rendered report once."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

GIB = 1024**3


class WasteDetectionOperator(BaseOperator):
    """Analyse usage for waste and render the report.

    :param source: ``trace`` (files at ``path``), ``prometheus`` (the ``prometheus_conn_id`` connection,
        ``selector`` label matchers, the last ``window_hours``) or ``airflow`` (the task-usage records of
        ``dag_ids``, all DAGs when empty)
    :param path: trace directory laid out like ``alibaba-genai-2026`` (usage files by metric)
    :param memory_limit_gib: memory limit (= request) of each container when the trace gives usage as a
        fraction of it
    :param gpu_model: GPU model of containers with GPU series, priced from the rate table
    :param rate_table: rate table JSON (default ``[effopt] rate_table``, else the bundled one)

    Returns (XCom) ``{"summary": <the report's JSON>, "artifacts": <cache reference>}``; the artifacts
    (HTML, PNG charts, CSV) travel through the computation cache, not XCom.  The report is saved in
    the effopt store, so the next one shows its trend.
    """

    template_fields: Sequence[str] = ("source", "path", "selector", "dag_ids", "window_hours", "prometheus_conn_id",
                                      "memory_limit_gib", "gpu_model", "gpu_count", "rate_table", "pricing",
                                      "recommender", "title")

    def __init__(
        self,
        *,
        source: str = "trace",
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

    def execute(self, context: Any) -> dict[str, Any]:
        from effopt.airflow_settings import get_settings, get_store
        from effopt.cache import CacheKey
        from effopt.hooks.cache import task_cache
        from effopt.prices import load_rate_table
        from effopt.waste import TraceAssumptions, WasteSettings, analyze
        from effopt.waste.render import render_charts, render_html
        from effopt.waste.trace import workloads_from_source

        rates = load_rate_table(self.rate_table or get_settings().rate_table or None)
        assumptions = TraceAssumptions(float(self.memory_limit_gib) * GIB, self.gpu_model, float(self.gpu_count))
        workloads = workloads_from_source(self._metrics_source(), assumptions, what=f"source {self.source!r}")
        from effopt.waste.cost import fleet_daily_costs

        report = analyze(workloads, rates, settings=WasteSettings(recommender=self.recommender, pricing=self.pricing),
                         assumptions=assumptions.describe(), cache_summary=self._cache_summary(),
                         daily_costs={"*": fleet_daily_costs(workloads, rates, pricing=self.pricing)})
        store = get_store()
        now = time.time()
        previous = store.latest_waste_report(before=now)
        summary = report.to_json(previous)
        store.save_waste_report(now, summary)
        start = previous.get("period_end") if previous else None
        charts = render_charts(report, usage=workloads)
        html = render_html(report, charts, title=self.title, period_start=start, period_end=now, previous=previous,
                           templates_dir=get_settings().templates_dir or None)
        artifacts = {"html": html, "charts": charts, "csv": report.to_csv(), "summary": summary, "report": report}
        digest = hashlib.sha256(json.dumps(summary, sort_keys=True, default=str).encode()).hexdigest()
        cache = task_cache("effopt_reports")
        key = CacheKey("effopt_reports", "waste_report", "v1", digest)
        nbytes = cache.put(key, artifacts, ttl=30 * 86400)
        if not nbytes:
            raise RuntimeError("the rendered report could not be stored in the computation cache (see the log)")
        t = summary["totals"]
        self.log.info("waste report: %d findings, monthly cost %.2f USD, waste %.2f USD", t["findings"], t["cost"],
                      t["waste"])
        return {"summary": summary, "artifacts": cache.reference(key, nbytes)}


    def _metrics_source(self) -> Any:
        from effopt.hooks.metrics import metrics_source

        return metrics_source(self.source, path=self.path, prometheus_conn_id=self.prometheus_conn_id,
                              selector=self.selector, window_hours=self.window_hours, dag_ids=self.dag_ids)

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

    :param report: the :class:`WasteDetectionOperator` XCom (templated, e.g. ``detect.output``)
    :param recipients: addresses (list or comma-separated)
    :param period_key: identifies the report period (default: the DAG run's data interval end or run id);
        once the server accepted a message for it, a retried or re-run task does not send again
    """

    template_fields: Sequence[str] = ("report", "recipients", "subject", "period_key", "smtp_conn_id")

    def __init__(
        self,
        *,
        report: Any,
        recipients: Any,
        subject: str = "effopt waste report",
        period_key: str = "",
        smtp_conn_id: str = "smtp_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.report = report
        self.recipients = recipients
        self.subject = subject
        self.period_key = period_key
        self.smtp_conn_id = smtp_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        from effopt.airflow_settings import get_store
        from effopt.hooks.cache import task_cache
        from effopt.waste.render import build_message

        recipients = _addresses(self.recipients)
        if not recipients:
            raise ValueError("recipients is empty: give at least one address (DAG param 'recipients')")
        period = self.period_key or context["run_id"]
        key = f"waste:{period}:{','.join(sorted(recipients))}"
        store = get_store()
        sent = store.report_delivery(key)
        if sent is not None:
            self.log.info("waste report for %s was already accepted by the SMTP server (%s); not sending again",
                          period, sent["message_id"])
            return {"sent": False, "already_sent": True, "message_id": sent["message_id"]}

        artifacts = task_cache("effopt_reports").resolve(self.report["artifacts"])
        message_id = f"effopt-waste-{hashlib.sha256(key.encode()).hexdigest()[:24]}@effopt"
        with SmtpHook(smtp_conn_id=self.smtp_conn_id) as hook:
            sender = hook.from_email
            if not sender:
                raise ValueError(f"connection {self.smtp_conn_id!r} has no from_email extra: set the sender there")
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
        self.log.info("waste report for %s sent to %s (%s)", period, ", ".join(recipients), message_id)
        return {"sent": True, "already_sent": False, "message_id": message_id, "recipients": recipients}


def _addresses(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return [a.strip() for a in value or [] if a and a.strip()]
