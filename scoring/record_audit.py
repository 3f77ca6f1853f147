"""Record-by-record GxP audit for small local models (the `local` kind of the model registry).

A model with a context of a few hundred tokens cannot read a whole batch with the deviation catalog,
so it audits one record per prompt (`record_audit` in configs/prompts.yaml) and answers
`{"findings": [{"deviation_type": slug, "field": name | null}]}`. The answers are assembled into the
same prediction rows as a batch audit, so the scorer and the leaderboard treat every candidate
alike. Deviations that need batch context or master data are out of such a model's sight: its
recall on them is honestly low. The generator is injected (training/inference.py:LocalGenerator in
production), so this module stays free of torch. The same prompt and answer format build the
`gxp_audit_adapter` training rows (`training_rows`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any, Protocol

import jsonschema
import pandas as pd

from scoring.audit_prompt import AuditPrompt, data_line, prompt_section
from scoring.candidate_runner import CandidateRun, Progress, group_batches
from scoring.model_output import (
    ParsedOutput,
    checked_answer,
    invalid_output,
    to_prediction_rows,
)
from scoring.model_registry import CandidateModel
from synthetic.catalog import DeviationCatalog
from synthetic.contracts import (
    CALL_FAILED,
    ENVIRONMENT_KEYS,
    PARAMETER_KEYS,
    PREDICTION_COLUMNS,
    RECORD_FIELDS,
)

RECORD_OPEN, RECORD_CLOSE = "<<<RECORD", "RECORD>>>"
# Parsing accepts any slug (an unknown one is kept and flagged `known_deviation_type` False);
# `record_output_schema(catalog)` is the strict form for constrained decoding.
RECORD_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"deviation_type": {"type": "string"},
                               "field": {"type": ["string", "null"]}},
                "required": ["deviation_type"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["findings"],
    "additionalProperties": False,
}
# Fields a single record cannot be judged on (identifiers and the recipe position: their
# deviations need the other records of the batch), left out of the compact serialization.
COMPACT_DROPPED = frozenset({"record_id", "batch_id", "product_code", "unit_procedure",
                             "operation", "phase", "step_seq", "material_lot"})
AUDIT_REASON_CHARS = 30
# The answer's fixed JSON pieces (no findings; the start of the first / a further finding; the
# end). The embedded tokenizer has each as one token (training/embedded_model.py), and each slug
# too, so a clean answer is 1 token and a one-finding answer 3 (plus </s>).
ANSWER_NONE = '{"findings": []}'
ANSWER_OPEN = '{"findings": [{"deviation_type": "'
ANSWER_NEXT = '"}, {"deviation_type": "'
ANSWER_CLOSE = '"}]}'
ANSWER_PIECES = (ANSWER_NONE, ANSWER_OPEN, ANSWER_NEXT, ANSWER_CLOSE)


# Findings per record at most under constrained decoding: a generated record carries one or two
# deviations; the bound keeps an untrained model from listing findings until max_tokens.
MAX_RECORD_FINDINGS = 4


def record_output_schema(catalog: DeviationCatalog) -> dict[str, Any]:
    """The answer's JSON schema for constrained decoding: `deviation_type` an enum of the
    catalog's slugs, at most MAX_RECORD_FINDINGS findings, and no free-text `field` (the answer
    the auditor is trained on leaves it out and the scorer does not use it; a free string would
    let an untrained model write until max_tokens), so every answer is a few tokens."""
    item = {"type": "object",
            "properties": {"deviation_type": {"type": "string", "enum": list(catalog.slugs)}},
            "required": ["deviation_type"], "additionalProperties": False}
    return {"type": "object",
            "properties": {"findings": {"type": "array", "items": item,
                                        "maxItems": MAX_RECORD_FINDINGS}},
            "required": ["findings"], "additionalProperties": False}


def answer_tokens(catalog: DeviationCatalog) -> list[str]:
    """Strings a small model's tokenizer should hold as single tokens: the answer pieces, the
    catalog's slugs and the compact record's `key=` prefixes of the schema's keys (a misspelled
    or extra key is then visibly not one token)."""
    keys = [k for k in (*RECORD_FIELDS, *PARAMETER_KEYS, *ENVIRONMENT_KEYS)
            if k not in COMPACT_DROPPED and k not in {"parameters", "audit_trail"}]
    return [*ANSWER_PIECES, *catalog.slugs, *(f"{k}=" for k in keys), "audit="]


_VALIDATOR = jsonschema.Draft202012Validator(RECORD_OUTPUT_SCHEMA)


class Generated(Protocol):
    """One answer. An answer may also have `error` (a str: the call behind it failed, as a served
    model's can; None or absent: answered)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    truncated_prompt_tokens: int


Generate = Callable[[Sequence[list[dict[str, str]]], Progress | None], Sequence[Generated]]


def load_record_prompt(path: Path | str | None = None) -> AuditPrompt:
    """The `record_audit` section of configs/prompts.yaml (or another prompt file)."""
    path, raw = prompt_section(path, "record_audit")
    template = Template(raw["user_template"])
    if not template.is_valid() or set(template.get_identifiers()) != {"record"}:
        raise ValueError(f"{path}: field 'record_audit.user_template' must use exactly the "
                         "placeholder ${record}")
    return AuditPrompt(version=raw["version"], system=raw["system"],
                       user_template=raw["user_template"])


def compact_record(record: Mapping[str, Any]) -> str:
    """The record as `key=value` lines in its own key order (a misspelled or extra key stays
    visible), without the fields of COMPACT_DROPPED; parameters as `name=value unit [low,high]`,
    the environment's readings as their own `name=value` lines, each audit-trail entry as
    `audit=field by who: reason` (reason cut to AUDIT_REASON_CHARS). About a third of the record's
    JSON in tokens: a small model reads it faster and sees the cues closer together."""
    lines = []
    for key, value in record.items():
        if key in COMPACT_DROPPED:
            continue
        if key == "parameters" and isinstance(value, Mapping):
            lines.extend(f"{name}={_reading(reading)}" for name, reading in value.items())
        elif key == "environment" and isinstance(value, Mapping) and value:
            lines.extend(f"{name}={_scalar(reading)}" for name, reading in value.items())
        elif key == "audit_trail" and isinstance(value, list):
            lines.extend(_audit_entry(entry) for entry in value)
        else:
            lines.append(f"{key}={_scalar(value)}")
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value.replace("\n", " ") if value else '""'
    return data_line(value)


def _reading(reading: Any) -> str:
    if isinstance(reading, Mapping) and set(reading) == {"value", "low", "high", "unit"}:
        return (f"{_scalar(reading['value'])} {reading['unit']} "
                f"[{_scalar(reading['low'])},{_scalar(reading['high'])}]")
    return _scalar(reading)


def _audit_entry(entry: Any) -> str:
    if not isinstance(entry, Mapping):
        return f"audit={_scalar(entry)}"
    reason = str(entry.get("reason") or "")[:AUDIT_REASON_CHARS]
    return (f"audit={entry.get('field')} by {entry.get('changed_by')}: "
            f"{reason if reason else chr(34) * 2}")


def record_messages(prompt: AuditPrompt, record: Mapping[str, Any]) -> list[dict[str, str]]:
    """System + user messages auditing one record (compact `key=value` lines)."""
    text = compact_record(record)
    for raw, escaped in (("<<<", "\\u003c\\u003c\\u003c"), (">>>", "\\u003e\\u003e\\u003e")):
        text = text.replace(raw, escaped)
    user = Template(prompt.user_template).substitute(record=text)
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]


