"""GPU leases (the store backend), the GPU pool sync's changes, and GPU inventory snapshots.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "effopt_gpu_lease",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(1000), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("node", sa.String(250), nullable=False),
        sa.Column("unit", sa.String(500), nullable=False),
        sa.Column("columns", sa.JSON, nullable=False),
        sa.Column("gpu_milli", sa.Integer, nullable=False),
        sa.Column("document", sa.JSON, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
    )
    op.create_index("ix_effopt_gpu_lease_state", "effopt_gpu_lease", ["state", "expires_at"])
    op.create_index("ix_effopt_gpu_lease_holder", "effopt_gpu_lease", ["holder"])
    op.create_table(
        "effopt_gpu_pool_change",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("changed_at", sa.Float, nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("pool", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("slots_before", sa.Integer),
        sa.Column("slots_after", sa.Integer),
        sa.Column("occupied", sa.Integer),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
    )
    op.create_index("ix_effopt_gpu_pool_change_changed_at", "effopt_gpu_pool_change", ["changed_at"])
    op.create_table(
        "effopt_gpu_inventory",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("taken_at", sa.Float, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("inventory", sa.JSON, nullable=False),
    )
    op.create_index("ix_effopt_gpu_inventory_taken_at", "effopt_gpu_inventory", ["taken_at"])


def downgrade() -> None:
    op.drop_table("effopt_gpu_inventory")
    op.drop_table("effopt_gpu_pool_change")
    op.drop_table("effopt_gpu_lease")
