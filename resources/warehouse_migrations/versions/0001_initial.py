"""Initial warehouse schema: benchmark runs, predictions, scores, per-type scores, LLM calls.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written out in full (not imported from the models) so that this revision never changes when the
models do; tests/test_warehouse.py checks the models against the database this creates.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_PROVENANCE = (
    "dagster_run_id",
    "model_id",
    "split",
    "dataset_hash",
    "prompt_version",
    "code_version",
)


def _id() -> sa.Column:
    return sa.Column("id", _ID, primary_key=True, autoincrement=True)


def _provenance() -> list[sa.Column]:
    return [sa.Column(name, sa.String(255), nullable=False) for name in _PROVENANCE]


def _run_fk(table: str) -> sa.Column:
    fk = sa.ForeignKey("benchmark_runs.id", ondelete="CASCADE", name=f"fk_{table}_run_id")
    return sa.Column("run_id", _ID, fk, nullable=False)


def upgrade() -> None:
    op.create_table(
        "benchmark_runs",
        _id(),
        *_provenance(),
        sa.Column("asset_key", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("summary", sa.JSON()),
        sa.UniqueConstraint(
            "dagster_run_id", "asset_key", "partition_key", name="uq_benchmark_runs_step"
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'skipped')",
            name="ck_benchmark_runs_status",
        ),
    )
    op.create_index(
        "ix_benchmark_runs_model_split", "benchmark_runs", ["model_id", "split", "status"]
    )

    op.create_table(
        "predictions",
        _id(),
        _run_fk("predictions"),
        *_provenance(),
        sa.Column("batch_id", sa.Text(), nullable=False),
        sa.Column("record_id", sa.Text()),
        sa.Column("deviation_type", sa.Text()),
        sa.Column("field", sa.Text()),
        sa.Column("evidence", sa.Text()),
        sa.Column("valid_output", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_predictions_run_id", "predictions", ["run_id"])
    op.create_index("ix_predictions_model_split", "predictions", ["model_id", "split"])

    op.create_table(
        "scores",
        _id(),
        _run_fk("scores"),
        *_provenance(),
        sa.Column("metric", sa.String(255), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("ci_low", sa.Float()),
        sa.Column("ci_high", sa.Float()),
        sa.Column("n", sa.Integer()),
        sa.UniqueConstraint("run_id", "metric", name="uq_scores_run_metric"),
    )
    op.create_index("ix_scores_model_split_metric", "scores", ["model_id", "split", "metric"])

    op.create_table(
        "score_details",
        _id(),
        _run_fk("score_details"),
        *_provenance(),
        sa.Column("deviation_type", sa.String(255), nullable=False),
        sa.Column("support", sa.Integer(), nullable=False),
        sa.Column("tp", sa.Integer(), nullable=False),
        sa.Column("fp", sa.Integer(), nullable=False),
        sa.Column("fn", sa.Integer(), nullable=False),
        sa.Column("precision", sa.Float()),
        sa.Column("recall", sa.Float()),
        sa.Column("f1", sa.Float()),
        sa.UniqueConstraint("run_id", "deviation_type", name="uq_score_details_run_type"),
    )

    op.create_table(
        "llm_calls",
        _id(),
        _run_fk("llm_calls"),
        *_provenance(),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("litellm_model", sa.Text()),
        sa.Column("cache_key", sa.Text()),
        sa.Column("cached", sa.Boolean()),
        sa.Column("attempts", sa.Integer()),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("latency_s", sa.Float()),
        sa.Column("prompt_tokens", sa.Integer()),
        sa.Column("completion_tokens", sa.Integer()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("cost_source", sa.Text()),
        sa.Column("response_text", sa.Text()),
    )
    op.create_index("ix_llm_calls_run_id", "llm_calls", ["run_id"])
    op.create_index("ix_llm_calls_cache_key", "llm_calls", ["cache_key"])


def downgrade() -> None:
    for table in ("llm_calls", "score_details", "scores", "predictions", "benchmark_runs"):
        op.drop_table(table)
