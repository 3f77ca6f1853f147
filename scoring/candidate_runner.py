"""Run one LLM candidate over a split: one audit call per batch -> predictions, call log, summary.

Plain Python: the LLM client is passed in (resources/clients/llm.py:LLMClient or any object with the
same `complete_many`), so scoring/ never imports resources/. Every batch ends up in the predictions:
an unusable answer gives the batch one row with valid_output False; a call that failed (after its
retries) is no answer at all, and its one row also has `call_failed` True, so that scoring leaves
the batch out of recall and counts it against coverage instead of as a miss.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from scoring.audit_prompt import AuditPrompt, build_messages, messages_hash
from scoring.model_output import invalid_output, parse_model_output, to_prediction_rows
from scoring.model_registry import CandidateModel
from synthetic.catalog import DeviationCatalog
from synthetic.contracts import CALL_FAILED, PREDICTION_COLUMNS

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


class CallResult(Protocol):
    status: str
    text: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]: ...


class CompletionClient(Protocol):
    def complete_many(self, model: CandidateModel, requests: Sequence[tuple[str, Any, str]],
                      progress: Progress | None = None) -> Sequence[CallResult]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class CandidateRun:
    """Predictions (contracts.PREDICTION_COLUMNS), one call dict per batch, and run totals."""

    predictions: pd.DataFrame
    calls: list[dict[str, Any]]
    summary: dict[str, Any]


def group_batches(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Records by batch_id (first-seen order), each batch ordered by step_seq."""
    batches: dict[str, list[Mapping[str, Any]]] = {}
    for position, record in enumerate(records):
        batch_id = record.get("batch_id")
        if batch_id is None or str(batch_id).strip() == "":
            raise ValueError(f"records[{position}] (record_id {record.get('record_id')!r}) "
                             "field 'batch_id': missing or empty")
        batches.setdefault(str(batch_id), []).append(record)
    for batch_id, batch in batches.items():
        steps = [record.get("step_seq") for record in batch]
        # A record can lack step_seq (a misspelled field is itself a deviation): keep such a
        # batch in its written order rather than invent a position for that record.
        if all(isinstance(step, int | np.integer) and not isinstance(step, bool) for step in steps):
            batches[batch_id] = sorted(batch, key=lambda record: int(record["step_seq"]))
    return batches


def run_llm_candidate(model: CandidateModel, records: Sequence[Mapping[str, Any]],
                      master: Mapping[str, Any], *, split: str, client: CompletionClient,
                      prompt: AuditPrompt, catalog: DeviationCatalog,
                      progress: Progress | None = None) -> CandidateRun:
    """Audit every batch of `records` with `model` through `client`."""
    started = time.perf_counter()
    batches = group_batches(records)
    requests = []
    for batch_id, batch in batches.items():
        messages = build_messages(prompt, batch, master, catalog)
        requests.append((batch_id, messages,
                         f"{model.id}|{prompt.version}|{messages_hash(messages)}"))
    log.info("model %s split %s: %d batches, prompt %s", model.id, split, len(requests),
             prompt.version)
    results = client.complete_many(model, requests, progress=progress)
    rows: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for (batch_id, _messages, _key), result in zip(requests, results, strict=True):
        record_ids = [str(record.get("record_id")) for record in batches[batch_id]]
        failed = result.status != "ok"
        if failed:
            parsed = invalid_output(f"batch {batch_id}: call failed: {result.error}")
        else:
            parsed = parse_model_output(result.text, batch_id, record_ids, catalog)
        rows.extend({**row, CALL_FAILED: failed}
                    for row in to_prediction_rows(parsed, model.id, split, batch_id))
        calls.append({
            **result.to_dict(), "batch_id": batch_id, "split": split,
            "prompt_version": prompt.version, "valid_output": None if failed else parsed.valid,
            "parse_error": None if failed else parsed.error, "n_findings": len(parsed.findings),
            "n_unknown_record_ids": parsed.n_unknown_record_ids,
            "n_unknown_deviation_types": parsed.n_unknown_deviation_types,
        })
    predictions = pd.DataFrame(rows, columns=[*PREDICTION_COLUMNS, CALL_FAILED])
    summary = summarize_calls(calls, wall_s=time.perf_counter() - started)
    summary.update(model_id=model.id, split=split, prompt_version=prompt.version)
    log.info("model %s split %s: %s", model.id, split, summary)
    return CandidateRun(predictions=predictions, calls=calls, summary=summary)


def summarize_calls(calls: Sequence[Mapping[str, Any]], wall_s: float) -> dict[str, Any]:
    """Run totals. Latency and tokens describe the model (a cache hit reports the original call's);
    cost_usd is what this run spent (cache hits cost 0), cost_usd_uncached what it would without
    the cache. A cost is None when any call needed for it is unpriced. A failed call is not an
    output: the invalid-output rate is over the answered calls (None when none was answered)."""
    ok = [call for call in calls if call["status"] == "ok"]
    fresh = [call for call in ok if not call["cached"]]
    latencies = [call["original_latency_s"] if call["cached"] else call["latency_s"] for call in ok]
    n_unpriced = sum(call["cost_usd"] is None for call in fresh)
    n_invalid = sum(not call["valid_output"] for call in ok)
    original_costs = [call["original_cost_usd"] for call in ok]
    return {
        "n_batches": len(calls),
        "n_calls": len(calls),
        "n_cached": len(ok) - len(fresh),
        "n_failed_calls": len(calls) - len(ok),
        "n_answered": len(ok),
        "n_invalid_outputs": n_invalid,
        "invalid_output_rate": n_invalid / len(ok) if ok else None,
        "n_findings": sum(call["n_findings"] for call in calls),
        "n_unknown_record_ids": sum(call["n_unknown_record_ids"] for call in calls),
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p95_s": _percentile(latencies, 95),
        "prompt_tokens": sum(call["prompt_tokens"] or 0 for call in ok),
        "completion_tokens": sum(call["completion_tokens"] or 0 for call in ok),
        "cost_usd": None if n_unpriced else float(sum(call["cost_usd"] for call in fresh)),
        "n_unpriced": n_unpriced,
        "cost_usd_uncached": (None if any(cost is None for cost in original_costs)
                              else float(sum(original_costs))),
        "wall_s": wall_s,
    }


def is_outage(summary: Mapping[str, Any]) -> bool:
    """Whether a run summary says that calls were made and every one of them failed."""
    failed, calls = int(summary.get("n_failed_calls") or 0), int(summary.get("n_calls") or 0)
    return 0 < calls == failed


def failed_calls_note(summary: Mapping[str, Any]) -> str | None:
    """`N of M calls failed` (`outage: ...` when every call failed) from a run summary's
    n_failed_calls and n_calls; None when no call failed or the summary does not count calls."""
    failed, calls = int(summary.get("n_failed_calls") or 0), int(summary.get("n_calls") or 0)
    if not failed:
        return None
    return f"{'outage: ' if is_outage(summary) else ''}{failed} of {calls} calls failed"


def _percentile(values: Sequence[float | None], q: float) -> float | None:
    present = [value for value in values if value is not None]
    return float(np.percentile(present, q)) if present else None
