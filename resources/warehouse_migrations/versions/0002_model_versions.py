"""Model registry: trained model versions per task, aliases (production) and the alias history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Written out in full (not imported from the models) so that this revision never changes when the
models do; tests/test_warehouse.py checks the models against the database this creates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("archive_uri", sa.Text()),
        sa.Column("archive_sha256", sa.String(64)),
        sa.Column("base_model", sa.Text()),
        sa.Column("dataset_hash", sa.String(255)),
        sa.Column("config", sa.JSON()),
        sa.Column("metrics", sa.JSON()),
        sa.Column("code_version", sa.String(255), nullable=False),
        sa.Column("dagster_run_id", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task", "version", name="uq_model_versions_task_version"),
    )
    op.create_index("ix_model_versions_task_created", "model_versions", ["task", "created_at"])

    op.create_table(
        "model_aliases",
        sa.Column("task", sa.String(255), primary_key=True),
        sa.Column("alias", sa.String(255), primary_key=True),
        sa.Column("version", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("previous_version", sa.String(255)),
        sa.ForeignKeyConstraint(
            ["task", "version"],
            ["model_versions.task", "model_versions.version"],
            name="fk_model_aliases_version",
        ),
    )

    op.create_table(
        "model_alias_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("from_version", sa.String(255)),
        sa.Column("to_version", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text()),
        sa.Column("reason", sa.Text()),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task", "to_version"],
            ["model_versions.task", "model_versions.version"],
            name="fk_model_alias_events_version",
        ),
        sa.CheckConstraint(
            "action IN ('promote', 'rollback')", name="ck_model_alias_events_action"
        ),
    )
    op.create_index(
        "ix_model_alias_events_task_alias", "model_alias_events", ["task", "alias", "id"]
    )


def downgrade() -> None:
    for table in ("model_alias_events", "model_aliases", "model_versions"):
        op.drop_table(table)
