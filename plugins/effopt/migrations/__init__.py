"""Schema migrations of the effopt store, with Alembic (as Airflow migrates its own database).

:func:`upgrade` brings a store to the newest schema, safely when several
processes try at once (a file lock beside an SQLite store, an advisory lock on
Postgres).  It runs on its own when effopt first uses a store whose schema is
behind, and from ``effopt store upgrade``.  A store made before migrations
existed (tables, no version table) is stamped with the revisions whose tables
it already has, then upgraded: no row is lost.

The version table is ``effopt_alembic_version``, so a store sharing a database
with Airflow's own never touches Airflow's ``alembic_version``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.resources
import os
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

VERSION_TABLE = "effopt_alembic_version"
#: The newest revision (the last file in versions/); a test checks it matches the script directory.
HEAD = "0004"
#: Tables each revision creates, oldest first: how a store made before migrations is stamped.
REVISION_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("0001", ("effopt_task_usage", "effopt_cache_stats_snapshot", "effopt_rightsizing_audit", "effopt_waste_report",
              "effopt_report_delivery")),
    ("0002", ("effopt_rightsizing_plan", "effopt_rendered_report")),
    ("0003", ("effopt_gpu_lease", "effopt_gpu_pool_change", "effopt_gpu_inventory")),
    ("0004", ("effopt_spot_decision", "effopt_spot_instance", "effopt_spot_event", "effopt_spot_unavailable")),
)
_PG_LOCK_KEY = 7_002_413_001  # pg_advisory_xact_lock key of effopt's migrations


def current_revision(conn: sa.engine.Connection) -> str | None:
    """The store's revision, or None when it has no version table (new, or made before migrations)."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _config(conn: sa.engine.Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(importlib.resources.files("effopt.migrations")))
    cfg.attributes["connection"] = conn
    return cfg


def _legacy_revision(conn: sa.engine.Connection) -> str | None:
    """The newest revision whose tables (and every earlier revision's) a pre-migration store already has."""
    present = set(sa.inspect(conn).get_table_names())
    found = None
    for revision, tables in REVISION_TABLES:
        if not set(tables) <= present:
            break
        found = revision
    return found


@contextlib.contextmanager
def _exclusive(engine: sa.engine.Engine) -> Iterator[None]:
    """One migrating process at a time: a file lock beside an SQLite file (Postgres locks in the transaction)."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock_path = Path(database).with_name(Path(database).name + ".migrate.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def upgrade(engine: sa.engine.Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the store to ``revision``; returns (revision before, revision after)."""
    from alembic import command

    with _exclusive(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        before = current_revision(conn)
        cfg = _config(conn)
        if before is None:
            legacy = _legacy_revision(conn)
            if legacy is not None:
                command.stamp(cfg, legacy)
                before = legacy
        if before != HEAD or revision != "head":
            command.upgrade(cfg, revision)
        return before, current_revision(conn) or ""
