"""Store migrations (Alembic): a store of any earlier schema is upgraded in place and keeps every row."""

from __future__ import annotations

import importlib.resources
import multiprocessing
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa

from effopt import migrations
from effopt.store import EffoptStore, RightsizingAuditRecord, TaskUsageRecord, metadata

REPO = Path(__file__).resolve().parents[1]
#: The store's schema as effopt created it before migrations (create_all of the landed store.py, commit 89cbd37).
LEGACY_SCHEMA = """
CREATE TABLE effopt_task_usage (id INTEGER NOT NULL, dag_id VARCHAR(250) NOT NULL, task_id VARCHAR(250) NOT NULL,
  run_id VARCHAR(250) NOT NULL, map_index INTEGER DEFAULT '-1' NOT NULL, try_number INTEGER NOT NULL,
  hostname VARCHAR(250), pid INTEGER, start FLOAT NOT NULL, "end" FLOAT NOT NULL, wall_s FLOAT NOT NULL,
  cpu_user_s FLOAT NOT NULL, cpu_sys_s FLOAT NOT NULL, cpu_s FLOAT NOT NULL, peak_rss_bytes BIGINT NOT NULL,
  rss_start_bytes BIGINT NOT NULL, peak_scope VARCHAR(16) NOT NULL, state VARCHAR(32) NOT NULL, PRIMARY KEY (id),
  CONSTRAINT uq_effopt_task_usage_ti UNIQUE (dag_id, task_id, run_id, map_index, try_number));
CREATE INDEX ix_effopt_task_usage_task ON effopt_task_usage (dag_id, task_id, start);
CREATE TABLE effopt_cache_stats_snapshot (id INTEGER NOT NULL, taken_at FLOAT NOT NULL, counters JSON NOT NULL,
  PRIMARY KEY (id));
CREATE INDEX ix_effopt_cache_stats_snapshot_taken_at ON effopt_cache_stats_snapshot (taken_at);
CREATE TABLE effopt_rightsizing_audit (id INTEGER NOT NULL, applied_at FLOAT NOT NULL, mode VARCHAR(32) NOT NULL,
  kind VARCHAR(64) NOT NULL, namespace VARCHAR(250) NOT NULL, name VARCHAR(250) NOT NULL,
  container VARCHAR(250) NOT NULL, before JSON NOT NULL, after JSON NOT NULL, reason TEXT NOT NULL,
  monthly_cost_delta FLOAT, resource_version VARCHAR(64), PRIMARY KEY (id));
CREATE INDEX ix_effopt_rightsizing_audit_workload ON effopt_rightsizing_audit (kind, namespace, name, applied_at);
CREATE TABLE effopt_waste_report (id INTEGER NOT NULL, period_end FLOAT NOT NULL, summary JSON NOT NULL,
  PRIMARY KEY (id));
CREATE INDEX ix_effopt_waste_report_period_end ON effopt_waste_report (period_end);
CREATE TABLE effopt_report_delivery (id INTEGER NOT NULL, report_key VARCHAR(250) NOT NULL,
  message_id VARCHAR(250) NOT NULL, recipients TEXT NOT NULL, sent_at FLOAT NOT NULL, PRIMARY KEY (id),
  UNIQUE (report_key));
"""


def _usage(i: int) -> TaskUsageRecord:
    return TaskUsageRecord("dag", f"t{i}", "run", -1, 1, "host", 100 + i, 1000.0 + i, 1001.0 + i, 1.0, 0.5, 0.1,
                           0.6, 2**20 * i, 2**19, "span", "success")


