"""Parse and validate a model's audit answer; turn it into prediction rows (PREDICTION_COLUMNS).

An answer that is not one JSON object of the output shape is invalid: the batch gets one prediction
row with valid_output False, so it is counted, not dropped. Findings naming record_ids outside the
batch or unknown deviation slugs are kept (the scorer counts them as false positives) and flagged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from synthetic.catalog import DeviationCatalog
from synthetic.contracts import PREDICTION_COLUMNS

OUTPUT_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "gxp_audit_output",
    "type": "object",
    "properties": {
        "summary": {"type": "string"},
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "record_id": {"type": "string"},
                    # A string, not an enum of slugs: an unknown slug is a wrong finding, not a
                    # broken answer.
                    "deviation_type": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                    "evidence": {"type": "string"},
                },
                "required": ["record_id", "deviation_type", "field", "evidence"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["summary", "findings"],
    "additionalProperties": False,
}
_VALIDATOR = jsonschema.Draft202012Validator(OUTPUT_JSON_SCHEMA)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_MAX_OBJECT_STARTS = 50  # bound the search for a JSON object inside prose


@dataclass(frozen=True)
class ParsedOutput:
    """A checked answer. Each finding also carries `record_in_batch` and `known_deviation_type`."""

    valid: bool
    error: str | None
    summary: str | None
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_unknown_record_ids(self) -> int:
        return sum(not f["record_in_batch"] for f in self.findings)

    @property
    def n_unknown_deviation_types(self) -> int:
        return sum(not f["known_deviation_type"] for f in self.findings)


def invalid_output(error: str) -> ParsedOutput:
    """An answer that cannot be used (also used for calls that failed)."""
    return ParsedOutput(valid=False, error=error, summary=None, findings=[])


def checked_answer(text: str | None, subject: str,
                   validator: jsonschema.protocols.Validator) -> tuple[dict[str, Any] | None, str]:
    """(the answer's JSON object, "") when `text` holds one that `validator` accepts, else
    (None, the reason, prefixed with `subject`, e.g. "batch B1: malformed JSON: ...")."""
    if text is None or not text.strip():
        return None, f"{subject}: empty answer"
    answer, error = extract_json_object(text)
    if answer is None:
        return None, f"{subject}: malformed JSON: {error}"
    problem = jsonschema.exceptions.best_match(validator.iter_errors(answer))
    if problem is not None:
        where = "/".join(str(part) for part in problem.path) or "(root)"
        return None, f"{subject}: schema violation at {where}: {problem.message}"
    return answer, ""


def parse_model_output(text: str | None, batch_id: str, batch_record_ids: Collection[str],
                       catalog: DeviationCatalog) -> ParsedOutput:
    """Extract, validate and flag one batch's answer."""
    answer, error = checked_answer(text, f"batch {batch_id}", _VALIDATOR)
    if answer is None:
        return invalid_output(error)
    record_ids, slugs = set(batch_record_ids), set(catalog.slugs)
    findings = [
        {**finding, "record_in_batch": finding["record_id"] in record_ids,
         "known_deviation_type": finding["deviation_type"] in slugs}
        for finding in answer["findings"]
    ]
    return ParsedOutput(valid=True, error=None, summary=answer["summary"], findings=findings)


def to_prediction_rows(parsed: ParsedOutput, model_id: str, split: str,
                       batch_id: str) -> list[dict[str, Any]]:
    """One row per finding, or one row with record_id/deviation_type None when there are none."""
    base = {"model_id": model_id, "split": split, "batch_id": batch_id,
            "valid_output": parsed.valid}
    if not parsed.findings:
        row = {**base, "record_id": None, "deviation_type": None, "field": None, "evidence": None}
        return [{column: row[column] for column in PREDICTION_COLUMNS}]
    return [
        {column: {**base, **finding}[column] for column in PREDICTION_COLUMNS}
        for finding in parsed.findings
    ]


def extract_json_object(text: str) -> tuple[dict[str, Any] | None, str]:
    """The first JSON object in `text`: inside a ``` fence if any, else possibly amid prose."""
    fenced = _FENCE.search(text)
    candidate = (fenced.group(1) if fenced else text).strip()
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as exc:
        first_error = str(exc)
    else:
        if isinstance(value, dict):
            return value, ""
        return None, f"expected a JSON object, got {type(value).__name__}"
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"\{", candidate)][:_MAX_OBJECT_STARTS]
    for start in starts:
        try:
            value, _end = decoder.raw_decode(candidate, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value, ""
    return None, first_error
