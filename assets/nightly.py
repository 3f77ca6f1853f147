"""Nightly benchmark of the registered API models, one daily partition per benchmark date.

Each date runs every enabled `litellm` candidate of the gxp_audit benchmark (configs/models.yaml) on
the `benchmark` split with the same machinery as gxp_predictions/gxp_scores (scoring/candidates.py,
scoring/gxp.py) and writes one warehouse run per model and date, so the warehouse keeps a history
per date. The schedule and job are in jobs/schedules.py; docs/schedules.md says how to backfill.
"""

import logging
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from assets.evaluation import HEADLINE_METRICS, _first_batches
from resources.clients.warehouse import Provenance, Warehouse, code_version
from resources.llm import LLMResource
from resources.warehouse import WarehouseResource
from scoring.audit_prompt import load_prompt
from scoring.candidate_runner import (
    CompletionClient,
    Progress,
    failed_calls_note,
    is_outage,
)
from scoring.candidates import CandidateOutcome, run_candidate
from scoring.gxp import score_predictions
from scoring.model_registry import (
    GXP_AUDIT,
    CandidateModel,
    load_model_registry,
    model_availability,
    resolve_litellm_model,
)
from synthetic.catalog import load_catalog
from synthetic.contracts import MANIFEST_COLUMNS
from synthetic.jsonl import dumps_jsonl, sha256_bytes
from training.progress import ProgressLog

ASSET_KEY = "nightly_api_benchmark"
NIGHTLY_SPLIT = "benchmark"  # the split API models are scored on
NIGHTLY_START_DATE = "2026-11-01"
nightly_partitions = dg.DailyPartitionsDefinition(start_date=NIGHTLY_START_DATE, timezone="UTC")
# Columns of the per-model table the asset returns (one row per model and date).
TABLE_COLUMNS = (
    "model_id", "model_version", "status", "detail", *HEADLINE_METRICS, "n_batches", "n_calls",
    "n_cached", "n_failed_calls", "latency_p50_s", "latency_p95_s", "prompt_tokens",
    "completion_tokens", "cost_usd", "cost_usd_uncached", "warehouse_run_id",
)  # fmt: skip
_BENCHMARK_SPLIT = dg.SpecificPartitionsPartitionMapping([NIGHTLY_SPLIT])
_log = logging.getLogger(__name__)


class NightlyBenchmarkConfig(dg.Config):
    max_batches: int | None = Field(
        None,
        description="Audit only the first N batches of the benchmark split (a quick look; the "
        "scores then cover only those batches and say so in the warehouse summary).",
    )
    models: list[str] | None = Field(
        None,
        description="Run only these model ids (litellm candidates of gxp_audit in "
        "configs/models.yaml); default: every enabled one.",
    )


def nightly_models(registry: Sequence[CandidateModel],
                   only: Sequence[str] | None = None) -> list[CandidateModel]:
    """The enabled litellm candidates of the gxp_audit benchmark, restricted to `only` when given
    (ValueError naming an id that is not such a candidate)."""
    api_models = [m for m in registry
                  if m.kind == "litellm" and m.enabled and GXP_AUDIT in m.benchmarks]
    if only is None:
        return api_models
    known = {m.id for m in api_models}
    unknown = [model_id for model_id in only if model_id not in known]
    if unknown:
        raise ValueError(f"nightly_api_benchmark config field 'models': {unknown} are not enabled "
                         f"litellm candidates of {GXP_AUDIT} (known: {sorted(known)})")
    return [m for m in api_models if m.id in set(only)]


class DateScopedClient:
    """An LLM client whose cache keys carry the benchmark date: every date calls the APIs afresh
    (the point of a nightly benchmark), while a retry or re-run of the same date reuses that
    date's answers instead of paying for them twice."""

    def __init__(self, client: Any, date: str) -> None:
        self._client, self._date = client, date

    def complete_many(self, model: CandidateModel, requests: Sequence[tuple[str, Any, str]],
                      progress: Progress | None = None) -> Sequence[Any]:
        scoped = [(request_id, messages, f"nightly:{self._date}|{key}")
                  for request_id, messages, key in requests]
        return self._client.complete_many(model, scoped, progress=progress)

    def close(self) -> None:
        self._client.close()


