"""Writes one model's results of an evaluation asset (judge_evaluations, behavioral_metrics,
batchqa_eval) to the results warehouse: the run, its headline scores and its per-item rows, each
stamped with the provenance (model id and version, split, dataset hash, prompt and code version).

Not an asset module: the evaluation assets call `record_evaluation` once per model.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd

from resources.clients.warehouse import Provenance, code_version
from resources.warehouse import WarehouseResource

# The per-item columns of the evaluation contract that the warehouse stores (item_scores); the
# contract's model_id and model_version columns are passed too and checked against the provenance.
STORED_ITEM_COLUMNS = ("item_id", "metric", "value", "status", "detail")
_LINEAGE_COLUMNS = ("model_id", "model_version")


def record_evaluation(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    *,
    asset_key: str,
    model_id: str,
    model_version: str,
    split: str,
    dataset_hash: str,
    prompt_version: str,
    items: pd.DataFrame,
    scores: list[dict],
    summary: dict | None = None,
    llm_calls: list[dict] | None = None,
) -> int:
    """Record one model's evaluation as a succeeded run of `asset_key` (partition_key: the model
    id, since the evaluation assets are unpartitioned and write one run per model); returns the
    warehouse run id. Re-running the same Dagster step replaces the model's rows.

    `items`: that model's rows in the contract's long form (item_id, metric, value, status,
    detail; model_id and model_version, when present, must match); `scores`: dicts with metric,
    value and optionally ci_low, ci_high, n. Bad input raises ValueError naming the row and field.
    """
    if not isinstance(items, pd.DataFrame):
        raise ValueError(
            f"{asset_key} ({model_id}): items must be a DataFrame, got {type(items).__name__}"
        )
    missing = [c for c in STORED_ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(
            f"{asset_key} ({model_id}): items lack the contract column(s) {missing}; "
            f"has {list(items.columns)}"
        )
    provenance = Provenance(
        dagster_run_id=context.run.run_id,
        # A re-execution (from failure, run retries) replaces the rows its root run wrote.
        dagster_root_run_id=context.run.root_run_id or context.run.run_id,
        model_id=model_id,
        split=split,
        dataset_hash=dataset_hash,
        prompt_version=prompt_version,
        code_version=code_version(),
        model_version=model_version,
    )
    columns = [*STORED_ITEM_COLUMNS, *(c for c in _LINEAGE_COLUMNS if c in items.columns)]
    run_id = warehouse.client.record_run(
        provenance,
        asset_key=asset_key,
        partition_key=model_id,
        status="succeeded",
        summary=summary,
        scores=scores,
        item_scores=items[columns],
        llm_calls=llm_calls,
    )
    failed = int((items["status"] == "failed").sum())
    context.log.info(
        f"{asset_key}: warehouse run {run_id} for {model_id} ({model_version}) on {split}: "
        f"{len(items)} item rows ({failed} failed), {len(scores)} scores"
    )
    return run_id


def base_model_version(model_id: str | None, run_id: str) -> str:
    """The version of the base model alone: its hub id (or "embedded") and the run that
    materialized it, e.g. base:embedded@99ebdff2 (an adapter's version is its registered one)."""
    return f"base:{model_id or 'embedded'}@{run_id[:8]}"


def base_version_of(base_model: dict) -> str:
    """`base_model_version` of the base_model asset's value."""
    return base_model_version(base_model.get("model_id"), str(base_model.get("run_id", "unknown")))


def adapter_version_of(adapter: dict) -> str:
    """The registered version of an adapter asset's value ("unversioned" if it has none)."""
    from resources.clients.warehouse import UNVERSIONED

    return str(adapter.get("model_version") or UNVERSIONED)
