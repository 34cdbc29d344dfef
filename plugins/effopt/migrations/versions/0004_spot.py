"""Spot placement in Airflow: decisions, launched instances and their cost, interruptions and fallbacks, and the
offerings that failed recently.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "effopt_spot_decision",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("capacity", sa.String(16), nullable=False),
        sa.Column("offering", sa.String(250), nullable=False),
        sa.Column("expected_cost", sa.Float),
        sa.Column("decision", sa.JSON, nullable=False),
    )
    op.create_index("ix_effopt_spot_decision_created_at", "effopt_spot_decision", ["created_at"])
    op.create_table(
        "effopt_spot_instance",
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("fleet_id", sa.String(64)),
        sa.Column("client_token", sa.String(64), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=False),
        sa.Column("region", sa.String(32), nullable=False),
        sa.Column("az_id", sa.String(32)),
        sa.Column("zone", sa.String(32)),
        sa.Column("capacity", sa.String(16), nullable=False),
        sa.Column("usd_per_hour", sa.Float),
        sa.Column("launched_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
        sa.Column("end_reason", sa.Text),
    )
    op.create_index("ix_effopt_spot_instance_run", "effopt_spot_instance", ["dag_id", "run_id"])
    op.create_index("ix_effopt_spot_instance_launched_at", "effopt_spot_instance", ["launched_at"])
    op.create_table(
        "effopt_spot_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("task_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("map_index", sa.Integer, nullable=False, server_default="-1"),
        sa.Column("try_number", sa.Integer, nullable=False),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_effopt_spot_event_kind", "effopt_spot_event", ["kind", "at"])
    op.create_table(
        "effopt_spot_unavailable",
        sa.Column("offering", sa.String(250), primary_key=True),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("marked_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("effopt_spot_unavailable")
    op.drop_table("effopt_spot_event")
    op.drop_table("effopt_spot_instance")
    op.drop_table("effopt_spot_decision")
