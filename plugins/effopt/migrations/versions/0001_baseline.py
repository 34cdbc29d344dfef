"""The store as it was before migrations: task usage, cache snapshots, right-sizing audit, waste reports, deliveries.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "effopt_task_usage",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("hostname", sa.String(250)),
        sa.Column("pid", sa.Integer),
        sa.Column("start", sa.Float, nullable=False),
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
    )
    op.create_index("ix_effopt_task_usage_task", "effopt_task_usage", ["dag_id", "task_id", "start"])
    op.create_table(
        "effopt_cache_stats_snapshot",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("taken_at", sa.Float, nullable=False),
        sa.Column("counters", sa.JSON, nullable=False),
    )
    op.create_index("ix_effopt_cache_stats_snapshot_taken_at", "effopt_cache_stats_snapshot", ["taken_at"])
    op.create_table(
        "effopt_rightsizing_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("applied_at", sa.Float, nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(250), nullable=False),
        sa.Column("name", sa.String(250), nullable=False),
        sa.Column("container", sa.String(250), nullable=False),
        sa.Column("before", sa.JSON, nullable=False),
        sa.Column("after", sa.JSON, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("monthly_cost_delta", sa.Float),
        sa.Column("resource_version", sa.String(64)),
    )
    op.create_index("ix_effopt_rightsizing_audit_workload", "effopt_rightsizing_audit",
                    ["kind", "namespace", "name", "applied_at"])
    op.create_table(
        "effopt_waste_report",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("period_end", sa.Float, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
    )
    op.create_index("ix_effopt_waste_report_period_end", "effopt_waste_report", ["period_end"])
    op.create_table(
        "effopt_report_delivery",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("report_key", sa.String(250), nullable=False, unique=True),
        sa.Column("message_id", sa.String(250), nullable=False),
        sa.Column("recipients", sa.Text, nullable=False),
        sa.Column("sent_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("effopt_report_delivery", "effopt_waste_report", "effopt_rightsizing_audit",
                  "effopt_cache_stats_snapshot", "effopt_task_usage"):
        op.drop_table(table)