def record_answer(findings: Sequence[Mapping[str, Any]]) -> str:
    """The answer a perfect record auditor gives (the training target of gxp_audit_adapter):
    the distinct deviation types, sorted. The field is left out: the scores count record and
    type only, and every answer token costs generation time."""
    slugs = sorted({str(f["deviation_type"]) for f in findings})
    return json.dumps({"findings": [{"deviation_type": slug} for slug in slugs]},
                      ensure_ascii=False)


def parse_record_output(text: str | None, record_id: str, batch_id: str,
                        catalog: DeviationCatalog) -> ParsedOutput:
    """Extract and validate one record's answer; findings get the record's id."""
    answer, error = checked_answer(text, f"record {record_id}", _VALIDATOR)
    if answer is None:
        return invalid_output(error)
    slugs = set(catalog.slugs)
    findings = [
        {"record_id": record_id, "deviation_type": f["deviation_type"], "field": f.get("field"),
         "evidence": "", "record_in_batch": True,
         "known_deviation_type": f["deviation_type"] in slugs}
        for f in answer["findings"]
    ]
    return ParsedOutput(valid=True, error=None, summary=None, findings=findings)


def run_record_audit(model: CandidateModel, records: Sequence[Mapping[str, Any]], *, split: str,
                     generate: Generate, prompt: AuditPrompt, catalog: DeviationCatalog,
                     progress: Progress | None = None) -> CandidateRun:
    """Audit every record of `records` with `generate`; predictions per batch as in a batch
    audit. A record whose answer is unusable adds a `valid_output` False row to its batch (the
    batch then counts as having invalid output) and is a miss for that record only. A record
    whose call failed leaves its batch unanswered: every row of that batch gets `call_failed`
    True (kept, but left out of the scores, which count the batch against coverage)."""
    started = time.perf_counter()
    batches = group_batches(records)
    ordered = [record for batch in batches.values() for record in batch]
    chats = [record_messages(prompt, record) for record in ordered]
    answers = generate(chats, progress)
    rows: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    position = 0
    for batch_id, batch in batches.items():
        findings: list[dict[str, Any]] = []
        errors: list[str] = []
        n_failed = 0
        for record in batch:
            answer = answers[position]
            position += 1
            record_id = str(record.get("record_id"))
            failure = getattr(answer, "error", None)
            n_failed += failure is not None
            parsed = (invalid_output(f"record {record_id}: call failed: {failure}")
                      if failure is not None else
                      parse_record_output(answer.text, record_id, batch_id, catalog))
            findings.extend(parsed.findings)
            if not parsed.valid:
                errors.append(str(parsed.error))
            calls.append({"batch_id": batch_id, "record_id": record_id,
                          "status": "ok" if failure is None else "error", "error": failure,
                          "valid_output": None if failure is not None else parsed.valid,
                          "parse_error": None if failure is not None else parsed.error,
                          "n_findings": len(parsed.findings),
                          "prompt_tokens": answer.prompt_tokens,
                          "completion_tokens": answer.completion_tokens,
                          "latency_s": answer.latency_s,
                          "truncated_prompt_tokens": answer.truncated_prompt_tokens})
        batch_rows = (to_prediction_rows(ParsedOutput(True, None, None, findings), model.id,
                                         split, batch_id) if findings or not errors else [])
        for error in errors:
            batch_rows.extend(to_prediction_rows(invalid_output(error), model.id, split, batch_id))
        rows.extend({**row, CALL_FAILED: n_failed > 0} for row in batch_rows)
    predictions = pd.DataFrame(rows, columns=[*PREDICTION_COLUMNS, CALL_FAILED])
    summary = _summary(calls, len(batches), time.perf_counter() - started)
    summary.update(model_id=model.id, split=split, prompt_version=prompt.version)
    return CandidateRun(predictions=predictions, calls=[], summary=summary)


