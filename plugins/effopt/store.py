"""The effopt store: effopt's own tables, kept apart from Airflow's metadata DB.

SQLAlchemy Core, so the same code runs on the embedded SQLite file (the
default, under ``AIRFLOW_HOME``) and on Postgres in a scaled-out deployment.
Plain Python: no Airflow import.

Later capabilities add their tables to :data:`metadata`; :meth:`EffoptStore.ensure_schema`
creates whatever is missing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

metadata = sa.MetaData()

task_usage = sa.Table(
    "effopt_task_usage",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("task_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("map_index", sa.Integer, nullable=False, server_default="-1"),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("hostname", sa.String(250)),
    sa.Column("pid", sa.Integer),
    sa.Column("start", sa.Float, nullable=False),  # epoch seconds
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("wall_s", sa.Float, nullable=False),
    sa.Column("cpu_user_s", sa.Float, nullable=False),
    sa.Column("cpu_sys_s", sa.Float, nullable=False),
    sa.Column("cpu_s", sa.Float, nullable=False),
    sa.Column("peak_rss_bytes", sa.BigInteger, nullable=False),
    sa.Column("rss_start_bytes", sa.BigInteger, nullable=False),
    sa.Column("peak_scope", sa.String(16), nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.UniqueConstraint("dag_id", "task_id", "run_id", "map_index", "try_number", name="uq_effopt_task_usage_ti"),
    sa.Index("ix_effopt_task_usage_task", "dag_id", "task_id", "start"),
)


# Snapshots of the cache's cumulative counters, one JSON document per report,
# so each report covers the period since the previous one.
cache_stats_snapshots = sa.Table(
    "effopt_cache_stats_snapshot",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("taken_at", sa.Float, nullable=False, index=True),  # epoch seconds
    sa.Column("counters", sa.JSON, nullable=False),
)

# One row per resource change effopt applied (Kubernetes patch or Airflow task
# resources): what changed, from what to what, why, and when.  The right-sizing
# cooldown and the Airflow task policy read it.
rightsizing_audit = sa.Table(
    "effopt_rightsizing_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("applied_at", sa.Float, nullable=False),  # epoch seconds
    sa.Column("mode", sa.String(32), nullable=False),  # patch | airflow_task
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("namespace", sa.String(250), nullable=False),
    sa.Column("name", sa.String(250), nullable=False),
    sa.Column("container", sa.String(250), nullable=False),
    sa.Column("before", sa.JSON, nullable=False),
    sa.Column("after", sa.JSON, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("monthly_cost_delta", sa.Float),  # None when a price was missing
    sa.Column("resource_version", sa.String(64)),
    sa.Index("ix_effopt_rightsizing_audit_workload", "kind", "namespace", "name", "applied_at"),
)


@dataclass(frozen=True)
class RightsizingAuditRecord:
    applied_at: float
    mode: str
    kind: str
    namespace: str
    name: str
    container: str
    before: dict[str, Any]
    after: dict[str, Any]
    reason: str
    monthly_cost_delta: float | None = None
    resource_version: str | None = None


# Waste reports (JSON), so each report can show its trend against the previous one.
waste_reports = sa.Table(
    "effopt_waste_report",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("period_end", sa.Float, nullable=False, index=True),  # epoch seconds
    sa.Column("summary", sa.JSON, nullable=False),
)

# Emailed reports accepted by the SMTP server: a retried task does not send twice.
report_deliveries = sa.Table(
    "effopt_report_delivery",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("report_key", sa.String(250), nullable=False, unique=True),
    sa.Column("message_id", sa.String(250), nullable=False),
    sa.Column("recipients", sa.Text, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
)

# The latest right-sizing plans (recommendations, planned changes and their money), for the effopt page.
rightsizing_plans = sa.Table(
    "effopt_rightsizing_plan",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False, index=True),  # epoch seconds
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("recommender", sa.String(64), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),  # RightsizingResult.to_dict()
)

# Rendered reports (the waste report's HTML, charts inline) and how their delivery went, for the effopt page.
rendered_reports = sa.Table(
    "effopt_rendered_report",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),  # waste
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("html", sa.Text, nullable=False),
    sa.Column("delivery", sa.JSON),  # {"status": "sent" | "not_sent" | "failed", "detail": ..., "at": ...}
    sa.Index("ix_effopt_rendered_report_kind", "kind", "created_at"),
)
#: Rendered reports kept per kind (older ones lose their HTML row; their summaries stay in effopt_waste_report).
RENDERED_REPORTS_KEPT = 20

#: Postgres advisory lock taken while creating the schema (any fixed 64-bit number, here "effopt" in ASCII).
_SCHEMA_LOCK_KEY = int.from_bytes(b"effopt", "big")

_TI_KEY_COLUMNS = ("dag_id", "task_id", "run_id", "map_index", "try_number")
_USAGE_COLUMNS = [c.name for c in task_usage.columns if c.name != "id"]
# One portable statement (SQLite >= 3.24 and Postgres): a retried write of the
# same try replaces the row.  Plain text with named parameters, which both
# SQLAlchemy and the sqlite3 module accept, so a fresh task process does not
# pay for compiling a Core construct.
_quoted = [f'"{c}"' for c in _USAGE_COLUMNS]
_UPSERT_TASK_USAGE_SQL = (
    f"INSERT INTO {task_usage.name} ({', '.join(_quoted)}) "
    f"VALUES ({', '.join(':' + c for c in _USAGE_COLUMNS)}) "
    f"ON CONFLICT ({', '.join(_TI_KEY_COLUMNS)}) DO UPDATE SET "
    + ", ".join(f"{q} = excluded.{q}" for c, q in zip(_USAGE_COLUMNS, _quoted, strict=True) if c not in _TI_KEY_COLUMNS)
)
_UPSERT_TASK_USAGE = sa.text(_UPSERT_TASK_USAGE_SQL)


@dataclass(frozen=True)
class TaskUsageRecord:
    dag_id: str
    task_id: str
    run_id: str
    map_index: int
    try_number: int
    hostname: str
    pid: int
    start: float
    end: float
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    cpu_s: float
    peak_rss_bytes: int
    rss_start_bytes: int
    peak_scope: str
    state: str


class StoreUnavailable(RuntimeError):
    """The effopt store cannot be reached or written."""


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's one-line reason, without SQLAlchemy's statement dump and help link."""
    orig = getattr(exc, "orig", None)
    return f"{type(orig).__name__}: {orig}" if orig is not None else str(exc).splitlines()[0]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, timeout_s: float = 10.0) -> None:
    cur = dbapi_conn.cursor()
    # busy_timeout makes concurrent writers queue instead of failing with
    # "database is locked" (WAL itself is set once, with the schema: it persists).
    cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    # With WAL, NORMAL never corrupts the file and skips an fsync per commit
    # (~2 ms of every task's write); a power cut may lose the last records.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_file(url: sa.engine.URL) -> str | None:
    """The database file of a plain ``sqlite:///PATH`` URL (no driver, no query options), else None."""
    if url.drivername != "sqlite" or url.query or not url.database or url.database == ":memory:":
        return None
    return url.database