def score_outcome(outcome: CandidateOutcome, records: Sequence[dict],
                  labels: Sequence[dict]) -> tuple[list[dict], pd.DataFrame, dict[str, float]]:
    """Score one model's predictions on the audited `records` as gxp_scores does (scoring/gxp.py,
    1000 batch resamples, seed 0): warehouse metric rows, per-type table, headline values."""
    audited = {r["batch_id"] for r in records}
    frame = pd.DataFrame([{"record_id": r["record_id"], "batch_id": r["batch_id"]}
                          for r in records])
    manifest = pd.DataFrame(list(labels), columns=list(MANIFEST_COLUMNS))
    manifest = manifest[manifest["batch_id"].isin(audited)]
    scores = score_predictions(manifest, outcome.predictions, frame, n_boot=1000, seed=0)
    rows = [{"metric": name, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n}
            for name, m in scores.metrics.items()]
    headline = {name: scores.metrics[name].value for name in HEADLINE_METRICS
                if name in scores.metrics}
    return rows, scores.per_type, headline


def _table_markdown(table: pd.DataFrame) -> str:
    shown = table[["model_id", "status", "gxp1_f1", "gxp2_micro_f1", "invalid_output_rate",
                   "n_calls", "latency_p50_s", "cost_usd_uncached", "detail"]]
    return shown.to_markdown(index=False, floatfmt=".3f")


