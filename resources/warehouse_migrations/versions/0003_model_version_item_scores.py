"""Lineage of evaluation results: model_version on every benchmark row, and per-item scores.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29

Adds `model_version` (NOT NULL, server default 'unversioned', which rows written before this
revision get) to benchmark_runs, predictions, scores, score_details and llm_calls, and creates
`item_scores`: one row per (run, item, metric) of the evaluation assets.

Written out in full (not imported from the models) so that this revision never changes when the
models do; tests/test_warehouse.py checks the models against the database this creates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TABLES = ("benchmark_runs", "predictions", "scores", "score_details", "llm_calls")
_PROVENANCE = (
    "dagster_run_id",
    "model_id",
    "split",
    "dataset_hash",
    "prompt_version",
    "code_version",
)


def _model_version() -> sa.Column:
    return sa.Column(
        "model_version", sa.String(255), nullable=False, server_default="unversioned"
    )


def upgrade() -> None:
    for table in _TABLES:
        # SQLite adds a NOT NULL column with a default in place (no table copy); the batch context
        # keeps it that way (recreate="never") on SQLite and is a plain ALTER on PostgreSQL.
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.add_column(_model_version())

    op.create_table(
        "item_scores",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "run_id",
            _ID,
            sa.ForeignKey("benchmark_runs.id", ondelete="CASCADE", name="fk_item_scores_run_id"),
            nullable=False,
        ),
        *[sa.Column(name, sa.String(255), nullable=False) for name in _PROVENANCE],
        _model_version(),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("metric", sa.String(255), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.UniqueConstraint("run_id", "item_id", "metric", name="uq_item_scores_run_item_metric"),
        sa.CheckConstraint("status IN ('ok', 'failed')", name="ck_item_scores_status"),
    )
    op.create_index("ix_item_scores_model_metric", "item_scores", ["model_id", "metric"])


def downgrade() -> None:
    op.drop_index("ix_item_scores_model_metric", table_name="item_scores")
    op.drop_table("item_scores")
    for table in reversed(_TABLES):
        # ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): copying benchmark_runs instead would
        # drop the old table, which with foreign keys on cascades into its child tables.
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.drop_column("model_version")