def _absolute(url: sa.engine.URL) -> sa.engine.URL:
    """``url`` with a relative SQLite file made absolute now (a task may change directory later)."""
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:") and not os.path.isabs(url.database):
        return url.set(database=os.path.abspath(url.database))
    return url


class EffoptStore:
    """Access to the effopt tables at ``url``.

    The SQLAlchemy engine is made on first use: a task process that only
    records its usage in the embedded SQLite file writes through the
    ``sqlite3`` module directly (:meth:`record_task_usage`), which keeps the
    task-usage listener's cost per task at about half of what the engine's
    first connection costs in a fresh process.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self._connect_timeout_s = connect_timeout_s
        self._url = _absolute(sa.engine.make_url(url))
        self._sqlite_path = _sqlite_file(self._url)
        self._schema_ready = False
        self._lock = threading.Lock()
        self._engine: sa.engine.Engine | None = None
        self._engine_lock = threading.Lock()

    @property
    def engine(self) -> sa.engine.Engine:
        """The SQLAlchemy engine, made on first use (once, whatever the threads)."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = self._make_engine()
        return self._engine

    def _make_engine(self) -> sa.engine.Engine:
        url, timeout = self.url, self._connect_timeout_s
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": timeout}
            # One task process writes a handful of rows: no pool to keep.
            kwargs["poolclass"] = sa.pool.NullPool
        else:
            kwargs["pool_pre_ping"] = True
            if url.startswith("postgresql"):
                kwargs["connect_args"] = {"connect_timeout": int(timeout)}
        engine = sa.create_engine(self._url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(engine, "connect", lambda conn, record: _sqlite_pragmas(conn, record, timeout))
        return engine

    def ensure_schema(self) -> None:
        with self._lock:
            if self._schema_ready:
                return
            try:
                if self.engine.url.get_backend_name() == "sqlite":
                    # WAL lets task processes write while the UI and the CLI read.
                    with self.engine.connect() as conn:
                        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                if self.engine.url.get_backend_name() == "postgresql":
                    # Tasks on several workers may create the schema at once: one at a time (a transaction-
                    # scoped advisory lock), each after the first finding every table there.
                    with self.engine.begin() as conn:
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
                        metadata.create_all(conn, checkfirst=True)
                else:
                    # Another process may create a table between our check and our CREATE (a fresh SQLite
                    # file, many tasks starting at once): check again; each round finds one more table made.
                    for attempt in range(len(metadata.tables) + 1):
                        try:
                            metadata.create_all(self.engine, checkfirst=True)
                            break
                        except sa.exc.OperationalError as exc:
                            if "already exists" not in str(exc) or attempt == len(metadata.tables):
                                raise
            except sa.exc.SQLAlchemyError as exc:
                raise StoreUnavailable(f"effopt store {self._safe_url()} is unavailable: {_reason(exc)}") from exc
            self._schema_ready = True

    def _safe_url(self) -> str:
        return self._url.render_as_string(hide_password=True)

    def _absent(self) -> bool:
        """An embedded SQLite file that does not exist yet: nothing is recorded, and a read must not create it."""
        return self._sqlite_path is not None and not os.path.exists(self._sqlite_path)

    # -- task usage -------------------------------------------------------
    def record_task_usage(self, record: TaskUsageRecord) -> None:
        """Insert or replace the record of one task-instance try (idempotent).

        Every task process writes one record, so the write goes straight to the
        table and creates the schema only when the table is missing.  On a plain
        SQLite file it goes through the ``sqlite3`` module (same statement, same
        pragmas as the engine's connections), not through the engine.
        """
        row = asdict(record)
        if self._sqlite_path is not None:
            path = self._sqlite_path

            def write() -> None:
                conn = sqlite3.connect(path, timeout=self._connect_timeout_s, isolation_level=None)
                try:
                    _sqlite_pragmas(conn, None, self._connect_timeout_s)
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(_UPSERT_TASK_USAGE_SQL, row)
                    conn.execute("COMMIT")
                finally:
                    conn.close()  # rolls back a transaction a failed statement left open

            self._write_creating_schema(write, missing=sqlite3.OperationalError, failed=sqlite3.Error,
                                        reason=lambda exc: f"{type(exc).__name__}: {exc}")
            return

        def write_engine() -> None:
            with self.engine.begin() as conn:
                conn.execute(_UPSERT_TASK_USAGE, row)

        self._write_creating_schema(write_engine, missing=(sa.exc.OperationalError, sa.exc.ProgrammingError),
                                    failed=sa.exc.SQLAlchemyError, reason=_reason)

    def _write_creating_schema(self, write: Callable[[], None], *, missing: Any, failed: Any,
                               reason: Callable[[BaseException], str]) -> None:
        """Run ``write``; when it raises ``missing`` before the schema is known to exist, create the schema
        (or raise why it can't be) and write again.  ``failed`` errors become :class:`StoreUnavailable`."""
        try:
            try:
                write()
            except missing as exc:
                # Only a missing table means "create the schema"; a locked file is a failure now, not a second
                # wait of connect_timeout_s on the schema's connection.
                if self._schema_ready or "no such table" not in str(exc) and "does not exist" not in str(exc):
                    raise
                self.ensure_schema()
                write()
        except failed as exc:
            raise StoreUnavailable(f"effopt store {self._safe_url()} could not be written: {reason(exc)}") from exc

    def task_usage(
        self,
        dag_id: str | None = None,
        task_id: str | None = None,
        run_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[TaskUsageRecord]:
        """Records, oldest first, filtered by any of the arguments."""
        if self._absent():
            return []
        self.ensure_schema()
        q = sa.select(task_usage).order_by(task_usage.c.start, task_usage.c.id)
        for col, value in (("dag_id", dag_id), ("task_id", task_id), ("run_id", run_id)):
            if value is not None:
                q = q.where(task_usage.c[col] == value)
        if since is not None:
            q = q.where(task_usage.c.start >= since)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows: Iterable[Mapping[str, Any]] = conn.execute(q).mappings().all()
        fields = TaskUsageRecord.__dataclass_fields__
        return [TaskUsageRecord(**{k: r[k] for k in fields}) for r in rows]

    # -- cache statistics snapshots ----------------------------------------------
    def save_cache_snapshot(self, taken_at: float, counters: Mapping[str, Any]) -> None:
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(cache_stats_snapshots).values(taken_at=taken_at, counters=dict(counters)))

    def latest_cache_snapshot(self, before: float) -> tuple[float, dict[str, Any]] | None:
        """The newest snapshot taken before ``before``: (taken_at, counters)."""
        if self._absent():
            return None
        self.ensure_schema()
        q = (
            sa.select(cache_stats_snapshots.c.taken_at, cache_stats_snapshots.c.counters)
            .where(cache_stats_snapshots.c.taken_at < before)
            .order_by(cache_stats_snapshots.c.taken_at.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return (row[0], row[1]) if row else None

    # -- right-sizing audit ------------------------------------------------------
    def record_rightsizing_audit(self, records: Iterable[RightsizingAuditRecord]) -> int:
        """Insert audit records in one transaction; returns how many were written."""
        rows = [asdict(r) for r in records]
        if not rows:
            return 0
        self.ensure_schema()
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(rightsizing_audit), rows)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(f"effopt store {self._safe_url()} could not be written: {_reason(exc)}") from exc
        return len(rows)

    def rightsizing_audit(
        self,
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        mode: str | None = None,
        since: float | None = None,
    ) -> list[RightsizingAuditRecord]:
        """Audit records, oldest first, filtered by any of the arguments."""
        if self._absent():
            return []
        self.ensure_schema()
        q = sa.select(rightsizing_audit).order_by(rightsizing_audit.c.applied_at, rightsizing_audit.c.id)
        for col, value in (("kind", kind), ("namespace", namespace), ("name", name), ("mode", mode)):
            if value is not None:
                q = q.where(rightsizing_audit.c[col] == value)
        if since is not None:
            q = q.where(rightsizing_audit.c.applied_at >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(q).mappings().all()
        fields = RightsizingAuditRecord.__dataclass_fields__
        return [RightsizingAuditRecord(**{k: r[k] for k in fields}) for r in rows]

    def last_rightsizing_apply(self, kind: str, namespace: str, name: str) -> float | None:
        """When effopt last changed this workload (epoch seconds), or None."""
        if self._absent():
            return None
        self.ensure_schema()
        q = sa.select(sa.func.max(rightsizing_audit.c.applied_at)).where(
            rightsizing_audit.c.kind == kind, rightsizing_audit.c.namespace == namespace,
            rightsizing_audit.c.name == name)
        with self.engine.connect() as conn:
            return conn.execute(q).scalar()

    # -- waste reports and their delivery ---------------------------------------
    def save_waste_report(self, period_end: float, summary: Mapping[str, Any]) -> None:
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(waste_reports).values(period_end=period_end, summary=dict(summary)))

    def latest_waste_report(self, before: float) -> dict[str, Any] | None:
        """The newest saved report whose period ended before ``before``."""
        if self._absent():
            return None
        self.ensure_schema()
        q = (sa.select(waste_reports.c.summary).where(waste_reports.c.period_end < before)
             .order_by(waste_reports.c.period_end.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return dict(row[0]) if row else None

    def report_delivery(self, report_key: str) -> dict[str, Any] | None:
        """The delivery of ``report_key`` if the SMTP server accepted it, else None."""
        if self._absent():
            return None
        self.ensure_schema()
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(report_deliveries).where(report_deliveries.c.report_key == report_key)).first()
        return dict(row._mapping) if row else None

    def record_report_delivery(self, report_key: str, message_id: str, recipients: str, sent_at: float) -> None:
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(report_deliveries).values(report_key=report_key, message_id=message_id,
                                                              recipients=recipients, sent_at=sent_at))

    # -- right-sizing plans ---------------------------------------------------------
    def save_rightsizing_plan(self, created_at: float, dag_id: str, run_id: str, source: str, recommender: str,
                              result: Mapping[str, Any]) -> None:
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(sa.insert(rightsizing_plans).values(created_at=created_at, dag_id=dag_id, run_id=run_id,
                                                             source=source, recommender=recommender,
                                                             result=dict(result)))

    def latest_rightsizing_plan(self, dag_id: str | None = None) -> dict[str, Any] | None:
        """The newest saved plan (of ``dag_id``): its row as a dict, ``result`` included."""
        if self._absent():
            return None
        self.ensure_schema()
        q = sa.select(rightsizing_plans).order_by(rightsizing_plans.c.created_at.desc(),
                                                  rightsizing_plans.c.id.desc()).limit(1)
        if dag_id is not None:
            q = q.where(rightsizing_plans.c.dag_id == dag_id)
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    # -- rendered reports -------------------------------------------------------------
    def save_rendered_report(self, kind: str, created_at: float, dag_id: str, run_id: str,
                             summary: Mapping[str, Any], html: str) -> int:
        """Store a rendered report; returns its id.  Only the newest :data:`RENDERED_REPORTS_KEPT` per kind stay."""
        self.ensure_schema()
        t = rendered_reports
        with self.engine.begin() as conn:
            report_id = conn.execute(sa.insert(t).values(kind=kind, created_at=created_at, dag_id=dag_id,
                                                         run_id=run_id, summary=dict(summary), html=html)
                                     ).inserted_primary_key[0]
            keep = sa.select(t.c.id).where(t.c.kind == kind).order_by(t.c.id.desc()).limit(RENDERED_REPORTS_KEPT)
            conn.execute(sa.delete(t).where(t.c.kind == kind, t.c.id.not_in(keep.scalar_subquery())))
        return int(report_id)

    def set_report_delivery(self, report_id: int, delivery: Mapping[str, Any]) -> None:
        self.ensure_schema()
        with self.engine.begin() as conn:
            conn.execute(sa.update(rendered_reports).where(rendered_reports.c.id == report_id)
                         .values(delivery=dict(delivery)))

    def rendered_report(self, report_id: int | None = None, kind: str = "waste", *, html: bool = True
                        ) -> dict[str, Any] | None:
        """One rendered report (the newest of ``kind`` when ``report_id`` is None); ``html=False`` leaves the
        HTML out (for listings)."""
        if self._absent():
            return None
        self.ensure_schema()
        t = rendered_reports
        cols = [c for c in t.columns if html or c.name != "html"]
        q = sa.select(*cols)
        q = q.where(t.c.id == report_id) if report_id is not None else (
            q.where(t.c.kind == kind).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        return dict(row) if row else None

    def dispose(self) -> None:
        if self._engine is not None:  # made on first use
            self._engine.dispose()