def benchmark_api_models(
    models: Sequence[CandidateModel],
    gxp_records: Sequence[dict],
    labels: Sequence[dict],
    master: dict,
    *,
    date: str,
    dagster_run_id: str,
    dagster_root_run_id: str | None = None,
    client_factory: Callable[[], CompletionClient],
    warehouse: Warehouse,
    max_batches: int | None = None,
    log: logging.Logger | logging.LoggerAdapter = _log,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Run and score each model on the benchmark split (its first `max_batches` batches) and
    write one warehouse run per model: succeeded (predictions, calls, scores, per-type), skipped
    (the availability reason) or failed (the error; the other models still run). Returns the
    per-model table (TABLE_COLUMNS) and {model_id: error} of the failed models."""
    prompt = load_prompt()
    catalog = load_catalog()
    records = _first_batches(list(gxp_records), max_batches)
    dataset_hash = sha256_bytes(dumps_jsonl(list(gxp_records)))
    batches_in_split = len({r["batch_id"] for r in gxp_records})
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for model in models:
        provenance = Provenance(
            dagster_run_id=dagster_run_id, model_id=model.id, split=NIGHTLY_SPLIT,
            dataset_hash=dataset_hash, prompt_version=prompt.version,
            code_version=code_version(), model_version=resolve_litellm_model(model),
            dagster_root_run_id=dagster_root_run_id,
        )
        run = {"asset_key": ASSET_KEY, "partition_key": f"{date}|{model.id}"}
        row: dict[str, Any] = {"model_id": model.id, "model_version": provenance.model_version}
        available, reason = model_availability(model)
        if not available:
            log.info(f"{date} {model.id}: {reason}")
            row.update(status="skipped", detail=reason)
            row["warehouse_run_id"] = warehouse.record_run(
                provenance, **run, status="skipped", detail=reason,
                summary={"benchmark_date": date})
            rows.append(row)
            continue

        progress = ProgressLog(f"{date} {model.id}", unit="batches audited", sinks=[log])
        try:
            outcome = run_candidate(model, records, master, split=NIGHTLY_SPLIT,
                                    client_factory=client_factory, prompt=prompt, catalog=catalog,
                                    progress=progress)
            if outcome.skipped_reason:  # availability changed between the two checks
                raise RuntimeError(outcome.skipped_reason)
            if is_outage(outcome.summary):  # no answer is not a score
                first = next((call["error"] for call in outcome.calls if call.get("error")),
                             "no error text")
                raise RuntimeError(f"{failed_calls_note(outcome.summary)} (first error: {first})")
            scores, per_type, headline = score_outcome(outcome, records, labels)
        except Exception as exc:  # one provider's failure must not lose the other models' runs
            error = f"{type(exc).__name__}: {exc}"
            log.error(f"{date} {model.id}: failed: {error}")
            failed[model.id] = error
            row.update(status="failed", detail=error)
            row["warehouse_run_id"] = warehouse.record_run(
                provenance, **run, status="failed", detail=error,
                summary={"benchmark_date": date})
            rows.append(row)
            continue
        summary = {**outcome.summary, "benchmark_date": date,
                   "batches_in_split": batches_in_split, **headline}
        row.update({key: summary[key] for key in TABLE_COLUMNS if key in summary})
        row.update(status="succeeded", detail=None)
        row["warehouse_run_id"] = warehouse.record_run(
            provenance, **run, status="succeeded", summary=summary,
            predictions=outcome.predictions, llm_calls=outcome.calls, scores=scores,
            per_type=per_type)
        log.info(f"{date} {model.id}: " + ", ".join(
            f"{name} {value:.3f}" for name, value in headline.items()))
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS)), failed


@dg.asset(
    partitions_def=nightly_partitions,
    group_name="evaluation",
    ins={
        "gxp_records": dg.AssetIn(partition_mapping=_BENCHMARK_SPLIT),
        "gxp_labels": dg.AssetIn(partition_mapping=_BENCHMARK_SPLIT),
        "gxp_site_master": dg.AssetIn(),
    },
    # It calls provider APIs: a transient outage retries the step (the date's answers already
    # received are served from the date-scoped cache, and record_run replaces the step's rows).
    retry_policy=dg.RetryPolicy(max_retries=2, delay=60, backoff=dg.Backoff.EXPONENTIAL),
    kinds={"python"},
    code_version="1",
)
def nightly_api_benchmark(
    context: dg.AssetExecutionContext,
    config: NightlyBenchmarkConfig,
    gxp_records: list[dict],
    gxp_labels: list[dict],
    gxp_site_master: dict,
    llm: LLMResource,
    warehouse: WarehouseResource,
) -> pd.DataFrame:
    """Every enabled API model of the registry audits the benchmark split for this date and is
    scored; one warehouse run per model (asset_key nightly_api_benchmark, partition_key
    `<date>|<model_id>`), a model without its key skipped with the reason."""
    date = context.partition_key
    try:
        models = nightly_models(load_model_registry(benchmark=GXP_AUDIT), config.models)
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    table, failed = benchmark_api_models(
        models, gxp_records, gxp_labels, gxp_site_master, date=date,
        dagster_run_id=context.run.run_id,
        dagster_root_run_id=context.run.root_run_id or context.run.run_id,  # re-executions replace
        client_factory=lambda: DateScopedClient(llm.get_client(), date),
        warehouse=warehouse.client, max_batches=config.max_batches, log=context.log,
    )
    metadata = {
        "benchmark_date": date,
        "split": NIGHTLY_SPLIT,
        "batches_audited": len({r["batch_id"]
                                for r in _first_batches(gxp_records, config.max_batches)}),
        "batches_in_split": len({r["batch_id"] for r in gxp_records}),
        "dataset_hash": sha256_bytes(dumps_jsonl(gxp_records)),
        "prompt_version": load_prompt().version,
        "models_run": dg.MetadataValue.json(
            sorted(table.loc[table["status"] == "succeeded", "model_id"])),
        "models_skipped": dg.MetadataValue.json(
            dict(table.loc[table["status"] == "skipped", ["model_id", "detail"]].values)),
        "models_failed": dg.MetadataValue.json(failed),
        "table": dg.MetadataValue.md(_table_markdown(table) if len(table) else "(no API models)"),
    }
    if failed:
        # Retried by the RetryPolicy; the models that succeeded are already in the warehouse.
        raise dg.Failure(f"nightly benchmark {date}: {len(failed)} model(s) failed: "
                         + "; ".join(f"{k}: {v}" for k, v in failed.items()), metadata=metadata)
    context.add_output_metadata(metadata)
    return table
