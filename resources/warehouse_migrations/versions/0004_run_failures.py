"""Failed Dagster runs: one row per failed run, written by the run-failure sensor.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Creates `run_failures` (dagster_run_id unique; job, partition, the run's asset keys, the failed
step keys, the scrubbed error text, when the run failed and when the row was recorded). The
existing tables are not touched, so upgrading and downgrading keep their rows.

Written out in full (not imported from the models) so that this revision never changes when the
models do; tests/test_run_failure_sensor.py checks the models against the database this creates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "run_failures",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("dagster_run_id", sa.String(255), nullable=False),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.String(255)),
        sa.Column("asset_keys", sa.JSON(), nullable=False),
        sa.Column("failed_steps", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("dagster_run_id", name="uq_run_failures_dagster_run_id"),
    )
    op.create_index("ix_run_failures_failed_at", "run_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_index("ix_run_failures_failed_at", table_name="run_failures")
    op.drop_table("run_failures")
