"""Re-execution lineage of benchmark runs: `dagster_root_run_id` on benchmark_runs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

A Dagster re-execution (from failure, or run retries) gets a new run id; its `root_run_id` is
the id of the original run. `record_run` keys a step on (dagster_root_run_id, asset_key,
partition_key), so a step that wrote its rows before its run was killed and is re-executed
replaces them instead of adding a second run row.

Adds the nullable column `dagster_root_run_id` to benchmark_runs, sets it to `dagster_run_id` on
the rows already there (each was its own lineage), and a unique index on (dagster_root_run_id,
asset_key, partition_key). A unique index, not a constraint: SQLite adds it in place, where a
constraint would copy benchmark_runs, and dropping the old table would delete its child rows
through ON DELETE CASCADE. The child tables are not touched: they hang off benchmark_runs.id.

Written out in full (not imported from the models) so that this revision never changes when the
models do; tests/test_faults_runs.py checks the models against the database this creates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_INDEX = "uq_benchmark_runs_lineage_step"


def upgrade() -> None:
    # recreate="never": ALTER TABLE ADD COLUMN in place on SQLite too (no table copy).
    with op.batch_alter_table("benchmark_runs", recreate="never") as batch:
        batch.add_column(sa.Column("dagster_root_run_id", sa.String(255)))
    op.execute("UPDATE benchmark_runs SET dagster_root_run_id = dagster_run_id")
    op.create_index(
        _INDEX,
        "benchmark_runs",
        ["dagster_root_run_id", "asset_key", "partition_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="benchmark_runs")
    # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): see revision 0003.
    with op.batch_alter_table("benchmark_runs", recreate="never") as batch:
        batch.drop_column("dagster_root_run_id")