def _legacy_store(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_SCHEMA)
    for i in range(50):
        r = _usage(i)
        conn.execute("INSERT INTO effopt_task_usage (dag_id, task_id, run_id, map_index, try_number, hostname, pid, "
                     'start, "end", wall_s, cpu_user_s, cpu_sys_s, cpu_s, peak_rss_bytes, rss_start_bytes, '
                     "peak_scope, state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     (r.dag_id, r.task_id, r.run_id, r.map_index, r.try_number, r.hostname, r.pid, r.start, r.end,
                      r.wall_s, r.cpu_user_s, r.cpu_sys_s, r.cpu_s, r.peak_rss_bytes, r.rss_start_bytes,
                      r.peak_scope, r.state))
    conn.execute("INSERT INTO effopt_rightsizing_audit (applied_at, mode, kind, namespace, name, container, before, "
                 "after, reason) VALUES (5.0, 'patch', 'Deployment', 'ml', 'api', 'main', '{}', '{}', 'why')")
    conn.execute("INSERT INTO effopt_waste_report (period_end, summary) VALUES (7.0, '{\"totals\": {\"waste\": 1}}')")
    conn.execute("INSERT INTO effopt_report_delivery (report_key, message_id, recipients, sent_at) "
                 "VALUES ('waste:2026-11-30:a@b', '<m@x>', 'a@b', 8.0)")
    conn.execute("INSERT INTO effopt_cache_stats_snapshot (taken_at, counters) VALUES (9.0, '{}')")
    conn.commit()
    conn.close()


def test_a_store_made_before_migrations_is_upgraded_and_keeps_every_row(tmp_path):
    path = tmp_path / "effopt.db"
    _legacy_store(path)
    store = EffoptStore(f"sqlite:///{path}")
    before, after = store.upgrade()
    assert (before, after) == ("0001", migrations.HEAD)
    assert [r.task_id for r in store.task_usage()] == [f"t{i}" for i in range(50)]
    assert [r.peak_rss_bytes for r in store.task_usage()] == [2**20 * i for i in range(50)]
    (audit,) = store.rightsizing_audit()
    assert (audit.namespace, audit.name, audit.reason) == ("ml", "api", "why")
    assert store.latest_waste_report(before=1e12) == {"totals": {"waste": 1}}
    assert store.report_delivery("waste:2026-11-30:a@b")["message_id"] == "<m@x>"
    assert store.latest_cache_snapshot(before=1e12) == (9.0, {})
    # the new tables work, and a second upgrade is a no-op
    store.save_rightsizing_plan(10.0, "effopt_rightsizing", "r", "airflow", "effopt", {"summary": "s"})
    assert store.latest_rightsizing_plan()["result"] == {"summary": "s"}
    assert EffoptStore(f"sqlite:///{path}").upgrade() == (migrations.HEAD, migrations.HEAD)
    store.record_task_usage(_usage(99))
    assert len(store.task_usage()) == 51


def test_the_migrations_build_exactly_the_tables_the_store_declares(tmp_path):
    migrated = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrations.upgrade(migrated)
    declared = sa.create_engine(f"sqlite:///{tmp_path / 'd.db'}")
    metadata.create_all(declared)

    def shape(engine: sa.engine.Engine) -> dict:
        insp = sa.inspect(engine)
        return {t: ({c["name"]: (str(c["type"]), c["nullable"]) for c in insp.get_columns(t)},
                    sorted((i["name"], tuple(i["column_names"])) for i in insp.get_indexes(t)))
                for t in insp.get_table_names() if t != migrations.VERSION_TABLE}

    assert shape(migrated) == shape(declared)


def test_head_is_the_newest_revision_of_the_script_directory():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(importlib.resources.files("effopt.migrations")))
    assert script.get_current_head() == migrations.HEAD
    assert [r for r, _ in migrations.REVISION_TABLES] == [s.revision for s in reversed(list(script.walk_revisions()))]


def _upgrade_in_a_process(url: str) -> str:
    return EffoptStore(url).upgrade()[1]


def test_many_processes_upgrading_a_new_store_at_once_all_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        assert pool.map(_upgrade_in_a_process, [url] * 6) == [migrations.HEAD] * 6
    store = EffoptStore(url)
    store.record_rightsizing_audit([RightsizingAuditRecord(1.0, "patch", "Deployment", "a", "b", "c", {}, {}, "r")])
    assert len(store.rightsizing_audit()) == 1


def test_effopt_store_upgrade_command(tmp_path):
    path = tmp_path / "effopt.db"
    _legacy_store(path)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "plugins"), "HOME": str(tmp_path),
           "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__EFFOPT__STORE_URL": f"sqlite:///{path}"}
    import sys

    res = subprocess.run([sys.executable, "-m", "effopt", "store", "upgrade"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"effopt store sqlite:///{path}: upgraded from 0001 to {migrations.HEAD}" in res.stdout
    res = subprocess.run([sys.executable, "-m", "effopt", "store", "upgrade"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert f"already at the newest schema ({migrations.HEAD})" in res.stdout