def training_rows(records: Sequence[Mapping[str, Any]], manifest: Sequence[Mapping[str, Any]],
                  prompt: AuditPrompt) -> list[dict[str, Any]]:
    """Chat rows (system, user = the record, assistant = its labelled findings) for SFT."""
    labels: dict[str, list[Mapping[str, Any]]] = {}
    for row in manifest:
        labels.setdefault(str(row["record_id"]), []).append(row)
    return [
        {"record_id": str(record["record_id"]),
         "messages": [*record_messages(prompt, record),
                      {"role": "assistant",
                       "content": record_answer(labels.get(str(record["record_id"]), []))}]}
        for record in records
    ]


def _summary(calls: Sequence[Mapping[str, Any]], n_batches: int, wall_s: float) -> dict[str, Any]:
    import numpy as np

    answered = [call for call in calls if call["status"] == "ok"]
    latencies = [call["latency_s"] for call in answered]
    n_invalid = sum(not call["valid_output"] for call in answered)
    return {
        "n_batches": n_batches,
        "n_records": len(calls),
        "n_calls": len(calls),
        "n_failed_calls": len(calls) - len(answered),
        "n_answered": len(answered),
        "n_invalid_record_outputs": n_invalid,
        "record_invalid_output_rate": n_invalid / len(answered) if answered else None,
        "n_findings": sum(call["n_findings"] for call in calls),
        "n_truncated_prompts": sum(call["truncated_prompt_tokens"] > 0 for call in calls),
        "latency_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else None,
        "prompt_tokens": sum(call["prompt_tokens"] for call in calls),
        "completion_tokens": sum(call["completion_tokens"] for call in calls),
        "cost_usd": 0.0,
        "wall_s": wall_s,
    }


