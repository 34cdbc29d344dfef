"""The latest right-sizing plans and the rendered reports with their delivery, for the effopt page.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "effopt_rightsizing_plan",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("recommender", sa.String(64), nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
    )
    op.create_index("ix_effopt_rightsizing_plan_created_at", "effopt_rightsizing_plan", ["created_at"])
    op.create_table(
        "effopt_rendered_report",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("delivery", sa.JSON),
    )
    op.create_index("ix_effopt_rendered_report_kind", "effopt_rendered_report", ["kind", "created_at"])


def downgrade() -> None:
    op.drop_table("effopt_rendered_report")
    op.drop_table("effopt_rightsizing_plan")
