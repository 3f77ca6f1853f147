"""Run any candidate of the registry on a split: the rule-based auditor or an LLM via litellm."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from scoring.audit_prompt import AuditPrompt
from scoring.candidate_runner import CompletionClient, Progress, run_llm_candidate
from scoring.model_registry import CandidateModel, model_availability
from scoring.record_audit import Generate, load_record_prompt, run_record_audit
from scoring.reference_auditor import audit_records, findings_to_predictions
from synthetic.catalog import DeviationCatalog


@dataclass
class CandidateOutcome:
    """Predictions of one candidate on one split, its LLM calls and run summary, or why it was
    skipped (then predictions are empty)."""

    predictions: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    skipped_reason: str | None = None


def run_candidate(
    model: CandidateModel,
    records: Sequence[Mapping[str, Any]],
    master: Mapping[str, Any],
    *,
    split: str,
    client_factory: Callable[[], CompletionClient],
    prompt: AuditPrompt,
    catalog: DeviationCatalog,
    progress: Progress | None = None,
    local_generate: Callable[[CandidateModel], Generate] | None = None,
) -> CandidateOutcome:
    """Predictions of `model` on `records`. `local_generate(model)` gives the generation function
    of a `local` model (training/inference.py behind it); `client_factory` the LLM client."""
    available, reason = model_availability(model)
    if not available:
        return CandidateOutcome(predictions=pd.DataFrame(), skipped_reason=reason)
    if model.kind == "rule_based":
        started = time.perf_counter()
        records = list(records)
        findings = audit_records(records, dict(master), catalog)
        batch_ids = list(dict.fromkeys(record["batch_id"] for record in records))
        predictions = pd.DataFrame(findings_to_predictions(findings, batch_ids, model.id, split))
        wall_s = time.perf_counter() - started
        if progress:
            progress(len(batch_ids), len(batch_ids))
        per_batch = wall_s / len(batch_ids) if batch_ids else None
        return CandidateOutcome(
            predictions=predictions,
            summary={
                "n_batches": len(batch_ids),
                "n_findings": len(findings),
                "invalid_output_rate": 0.0,
                # The auditor checks all batches in one vectorised pass: the mean per batch is
                # the honest figure for both percentiles.
                "latency_p50_s": per_batch,
                "latency_p95_s": per_batch,
                "cost_usd": 0.0,
                "wall_s": wall_s,
                "model_id": model.id,
                "split": split,
                "prompt_version": "n/a (rule-based)",
            },
        )
    if model.kind in ("local", "served"):
        if local_generate is None:
            raise ValueError(f"model {model.id!r} is a {model.kind} model: run_candidate needs "
                             "local_generate")
        run = run_record_audit(model, records, split=split, generate=local_generate(model),
                               prompt=load_record_prompt(), catalog=catalog, progress=progress)
        return CandidateOutcome(predictions=run.predictions, summary=run.summary)
    client = client_factory()
    try:
        run = run_llm_candidate(
            model,
            records,
            master,
            split=split,
            client=client,
            prompt=prompt,
            catalog=catalog,
            progress=progress,
        )
    finally:
        client.close()
    return CandidateOutcome(predictions=run.predictions, summary=run.summary, calls=run.calls)