def select_training_records(records: Sequence[Mapping[str, Any]],
                            manifest: Sequence[Mapping[str, Any]], *, clean_per_deviating: float,
                            max_records: int | None, seed: int) -> list[Mapping[str, Any]]:
    """Every record with a labelled deviation plus `clean_per_deviating` clean records per
    deviating one (seeded sample), shuffled, at most `max_records` (deviating ones kept first).
    Without the re-balancing a 2% deviation rate teaches a model to always answer "clean"."""
    import random

    labelled = {str(row["record_id"]) for row in manifest}
    deviating = [r for r in records if str(r["record_id"]) in labelled]
    clean = [r for r in records if str(r["record_id"]) not in labelled]
    rng = random.Random(seed)
    n_clean = min(len(clean), round(len(deviating) * clean_per_deviating))
    chosen = list(deviating) + rng.sample(clean, n_clean)
    if max_records is not None and len(chosen) > max_records:
        n_dev = min(len(deviating), max_records, max(1, round(max_records /
                                                              (1 + clean_per_deviating))))
        chosen = rng.sample(deviating, n_dev) + rng.sample(clean, min(n_clean, max_records - n_dev))
    rng.shuffle(chosen)
    return chosen


@dataclass(frozen=True)
class InboxMerge:
    """Training records and labels with the accepted inbox batches added, and what was used."""

    records: list[Mapping[str, Any]]
    labels: list[Mapping[str, Any]]
    used: list[str]
    left_out: dict[str, str]  # batch name -> why it was not added


def add_inbox_batches(records: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]],
                      inbox_records: Mapping[str, Sequence[Mapping[str, Any]]],
                      inbox_labels: Mapping[str, Sequence[Mapping[str, Any]]]) -> InboxMerge:
    """`records`/`labels` plus every inbox batch (in name order) stored with both its records and
    its labels. A batch missing one of them, or with a record_id already taken (by the train
    split or an earlier batch), is left out whole, with the reason: the others are still added."""
    merged_records, merged_labels = list(records), list(labels)
    taken = {str(r["record_id"]) for r in merged_records}
    used: list[str] = []
    left_out: dict[str, str] = {}
    for name in sorted(set(inbox_records) | set(inbox_labels)):
        if name not in inbox_records or name not in inbox_labels:
            missing = "records" if name not in inbox_records else "labels"
            left_out[name] = f"its {missing} are not stored"
            continue
        ids = [str(r["record_id"]) for r in inbox_records[name]]
        clash = next((i for i in ids if i in taken), None)
        if clash is not None:
            left_out[name] = f"record_id {clash!r} is already in the training records"
            continue
        taken.update(ids)
        merged_records += inbox_records[name]
        merged_labels += inbox_labels[name]
        used.append(name)
    return InboxMerge(merged_records, merged_labels, used, left_out)
